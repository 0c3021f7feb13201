"""The trainers' Adam: torch.optim.Adam(fused=True)'s steps to the bit, its state saved and restored, and no
import of torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from hyperlearn.adam import Adam


def _parameters() -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(1)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in ((50, 8), (8,), (3,))]


def _loss(parameters: list[torch.Tensor], step: int) -> torch.Tensor:
    """Every third step only the first parameter gets a gradient: the others' states start later."""
    first, second, third = parameters
    if step % 3 == 0:
        return (first**2).sum()
    return (first.sin().sum() * second.sum()) ** 2 + (third**3).sum()


def _groups(parameters: list[torch.nn.Parameter]) -> list[dict]:
    return [{"params": parameters[:2], "lr": 0.01}, {"params": parameters[2:], "lr": 0.001}]


def _train(optimizer, parameters: list[torch.nn.Parameter], steps: range) -> None:
    for step in steps:
        for parameter in parameters:
            parameter.grad = None
        _loss(parameters, step).backward()
        optimizer.step()


def test_steps_equal_torch_fused_adam_to_the_bit_and_so_does_the_saved_state():
    reference_parameters, parameters = _parameters(), _parameters()
    reference = torch.optim.Adam(_groups(reference_parameters), fused=True)
    ours = Adam(_groups(parameters))
    _train(reference, reference_parameters, range(20))
    _train(ours, parameters, range(20))
    assert all(torch.equal(a, b) for a, b in zip(reference_parameters, parameters))
    expected = {
        f"{index}/{name}": np.asarray(value)
        for index, state in reference.state_dict()["state"].items()
        for name, value in state.items()
    }
    saved = ours.state_arrays()
    assert sorted(saved) == sorted(expected)
    for key, value in expected.items():
        assert saved[key].dtype == value.dtype and np.array_equal(saved[key], value), key


def test_a_restored_state_carries_on_exactly_where_the_saved_one_was():
    parameters = _parameters()
    uninterrupted = Adam(_groups(parameters))
    _train(uninterrupted, parameters, range(12))

    restarted_parameters = _parameters()
    first = Adam(_groups(restarted_parameters))
    _train(first, restarted_parameters, range(5))
    saved = first.state_arrays()
    second = Adam(_groups(restarted_parameters))
    second.load_state_arrays(saved)
    _train(second, restarted_parameters, range(5, 12))
    assert all(torch.equal(a, b) for a, b in zip(parameters, restarted_parameters))


def test_stepping_does_not_import_the_compiler():
    code = (
        "import sys, torch\n"
        "from hyperlearn.adam import Adam\n"
        "p = torch.nn.Parameter(torch.ones(3))\n"
        "o = Adam([{'params': [p], 'lr': 0.1}])\n"
        "(p ** 2).sum().backward(); o.step()\n"
        "assert not torch.equal(p.detach(), torch.ones(3))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
