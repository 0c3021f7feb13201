"""A guard against the failure that looked healthy: factors that collapsed to zero.

A 3-way product has the all-zero factors as a stationary point; a start or a training run that reaches it
publishes zeros, and every score is then the biases alone, while losses and sampled metrics still look
plausible. The training loop checks the published states against this at the start and at the end.
"""

from __future__ import annotations

import numpy as np

from hyperlearn.rundir import ModalityState

ZERO = 1e-8  # a factor whose largest entry is below this is all zeros in float32 training
SHRINK = 1e-3  # a factor whose norm fell by more than this factor from the start has collapsed


class CollapsedFactorError(RuntimeError):
    """Raised when a modality's published factor has collapsed; the message names the modality."""


def collapsed_modalities(
    states: dict[str, ModalityState], start: dict[str, ModalityState] | None = None
) -> dict[str, str]:
    """Modalities whose factor is all ~0, or (given the `start`) whose Frobenius norm fell below SHRINK times
    its starting norm, each with the reason. Modalities without entities are skipped."""
    found = {}
    for name, state in states.items():
        factor = np.asarray(state.factor, dtype=np.float64)
        if factor.size == 0:
            continue
        largest = float(np.abs(factor).max())
        if not np.isfinite(largest):
            found[name] = "its factor has non-finite entries"
        elif largest < ZERO:
            found[name] = f"every row of its factor is ~0 (largest |entry| {largest:.3g})"
        elif start is not None and name in start:
            before = float(np.linalg.norm(np.asarray(start[name].factor, dtype=np.float64)))
            after = float(np.linalg.norm(factor))
            if before > 0 and after < SHRINK * before:
                found[name] = f"its factor's norm fell from {before:.3g} to {after:.3g}"
    return found


def check_not_collapsed(
    states: dict[str, ModalityState], start: dict[str, ModalityState] | None = None, when: str = ""
) -> None:
    """Raise CollapsedFactorError naming every collapsed modality (see `collapsed_modalities`)."""
    found = collapsed_modalities(states, start)
    if found:
        details = "; ".join(f"modality {name!r}: {reason}" for name, reason in found.items())
        raise CollapsedFactorError(f"collapsed embeddings{' ' + when if when else ''}: {details}")
