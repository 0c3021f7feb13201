"""What a training run returns and how its best state is checkpointed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hyperlearn.model import ModalityState


@dataclass
class TrainResult:
    """Best-on-validation state per modality, the per-round history, and held-out metrics."""

    states: dict[str, ModalityState]
    history: list[dict[str, float]]
    metrics: dict[str, float]
    mode: str
    timings: dict[str, float] = field(default_factory=dict)  # set-up seconds: loading + ALS start, trainer start

    @property
    def factors(self) -> dict[str, np.ndarray]:
        """The embeddings: modality → n×R matrix (row = entity id)."""
        return {name: state.factor for name, state in self.states.items()}


def save_checkpoint(path: Path, states: dict[str, ModalityState], round_number: int) -> None:
    """Write factors and biases of every modality to one .npz, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"round": np.asarray(round_number)}
    for name, state in states.items():
        arrays[f"factor/{name}"] = state.factor
        arrays.update({f"bias/{name}/{relation}": b for relation, b in state.biases.items()})
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(temporary, path)


def load_checkpoint(path: Path) -> tuple[dict[str, ModalityState], int]:
    """Read a checkpoint written by `save_checkpoint`."""
    states: dict[str, ModalityState] = {}
    with np.load(Path(path)) as stored:
        for key in stored.files:
            kind, _, rest = key.partition("/")
            if kind == "factor":
                states.setdefault(rest, ModalityState(stored[key], {})).factor = stored[key]
            elif kind == "bias":
                name, _, relation = rest.partition("/")
                states.setdefault(name, ModalityState(np.empty(0), {})).biases[relation] = stored[key]
        return states, int(stored["round"])
