"""Training curves as a PNG: how the losses and validation metrics moved, per round and against wall time.

Plotting against rounds compares convergence; plotting against wall seconds compares cost — the two views the
paper's claims about distributed training are judged on (docs/method.md §3).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_X_AXES = (("round", "round"), ("seconds", "wall time (s)"))


def plot_training_curves(history: list[dict], path: Path) -> Path:
    """Draw one row per curve (`train_loss`, `validation_loss` — the early-stopping criterion — then each
    `validation/...` metric), against rounds and seconds.

    `history` holds one dict per round with keys "round", "seconds" (cumulative wall time) and the metrics;
    a metric missing or NaN in some rounds is drawn over the rounds that have it. Written with the Agg canvas
    on a standalone Figure (no pyplot state), so it is safe from worker threads. Returns `path`.
    """
    if not history:
        raise ValueError("plot_training_curves: the history is empty, there is nothing to plot")
    metrics = sorted({key for row in history for key in row if key.startswith("validation/")})
    curves = [key for key in ("train_loss", "validation_loss") if any(key in row for row in history)] + metrics
    figure = Figure(figsize=(10, 3 * len(curves)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(curves), len(_X_AXES), squeeze=False)
    for row_axes, curve in zip(axes, curves, strict=True):
        points = [row for row in history if _is_number(row.get(curve))]
        for ax, (x_key, x_label) in zip(row_axes, _X_AXES, strict=True):
            ax.plot([row[x_key] for row in points], [row[curve] for row in points], marker=".")
            ax.set_xlabel(x_label)
            ax.set_ylabel(curve)
            ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)
