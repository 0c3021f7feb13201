"""A trainer's inner state as flat NumPy arrays: what a checkpoint holds so that a killed run, or a trainer
whose worker died, carries on exactly where it was.

A snapshot is `dict[str, np.ndarray]`: module parameters and buffers (`state_dict`), an optimiser's per-parameter
state (`hyperlearn.adam.Adam.state_arrays`; its hyperparameters come from the config, so they are rebuilt, not
stored), and random generators' states. Plain arrays, so checkpoints are `.npz` files read without pickle or
`torch.load`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

Snapshot = dict[str, np.ndarray]


def module_arrays(module: nn.Module) -> Snapshot:
    """Every parameter and buffer of `module`, by its `state_dict` name."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in module.state_dict().items()}


def load_module_arrays(module: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Put `module_arrays` output back into `module` (every name must match)."""
    module.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in arrays.items()}, strict=True)


def generator_array(generator: torch.Generator) -> np.ndarray:
    return generator.get_state().numpy().copy()


def load_generator_array(generator: torch.Generator, array: np.ndarray) -> None:
    generator.set_state(torch.from_numpy(np.array(array, dtype=np.uint8)))


def prefixed(prefix: str, arrays: Mapping[str, np.ndarray]) -> Snapshot:
    """`arrays` with every name under `prefix/`."""
    return {f"{prefix}/{name}": value for name, value in arrays.items()}


def under(prefix: str, arrays: Mapping[str, np.ndarray]) -> Snapshot:
    """The arrays named under `prefix/`, with the prefix taken off."""
    start = f"{prefix}/"
    return {name[len(start):]: value for name, value in arrays.items() if name.startswith(start)}
