"""The `hyperlearn` command: its grammar, its help, a real run through it, and `hyperlearn ingest` on the driver
and on a `dask scheduler` / `dask worker` cluster (the one tests/flows/test_external_cluster.py starts)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import dask
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client

from hyperlearn.flows.cli import build_parser, main, training_overrides
from hyperlearn.config import TrainingConfig
from hyperlearn.pipeline import ingest as ingest_module
from hyperlearn.workers import cluster_workers
from tests.flows.test_external_cluster import N_WORKERS, external_cluster, external_scheduler_file  # noqa: F401
from tests.pipeline.test_cluster_reading import assert_same_files

ON_THIS_PROCESS = ("sources read and validated in this process (no --scheduler, --scheduler-file or "
                   "DASK_SCHEDULER_ADDRESS)")


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """Every (sub)command path with its parser, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*prefix, name))


def test_every_option_of_every_command_has_help_and_shows_in_it(capsys):
    for path, parser in _commands(build_parser()):
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0
        shown = capsys.readouterr().out
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):  # its sub-commands carry the help
                for choice in action._choices_actions:
                    assert choice.help and choice.dest in shown, f"{' '.join(path)} --help lacks {choice.dest}"
                continue
            assert action.help, f"{' '.join(path)}: {action.dest} has no help"
            for option in action.option_strings:
                assert option in shown, f"{' '.join(path)} --help lacks {option}"


@pytest.mark.parametrize("command", [["run", "spec.yaml"], ["schedule", "spec.yaml", "--cron", "0 3 * * *"]])
def test_every_training_setting_is_an_option_with_the_config_help(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for field in dataclasses.fields(TrainingConfig):
        assert f"--{field.name.replace('_', '-')}" in shown
        assert " ".join(field.metadata["help"].split()) in shown


def test_training_options_parse_into_a_training_config():
    args = build_parser().parse_args(
        [
            "run",
            "spec.yaml",
            "--rank",
            "16",
            "--rounds",
            "30",
            "--learning-rate",
            "0.01",
            "--encoder",
            "chebyshev",
            "--device",
            "cpu",
            "--projected",
            "item",
            "--mode",
            "joint",
            "--data-root",
            "raw",
        ]
    )
    overrides = training_overrides(args)
    assert overrides == {
        "rank": 16, "rounds": 30, "learning_rate": 0.01, "encoder": "chebyshev", "device": "cpu", "projected": ["item"]
    }
    config = TrainingConfig.from_dict(overrides)
    assert (config.rank, config.rounds, config.learning_rate, config.encoder) == (16, 30, 0.01, "chebyshev")
    assert config.projected == ("item",)
    assert (args.spec, args.mode, args.data_root, args.out) == (
        Path("spec.yaml"),
        "joint",
        Path("raw"),
        Path("out"),
    )


@pytest.mark.parametrize(("flag", "refit"), [("--refit", True), ("--no-refit", False)])
def test_a_switch_setting_is_a_flag_pair(flag, refit):
    overrides = training_overrides(build_parser().parse_args(["run", "spec.yaml", flag]))
    assert overrides == {"refit": refit}
    assert TrainingConfig.from_dict(overrides).refit is refit


def test_settings_not_given_are_not_overrides():
    assert training_overrides(build_parser().parse_args(["run", "spec.yaml"])) == {}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--rank", "0"], "--rank: input should be greater than or equal to 1, got int 0"),
        (["--projected", "itme"], "--projected: unknown modality 'itme'; known: user, item, tag"),
        (["--rank", "1.5"], "invalid int value"),
        (["--encoder", "mlp"], "invalid choice"),
        (["--data-root", "/nonexistent"], "/nonexistent"),
    ],
)
def test_mistakes_fail_in_one_line_before_anything_starts(small_demo_spec, arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(small_demo_spec), *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unreadable_spec_fails_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "missing.yaml")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"hyperlearn run: error: {tmp_path / 'missing.yaml'}: cannot read the spec: No such file or directory"
    )


@pytest.mark.prefect
@pytest.mark.slow
def test_run_trains_publishes_and_prints_the_test_metrics(prefect_server, small_demo_spec, tmp_path, capsys):
    code = main(
        [
            "run",
            str(small_demo_spec),
            "--out",
            str(tmp_path / "out"),
            "--mode",
            "joint",
            "--rank",
            "3",
            "--rounds",
            "2",
            "--local-steps",
            "2",
            "--diffusion-steps",
            "2",
            "--init-iterations",
            "2",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    published = tmp_path / "out" / "demo" / (tmp_path / "out" / "demo" / "latest").readlink()
    metrics = json.loads((published / "metrics.json").read_text())
    assert metrics["mode"] == "joint"
    assert "test_rmse" in printed and f"{metrics['metrics']['test_rmse']:.4f}" in printed
    assert f"published:  {published}" in printed


def test_the_mode_choices_are_the_training_modes():
    from hyperlearn.flows.training import MODES

    run = dict(_commands(build_parser()))[("run",)]
    [mode] = [action for action in run._actions if action.dest == "mode"]
    assert tuple(mode.choices) == MODES


def test_spec_schema_prints_the_json_schema(capsys):
    from hyperlearn.pipeline.spec import spec_json_schema

    assert main(["spec-schema"]) == 0
    assert json.loads(capsys.readouterr().out) == spec_json_schema()


def test_data_outside_the_root_needs_allow_root(small_demo_spec, tmp_path, capsys):
    data = small_demo_spec.parent
    moved = tmp_path / "spec.yaml"  # the spec elsewhere, its data paths absolute into the demo folder
    moved.write_text(re.sub(r"path: (\S+?)([,}])", lambda m: f"path: {data / m[1]}{m[2]}", small_demo_spec.read_text()))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(moved), "--rank", "1000000000"])
    assert exit_info.value.code == 2 and "is outside the data root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", str(moved), "--allow-root", str(data), "--rank", "1000000000"])
    assert "--rank: rank 1000000000 needs at least" in capsys.readouterr().err  # the paths passed; the rank did not


@pytest.fixture(scope="module")
def tiny_version(tmp_path_factory):
    """A small version (tests/pipeline/handmade.py) published as `OUT/handmade/latest`."""
    from tests.pipeline.handmade import write_handmade_version

    dataset = tmp_path_factory.mktemp("out") / "handmade"
    write_handmade_version(dataset / "v1")
    (dataset / "latest").symlink_to("v1")
    return dataset / "latest"


def test_the_command_line_imports_nothing_heavy_until_a_command_runs():
    import subprocess
    import sys

    probe = "import sys, hyperlearn.flows.cli; print(sorted(m for m in ('torch', 'pyarrow', 'prefect') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_recommend_writes_the_top_k_of_every_query_row(tiny_version, tmp_path, capsys):
    import pyarrow.parquet as pq

    from hyperlearn.pipeline.published import RECOMMENDATION_SCHEMA, open_version

    queries = tmp_path / "queries.csv"
    queries.write_text("item,user\ni1,u1\ni2,nobody\ni3,u3\ni4,u5\n")
    output = tmp_path / "top.parquet"
    code = main(["recommend", str(tiny_version), "--relation", "tagging", "--target", "tag", "--queries", str(queries),
                 "-k", "3", "--output", str(output)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "unknown query keys: user 1, item 0" in printed and "12 recommendations written" in printed
    table = pq.read_table(output)
    assert table.schema.remove_metadata() == RECOMMENDATION_SCHEMA
    expected = open_version(tiny_version).recommend(
        "tagging", "tag", {"user": ["u1", "nobody", "u3", "u5"], "item": ["i1", "i2", "i3", "i4"]}, k=3
    )
    assert table.to_pylist() == expected.table.to_pylist()


def test_recommend_for_one_given_query_prints_a_table(tiny_version, capsys):
    from hyperlearn.pipeline.published import open_version

    assert main(["recommend", str(tiny_version), "--relation", "rating", "--target", "item", "--given", "user=u1",
                 "-k", "2", "--exclude-seen"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = open_version(tiny_version).recommend("rating", "item", {"user": ["u1"]}, k=2, exclude_seen=True).table
    assert lines[0] == "unknown query keys: user 0"
    assert lines[1].split() == ["rank", "key", "score"]
    assert [line.split()[1] for line in lines[2:]] == expected.column("key").to_pylist()


def test_neighbors_prints_the_nearest_entities(tiny_version, capsys):
    from hyperlearn.pipeline.published import open_version

    assert main(["neighbors", str(tiny_version), "--modality", "item", "--key", "i4", "-k", "3", "--to", "user"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = open_version(tiny_version).neighbors("item", "i4", k=3, to="user")
    assert lines[0].split() == ["rank", "key", "similarity"]
    assert [line.split()[1] for line in lines[1:]] == expected.column("key").to_pylist()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["recommend", "{v}", "--relation", "rating", "--target", "item", "--given", "user"], "AXIS=KEY"),
        (["recommend", "{v}", "--relation", "rating", "--target", "item", "--queries", "q.csv"], "go together"),
        (["recommend", "{v}", "--relation", "nope", "--target", "item", "--given", "user=u1"], "no relation 'nope'"),
        (["neighbors", "{v}", "--modality", "item", "--key", "zzz"], "item: key 'zzz' is not in this version"),
        (["neighbors", "/nonexistent", "--modality", "item", "--key", "i1"], "no scoring.json"),
    ],
)
def test_scoring_mistakes_fail_in_one_line(tiny_version, arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([argument.format(v=tiny_version) for argument in arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1


def test_ingest_prints_the_accounting_into_a_scratch_run(tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.csv").write_text("user,item,rating\nu1,i1,4\nu2,i1,x\nu2,i2,3\nu1,i1,5\n")
    spec = {
        "name": "check",
        "modalities": [{"name": "user"}, {"name": "item"}],
        "relations": [{"name": "rating", "modalities": {"user": "user", "item": "item"}, "value": "rating",
                       "source": {"path": "logs/*.csv"}}],
    }
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))  # JSON is YAML

    with dask.config.set({"scheduler-address": None}):
        assert main(["ingest", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "scratch")]) == 0

    lines = capsys.readouterr().out.splitlines()
    # read, accepted, quarantined, tuples, merged, entries
    assert lines[1].split()[:7] == ["rating", "4", "3", "1", "3", "1", "2"]
    assert any(line.startswith("rating (all): 1 file(s):") and line.endswith("a.csv") for line in lines)
    assert lines[-2:] == [ON_THIS_PROCESS, f"run directory: {tmp_path / 'scratch'}"]
    assert (tmp_path / "scratch" / "quarantine" / "rating.parquet").exists()


def test_ingest_names_a_broken_source(tmp_path, capsys):
    (tmp_path / "ratings.parquet").write_text("user,item\n")
    spec = {
        "name": "check",
        "modalities": [{"name": "user"}, {"name": "item"}],
        "relations": [{"name": "rating", "modalities": {"user": "user", "item": "item"}, "source": {"path": "ratings.parquet"}}],
    }
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    with pytest.raises(SystemExit) as stop:
        main(["ingest", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "scratch")])
    assert stop.value.code == 1
    assert "ratings.parquet: not a Parquet file" in capsys.readouterr().err


BAD_RATING_LINES = {7: "u1,i2", 50_000: ",i3,4", 99_999: "u2,i3,x"}  # a field short, no user, no number
MISSING_CLICK_USERS = (0, 4_999, 16_384, 30_001)  # row groups 0, 0, 3 (piece 0's second batch), 6 (piece 1)


@pytest.fixture
def logs_in_pieces(tmp_path) -> Path:
    """A spec over a 1.3 MB rating CSV with bad lines (two pieces at --memory-limit-mb 32, whose blocks are 1 MiB)
    and a Parquet click log of 8 row groups with null users (two pieces of 4 groups, two batches each)."""
    rng = np.random.default_rng(5)
    lines = [f"u{u},i{i},{r}" for u, i, r in zip(rng.integers(0, 2000, 100_000), rng.integers(0, 500, 100_000),
                                                 rng.integers(1, 6, 100_000))]
    for index, line in BAD_RATING_LINES.items():
        lines[index] = line
    (tmp_path / "ratings.csv").write_text("user,item,rating\n" + "\n".join(lines) + "\n")
    users = [None if row in MISSING_CLICK_USERS else f"u{u}" for row, u in enumerate(rng.integers(0, 2000, 40_000))]
    clicks = pa.table({"user": pa.array(users, pa.string()), "item": rng.integers(0, 500, 40_000)})
    pq.write_table(clicks, tmp_path / "clicks.parquet", row_group_size=5_000)
    spec = {
        "name": "pieces",
        "modalities": [{"name": "user"}, {"name": "item"}],
        "relations": [
            {"name": "rating", "modalities": {"user": "user", "item": "item"}, "value": "rating",
             "source": {"path": "ratings.csv"}},
            {"name": "click", "modalities": {"user": "user", "item": "item"}, "loss": "bpr",
             "source": {"path": "clicks.parquet"}},
        ],
    }
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    return tmp_path / "spec.yaml"


def _ingest_output(spec: Path, out: Path, capsys, *options: str) -> list[str]:
    """`hyperlearn ingest SPEC --out OUT` with 1 MiB blocks; its printed lines, OUT written as "OUT"."""
    assert main(["ingest", str(spec), "--out", str(out), "--memory-limit-mb", "32", *options]) == 0
    return capsys.readouterr().out.replace(str(out), "OUT").splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("naming", ["--scheduler", "--scheduler-file", "DASK_SCHEDULER_ADDRESS"])
def test_ingest_on_an_existing_cluster_writes_what_the_driver_writes_and_leaves_the_cluster_up(
    naming, logs_in_pieces, tmp_path, external_cluster, external_scheduler_file, capsys  # noqa: F811 - fixtures
):
    with dask.config.set({"scheduler-address": None}):
        driver = _ingest_output(logs_in_pieces, tmp_path / "driver", capsys)
    options = {"--scheduler": ["--scheduler", external_cluster],
               "--scheduler-file": ["--scheduler-file", str(external_scheduler_file)],
               "DASK_SCHEDULER_ADDRESS": []}[naming]  # Dask's scheduler-address setting, which that variable sets
    with dask.config.set({"scheduler-address": external_cluster if naming == "DASK_SCHEDULER_ADDRESS" else None}):
        on_cluster = _ingest_output(logs_in_pieces, tmp_path / "cluster", capsys, *options)

    assert on_cluster[:-2] == driver[:-2], "the same accounting table and files"
    assert [line.split()[:4] for line in driver[1:3]] == [["rating", "100,000", "99,997", "3"],
                                                         ["click", "40,000", "39,996", "4"]]
    assert driver[-2] == ON_THIS_PROCESS
    assert on_cluster[-2] == (f"sources read and validated on the workers of the Dask cluster at {external_cluster} "
                              f"({naming}); it is left running")
    assert "quarantine/click.parquet" in assert_same_files(tmp_path / "driver", tmp_path / "cluster")
    with Client(external_cluster) as client:
        assert len(cluster_workers(client)) == N_WORKERS, "the cluster is still up, every worker with it"
        assert not client.who_has(), "ingest released everything it put on the cluster"


@pytest.mark.slow
def test_ingest_says_when_the_clusters_workers_do_not_see_the_sources(
    logs_in_pieces, tmp_path, external_cluster, capsys, monkeypatch, caplog  # noqa: F811 - the imported fixture
):
    # The workers of a cluster on other hosts, without the data: they cannot exist on this one machine.
    monkeypatch.setattr(ingest_module, "sources_unseen", lambda client, sizes: ["worker tcp://w1 cannot read a.csv"])
    with caplog.at_level("WARNING"):
        lines = _ingest_output(logs_in_pieces, tmp_path / "fallback", capsys, "--scheduler", external_cluster)
    assert lines[-2] == ("sources read and validated in this process: the workers of the Dask cluster named by "
                         "--scheduler do not see them as this process does (see the warning above)")
    assert any("worker tcp://w1 cannot read a.csv" in message for message in caplog.messages)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--scheduler-file", "/nonexistent/scheduler.json"], "/nonexistent/scheduler.json does not exist"),
        (["--scheduler", "tcp://a:1", "--scheduler-file", "f.json"], "not allowed with argument"),
    ],
)
def test_ingest_cluster_option_mistakes_fail_in_one_line(tmp_path, arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", str(tmp_path / "spec.yaml"), *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--scheduler", "tcp://127.0.0.1:8786", "--mode", "joint"], "for distributed mode, not joint mode"),
        (["--scheduler", "tcp://127.0.0.1:8786", "--dashboard"], "an existing cluster serves its own"),
        (["--scheduler-file", "/nonexistent/scheduler.json"], "/nonexistent/scheduler.json does not exist"),
        (["--scheduler", "tcp://a:1", "--scheduler-file", "f.json"], "not allowed with argument"),
        (["--rmm-pool-size", "lots"], "RMM pool size 'lots': give bytes"),
        (["--scheduler", "tcp://a:1", "--rmm-pool-size", "0.8"], "--rmm-pool-size is for the cluster a run starts"),
    ],
)
def test_cluster_option_mistakes_fail_in_one_line(small_demo_spec, arguments, message, capsys, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # no temporary server: the check comes first
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(small_demo_spec), *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_rmm_pool_size_reaches_the_flow_as_given(small_demo_spec):
    from hyperlearn.flows.cli import _checked_cluster, build_parser

    parser = build_parser()
    for command in (["run", str(small_demo_spec)], ["schedule", str(small_demo_spec)]):
        args = parser.parse_args([*command, "--rmm-pool-size", "24GB"])
        assert _checked_cluster(parser, args)["rmm_pool_size"] == "24GB"
        assert _checked_cluster(parser, parser.parse_args(command))["rmm_pool_size"] is None
