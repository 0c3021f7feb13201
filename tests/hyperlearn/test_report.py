"""Training-curve plots."""

from __future__ import annotations

import math

import matplotlib.image
import pytest

from hyperlearn.report import plot_training_curves


def _history(rounds: int) -> list[dict]:
    return [
        {
            "round": r,
            "seconds": 0.5 * (r + 1),
            "train_loss": 1.0 / (r + 1),
            "validation/rating/rmse": 1.2 - 0.01 * r,
            # a metric evaluated every other round, NaN in between
            "validation/tag/auc": 0.5 + 0.01 * r if r % 2 == 0 else math.nan,
        }
        for r in range(rounds)
    ]


def test_writes_a_png_with_one_row_per_curve(tmp_path):
    path = plot_training_curves(_history(6), tmp_path / "sub" / "report.png")
    assert path == tmp_path / "sub" / "report.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert (width, height) == (1000, 900)  # 10 x 3 inches per row, 3 rows (train loss + 2 metrics), 100 dpi


def test_a_single_round_plots(tmp_path):
    assert plot_training_curves(_history(1), tmp_path / "one.png").stat().st_size > 0


def test_an_empty_history_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_training_curves([], tmp_path / "none.png")
