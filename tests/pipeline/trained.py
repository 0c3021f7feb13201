"""A tiny trained and written version: the planted run of tests/hyperlearn trained jointly for a few steps, with
a catalog per modality and a user × user relation (one modality on two axes), its outputs written as a run
publishes them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from hyperlearn.config import TrainingConfig
from hyperlearn.joint import train_joint
from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.outputs import write_training_outputs
from hyperlearn.result import TrainResult
from hyperlearn.rundir import Entries, Evaluation, RelationMeta, RunDir
from tests.hyperlearn.planted import write_planted_run

TINY = TrainingConfig(
    rank=4, conv_width=8, lstm_width=8, diffusion_steps=2, init_iterations=2, rounds=2, local_steps=3,
    patience=2, learning_rate=0.02, device="cpu",
)
SIZES = {"user": 240, "item": 160, "tag": 20}


def entity_key(modality: str, entity: int) -> str:
    return f"{modality[0]}{entity}"


def write_trained_version(path: Path, structure: str = "cp", refit: bool = False) -> tuple[RunDir, TrainResult]:
    """Planted data (rating: user × item squared; tagging: user × item × tag logistic, in `structure`; follows:
    user × user logistic), trained with the joint trainer, outputs written into `path`."""
    run = write_planted_run(path)
    tagging = run.read_relation_meta("tagging")
    tagging = dataclasses.replace(tagging, structure=structure, evaluation=Evaluation(target=2))
    (run.relation("tagging") / "meta.json").write_text(json.dumps(tagging.to_dict()))
    rng = np.random.default_rng(1)
    pairs = np.unique(rng.integers(SIZES["user"], size=(2, 600)), axis=1)
    follows = RelationMeta("follows", ("user", "user"), (SIZES["user"],) * 2, "logistic", 0.3, axes=("follower", "followee"))
    thirds = np.array_split(np.arange(pairs.shape[1]), [int(0.8 * pairs.shape[1]), int(0.9 * pairs.shape[1])])
    run.write_relation(
        follows,
        {split: Entries(pairs[:, part], np.ones(len(part), np.float32), follows.shape)
         for split, part in zip(("train", "validation", "test"), thirds)},
    )
    for modality, n in SIZES.items():
        EntityCatalog(modality, [entity_key(modality, e) for e in range(n)]).save(run.catalog)
    config = TINY.replace(refit=refit)
    result = train_joint(run, config, log=lambda line: None)
    write_training_outputs(run, dataset="planted", version="v1", config=config, result=result)
    return run, result
