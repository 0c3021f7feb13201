"""The training problem as trainers see it: relation tensors per split and one Laplacian per modality.

Loaded from a run directory written by the pipeline (`load_problem`), or for one trainer from the plain arrays of
its share that the driver sent it (`share_problem`), so a trainer's worker never needs the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass

import scipy.sparse
import torch

from hyperlearn.rundir import SPLITS, Entries, RelationMeta, RunDir, TrainerShare
from hyperlearn.value_models import value_model


@dataclass(frozen=True)
class Observations:
    """The observed entries of one split, as torch tensors: coords (K, nnz) int64 and values (nnz,) float32."""

    coords: torch.Tensor
    values: torch.Tensor

    @classmethod
    def from_entries(cls, entries: Entries, device: torch.device | str = "cpu") -> "Observations":
        return cls(
            coords=torch.as_tensor(entries.coords, dtype=torch.int64, device=device),
            values=torch.as_tensor(entries.values, dtype=torch.float32, device=device),
        )

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    def to(self, device: torch.device | str) -> "Observations":
        return Observations(self.coords.to(device), self.values.to(device))


@dataclass(frozen=True)
class Relation:
    """One relation: what it spans and its observed entries per split."""

    meta: RelationMeta
    splits: dict[str, Observations]

    @property
    def train(self) -> Observations:
        return self.splits["train"]

    def train_mean(self) -> float:
        """Global offset μ of the scores: the train mean of a regression, 0 for relations of observed tuples."""
        return value_model(self.meta).offset(self.train.values)


@dataclass(frozen=True)
class Problem:
    """Everything training needs: entity counts per modality, relations, and Laplacians (None: no graph)."""

    sizes: dict[str, int]
    relations: tuple[Relation, ...]
    laplacians: dict[str, scipy.sparse.csr_matrix | None]

    @property
    def modalities(self) -> list[str]:
        return list(self.sizes)

    def relations_of(self, modality: str) -> tuple[Relation, ...]:
        """The relations whose tensor spans `modality`: the cross-modal terms of its loss."""
        return tuple(r for r in self.relations if modality in r.meta.modalities)

    def primary_relation(self) -> Relation:
        """The relation whose test metrics are the headline (test_rmse, test_mae, or test_ndcg@10 …) and whose
        validation metric stops training: the spec's first relation."""
        return self.relations[0]


def with_validation_in_training(problem: Problem) -> Problem:
    """The problem with each relation's validation entries added to its training entries: what a refit trains
    on once early stopping has chosen the number of rounds."""
    relations = tuple(
        Relation(meta=r.meta, splits={**r.splits, "train": _concatenated(r.train, r.splits["validation"])})
        for r in problem.relations
    )
    return Problem(sizes=problem.sizes, relations=relations, laplacians=problem.laplacians)


def _concatenated(first: Observations, second: Observations) -> Observations:
    return Observations(torch.cat([first.coords, second.coords], dim=1), torch.cat([first.values, second.values]))


def load_problem(run: RunDir, splits: tuple[str, ...] = SPLITS, modalities: set[str] | None = None) -> Problem:
    """Read relations (only those spanning `modalities`, when given) and Laplacians from a run directory."""
    relations = []
    sizes = run.entity_counts()
    for name in run.relation_names():
        meta = run.read_relation_meta(name)
        if modalities is not None and not modalities & set(meta.modalities):
            continue
        loaded = {split: Observations.from_entries(run.read_relation_split(name, split)) for split in splits}
        relations.append(Relation(meta=meta, splits=loaded))
    if not sizes:
        raise FileNotFoundError(f"{run.relations}: no relations found")
    laplacians = {name: run.read_laplacian(name) for name in sorted(sizes)}
    return Problem(sizes=sizes, relations=tuple(relations), laplacians=laplacians)


def share_problem(share: TrainerShare) -> Problem:
    """One trainer's problem from its share: the relations spanning its modality and its Laplacian."""
    relations = tuple(
        Relation(meta=r.meta, splits={split: Observations.from_entries(e) for split, e in r.splits.items()})
        for r in share.relations
    )
    return Problem(sizes=share.sizes, relations=relations, laplacians={share.modality: share.laplacian})
