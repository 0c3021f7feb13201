"""What a training run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    resumed_from: dict[str, Any] | None = None  # {"phase": "search" | "refit", "round": N} of a resumed run
    recovered: list[dict[str, Any]] = field(default_factory=list)  # trainers rebuilt after their worker died
    weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # resumable weights of the states

    @property
    def factors(self) -> dict[str, np.ndarray]:
        """The embeddings: modality → n×R matrix (row = entity id)."""
        return {name: state.factor for name, state in self.states.items()}

