"""Peers for ranking one axis of a relation of any order, as plain functions over coordinate arrays.

Each peer returns a `QueryScorer` (contexts (K, B) int64 → scores (B, N) of every entity of the target axis)
for `hyperlearn.ranking.ranking_metrics`, so every model is read through the same filtered ranking as HyperLearn.

- PITF (Rendle & Schmidt-Thieme, WSDM 2010): s(i_1 … i_K) = Σ_{k ≠ target} ⟨A_k[i_k], T_k[i_target]⟩ — one
  pair factor per non-target axis, each with its own copy of the target's embedding.
- Plain CP: s = Σ_c Π_k A_k[i_k, c] over every axis, the target included (DistMult when head and tail share one
  entity table, `tables`).

Both score a query as q(context) · T[candidate] (PITF: q and T are the concatenated pair factors; CP: q is the
product of the context rows), plus a per-target bias (BPR-MF's item bias), and are trained the same way: BPR,
−log σ(s⁺ − s⁻) with one uniformly drawn target entity per positive and epoch, Adam, L2 on the rows a batch
touches; after every epoch the validation metric is read, and the best epoch's parameters are kept (patience).
Seeded and CPU-only: the same inputs give the same scorer.

Popularity peers are hyperlearn.ranking's: global, and per-context co-occurrence restricted to chosen axes
(`axis_popularity_scorer`), of which `mixed_scorer` blends two.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from hyperlearn.ranking import QueryScorer, context_popularity_scorer

PeerKind = Literal["pitf", "cp"]
Validation = Callable[[QueryScorer], float]  # a scorer's validation metric (higher is better)


@dataclass(frozen=True)
class BprSettings:
    """Training settings of a BPR peer; `dim` is the width of each embedding."""

    dim: int = 64
    learning_rate: float = 0.01
    l2: float = 1e-4
    epochs: int = 60
    batch_size: int = 256
    patience: int = 5
    init_scale: float = 0.1


@dataclass
class PeerResult:
    """The best-on-validation scorer, the validation metric per epoch, its best epoch and training seconds."""

    scorer: QueryScorer
    history: list[float]
    best_epoch: int
    seconds: float


class _DotModel(torch.nn.Module):
    """A peer's parameters: one embedding table per modality table, the target table(s) and a target bias."""

    def __init__(self, kind: PeerKind, sizes: Sequence[int], target: int, tables: Sequence[int], dim: int,
                 scale: float, generator: torch.Generator) -> None:
        super().__init__()
        self.kind, self.target, self.tables = kind, target, tuple(tables)
        self.others = [axis for axis in range(len(sizes)) if axis != target]
        table_sizes = {table: sizes[axis] for axis, table in enumerate(self.tables)}

        def embedding(rows: int) -> torch.nn.Parameter:
            return torch.nn.Parameter(scale * torch.randn(rows, dim, generator=generator, dtype=torch.float32))

        self.context = torch.nn.ParameterDict({str(t): embedding(table_sizes[t]) for t in sorted(table_sizes)})
        if kind == "pitf":
            self.pair_targets = torch.nn.ParameterList([embedding(sizes[target]) for _ in self.others])
        self.bias = torch.nn.Parameter(torch.zeros(sizes[target]))

    def context_rows(self, contexts: torch.Tensor) -> list[torch.Tensor]:
        """The embedding rows of each non-target axis of contexts (K, B): each (B, dim)."""
        return [self.context[str(self.tables[axis])][contexts[axis]] for axis in self.others]

    def queries(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """q(context) from its context rows: (B, D)."""
        if self.kind == "pitf":
            return torch.cat(rows, dim=1)
        return torch.stack(rows).prod(0)

    def targets(self) -> torch.Tensor:
        """T: (N, D), the candidates' side of the dot product."""
        if self.kind == "pitf":
            return torch.cat(list(self.pair_targets), dim=1)
        return self.context[str(self.tables[self.target])]

    def scores(self, contexts: torch.Tensor) -> torch.Tensor:
        return self.queries(self.context_rows(contexts)) @ self.targets().t() + self.bias[None, :]


def train_bpr_peer(
    kind: PeerKind,
    train: np.ndarray,
    sizes: Sequence[int],
    target: int,
    validation: Validation,
    settings: BprSettings = BprSettings(),
    seed: int = 0,
    tables: Sequence[int] | None = None,
) -> PeerResult:
    """Train PITF (`kind` "pitf") or plain CP ("cp") with BPR on training coordinates `train` (K, n).

    `tables[k]` names the embedding table of axis k (default: one per axis); axes with the same table share it
    (a knowledge graph's head and tail). Early-stops on `validation` (higher is better)."""
    tables = tuple(range(len(sizes))) if tables is None else tuple(tables)
    if len(tables) != len(sizes) or train.shape[0] != len(sizes):
        raise ValueError(f"train has {train.shape[0]} axes, sizes {len(sizes)}, tables {len(tables)}")
    generator = torch.Generator().manual_seed(seed)
    model = _DotModel(kind, sizes, target, tables, settings.dim, settings.init_scale, generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    coords = torch.from_numpy(np.ascontiguousarray(train, dtype=np.int64))
    history: list[float] = []
    best, best_epoch, best_state, seconds = -np.inf, 0, copy.deepcopy(model.state_dict()), 0.0
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        _bpr_epoch(model, optimiser, coords, sizes[target], settings, generator)
        seconds += time.perf_counter() - start
        metric = validation(_scorer(copy.deepcopy(model)))
        history.append(metric)
        if metric > best:
            best, best_epoch, best_state = metric, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= settings.patience:
            break
    model.load_state_dict(best_state)
    return PeerResult(_scorer(model), history, best_epoch, seconds)


def _bpr_epoch(model: _DotModel, optimiser: torch.optim.Optimizer, coords: torch.Tensor, candidates: int,
               settings: BprSettings, generator: torch.Generator) -> None:
    """One pass over the positives in a seeded order, one uniformly drawn negative target per positive."""
    order = torch.randperm(coords.shape[1], generator=generator)
    for batch in order.split(settings.batch_size):
        contexts = coords[:, batch]
        positive = contexts[model.target]
        negative = torch.randint(candidates, positive.shape, generator=generator)
        rows = model.context_rows(contexts)
        query = model.queries(rows)
        table = model.targets()
        rows_positive, rows_negative = table[positive], table[negative]
        difference = ((query * (rows_positive - rows_negative)).sum(1)
                      + model.bias[positive] - model.bias[negative])
        penalty = sum(row.square().sum() for row in rows) + rows_positive.square().sum() + rows_negative.square().sum()
        loss = -torch.nn.functional.logsigmoid(difference).mean() + settings.l2 * penalty / len(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def _scorer(model: _DotModel) -> QueryScorer:
    model.eval()

    def scorer(contexts: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return model.scores(torch.from_numpy(np.asarray(contexts, dtype=np.int64))).double()

    return scorer


def axis_popularity_scorer(train: np.ndarray, target: int, sizes: Sequence[int], axes: Sequence[int]) -> QueryScorer:
    """hyperlearn.ranking's per-context popularity using only the context axes `axes` (e.g. per item)."""
    kept = [*axes, target]
    inner = context_popularity_scorer(train[kept], len(axes), [sizes[axis] for axis in kept])
    return lambda contexts: inner(np.asarray(contexts)[kept])


def mixed_scorer(first: QueryScorer, second: QueryScorer, weight: float) -> QueryScorer:
    """weight · first + (1 − weight) · second."""
    return lambda contexts: weight * first(contexts) + (1.0 - weight) * second(contexts)


def choose_mix(first: QueryScorer, second: QueryScorer, validation: Validation,
               weights: Sequence[float] = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))) -> tuple[float, dict[float, float]]:
    """The weight of `mixed_scorer(first, second, ·)` with the best validation metric, and every weight's metric."""
    metrics = {float(weight): validation(mixed_scorer(first, second, weight)) for weight in weights}
    return max(metrics, key=lambda weight: (metrics[weight], -abs(weight - 0.5))), metrics


@dataclass
class PykeenResult:
    """A PyKEEN model trained by PyKEEN's sLCWA training loop and early-stopped on `validation`: its own filtered
    test metrics (per triple, tail side), the best model as a scorer of tails for hyperlearn.ranking, the
    validation metric per check, the best epoch, the epochs run and the training seconds (checks excluded)."""

    metrics: dict[str, float]
    scorer: QueryScorer
    history: list[float]
    best_epoch: int
    epochs_run: int
    seconds: float


@dataclass(frozen=True)
class PykeenSettings:
    """PyKEEN's training: sLCWA with `negatives` uniform corruptions per triple (PyKEEN's basic sampler corrupts
    heads and tails), `loss`, Adam; a validation check every `check_every` epochs, stopping after `patience`
    checks without gain or at `max_epochs`. `dim` is PyKEEN's embedding_dim (ComplEx: complex entries; CP: the
    rank, with embedding_dim 1, so every model has `dim` numbers per entity and role).

    The loss is PyKEEN's default for DistMult, the margin ranking loss, for every model. With the softplus loss
    all three stayed at the zero saddle of their products on the MovieLens-100K Freebase triples: the training
    loss stayed at log 2 and the validation MRR at chance (0.0003) after 12 epochs, where the margin loss, whose
    gradient does not vanish at zero scores, reached 0.09 in 2 epochs."""

    dim: int = 64
    loss: str = "marginranking"
    learning_rate: float = 0.01
    negatives: int = 4
    batch_size: int = 1024
    max_epochs: int = 100
    check_every: int = 2
    patience: int = 3


PYKEEN_METRICS = ("inverse_harmonic_mean_rank", "hits_at_1", "hits_at_3", "hits_at_10")
EVALUATION_BATCH = 512


def train_pykeen(
    model: str,
    triples: dict[str, np.ndarray],
    num_entities: int,
    num_relations: int,
    validation: Validation,
    settings: PykeenSettings = PykeenSettings(),
    seed: int = 0,
) -> PykeenResult:
    """Train PyKEEN's `model` (DistMult, ComplEx, CP) on `triples` {"train", "validation", "test"} ((3, n) head,
    relation, tail ids) with PyKEEN's own training loop, check `validation` (the tail-ranking metric every
    model of the benchmark is stopped on) every `settings.check_every` epochs, keep the best epoch's weights,
    and evaluate them once with PyKEEN's filtered rank-based evaluator (train and validation filtered) on test,
    tails only (the side HyperLearn ranks), as a cross-check of hyperlearn.ranking."""
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import model_resolver
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import CoreTriplesFactory

    torch.manual_seed(seed)
    factories = {
        split: CoreTriplesFactory.create(
            torch.from_numpy(np.ascontiguousarray(coords.T, dtype=np.int64)), num_entities, num_relations
        )
        for split, coords in triples.items()
    }
    shape = {"embedding_dim": 1, "rank": settings.dim} if model == "CP" else {"embedding_dim": settings.dim}
    kge = model_resolver.make(model, triples_factory=factories["train"], loss=settings.loss, random_seed=seed,
                              **shape)
    optimiser = torch.optim.Adam(kge.get_grad_params(), lr=settings.learning_rate)
    loop = SLCWATrainingLoop(model=kge, triples_factory=factories["train"], optimizer=optimiser,
                             negative_sampler="basic", negative_sampler_kwargs={"num_negs_per_pos": settings.negatives})
    scorer = _pykeen_scorer(kge)
    history: list[float] = []
    best, best_epoch, best_state, seconds, epoch = -np.inf, 0, copy.deepcopy(kge.state_dict()), 0.0, 0
    while epoch < settings.max_epochs:
        epoch = min(epoch + settings.check_every, settings.max_epochs)
        start = time.perf_counter()
        loop.train(factories["train"], num_epochs=epoch, batch_size=settings.batch_size, use_tqdm=False,
                   use_tqdm_batch=False, continue_training=epoch > settings.check_every)
        seconds += time.perf_counter() - start
        kge.eval()
        history.append(validation(scorer))
        kge.train()
        if history[-1] > best:
            best, best_epoch, best_state = history[-1], epoch, copy.deepcopy(kge.state_dict())
        elif len(history) - 1 - history.index(best) >= settings.patience:
            break
    kge.load_state_dict(best_state)
    kge.eval()
    evaluated = RankBasedEvaluator(filtered=True).evaluate(
        kge, factories["test"].mapped_triples, batch_size=EVALUATION_BATCH, use_tqdm=False, targets=["tail"],
        additional_filter_triples=[factories["train"].mapped_triples, factories["validation"].mapped_triples],
    )
    metrics = {name: float(evaluated.get_metric(f"tail.realistic.{name}")) for name in PYKEEN_METRICS}
    return PykeenResult(metrics, scorer, history, best_epoch, epoch, seconds)


def _pykeen_scorer(kge: torch.nn.Module) -> QueryScorer:
    """Tail scores of every entity for (head, relation) contexts (3, B), from the model's current weights."""

    def scorer(contexts: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            pairs = torch.from_numpy(np.stack([contexts[0], contexts[1]], axis=1).astype(np.int64))
            return kge.score_t(pairs).double()

    return scorer
