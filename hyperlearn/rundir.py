"""The run directory: the one owner of where every file of a run lives and of the formats of the prepared data.

A dataset's output folder holds the persistent catalog, the published versions and the `latest` link; a run
writes one version into a staging folder beside them (docs/design.md, "Run directory"):

    OUT/<dataset>/                      DatasetDir
      catalog/<modality>.parquet        persistent, append-only entity catalog
      latest -> <version>
      .staging-<version>/               RunDir of a run in progress, renamed to <version>/ when published
      <version>/                        RunDir
        catalog/  relations/{order.json, <relation>/{meta.json,train.npz,validation.npz,test.npz}}
        graphs/<modality>.npz
        quarantine/  checkpoints/  embeddings/modality=<name>/part-0.parquet
        manifest.json  metrics.json  report.png

Everything here is NumPy/SciPy and JSON, never torch, so the pipeline, the published-file readers and the
trainers share one definition without loading each other's libraries.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse

LossKind = Literal["squared", "logistic", "bpr", "softmax"]
Structure = Literal["cp", "pairwise"]
NegativeDistribution = Literal["uniform", "popularity"]
SPLITS = ("train", "validation", "test")
Split = Literal["train", "validation", "test"]

CATALOG = "catalog"
LATEST = "latest"
STAGING_PREFIX = ".staging-"
BEST_CHECKPOINT = "best.npz"
COPY_CHUNK_BYTES = 16 * 2**20  # what packing a split file holds in memory at once
RESUME_CHECKPOINT = "resume.npz"
RESUME_RECORD = "resume.json"
Phase = Literal["search", "refit"]


@dataclass(frozen=True)
class Negatives:
    """How unobserved tuples are drawn for a relation of observed tuples: each positive gets `count` negatives,
    each made by replacing the entity on one of `axes` (chosen uniformly per negative) by an entity drawn
    uniformly or in proportion to its training frequency. `axes` None: the evaluation target's axis when the
    relation has one, else every axis. `shared_by` > 1: one axis, and each draw of `count` entities serves that
    many positives (hyperlearn.negatives)."""

    axes: tuple[int, ...] | None = None
    count: int = 4
    distribution: NegativeDistribution = "uniform"
    shared_by: int = 1


@dataclass(frozen=True)
class Evaluation:
    """What a relation's held-out tuples are judged on: ranking every entity of axis `target` for each query
    (the tuple without that axis), filtered of training tuples, at the cut-offs `k`."""

    target: int
    k: tuple[int, ...] = (5, 10, 20)


@dataclass(frozen=True)
class RelationMeta:
    """What a relation tensor means: the modalities it spans, in axis order (a modality may appear on several
    axes, e.g. head and tail of a triple), how its values are modelled and how it is evaluated.

    `axes` names each axis (the key column it was read from); `structure` says which CP blocks score a tuple
    (`hyperlearn.structure`)."""

    name: str
    modalities: tuple[str, ...]
    shape: tuple[int, ...]
    loss: LossKind
    weight: float = 1.0
    value_min: float | None = None
    value_max: float | None = None
    axes: tuple[str, ...] = ()
    structure: Structure = "cp"
    negatives: Negatives = Negatives()
    evaluation: Evaluation | None = None

    def __post_init__(self) -> None:
        if not self.axes:
            object.__setattr__(self, "axes", tuple(self.modalities))

    @property
    def order(self) -> int:
        return len(self.modalities)

    def axes_of(self, modality: str) -> tuple[int, ...]:
        """The axes on which `modality` appears (more than one for e.g. a user × user friendship)."""
        return tuple(axis for axis, name in enumerate(self.modalities) if name == modality)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "RelationMeta":
        negatives = raw.get("negatives") or {}
        evaluation = raw.get("evaluation")
        return cls(
            **{
                **raw,
                "modalities": tuple(raw["modalities"]),
                "shape": tuple(raw["shape"]),
                "axes": tuple(raw.get("axes", ())),
                "negatives": Negatives(
                    **{**negatives, "axes": None if negatives.get("axes") is None else tuple(negatives["axes"])}
                ),
                "evaluation": None if evaluation is None else Evaluation(evaluation["target"], tuple(evaluation["k"])),
            }
        )


@dataclass(frozen=True)
class Entries:
    """The observed entries of one split of a relation: coords (K, nnz) int64, values (nnz,) float32, and the
    tensor's shape. Plain arrays: no linear index over the shape is ever formed, so any order loads."""

    coords: np.ndarray
    values: np.ndarray
    shape: tuple[int, ...]

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class RelationData:
    """One relation as plain arrays: its meta and the entries of the splits that were read."""

    meta: RelationMeta
    splits: dict[str, Entries]


@dataclass(frozen=True)
class TrainerShare:
    """What one modality's trainer needs from a run, as plain arrays: the entity counts, the relations spanning
    the modality (the requested splits only) and its Laplacian (None: no graph). Loaded on the driver and sent
    to the trainer through Dask, so a worker on another host, in another working directory, trains without
    seeing the run directory."""

    modality: str
    sizes: dict[str, int]
    relations: tuple[RelationData, ...]
    laplacian: scipy.sparse.csr_matrix | None

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays: what crosses the network to the trainer's worker."""
        entries = sum(e.coords.nbytes + e.values.nbytes for r in self.relations for e in r.splits.values())
        graph = 0 if self.laplacian is None else sum(
            a.nbytes for a in (self.laplacian.data, self.laplacian.indices, self.laplacian.indptr)
        )
        return entries + graph


@dataclass
class ModalityState:
    """What a worker publishes each round: its embeddings (encoder output) and its entity biases per relation."""

    factor: np.ndarray
    biases: dict[str, np.ndarray]


@dataclass
class Checkpoint:
    """Where training was at the end of round `round` of `phase` (the early-stopped search, or the refit), with
    all it needs to carry on exactly: the states published that round, the trainer set's `snapshot()` (encoders,
    optimisers, random generators), the best and the round-0 states, and `progress` (JSON: the history, the
    best round and its criterion, the settings' hash and the mode it belongs to)."""

    phase: Phase
    round: int
    states: dict[str, ModalityState]
    trainers: dict[str, np.ndarray]
    best_states: dict[str, ModalityState]
    first_states: dict[str, ModalityState]
    best_weights: dict[str, dict[str, np.ndarray]]  # the best round's resumable weights (hyperlearn.warm_start)
    progress: dict[str, Any]


@dataclass(frozen=True)
class RunDir:
    """One run's folder (a staging folder while it runs, a version once published): its paths and its files."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # --- paths ----------------------------------------------------------------------------------------------

    @property
    def catalog(self) -> Path:
        return self.path / CATALOG

    @property
    def relations(self) -> Path:
        return self.path / "relations"

    def relation(self, name: str) -> Path:
        return self.relations / name

    def relation_split(self, name: str, split: str) -> Path:
        return self.relation(name) / f"{split}.npz"

    @property
    def graphs(self) -> Path:
        return self.path / "graphs"

    def graph(self, modality: str) -> Path:
        return self.graphs / f"{modality}.npz"

    @property
    def quarantine(self) -> Path:
        return self.path / "quarantine"

    def relation_quarantine(self, relation: str) -> Path:
        return self.quarantine / f"{relation}.parquet"

    def graph_quarantine(self, modality: str) -> Path:
        """Graph quarantine files are `graph-<modality>.parquet`: relation names may not start with `graph-`."""
        return self.quarantine / f"graph-{modality}.parquet"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / BEST_CHECKPOINT

    @property
    def embeddings(self) -> Path:
        return self.path / "embeddings"

    def embedding_dir(self, modality: str) -> Path:
        """Hive-style partition folder, so DuckDB and pandas read the modality as a column."""
        return self.embeddings / f"modality={modality}"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def report(self) -> Path:
        return self.path / "report.png"

    def relative(self, path: Path) -> str:
        """`path` relative to this run's folder, as the manifest and reports record it."""
        return Path(path).relative_to(self.path).as_posix()

    # --- relation tensors -----------------------------------------------------------------------------------

    @property
    def relation_order(self) -> Path:
        """The relations' names in the order they were written: the spec's order."""
        return self.relations / "order.json"

    def relation_names(self) -> list[str]:
        """The relations prepared in this run, in the spec's order (the first is the run's headline relation)."""
        return json.loads(self.relation_order.read_text()) if self.relation_order.exists() else []

    def entity_counts(self) -> dict[str, int]:
        """Entities per modality, sorted by name: the largest axis a modality spans in the run's relations."""
        counts: dict[str, int] = {}
        for name in self.relation_names():
            meta = self.read_relation_meta(name)
            for modality, size in zip(meta.modalities, meta.shape):
                counts[modality] = max(counts.get(modality, 0), size)
        return dict(sorted(counts.items()))

    def write_relation(self, meta: RelationMeta, splits: dict[str, Entries]) -> None:
        """Write `meta.json` and one `<split>.npz` per split (int64 coordinates, float32 values, explicit zeros
        kept: they are observations) from whole arrays."""
        for split in SPLITS:
            entries = splits[split]
            with self.split_writer(meta.name, split, entries.shape) as writer:
                writer.append(entries.coords, entries.values)
        self.write_relation_meta(meta)

    def split_writer(self, name: str, split: str, shape: tuple[int, ...]) -> "SplitWriter":
        """A writer that streams one split of relation `name` into `<split>.npz`, chunk by chunk in the order
        the entries are to be stored (the relation's folder is made)."""
        self.relation(name).mkdir(parents=True, exist_ok=True)
        return SplitWriter(self.relation_split(name, split), shape)

    def write_relation_meta(self, meta: RelationMeta) -> None:
        """Write the relation's `meta.json` and give it its place in the relation order (once)."""
        directory = self.relation(meta.name)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "meta.json").write_text(json.dumps(meta.to_dict(), indent=2))
        names = self.relation_names()
        if meta.name not in names:
            self.relation_order.write_text(json.dumps([*names, meta.name]))

    def remove_relation(self, name: str) -> None:
        """Take a relation out of the run (its folder and its place in the order)."""
        shutil.rmtree(self.relation(name))
        self.relation_order.write_text(json.dumps([other for other in self.relation_names() if other != name]))

    def order_relations(self, names: Sequence[str]) -> None:
        """Put the run's relations in the order `names` (all of them, each once): the first becomes the headline
        relation, the one that stops training."""
        if sorted(names) != sorted(self.relation_names()):
            raise ValueError(f"{list(names)} is not an order of this run's relations {self.relation_names()}")
        self.relation_order.write_text(json.dumps(list(names)))

    def read_relation_meta(self, name: str) -> RelationMeta:
        return RelationMeta.from_dict(json.loads((self.relation(name) / "meta.json").read_text()))

    def read_relation_split(self, name: str, split: str) -> Entries:
        with np.load(self.relation_split(name, split)) as stored:
            return Entries(
                coords=stored["coords"].reshape(len(stored["shape"]), -1),
                values=stored["data"],
                shape=tuple(int(n) for n in stored["shape"]),
            )

    def read_trainer_share(self, modality: str, splits: tuple[str, ...]) -> TrainerShare:
        """The relations spanning `modality` (`splits` of each, in the spec's order) and its Laplacian."""
        relations = []
        for name in self.relation_names():
            meta = self.read_relation_meta(name)
            if modality in meta.modalities:
                relations.append(RelationData(meta, {split: self.read_relation_split(name, split) for split in splits}))
        return TrainerShare(modality, self.entity_counts(), tuple(relations), self.read_laplacian(modality))

    # --- graphs ---------------------------------------------------------------------------------------------

    def write_laplacian(self, modality: str, laplacian: scipy.sparse.spmatrix) -> Path:
        path = self.graph(modality)
        path.parent.mkdir(parents=True, exist_ok=True)
        scipy.sparse.save_npz(path, scipy.sparse.csr_matrix(laplacian))
        return path

    def read_laplacian(self, modality: str) -> scipy.sparse.csr_matrix | None:
        """The modality's normalised Laplacian, or None when it has no graph."""
        path = self.graph(modality)
        return scipy.sparse.csr_matrix(scipy.sparse.load_npz(path)) if path.exists() else None

    # --- checkpoints ----------------------------------------------------------------------------------------

    def save_checkpoint(self, states: dict[str, ModalityState], round_number: int) -> Path:
        """Write factors and biases of every modality to `checkpoints/best.npz`, atomically."""
        return save_states(self.best_checkpoint, states, round_number)

    def load_checkpoint(self) -> tuple[dict[str, ModalityState], int]:
        return load_states(self.best_checkpoint)

    @property
    def resume_checkpoint(self) -> Path:
        """The latest `Checkpoint` of a run in progress: what a killed run carries on from."""
        return self.checkpoints / RESUME_CHECKPOINT

    @property
    def resume_record(self) -> Path:
        """What a resumed run needs besides the checkpoint: which run this staging is (its resume key) and the
        summaries of the steps before training (`hyperlearn.flows`)."""
        return self.checkpoints / RESUME_RECORD

    def save_resume_checkpoint(self, checkpoint: Checkpoint) -> Path:
        """Write `checkpoint` to `checkpoints/resume.npz` atomically (a reader sees the previous one or this)."""
        arrays = {
            "phase": np.asarray(checkpoint.phase),
            "round": np.asarray(checkpoint.round),
            "progress": np.asarray(json.dumps(checkpoint.progress)),
            **_state_arrays("states", checkpoint.states),
            **_state_arrays("best", checkpoint.best_states),
            **_state_arrays("first", checkpoint.first_states),
            **{f"trainers/{name}": value for name, value in checkpoint.trainers.items()},
            **{f"best_weights/{m}/{key}": value for m, weights in checkpoint.best_weights.items()
               for key, value in weights.items()},
        }
        return _write_npz_atomic(self.resume_checkpoint, arrays)

    def load_resume_checkpoint(self) -> Checkpoint | None:
        """The run's resume checkpoint, or None when it has none."""
        if not self.resume_checkpoint.exists():
            return None
        with np.load(self.resume_checkpoint, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        return Checkpoint(
            phase=str(arrays["phase"]),  # type: ignore[arg-type]
            round=int(arrays["round"]),
            states=_states_from("states", arrays),
            best_states=_states_from("best", arrays),
            first_states=_states_from("first", arrays),
            trainers={key[len("trainers/"):]: value for key, value in arrays.items() if key.startswith("trainers/")},
            best_weights=_nested("best_weights/", arrays),
            progress=json.loads(str(arrays["progress"])),
        )

    def remove_resume_files(self) -> None:
        """Drop the resume checkpoint and record: a published version has no use for them."""
        self.resume_checkpoint.unlink(missing_ok=True)
        self.resume_record.unlink(missing_ok=True)


def _nested(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """`{"<prefix><outer>/<inner>": array}` members back as `{outer: {inner: array}}`."""
    nested: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith(prefix):
            outer, inner = key[len(prefix):].split("/", 1)
            nested.setdefault(outer, {})[inner] = value
    return nested


class SplitWriter:
    """One split of a relation written chunk by chunk, so that no split is ever whole in memory.

    Each axis's coordinates and the values go to scratch files beside the target while chunks arrive; `close`
    packs them into `<split>.npz` exactly as `np.savez(coords=…, data=…, shape=…)` of the whole arrays would
    (every member has the same bytes), so readers are unchanged. A context manager: closed on success, its
    scratch removed either way."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.nnz = 0
        self._scratch = [self.path.with_name(f".{self.path.stem}.axis-{axis}") for axis in range(len(shape))]
        self._scratch.append(self.path.with_name(f".{self.path.stem}.values"))
        self._files = [open(path, "wb") for path in self._scratch]

    def append(self, coords: np.ndarray, values: np.ndarray) -> None:
        """Add entries after those added before: coords (K, n), values (n,)."""
        coords = np.asarray(coords, dtype=np.int64).reshape(len(self.shape), -1)
        for handle, axis_coords in zip(self._files, coords):
            np.ascontiguousarray(axis_coords).tofile(handle)
        np.asarray(values, dtype=np.float32).tofile(self._files[-1])
        self.nnz += int(coords.shape[1])

    def close(self) -> Path:
        """Write `<split>.npz` from the chunks appended, then remove the scratch files."""
        for handle in self._files:
            handle.close()
        order = len(self.shape)
        with zipfile.ZipFile(self.path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            _npy_member(archive, "coords", np.dtype(np.int64), (order, self.nnz), self._scratch[:order])
            _npy_member(archive, "data", np.dtype(np.float32), (self.nnz,), self._scratch[order:])
            with archive.open("shape.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(self.shape, dtype=np.int64))
        self._remove_scratch()
        return self.path

    def _remove_scratch(self) -> None:
        for handle, path in zip(self._files, self._scratch):
            handle.close()
            path.unlink(missing_ok=True)

    def __enter__(self) -> "SplitWriter":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:
            self._remove_scratch()


def _npy_member(
    archive: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], parts: list[Path]
) -> None:
    """A `<name>.npy` member of `archive` holding an array of `shape` whose C-order bytes are the files
    `parts` one after the other, copied in bounded chunks."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, member, COPY_CHUNK_BYTES)


@dataclass(frozen=True)
class DatasetDir:
    """`OUT/<dataset>`: the persistent catalog, the published versions, `latest`, and runs being staged."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def catalog(self) -> Path:
        return self.path / CATALOG

    @property
    def latest(self) -> Path:
        return self.path / LATEST

    @property
    def lock(self) -> Path:
        """The lock a run holds on the dataset from staging to publishing (`hyperlearn.pipeline.lock`)."""
        return self.path / ".lock"

    @property
    def lock_holder(self) -> Path:
        """Who holds the lock: pid, host and start time, for the message a second run prints."""
        return self.path / ".lock.holder.json"

    def stagings(self) -> list[RunDir]:
        """Staging folders present now: runs in progress, or left behind by runs that died."""
        return [RunDir(p) for p in sorted(self.path.glob(f"{STAGING_PREFIX}*")) if p.is_dir()]

    def version(self, version: str) -> RunDir:
        return RunDir(self.path / version)

    def staging(self, version: str) -> RunDir:
        """Where a run of `version` stages its files: hidden, on the same filesystem as the versions."""
        return RunDir(self.path / f"{STAGING_PREFIX}{version}")


def save_states(path: Path, states: dict[str, ModalityState], round_number: int) -> Path:
    """Write factors and biases of every modality to one .npz, atomically (temporary file + rename)."""
    return _write_npz_atomic(Path(path), {"round": np.asarray(round_number), **_state_arrays("", states)})


def load_states(path: Path) -> tuple[dict[str, ModalityState], int]:
    """Read states written by `save_states`, and the round they are from."""
    with np.load(Path(path), allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    return _states_from("", arrays), int(arrays["round"])


def _state_arrays(prefix: str, states: dict[str, ModalityState]) -> dict[str, np.ndarray]:
    """`states` as `[prefix/]factor/<modality>` and `[prefix/]bias/<modality>/<relation>` arrays."""
    head = f"{prefix}/" if prefix else ""
    arrays = {}
    for name, state in states.items():
        arrays[f"{head}factor/{name}"] = state.factor
        arrays.update({f"{head}bias/{name}/{relation}": b for relation, b in state.biases.items()})
    return arrays


def _states_from(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, ModalityState]:
    """The states `_state_arrays(prefix, …)` wrote."""
    head = f"{prefix}/" if prefix else ""
    states: dict[str, ModalityState] = {}
    for key, value in arrays.items():
        if not key.startswith(head):
            continue
        kind, _, rest = key[len(head):].partition("/")
        if kind == "factor":
            states.setdefault(rest, ModalityState(value, {})).factor = value
        elif kind == "bias":
            name, _, relation = rest.partition("/")
            states.setdefault(name, ModalityState(np.empty(0), {})).biases[relation] = value
    return states


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write `arrays` to `path` as .npz through a synced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path
