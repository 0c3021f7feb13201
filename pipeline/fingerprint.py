"""The input fingerprint of a run: what decides whether retraining could change anything.

Three parts: the spec's hash (its parsed content), the SHA-256 of every source file it names (folders and globs
expanded to the files they match now, so a new file matching `ratings*.csv` changes it), and the hash of the
settings the run trains with (the spec's `training:` block with the command-line overrides applied, less
`init_from`, which says where to start, not what to learn, plus the training mode). A version records its
fingerprint in its manifest (`inputs`); a run whose fingerprint equals its parent's is skipped. Torch-free, so the
serving process of `hyperlearn schedule --on-change` can poll `input_fingerprint` to decide when the inputs
changed: an edited spec, an edited source file and a new file that a folder or glob source now names all change
it; touching a file without changing its bytes does not. Files are hashed by content; a poller passes a
`HashCache`, so that only files whose size or modification time moved are read again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperlearn.pipeline.readers import source_files
from hyperlearn.pipeline.spec import DatasetSpec, SourceSpec

#: path → (size, modification time in ns, SHA-256) of files hashed before.
HashCache = dict[Path, tuple[int, int, str]]

#: Settings that choose the run's starting point rather than what it learns: left out of the fingerprint.
START_SETTINGS = ("init_from",)


@dataclass(frozen=True)
class InputFingerprint:
    """A spec's inputs: its hash, each source file's SHA-256 (absolute path → hex digest), the settings' hash;
    `digest` is one hash over all three."""

    spec_hash: str
    files: Mapping[str, str]
    settings_hash: str

    @property
    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The manifest's `inputs` (without the digest, which `from_dict` recomputes)."""
        return {"spec_hash": self.spec_hash, "files": dict(sorted(self.files.items())),
                "settings_hash": self.settings_hash}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "InputFingerprint":
        return cls(spec_hash=raw["spec_hash"], files=dict(raw["files"]), settings_hash=raw["settings_hash"])

    def changes_from(self, other: "InputFingerprint") -> list[str]:
        """What differs from `other`, in words (empty when nothing does): for the log of a run that is not
        skipped, and for a watcher's event."""
        changes = []
        if self.spec_hash != other.spec_hash:
            changes.append("the spec changed")
        if self.settings_hash != other.settings_hash:
            changes.append("the training settings changed")
        for path in sorted(set(self.files) | set(other.files)):
            if path not in other.files:
                changes.append(f"new file {path}")
            elif path not in self.files:
                changes.append(f"file gone {path}")
            elif self.files[path] != other.files[path]:
                changes.append(f"file changed {path}")
        return changes


def input_fingerprint(
    spec: DatasetSpec, mode: str = "distributed", cache: HashCache | None = None
) -> InputFingerprint:
    """The fingerprint of `spec` as loaded (`hyperlearn.pipeline.spec.load_spec`, overrides applied) for a run in
    `mode`; reads every source file once, or with `cache` only those whose size or modification time differ from
    the cache's. A source that names no file raises SourceError naming it."""
    files = {
        str(path.resolve()): file_sha256(path) if cache is None else cached_sha256(path.resolve(), cache)
        for source in spec_sources(spec) for path in source_files(source)
    }
    return InputFingerprint(spec.spec_hash, files, settings_hash(spec, mode))


def settings_hash(spec: DatasetSpec, mode: str) -> str:
    """SHA-256 of the training settings that change what a run learns (all but START_SETTINGS) and the mode."""
    settings = {k: v for k, v in spec.training.to_dict().items() if k not in START_SETTINGS}
    blob = json.dumps({"training": settings, "mode": mode}, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()


def spec_sources(spec: DatasetSpec) -> Iterator[SourceSpec]:
    """Every data source a spec names: relation sources, modality features and graph pairs."""
    for relation in spec.relations:
        yield from relation.sources.values()
    for modality in spec.modalities:
        if modality.features is not None:
            yield modality.features.source
        if modality.graph is not None and modality.graph.pairs is not None:
            yield modality.graph.pairs.source


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def cached_sha256(path: Path, cache: HashCache) -> str:
    """`file_sha256(path)`, read again only when the file's size or modification time differ from the cache's."""
    status = path.stat()
    known = cache.get(path)
    if known is not None and known[:2] == (status.st_size, status.st_mtime_ns):
        return known[2]
    digest = file_sha256(path)
    cache[path] = (status.st_size, status.st_mtime_ns, digest)
    return digest
