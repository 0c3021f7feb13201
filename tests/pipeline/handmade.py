"""A version written by the real writer from hand-made states, without training (no torch): a squared
user × item relation with known values and a pairwise user × item × tag relation, random embeddings and biases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hyperlearn.config import TrainingConfig
from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.outputs import write_training_outputs
from hyperlearn.result import TrainResult
from hyperlearn.rundir import Entries, Evaluation, ModalityState, RelationMeta, RunDir

SIZES = {"user": 6, "item": 5, "tag": 4}
RANK = 5
RATING_SPLITS = {  # train values 1 and 2 (mean 1.5); with validation 1, 2, 5 (mean 8/3)
    "train": Entries(np.array([[0, 1], [0, 1]]), np.array([1.0, 2.0], np.float32), (6, 5)),
    "validation": Entries(np.array([[2], [1]]), np.array([5.0], np.float32), (6, 5)),
    "test": Entries(np.zeros((2, 0), np.int64), np.zeros(0, np.float32), (6, 5)),
}


def handmade_states(seed: int = 0, bias: float | None = None) -> TrainResult:
    """Random embeddings and biases (all equal to `bias` when given) for every modality and relation."""
    rng = np.random.default_rng(seed)
    relations = {"user": ("rating", "tagging"), "item": ("rating", "tagging"), "tag": ("tagging",)}
    states = {
        m: ModalityState(
            rng.normal(size=(n, RANK)).astype(np.float32),
            {r: (rng.normal(size=n) if bias is None else np.full(n, bias)).astype(np.float32) for r in relations[m]},
        )
        for m, n in SIZES.items()
    }
    return TrainResult(states=states, history=[{"round": 0, "seconds": 0.0, "train_loss": 1.0}], metrics={}, mode="joint")


def write_handmade_version(path: Path, result: TrainResult | None = None, refit: bool = False) -> RunDir:
    """Relations, catalogs (keys u0…, i0…, t0…) and the training outputs of `result` written into `path`."""
    run = RunDir(path)
    rating = RelationMeta("rating", ("user", "item"), (6, 5), "squared", value_min=1.0, value_max=5.0)
    tagging = RelationMeta(
        "tagging", ("user", "item", "tag"), (6, 5, 4), "logistic", structure="pairwise", evaluation=Evaluation(2)
    )
    run.write_relation(rating, RATING_SPLITS)
    empty = Entries(np.zeros((3, 0), np.int64), np.zeros(0, np.float32), tagging.shape)
    run.write_relation(tagging, {"train": empty, "validation": empty, "test": empty})
    for modality, n in SIZES.items():
        EntityCatalog(modality, [f"{modality[0]}{e}" for e in range(n)]).save(run.catalog)
    config = TrainingConfig(rank=RANK, refit=refit)
    result = result or handmade_states()
    if refit:  # as run_rounds reports a refit that ran
        result.metrics["refit_rounds"] = 1.0
    write_training_outputs(run, dataset="handmade", version="v1", config=config, result=result)
    return run
