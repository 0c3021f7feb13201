"""The scheduled-retraining deployment, built (not served) and checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.schemas.schedules import CronSchedule

from hyperlearn.flows.deployments import build_deployment


def test_builds_a_cron_deployment_of_the_training_flow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deployment = build_deployment(
        "data/demo.yaml", "out", "0 3 * * *", name="nightly", mode="joint", overrides={"rank": 16}
    )
    assert deployment.name == "nightly"
    assert deployment.flow_name == "hyperlearn-train-embeddings"
    assert deployment.entrypoint == "hyperlearn.flows.hyperlearn_flow.train_embeddings"
    [schedule] = deployment.schedules
    assert isinstance(schedule.schedule, CronSchedule)
    assert schedule.schedule.cron == "0 3 * * *"
    assert schedule.active
    assert deployment.parameters == {
        "spec_path": str(tmp_path / "data" / "demo.yaml"),
        "out": str(tmp_path / "out"),
        "data_root": None,
        "mode": "joint",
        "overrides": {"rank": 16},
        "allow_roots": None,
        "wait": False,
        "scheduler": None,
        "scheduler_file": None,
        "dashboard": False,
    }
    assert Path(deployment.parameters["spec_path"]).is_absolute()


def test_a_scheduled_run_keeps_the_existing_cluster_it_was_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deployment = build_deployment("demo.yaml", "out", "0 3 * * *", scheduler_file="cluster/scheduler.json")
    assert deployment.parameters["scheduler_file"] == str(tmp_path / "cluster" / "scheduler.json")
    deployment = build_deployment("demo.yaml", "out", "0 3 * * *", scheduler="tcp://10.0.0.7:8786")
    assert deployment.parameters["scheduler"] == "tcp://10.0.0.7:8786"


def test_an_invalid_cron_expression_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="cron"):
        build_deployment(tmp_path / "demo.yaml", tmp_path / "out", "every night")
