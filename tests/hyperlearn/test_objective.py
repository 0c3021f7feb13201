"""The objective's parts: one Dirichlet energy, and the same objective for a trainer's own terms and joint's."""

import numpy as np
import pytest
import scipy.sparse
import torch

from hyperlearn.chebconv import to_torch_csr
from hyperlearn.graphs import normalized_laplacian
from hyperlearn.objective import Anchor, anchor_energy, dirichlet_energy


def _laplacian(n, edges):
    rows, cols = zip(*edges)
    weights = scipy.sparse.coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(n, n))
    return to_torch_csr(normalized_laplacian(weights + weights.T))


def test_dirichlet_energy_by_hand():
    laplacian = _laplacian(2, [(0, 1)])  # [[1, -1], [-1, 1]]
    energy = lambda rows: float(dirichlet_energy(laplacian, torch.tensor(rows, dtype=torch.float32)))
    assert energy([[1.0], [3.0]]) == pytest.approx(0.5 * (1 - 3) ** 2 / 2)
    assert energy([[2.0], [2.0]]) == pytest.approx(0.0)
    assert energy([[1.0, 0.0], [3.0, 1.0]]) == pytest.approx(0.5 * (4 + 1) / 2)


def test_dirichlet_energy_gradient_is_the_laplacian_product_over_n():
    laplacian = _laplacian(5, [(0, 1), (1, 2), (2, 3), (0, 4)])
    factor = torch.randn(5, 3, dtype=torch.float32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    (2.5 * dirichlet_energy(laplacian, factor)).backward()
    torch.testing.assert_close(factor.grad, 2.5 * (laplacian.to_dense() @ factor.detach()) / 5)


def test_no_graph_and_isolated_nodes_cost_nothing():
    factor = torch.zeros(4, 2)
    factor[3] = torch.tensor([5.0, -7.0])
    assert float(dirichlet_energy(_laplacian(4, [(0, 1), (1, 2)]), factor)) == 0.0
    assert float(dirichlet_energy(None, factor)) == 0.0


def test_anchor_energy_by_hand_leaves_rows_past_the_parents_free():
    anchor = Anchor(target=torch.tensor([[1.0, 0.0], [0.0, 2.0]]), row_weights=torch.tensor([2.0, 0.5]))
    factor = torch.tensor([[1.0, 1.0], [0.0, 0.0], [5.0, 5.0]], requires_grad=True)  # row 2: a new entity
    energy = anchor_energy(anchor, factor)
    assert energy.item() == pytest.approx(0.5 * (2.0 * 1.0 + 0.5 * 4.0))
    energy.backward()
    np.testing.assert_allclose(factor.grad.numpy(), [[0.0, 2.0], [0.0, -1.0], [0.0, 0.0]])
