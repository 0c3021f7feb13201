"""Publishing a run: embedding Parquet files, and the atomic move of a staged version into place.

A run writes everything into `<dataset_dir>/.staging-<version>/`. `publish` then makes it visible in three
steps, each atomic on its own (docs/design.md, "Run directory"):

1. `os.rename` of the staging folder to `<dataset_dir>/<version>/`;
2. the version's catalog files replace those of the persistent `<dataset_dir>/catalog/`, one `os.replace` each;
3. the `<dataset_dir>/latest` symlink is replaced to point at the new version.

A run that fails before step 1 leaves earlier versions, the catalog and `latest` untouched. The rename is the
commit point: one that dies after it leaves a complete version folder that `latest` does not point to yet, and
perhaps some catalog files already replaced (each whole; the catalog is append-only, so a newer file still holds
every older id); the next run, under the dataset's lock, finishes that publish (`finish_interrupted_publish`).

Fault injection (tests only): with `HYPERLEARN_FAULT_AT` set to one of `PUBLISH_STEPS`, the process dies
(`os._exit`, no clean-up, as under kill -9) just before that step: "rename", "catalog", "latest", or "done"
(after the last).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hyperlearn.rundir import CATALOG, LATEST, DatasetDir, RunDir

FAULT_ENVIRONMENT = "HYPERLEARN_FAULT_AT"
PUBLISH_STEPS = ("rename", "catalog", "latest", "done")
FAULT_EXIT_CODE = 86
EMBEDDINGS_FILE = "part-0.parquet"
METADATA_PREFIX = "hyperlearn."
REQUIRED_METADATA = ("hyperlearn.dataset", "hyperlearn.version", "hyperlearn.config_hash")


def new_version() -> str:
    """A fresh version name: the current UTC time as `YYYYmmddTHHMMSSffffffZ` (sorts chronologically)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def embedding_schema(rank: int, metadata: Mapping[str, str] | None = None) -> pa.Schema:
    """The embedding Parquet schema: entity_id int64, key string, embedding fixed_size_list<float32>[rank]."""
    return pa.schema(
        [
            pa.field("entity_id", pa.int64(), nullable=False),
            pa.field("key", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), rank), nullable=False),
        ],
        metadata=metadata,
    )


def write_embeddings(
    run: RunDir,
    *,
    modality: str,
    entity_ids: np.ndarray,
    keys: list[str] | np.ndarray,
    embeddings: np.ndarray,
    metadata: dict[str, str],
) -> Path:
    """Write one modality's embeddings to the run's `embeddings/modality=<modality>/part-0.parquet`; return the
    file.

    One row per entity, in the order given. `metadata` must carry `hyperlearn.dataset`, `hyperlearn.version`
    and `hyperlearn.config_hash`; `hyperlearn.modality` and `hyperlearn.rank` are filled in from the arguments
    (a conflicting value passed in is an error). Non-finite embeddings and repeated entity ids are rejected, so
    a broken training run can't publish.
    """
    vectors = np.asarray(embeddings, dtype=np.float32)
    ids = np.asarray(entity_ids, dtype=np.int64)
    keys = np.asarray(keys, dtype=object)
    if vectors.ndim != 2 or vectors.shape[1] < 1:
        raise ValueError(f"embeddings must be a 2-D array (entities × rank >= 1), got shape {vectors.shape}")
    if not ids.shape == keys.shape == (vectors.shape[0],):
        raise ValueError(
            f"entity_ids {ids.shape}, keys {keys.shape} and embeddings {vectors.shape} disagree in length"
        )
    if np.unique(ids).size != ids.size:
        raise ValueError(f"{modality}: entity_ids contain duplicates")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{modality}: embeddings contain NaN or infinite values")

    rank = vectors.shape[1]
    file_metadata = _embedding_metadata(metadata, modality=modality, rank=rank)
    table = pa.Table.from_arrays(
        [
            pa.array(ids, type=pa.int64()),
            pa.array(keys, type=pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), rank),
        ],
        schema=embedding_schema(rank, file_metadata),
    )
    directory = run.embedding_dir(modality)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / EMBEDDINGS_FILE
    pq.write_table(table, path)
    return path


def _embedding_metadata(metadata: Mapping[str, str], *, modality: str, rank: int) -> dict[str, str]:
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"embedding metadata lacks {missing}")
    derived = {f"{METADATA_PREFIX}modality": modality, f"{METADATA_PREFIX}rank": str(rank)}
    for key, value in derived.items():
        if key in metadata and str(metadata[key]) != value:
            raise ValueError(f"embedding metadata {key}={metadata[key]!r} contradicts the data ({value!r})")
    return {**{key: str(value) for key, value in metadata.items()}, **derived}


def publish(
    staging_dir: Path, dataset_dir: Path, version: str, catalog_source: Path | None, move_latest: bool = True
) -> Path:
    """Publish a staged run as `<dataset_dir>/<version>` and, with `move_latest`, move `latest` to it; return the
    version folder.

    `catalog_source` is the folder whose files become the persistent `<dataset_dir>/catalog/` (usually the
    version's own `catalog/`; a path inside `staging_dir` is read from where the rename moved it), or None to
    leave the persistent catalog as it is. The catalog is replaced even when `latest` stays (a version the quality
    gate held back, hyperlearn.pipeline.gate): it is append-only, so the older versions' ids all remain.
    """
    staging_dir, dataset_dir = Path(staging_dir), Path(dataset_dir)
    if not staging_dir.is_dir():
        raise FileNotFoundError(f"staging folder {staging_dir} does not exist")
    if staging_dir.resolve().parent != dataset_dir.resolve():
        raise ValueError(f"staging folder {staging_dir} must sit directly inside {dataset_dir} (same filesystem)")
    if not version or Path(version).name != version or version.startswith(".") or version in (LATEST, CATALOG):
        raise ValueError(f"invalid version name {version!r}")
    published = DatasetDir(dataset_dir).version(version).path
    if published.exists() or published.is_symlink():
        raise FileExistsError(f"version {published} already exists")

    catalog = None
    if catalog_source is not None:
        catalog = Path(catalog_source).resolve()
        if not catalog.is_dir():
            raise FileNotFoundError(f"catalog folder {catalog_source} does not exist")
        if catalog.is_relative_to(staging_dir.resolve()):
            catalog = published / catalog.relative_to(staging_dir.resolve())

    _fault_point("rename")
    os.rename(staging_dir, published)
    _fault_point("catalog")
    if catalog is not None:
        _replace_catalog(catalog, DatasetDir(dataset_dir).catalog)
    _fault_point("latest")
    if move_latest:
        _point_symlink(DatasetDir(dataset_dir).latest, version)
    _fault_point("done")
    return published


def finish_interrupted_publish(dataset: DatasetDir, log: Callable[[str], None] = print) -> str | None:
    """Finish the publish of a version renamed into place that `latest` never reached (its run died between
    step 1 and step 3): its catalog replaces the persistent one and `latest` moves to it — unless its manifest
    says the quality gate kept `latest` where it was (then only the catalog, which is append-only, is brought up
    to date). Returns the name of the version `latest` moved to, or None when there was nothing to finish. Call
    it holding the dataset's lock."""
    versions = published_versions(dataset)
    current = os.readlink(dataset.latest) if dataset.latest.is_symlink() else None
    if not versions or versions[-1] == current or (current is not None and versions[-1] < current):
        return None
    newest = versions[-1]
    _replace_catalog(dataset.version(newest).catalog, dataset.catalog)
    if json.loads(dataset.version(newest).manifest.read_text()).get("gated", False):
        return None
    _point_symlink(dataset.latest, newest)
    log(f"finished publishing {newest}, whose run died after renaming it into place")
    return newest


def published_versions(dataset: DatasetDir) -> list[str]:
    """The versions renamed into place (folders with a manifest), oldest first."""
    if not dataset.path.is_dir():
        return []
    return sorted(
        p.name for p in dataset.path.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and p.name != CATALOG
        and dataset.version(p.name).manifest.exists()
    )


def _fault_point(step: str) -> None:
    """Die here, as under kill -9, when the fault-injection variable names `step` (tests only)."""
    if os.environ.get(FAULT_ENVIRONMENT) == step:
        os._exit(FAULT_EXIT_CODE)


def _replace_catalog(source: Path, catalog_dir: Path) -> None:
    """Copy every file of `source` into `catalog_dir`, each swapped in atomically; other files are kept."""
    catalog_dir.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in source.iterdir() if p.is_file()):
        with _replacing(catalog_dir / file.name) as temporary:
            shutil.copyfile(file, temporary)


def _point_symlink(link: Path, target: str) -> None:
    """Make `link` a symlink to `target` (relative), replacing any previous link in one atomic step."""
    temporary = link.with_name(f"{link.name}.tmp-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    with _replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


@contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    """Yield a fresh path next to `target`; once the caller has written it, sync it and swap it in atomically.

    On error the temporary file is removed and `target` is left as it was. The name is unique per call, so
    concurrent writers never share a temporary file.
    """
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
