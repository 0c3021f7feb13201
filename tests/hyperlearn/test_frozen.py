"""A trainer's round-constant part of a regression gives the loss and gradients of recomputing everything."""

import pytest
import torch

from hyperlearn.frozen import freeze
from hyperlearn.losses import relation_loss
from hyperlearn.problem import Observations, Relation
from hyperlearn.rundir import RelationMeta

SIZES = {"a": 7, "b": 5, "c": 6, "d": 4}


def _relation(modalities: tuple[str, ...], structure: str = "cp", seed: int = 0) -> Relation:
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(SIZES[m] for m in modalities)
    coords = torch.stack([torch.randint(n, (40,), generator=generator) for n in shape])
    values = torch.randn(40, generator=generator) + 3.0
    meta = RelationMeta("r", modalities, shape, "squared", 0.7, structure=structure)
    return Relation(meta=meta, splits={"train": Observations(coords, values)})


def _parameters(relation: Relation, seed: int = 1) -> tuple[dict, dict]:
    generator = torch.Generator().manual_seed(seed)
    names = dict.fromkeys(relation.meta.modalities)
    factors = {m: torch.randn(SIZES[m], 6, generator=generator, requires_grad=True) for m in names}
    biases = {m: torch.randn(SIZES[m], generator=generator, requires_grad=True) for m in names}
    return factors, biases


def _loss_and_gradients(relation, own, factors, biases, free, frozen_part):
    names = relation.meta.modalities
    loss = relation_loss(
        relation, [factors[m] for m in names], [biases[m] for m in names], relation.train_mean(), 0.05,
        torch.Generator().manual_seed(0), free, frozen_part,
    )
    factor_grad, bias_grad = torch.autograd.grad(loss, [factors[own], biases[own]])
    return loss.detach(), factor_grad, bias_grad


@pytest.mark.parametrize(
    "modalities, structure, own",
    [
        (("a", "b", "c"), "cp", "a"),
        (("a", "b", "c", "d"), "cp", "c"),
        (("a", "b", "c", "d"), "pairwise", "b"),  # blocks without the own axis become part of the constant
        (("a", "b", "a", "c"), "cp", "a"),  # the own modality on two axes
    ],
)
def test_frozen_part_gives_the_same_loss_and_gradients(modalities, structure, own):
    relation = _relation(modalities, structure)
    factors, biases = _parameters(relation)
    names = relation.meta.modalities
    free = [m != "b" for m in names]  # one projected modality: its factor is left out of the ridge
    expected = _loss_and_gradients(relation, own, factors, biases, free, None)
    part = freeze(
        relation, own, [None if m == own else factors[m].detach() for m in names],
        [None if m == own else biases[m].detach() for m in names], free,
    )
    assert part is not None
    actual = _loss_and_gradients(relation, own, factors, biases, free, part)
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_frozen_part_holds_no_graph_and_changes_with_the_own_factor_only():
    relation = _relation(("a", "b", "c"))
    factors, biases = _parameters(relation)
    part = freeze(relation, "a", [None, factors["b"], factors["c"]], [None, biases["b"], biases["c"]])
    assert not part.constant.requires_grad and not part.blocks[0].product.requires_grad
    with torch.no_grad():
        factors["a"].mul_(2.0)
    moved = _loss_and_gradients(relation, "a", factors, biases, None, None)
    reused = _loss_and_gradients(relation, "a", factors, biases, None, part)
    for got, want in zip(reused, moved):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "modalities, loss",
    [(("a", "b"), "squared"), (("a", "b", "c"), "bpr"), (("a", "a", "b"), "squared")],
)
def test_nothing_is_frozen_where_no_product_would_be_reused(modalities, loss):
    """A matrix (one frozen axis: keeps the sampled product), relations of observed tuples (new negatives every
    step), and an order-3 relation with the own modality on two axes (again one frozen axis)."""
    relation = _relation(modalities)
    relation = Relation(meta=RelationMeta("r", modalities, relation.meta.shape, loss), splits=relation.splits)
    factors, biases = _parameters(relation)
    names = relation.meta.modalities
    own = names[0]
    assert freeze(relation, own, [None if m == own else factors[m] for m in names],
                  [None if m == own else biases[m] for m in names]) is None


def test_a_trainers_update_with_the_frozen_part_matches_recomputing_every_step(tmp_path, monkeypatch):
    """The trainer's local steps on an order-3 regression end where steps recomputing the whole product end."""
    from hyperlearn.config import TrainingConfig
    from hyperlearn.problem import load_problem
    from hyperlearn.rundir import Entries, RunDir
    from hyperlearn.start import initial_states
    from hyperlearn.trainer import ModalityTrainer

    relation = _relation(("a", "b", "c"))
    run = RunDir(tmp_path / "run")
    entries = Entries(relation.train.coords.numpy(), relation.train.values.numpy(), relation.meta.shape)
    run.write_relation(relation.meta, {"train": entries, "validation": entries, "test": entries})
    config = TrainingConfig(rank=4, conv_width=4, lstm_width=4, diffusion_steps=2, local_steps=3, device="cpu")
    states = initial_states(load_problem(run), config)

    def updated() -> dict:
        trainer = ModalityTrainer(run.read_trainer_share("b", ("train",)), config, states["b"], threads=1)
        return trainer.update(states)

    reused = updated()
    monkeypatch.setattr(ModalityTrainer, "_frozen", lambda self, factors, biases: {})
    recomputed = updated()
    torch.testing.assert_close(torch.as_tensor(reused.factor), torch.as_tensor(recomputed.factor), rtol=1e-4, atol=1e-5)
    for name, bias in reused.biases.items():
        torch.testing.assert_close(torch.as_tensor(bias), torch.as_tensor(recomputed.biases[name]), rtol=1e-4, atol=1e-5)
