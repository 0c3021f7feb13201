import types

import numpy as np
import pytest
import scipy.sparse
from scipy.sparse.csgraph import laplacian as scipy_laplacian

from hyperlearn import graphs
from hyperlearn.graphs import knn_graph, normalized_laplacian, rescaled_laplacian

SEARCHES = ["kd-tree", "blocks"]


def undirected(n: int, edges: list[tuple[int, int]], weights: list[float] | None = None) -> scipy.sparse.csr_matrix:
    rows, cols = zip(*edges)
    values = np.ones(len(edges)) if weights is None else np.asarray(weights, dtype=float)
    directed = scipy.sparse.coo_matrix((values, (rows, cols)), shape=(n, n))
    return (directed + directed.T).tocsr()


def edge_set(graph: scipy.sparse.spmatrix) -> set[tuple[int, int]]:
    upper = scipy.sparse.triu(graph).tocoo()
    return set(zip(upper.row.tolist(), upper.col.tolist()))


def reference_knn_edges(points: np.ndarray, k: int) -> set[tuple[int, int]]:
    """Brute force: the k other points nearest to each point, ties to the lower index, symmetrised."""
    edges = set()
    for i, point in enumerate(points):
        squared = ((points - point) ** 2).sum(axis=1)
        others = [j for j in np.lexsort((np.arange(len(points)), squared)) if j != i][:k]
        edges.update((min(i, j), max(i, j)) for j in others)
    return edges


# --- normalized Laplacian -----------------------------------------------------------------------------------


def test_laplacian_of_path_graph_by_hand():
    laplacian = normalized_laplacian(undirected(4, [(0, 1), (1, 2), (2, 3)])).toarray()
    h = 1 / np.sqrt(2)  # degrees 1, 2, 2, 1: the end edges get 1/sqrt(1*2), the middle one 1/sqrt(2*2)
    expected = np.array([[1, -h, 0, 0], [-h, 1, -0.5, 0], [0, -0.5, 1, -h], [0, 0, -h, 1]])
    np.testing.assert_allclose(laplacian, expected)


def test_laplacian_of_star_graph_by_hand():
    laplacian = normalized_laplacian(undirected(4, [(0, 1), (0, 2), (0, 3)])).toarray()
    s = 1 / np.sqrt(3)
    expected = np.array([[1, -s, -s, -s], [-s, 1, 0, 0], [-s, 0, 1, 0], [-s, 0, 0, 1]])
    np.testing.assert_allclose(laplacian, expected)
    np.testing.assert_allclose(np.linalg.eigvalsh(laplacian), [0, 1, 1, 2], atol=1e-12)  # bipartite: 2 is reached


def test_laplacian_of_weighted_graph_is_symmetric_with_spectrum_in_0_2():
    rng = np.random.default_rng(0)
    dense = np.triu(rng.random((30, 30)) * (rng.random((30, 30)) < 0.2), k=1)
    weights = scipy.sparse.csr_matrix(dense + dense.T)
    laplacian = normalized_laplacian(weights)
    assert isinstance(laplacian, scipy.sparse.csr_matrix)
    assert abs(laplacian - laplacian.T).max() < 1e-12
    eigenvalues = np.linalg.eigvalsh(laplacian.toarray())
    assert eigenvalues.min() > -1e-10 and eigenvalues.max() < 2 + 1e-10
    degree = np.asarray(weights.sum(axis=1)).ravel()
    np.testing.assert_allclose(laplacian @ np.sqrt(degree), 0, atol=1e-12)  # D^{1/2} 1 spans the kernel


def test_laplacian_is_scipys_to_the_last_bit():
    """The array-module arithmetic follows SciPy's order: weighted edges, self loops, explicit zeros, isolated
    nodes all give csgraph.laplacian(normed=True)'s matrix exactly."""
    rng = np.random.default_rng(3)
    dense = np.triu(rng.random((60, 60)) * (rng.random((60, 60)) < 0.1), k=1)
    dense[:, 7] = dense[7, :] = 0.0  # node 7 isolated
    weights = scipy.sparse.csr_matrix(dense + dense.T) + scipy.sparse.diags(rng.random(60))
    weights.data[::9] = 0.0  # explicit zeros, symmetric pairs or not, carry no edge
    weights = scipy.sparse.csr_matrix(weights.maximum(weights.T))
    expected = scipy.sparse.csr_matrix(scipy_laplacian(weights, normed=True))
    expected.eliminate_zeros()
    found = normalized_laplacian(weights)
    assert (found != expected).nnz == 0
    assert found.has_sorted_indices and not (found.data == 0).any()


def test_isolated_node_has_zero_row_and_passes_through_rescaling():
    weights = undirected(4, [(0, 1), (1, 2)])  # node 3 has no edges
    laplacian = normalized_laplacian(weights)
    assert laplacian[3].nnz == 0 and laplacian[:, 3].nnz == 0
    assert laplacian[0, 0] == pytest.approx(1.0)
    rescaled = rescaled_laplacian(laplacian).toarray()
    np.testing.assert_allclose(rescaled[3], [0, 0, 0, -1])


def test_self_loops_are_ignored():
    with_loop = undirected(3, [(0, 1), (1, 2)]) + scipy.sparse.diags([4.0, 0.0, 0.0])
    np.testing.assert_allclose(
        normalized_laplacian(with_loop).toarray(), normalized_laplacian(undirected(3, [(0, 1), (1, 2)])).toarray()
    )


@pytest.mark.parametrize(
    "weights, message",
    [
        (scipy.sparse.csr_matrix(np.array([[0.0, 1.0], [0.0, 0.0]])), "symmetric"),
        (scipy.sparse.csr_matrix(np.array([[0.0, -1.0], [-1.0, 0.0]])), "non-negative"),
        (scipy.sparse.csr_matrix(np.ones((2, 3))), "square"),
        (scipy.sparse.csr_matrix(np.array([[0.0, np.nan], [np.nan, 0.0]])), "NaN"),
    ],
)
def test_laplacian_rejects_invalid_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        normalized_laplacian(weights)


def test_rescaled_laplacian_maps_spectrum_onto_minus_one_one():
    laplacian = normalized_laplacian(undirected(4, [(0, 1), (0, 2), (0, 3)]))
    np.testing.assert_allclose(np.linalg.eigvalsh(rescaled_laplacian(laplacian).toarray()), [-1, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(
        rescaled_laplacian(laplacian, lambda_max=4.0).toarray(), laplacian.toarray() / 2 - np.eye(4)
    )
    with pytest.raises(ValueError, match="lambda_max"):
        rescaled_laplacian(laplacian, lambda_max=0.0)



# --- k-nearest-neighbour graph ------------------------------------------------------------------------------


@pytest.mark.parametrize("search", SEARCHES)
def test_knn_on_points_on_a_line(search):
    points = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    graph = knn_graph(points, k=1, search=search)  # nearest: 0→1, 1→0, 2→1, 3→2, 4→3
    assert edge_set(graph) == {(0, 1), (1, 2), (2, 3), (3, 4)}
    assert isinstance(graph, scipy.sparse.csr_matrix)
    np.testing.assert_array_equal(graph.data, 1.0)
    assert (graph != graph.T).nnz == 0
    assert graph.diagonal().sum() == 0


@pytest.mark.parametrize("search", SEARCHES)
def test_knn_breaks_ties_by_lower_index(search):
    # The middle point is 1 away from both others: it links to the lower index.
    assert edge_set(knn_graph(np.array([[0.0], [1.0], [-1.0]]), k=1, search=search)) == {(0, 1), (0, 2)}
    assert edge_set(knn_graph(np.array([[0.0], [-1.0], [1.0]]), k=1, search=search)) == {(0, 1), (0, 2)}
    # Duplicates: no self loops; each point takes the lowest-index copies of itself.
    assert edge_set(knn_graph(np.zeros((4, 2)), k=2, search=search)) == {(0, 1), (0, 2), (1, 2), (0, 3), (1, 3)}


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("integer_valued", [True, False])
def test_knn_matches_brute_force(integer_valued, search):
    rng = np.random.default_rng(1)
    points = rng.integers(0, 3, size=(150, 4)).astype(float) if integer_valued else rng.normal(size=(150, 3))
    graph = knn_graph(points, k=5, search=search)
    assert edge_set(graph) == reference_knn_edges(points, k=5)
    assert np.asarray(graph.sum(axis=1)).min() >= 5


def tie_heavy_inputs() -> dict[str, np.ndarray]:
    """Features where the k-th and (k+1)-th neighbours often tie: exactly (integers, duplicates, one-hot) or up to
    rounding (standardised integers), and one far from the origin (large norms, small distances)."""
    rng = np.random.default_rng(4)
    integers = rng.integers(0, 4, size=(400, 5)).astype(float)
    return {
        "integers": integers,
        "standardised integers": (integers - integers.mean(axis=0)) / integers.std(axis=0),
        "duplicates": np.repeat(rng.normal(size=(40, 3)), 10, axis=0),
        "one-hot": np.eye(5)[rng.integers(0, 5, size=300)],
        "far from the origin": rng.normal(size=(300, 4)) + 1e6,
    }


@pytest.mark.parametrize("name", list(tie_heavy_inputs()))
def test_the_blocked_search_gives_the_k_d_trees_graph(monkeypatch, name):
    """The GPU's algorithm, run on NumPy in blocks of a few rows (so rows of one tie group fall in different
    blocks), gives the k-d tree's graph edge for edge."""
    points = tie_heavy_inputs()[name]
    monkeypatch.setitem(graphs._BLOCK_ENTRIES, "numpy", 7 * len(points))
    for k in (1, 4, 10):
        expected = knn_graph(points, k, search="kd-tree")
        assert (knn_graph(points, k, search="blocks") != expected).nnz == 0, k
        assert (knn_graph(points, k) != expected).nnz == 0, "auto on NumPy is the k-d tree"


@pytest.mark.parametrize("search", SEARCHES)
def test_knn_clips_k_and_handles_tiny_inputs(search):
    assert edge_set(knn_graph(np.array([[0.0], [1.0], [5.0]]), k=10, search=search)) == {(0, 1), (0, 2), (1, 2)}
    assert knn_graph(np.zeros((1, 3)), k=3, search=search).nnz == 0
    assert knn_graph(np.zeros((0, 3)), k=3, search=search).shape == (0, 0)


@pytest.mark.parametrize(
    "features, k, message",
    [(np.zeros(5), 2, "2-D"), (np.zeros((5, 2)), 0, "k must"), (np.array([[0.0], [np.inf]]), 1, "infinite")],
)
def test_knn_rejects_invalid_input(features, k, message):
    with pytest.raises(ValueError, match=message):
        knn_graph(features, k)


def test_knn_rejects_an_unknown_search_and_a_k_d_tree_off_numpy():
    with pytest.raises(ValueError, match="search must be"):
        knn_graph(np.zeros((3, 2)), 1, search="ball-tree")
    with pytest.raises(ValueError, match="NumPy only"):
        knn_graph(np.zeros((3, 2)), 1, xp=types.SimpleNamespace(__name__="cupy"), search="kd-tree")


def test_knn_graph_laplacian_end_to_end():
    rng = np.random.default_rng(2)
    laplacian = normalized_laplacian(knn_graph(rng.normal(size=(300, 6)), k=10))
    eigenvalues = np.linalg.eigvalsh(laplacian.toarray())
    assert eigenvalues.min() > -1e-10 and eigenvalues.max() < 2 + 1e-10


# --- the same graphs on a GPU -------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(tie_heavy_inputs()) + ["normal"])
def test_cupy_builds_numpys_knn_graph(name):
    cupy = pytest.importorskip("cupy")
    points = np.random.default_rng(5).normal(size=(2_000, 8)) if name == "normal" else tie_heavy_inputs()[name]
    for k in (1, 10):
        assert (knn_graph(points, k, xp=cupy) != knn_graph(points, k)).nnz == 0, k


@pytest.mark.gpu
def test_cupy_builds_numpys_laplacian():
    cupy = pytest.importorskip("cupy")
    binary = knn_graph(np.random.default_rng(6).normal(size=(1_000, 4)), 10)
    assert (normalized_laplacian(binary, xp=cupy) != normalized_laplacian(binary)).nnz == 0
    dense = np.triu(np.random.default_rng(7).random((200, 200)), k=1)
    weighted = scipy.sparse.csr_matrix(dense + dense.T)
    on_gpu, on_cpu = normalized_laplacian(weighted, xp=cupy), normalized_laplacian(weighted)
    np.testing.assert_array_equal(on_gpu.indptr, on_cpu.indptr)
    np.testing.assert_array_equal(on_gpu.indices, on_cpu.indices)
    # the values agree up to the order in which the GPU sums each degree
    np.testing.assert_allclose(on_gpu.toarray(), on_cpu.toarray(), rtol=1e-13, atol=0)
