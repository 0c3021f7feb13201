"""The quality gate: `latest` moves to a new version only when it is not worse than its parent.

The spec's `publish: {gate: {metric, tolerance}}` names a validation metric of the new version's metrics.json
(`validation/<relation>/<name>`, or just `<name>` for the spec's first relation) and a relative tolerance: the
new value may be worse than the parent's by at most `tolerance` × |parent's value|. The parent is the version
`latest` points at when the run publishes (whatever the run started from: the gate protects `latest`).

The default gate is on, on the first relation's headline validation metric (RMSE of a regression, NDCG@k of a
ranked relation, else its held-out loss) with tolerance 0.005 (half a percent): a version worse than that is
published but gated — kept, with `latest` left on the parent — because a scheduled retraining must never
silently replace a better model (issue 12: `latest` once moved to a model with test RMSE 0.3984 over one with
0.3928, 1.4 % worse), while the noise of retraining on a little more data, or the small trade a new modality
makes on the first relation (0.3 % RMSE on the demo), does not hold every version back. `publish: {gate: false}`
turns it off. The direction of each metric is known by its name. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

#: Metric names (the part after the relation) where lower is better; the ranking metrics are higher-is-better.
LOWER_IS_BETTER_SUFFIXES = ("rmse", "mae", "_loss")
HIGHER_IS_BETTER_PREFIXES = ("ndcg@", "recall@", "hits@", "mrr")
#: How much worse than the parent a version may be, as a fraction of the parent's value, and still move latest.
DEFAULT_TOLERANCE = 0.005


@dataclass(frozen=True)
class GateSpec:
    """A resolved gate: the full metric key and the relative tolerance."""

    metric: str
    tolerance: float = DEFAULT_TOLERANCE


@dataclass(frozen=True)
class GateOutcome:
    """What the gate decided for one version: the metric, its direction, the new and parent values, the
    tolerance, and whether `latest` moves (`passed`). `gated` is its negation, as the manifest says it."""

    metric: str
    higher_is_better: bool
    value: float | None
    parent_value: float | None
    tolerance: float
    parent: str | None
    passed: bool
    reason: str

    @property
    def gated(self) -> bool:
        return not self.passed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gated": self.gated}


def higher_is_better(metric: str) -> bool:
    """The direction of a validation metric, from its name; ValueError for a name the gate cannot judge."""
    name = metric.rsplit("/", 1)[-1]
    if name.startswith(HIGHER_IS_BETTER_PREFIXES):
        return True
    if name.endswith(LOWER_IS_BETTER_SUFFIXES):
        return False
    raise ValueError(
        f"cannot tell whether a higher {name!r} is better; gate on rmse, mae, <loss>_loss, ndcg@k, recall@k, "
        "hits@k or mrr"
    )


def judge(
    gate: GateSpec | None, metrics: Mapping[str, float | None], parent_metrics: Mapping[str, float | None] | None,
    parent: str | None,
) -> GateOutcome | None:
    """The gate's decision for a version with validation `metrics` whose parent version `parent` had
    `parent_metrics` (None: no parent, so nothing to compare: it passes); None when there is no gate."""
    if gate is None:
        return None
    higher = higher_is_better(gate.metric)
    value = metrics.get(gate.metric)
    parent_value = None if parent_metrics is None else parent_metrics.get(gate.metric)

    def outcome(passed: bool, reason: str) -> GateOutcome:
        return GateOutcome(gate.metric, higher, value, parent_value, gate.tolerance, parent, passed, reason)

    if parent is None or parent_metrics is None:
        return outcome(True, "no parent version to compare with")
    if parent_value is None:
        return outcome(True, f"the parent {parent} has no {gate.metric} to compare with")
    if value is None:
        return outcome(False, f"this version has no {gate.metric} (the parent's was {parent_value:.4f})")
    worse_by = (parent_value - value) if higher else (value - parent_value)
    verdict = (f"{gate.metric} {value:.4f} against the parent's {parent_value:.4f} (tolerance {gate.tolerance:g} of "
               "it)")
    if worse_by > gate.tolerance * abs(parent_value):
        return outcome(False, f"worse: {verdict}")
    return outcome(True, f"not worse: {verdict}")
