"""What a training run returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hyperlearn.rundir import ModalityState


@dataclass
class TrainResult:
    """Best-on-validation state per modality, the per-round history, and held-out metrics."""

    states: dict[str, ModalityState]
    history: list[dict[str, float]]
    metrics: dict[str, float]
    mode: str
    timings: dict[str, float] = field(default_factory=dict)  # set-up seconds: loading + ALS start, trainer start
    weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # resumable weights of the states

    @property
    def factors(self) -> dict[str, np.ndarray]:
        """The embeddings: modality → n×R matrix (row = entity id)."""
        return {name: state.factor for name, state in self.states.items()}

