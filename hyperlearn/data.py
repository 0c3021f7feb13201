"""On-disk formats of the prepared training data: relation tensors and graph Laplacians.

The pipeline writes these files into a run directory; trainers on Dask workers read them back, so tasks pass
paths, not arrays.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse
import sparse

LossKind = Literal["squared", "logistic"]
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class RelationMeta:
    """What a relation tensor means: the modalities it spans, in axis order, and how its values are modelled."""

    name: str
    modalities: tuple[str, ...]
    shape: tuple[int, ...]
    loss: LossKind
    weight: float = 1.0
    value_min: float | None = None
    value_max: float | None = None

    @property
    def order(self) -> int:
        return len(self.modalities)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "meta.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> "RelationMeta":
        raw = json.loads((Path(directory) / "meta.json").read_text())
        raw["modalities"] = tuple(raw["modalities"])
        raw["shape"] = tuple(raw["shape"])
        return cls(**raw)


def save_relation_split(path: Path, tensor: sparse.COO) -> None:
    """Write one split of a relation (int64 coordinates, float32 values; explicit zeros kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        coords=np.asarray(tensor.coords, dtype=np.int64),
        data=np.asarray(tensor.data, dtype=np.float32),
        shape=np.asarray(tensor.shape, dtype=np.int64),
    )


def load_relation_split(path: Path) -> sparse.COO:
    """Read a split written by `save_relation_split`."""
    with np.load(Path(path)) as stored:
        return sparse.COO(
            stored["coords"], stored["data"], shape=tuple(int(n) for n in stored["shape"]),
            has_duplicates=False, prune=False,
        )


def save_laplacian(path: Path, laplacian: scipy.sparse.spmatrix) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.sparse.save_npz(path, scipy.sparse.csr_matrix(laplacian))


def load_laplacian(path: Path) -> scipy.sparse.csr_matrix:
    return scipy.sparse.csr_matrix(scipy.sparse.load_npz(Path(path)))
