"""End-to-end wall time of `hyperlearn run` on MovieLens-100K, piece by piece, on a local and an existing cluster.

    python benchmarks/e2e.py --data /tmp/ml100k [--clusters local existing] [--repeats 1]
                             [--out benchmarks/results/e2e]

Each run is the command a user types, in a fresh process: `hyperlearn run examples/movielens-100k.yaml
--data-root DATA --out TMP` ("local": the run starts and stops its own cluster) or the same with `--scheduler
ADDRESS` ("existing": a loopback cluster started here beforehand with `dask scheduler` and one `dask worker
--no-nanny` per modality, each in its own working directory, left running between runs as a user's would be).
Every line the command prints is time-stamped as it arrives, which splits the wall time into: start-up (command
start → the flow's first log line: imports and the temporary Prefect server), ingest, graphs, waiting for the
cluster, trainer start (→ round 0), the search rounds, the refit rounds, and the end (last training line →
exit: test scoring, publish, teardown, server stop). `hyperlearn --help` is timed too. The test RMSE comes from
the published metrics.json. The machine may be shared: the load average before and after each run is recorded
beside it, and timings under load are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root is not on sys.path, benchmarks/ is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPOSITORY = Path(__file__).resolve().parents[1]
SPEC = REPOSITORY / "examples" / "movielens-100k.yaml"
HYPERLEARN = [sys.executable, "-m", "hyperlearn.flows.cli"]
DASK = [sys.executable, "-m", "dask"]
MODALITIES = 2  # user, movie

#: What each piece of the run is measured between: (name, pattern of the line that ends it).
MARKS = {
    "first_flow_line": re.compile(r"Beginning flow run"),
    "ingest_done": re.compile(r" - ingest: "),
    "graphs_done": re.compile(r" - graphs: "),
    "cluster_ready": re.compile(r"started a \w+ cluster|using the existing Dask cluster"),
    "round_0": re.compile(r"\] round 0:"),
    "search_done": re.compile(r"no validation gain|round (\d+)/\1:"),
    "refit_done": re.compile(r"\] best round \d+:"),
}


def timed_lines(command: list[str], env: dict[str, str]) -> tuple[list[tuple[float, str]], float, int]:
    """Run `command`; every output line with the seconds since the start, the total wall time and the exit code."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = [(time.perf_counter() - start, line.rstrip()) for line in process.stdout]
    code = process.wait()
    return lines, time.perf_counter() - start, code


def pieces(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Seconds of each piece of the run, from the time stamps of the lines that end them."""
    at: dict[str, float] = {}
    for seconds, line in lines:
        for mark, pattern in MARKS.items():
            if mark not in at and pattern.search(line):
                at[mark] = seconds
    order = ["first_flow_line", "ingest_done", "graphs_done", "cluster_ready", "round_0", "search_done", "refit_done"]
    names = ["start_up", "ingest", "graphs", "cluster_wait", "trainer_start", "search_rounds", "refit_rounds"]
    result, previous = {}, 0.0
    for mark, name in zip(order, names):
        if mark in at:
            result[name] = round(max(at[mark] - previous, 0.0), 2)
            previous = max(previous, at[mark])
    result["end"] = round(wall - previous, 2)
    return result


def rounds_run(lines: list[tuple[float, str]]) -> dict[str, int]:
    search = [line for _, line in lines if re.search(r"\] round \d+/\d+:", line)]
    refit = [line for _, line in lines if "refit on training + validation entries, round" in line]
    return {"search": len(search), "refit": len(refit)}


def one_run(data: Path, scheduler: str | None) -> dict:
    out = Path(tempfile.mkdtemp(prefix="hyperlearn-e2e-"))
    command = [*HYPERLEARN, "run", str(SPEC), "--data-root", str(data), "--out", str(out)]
    if scheduler:
        command += ["--scheduler", scheduler]
    env = {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_URL", "DASK_SCHEDULER_ADDRESS")}
    load_before = os.getloadavg()
    lines, wall, code = timed_lines(command, env)
    load_after = os.getloadavg()
    try:
        if code != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({code}):\n" + "\n".join(line for _, line in lines[-30:]))
        latest = out / "movielens-100k" / "latest"
        metrics = json.loads((latest.parent / latest.readlink() / "metrics.json").read_text())["metrics"]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "wall_seconds": round(wall, 2),
        "pieces": pieces(lines, wall),
        "rounds": rounds_run(lines),
        "test_rmse": metrics["test_rmse"],
        "load_before": load_before,
        "load_after": load_after,
    }


@contextmanager
def existing_cluster(workers: int) -> Iterator[str]:
    """A loopback scheduler and `workers` single-threaded workers without nannies, each in its own folder."""
    home = Path(tempfile.mkdtemp(prefix="hyperlearn-e2e-cluster-"))
    scheduler_file = home / "scheduler.json"
    processes = [subprocess.Popen([*DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(scheduler_file)], cwd=home, stderr=subprocess.DEVNULL)]
    try:
        threads = max(1, (os.cpu_count() or 1) // workers)
        for i in range(workers):
            folder = home / f"worker-{i}"
            folder.mkdir()
            processes.append(subprocess.Popen(
                [*DASK, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", str(threads), "--no-nanny",
                 "--no-dashboard", "--preload", "hyperlearn.trainer",
                 "--local-directory", str(folder)],
                cwd=folder, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            ))
        from distributed import Client

        while not scheduler_file.exists():
            time.sleep(0.2)
        with Client(scheduler_file=str(scheduler_file)) as client:
            client.wait_for_workers(workers, timeout=300)
            address = client.scheduler.address
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(home, ignore_errors=True)


def help_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([*HYPERLEARN, "--help"], check=True, capture_output=True)
    return round(time.perf_counter() - start, 3)


def markdown(results: dict) -> str:
    names = ["start_up", "ingest", "graphs", "cluster_wait", "trainer_start", "search_rounds", "refit_rounds", "end"]
    rows = [
        "| cluster | wall s | " + " | ".join(names)
        + " | rounds (search + refit) | test RMSE | load before → after |",
        "|---" * (len(names) + 5) + "|",
    ]
    for cluster, runs in results["runs"].items():
        for run in runs:
            cells = [str(run["pieces"].get(name, "-")) for name in names]
            load = f"{run['load_before'][0]:.1f} → {run['load_after'][0]:.1f}"
            rounds = f"{run['rounds']['search']} + {run['rounds']['refit']}"
            rows.append(f"| {cluster} | {run['wall_seconds']} | " + " | ".join(cells)
                        + f" | {rounds} | {run['test_rmse']:.4f} | {load} |")
    return (f"# `hyperlearn run examples/movielens-100k.yaml` end to end\n\n{results['machine']}, "
            f"`hyperlearn --help` {results['help_seconds']} s.\n\n" + "\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="MovieLens-100K folder (hyperlearn datasets get)")
    parser.add_argument("--clusters", nargs="+", choices=("local", "existing"), default=["local", "existing"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPOSITORY / "benchmarks" / "results" / "e2e")
    args = parser.parse_args()
    results = {
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.python_version()}",
        "help_seconds": help_seconds(),
        "runs": {},
    }
    for cluster in args.clusters:
        if cluster == "local":
            results["runs"][cluster] = [one_run(args.data, None) for _ in range(args.repeats)]
        else:
            with existing_cluster(MODALITIES) as address:
                results["runs"][cluster] = [one_run(args.data, address) for _ in range(args.repeats)]
        print(json.dumps(results["runs"][cluster], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
