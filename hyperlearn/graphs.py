"""Intra-modal graphs and their Laplacians (docs/method.md §1).

Pure functions over NumPy/SciPy arrays: a binary k-nearest-neighbour graph over entity features, the symmetric
normalised Laplacian L = I − D^{-1/2} W D^{-1/2}, and its rescaled form L̃ = 2L/λ_max − I used by Chebyshev
filters (the Dirichlet energy that uses L lives with the objective, hyperlearn.objective).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import laplacian as _scipy_laplacian
from scipy.spatial import cKDTree

# Relative slack for "same distance": distances that agree to this precision count as a tie, so that rounding in
# the k-d tree never decides which of two equidistant points is a neighbour.
_TIE_RTOL = 1e-9
# Largest |W − Wᵀ| accepted as symmetric, relative to the largest weight.
_SYMMETRY_RTOL = 1e-10


def knn_graph(features: np.ndarray, k: int) -> scipy.sparse.csr_matrix:
    """Binary, symmetrised k-nearest-neighbour graph over the rows of `features` (Euclidean distance).

    Row i is linked to the k other rows nearest to it; among equidistant candidates the lower row index wins, so
    the graph depends only on the features and their order (not on the k-d tree's traversal or thread count).
    The directed graph is symmetrised as W = max(W, Wᵀ): an edge exists when either end picked the other, and
    every weight is 1. There are no self loops, even between duplicate rows. `k` larger than n − 1 is clipped.

    Runs as one k-d tree query; only rows whose k-th and (k+1)-th neighbours tie are resolved one by one (cost
    grows with the size of such tie groups, e.g. many identical feature rows).
    """
    points = np.asarray(features, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"features must be a 2-D array (entities × features), got shape {points.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not np.isfinite(points).all():
        raise ValueError("features contain NaN or infinite values")
    n = points.shape[0]
    if n < 2:
        return scipy.sparse.csr_matrix((n, n), dtype=np.float64)
    k = min(k, n - 1)

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

    rows, cols = np.concatenate(sources), np.concatenate(targets)
    directed = scipy.sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    graph = directed.maximum(directed.T).tocsr()
    graph.sort_indices()
    return graph


def _nearest_with_ties(tree: cKDTree, points: np.ndarray, row: int, radius: float, k: int) -> np.ndarray:
    """The k points nearest to `points[row]` (itself excluded), ties broken by lower index."""
    ball = np.asarray(tree.query_ball_point(points[row], radius * (1 + _TIE_RTOL)), dtype=np.int64)
    ball = ball[ball != row]
    squared = ((points[ball] - points[row]) ** 2).sum(axis=1)
    return ball[np.lexsort((ball, squared))[:k]]


def normalized_laplacian(weights: scipy.sparse.spmatrix) -> scipy.sparse.csr_matrix:
    """Symmetric normalised Laplacian L = I − D^{-1/2} W D^{-1/2} of a weighted undirected graph.

    `weights` must be square, symmetric (up to rounding), finite and non-negative; otherwise ValueError. Self
    loops are ignored (they carry no smoothness information). An isolated node, which has no edges, forms a
    connected component of its own: like any component it contributes an eigenvalue 0, so its row and column of
    L are all zero (Chung's convention, which is SciPy's). Then the Dirichlet energy puts no penalty on its
    embedding, and in the rescaled L̃ = L − I its row is −e_i (a Chebyshev filter passes it through as
    it passes the smoothest component of any connected part of the graph). The eigenvalues of L lie in [0, 2].
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
    laplacian = scipy.sparse.csr_matrix(_scipy_laplacian(graph, normed=True))
    laplacian.eliminate_zeros()
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

