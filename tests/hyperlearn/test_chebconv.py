"""Chebyshev convolution equals the dense matrix polynomial; the Laplacian product's custom backward is right."""

import numpy as np
import pytest
import scipy.sparse
import torch

from hyperlearn.chebconv import ChebConv, chebyshev_basis, chebyshev_sum, symmetric_sparse_product, to_torch_csr


def ring_rescaled_laplacian(n=6):
    weights = scipy.sparse.diags([np.ones(n - 1), np.ones(n - 1)], [1, -1]).tolil()
    weights[0, n - 1] = weights[n - 1, 0] = 1
    degree = np.asarray(weights.sum(1)).ravel()
    scale = scipy.sparse.diags(1 / np.sqrt(degree))
    laplacian = scipy.sparse.eye(n) - scale @ weights @ scale
    return (laplacian - scipy.sparse.eye(n)).toarray()  # 2L/λmax − I with λmax = 2


@pytest.mark.parametrize("order", [0, 1, 2, 4])
def test_chebyshev_sum_matches_dense_polynomials(order):
    dense = ring_rescaled_laplacian()
    blocks = np.random.default_rng(order).normal(size=(order + 1, 6, 3))
    got = chebyshev_sum(to_torch_csr(dense), torch.tensor(blocks, dtype=torch.float32).unbind(0))
    t = [np.eye(6), dense]
    for _ in range(2, order + 1):
        t.append(2 * dense @ t[-1] - t[-2])
    np.testing.assert_allclose(got.numpy(), sum(t[j] @ blocks[j] for j in range(order + 1)), atol=1e-5)


def test_chebyshev_basis_matches_dense_polynomials():
    dense = ring_rescaled_laplacian()
    x = np.random.default_rng(0).normal(size=(6, 3))
    terms = chebyshev_basis(to_torch_csr(dense), torch.tensor(x, dtype=torch.float32), order=4)
    t = [np.eye(6), dense]
    for _ in range(2, 5):
        t.append(2 * dense @ t[-1] - t[-2])
    for got, poly in zip(terms, t):
        np.testing.assert_allclose(got.numpy(), poly @ x, atol=1e-5)


@pytest.mark.parametrize("widths", [(3, 4), (5, 2)], ids=["basis-on-the-input", "clenshaw-on-the-output"])
def test_chebconv_equals_sum_of_polynomials_times_weights(widths):
    dense = ring_rescaled_laplacian()
    torch.manual_seed(0)
    conv = ChebConv(*widths, order=3)
    x = torch.randn(6, widths[0])
    t = [np.eye(6), dense]
    for _ in range(2, 4):
        t.append(2 * dense @ t[-1] - t[-2])
    w = conv.weight.detach().numpy()
    expected = sum(t[j] @ x.numpy() @ w[j] for j in range(4)) + conv.bias.detach().numpy()
    np.testing.assert_allclose(conv(to_torch_csr(dense), x).detach().numpy(), expected, atol=1e-5)


def test_symmetric_product_gradient_matches_dense_autograd():
    dense = ring_rescaled_laplacian()
    x = torch.randn(6, 2, requires_grad=True)
    weights = torch.randn(6, 2)
    (symmetric_sparse_product(to_torch_csr(dense), x) * weights).sum().backward()
    expected = torch.tensor(dense, dtype=torch.float32) @ weights
    torch.testing.assert_close(x.grad, expected)


def test_chebconv_gradients_reach_every_weight():
    conv = ChebConv(3, 4, order=2)
    out = conv(to_torch_csr(ring_rescaled_laplacian()), torch.randn(6, 3))
    out.pow(2).sum().backward()
    assert conv.weight.grad is not None and torch.all(conv.weight.grad.abs().sum((1, 2)) > 0)
