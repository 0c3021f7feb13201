"""docker/compose.yaml: valid against the Compose Specification's JSON Schema, and wired as docker/README.md says.

The schema (tests/docker/compose-spec/, source and licence in its README.md) checks the shape of every key; the
tests below check what a schema cannot: cross-references between services, networks and volumes, that only the
UIs are published and only on loopback, that the workers reserve GPUs, and that nothing of ours runs as root.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.docker.docker_files import (
    DOCKER,
    MINIMAL_ENVIRONMENT,
    ROOT,
    MissingVariable,
    dockerfile_instructions,
    interpolate,
    load_compose,
)

SCHEMA = json.loads((Path(__file__).parent / "compose-spec" / "compose-spec.json").read_text())
#: The UIs and the ports they are published on: the Prefect UI and API, the Dask dashboard.
PUBLISHED_UIS = {"prefect-server": 4200, "scheduler": 8787}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(MINIMAL_ENVIRONMENT)


def _schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port, short syntax `IP:HOST:CONTAINER`."""
    published = []
    for entry in service.get("ports", []):
        host_ip, host_port, container_port = str(entry).rsplit(":", 2)
        published.append((host_ip, int(host_port), int(container_port)))
    return published


def _uses_our_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    return isinstance(build, dict) and (DOCKER / build["context"] / build["dockerfile"]).resolve() == (
        DOCKER / "Dockerfile"
    )


def _named_volume(mount: str) -> str | None:
    """The named volume of a short-syntax mount `SOURCE:TARGET[:MODE]`, or None for a bind mount (a path)."""
    source = mount.split(":")[0]
    return None if source.startswith((".", "/", "~")) else source


def _argument_after(arguments: list[str], option: str) -> str:
    return arguments[arguments.index(option) + 1]


def test_the_compose_file_is_valid_against_the_compose_specification(compose):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert _schema_errors(compose) == []


def test_the_schema_check_rejects_a_misspelt_key(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["deploy"]["resources"]["reservation"] = {"devices": []}
    assert any("reservation" in error for error in _schema_errors(broken))


def test_a_first_start_without_a_database_password_stops_naming_it():
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        load_compose({})


def test_every_network_and_named_volume_a_service_uses_is_declared(compose):
    networks, volumes = set(compose["networks"]), set(compose["volumes"])
    for name, service in compose["services"].items():
        assert service.get("networks"), f"{name} is on no declared network"
        assert set(service["networks"]) <= networks, name
        named = {_named_volume(mount) for mount in service.get("volumes", [])} - {None}
        assert named <= volumes, name
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on an unknown service {dependency}"


def test_only_the_uis_are_published_and_only_on_loopback_by_default(compose):
    published = {name: _ports(service) for name, service in compose["services"].items() if service.get("ports")}
    assert published == {
        name: [("127.0.0.1", port, port)] for name, port in PUBLISHED_UIS.items()
    }
    moved = load_compose({**MINIMAL_ENVIRONMENT, "UI_BIND_ADDRESS": "192.0.2.10"})
    assert {_ports(moved["services"][name])[0][0] for name in PUBLISHED_UIS} == {"192.0.2.10"}


def test_everything_else_is_only_on_the_internal_network(compose):
    internal = {name for name, network in compose["networks"].items() if (network or {}).get("internal")}
    assert internal
    for name, service in compose["services"].items():
        if name not in PUBLISHED_UIS:
            assert set(service["networks"]) <= internal, f"{name} is on a network with a route out"
        assert "network_mode" not in service and not service.get("privileged"), name


def test_the_dask_cuda_workers_reserve_gpus_and_join_the_scheduler(compose):
    services = compose["services"]
    workers = {name: s for name, s in services.items() if s.get("entrypoint", [])[:3] == ["dask", "cuda", "worker"]}
    assert workers
    scheduler_port = _argument_after(services["scheduler"]["entrypoint"], "--port")
    for name, worker in workers.items():
        assert worker["entrypoint"][3] == f"tcp://scheduler:{scheduler_port}", name
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d.get("count", d.get("device_ids"))
                   for d in devices), name


def test_the_hyperlearn_service_schedules_runs_on_the_prefect_server_and_the_dask_scheduler(compose):
    services = compose["services"]
    command = services["hyperlearn"]["command"]
    assert command[0] == "schedule"
    scheduler_port = _argument_after(services["scheduler"]["entrypoint"], "--port")
    assert _argument_after(command, "--scheduler") == f"tcp://scheduler:{scheduler_port}"
    api = urlsplit(services["hyperlearn"]["environment"]["PREFECT_API_URL"])
    assert (api.hostname, str(api.port), api.path) == (
        "prefect-server", _argument_after(services["prefect-server"]["entrypoint"], "--port"), "/api"
    )
    database = urlsplit(services["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"])
    assert (database.hostname, database.password) == ("postgres", MINIMAL_ENVIRONMENT["POSTGRES_PASSWORD"])


def test_the_driver_reads_data_read_only_and_publishes_to_the_volume_it_mounts(compose):
    service = compose["services"]["hyperlearn"]
    mounts = {mount.split(":")[1]: mount for mount in service["volumes"]}
    assert mounts[_argument_after(service["command"], "--data-root")].endswith(":ro")
    assert not mounts[_argument_after(service["command"], "--out")].endswith(":ro")
    bound = load_compose({**MINIMAL_ENVIRONMENT, "HYPERLEARN_OUT": "/srv/hyperlearn/out"})
    assert "/srv/hyperlearn/out:/out" in bound["services"]["hyperlearn"]["volumes"]


def test_our_image_is_built_from_the_repository_and_never_runs_as_root(compose):
    ours = {name: s for name, s in compose["services"].items() if _uses_our_image(s)}
    assert set(ours) == {"prefect-server", "scheduler", "worker", "hyperlearn"}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in ours.items():
        assert service["image"] == f"hyperlearn:{version}", name
        assert str(service.get("user", "10001")).split(":")[0] not in ("0", "root"), name
    users = [arguments for instruction, arguments in dockerfile_instructions(DOCKER / "Dockerfile") if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")


def test_every_image_is_pinned_to_a_release(compose):
    images = {service["image"] for service in compose["services"].values()}
    (base,) = [arguments for instruction, arguments in dockerfile_instructions(DOCKER / "Dockerfile")
               if instruction == "FROM"]
    for image in images | {base}:
        name, _, tag = image.partition(":")
        assert re.fullmatch(r"\d+(\.\d+)+(-[\w.]+)*", tag), f"{image} is not pinned to a release"


def test_the_interpolation_follows_the_compose_rules():
    environment = {"SET": "value", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $SET $$SET ${SET:+alt} ${EMPTY:+alt}",
                       environment) == "value d  d value $SET alt "
    with pytest.raises(MissingVariable, match="EMPTY: needed"):
        interpolate({"key": ["${EMPTY:?needed}"]}, environment)


def test_the_serving_service_runs_a_command_line_hyperlearn_accepts():
    from hyperlearn.flows.cli import build_parser

    command = load_compose(MINIMAL_ENVIRONMENT)["services"]["hyperlearn"]["command"]
    arguments = build_parser().parse_args(command)
    assert (arguments.command, arguments.scheduler, str(arguments.out)) == ("schedule", "tcp://scheduler:8786", "/out")


def test_the_rmm_override_adds_a_pool_to_the_workers_command_and_nothing_else(compose):
    """docker/compose.rmm.yaml replaces the worker's entry point (Compose replaces a sequence when merging) by the
    base one plus the RMM options, which `dask cuda worker`'s own command line accepts."""
    from dask_cuda.cli import worker as dask_cuda_worker

    override = interpolate(yaml.safe_load((DOCKER / "compose.rmm.yaml").read_text()), MINIMAL_ENVIRONMENT)
    assert set(override["services"]) == {"worker"} and set(override["services"]["worker"]) == {"entrypoint"}
    merged = copy.deepcopy(compose)
    merged["services"]["worker"]["entrypoint"] = override["services"]["worker"]["entrypoint"]
    assert _schema_errors(merged) == []
    base, entrypoint = compose["services"]["worker"]["entrypoint"], merged["services"]["worker"]["entrypoint"]
    assert entrypoint[: len(base)] == base, "the override repeats the base command line before adding to it"
    options = dask_cuda_worker.make_context("worker", list(entrypoint[3:])).params
    assert options["rmm_pool_size"] == "0.8" and options["rmm_allocator_external_lib_list"] == ["torch"]
    assert options["scheduler"] == "tcp://scheduler:8786" and options["preload"] == ("hyperlearn.trainer",)
