import numpy as np
import pytest
import scipy.sparse

from hyperlearn.graphs import knn_graph, normalized_laplacian, rescaled_laplacian


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


def test_knn_on_points_on_a_line():
    points = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    graph = knn_graph(points, k=1)  # nearest: 0→1, 1→0, 2→1, 3→2, 4→3
    assert edge_set(graph) == {(0, 1), (1, 2), (2, 3), (3, 4)}
    assert isinstance(graph, scipy.sparse.csr_matrix)
    np.testing.assert_array_equal(graph.data, 1.0)
    assert (graph != graph.T).nnz == 0
    assert graph.diagonal().sum() == 0


def test_knn_breaks_ties_by_lower_index():
    # The middle point is 1 away from both others: it links to the lower index.
    assert edge_set(knn_graph(np.array([[0.0], [1.0], [-1.0]]), k=1)) == {(0, 1), (0, 2)}
    assert edge_set(knn_graph(np.array([[0.0], [-1.0], [1.0]]), k=1)) == {(0, 1), (0, 2)}
    # Duplicates: no self loops; each point takes the lowest-index copies of itself.
    assert edge_set(knn_graph(np.zeros((4, 2)), k=2)) == {(0, 1), (0, 2), (1, 2), (0, 3), (1, 3)}


@pytest.mark.parametrize("integer_valued", [True, False])
def test_knn_matches_brute_force(integer_valued):
    rng = np.random.default_rng(1)
    points = rng.integers(0, 3, size=(150, 4)).astype(float) if integer_valued else rng.normal(size=(150, 3))
    graph = knn_graph(points, k=5)
    assert edge_set(graph) == reference_knn_edges(points, k=5)
    assert np.asarray(graph.sum(axis=1)).min() >= 5


def test_knn_clips_k_and_handles_tiny_inputs():
    assert edge_set(knn_graph(np.array([[0.0], [1.0], [5.0]]), k=10)) == {(0, 1), (0, 2), (1, 2)}
    assert knn_graph(np.zeros((1, 3)), k=3).nnz == 0
    assert knn_graph(np.zeros((0, 3)), k=3).shape == (0, 0)


@pytest.mark.parametrize(
    "features, k, message",
    [(np.zeros(5), 2, "2-D"), (np.zeros((5, 2)), 0, "k must"), (np.array([[0.0], [np.inf]]), 1, "infinite")],
)
def test_knn_rejects_invalid_input(features, k, message):
    with pytest.raises(ValueError, match=message):
        knn_graph(features, k)


def test_knn_graph_laplacian_end_to_end():
    rng = np.random.default_rng(2)
    laplacian = normalized_laplacian(knn_graph(rng.normal(size=(300, 6)), k=10))
    eigenvalues = np.linalg.eigvalsh(laplacian.toarray())
    assert eigenvalues.min() > -1e-10 and eigenvalues.max() < 2 + 1e-10
