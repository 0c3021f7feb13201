"""Reading a published version: its embeddings, biases and scoring description, and the model's scores from them.

A version folder holds everything a reader needs to compute the model's score of any tuple (docs in README.md,
"Reading the embeddings"):

    <version>/scoring.json                                      how every relation scores a tuple
    <version>/embeddings/modality=<m>/part-0.parquet            entity_id, key, embedding[R]
    <version>/biases/relation=<r>/modality=<m>/part-0.parquet   entity_id, key, bias

This module is the one owner of that format: `RelationScoring` is one relation's entry of `scoring.json` (the
writer, `hyperlearn.pipeline.outputs`, builds it from the relation's meta), and `PublishedVersion` answers
`score`, `recommend` and `neighbors` from the files alone. NumPy, SciPy, pandas and pyarrow only: no torch,
no Prefect, so a serving process loads nothing of the training stack.

An unknown key is answered from what the model knows about the rest of the tuple: it contributes a zero
embedding row and a zero bias (what an entity the model never saw has); `recommend` counts such keys, and
`entity_ids` marks them −1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.special

from hyperlearn.pipeline.publish import EMBEDDINGS_FILE
from hyperlearn.rundir import LossKind, RelationMeta, RunDir
from hyperlearn.structure import Block, relation_blocks

SCORING_FILE = "scoring.json"
SCORING_FORMAT = "hyperlearn.scoring/1"
BIASES = "biases"
LINKS: dict[str, str] = {"squared": "identity", "logistic": "sigmoid", "bpr": "none", "softmax": "none"}
FORMULA = (
    "For a tuple of relation r with entity i_k on axis k (the entity_id of its key in the embeddings of the "
    "axis's modality): score = offset + sum over axes k of bias_k[i_k] + sum over blocks of "
    "sum_{c = start}^{stop - 1} prod_{k in block.axes} embedding_k[i_k][c], where embedding_k and bias_k are "
    "the embedding and bias files of axis k's modality (biases are per relation). An unknown key contributes a "
    "zero embedding row and a zero bias. Then, by link: identity (squared) - the predicted value, clipped to "
    "clip when given; sigmoid (logistic) - the probability 1 / (1 + exp(-score)); none (bpr, softmax) - the "
    "score only ranks candidates. Rankings order by the score before the link."
)
#: Queries scored per matrix product in `recommend`: a batch's score matrix is batch × candidates float32.
QUERY_BATCH = 2048


def bias_path(relation: str, modality: str) -> str:
    """Where the biases of `modality` in `relation` live, relative to the version folder (Hive-style partitions,
    so DuckDB and pandas read relation and modality as columns)."""
    return f"{BIASES}/relation={relation}/modality={modality}/{EMBEDDINGS_FILE}"


def embedding_path(modality: str) -> str:
    """Where the embeddings of `modality` live, relative to the version folder."""
    return f"embeddings/modality={modality}/{EMBEDDINGS_FILE}"


def axis_labels(meta: RelationMeta) -> tuple[str, ...]:
    """How each axis is named in queries: by its modality, or by its axis name where the modality repeats
    (user × user, KG head and tail)."""
    return tuple(
        modality if meta.modalities.count(modality) == 1 else axis for modality, axis in zip(meta.modalities, meta.axes)
    )


@dataclass(frozen=True)
class RelationScoring:
    """How one relation scores a tuple: one entry of `scoring.json` (see `FORMULA`)."""

    name: str
    modalities: tuple[str, ...]
    axes: tuple[str, ...]
    labels: tuple[str, ...]
    value_model: LossKind
    offset: float
    clip: tuple[float, float] | None
    blocks: tuple[Block, ...]

    @classmethod
    def from_meta(cls, meta: RelationMeta, rank: int, offset: float) -> "RelationScoring":
        """The scoring of a trained relation: its blocks at embedding width `rank`, its offset (the train mean
        of a squared relation, as the model used it, 0 otherwise) and its clip range (squared relations)."""
        clip = None
        if meta.loss == "squared" and meta.value_min is not None and meta.value_max is not None:
            clip = (float(meta.value_min), float(meta.value_max))
        return cls(
            name=meta.name,
            modalities=tuple(meta.modalities),
            axes=tuple(meta.axes),
            labels=axis_labels(meta),
            value_model=meta.loss,
            offset=float(offset) if meta.loss == "squared" else 0.0,
            clip=clip,
            blocks=relation_blocks(meta, rank),
        )

    @property
    def link(self) -> str:
        return LINKS[self.value_model]

    @property
    def biases(self) -> tuple[str, ...]:
        """The bias file of each axis (a modality on two axes uses its one bias file on both)."""
        return tuple(bias_path(self.name, modality) for modality in self.modalities)

    def axis(self, label: str) -> int:
        """The axis a query names: by its label (modality, or axis name where the modality repeats) or by its
        axis name."""
        for names in (self.labels, self.axes):
            if label in names:
                return names.index(label)
        raise KeyError(f"relation {self.name!r} has no axis {label!r}; its axes are {list(self.labels)}")

    def query_labels(self, target: str) -> list[str]:
        """The labels a query gives when `target` is ranked: every other axis."""
        axis = self.axis(target)
        return [label for other, label in enumerate(self.labels) if other != axis]

    def to_dict(self) -> dict:
        return {
            "modalities": list(self.modalities),
            "axes": list(self.axes),
            "labels": list(self.labels),
            "value_model": self.value_model,
            "offset": self.offset,
            "clip": None if self.clip is None else list(self.clip),
            "link": self.link,
            "blocks": [{"axes": list(b.axes), "start": b.start, "stop": b.stop} for b in self.blocks],
            "biases": list(self.biases),
        }

    @classmethod
    def from_dict(cls, name: str, raw: Mapping) -> "RelationScoring":
        return cls(
            name=name,
            modalities=tuple(raw["modalities"]),
            axes=tuple(raw["axes"]),
            labels=tuple(raw["labels"]),
            value_model=raw["value_model"],
            offset=float(raw["offset"]),
            clip=None if raw["clip"] is None else (float(raw["clip"][0]), float(raw["clip"][1])),
            blocks=tuple(Block(tuple(b["axes"]), int(b["start"]), int(b["stop"])) for b in raw["blocks"]),
        )


def scoring_description(
    relations: Sequence[RelationScoring], *, dataset: str, version: str, config_hash: str, rank: int
) -> dict:
    """The whole `scoring.json`: every relation's scoring, where the embeddings are, and the formula in words."""
    modalities = sorted({m for relation in relations for m in relation.modalities})
    return {
        "format": SCORING_FORMAT,
        "dataset": dataset,
        "version": version,
        "config_hash": config_hash,
        "rank": rank,
        "formula": FORMULA,
        "embeddings": {modality: embedding_path(modality) for modality in modalities},
        "relations": {relation.name: relation.to_dict() for relation in relations},
    }


def apply_link(scoring: RelationScoring, raw: np.ndarray) -> np.ndarray:
    """The relation's output from raw scores: a clipped prediction, a probability, or the ranking score."""
    if scoring.link == "sigmoid":
        return scipy.special.expit(raw)
    if scoring.clip is not None:
        return np.clip(raw, *scoring.clip)
    return raw


def raw_scores(
    scoring: RelationScoring, embeddings: Sequence[np.ndarray], biases: Sequence[np.ndarray], ids: Sequence[np.ndarray]
) -> np.ndarray:
    """Raw scores (before the link) of tuples given as entity ids per axis; an id of −1 (unknown) contributes a
    zero embedding row and zero bias. `embeddings` and `biases` are per axis."""
    total = np.full(len(ids[0]), scoring.offset, dtype=np.float64)
    rows = [_known(index) for index in ids]
    for bias, (index, known) in zip(biases, rows):
        total += np.where(known, bias[index], 0.0)
    for block in scoring.blocks:
        product = np.ones((len(total), block.stop - block.start), dtype=np.float64)
        for k in block.axes:
            index, known = rows[k]
            product *= np.where(known[:, None], embeddings[k][index, block.start : block.stop], 0.0)
        total += product.sum(axis=1)
    return total


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The `k` highest finite scores of each row, as (row, column, rank 1…k, score) arrays ordered by row and
    rank; ties rank the lower column first, and a row with fewer finite scores gets fewer entries.

    Exact, and cheaper than a per-row selection: the k-th largest of the rows' block maxima is a threshold
    that at least k entries reach, so only the entries above it are sorted."""
    n_columns = scores.shape[1]
    k = min(k, n_columns)
    block = max(1, n_columns // max(k, 128))
    maxima = np.maximum.reduceat(scores, np.arange(0, n_columns, block), axis=1)
    threshold = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
    lowest_finite = np.finfo(scores.dtype).min  # so that −inf (excluded) never passes
    rows, columns = np.nonzero(scores >= np.maximum(threshold, lowest_finite)[:, None])
    values = scores[rows, columns]
    order = np.lexsort((columns, -values, rows))
    rows, columns, values = rows[order], columns[order], values[order]
    ranks = np.arange(len(rows)) - np.searchsorted(rows, rows) + 1
    kept = ranks <= k
    return rows[kept].astype(np.int64), columns[kept].astype(np.int64), ranks[kept].astype(np.int64), values[kept]


def _known(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids safe to index with (unknown ones at row 0) and the mask of known ones."""
    known = ids >= 0
    return np.where(known, ids, 0), known


@dataclass(frozen=True)
class Recommendations:
    """The top candidates per query: `table` has query (int64, the query's 0-based row), rank (int64, 1…k),
    key (string), score (float32, the relation's output: a clipped prediction, a probability or the ranking
    score); `unknown` counts the query keys not in the published catalog, per axis label."""

    table: pa.Table
    unknown: dict[str, int]


RECOMMENDATION_SCHEMA = pa.schema(
    [("query", pa.int64()), ("rank", pa.int64()), ("key", pa.string()), ("score", pa.float32())]
)
NEIGHBOR_SCHEMA = pa.schema([("rank", pa.int64()), ("key", pa.string()), ("similarity", pa.float32())])


@dataclass
class PublishedVersion:
    """One published version, read lazily: each embedding and bias file is loaded once, when first needed."""

    path: Path
    description: dict
    relations: dict[str, RelationScoring]
    _embeddings: dict[str, tuple[pd.Index, np.ndarray]] = field(default_factory=dict, repr=False)
    _biases: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)

    # --- the published files --------------------------------------------------------------------------------

    @property
    def modalities(self) -> list[str]:
        return sorted(self.description["embeddings"])

    def relation(self, name: str) -> RelationScoring:
        """How relation `name` scores a tuple."""
        try:
            return self.relations[name]
        except KeyError:
            raise KeyError(f"{self.path}: no relation {name!r}; published: {sorted(self.relations)}") from None

    def keys(self, modality: str) -> pd.Index:
        """The modality's keys; position = entity id."""
        return self._modality(modality)[0]

    def embeddings(self, modality: str) -> np.ndarray:
        """The modality's embeddings, entities × R float32, row = entity id."""
        return self._modality(modality)[1]

    def entity_ids(self, modality: str, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        """The entity ids of `keys` (int64), −1 for keys the version does not know."""
        return self.keys(modality).get_indexer(pd.Index(np.asarray(keys, dtype=object), dtype="str")).astype(np.int64)

    def biases(self, relation: str, modality: str) -> np.ndarray:
        """The entity biases of `modality` in `relation`, float32, position = entity id."""
        cached = self._biases.get((relation, modality))
        if cached is None:
            path = self.path / bias_path(self.relation(relation).name, modality)
            table = _read_parquet(path, ("entity_id", "key", "bias"))
            _check_ids(path, table)
            cached = table.column("bias").to_numpy().astype(np.float32)
            if len(cached) != len(self.keys(modality)):
                raise ValueError(f"{path}: {len(cached)} biases for {len(self.keys(modality))} {modality} entities")
            self._biases[(relation, modality)] = cached
        return cached

    # --- scores ---------------------------------------------------------------------------------------------

    def score(self, relation: str, tuples_by_axis_keys: Mapping[str, Sequence[str]]) -> np.ndarray:
        """The model's output for tuples given as keys per axis label (every axis): the clipped prediction of a
        squared relation, the probability of a logistic one, the ranking score of bpr/softmax (float64)."""
        scoring = self.relation(relation)
        ids, _ = self._query_ids(scoring, tuples_by_axis_keys, range(len(scoring.modalities)))
        embeddings = [self.embeddings(m) for m in scoring.modalities]
        biases = [self.biases(relation, m) for m in scoring.modalities]
        return apply_link(scoring, raw_scores(scoring, embeddings, biases, ids))

    def recommend(
        self,
        relation: str,
        target_axis: str,
        queries: Mapping[str, Sequence[str]],
        k: int,
        exclude_seen: bool = False,
    ) -> Recommendations:
        """The `k` best entities of the target axis for each query (keys per label of every other axis), ranked
        by raw score, ties by entity id. `exclude_seen` leaves out the tuples the model was trained or
        validated on; a query may then get fewer than `k` rows."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scoring = self.relation(relation)
        target = scoring.axis(target_axis)
        given = [scoring.axis(label) for label in scoring.query_labels(target_axis)]
        ids, unknown = self._query_ids(scoring, queries, given)
        by_axis = dict(zip(given, ids))
        n_queries = len(ids[0])
        query_part, candidate_part, constant = self._factorised(scoring, target, by_axis, n_queries)
        seen = self._seen(scoring, target, by_axis) if exclude_seen else np.zeros((2, 0), dtype=np.int64)
        none, no_score = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        columns = {"query": [none], "rank": [none], "candidate": [none], "raw": [no_score]}  # for no queries
        for start in range(0, n_queries, QUERY_BATCH):
            stop = min(start + QUERY_BATCH, n_queries)
            scores = query_part[start:stop] @ candidate_part.T
            scores += constant[start:stop, None]
            first, last = np.searchsorted(seen[0], [start, stop])
            scores[seen[0, first:last] - start, seen[1, first:last]] = -np.inf
            rows, candidates, ranks, best = top_k(scores, k)
            for name, part in zip(columns, (rows + start, ranks, candidates, best)):
                columns[name].append(part)
        joined = {name: np.concatenate(parts) for name, parts in columns.items()}
        keys = self.keys(scoring.modalities[target]).to_numpy()[joined["candidate"]]
        table = pa.table(
            {
                "query": joined["query"].astype(np.int64),
                "rank": joined["rank"].astype(np.int64),
                "key": pa.array(keys, type=pa.string()),
                "score": apply_link(scoring, joined["raw"].astype(np.float64)).astype(np.float32),
            },
            schema=RECOMMENDATION_SCHEMA,
        )
        return Recommendations(table=table, unknown=unknown)

    def neighbors(self, modality: str, key: str, k: int = 10, to: str | None = None) -> pa.Table:
        """The `k` entities of `to` (default: `modality`, leaving out the entity itself) whose embeddings have
        the highest cosine similarity with `key`'s; a zero embedding has similarity 0 with everything."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        [entity] = self.entity_ids(modality, [key])
        if entity < 0:
            raise KeyError(f"{modality}: key {key!r} is not in this version's catalog")
        other = modality if to is None else to
        vector, candidates = self.embeddings(modality)[entity].astype(np.float64), self.embeddings(other)
        if candidates.shape[1] != vector.shape[0]:
            raise ValueError(
                f"{modality} embeddings have width {vector.shape[0]} but {other} embeddings {candidates.shape[1]}"
            )
        norms = np.linalg.norm(candidates, axis=1) * np.linalg.norm(vector)
        dots = candidates @ vector
        similarity = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
        if other == modality:
            similarity[entity] = -np.inf
        _, best, ranks, _ = top_k(similarity[None, :], k)
        return pa.table(
            {
                "rank": ranks,
                "key": pa.array(self.keys(other).to_numpy()[best], type=pa.string()),
                "similarity": similarity[best].astype(np.float32),
            },
            schema=NEIGHBOR_SCHEMA,
        )

    # --- helpers --------------------------------------------------------------------------------------------

    def _modality(self, modality: str) -> tuple[pd.Index, np.ndarray]:
        cached = self._embeddings.get(modality)
        if cached is None:
            if modality not in self.description["embeddings"]:
                raise KeyError(f"{self.path}: no modality {modality!r}; published: {self.modalities}")
            path = self.path / self.description["embeddings"][modality]
            table = _read_parquet(path, ("entity_id", "key", "embedding"))
            _check_ids(path, table)
            column = table.column("embedding").combine_chunks()
            width = column.type.list_size
            matrix = column.flatten().to_numpy().astype(np.float32).reshape(-1, width)
            cached = (pd.Index(table.column("key").to_numpy(zero_copy_only=False), dtype="str"), matrix)
            self._embeddings[modality] = cached
        return cached

    def _query_ids(
        self, scoring: RelationScoring, keys_by_label: Mapping[str, Sequence[str]], axes: Sequence[int]
    ) -> tuple[list[np.ndarray], dict[str, int]]:
        """Entity ids of the query keys on `axes` (which must be exactly the axes named), and how many keys of
        each axis are unknown."""
        named = {scoring.axis(label): label for label in keys_by_label}
        if sorted(named) != sorted(axes):
            wanted = [scoring.labels[axis] for axis in axes]
            raise ValueError(f"relation {scoring.name!r}: queries must give exactly {wanted}, got {list(keys_by_label)}")
        ids = [self.entity_ids(scoring.modalities[axis], keys_by_label[named[axis]]) for axis in axes]
        if len({len(index) for index in ids}) > 1:
            raise ValueError(f"relation {scoring.name!r}: the query axes have different numbers of keys")
        unknown = {scoring.labels[axis]: int((index < 0).sum()) for axis, index in zip(axes, ids)}
        return ids, unknown

    def _factorised(
        self, scoring: RelationScoring, target: int, ids: Mapping[int, np.ndarray], n_queries: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw score of (query q, candidate c) as query_part[q] · candidate_part[c] + constant[q], with the
        candidate's bias as one more column (query side 1): one matrix product scores a batch."""
        modalities = scoring.modalities
        rows = {axis: _known(index) for axis, index in ids.items()}

        def gathered(axis: int, matrix: np.ndarray) -> np.ndarray:
            index, known = rows[axis]
            return np.where(known.reshape((-1,) + (1,) * (matrix.ndim - 1)), matrix[index], 0.0)

        constant = np.full(n_queries, scoring.offset, dtype=np.float64)
        for axis in ids:
            constant += gathered(axis, self.biases(scoring.name, modalities[axis]))
        query_parts, candidate_parts = [np.ones((n_queries, 1))], [self.biases(scoring.name, modalities[target])[:, None]]
        target_embeddings = self.embeddings(modalities[target])
        for block in scoring.blocks:
            product = np.ones((n_queries, block.stop - block.start), dtype=np.float64)
            for axis in block.axes:
                if axis != target:
                    product *= gathered(axis, self.embeddings(modalities[axis])[:, block.start : block.stop])
            if target in block.axes:
                query_parts.append(product)
                candidate_parts.append(target_embeddings[:, block.start : block.stop])
            else:
                constant += product.sum(axis=1)
        query_part = np.hstack(query_parts).astype(np.float32)
        candidate_part = np.ascontiguousarray(np.hstack(candidate_parts), dtype=np.float32)
        return query_part, candidate_part, constant.astype(np.float32)

    def _seen(self, scoring: RelationScoring, target: int, ids: Mapping[int, np.ndarray]) -> np.ndarray:
        """(query row, candidate id) pairs, sorted by query, of the training and validation tuples that match a
        query on every given axis."""
        run = RunDir(self.path)
        coords = np.hstack([run.read_relation_split(scoring.name, split).coords for split in ("train", "validation")])
        given = [f"axis{axis}" for axis in ids]
        queries = pd.DataFrame({f"axis{axis}": index for axis, index in ids.items()})
        queries["query"] = np.arange(len(queries), dtype=np.int64)
        observed = pd.DataFrame({f"axis{axis}": coords[axis] for axis in ids})
        observed["candidate"] = coords[target]
        pairs = queries.merge(observed, on=given, how="inner").sort_values(["query", "candidate"], kind="stable")
        return np.stack([pairs["query"].to_numpy(np.int64), pairs["candidate"].to_numpy(np.int64)])


def open_version(path: Path | str) -> PublishedVersion:
    """Open a published version folder, or `OUT/<dataset>/latest` (followed to the version it points at)."""
    folder = Path(path).resolve()
    scoring_file = folder / SCORING_FILE
    if not scoring_file.is_file():
        raise FileNotFoundError(f"{folder}: no {SCORING_FILE}; not a published version, or one published before it")
    description = json.loads(scoring_file.read_text())
    if description.get("format") != SCORING_FORMAT:
        raise ValueError(f"{scoring_file}: format {description.get('format')!r}, expected {SCORING_FORMAT!r}")
    relations = {name: RelationScoring.from_dict(name, raw) for name, raw in description["relations"].items()}
    return PublishedVersion(path=folder, description=description, relations=relations)


def read_queries(path: Path | str, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Query keys from a CSV with a header naming exactly `labels` (any order), one query per row; every key is
    read as a string. An empty cell is an error naming the file, the row (1-based data row) and the column."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if sorted(frame.columns) != sorted(labels):
        raise ValueError(f"{path}: columns {list(frame.columns)}, expected exactly {list(labels)}")
    for label in labels:
        empty = np.flatnonzero(frame[label].str.len().to_numpy() == 0)
        if len(empty):
            raise ValueError(f"{path}: row {empty[0] + 1}, column {label!r}: empty key")
    return {label: frame[label].to_numpy(dtype=object) for label in labels}


def _read_parquet(path: Path, columns: tuple[str, ...]) -> pa.Table:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the published version")
    table = pq.read_table(path)
    if tuple(table.schema.names) != columns:
        raise ValueError(f"{path}: columns {table.schema.names}, expected {list(columns)}")
    return table


def _check_ids(path: Path, table: pa.Table) -> None:
    """Rows must be entity ids 0 … n−1 in order: position is the id everywhere else."""
    ids = table.column("entity_id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise ValueError(f"{path}: entity ids are not 0 … {len(ids) - 1} in order")
