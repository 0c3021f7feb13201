"""The Prefect artifacts of a published version, shown on its flow run in the UI: the metrics table, a link to
the version's folder, and the training report image.

An image artifact holds a URL the UI puts in an <img>; a browser will not load a file:// image into an http
page, so the report is embedded as a data: URL of a copy reduced to a 64-colour palette (the full-colour
1000×7500 report of the demo is 0.95 MB, the copy 0.28 MB, which the server's database keeps per run); the
link artifact carries the folder's file:// URL, where the full report is.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

from PIL import Image
from prefect.artifacts import create_image_artifact, create_link_artifact, create_table_artifact

REPORT_COLOURS = 64


def artifact_key(dataset: str, what: str) -> str:
    """A key Prefect accepts (lowercase letters, digits, dashes) naming `what` of `dataset`; the UI lists the
    versions of a key's artifact over time."""
    return re.sub(r"[^a-z0-9]+", "-", f"{dataset}-{what}".lower()).strip("-")


def metrics_rows(metrics: dict[str, float | None]) -> list[dict[str, Any]]:
    """The metrics as table rows, sorted by name; a metric that was undefined stays None ("n/a" in the UI)."""
    return [{"metric": name, "value": metrics[name]} for name in sorted(metrics)]


def report_data_url(report: Path) -> str:
    """The report PNG, reduced to REPORT_COLOURS colours, as a data: URL."""
    buffer = io.BytesIO()
    with Image.open(report) as image:
        image.convert("RGB").quantize(REPORT_COLOURS).save(buffer, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def create_version_artifacts(dataset: str, version: str, published: Path, metrics: dict[str, float | None]) -> None:
    """Attach the metrics table, the link to the version and the report image to the current flow run."""
    about = f"{dataset} version {version}"
    create_table_artifact(metrics_rows(metrics), key=artifact_key(dataset, "metrics"), description=f"Metrics of {about}")
    create_link_artifact(
        published.resolve().as_uri(), link_text=str(published), key=artifact_key(dataset, "version"),
        description=f"The published folder of {about}",
    )
    report = published / "report.png"
    if report.is_file():
        create_image_artifact(report_data_url(report), key=artifact_key(dataset, "report"),
                              description=f"Training report of {about}")
