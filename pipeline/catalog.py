"""The entity catalog: per modality, raw key → stable int64 id, append-only.

An entity's id is its position in the catalog, so ids are 0 … n-1 and never change once given: new keys are
appended, in sorted (string) order for determinism. Embeddings, tensors and graphs all index entities by these
ids, which is what lets a new run warm-start from an earlier one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CATALOG_SCHEMA = pa.schema([("entity_id", pa.int64()), ("key", pa.string())])


class CatalogError(ValueError):
    """A stored catalog that breaks the catalog's invariants; the message names the file."""


class EntityCatalog:
    """Keys of one modality's entities; the id of a key is its position."""

    def __init__(self, modality: str, keys: Iterable[str] = ()) -> None:
        self.modality = modality
        self._keys = pd.Index(list(keys), dtype="str")
        if self._keys.hasnans or not self._keys.is_unique:
            raise ValueError(f"catalog {modality!r}: keys must be unique and present")
        self.existing = len(self._keys)  # how many entities the catalog had before this run's assignments

    @staticmethod
    def path(catalog_dir: Path, modality: str) -> Path:
        return Path(catalog_dir) / f"{modality}.parquet"

    @classmethod
    def load(cls, catalog_dir: Path, modality: str) -> "EntityCatalog":
        """The catalog stored in `catalog_dir/<modality>.parquet`, or an empty one when there is none yet."""
        path = cls.path(catalog_dir, modality)
        if not path.exists():
            return cls(modality)
        table = pq.read_table(path)
        if table.schema.names != CATALOG_SCHEMA.names:
            raise CatalogError(f"{path}: expected columns {CATALOG_SCHEMA.names}, found {table.schema.names}")
        try:
            stored = table.cast(CATALOG_SCHEMA).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise CatalogError(f"{path}: expected entity_id int64 and key string: {error}") from None
        if not np.array_equal(stored["entity_id"].to_numpy(), np.arange(len(stored))):
            raise CatalogError(f"{path}: entity ids are not 0 … {len(stored) - 1} in order")
        try:
            return cls(modality, stored["key"])
        except ValueError as error:
            raise CatalogError(f"{path}: {error}") from None

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> pd.Index:
        """All keys, position = entity id."""
        return self._keys

    @property
    def new(self) -> int:
        """How many entities were added since the catalog was loaded or created."""
        return len(self._keys) - self.existing

    def ids(self, keys: Iterable[str]) -> np.ndarray:
        """The ids of `keys` (int64), -1 for keys not in the catalog. Adds nothing."""
        return self._keys.get_indexer(_as_index(keys)).astype(np.int64)

    def assign(self, keys: Iterable[str]) -> np.ndarray:
        """The ids of `keys` (int64), first appending the keys not yet in the catalog in sorted order."""
        keys = _as_index(keys)
        if keys.hasnans:
            raise ValueError(f"catalog {self.modality!r}: cannot assign an id to a missing key")
        ids = self._keys.get_indexer(keys)
        unseen = keys[ids < 0]
        if len(unseen):
            self._keys = self._keys.append(pd.Index(np.sort(unseen.unique().to_numpy()), dtype="str"))
            ids = self._keys.get_indexer(keys)
        return ids.astype(np.int64)

    def save(self, catalog_dir: Path) -> Path:
        """Write `catalog_dir/<modality>.parquet` atomically (temporary file, then os.replace)."""
        path = self.path(catalog_dir, self.modality)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {"entity_id": np.arange(len(self._keys), dtype=np.int64), "key": self._keys.to_numpy()},
            schema=CATALOG_SCHEMA,
        )
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, path)
        return path


def _as_index(keys: Iterable[str]) -> pd.Index:
    if not isinstance(keys, (pd.Series, pd.Index, np.ndarray)):
        keys = list(keys)
    return pd.Index(keys, dtype="str")
