"""Sparse CP prediction, MTTKRP and row Gram matrices against dense float64 references."""

import gc

import numpy as np
import pytest
import torch

from hyperlearn import tensor_ops
from hyperlearn.tensor_ops import MatrixCells, cells_product, cp_predict, matrix_cells, mttkrp, row_gram


def random_problem(shape, rank, nnz, seed=0):
    rng = np.random.default_rng(seed)
    factors = [torch.from_numpy(rng.normal(size=(n, rank))) for n in shape]
    flat = rng.choice(int(np.prod(shape)), size=nnz, replace=False)
    coords = torch.from_numpy(np.stack(np.unravel_index(flat, shape)).astype(np.int64))
    values = torch.from_numpy(rng.normal(size=nnz))
    return factors, coords, values


def dense_cp(factors):
    letters = "abcd"[: len(factors)]
    return torch.einsum(",".join(f"{c}r" for c in letters) + "->" + letters, *factors)


def dense_tensor(shape, coords, values):
    dense = torch.zeros(shape, dtype=torch.float64)
    dense[tuple(coords)] = values
    return dense


def khatri_rao_except(factors, mode):
    """Dense Ω_mode with rows in C order of the remaining modes (matching a C-order unfolding)."""
    others = [f for k, f in enumerate(factors) if k != mode]
    result = others[0]
    for factor in others[1:]:
        result = (result[:, None, :] * factor[None, :, :]).reshape(-1, result.shape[1])
    return result


@pytest.mark.parametrize("shape", [(7, 5), (6, 5, 4), (5, 4, 3, 3)])
def test_cp_predict_matches_dense_tensor(shape):
    factors, coords, _ = random_problem(shape, rank=3, nnz=20)
    expected = dense_cp(factors)[tuple(coords)]
    torch.testing.assert_close(cp_predict(factors, coords), expected)


@pytest.mark.parametrize("shape", [(7, 5), (6, 5, 4), (5, 4, 3, 3)])
@pytest.mark.parametrize("chunk", [4, 10_000])
def test_mttkrp_matches_dense_unfolding(shape, chunk):
    factors, coords, values = random_problem(shape, rank=3, nnz=25)
    dense = dense_tensor(shape, coords, values)
    for mode in range(len(shape)):
        unfolded = dense.movedim(mode, 0).reshape(shape[mode], -1)
        expected = unfolded @ khatri_rao_except(factors, mode)
        torch.testing.assert_close(mttkrp(factors, coords, values, mode, chunk=chunk), expected)


def test_mttkrp_is_the_gradient_of_the_masked_loss():
    """d/dA_θ of ½‖P_Ω(X − X̂)‖² equals −MTTKRP(residual): the kernel of the per-modality update."""
    factors, coords, values = random_problem((6, 5, 4), rank=3, nnz=30, seed=1)
    for mode in range(3):
        leaves = [f.clone().requires_grad_(k == mode) for k, f in enumerate(factors)]
        loss = 0.5 * (values - cp_predict(leaves, coords)).pow(2).sum()
        loss.backward()
        residual = values - cp_predict(factors, coords)
        torch.testing.assert_close(leaves[mode].grad, -mttkrp(factors, coords, residual, mode))


@pytest.mark.parametrize("chunk", [3, 4096])
def test_cp_predict_gradcheck(chunk):
    """The hand-written backward (MTTKRP of the output gradient), chunk boundaries included."""
    factors, coords, _ = random_problem((4, 3, 3), rank=2, nnz=8, seed=2)
    leaves = tuple(f.clone().requires_grad_(True) for f in factors)
    assert torch.autograd.gradcheck(lambda *fs: cp_predict(fs, coords, chunk), leaves)


@pytest.fixture(params=["sampled", "full"])
def matrix_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each K = 2 test on both ways of predicting a matrix: the sampled product on the entries' cells, and the
    full product read at the entries (tensor_ops.DENSE_CELLS_PER_ENTRY decides between them)."""
    monkeypatch.setattr(tensor_ops, "DENSE_CELLS_PER_ENTRY", 0 if request.param == "sampled" else float("inf"))
    return request.param


@pytest.fixture
def cells_computed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The shapes `MatrixCells.of` is called with from here on: each call is one sort of a matrix's entries."""
    computed: list[tuple[int, int]] = []
    original = MatrixCells.of.__func__
    monkeypatch.setattr(MatrixCells, "of", classmethod(lambda cls, c, shape: computed.append(shape) or original(cls, c, shape)))
    return computed


def test_a_matrix_is_predicted_in_full_only_when_it_has_few_cells_per_entry(cells_computed):
    small, small_coords, _ = random_problem((6, 5), rank=2, nnz=8, seed=1)  # 30 cells for 8 entries: full
    large, large_coords, _ = random_problem((30, 20), rank=2, nnz=8, seed=1)  # 600 cells: sampled
    for factors, coords in ((small, small_coords), (large, large_coords)):
        torch.testing.assert_close(cp_predict(factors, coords), (factors[0][coords[0]] * factors[1][coords[1]]).sum(1))
    assert cells_computed == [(30, 20)]


def test_matrix_prediction_and_its_gradient_with_repeated_and_unsorted_entries(matrix_path):
    """The K = 2 paths on coordinates in no order and with repeats, as sampled negatives can be: each repeat is
    predicted and differentiated on its own."""
    factors, coords, _ = random_problem((5, 4), rank=3, nnz=12, seed=4)
    coords = torch.cat([coords, coords[:, [3, 0, 3]]], dim=1)
    weights = torch.randn(coords.shape[1], dtype=torch.float64)
    leaves = [f.clone().requires_grad_(True) for f in factors]
    (cp_predict(leaves, coords) * weights).sum().backward()
    torch.testing.assert_close(cp_predict(factors, coords), (factors[0][coords[0]] * factors[1][coords[1]]).sum(1))
    for mode in range(2):
        torch.testing.assert_close(leaves[mode].grad, mttkrp(factors, coords, weights, mode))
    assert torch.autograd.gradcheck(lambda *fs: cp_predict(fs, coords), tuple(leaves))


def test_row_gram_sums_weighted_outer_products():
    factors, coords, _ = random_problem((5, 4, 3), rank=2, nnz=15, seed=3)
    weights = torch.rand(15, dtype=torch.float64)
    gram = row_gram(factors, coords, weights, mode=0, chunk=4)
    for row in range(5):
        expected = torch.zeros(2, 2, dtype=torch.float64)
        for e in torch.nonzero(coords[0] == row).flatten():
            h = factors[1][coords[1, e]] * factors[2][coords[2, e]]
            expected += weights[e] * torch.outer(h, h)
        torch.testing.assert_close(gram[row], expected)


def test_matrix_prediction_with_more_entries_than_cells(matrix_path):
    """600 × 4 with 2,401 entries: more than the matrix has cells, as sampled negatives of a relation over a
    small modality are. Each cell is computed once and every repeat gets its value and its gradient."""
    generator = torch.Generator().manual_seed(0)
    factors = [torch.randn(600, 3, generator=generator, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)]
    coords = torch.stack([torch.randint(600, (2401,), generator=generator), torch.randint(4, (2401,), generator=generator)])
    weights = torch.randn(2401, dtype=torch.float64, generator=generator)
    leaves = [f.clone().requires_grad_(True) for f in factors]
    predicted = cp_predict(leaves, coords)
    (predicted * weights).sum().backward()
    torch.testing.assert_close(predicted, (factors[0][coords[0]] * factors[1][coords[1]]).sum(1))
    for mode in range(2):
        torch.testing.assert_close(leaves[mode].grad, mttkrp(factors, coords, weights, mode))


def test_a_logistic_relation_over_a_small_modality_trains(tmp_path):
    """600 users × 4 items, 2,000 observed pairs and 4 negatives each: 10,000 scored pairs on 2,400 cells."""
    from hyperlearn.config import TrainingConfig
    from hyperlearn.joint import train_joint
    from hyperlearn.rundir import Entries, RelationMeta, RunDir

    rng = np.random.default_rng(0)
    flat = rng.choice(2400, size=2000, replace=False)
    coords = np.stack(np.unravel_index(flat, (600, 4)))
    parts = np.array_split(rng.permutation(2000), [1600, 1800])
    run = RunDir(tmp_path)
    meta = RelationMeta("likes", ("user", "item"), (600, 4), "logistic")
    run.write_relation(
        meta, {s: Entries(coords[:, p], np.ones(len(p)), (600, 4)) for s, p in zip(("train", "validation", "test"), parts)}
    )
    config = TrainingConfig(rank=3, encoder="none", rounds=2, local_steps=3, device="cpu")
    result = train_joint(run, config, log=lambda line: None)
    assert np.isfinite(result.history[-1]["train_loss"])
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_a_matrix_s_cells_are_computed_once_per_coordinate_tensor_and_dropped_with_it(monkeypatch, cells_computed):
    """A regression's entries are one tensor at every local step: their sort is paid once, and the remembered
    cells go with the tensor (another tensor with the same entries gets its own)."""
    monkeypatch.setattr(tensor_ops, "DENSE_CELLS_PER_ENTRY", 0)
    factors, coords, _ = random_problem((6, 5), rank=2, nnz=14, seed=5)
    first = cp_predict(factors, coords)
    torch.testing.assert_close(cp_predict(factors, coords), first)
    assert cells_computed == [(6, 5)]
    copy = coords.clone()
    torch.testing.assert_close(cp_predict(factors, copy), first)
    assert len(cells_computed) == 2
    remembered = len(tensor_ops._CELLS)
    del copy
    gc.collect()
    assert len(tensor_ops._CELLS) == remembered - 1
    assert matrix_cells(coords, (6, 5)) is matrix_cells(coords, (6, 5))


def test_cells_product_and_its_gradient_against_the_dense_matrix():
    """S·X over a CSR matrix's cells (the projection's path), its gradient Sᵀ·grad through the stored transpose."""
    generator = torch.Generator().manual_seed(2)
    dense = torch.rand(7, 5, generator=generator, dtype=torch.float64) * (torch.rand(7, 5, generator=generator) < 0.4)
    matrix = dense.to_sparse_csr()
    cells = MatrixCells.of_csr(matrix)
    values = matrix.values() * 0.5  # as dropout rescales a marginal's values
    x = torch.randn(5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    weights = torch.randn(7, 3, dtype=torch.float64, generator=generator)
    product = cells_product(cells, (7, 5), values, x)
    (product * weights).sum().backward()
    torch.testing.assert_close(product, (0.5 * dense) @ x.detach())
    torch.testing.assert_close(x.grad, (0.5 * dense).T @ weights)
