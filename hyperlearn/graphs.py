"""Intra-modal graphs and their Laplacians (docs/method.md §1).

Pure functions over arrays: a binary k-nearest-neighbour graph over entity features, the symmetric normalised
Laplacian L = I − D^{-1/2} W D^{-1/2}, and its rescaled form L̃ = 2L/λ_max − I used by Chebyshev filters (the
Dirichlet energy that uses L lives with the objective, hyperlearn.objective). The k-NN graph and the Laplacian
take an array module `xp` (hyperlearn.arrays.array_module): NumPy on the CPU, CuPy on a GPU. The Laplacian is one
code path for both; the k-NN graph has a k-d tree search, the fastest on a CPU, and a blocked brute force that
runs on either module (a GPU's search), which give the same graph. Inputs and outputs are NumPy/SciPy on the host.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import numpy as np
import scipy.sparse
from scipy.spatial import cKDTree

from hyperlearn.arrays import to_numpy

KnnSearch = Literal["auto", "kd-tree", "blocks"]

# Relative slack for "same distance" in the k-d tree search: distances that agree to this precision count as a
# tie, so that rounding in the tree never decides which of two equidistant points is a neighbour.
_TIE_RTOL = 1e-9
# Largest |W − Wᵀ| accepted as symmetric, relative to the largest weight.
_SYMMETRY_RTOL = 1e-10
# Entries of one block of the distance matrix (block rows × all points) by array module: 64 MiB of float64 on the
# CPU, 512 MiB on a GPU, so that peak memory stays a few blocks whatever the number of points.
_BLOCK_ENTRIES = {"numpy": 2**23, "cupy": 2**26}
# Rounding of a squared distance, per feature, in units of the machine epsilon times (|a| + |b|)², with room to
# spare: it bounds both the error of |a|² + |b|² − 2a·b (the screening) and that of Σ(a − b)² (the exact form).
_ROUNDING_PER_FEATURE = 4.0


def knn_graph(
    features: np.ndarray, k: int, xp: ModuleType = np, search: KnnSearch = "auto"
) -> scipy.sparse.csr_matrix:
    """Binary, symmetrised k-nearest-neighbour graph over the rows of `features` (Euclidean distance).

    Row i is linked to the k other rows nearest to it; among equidistant candidates the lower row index wins, so
    the graph depends only on the features and their order (not on the search, array module, block size or
    thread count). "Nearest" means the smallest Σ_f (x_jf − x_if)², computed in that form. The directed graph
    is symmetrised as W = max(W, Wᵀ): an edge exists when either end picked the other, and every weight is 1.
    There are no self loops, even between duplicate rows. `k` larger than n − 1 is clipped.

    `search` "kd-tree" (NumPy only) is one SciPy k-d tree query, O(n log n) in few dimensions; "blocks" is a brute
    force over blocks of rows, O(n²·d), which a GPU runs well (`_block_neighbours`); "auto" is the k-d tree on
    NumPy and the blocks on any other array module. Both give the same graph.
    """
    points = np.asarray(features, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"features must be a 2-D array (entities × features), got shape {points.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not np.isfinite(points).all():
        raise ValueError("features contain NaN or infinite values")
    if search not in ("auto", "kd-tree", "blocks"):
        raise ValueError(f"search must be 'auto', 'kd-tree' or 'blocks', got {search!r}")
    if search == "kd-tree" and xp is not np:
        raise ValueError(f"the k-d tree search runs on NumPy only, not {xp.__name__}")
    n = points.shape[0]
    if n < 2:
        return scipy.sparse.csr_matrix((n, n), dtype=np.float64)
    k = min(k, n - 1)
    if search == "kd-tree" or (search == "auto" and xp is np):
        rows, cols = _kd_tree_neighbours(points, k)
    else:
        rows, cols = _block_neighbours(xp.asarray(points), k, xp)
    directed = scipy.sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    graph = directed.maximum(directed.T).tocsr()
    graph.sort_indices()
    return graph


def _kd_tree_neighbours(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, neighbour) pairs, k per row, from one k-d tree query; only rows whose k-th and (k+1)-th neighbours
    tie are resolved one by one (cost grows with the size of such tie groups, e.g. many identical rows)."""
    n = points.shape[0]
    tree = cKDTree(points)
    # k + 1 includes the point itself (distance 0); one more reveals whether the k-th neighbour is tied.
    distances, indices = tree.query(points, k=min(k + 2, n), workers=-1)
    radius = distances[:, k]  # distance to the k-th nearest other point
    if distances.shape[1] > k + 1:
        tied = distances[:, k + 1] <= radius * (1 + _TIE_RTOL)
    else:  # k == n − 1: every other point is a neighbour
        tied = np.zeros(n, dtype=bool)

    # Without a tie the k + 1 nearest points are exactly those within `radius`, the point itself among them.
    clear_rows = np.flatnonzero(~tied)
    candidates = indices[clear_rows, : k + 1]
    not_self = candidates != clear_rows[:, None]
    sources = [np.repeat(clear_rows, k)]
    targets = [candidates[not_self]]
    for row in np.flatnonzero(tied):
        sources.append(np.full(k, row))
        targets.append(_nearest_with_ties(tree, points, row, radius[row], k))
    return np.concatenate(sources), np.concatenate(targets)


def _nearest_with_ties(tree: cKDTree, points: np.ndarray, row: int, radius: float, k: int) -> np.ndarray:
    """The k points nearest to `points[row]` (itself excluded), ties broken by lower index."""
    ball = np.asarray(tree.query_ball_point(points[row], radius * (1 + _TIE_RTOL)), dtype=np.int64)
    ball = ball[ball != row]
    squared = ((points[ball] - points[row]) ** 2).sum(axis=1)
    return ball[np.lexsort((ball, squared))[:k]]


def _block_neighbours(points: Any, k: int, xp: ModuleType) -> tuple[np.ndarray, np.ndarray]:
    """(row, neighbour) pairs, k per row, on the host, by brute force in blocks of rows.

    Each block's squared distances to all points come from one matrix product (|a|² + |b|² − 2a·b, on centred
    features), and a partial sort picks each row's k nearest. Where the k-th and (k+1)-th of them are closer
    than that product's rounding can separate, the row is decided exactly instead (`_ranked_exactly`).
    Memory: a few blocks of the distance matrix."""
    n, d = points.shape
    centred = points - points.mean(axis=0)
    squared_norms = (centred * centred).sum(axis=1)
    norms = xp.sqrt(squared_norms)
    # Twice the largest rounding of any of a row's screened or exact squared distances: a gap wider than this
    # between its k-th and (k+1)-th screened distances decides its neighbours whatever the rounding.
    rounding = _ROUNDING_PER_FEATURE * (d + 4) * np.finfo(np.float64).eps
    margins = 2 * rounding * (norms + norms.max()) ** 2
    block = max(1, min(n, _BLOCK_ENTRIES[xp.__name__] // n))
    sources, targets = [], []
    for start in range(0, n, block):
        rows = xp.arange(start, min(start + block, n))
        screened = squared_norms[rows, None] + squared_norms[None, :] - 2.0 * (centred[rows] @ centred.T)
        screened[xp.arange(rows.size), rows] = xp.inf  # never its own neighbour
        order = xp.argpartition(screened, k, axis=1)  # the k nearest first, the (k+1)-th at k
        nearest = order[:, :k]
        kth = xp.take_along_axis(screened, nearest, axis=1).max(axis=1)
        following = xp.take_along_axis(screened, order[:, k : k + 1], axis=1)[:, 0]
        clear = following - kth > margins[rows]  # k == n − 1: the (k+1)-th is the row itself, at infinity
        decided = xp.flatnonzero(clear)
        sources.append(xp.repeat(rows[decided], k))
        targets.append(nearest[decided].ravel())
        close = xp.flatnonzero(~clear)
        if close.size:
            limits = kth[close] + margins[rows[close]]
            tied_sources, tied_targets = _ranked_exactly(points, rows[close], screened[close], limits, k, xp)
            sources.append(tied_sources)
            targets.append(tied_targets)
    return to_numpy(xp.concatenate(sources)), to_numpy(xp.concatenate(targets))


def _ranked_exactly(points: Any, rows: Any, screened: Any, limits: Any, k: int, xp: ModuleType) -> tuple[Any, Any]:
    """For rows whose k-th neighbour is too close to call from the screening: every candidate whose screened
    distance is within `limits` (which holds all their true k nearest), ranked by Σ(a − b)², then index; the
    first k of each row."""
    candidate_row, candidates = xp.nonzero(screened <= limits[:, None])
    sources = rows[candidate_row]
    exact = _squared_distances(points, sources, candidates, xp)
    order = xp.lexsort(xp.stack([candidates.astype(xp.float64), exact, sources.astype(xp.float64)]))
    sources, candidates = sources[order], candidates[order]
    rank = xp.arange(sources.size) - xp.searchsorted(sources, sources, side="left")
    first = rank < k
    return sources[first], candidates[first]


def _squared_distances(points: Any, sources: Any, targets: Any, xp: ModuleType) -> Any:
    """Σ_f (x_target,f − x_source,f)² for each pair, in chunks of at most one block's entries."""
    chunk = max(1, _BLOCK_ENTRIES[xp.__name__] // points.shape[1])
    parts = [
        ((points[targets[i : i + chunk]] - points[sources[i : i + chunk]]) ** 2).sum(axis=1)
        for i in range(0, sources.size, chunk)
    ]
    return xp.concatenate(parts)


def normalized_laplacian(weights: scipy.sparse.spmatrix, xp: ModuleType = np) -> scipy.sparse.csr_matrix:
    """Symmetric normalised Laplacian L = I − D^{-1/2} W D^{-1/2} of a weighted undirected graph.

    `weights` must be square, symmetric (up to rounding), finite and non-negative; otherwise ValueError. Self
    loops are ignored (they carry no smoothness information). An isolated node, which has no edges, forms a
    connected component of its own: like any component it contributes an eigenvalue 0, so its row and column of
    L are all zero (Chung's convention, which is SciPy's). Then the Dirichlet energy puts no penalty on its
    embedding, and in the rescaled L̃ = L − I its row is −e_i (a Chebyshev filter passes it through as
    it passes the smoothest component of any connected part of the graph). The eigenvalues of L lie in [0, 2].

    The arithmetic runs on `xp` over the edge list in the order SciPy's `csgraph.laplacian(normed=True)` uses
    (degrees summed along each row, each weight divided by √d_i, then by √d_j), so NumPy gives SciPy's matrix.
    """
    graph = scipy.sparse.csr_matrix(weights, dtype=np.float64)
    if graph.shape[0] != graph.shape[1]:
        raise ValueError(f"weights must be a square matrix, got shape {graph.shape}")
    if not np.isfinite(graph.data).all():
        raise ValueError("weights contain NaN or infinite values")
    if graph.nnz and graph.data.min() < 0:
        raise ValueError(f"weights must be non-negative, found {graph.data.min()}")
    largest = np.abs(graph.data).max(initial=0.0)
    asymmetry = abs(graph - graph.T).max() if graph.nnz else 0.0
    if asymmetry > _SYMMETRY_RTOL * largest:
        raise ValueError(f"weights must be symmetric; max |W - W^T| = {asymmetry:.3g}")
    graph.sum_duplicates()
    edges = graph.tocoo()
    n = graph.shape[0]
    rows, cols, values = xp.asarray(edges.row), xp.asarray(edges.col), xp.asarray(edges.data)
    loops = rows == cols
    degrees = xp.bincount(rows, weights=values, minlength=n) - xp.bincount(
        rows[loops], weights=values[loops], minlength=n
    )
    connected = xp.flatnonzero(degrees != 0)
    scale = xp.sqrt(xp.where(degrees == 0, 1.0, degrees))
    off_diagonal = xp.flatnonzero(~loops & (values != 0))
    rows, cols = rows[off_diagonal], cols[off_diagonal]
    normalised = -(values[off_diagonal] / scale[rows] / scale[cols])
    laplacian = scipy.sparse.csr_matrix(
        (
            np.concatenate([to_numpy(normalised), np.ones(int(connected.size))]),
            (np.concatenate([to_numpy(rows), to_numpy(connected)]), np.concatenate([to_numpy(cols), to_numpy(connected)])),
        ),
        shape=(n, n),
    )
    laplacian.sort_indices()
    return laplacian


def rescaled_laplacian(laplacian: scipy.sparse.spmatrix, lambda_max: float = 2.0) -> scipy.sparse.csr_matrix:
    """L̃ = 2L/λ_max − I, which maps the spectrum [0, λ_max] onto [−1, 1], the domain of Chebyshev polynomials.

    λ_max = 2 bounds the spectrum of any normalised Laplacian, so it is safe without an eigen-solve.
    """
    if not lambda_max > 0:
        raise ValueError(f"lambda_max must be > 0, got {lambda_max}")
    matrix = scipy.sparse.csr_matrix(laplacian, dtype=np.float64)
    identity = scipy.sparse.identity(matrix.shape[0], dtype=np.float64, format="csr")
    return scipy.sparse.csr_matrix((2.0 / lambda_max) * matrix - identity)

