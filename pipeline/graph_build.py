"""Intra-modal graphs: per modality with a `graph:` recipe, k-NN over its features and/or given pairs, united
(max of weights) into one graph whose normalised Laplacian is written into the run directory's `graphs/`.

The graph's nodes are the entities of the run's catalog (written by ingest, built from the relations). Side data
cannot add entities: a feature or pair row whose key is in no relation has no entity to attach to, so it is
quarantined (to `quarantine/graph-<modality>.parquet`, with the reason), never dropped silently. Catalog
entities without a feature row have no k-NN edges: they are isolated unless a given pair links them.

The k-NN search and the Laplacian run on the device the caller names ("cpu": NumPy and SciPy's k-d tree; "cuda":
CuPy, hyperlearn.arrays), which gives the same graphs; reading, validation and the union stay on the host.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse

from hyperlearn.arrays import array_module
from hyperlearn.rundir import RunDir
from hyperlearn.graphs import knn_graph, normalized_laplacian
from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.readers import ROW_NUMBER, read_source
from hyperlearn.pipeline.spec import DatasetSpec, FeatureSpec, KeyNormalisation, ModalitySpec, PairsSpec
from hyperlearn.pipeline.validation import RowChecks, write_quarantine


@dataclass(frozen=True)
class GraphStats:
    """What went into one modality's graph. `edges` counts undirected edges of the united graph."""

    modality: str
    nodes: int
    edges: int
    isolated: int
    sources: tuple[str, ...]
    knn_edges: int
    pair_edges: int
    rows_read: int
    rows_quarantined: int
    quarantine_file: str  # relative to the run directory (the version folder once published)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"sources": list(self.sources)}


def build_graphs(spec: DatasetSpec, run: RunDir, device: str = "cpu") -> dict[str, GraphStats]:
    """Build and write the Laplacian of every modality that has a `graph:` recipe, over the catalog that
    ingest wrote to the run's `catalog/`, computing k-NN and Laplacians on `device` ("cpu" or "cuda");
    return their stats by modality name."""
    modalities = [m for m in spec.modalities if m.graph is not None]
    catalogs = {modality.name: _catalog(run, modality.name) for modality in modalities}
    reads = {}
    for modality in modalities:
        if modality.graph.knn is not None:
            features = modality.features
            columns = [features.key, *features.numeric, *features.categorical]
            reads[modality.name, "features"] = (features.source, columns)
        if modality.graph.pairs is not None:
            pairs = modality.graph.pairs
            reads[modality.name, "pairs"] = (pairs.source, _pair_columns(pairs))
    with ThreadPoolExecutor(max_workers=max(1, len(reads)), thread_name_prefix="graph-source") as pool:
        computed = dict(zip(reads, pool.map(lambda read: read_source(*read), reads.values())))
    stats = {}
    with array_module(device) as xp:
        for modality in modalities:
            features, pairs = computed.get((modality.name, "features")), computed.get((modality.name, "pairs"))
            stats[modality.name] = _build_graph(modality, catalogs[modality.name], features, pairs, run, xp)
    return stats


def _catalog(run: RunDir, modality: str) -> EntityCatalog:
    """The catalog ingest wrote into the run (an absent one is an error, not an empty graph)."""
    path = EntityCatalog.path(run.catalog, modality)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no catalog for modality {modality!r}; run ingest first")
    return EntityCatalog.load(run.catalog, modality)


def _build_graph(
    modality: ModalitySpec,
    catalog: EntityCatalog,
    feature_rows: pd.DataFrame | None,
    pair_rows: pd.DataFrame | None,
    run: RunDir,
    xp: ModuleType,
) -> GraphStats:
    """Unite one modality's k-NN and pair weights; write its Laplacian and quarantine file (k-NN search and
    Laplacian on the array module `xp`)."""
    n = len(catalog)
    weights = scipy.sparse.csr_matrix((n, n), dtype=np.float64)
    quarantined, rows_read, knn_edges, pair_edges = [], 0, 0, 0
    if feature_rows is not None:
        ids, matrix, rejected = feature_matrix(feature_rows, modality.features, catalog, modality.keys)
        knn = _on_catalog(knn_graph(matrix, modality.graph.knn.k, xp=xp), ids, n)
        weights, knn_edges = weights.maximum(knn), knn.nnz // 2
        quarantined.append(rejected)
        rows_read += len(feature_rows)
    if pair_rows is not None:
        given, rejected = pair_weights(pair_rows, modality.graph.pairs, catalog, modality.keys)
        weights, pair_edges = weights.maximum(given), given.nnz // 2
        quarantined.append(rejected)
        rows_read += len(pair_rows)
    run.write_laplacian(modality.name, normalized_laplacian(weights, xp=xp))
    rejected = pd.concat(quarantined, ignore_index=True)
    path = write_quarantine(rejected, run.graph_quarantine(modality.name))
    degrees = np.asarray(weights.sum(axis=1)).ravel()
    return GraphStats(
        modality=modality.name,
        nodes=n,
        edges=weights.nnz // 2,
        isolated=int((degrees == 0).sum()),
        sources=tuple(name for name, rows in (("knn", feature_rows), ("pairs", pair_rows)) if rows is not None),
        knn_edges=knn_edges,
        pair_edges=pair_edges,
        rows_read=rows_read,
        rows_quarantined=len(rejected),
        quarantine_file=run.relative(path),
    )


def feature_matrix(
    rows: pd.DataFrame, features: FeatureSpec, catalog: EntityCatalog, keys: KeyNormalisation = KeyNormalisation()
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Validate feature rows and encode them: (catalog ids, one feature row per id, quarantined rows).

    Numeric columns are standardised unless the spec says `standardise: false` (zero mean, unit variance over
    the accepted rows; a constant column becomes 0); categorical ones are one-hot, a missing category giving all zeros. A row is quarantined when
    its key is missing or in no relation, a numeric value is missing or not a finite number, or an earlier row
    has the same key.
    """
    rows = rows.reset_index(drop=True)
    checks = RowChecks(rows)
    ids = catalog.ids(checks.key(features.key, keys))
    checks.fail(pd.Series(ids < 0, index=rows.index), features.key, "key not in any relation")
    numeric = pd.DataFrame({column: checks.number(column) for column in features.numeric}, index=rows.index)
    _fail_repeated_keys(checks, features.key)
    columns = [features.key, *features.numeric, *features.categorical]
    rejected = checks.quarantine(columns)

    accepted = checks.passed.to_numpy()
    numeric = numeric.loc[accepted]
    if features.standardise:
        numeric = (numeric - numeric.mean()) / numeric.std(ddof=0).replace(0.0, 1.0)
    blocks = [numeric.to_numpy(dtype=np.float64)]
    if features.categorical:
        blocks.append(pd.get_dummies(rows.loc[accepted, list(features.categorical)], dtype=np.float64).to_numpy())
    return ids[accepted], np.hstack(blocks), rejected


def pair_weights(
    rows: pd.DataFrame, pairs: PairsSpec, catalog: EntityCatalog, keys: KeyNormalisation = KeyNormalisation()
) -> tuple[scipy.sparse.csr_matrix, pd.DataFrame]:
    """Validate given pairs into a symmetric weight matrix over the catalog (pairs given more than once, in
    either direction, keep their largest weight) and the quarantined rows.

    A row is quarantined when a key is missing or not in the catalog, both keys name the same entity, or the
    weight is missing, not a finite number or not positive.
    """
    rows = rows.reset_index(drop=True)
    checks = RowChecks(rows)
    ends = []
    for column in pairs.columns:
        ids = catalog.ids(checks.key(column, keys))
        checks.fail(pd.Series(ids < 0, index=rows.index), column, "key not in any relation")
        ends.append(ids)
    checks.fail(pd.Series(ends[0] == ends[1], index=rows.index), pairs.columns[1], "a pair of an entity with itself")
    if pairs.weight is None:
        weights = pd.Series(1.0, index=rows.index)
    else:
        weights = checks.number(pairs.weight)
        checks.fail(weights <= 0, pairs.weight, "weight must be > 0, got " + rows[pairs.weight])
    rejected = checks.quarantine(_pair_columns(pairs))

    accepted = checks.passed.to_numpy()
    edges = pd.DataFrame(
        {
            "low": np.minimum(ends[0], ends[1])[accepted],
            "high": np.maximum(ends[0], ends[1])[accepted],
            "weight": weights.to_numpy()[accepted],
        }
    ).groupby(["low", "high"], as_index=False)["weight"].max()
    n = len(catalog)
    upper = scipy.sparse.coo_matrix((edges["weight"], (edges["low"], edges["high"])), shape=(n, n))
    return (upper + upper.T).tocsr(), rejected


def _pair_columns(pairs: PairsSpec) -> list[str]:
    return [*pairs.columns, pairs.weight] if pairs.weight is not None else list(pairs.columns)


def _fail_repeated_keys(checks: RowChecks, key: str) -> None:
    """Quarantine each later row of a key that an earlier accepted row already has."""
    candidates = checks.rows.loc[checks.passed, [key, ROW_NUMBER]]
    repeated = candidates[key].duplicated(keep="first")
    first_row = candidates.drop_duplicates(key).set_index(key)[ROW_NUMBER]
    reasons = "duplicate key; row " + candidates.loc[repeated, key].map(first_row).astype(str) + " has it already"
    mask = pd.Series(False, index=checks.rows.index)
    mask[repeated[repeated].index] = True
    checks.fail(mask, key, reasons.reindex(checks.rows.index))


def _on_catalog(graph: scipy.sparse.csr_matrix, ids: np.ndarray, n: int) -> scipy.sparse.csr_matrix:
    """A graph over the featured entities re-indexed onto all n catalog entities."""
    edges = graph.tocoo()
    return scipy.sparse.csr_matrix((edges.data, (ids[edges.row], ids[edges.col])), shape=(n, n))
