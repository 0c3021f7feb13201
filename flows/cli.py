"""The `hyperlearn` command: a thin argparse front over the Prefect flow and the dataset sources.

    hyperlearn run SPEC [--data-root DIR] [--allow-root DIR] [--out DIR] [--mode distributed|joint]
                    [--scheduler tcp://HOST:8786 | --scheduler-file F] [--dashboard] [--rmm-pool-size 0.8]
                    [--rank 16 --rounds 30 ...]
    hyperlearn ingest SPEC [--data-root DIR] [--out DIR] [--memory-limit-mb 1024]
                       [--scheduler tcp://HOST:8786 | --scheduler-file F]
    hyperlearn demo [--out DIR] [--data DIR]
    hyperlearn schedule SPEC [--cron "0 3 * * *" --timezone Europe/Paris] [--on-change [--poll 10]] [--out DIR] ...
    hyperlearn datasets get movielens-100k [--dest DIR]
    hyperlearn spec-schema > spec.schema.json
    hyperlearn run examples/movielens-100k.yaml --data-root DIR
    hyperlearn recommend OUT/demo/latest --relation rating --target item --queries Q.csv -k 10 --output R.parquet
    hyperlearn recommend OUT/demo/latest --relation tagging --target tag --given user=u1 item=i2
    hyperlearn neighbors OUT/demo/latest --modality item --key i2 [-k 10] [--to user]

The training options are generated from `TrainingConfig`'s fields, so the help, the spec's `training:` block
and the code never disagree. Prefect, Dask and the data sources are imported only inside the subcommand that
needs them: `--help` stays fast, and Dask worker processes (which re-import this entry point) never load Prefect.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hyperlearn.config import TrainingConfig

if typing.TYPE_CHECKING:
    from hyperlearn.flows.cluster import ClusterChoice
    from hyperlearn.pipeline.ingest import IngestReport
    from hyperlearn.pipeline.lineage import RunOutcome

#: Environment defaults, used only where the user has not set them: a first Prefect run on a fresh machine
#: stays offline (no telemetry) and gives the temporary local server time to start on a slow machine; Dask's
#: routine INFO lines (scheduler and workers starting and stopping) stay out of the run's log.
ENVIRONMENT_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "DASK_LOGGING__DISTRIBUTED": "warning",
}
DATASETS = ("movielens-100k",)
_METAVARS = {int: "N", float: "X", str: "NAME"}


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar, every option with its help."""
    parser = argparse.ArgumentParser(
        prog="hyperlearn",
        description="Learn embeddings for every modality of a multi-modal dataset (HyperLearn) and publish them "
        "as versioned Parquet.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="ingest, build graphs, train and publish one dataset spec",
        description="Run the whole pipeline for a dataset spec: ingest → build graphs → train → publish "
        "OUT/<dataset>/<version>/ and move OUT/<dataset>/latest to it.",
    )
    run.add_argument("spec", type=Path, metavar="SPEC", help="dataset spec (YAML)")
    _add_run_options(run)
    run.add_argument(
        "--fresh",
        action="store_true",
        help="start from scratch: remove the staging folder a killed run of the same spec, settings and data "
        "left, instead of resuming it from its last checkpoint",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="train even when the spec, every source file and the settings are unchanged since the parent version "
        "(by default such a run is skipped: no new version, exit 0)",
    )
    _add_training_options(run)

    ingest = commands.add_parser(
        "ingest",
        help="check new logs: ingest alone (no training) and print the row accounting",
        description="Read, validate, quarantine and de-duplicate every relation of SPEC, build the catalog, the "
        "relation tensors and the graphs into a scratch run directory (fresh entity ids; nothing is published), "
        "and print how many rows were read, accepted, quarantined and merged, with the quarantine files and where "
        "the sources were read: on an existing Dask cluster's workers when one is named, else in this process.",
    )
    ingest.add_argument("spec", type=Path, metavar="SPEC", help="dataset spec (YAML)")
    ingest.add_argument("--data-root", type=Path, metavar="DIR", help="resolve the spec's data paths against DIR")
    ingest.add_argument(
        "--out", type=Path, metavar="DIR", help="the scratch run directory (default: a new temporary one)"
    )
    ingest.add_argument("--memory-limit-mb", type=int, default=1024, metavar="N",
                        help="memory ingest plans for, beside the catalog and the tensors (default: %(default)s)")
    _add_scheduler_options(
        ingest.add_argument_group("Dask cluster (default: DASK_SCHEDULER_ADDRESS if set, else this process reads "
                                  "the sources; no cluster is started)"),
        "read and validate the sources on the workers of the existing Dask cluster whose scheduler is at ADDRESS "
        "(e.g. tcp://HOST:8786), each worker seeing the source files at the paths this process sees; the cluster "
        "is left running",
    )

    demo = commands.add_parser(
        "demo",
        help="generate a small synthetic dataset and train on it (about a minute)",
        description="Generate the synthetic demo dataset, run the pipeline on it, print the test metrics "
        "and where the embeddings were published.",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("out"),
        metavar="DIR",
        help="where published versions go (default: %(default)s)",
    )
    demo.add_argument(
        "--data",
        type=Path,
        default=Path("data/demo"),
        metavar="DIR",
        help="where the synthetic raw logs and their spec are written (default: %(default)s)",
    )

    schedule = commands.add_parser(
        "schedule",
        help="serve a retraining deployment: on a cron schedule and on change events (needs a Prefect server)",
        description="Serve a Prefect deployment that reruns `hyperlearn run` for SPEC, one run at a time (a run "
        "asked for while one runs waits its turn), until SIGTERM or Ctrl-C: on --cron in --timezone, and whenever "
        "the event hyperlearn.dataset.changed arrives for resource hyperlearn.dataset.<name> (from --on-change, "
        "or `prefect event emit hyperlearn.dataset.changed --resource-id hyperlearn.dataset.<name>`). Needs a "
        "running server: `prefect server start`, with PREFECT_API_URL pointing at it.",
    )
    schedule.add_argument("spec", type=Path, metavar="SPEC", help="dataset spec (YAML)")
    schedule.add_argument("--cron", help='cron expression, e.g. "0 3 * * *" (03:00 daily); without it, runs '
                          "come from events only")
    schedule.add_argument("--timezone", default="UTC", metavar="TZ",
                          help="IANA timezone the cron expression is read in (default: %(default)s)")
    schedule.add_argument("--on-change", action="store_true",
                          help="watch the spec and its source files (content hashes; a new file in a folder or "
                          "glob source counts) and emit the change event when they change")
    schedule.add_argument("--poll", type=float, default=10.0, metavar="S",
                          help="with --on-change: seconds between checks of the inputs (default: %(default)s)")
    schedule.add_argument("--name", help="deployment name (default: the dataset's name)")
    _add_run_options(schedule)
    _add_training_options(schedule)

    commands.add_parser(
        "spec-schema",
        help="print the JSON Schema of dataset specs (for editors; also docs/spec.schema.json)",
        description="Print the JSON Schema of a dataset spec YAML file, for editor completion and checking.",
    )

    datasets = commands.add_parser(
        "datasets",
        help="fetch public datasets (their specs are in examples/)",
        description="Fetch public datasets; their specs are in the repository's examples/ folder.",
    )
    dataset_commands = datasets.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    get = dataset_commands.add_parser(
        "get",
        help="download a dataset",
        description="Download a dataset into DIR (checksums verified) and print how to train on it.",
    )
    get.add_argument("name", choices=DATASETS, help="dataset to fetch")
    get.add_argument(
        "--dest",
        type=Path,
        default=Path("data/movielens-100k"),
        metavar="DIR",
        help="folder to write the data into (default: %(default)s)",
    )
    _add_scoring_commands(commands)
    return parser


def _add_scoring_commands(commands: argparse._SubParsersAction) -> None:
    """`recommend` and `neighbors`: answers from a published version's files (hyperlearn.pipeline.published)."""
    version_help = "a published version folder, or OUT/<dataset>/latest"
    recommend = commands.add_parser(
        "recommend",
        help="the top-k entities of one axis of a relation for given queries, by the published model's score",
        description="Rank every entity of the target axis for each query (the keys of the relation's other "
        "axes) by the model's score, computed from the version's embeddings, biases and scoring.json. "
        "Unknown keys count as entities with a zero embedding and bias; how many there were is printed.",
    )
    recommend.add_argument("version", type=Path, metavar="VERSION", help=version_help)
    recommend.add_argument("--relation", required=True, help="relation to score")
    recommend.add_argument("--target", required=True, help="axis to rank: its modality, or its axis name where "
                           "the modality repeats")
    queries = recommend.add_mutually_exclusive_group(required=True)
    queries.add_argument("--queries", type=Path, metavar="Q.csv", help="CSV with a header naming every other "
                         "axis (modality, or axis name where it repeats), one query of raw keys per row")
    queries.add_argument("--given", nargs="+", metavar="AXIS=KEY", help="one query, printed as a table")
    recommend.add_argument("-k", type=int, default=10, help="candidates per query (default: %(default)s)")
    recommend.add_argument("--output", type=Path, metavar="OUT.parquet", help="with --queries: write query, "
                           "rank, key, score here")
    recommend.add_argument("--exclude-seen", action="store_true", help="leave out the tuples the model was "
                           "trained or validated on")

    neighbors = commands.add_parser(
        "neighbors",
        help="the entities nearest to one entity by cosine similarity of the published embeddings",
        description="Print the k entities (of the same modality, or of --to) whose embeddings have the highest "
        "cosine similarity with KEY's.",
    )
    neighbors.add_argument("version", type=Path, metavar="VERSION", help=version_help)
    neighbors.add_argument("--modality", required=True, help="the modality of KEY")
    neighbors.add_argument("--key", required=True, help="the entity's raw key")
    neighbors.add_argument("-k", type=int, default=10, help="neighbours to print (default: %(default)s)")
    neighbors.add_argument("--to", metavar="MODALITY", help="search another modality of the same embedding width")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        metavar="DIR",
        help="resolve the spec's data paths against DIR (default: the spec file's folder)",
    )
    parser.add_argument(
        "--allow-root",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also accept data paths under DIR (repeatable); by default they must lie under the data root",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out"),
        metavar="DIR",
        help="where published versions go: OUT/<dataset>/<version>/ (default: %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=("distributed", "joint"),
        default="distributed",
        help="distributed: one Dask worker per modality (the method); joint: all encoders in "
        "this process, the yardstick (default: %(default)s)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="when another run holds OUT/<dataset>, wait for it to finish instead of exiting at once",
    )
    _add_cluster_options(parser)


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Which Dask cluster distributed training uses (hyperlearn.flows.cluster.choose_cluster)."""
    group = parser.add_argument_group("Dask cluster (distributed mode; default: DASK_SCHEDULER_ADDRESS if set, "
                                      "else a local cluster started and stopped by the run)")
    _add_scheduler_options(group, "train on the existing Dask cluster whose scheduler is at ADDRESS (e.g. "
                           "tcp://HOST:8786), one trainer per modality on its workers, which also read and "
                           "validate the sources; the cluster is left running")
    group.add_argument("--dashboard", action="store_true",
                       help="serve the local cluster's Dask dashboard on loopback (its address is logged)")
    group.add_argument("--rmm-pool-size", metavar="SIZE",
                       help="on a local GPU cluster, give each worker an RMM memory pool of SIZE (bytes, e.g. 24GB, "
                       "or a fraction of the GPU's memory, e.g. 0.8) that torch allocates from")


def _add_scheduler_options(group: argparse._ArgumentGroup, scheduler_help: str) -> None:
    """--scheduler ADDRESS (with `scheduler_help`) or --scheduler-file FILE: an existing Dask cluster to use."""
    existing = group.add_mutually_exclusive_group()
    existing.add_argument("--scheduler", metavar="ADDRESS", help=scheduler_help)
    existing.add_argument("--scheduler-file", type=Path, metavar="FILE",
                          help="as --scheduler, with the address read from FILE (`dask scheduler --scheduler-file`)")


def _cluster_choice(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    dashboard: bool = False,
    distributed: bool = True,
    rmm_pool_size: str | None = None,
) -> ClusterChoice:
    """The command's Dask cluster from its --scheduler / --scheduler-file and the other cluster options
    (`choose_cluster`, which also honours DASK_SCHEDULER_ADDRESS); a mistake exits in one line. It imports Dask
    and torch."""
    from hyperlearn.flows.cluster import choose_cluster

    try:
        return choose_cluster(args.scheduler, _scheduler_file(args), dashboard, distributed, rmm_pool_size)
    except ValueError as error:
        parser.exit(2, f"hyperlearn {args.command}: error: {error}\n")


def _scheduler_file(args: argparse.Namespace) -> str | None:
    """--scheduler-file as an absolute path, or None."""
    return None if args.scheduler_file is None else str(args.scheduler_file.resolve())


def _checked_cluster(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The cluster options as flow parameters, checked (`_cluster_choice`) before the flow starts, so a mistake
    fails in one line. It imports Dask and torch, so `run` checks them once its temporary server is launching."""
    _cluster_choice(parser, args, dashboard=args.dashboard, distributed=args.mode == "distributed",
                    rmm_pool_size=args.rmm_pool_size)
    return {"scheduler": args.scheduler, "scheduler_file": _scheduler_file(args), "dashboard": args.dashboard,
            "rmm_pool_size": args.rmm_pool_size}


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainingConfig field, overriding the spec's `training:` block only when given."""
    group = parser.add_argument_group(
        "training overrides (default: the spec's `training:` block, else the value shown)"
    )
    hints = typing.get_type_hints(TrainingConfig)
    for field in dataclasses.fields(TrainingConfig):
        option = f"--{field.name.replace('_', '-')}"
        help_text = f"{field.metadata['help']} (default: {field.default})"
        if isinstance(field.default, bool):
            group.add_argument(option, dest=field.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
            continue
        if isinstance(field.default, tuple):
            group.add_argument(option, dest=field.name, nargs="*", metavar="NAME", default=argparse.SUPPRESS,
                               help=help_text)
            continue
        choices = typing.get_args(hints[field.name]) or None
        group.add_argument(
            option,
            dest=field.name,
            type=None if choices else type(field.default),
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=None if choices else _METAVARS[type(field.default)],
            help=help_text,
        )


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings given on the command line, by TrainingConfig field name."""
    names = {field.name for field in dataclasses.fields(TrainingConfig)}
    return {name: value for name, value in vars(args).items() if name in names}


def run_command() -> typing.NoReturn:
    """The `hyperlearn` command: `main`, then the exit handlers and a flush of the output, then exit without the
    interpreter's teardown.

    Once a command has finished, tearing down the modules it imported (torch, Prefect, Dask, pandas) only frees
    memory the process is about to return anyway, and it took 2.3 s at every exit on the 2-core development
    machines: a sixth of a MovieLens-100K run's time outside its training rounds. The exit handlers (Prefect's log
    and event delivery, logging's flush) still run. A command that raises exits the usual way."""
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hyperlearn` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    handlers: dict[str, Callable[[argparse.ArgumentParser, argparse.Namespace], int]] = {
        "run": _run,
        "ingest": _ingest,
        "demo": _demo,
        "schedule": _schedule,
        "datasets": _datasets,
        "spec-schema": _spec_schema,
        "recommend": _recommend,
        "neighbors": _neighbors,
    }
    return handlers[args.command](parser, args)


def _checked_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The training overrides, after loading the spec with them (the one validation the flow repeats), so that
    a mistake in either fails now, in one line naming the key or option, before any server or cluster starts."""
    from hyperlearn.pipeline.spec import SpecError, load_spec

    overrides = training_overrides(args)
    try:
        load_spec(args.spec, args.data_root, overrides=overrides, allow_roots=args.allow_root)
    except SpecError as error:
        parser.exit(2, f"hyperlearn {args.command}: error: {error}\n")
    return overrides


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    overrides = _checked_overrides(parser, args)
    outcome = _train(
        lambda: _checked_cluster(parser, args),
        spec_path=str(args.spec),
        out=str(args.out),
        data_root=None if args.data_root is None else str(args.data_root),
        mode=args.mode,
        overrides=overrides or None,
        allow_roots=[str(root) for root in args.allow_root] or None,
        wait=args.wait,
        fresh=args.fresh,
        force=args.force,
    )
    _print_outcome(outcome)
    return 0


def _ingest(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Ingest and build graphs into a scratch run directory, the sources read on the workers of an existing
    cluster when one is named (which is left running), else in this process; print the accounting, warnings,
    files and where the sources were read."""
    import contextlib
    import logging
    import tempfile

    from hyperlearn.flows.cluster import describe_existing
    from hyperlearn.pipeline.graph_build import build_graphs
    from hyperlearn.pipeline.ingest import ingest
    from hyperlearn.pipeline.spec import load_spec
    from hyperlearn.rundir import RunDir

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    choice = _cluster_choice(parser, args)
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="hyperlearn-ingest-"))
    run = RunDir(out)
    try:
        spec = load_spec(args.spec, args.data_root)
        with choice.connect() if choice.existing else contextlib.nullcontext() as client:
            if client is not None:
                logging.info(describe_existing(client, choice))
            report = ingest(spec, run, out / "no-catalog", memory_limit=args.memory_limit_mb * 2**20, progress=True,
                            client=client)
        graphs = build_graphs(spec, run)
    except (ValueError, ConnectionError) as error:  # SpecError, SourceError, IngestError; a scheduler not reached
        parser.exit(1, f"hyperlearn ingest: error: {error}\n")
    header = ("relation", "rows read", "accepted", "quarantined", "tuples", "merged", "entries", "train/valid/test",
              "quarantine")
    table = [header] + [
        (r.name, f"{r.rows_read:,}", f"{r.rows_accepted:,}", f"{r.rows_quarantined:,}", f"{r.tuples:,}",
         f"{r.duplicates_merged:,}", f"{r.entries_total:,}",
         "/".join(f"{r.entries[s]:,}" for s in ("train", "validation", "test")), str(out / r.quarantine_file))
        for r in report.relations
    ]
    table += [("modality", "entities", "keys normalised", "graph edges", "", "", "", "", "")]
    table += [
        (m.name, f"{m.entities:,}", f"{m.keys_normalised:,}",
         f"{graphs[m.name].edges:,}" if m.name in graphs else "-", "", "", "", "", "")
        for m in report.modalities
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for relation in report.relations:
        for source, files in relation.files.items():
            print(f"{relation.name} ({source}): {len(files)} file(s): {', '.join(files)}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(_where_read(report, choice))
    print(f"run directory: {out}")
    return 0


def _where_read(report: IngestReport, choice: ClusterChoice) -> str:
    """One line saying where ingest read and validated the sources."""
    if report.read_on is not None:
        return (f"sources read and validated on the workers of the Dask cluster at {report.read_on} "
                f"({choice.source}); it is left running")
    if choice.existing:
        return (f"sources read and validated in this process: the workers of the Dask cluster named by "
                f"{choice.source} do not see them as this process does (see the warning above)")
    return "sources read and validated in this process (no --scheduler, --scheduler-file or DASK_SCHEDULER_ADDRESS)"


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hyperlearn.pipeline.sources.synthetic import generate_demo

    spec = generate_demo(args.data)
    print(f"demo data and spec: {spec}")
    _print_outcome(_train(dict, spec_path=str(spec), out=str(args.out)))
    return 0


def _train(more_parameters: Callable[[], dict[str, Any]], **parameters: Any) -> RunOutcome:
    """Run the training flow once, on a temporary Prefect server of this command's own when no PREFECT_API_URL
    is set: it starts while `more_parameters` (checks that import heavy libraries) runs and the flow's libraries
    load, and never outlives the command."""
    from hyperlearn.flows.temporary_server import temporary_api

    with temporary_api() as wait_for_server:
        parameters.update(more_parameters())
        from hyperlearn.flows.hyperlearn_flow import train_embeddings

        wait_for_server()
        return train_embeddings(**parameters)


def _schedule(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hyperlearn.pipeline.spec import load_spec

    overrides = _checked_overrides(parser, args)
    if args.poll <= 0:
        parser.exit(2, "hyperlearn schedule: error: --poll must be a positive number of seconds\n")
    from hyperlearn.flows.deployments import ServerUnavailable, build_deployment, require_server, serve_schedule
    from hyperlearn.flows.watch import InputWatcher

    try:
        require_server()
    except ServerUnavailable as error:
        parser.exit(1, f"hyperlearn schedule: error: {error}\n")
    dataset = load_spec(args.spec, args.data_root, overrides=overrides, allow_roots=args.allow_root).name
    try:
        deployment = build_deployment(
            args.spec,
            args.out,
            dataset,
            cron=args.cron,
            timezone=args.timezone,
            name=args.name,
            data_root=args.data_root,
            mode=args.mode,
            overrides=overrides or None,
            allow_roots=args.allow_root or None,
            wait=args.wait,
            **_checked_cluster(parser, args),
        )
    except ValueError as error:
        parser.exit(2, f"hyperlearn schedule: error: {error}\n")
    watcher = InputWatcher(dataset, args.spec, args.data_root, args.allow_root) if args.on_change else None
    serve_schedule(deployment, watcher, args.poll)
    return 0


def _datasets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hyperlearn.pipeline.sources.movielens import FetchError, fetch_movielens_100k

    try:
        dest = fetch_movielens_100k(args.dest)
    except FetchError as error:
        parser.exit(1, f"hyperlearn datasets get: {error}\n")
    print(f"{args.name} written to {dest}")
    print(f"train on it with:  hyperlearn run examples/{args.name}.yaml --data-root {dest}")
    return 0


def _spec_schema(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hyperlearn.pipeline.spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))
    return 0


def _recommend(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from hyperlearn.pipeline.published import open_version, read_queries

    if (args.queries is None) != (args.output is None):
        parser.exit(2, "hyperlearn recommend: error: --queries and --output go together\n")
    try:
        version = open_version(args.version)
        if args.queries is not None:
            queries = read_queries(args.queries, version.relation(args.relation).query_labels(args.target))
        else:
            queries = _given_keys(args.given)
        result = version.recommend(args.relation, args.target, queries, args.k, exclude_seen=args.exclude_seen)
    except (KeyError, ValueError, FileNotFoundError) as error:
        _fail(parser, "recommend", error)
    unknown = ", ".join(f"{label} {count}" for label, count in result.unknown.items())
    print(f"unknown query keys: {unknown}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(result.table, args.output)
        print(f"{result.table.num_rows} recommendations written to {args.output}")
    else:
        _print_table(result.table.drop_columns(["query"]))
    return 0


def _given_keys(given: Sequence[str]) -> dict[str, list[str]]:
    """`AXIS=KEY` words as one query."""
    pairs = [word.partition("=") for word in given]
    malformed = [word for word, (label, sep, key) in zip(given, pairs) if not (label and sep and key)]
    if malformed:
        raise ValueError(f"--given takes AXIS=KEY words, got {malformed}")
    return {label: [key] for label, _, key in pairs}


def _neighbors(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hyperlearn.pipeline.published import open_version

    try:
        table = open_version(args.version).neighbors(args.modality, args.key, args.k, to=args.to)
    except (KeyError, ValueError, FileNotFoundError) as error:
        _fail(parser, "neighbors", error)
    _print_table(table)
    return 0


def _fail(parser: argparse.ArgumentParser, command: str, error: Exception) -> typing.NoReturn:
    """Exit with the error in one line (a KeyError's message without the quotes str() adds)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    parser.exit(2, f"hyperlearn {command}: error: {message}\n")


def _print_table(table: Any) -> None:
    """A pyarrow table as aligned text columns, floats to four decimals."""
    columns = {
        name: [f"{v:.4f}" if isinstance(v, float) else str(v) for v in table.column(name).to_pylist()]
        for name in table.column_names
    }
    widths = {name: max([len(name), *map(len, values)]) for name, values in columns.items()}
    print("  ".join(f"{name:>{widths[name]}}" for name in columns))
    for row in zip(*columns.values()):
        print("  ".join(f"{value:>{widths[name]}}" for name, value in zip(columns, row)))


def _print_outcome(outcome: RunOutcome) -> None:
    """A skipped run says so and which version its inputs match; a published or gated one prints its summary,
    and a gated one why `latest` did not move."""
    if outcome.status == "skipped":
        print(f"skipped: {outcome.reason}")
        return
    _print_summary(Path(outcome.path))
    if outcome.status == "gated":
        print(f"\ngated:      latest stays on {outcome.gate['parent']}: {outcome.gate['reason']}")


def _print_summary(published: Path) -> None:
    """Print the test metrics of a published version (the model's next to its baselines) and the training
    summary, and where its embeddings are; the validation metrics of the best round are in its metrics.json."""
    metrics = {
        name: value
        for name, value in json.loads((published / "metrics.json").read_text())["metrics"].items()
        if not name.startswith("validation/")
    }
    width = max(map(len, metrics))
    print("\nmetrics:")
    for name, value in sorted(metrics.items()):
        print(f"  {name:<{width}}  {_format_metric(value)}")
    print(f"\npublished:  {published}")
    print(f"embeddings: {published / 'embeddings'}/modality=<name>/part-0.parquet")


def _format_metric(value: float | None) -> str:
    """Counts as integers, scores to four decimals; None (a metric that was undefined, NaN) as n/a."""
    if value is None:
        return "n/a"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.4f}"


if __name__ == "__main__":
    run_command()
