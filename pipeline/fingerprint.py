"""A content fingerprint of a run's inputs: the spec file and every file its sources name.

The serving process of `hyperlearn schedule --on-change` polls it to decide when a dataset has changed: an edited
spec, an edited source file, and a new file that a folder or glob source now names all change it; touching a file
without changing its bytes does not. Files are hashed by content (SHA-256), never by modification time; a
poller may pass a `HashCache`, so that only files whose size or modification time moved are read again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from hyperlearn.pipeline.readers import source_files
from hyperlearn.pipeline.spec import DatasetSpec, SourceSpec, load_spec

_CHUNK_BYTES = 2**20

#: path → (size, modification time in ns, SHA-256) of files hashed before.
HashCache = dict[Path, tuple[int, int, str]]


def spec_sources(spec: DatasetSpec) -> Iterator[SourceSpec]:
    """Every source a spec reads: modality features, graph pairs, and each relation's sources."""
    for modality in spec.modalities:
        if modality.features is not None:
            yield modality.features.source
        if modality.graph is not None and modality.graph.pairs is not None:
            yield modality.graph.pairs.source
    for relation in spec.relations:
        yield from relation.sources.values()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: Path, cache: HashCache) -> str:
    """`file_sha256(path)`, read again only when the file's size or modification time differ from the cache's."""
    status = path.stat()
    known = cache.get(path)
    if known is not None and known[:2] == (status.st_size, status.st_mtime_ns):
        return known[2]
    digest = file_sha256(path)
    cache[path] = (status.st_size, status.st_mtime_ns, digest)
    return digest


def input_fingerprint(
    spec_path: str | Path,
    data_root: str | Path | None = None,
    allow_roots: Sequence[str | Path] = (),
    cache: HashCache | None = None,
) -> str:
    """One SHA-256 over the spec file's bytes and the (path, SHA-256) of every file its sources name, sorted.

    Raises SpecError for a spec that does not load and SourceError for a source that names no file: an input
    that cannot be read has no fingerprint. With `cache`, source files unchanged in size and modification time
    since the cache saw them are not read again.
    """
    spec_path = Path(spec_path)
    spec = load_spec(
        spec_path, None if data_root is None else Path(data_root), allow_roots=[Path(root) for root in allow_roots]
    )
    files = sorted({path.resolve() for source in spec_sources(spec) for path in source_files(source)})
    digest = hashlib.sha256()
    digest.update(f"spec {file_sha256(spec_path)}\n".encode())
    for path in files:
        content = file_sha256(path) if cache is None else cached_sha256(path, cache)
        digest.update(f"{path} {content}\n".encode())
    return digest.hexdigest()
