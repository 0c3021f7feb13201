"""Filtered ranking metrics of held-out tuples, and the popularity baselines they are read against.

A query is a distinct tuple of a relation's non-target axes among the held-out entries; its positives are the
held-out target entities seen with it. Every entity of the target axis is a candidate except the query's known
positives from the fitted splits ("filtered", Bordes et al. 2013) — unless they are also held-out positives.
Ties are broken pessimistically: a positive is ranked below every candidate scoring the same, so a model that
gives everything one score ranks its positives last. Among themselves, tied positives keep entity order.

Per query: Recall@k = |positives in top k| / |positives|; NDCG@k with binary gains and the ideal DCG over
min(k, |positives|); Hits@k = 1 if a positive is in the top k; MRR = 1 / rank of the best positive. Reported as
means over queries. Scores are computed a batch of queries at a time (`QueryScorer`), so memory stays
O(batch · candidates) whatever the number of queries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

QueryScorer = Callable[[np.ndarray], torch.Tensor]  # query contexts (K, B) → scores (B, N)
CELLS_PER_BATCH = 2_000_000
CONTEXT_MIX = 0.9  # context popularity: weight of the co-occurrence frequencies, the rest global popularity


@dataclass(frozen=True)
class RankingQueries:
    """The queries of one held-out split: `contexts` (K, Q) hold each query's non-target entities (row
    `target` is 0); `positives` and `known` are Q × N boolean CSR matrices of held-out and filtered entities."""

    target: int
    contexts: np.ndarray
    positives: scipy.sparse.csr_matrix
    known: scipy.sparse.csr_matrix

    @property
    def size(self) -> int:
        return self.contexts.shape[1]


def ranking_queries(
    held_out: np.ndarray, known: np.ndarray, target: int, candidates: int
) -> RankingQueries:
    """Queries of the held-out coordinates (K, n) with their positives, filtered of `known` coordinates."""
    others = [axis for axis in range(held_out.shape[0]) if axis != target]
    both = np.concatenate([held_out[others], known[others]], axis=1)
    distinct, group = np.unique(both, axis=1, return_inverse=True)
    group = group.reshape(-1)
    held_group, known_group = group[: held_out.shape[1]], group[held_out.shape[1] :]
    used = np.unique(held_group)
    query_of_group = np.full(distinct.shape[1], -1)
    query_of_group[used] = np.arange(len(used))
    contexts = np.zeros((held_out.shape[0], len(used)), dtype=np.int64)
    contexts[others] = distinct[:, used]
    shape = (len(used), candidates)
    positives = _indicator(query_of_group[held_group], held_out[target], shape)
    keep = query_of_group[known_group] >= 0
    filtered = _indicator(query_of_group[known_group][keep], known[target][keep], shape)
    return RankingQueries(target, contexts, positives, filtered)


def _indicator(rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int]) -> scipy.sparse.csr_matrix:
    matrix = scipy.sparse.csr_matrix((np.ones(len(rows), dtype=bool), (rows, columns)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = True
    return matrix


def positive_ranks(
    scores: torch.Tensor, positives: scipy.sparse.csr_matrix, known: scipy.sparse.csr_matrix
) -> tuple[np.ndarray, np.ndarray]:
    """1-based filtered, pessimistic rank of every positive of a batch of queries: (query row, rank) arrays.

    rank(p) = 1 + #{candidates c that are not positives: s_c ≥ s_p} + #{positives q: s_q > s_p, or s_q = s_p
    and q < p}. NaN and infinite scores count as the extreme finite values (a diverged model ranks last);
    filtered entities score −∞, below every candidate."""
    rows, items = positives.nonzero()
    if len(rows) == 0:
        return rows, np.zeros(0)
    lowest = torch.finfo(scores.dtype).min
    scores = torch.nan_to_num(scores, nan=lowest)
    filtered_rows, filtered_items = (known > positives).nonzero()
    scores[torch.from_numpy(filtered_rows.astype(np.int64)), torch.from_numpy(filtered_items.astype(np.int64))] = -np.inf
    row_index, item_index = torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(items.astype(np.int64))
    own = scores[row_index, item_index]
    at_least = (scores[row_index] >= own[:, None]).sum(1)
    # The positives of each row side by side (−∞ padding), to compare each positive with its row's others.
    counts = np.bincount(rows, minlength=scores.shape[0])
    slot = torch.from_numpy(np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts))
    padded_scores = scores.new_full((scores.shape[0], int(counts.max())), -np.inf)
    padded_scores[row_index, slot] = own
    padded_items = torch.full(padded_scores.shape, scores.shape[1], dtype=torch.int64)
    padded_items[row_index, slot] = item_index
    others, other_items = padded_scores[row_index], padded_items[row_index]
    mine, my_item = own[:, None], item_index[:, None]
    real = other_items < scores.shape[1]
    positives_at_least = ((others >= mine) & real).sum(1)
    positives_before = (((others > mine) | ((others == mine) & (other_items < my_item))) & real).sum(1)
    return rows, (1 + at_least - positives_at_least + positives_before).numpy()


def query_metrics(
    query: np.ndarray, ranks: np.ndarray, n_queries: int, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-query recall@k, ndcg@k, hits@k and mrr from the ranks of their positives (`query`: each rank's row)."""
    count = np.bincount(query, minlength=n_queries).astype(np.float64)
    best = np.full(n_queries, np.inf)
    np.minimum.at(best, query, ranks)
    metrics = {"mrr": 1.0 / best}
    discount = 1.0 / np.log2(ranks + 1.0)
    for k in ks:
        inside = ranks <= k
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(count, k).astype(int) - 1]
        metrics[f"recall@{k}"] = np.bincount(query, weights=inside, minlength=n_queries) / count
        metrics[f"ndcg@{k}"] = np.bincount(query, weights=discount * inside, minlength=n_queries) / ideal
        metrics[f"hits@{k}"] = (best <= k).astype(np.float64)
    return metrics


def ranking_metrics(
    queries: RankingQueries, scorer: QueryScorer, ks: Sequence[int], cells_per_batch: int = CELLS_PER_BATCH
) -> dict[str, float]:
    """Means over queries of recall@k, ndcg@k, hits@k (each k in `ks`) and mrr of `scorer`'s scores."""
    if queries.size == 0:
        return {}
    candidates = queries.positives.shape[1]
    batch = max(1, cells_per_batch // max(candidates, 1))
    per_query: dict[str, list[np.ndarray]] = {}
    for start in range(0, queries.size, batch):
        part = slice(start, min(start + batch, queries.size))
        with torch.no_grad():
            scores = scorer(queries.contexts[:, part])
        rows, ranks = positive_ranks(scores, queries.positives[part], queries.known[part])
        for name, values in query_metrics(rows, ranks, part.stop - part.start, ks).items():
            per_query.setdefault(name, []).append(values)
    return {name: float(np.concatenate(parts).mean()) for name, parts in per_query.items()}


def global_popularity_scorer(train: np.ndarray, target: int, candidates: int) -> QueryScorer:
    """Every query ranks the target entities by their training frequency."""
    frequency = torch.from_numpy(np.bincount(train[target], minlength=candidates).astype(np.float64))
    return lambda contexts: frequency[None, :].expand(contexts.shape[1], -1)


def context_popularity_scorer(train: np.ndarray, target: int, sizes: Sequence[int]) -> QueryScorer:
    """Per-query-context popularity: for each non-target axis k, how often each target entity co-occurs in
    training with the query's entity on k (as a fraction of that entity's entries), averaged over the axes and
    mixed with the global frequency, which ranks what the context has never seen."""
    candidates = sizes[target]
    others = [axis for axis in range(train.shape[0]) if axis != target]
    conditionals = []
    for axis in others:
        counts = scipy.sparse.csr_matrix(
            (np.ones(train.shape[1]), (train[axis], train[target])), shape=(sizes[axis], candidates)
        )
        totals = np.asarray(counts.sum(1)).ravel()
        conditionals.append((axis, scipy.sparse.diags(1.0 / np.maximum(totals, 1.0)) @ counts))
    frequency = np.bincount(train[target], minlength=candidates).astype(np.float64)
    popularity = torch.from_numpy(frequency / max(frequency.sum(), 1.0))

    def scorer(contexts: np.ndarray) -> torch.Tensor:
        mixed = sum(torch.from_numpy(matrix[contexts[axis]].toarray()) for axis, matrix in conditionals)
        return CONTEXT_MIX * mixed / len(conditionals) + (1 - CONTEXT_MIX) * popularity[None, :]

    return scorer
