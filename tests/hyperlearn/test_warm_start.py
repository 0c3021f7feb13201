"""Warm start: known entities keep their rows and biases, unchanged modalities resume their encoders, new rows
and modalities are fitted against the frozen old ones, the anchor holds the warm-started rows near the parent's in
joint and distributed training, and a parent that cannot seed the run is refused."""

import dataclasses

import numpy as np
import pytest
import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.joint import JointTrainers
from hyperlearn.metrics import evaluate
from hyperlearn.problem import Problem, Relation, load_problem
from hyperlearn.rundir import ModalityState
from hyperlearn.start import initial_states, random_states
from hyperlearn.trainer import ModalityTrainer
from hyperlearn.warm_start import (
    BASE_ROWS,
    IncompatibleParent,
    ParentModality,
    ParentModel,
    anchor_for,
    anchors_for,
    encoder_for,
    warm_start,
)

CONFIG = TrainingConfig(rank=4, init="als", init_iterations=5, diffusion_steps=2, conv_width=8, lstm_width=8,
                        warm_fit_steps=25, device="cpu")
#: No fitting steps: for the tests about which rows and weights are taken from the parent.
UNFITTED = CONFIG.replace(warm_fit_steps=0)
NEW_USERS = 20


@pytest.fixture(scope="module")
def problem(planted_run) -> Problem:
    return load_problem(planted_run)


@pytest.fixture(scope="module")
def keys(problem) -> dict[str, np.ndarray]:
    return {m: np.array([f"{m}{i}" for i in range(n)], dtype=object) for m, n in problem.sizes.items()}


@pytest.fixture(scope="module")
def fitted(problem) -> dict[str, ModalityState]:
    """What a parent learned: the ALS start of the ratings (good item rows to fit new users against)."""
    return initial_states(problem, CONFIG)


def _parent(fitted, keys, *, modalities=("user", "item"), new_users=NEW_USERS, weights=None) -> ParentModel:
    """A parent that knew every user but the last `new_users`, the items, and no tags (tags are new)."""
    rows = {"user": len(keys["user"]) - new_users, "item": len(keys["item"])}
    return ParentModel(
        version="20260101T000000000000Z",
        rank=CONFIG.rank,
        modalities={
            m: ParentModality(
                keys=keys[m][: rows[m]],
                embeddings=fitted[m].factor[: rows[m]].copy(),
                biases={"rating": fitted[m].biases["rating"][: rows[m]].copy()},
                weights=None if weights is None else weights.get(m),
            )
            for m in modalities
        },
    )


@pytest.fixture(scope="module")
def started(problem, keys, fitted):
    return warm_start(_parent(fitted, keys), problem, keys, CONFIG)


def test_known_entities_keep_their_rows_and_biases_and_new_ones_are_fitted(problem, keys, fitted, started):
    parent, start = _parent(fitted, keys), started
    old_users = len(keys["user"]) - NEW_USERS
    np.testing.assert_array_equal(start.states["user"].factor[:old_users], parent.modalities["user"].embeddings)
    np.testing.assert_array_equal(start.states["item"].factor, parent.modalities["item"].embeddings)
    np.testing.assert_array_equal(start.states["user"].biases["rating"][:old_users],
                                  parent.modalities["user"].biases["rating"])
    assert set(start.warm_started) == {"user", "item"}
    assert start.new == ("tag",)
    assert start.parent == parent.version and start.encoders == {}

    # the new users' rows are fitted to their ratings against the frozen items: far better than their random start
    rating = problem.primary_relation()
    new_entries = rating.train.coords[0] >= old_users
    only_new = Relation(rating.meta, {"train": type(rating.train)(rating.train.coords[:, new_entries],
                                                                  rating.train.values[new_entries])})
    cold = random_states(problem, CONFIG)
    random_rows = {**start.states, "user": ModalityState(cold["user"].factor, cold["user"].biases)}
    fitted_rmse = evaluate(only_new, start.states, "train")["train/rating/rmse"]
    random_rmse = evaluate(only_new, random_rows, "train")["train/rating/rmse"]
    assert fitted_rmse < 0.7 * random_rmse
    # the new modality moved away from its random start (fitted to the taggings against frozen users and items)
    assert np.abs(start.states["tag"].factor - cold["tag"].factor).max() > 1e-3


def test_warm_start_is_deterministic(problem, keys, fitted, started):
    first, second = started, warm_start(_parent(fitted, keys), problem, keys, CONFIG)
    for m in problem.modalities:
        np.testing.assert_array_equal(first.states[m].factor, second.states[m].factor)
        for relation, bias in first.states[m].biases.items():
            np.testing.assert_array_equal(bias, second.states[m].biases[relation])


def test_an_unchanged_modality_resumes_its_encoder_and_starts_at_the_parents_embeddings(problem, keys, fitted):
    encoder = encoder_for(problem, "item", CONFIG)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for weight in encoder.parameters():  # a trained encoder: not the identity a fresh one is
            weight.copy_(0.05 * torch.randn(weight.shape, generator=generator))
    rows = fitted["item"].factor
    laplacian = JointTrainers(problem, UNFITTED).models["item"].rescaled
    with torch.no_grad():
        embeddings = encoder(laplacian, torch.as_tensor(rows)).numpy()
    weights = {"item": {BASE_ROWS: rows, **{f"encoder.{k}": v.numpy() for k, v in encoder.state_dict().items()}}}
    parent = _parent(fitted, keys, weights=weights)
    parent.modalities["item"] = dataclasses.replace(parent.modalities["item"], embeddings=embeddings)

    start = warm_start(parent, problem, keys, UNFITTED)
    assert set(start.encoders) == {"item"}, "users gained entities, so their encoder starts fresh"
    np.testing.assert_array_equal(start.states["item"].factor, rows)
    round_zero = JointTrainers(problem, UNFITTED, start).start()
    np.testing.assert_allclose(round_zero["item"].factor, embeddings, atol=1e-5)
    old_users = len(keys["user"]) - NEW_USERS
    np.testing.assert_allclose(round_zero["user"].factor[:old_users], fitted["user"].factor[:old_users], atol=1e-6)


def test_an_encoder_of_another_shape_is_not_resumed(problem, keys, fitted):
    weights = {"item": {BASE_ROWS: fitted["item"].factor, "encoder.out.weight": np.zeros((4, 3), np.float32)}}
    start = warm_start(_parent(fitted, keys, weights=weights), problem, keys, UNFITTED)
    assert start.encoders == {}


def test_a_parent_of_another_rank_or_other_ids_or_no_shared_modality_is_incompatible(problem, keys, fitted):
    with pytest.raises(IncompatibleParent, match="rank 4, this run rank 6"):
        warm_start(_parent(fitted, keys), problem, keys, CONFIG.replace(rank=6))
    shuffled = {**keys, "item": keys["item"][::-1].copy()}
    with pytest.raises(IncompatibleParent, match="entity ids of modality 'item' do not match"):
        warm_start(_parent(fitted, keys), problem, shuffled, CONFIG)
    with pytest.raises(IncompatibleParent, match="shares no modality"):
        warm_start(_parent(fitted, keys, modalities=()), problem, keys, CONFIG)


def test_the_anchor_weighs_each_parent_row_as_its_entries_weigh_in_the_data_terms(problem, keys, started):
    target = started.anchors["user"]
    assert target.shape[0] == len(keys["user"]) - NEW_USERS and "tag" not in started.anchors  # tags are new
    anchor = anchor_for(problem.relations, "user", target, CONFIG.replace(warm_anchor=3.0))
    expected = np.zeros(target.shape[0])
    for relation in problem.relations_of("user"):
        coords = relation.train.coords.numpy()
        for axis in relation.meta.axes_of("user"):
            rows = coords[axis][coords[axis] < target.shape[0]]
            expected += relation.meta.weight * np.bincount(rows, minlength=target.shape[0]) / relation.train.nnz
    np.testing.assert_allclose(anchor.row_weights.numpy(), 3.0 * expected, rtol=1e-6)
    np.testing.assert_array_equal(anchor.target.numpy(), target)
    assert anchors_for(started.anchors, problem.relations, CONFIG.replace(warm_anchor=0.0)) == {}


#: Fast training, so that two rounds move the rows far enough to tell an anchored run from a free one.
MOVING = CONFIG.replace(learning_rate=0.05, local_steps=10, encoder="none")


def _drift_from_parent(states: dict[str, ModalityState], start, modality: str) -> float:
    target = start.anchors[modality]
    return float(np.linalg.norm(states[modality].factor[: target.shape[0]] - target))


def test_joint_training_keeps_anchored_rows_nearer_the_parent(problem, keys, fitted):
    start = warm_start(_parent(fitted, keys), problem, keys, MOVING.replace(warm_fit_steps=0))
    drifts = {}
    for weight in (0.0, 10.0):
        trainers = JointTrainers(problem, MOVING.replace(warm_anchor=weight), start)
        states = trainers.round(trainers.round(trainers.start()))
        drifts[weight] = {m: _drift_from_parent(states, start, m) for m in ("user", "item")}
    for modality in ("user", "item"):
        assert drifts[10.0][modality] < 0.5 * drifts[0.0][modality]


def test_a_distributed_trainer_is_anchored_to_its_modalitys_parent_rows(planted_run, problem, keys, fitted):
    start = warm_start(_parent(fitted, keys), problem, keys, MOVING.replace(warm_fit_steps=0))
    share = planted_run.read_trainer_share("user", ("train",))
    drifts = {}
    for weight in (0.0, 10.0):
        trainer = ModalityTrainer(share, MOVING.replace(warm_anchor=weight), start.states["user"],
                                  anchor=start.anchors["user"])
        states = dict(start.states)
        for _ in range(2):
            states["user"] = trainer.update(states)
        drifts[weight] = _drift_from_parent(states, start, "user")
    assert drifts[10.0] < 0.5 * drifts[0.0]
