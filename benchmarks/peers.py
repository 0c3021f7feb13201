"""Peer implementations run side by side with HyperLearn in the MovieLens-100K benchmark (issue 3).

Every peer reads the same prepared run directory as HyperLearn (`RatingData.from_problem`): the same train,
validation and test entries and the same 10-NN graphs. Settings are chosen on the validation entries only; the
test entries are read once, for the state that validation picked.

Two jobs:

- `tensorly_masked_cp`: TensorLy's `parafac` with a mask (CP-ALS with EM imputation of the missing entries, on
  the dense 943×1682 matrix) at HyperLearn's rank, on the residuals after the global mean. The ridge weight and
  the number of iterations are chosen on validation.
- `train_srgcnn`: a sRGCNN-style joint model written the way Monti et al.'s code (github.com/fmonti/mgcnn)
  computes it, the model the paper's "≈4.5× faster per iteration" claim is measured against (method.md §3,
  claim 3): fixed factors W, H from a truncated SVD of the zero-filled training matrix; per factor a Chebyshev
  convolution with *dense precomputed* Chebyshev matrices T_j(L̃), an LSTM diffusion over T steps; the
  completed matrix X̂ = WHᵀ is formed densely, mapped onto the rating range by Monti's min–max normalisation,
  and the loss is  ‖P_Ω(X − X̂)‖²/|Ω| + γ/2 (tr(X̂ᵀ L_r X̂) + tr(X̂ L_c X̂ᵀ))  with the Dirichlet terms taken on
  the *dense completed matrix* (two n×n×m products per term), Adam at 1e-3. The encoder (LSTM diffusion, output
  layer) is HyperLearn's `FactorEncoder`; only its convolution is swapped for the dense one. Two switches give
  the same model and loss computed more cheaply, which separates where the per-iteration cost goes:
  `chebyshev="sparse"` (the Chebyshev recurrence on the sparse L̃, the same T_j(L̃)X) and `dirichlet="factored"`
  (tr(X̂ L_c X̂ᵀ) = tr((WᵀW)(Hᵀ L_c H)), likewise for L_r: the same value without forming the products with X̂).
  `factored_loss_check` confirms the losses agree step by step, so the cheap form can train the peer for the
  RMSE while the dense form is what the per-iteration timing measures.

`interleaved_step_times` times optimiser steps of several models in alternating blocks, so the drift of a
shared machine hits every contender alike.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse
import torch
from torch import nn

from hyperlearn.chebconv import ChebConv, symmetric_sparse_product, to_torch_csr
from hyperlearn.encoder import FactorEncoder
from hyperlearn.graphs import rescaled_laplacian
from hyperlearn.problem import Problem

Split = Literal["train", "validation", "test"]


# --- the shared data view ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatingData:
    """A 2nd-order rating relation as the peers see it: entries per split, value range and the two Laplacians."""

    shape: tuple[int, int]
    coords: dict[str, np.ndarray]  # split -> (2, nnz) int64 (row: user, column: movie)
    values: dict[str, np.ndarray]  # split -> (nnz,) float64
    value_range: tuple[float, float]
    laplacians: tuple[scipy.sparse.csr_matrix | None, scipy.sparse.csr_matrix | None]

    @classmethod
    def from_problem(cls, problem: Problem) -> "RatingData":
        """The primary (squared-loss) relation of `problem`; it must span exactly two modalities."""
        relation = problem.primary_relation()
        if relation.meta.order != 2:
            raise ValueError(f"peers need a matrix, relation {relation.meta.name!r} has order {relation.meta.order}")
        rows, columns = relation.meta.modalities
        values = {split: obs.values.double().numpy() for split, obs in relation.splits.items()}
        low = relation.meta.value_min if relation.meta.value_min is not None else float(values["train"].min())
        high = relation.meta.value_max if relation.meta.value_max is not None else float(values["train"].max())
        return cls(
            shape=(relation.meta.shape[0], relation.meta.shape[1]),
            coords={split: obs.coords.numpy() for split, obs in relation.splits.items()},
            values=values,
            value_range=(float(low), float(high)),
            laplacians=(problem.laplacians.get(rows), problem.laplacians.get(columns)),
        )

    @property
    def train_mean(self) -> float:
        return float(self.values["train"].mean())

    def dense_train(self) -> tuple[np.ndarray, np.ndarray]:
        """The training matrix (zeros where unobserved) and its 0/1 mask, both dense float64."""
        matrix, mask = np.zeros(self.shape), np.zeros(self.shape)
        rows, columns = self.coords["train"]
        matrix[rows, columns] = self.values["train"]
        mask[rows, columns] = 1.0
        return matrix, mask

    def scores(self, split: Split, predictions: np.ndarray) -> dict[str, float]:
        """RMSE and MAE on one split of predictions given as a dense matrix, clipped to the rating range."""
        rows, columns = self.coords[split]
        error = np.clip(predictions[rows, columns], *self.value_range) - self.values[split]
        return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


@dataclass
class PeerResult:
    """What a peer run reports: the setting validation chose, held-out scores and costs, and its curve."""

    name: str
    setting: dict[str, Any]
    validation_rmse: float
    test_rmse: float
    test_mae: float
    iterations: int
    train_seconds: float  # optimiser / ALS iterations only, evaluation excluded
    seconds_per_iteration: float
    history: list[dict[str, float]] = field(default_factory=list)  # iteration, seconds, validation_rmse
    search: list[dict[str, Any]] = field(default_factory=list)  # every setting tried, with its validation RMSE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- (a) TensorLy masked CP --------------------------------------------------------------------------------


def tensorly_masked_cp(
    data: RatingData,
    rank: int,
    ridge_weights: Sequence[float],
    max_iterations: int,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> PeerResult:
    """TensorLy `parafac(mask=...)` at `rank` on the training residuals after the global mean.

    For each ridge weight (`l2_reg`), one run of `max_iterations` records the validation RMSE after every
    iteration (through parafac's callback); the (ridge weight, iteration count) with the lowest one is refitted
    without the callback, timed, and scored on test. `init='random'` (the SVD start of a masked tensor repeats
    a dense SVD several times and was far slower here); `tol=1e-8` because `tol=0` raises in TensorLy 0.10.
    """
    import tensorly as tl  # the `bench` extra; imported here so the module loads without it

    tl.set_backend("numpy")
    matrix, mask = data.dense_train()
    residuals = (matrix - data.train_mean) * mask
    search: list[dict[str, Any]] = []
    curves: dict[float, list[dict[str, float]]] = {}
    for ridge in ridge_weights:
        curve = _parafac_validation_curve(tl, data, residuals, mask, rank, ridge, max_iterations, seed)
        curves[ridge] = curve
        best = min(curve[1:], key=lambda point: point["validation_rmse"])
        search.append({"l2_reg": ridge, "n_iter_max": best["iteration"], "validation_rmse": best["validation_rmse"]})
        log(f"[tensorly] l2_reg={ridge}: best validation RMSE {best['validation_rmse']:.4f} at {best['iteration']}")
    chosen = min(search, key=lambda row: row["validation_rmse"])
    setting = {"rank": rank, "l2_reg": chosen["l2_reg"], "n_iter_max": int(chosen["n_iter_max"]),
               "init": "random", "tol": 1e-8, "random_state": seed, "centred_on_train_mean": True}
    start = time.perf_counter()
    cp = _parafac(tl, residuals, mask, rank, chosen["l2_reg"], int(chosen["n_iter_max"]), seed)
    seconds = time.perf_counter() - start
    completed = tl.cp_to_tensor(cp) + data.train_mean
    test = data.scores("test", completed)
    return PeerResult(
        name="TensorLy masked CP (parafac)",
        setting=setting,
        validation_rmse=data.scores("validation", completed)["rmse"],
        test_rmse=test["rmse"],
        test_mae=test["mae"],
        iterations=int(chosen["n_iter_max"]),
        train_seconds=seconds,
        seconds_per_iteration=seconds / max(int(chosen["n_iter_max"]), 1),
        history=curves[chosen["l2_reg"]],
        search=search,
    )


def _parafac(tl: Any, residuals: np.ndarray, mask: np.ndarray, rank: int, ridge: float, iterations: int, seed: int,
             callback: Callable[..., Any] | None = None) -> Any:
    from tensorly.decomposition import parafac

    return parafac(
        tl.tensor(residuals), rank, mask=tl.tensor(mask), init="random", tol=1e-8, n_iter_max=iterations,
        random_state=seed, l2_reg=ridge, callback=callback,
    )


def _parafac_validation_curve(
    tl: Any, data: RatingData, residuals: np.ndarray, mask: np.ndarray, rank: int, ridge: float, iterations: int,
    seed: int,
) -> list[dict[str, float]]:
    """Validation RMSE after each parafac iteration (iteration 0 = the random start); `seconds` excludes the
    evaluation inside the callback."""
    rows, columns = data.coords["validation"]
    curve: list[dict[str, float]] = []
    clock = {"last": time.perf_counter(), "spent": 0.0}

    def record(cp: Any, _error: float) -> None:
        clock["spent"] += time.perf_counter() - clock["last"]
        weights, (users, movies) = cp
        predicted = np.einsum("r,nr,nr->n", weights, users[rows], movies[columns]) + data.train_mean
        error = np.clip(predicted, *data.value_range) - data.values["validation"]
        curve.append({"iteration": len(curve), "seconds": clock["spent"],
                      "validation_rmse": float(np.sqrt(np.mean(error**2)))})
        clock["last"] = time.perf_counter()

    _parafac(tl, residuals, mask, rank, ridge, iterations, seed, callback=record)
    return curve


# --- (b) sRGCNN as Monti's code computes it ----------------------------------------------------------------


@dataclass(frozen=True)
class SRGCNNSettings:
    """sRGCNN's MovieLens settings (method.md §2). `chebyshev`/`dirichlet` select Monti's dense computation or
    the cheaper sparse / on-the-factors forms, to split the per-iteration cost."""

    rank: int = 10
    order: int = 4  # q: q + 1 = 5 Chebyshev terms, Monti's ord_row = ord_col = 5
    conv_width: int = 32
    lstm_width: int = 32
    steps: int = 10
    learning_rate: float = 1e-3
    dirichlet_weight: float = 1e-8  # γ in Monti's scripts for MovieLens
    chebyshev: Literal["dense", "sparse"] = "dense"
    dirichlet: Literal["dense", "factored"] = "dense"
    seed: int = 0

    def describe(self) -> str:
        dirichlet = "on the dense X̂" if self.dirichlet == "dense" else "factored"
        return f"Chebyshev {self.chebyshev}, Dirichlet {dirichlet}"


class DenseChebConv(ChebConv):
    """HyperLearn's Chebyshev convolution fed precomputed dense matrices T_j(L̃), shape (q+1, n, n): q+1 dense
    n×n products per call, as Monti's `mono_conv` does (T_0 = I included), instead of the sparse recurrence."""

    def forward(self, polynomials: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        terms = torch.matmul(polynomials, x)
        return torch.einsum("jni,jio->no", terms, self.weight) + self.bias


def _densify(encoder: FactorEncoder) -> None:
    """Swap the encoder's convolution for a `DenseChebConv` holding the same weights."""
    sparse_conv = encoder.conv
    dense = DenseChebConv(sparse_conv.weight.shape[1], sparse_conv.weight.shape[2], sparse_conv.order)
    dense.load_state_dict(sparse_conv.state_dict())
    encoder.conv = dense


def dense_chebyshev_polynomials(laplacian: scipy.sparse.spmatrix, order: int) -> torch.Tensor:
    """[T_0(L̃), …, T_q(L̃)] as one dense (q+1, n, n) float32 tensor, L̃ = L − I (λ_max = 2, as Monti)."""
    rescaled = torch.as_tensor(rescaled_laplacian(laplacian).toarray(), dtype=torch.float32)
    polynomials = [torch.eye(rescaled.shape[0]), rescaled]
    for _ in range(2, order + 1):
        polynomials.append(2 * rescaled @ polynomials[-1] - polynomials[-2])
    return torch.stack(polynomials[: order + 1])


def svd_factors(matrix: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """W = U_R S_R^½ and H = V_R S_R^½ of the zero-filled training matrix (Monti's starting factors)."""
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(s[:rank])
    return u[:, :rank] * root, vt[:rank].T * root


class SRGCNN(nn.Module):
    """Separable recurrent multi-graph CNN (Monti et al. 2017) on one rating matrix; see the module docstring."""

    def __init__(self, data: RatingData, settings: SRGCNNSettings) -> None:
        super().__init__()
        if data.laplacians[0] is None or data.laplacians[1] is None:
            raise ValueError("sRGCNN needs a graph for both modalities")
        self.settings = settings
        self.value_range = data.value_range
        matrix, mask = data.dense_train()
        w0, h0 = svd_factors(matrix, settings.rank)
        self.register_buffer("target", torch.as_tensor(matrix, dtype=torch.float32))
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32))
        self.register_buffer("w0", torch.as_tensor(w0, dtype=torch.float32))
        self.register_buffer("h0", torch.as_tensor(h0, dtype=torch.float32))
        self.observed = float(mask.sum())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            self.user_encoder = self._encoder()
            self.movie_encoder = self._encoder()
            if settings.chebyshev == "dense":  # after both encoders drew their weights: same weights either way
                _densify(self.user_encoder)
                _densify(self.movie_encoder)
        self.user_operator, self.movie_operator = (self._operator(lap) for lap in data.laplacians)
        self.user_laplacian, self.movie_laplacian = (self._laplacian(lap) for lap in data.laplacians)

    def _encoder(self) -> FactorEncoder:
        s = self.settings
        return FactorEncoder(s.rank, s.conv_width, s.lstm_width, s.order, s.steps, recurrent=True)

    def _operator(self, laplacian: scipy.sparse.csr_matrix) -> torch.Tensor:
        if self.settings.chebyshev == "dense":
            return dense_chebyshev_polynomials(laplacian, self.settings.order)
        return to_torch_csr(rescaled_laplacian(laplacian))

    def _laplacian(self, laplacian: scipy.sparse.csr_matrix) -> torch.Tensor:
        if self.settings.dirichlet == "dense":
            return torch.as_tensor(laplacian.toarray(), dtype=torch.float32)
        return to_torch_csr(laplacian)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W and H after the T diffusion steps of their encoders (the starting factors are constants)."""
        return self.user_encoder(self.user_operator, self.w0), self.movie_encoder(self.movie_operator, self.h0)

    def normalised(self, completed: torch.Tensor) -> torch.Tensor:
        """Monti's map of X̂ onto the rating range: low + (high − low)(X̂ − min X̂)/(max X̂ − min X̂)."""
        low, high = self.value_range
        shifted = completed - completed.min()
        return low + (high - low) * shifted / shifted.max()

    def loss(self) -> torch.Tensor:
        """‖P_Ω(X − norm(X̂))‖²/|Ω| + γ/2 (tr(X̂ᵀ L_r X̂) + tr(X̂ L_c X̂ᵀ)), X̂ = WHᵀ."""
        w, h = self.factors()
        completed = w @ h.T
        fit = (self.mask * (self.normalised(completed) - self.target)).pow(2).sum() / self.observed
        if self.settings.dirichlet == "dense":
            # As Monti's code: the full dense products, then their trace.
            smooth = torch.trace(completed @ self.movie_laplacian @ completed.T) + torch.trace(
                completed.T @ self.user_laplacian @ completed
            )
        else:
            # The same value without X̂: tr(X̂ L_c X̂ᵀ) = tr((WᵀW)(Hᵀ L_c H)) and tr(X̂ᵀ L_r X̂) = tr((HᵀH)(Wᵀ L_r W)).
            user_side = w.T @ symmetric_sparse_product(self.user_laplacian, w)
            movie_side = h.T @ symmetric_sparse_product(self.movie_laplacian, h)
            smooth = ((w.T @ w) * movie_side).sum() + ((h.T @ h) * user_side).sum()
        return fit + 0.5 * self.settings.dirichlet_weight * smooth

    def completed_matrix(self) -> np.ndarray:
        """The normalised completed matrix as float64 NumPy, for scoring."""
        with torch.no_grad():
            w, h = self.factors()
            return self.normalised(w @ h.T).double().numpy()


def srgcnn_stepper(data: RatingData, settings: SRGCNNSettings) -> tuple[SRGCNN, Callable[[], float]]:
    """A fresh model and a function doing one Adam step on it (returns the loss)."""
    model = SRGCNN(data, settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return model, step


def factored_loss_check(data: RatingData, settings: SRGCNNSettings, dirichlet_weight: float = 1e-4,
                        steps: int = 3) -> dict[str, Any]:
    """Losses of Monti's dense computation and of the sparse/factored one over the first `steps` Adam steps
    from the same start (γ raised so the Dirichlet term weighs in): equal up to float rounding, so the cheap
    form trains the same model and its RMSE stands for the dense one's."""
    losses = {}
    for chebyshev, dirichlet in (("dense", "dense"), ("sparse", "factored")):
        changed = dataclasses.replace(settings, chebyshev=chebyshev, dirichlet=dirichlet,
                                      dirichlet_weight=dirichlet_weight)
        _, step = srgcnn_stepper(data, changed)
        losses[f"{chebyshev}/{dirichlet}"] = [step() for _ in range(steps)]
    dense, factored = losses.values()
    worst = max(abs(a - b) / abs(a) for a, b in zip(dense, factored))
    return {"losses": losses, "max_relative_difference": worst, "dirichlet_weight": dirichlet_weight}


def train_srgcnn(
    data: RatingData,
    settings: SRGCNNSettings,
    iterations: int,
    evaluate_every: int,
    log: Callable[[str], None] = print,
) -> PeerResult:
    """`iterations` Adam steps; every `evaluate_every` steps the validation RMSE is recorded and the best state
    kept. Test is scored once, on that state. `train_seconds` counts the steps only."""
    model, step = srgcnn_stepper(data, settings)
    completed = model.completed_matrix()
    history = [{"iteration": 0, "seconds": 0.0, "validation_rmse": data.scores("validation", completed)["rmse"]}]
    best = {"iteration": 0, "rmse": history[0]["validation_rmse"], "completed": completed}
    spent = 0.0
    for iteration in range(1, iterations + 1):
        start = time.perf_counter()
        step()
        spent += time.perf_counter() - start
        if iteration % evaluate_every == 0 or iteration == iterations:
            completed = model.completed_matrix()
            rmse = data.scores("validation", completed)["rmse"]
            history.append({"iteration": iteration, "seconds": spent, "validation_rmse": rmse})
            if rmse < best["rmse"]:
                best = {"iteration": iteration, "rmse": rmse, "completed": completed}
            log(f"[srgcnn] iteration {iteration}/{iterations}: validation RMSE {rmse:.4f} ({spent:.1f}s)")
    test = data.scores("test", best["completed"])
    return PeerResult(
        name=f"sRGCNN-style ({settings.describe()})",
        setting={**asdict(settings), "iterations": iterations, "best_iteration": best["iteration"]},
        validation_rmse=best["rmse"],
        test_rmse=test["rmse"],
        test_mae=test["mae"],
        iterations=iterations,
        train_seconds=spent,
        seconds_per_iteration=spent / max(iterations, 1),
        history=history,
    )


# --- timing --------------------------------------------------------------------------------------------------


def interleaved_step_times(
    steps: Mapping[str, Callable[[], Any]], blocks: int, per_block: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Seconds per call of each step function: `warmup` untimed calls each, then `blocks` rounds in which every
    function runs `per_block` timed calls in turn. Returns median, quartiles and count per name."""
    for function in steps.values():
        for _ in range(warmup):
            function()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(blocks):
        for name, function in steps.items():
            for _ in range(per_block):
                start = time.perf_counter()
                function()
                samples[name].append(time.perf_counter() - start)
    return {name: _summary(values) for name, values in samples.items()}


def _summary(values: list[float]) -> dict[str, float]:
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q1": quartiles[0], "q3": quartiles[2], "n": float(len(values)),
            "mean": statistics.fmean(values)}

