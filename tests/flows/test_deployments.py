"""The retraining deployment, built (not served) and checked; serving's refusal without a real server."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.events import DeploymentEventTrigger
from prefect.settings import PREFECT_API_URL, temporary_settings

from hyperlearn.flows.deployments import ServerUnavailable, build_deployment, require_server


def test_builds_a_deployment_of_the_training_flow_with_its_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deployment = build_deployment(
        "data/demo.yaml", "out", "demo", cron="0 3 * * *", name="nightly", mode="joint", overrides={"rank": 16}
    )
    assert deployment.name == "nightly"
    assert deployment.flow_name == "hyperlearn-train-embeddings"
    assert deployment.entrypoint == "hyperlearn.flows.hyperlearn_flow.train_embeddings"
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
        "rmm_pool_size": None,
    }


def test_the_cron_schedule_has_a_timezone(tmp_path):
    deployment = build_deployment(tmp_path / "demo.yaml", tmp_path / "out", "demo", cron="0 3 * * *",
                                  timezone="Europe/Paris")
    [schedule] = deployment.schedules
    assert isinstance(schedule.schedule, CronSchedule)
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 3 * * *", "Europe/Paris")
    assert schedule.active
    [default] = build_deployment(tmp_path / "demo.yaml", tmp_path / "out", "demo", cron="0 3 * * *").schedules
    assert default.schedule.timezone == "UTC"


def test_a_change_event_for_the_dataset_triggers_it_one_run_at_a_time_queued(tmp_path):
    deployment = build_deployment(tmp_path / "demo.yaml", tmp_path / "out", "demo")
    assert deployment.name == "demo"
    assert not deployment.schedules
    [trigger] = deployment.triggers
    assert isinstance(trigger, DeploymentEventTrigger)
    assert trigger.expect == {"hyperlearn.dataset.changed"}
    assert trigger.match.root == {"prefect.resource.id": "hyperlearn.dataset.demo"}
    assert trigger.threshold == 1
    assert deployment.concurrency_limit == 1
    assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE


@pytest.mark.parametrize(("cron", "timezone", "message"), [("every night", "UTC", "cron"),
                                                            ("0 3 * * *", "Mars/Olympus", "Invalid timezone")])
def test_an_invalid_cron_expression_or_timezone_is_rejected(tmp_path, cron, timezone, message):
    with pytest.raises(ValueError, match=message):
        build_deployment(tmp_path / "demo.yaml", tmp_path / "out", "demo", cron=cron, timezone=timezone)


def test_serving_without_a_server_address_refuses_saying_how_to_start_one():
    with temporary_settings(updates={PREFECT_API_URL: None}):
        with pytest.raises(ServerUnavailable) as refused:
            require_server()
    assert "PREFECT_API_URL is not set" in str(refused.value)
    assert "prefect server start" in str(refused.value)


def test_serving_against_a_server_that_does_not_answer_refuses(unused_loopback_url):
    with temporary_settings(updates={PREFECT_API_URL: unused_loopback_url}):
        with pytest.raises(ServerUnavailable, match=f"{unused_loopback_url} does not answer.*prefect server start"):
            require_server()


@pytest.fixture
def unused_loopback_url() -> str:
    from hyperlearn.flows.temporary_server import _free_port

    return f"http://127.0.0.1:{_free_port()}/api"


def test_the_command_refuses_before_serving(tmp_path, capsys, monkeypatch, small_demo_spec: Path):
    from hyperlearn.flows.cli import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        with pytest.raises(SystemExit) as exit_info:
            main(["schedule", str(small_demo_spec), "--on-change", "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    assert "hyperlearn schedule: error:" in capsys.readouterr().err


def test_a_scheduled_run_keeps_the_existing_cluster_it_was_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deployment = build_deployment("demo.yaml", "out", "demo", scheduler_file="cluster/scheduler.json")
    assert deployment.parameters["scheduler_file"] == str(tmp_path / "cluster" / "scheduler.json")
    deployment = build_deployment("demo.yaml", "out", "demo", scheduler="tcp://10.0.0.7:8786")
    assert deployment.parameters["scheduler"] == "tcp://10.0.0.7:8786"
