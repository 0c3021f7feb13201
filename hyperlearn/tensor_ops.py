"""Sparse CP maths over the observed entries of a tensor of any order (docs/method.md §2–§3).

Coordinates are a (K, nnz) int64 tensor, one row per mode. Nothing here forms the dense tensor or the full
Khatri–Rao product: every operation gathers the rows that the observed entries touch, so cost is O(nnz·K·R).
The functions are plain torch, so the same code runs on CPU and GPU and autograd differentiates them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

DEFAULT_CHUNK = 4_096
#: Up to this many cells per entry, a matrix is predicted as its full product: the sampled product would first
#: sort the entries into cells, which a new set of entries (sampled negatives, at every step) pays each time.
#: Forward + backward on one core, 110k sampled entries of a 9,724 × 20 matrix at rank 64 (the movie-genre
#: negatives of MovieLens latest-small): 18.2 ms sampled, 3.7 ms full; at 16 cells per entry (2,000², 250k
#: entries, rank 16) 46 against 32 ms; a regression's fixed entries, sorted once, stay cheaper sampled (MovieLens-
#: 100K ratings, 20 cells per entry, rank 32: 2.3 against 6.1 ms).
DENSE_CELLS_PER_ENTRY = 4


def khatri_rao_rows(factors: Sequence[torch.Tensor], coords: torch.Tensor, skip: int | None = None) -> torch.Tensor:
    """Row e is Π_k A_k[coords[k, e], :] over all modes k except `skip`: the rows of Ω_θ the entries touch."""
    product: torch.Tensor | None = None
    for mode, factor in enumerate(factors):
        if mode == skip:
            continue
        rows = factor.index_select(0, coords[mode])
        product = rows if product is None else product * rows
    if product is None:
        raise ValueError("need at least one factor besides the skipped mode")
    return product


def cp_predict(factors: Sequence[torch.Tensor], coords: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """X̂(i_1…i_K) = Σ_r Π_k A_k[i_k, r] at each coordinate column (the CP model with identity core).

    Differentiable; the gradient with respect to A_k is the MTTKRP of the output gradient. A matrix (K = 2) is
    a sampled dense-dense product with sparse-dense products as its backward (on MovieLens at rank 500 about
    10× faster than gathering rows), or, when it has at most `DENSE_CELLS_PER_ENTRY` cells per entry, the full
    product read at the entries; higher orders run `chunk` entries at a time, so no nnz×R intermediate is kept
    for backward."""
    if len(factors) == 2:
        rows, columns = factors
        if rows.shape[0] * columns.shape[0] <= DENSE_CELLS_PER_ENTRY * coords.shape[1]:
            return (rows @ columns.t()).view(-1)[coords[0] * columns.shape[0] + coords[1]]
        return _MatrixPredict.apply(coords, *factors)
    return _CPPredict.apply(coords, chunk, *factors)


@dataclass(frozen=True)
class MatrixCells:
    """The distinct cells of a matrix's coordinate columns, as the index arrays of two CSR patterns built once:
    the matrix's (cells in row-major order; `inverse` gives each entry's cell) and its transpose's (`by_column`
    orders the cells column-major), which the columns' gradient is a product with. Indices are int32, as the
    sparse kernels take them: int64 ones are converted at every product."""

    count: int
    inverse: torch.Tensor
    crow: torch.Tensor
    columns: torch.Tensor
    by_column: torch.Tensor
    transposed_crow: torch.Tensor
    transposed_columns: torch.Tensor

    @classmethod
    def of(cls, coords: torch.Tensor, shape: tuple[int, int]) -> "MatrixCells":
        cells, inverse = torch.unique(coords[0] * shape[1] + coords[1], sorted=True, return_inverse=True)
        return cls._of_cells(cells // shape[1], cells % shape[1], inverse, shape)

    @classmethod
    def of_csr(cls, matrix: torch.Tensor) -> "MatrixCells":
        """The cells of a CSR matrix's stored entries (already distinct and in CSR order)."""
        crow, columns = matrix.crow_indices(), matrix.col_indices()
        rows = torch.repeat_interleave(torch.arange(matrix.shape[0], device=crow.device), crow.diff())
        inverse = torch.arange(columns.shape[0], device=crow.device)
        return cls._of_cells(rows, columns, inverse, tuple(matrix.shape))

    @classmethod
    def _of_cells(
        cls, rows: torch.Tensor, columns: torch.Tensor, inverse: torch.Tensor, shape: tuple[int, int]
    ) -> "MatrixCells":
        by_column = torch.argsort(columns * shape[0] + rows)
        return cls(
            count=int(rows.shape[0]),
            inverse=inverse,
            crow=_row_pointer(rows, shape[0]).int(),
            columns=columns.int(),
            by_column=by_column,
            transposed_crow=_row_pointer(columns, shape[1]).int(),
            transposed_columns=rows[by_column].int(),
        )

    def pattern(self, shape: tuple[int, int], values: torch.Tensor) -> torch.Tensor:
        """The cells as a CSR tensor holding `values` (one per cell, in CSR order)."""
        return torch.sparse_csr_tensor(self.crow, self.columns, values, shape, check_invariants=False)

    def transposed(self, shape: tuple[int, int], values: torch.Tensor) -> torch.Tensor:
        """The transposed pattern (shape[::-1]) holding `values` (one per cell, in CSR order of the matrix)."""
        return torch.sparse_csr_tensor(
            self.transposed_crow, self.transposed_columns, values[self.by_column], shape[::-1], check_invariants=False
        )


def sparse_product(matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """`matrix @ dense` for a CSR matrix, written straight into its result: with β = 0 addmm ignores its input
    (torch documents that NaN there does not propagate), where the `@` operator zero-fills a result and copies
    the product into it, two extra passes over an n × R array. Not differentiable itself (`out=`): for the
    backward passes and forward functions of this package's autograd Functions."""
    result = dense.new_empty(matrix.shape[0], dense.shape[1])
    return torch.addmm(result, matrix, dense, beta=0.0, out=result)


#: The cells of each coordinate tensor a matrix was predicted at, by the tensor's id, with a weak reference
#: that drops the entry when the tensor is freed: a regression's training entries are the same tensor at every
#: local step, so their sort is paid once per trainer (on MovieLens-100K's movie trainer it was three sorts of
#: 76k entries per step). Keyed by id because tensors compare elementwise, which weak-keyed dicts cannot use.
_CELLS: dict[int, tuple[weakref.ref, dict[tuple[int, int], MatrixCells]]] = {}


def matrix_cells(coords: torch.Tensor, shape: tuple[int, int]) -> MatrixCells:
    """`MatrixCells.of(coords, shape)`, remembered for as long as `coords` lives."""
    key = id(coords)
    if key not in _CELLS or _CELLS[key][0]() is not coords:
        _CELLS[key] = (weakref.ref(coords, lambda _, key=key: _CELLS.pop(key, None)), {})
    per_shape = _CELLS[key][1]
    if shape not in per_shape:
        per_shape[shape] = MatrixCells.of(coords, shape)
    return per_shape[shape]


class _MatrixPredict(torch.autograd.Function):
    """The matrix path computes each distinct cell once: the sampled product on the distinct cells in CSR
    order, gathered back to the entries (sampled negatives repeat cells, and a pattern with more entries than
    the matrix has cells is not a valid CSR pattern)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, coords: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor
    ) -> torch.Tensor:
        shape = (rows.shape[0], columns.shape[0])
        cells = matrix_cells(coords, shape)
        ctx.cells = cells
        ctx.save_for_backward(rows, columns)
        pattern = cells.pattern(shape, rows.new_ones(cells.count))
        return torch.sparse.sampled_addmm(pattern, rows, columns.t(), beta=0.0).values()[cells.inverse]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        rows, columns = ctx.saved_tensors
        cells: MatrixCells = ctx.cells
        shape = (rows.shape[0], columns.shape[0])
        per_cell = grad.new_zeros(cells.count).index_add_(0, cells.inverse, grad)
        grad_rows = sparse_product(cells.pattern(shape, per_cell), columns) if ctx.needs_input_grad[1] else None
        grad_columns = sparse_product(cells.transposed(shape, per_cell), rows) if ctx.needs_input_grad[2] else None
        return None, grad_rows, grad_columns


def cells_product(cells: MatrixCells, shape: tuple[int, int], values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """S·X for the sparse S holding `values` (constants: no gradient) on `cells`; the gradient of X is Sᵀ·grad
    through the cells' stored transposed pattern, where autograd through a CSR product would sort the entries
    into a transposed pattern at every backward."""
    return _CellsProduct.apply(cells, shape, values, dense)


class _CellsProduct(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, cells: MatrixCells, shape: tuple[int, int], values: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        ctx.cells, ctx.shape = cells, shape
        ctx.save_for_backward(values)
        return sparse_product(cells.pattern(shape, values), dense)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, None, torch.Tensor]:  # type: ignore[override]
        (values,) = ctx.saved_tensors
        return None, None, None, sparse_product(ctx.cells.transposed(ctx.shape, values), grad)


def _row_pointer(row: torch.Tensor, rows: int) -> torch.Tensor:
    """The CSR row pointer of entries sorted by `row`."""
    counts = torch.bincount(row, minlength=rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class _CPPredict(torch.autograd.Function):
    @staticmethod
    def forward(ctx, coords: torch.Tensor, chunk: int, *factors: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(coords, *factors)
        ctx.chunk = chunk
        out = factors[0].new_empty(coords.shape[1])
        for start in range(0, coords.shape[1], chunk):
            part = slice(start, start + chunk)
            out[part] = khatri_rao_rows(factors, coords[:, part]).sum(dim=1)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        coords, *factors = ctx.saved_tensors
        grads = [
            mttkrp(factors, coords, grad, mode, ctx.chunk) if ctx.needs_input_grad[2 + mode] else None
            for mode in range(len(factors))
        ]
        return (None, None, *grads)


def mttkrp(
    factors: Sequence[torch.Tensor],
    coords: torch.Tensor,
    values: torch.Tensor,
    mode: int,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """X_(mode) · Ω_mode for sparse X: each entry's value times its Khatri–Rao row, summed into row i_mode.

    This is the gradient kernel of the per-modality loss (the residual plays the role of `values`).
    """
    rank = factors[mode].shape[1]
    return _sum_into_rows(factors, coords, mode, chunk, rank, lambda rows, part: rows * values[part, None])


def row_gram(
    factors: Sequence[torch.Tensor],
    coords: torch.Tensor,
    weights: torch.Tensor,
    mode: int,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Per row i of `mode`: Σ_e w_e h_e h_eᵀ over the entries in that row, h_e its Khatri–Rao row (n×R×R).

    The left-hand side of the row-wise least-squares problems solved by ALS on observed entries.
    """
    rank = factors[mode].shape[1]

    def weighted_outer(rows: torch.Tensor, part: slice) -> torch.Tensor:
        return (rows[:, :, None] * rows[:, None, :]).reshape(-1, rank * rank) * weights[part, None]

    return _sum_into_rows(factors, coords, mode, chunk, rank * rank, weighted_outer).reshape(-1, rank, rank)


def _sum_into_rows(
    factors: Sequence[torch.Tensor],
    coords: torch.Tensor,
    mode: int,
    chunk: int,
    width: int,
    contribution: Callable[[torch.Tensor, slice], torch.Tensor],
) -> torch.Tensor:
    """Σ over entries of contribution(Khatri–Rao rows, entry slice) into row i_mode of an n×width result.

    Entries are processed `chunk` at a time so the gathered rows stay in cache and memory stays O(chunk·R).
    """
    out = torch.zeros(factors[mode].shape[0], width, dtype=factors[mode].dtype, device=factors[mode].device)
    for start in range(0, coords.shape[1], chunk):
        part = slice(start, start + chunk)
        rows = khatri_rao_rows(factors, coords[:, part], skip=mode)
        out.index_add_(0, coords[mode, part], contribution(rows, part))
    return out
