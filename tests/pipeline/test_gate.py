"""The quality gate: its default metric per first relation, the direction per metric, and its decisions."""

from pathlib import Path

import pytest

from hyperlearn.pipeline.gate import DEFAULT_TOLERANCE, GateSpec, higher_is_better, judge
from hyperlearn.pipeline.spec import SpecError, load_spec

SPEC = """
name: gated
modalities: [{{name: user}}, {{name: item}}, {{name: tag}}]
relations:
  - name: {first}
    modalities: {{user: user, item: item{tag}}}
    {value}
    source: {{path: data.csv}}
  - name: second
    modalities: {{user: user, item: item}}
    value: rating
    source: {{path: data.csv}}
{publish}
"""


def _spec(tmp_path: Path, *, ranked: bool = False, publish: str = "") -> Path:
    (tmp_path / "data.csv").write_text("user,item,tag,rating\nu1,i1,t1,4\n")
    path = tmp_path / "spec.yaml"
    value = "loss: bpr\n    evaluate: {target: tag, k: [5, 20]}" if ranked else "value: rating"
    path.write_text(SPEC.format(first="first", tag=", tag: tag", value=value, publish=publish))
    return path


def test_the_default_gate_is_the_first_relations_headline_with_half_a_percent(tmp_path: Path):
    assert load_spec(_spec(tmp_path)).publish.gate == GateSpec("validation/first/rmse", DEFAULT_TOLERANCE)
    assert DEFAULT_TOLERANCE == 0.005
    assert load_spec(_spec(tmp_path, ranked=True)).publish.gate == GateSpec("validation/first/ndcg@20", 0.005)


def test_the_spec_names_a_metric_short_or_full_or_turns_the_gate_off(tmp_path: Path):
    gate = load_spec(_spec(tmp_path, publish="publish: {gate: {metric: mae, tolerance: 0}}")).publish.gate
    assert gate == GateSpec("validation/first/mae", 0.0)
    full = load_spec(_spec(tmp_path, publish="publish: {gate: {metric: validation/second/rmse}}")).publish.gate
    assert full.metric == "validation/second/rmse"
    assert load_spec(_spec(tmp_path, publish="publish: {gate: false}")).publish.gate is None


@pytest.mark.parametrize(
    ("metric", "message"),
    [("validation/third/rmse", "for a relation of the spec"), ("test/first/rmse", "expected validation/"),
     ("popularity_ndcg@10", "cannot tell whether a higher")],
)
def test_a_gate_on_an_unknown_metric_is_refused_naming_the_key(tmp_path: Path, metric: str, message: str):
    with pytest.raises(SpecError, match=rf"publish\.gate\.metric: .*{message}"):
        load_spec(_spec(tmp_path, publish=f"publish: {{gate: {{metric: {metric}}}}}"))


def test_directions_come_from_the_metric_name():
    assert not higher_is_better("validation/r/rmse") and not higher_is_better("validation/r/bpr_loss")
    assert higher_is_better("validation/r/ndcg@10") and higher_is_better("validation/r/mrr")
    assert higher_is_better("validation/r/hits@3") and higher_is_better("validation/r/recall@5")


def test_a_worse_version_is_gated_and_a_not_worse_one_passes():
    gate = GateSpec("validation/r/rmse", 0.01)
    worse = judge(gate, {"validation/r/rmse": 0.41}, {"validation/r/rmse": 0.40}, "v1")
    assert worse.gated and not worse.passed and worse.value == 0.41 and worse.parent_value == 0.40
    assert "worse: validation/r/rmse 0.4100 against the parent's 0.4000" in worse.reason
    assert worse.to_dict()["gated"] is True
    within = judge(gate, {"validation/r/rmse": 0.4039}, {"validation/r/rmse": 0.40}, "v1")
    assert within.passed
    ranked = GateSpec("validation/r/ndcg@10", 0.0)
    assert judge(ranked, {"validation/r/ndcg@10": 0.30}, {"validation/r/ndcg@10": 0.31}, "v1").gated
    assert judge(ranked, {"validation/r/ndcg@10": 0.32}, {"validation/r/ndcg@10": 0.31}, "v1").passed


def test_without_a_parent_or_its_metric_the_version_passes_and_without_its_own_it_is_gated():
    gate = GateSpec("validation/r/rmse")
    assert judge(gate, {"validation/r/rmse": 9.0}, None, None).passed
    assert judge(gate, {"validation/r/rmse": 9.0}, {}, "v1").passed
    assert judge(gate, {}, {"validation/r/rmse": 0.4}, "v1").gated
    assert judge(None, {}, {}, "v1") is None
