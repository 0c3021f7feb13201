"""Ingest throughput and peak memory on a synthetic rating log (issue: ingest at scale).

    python benchmarks/ingest.py [--rows 1000000 10000000 100000000] [--jsonl-rows 1000000 10000000]
                                [--parquet-rows 1000000 10000000] [--data /tmp/hyperlearn-ingest] [--memory-limit 1GiB]
                                [--scheduler tcp://127.0.0.1:8786] [--out benchmarks/results/ingest]

For each size, a 2-modality rating log (100k users × 50k items, ratings 0.5…5, integer timestamps, uniform
draws with a fixed seed) is generated once as CSV (--rows), JSON lines (--jsonl-rows, the same rows as
objects) or Parquet (--parquet-rows, the same rows, one row group per million) under --data (never committed),
then `ingest` runs on it in a
fresh process (read, validate, quarantine, de-duplicate by latest time, catalog, tensors), which reports its
wall time, CPU time and peak RSS (ru_maxrss). With --scheduler, each log is then ingested once more with its
sources read and validated on that existing cluster's workers (`ingest(..., client=...)`, as `hyperlearn run
--scheduler` does): the driver's numbers are the driver process's, and the workers' peak RSS (ru_maxrss over
each worker's life: start fresh workers to read it per size) is recorded beside them; the workers import the
pipeline before the clock starts. Outputs in --out: results.json (every number, machine, settings),
results.md (the table) and ingest.png (rows/s and peak RSS against rows). The machine may be shared: the load
average at the start of each run is recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root is not on sys.path, benchmarks/ is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

USERS, ITEMS = 100_000, 50_000
CHUNK = 1_000_000
SPEC = """\
name: ingest-benchmark
modalities:
  - name: user
  - name: item
relations:
  - name: rating
    modalities: {{user: user_id, item: item_id}}
    value: rating
    time: timestamp
    duplicates: last
    source: {{path: {path}}}
"""


LINES = {
    "csv": "u{},i{},{},{}\n",
    "jsonl": '{{"user_id": "u{}", "item_id": "i{}", "rating": {}, "timestamp": {}}}\n',
}


def write_log(path: Path, rows: int, seed: int = 0, format_: str = "csv") -> None:
    """A rating log of `rows` rows (user_id, item_id, rating, timestamp) as CSV, JSON lines or Parquet (one
    row group per chunk of CHUNK rows), written chunk by chunk."""
    temporary = path.with_suffix(".partial")
    if format_ == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("rating", pa.float64()),
                            ("timestamp", pa.int64())])
        with pq.ParquetWriter(temporary, schema) as writer:
            for users, items, ratings, stamps in _log_chunks(rows, seed):
                keys = {"user_id": np.char.add("u", users.astype(str)), "item_id": np.char.add("i", items.astype(str))}
                writer.write_table(pa.table({**keys, "rating": ratings, "timestamp": stamps}, schema))
        temporary.rename(path)
        return
    line = LINES[format_]
    with open(temporary, "w") as handle:
        if format_ == "csv":
            handle.write("user_id,item_id,rating,timestamp\n")
        for users, items, ratings, stamps in _log_chunks(rows, seed):
            columns = zip(users.tolist(), items.tolist(), ratings.tolist(), stamps.tolist())
            handle.write("".join(line.format(u, i, r, t) for u, i, r, t in columns))
    temporary.rename(path)


def _log_chunks(rows: int, seed: int) -> Iterator[tuple[np.ndarray, ...]]:
    """The log's columns (users, items, ratings, timestamps as NumPy arrays), CHUNK rows at a time."""
    rng = np.random.default_rng(seed)
    for start in range(0, rows, CHUNK):
        size = min(CHUNK, rows - start)
        users = rng.integers(0, USERS, size)
        items = rng.integers(0, ITEMS, size)
        ratings = rng.integers(1, 11, size) / 2
        stamps = 1_500_000_000 + rng.integers(0, 10**8, size)
        yield users, items, ratings, stamps


def peak_rss_gib() -> float:
    """This process's peak resident set (ru_maxrss), GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(spec: Path, memory_limit: int, scheduler: str | None = None) -> dict:
    """Ingest `spec` from this process (on the workers of the cluster at `scheduler` when given); wall and CPU
    seconds, peak RSS (and the workers' when on a cluster) and the row accounting."""
    import contextlib
    import importlib
    import tempfile

    from distributed import Client

    from hyperlearn.pipeline.ingest import ingest
    from hyperlearn.pipeline.spec import load_spec
    from hyperlearn.rundir import RunDir

    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as scratch, (
        Client(scheduler) if scheduler else contextlib.nullcontext()
    ) as client:
        if client is not None:
            client.run(importlib.import_module, "hyperlearn.pipeline.cluster_reading")
        start, cpu = time.perf_counter(), time.process_time()
        run, catalog = RunDir(Path(scratch) / "run"), Path(scratch) / "catalog"
        report = ingest(load_spec(spec), run, catalog, memory_limit=memory_limit, client=client)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        workers_rss = None if client is None else sorted(client.run(peak_rss_gib).values())
    (relation,) = report.relations
    return {
        "where": "driver" if client is None else f"cluster ({len(workers_rss)} workers)",
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_gb": peak_rss_gib(),
        "workers_peak_rss_gb": workers_rss,
        "rows_read": relation.rows_read,
        "rows_accepted": relation.rows_accepted,
        "rows_quarantined": relation.rows_quarantined,
        "duplicates_merged": relation.duplicates_merged,
        "entries": relation.entries_total,
        "rows_per_s": relation.rows_read / wall,
    }


def parse_size(text: str) -> int:
    """Bytes from '1GiB', '512MiB' or a plain number."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30}
    lowered = text.strip().lower()
    for unit, factor in units.items():
        if lowered.endswith(unit):
            return int(float(lowered[: -len(unit)]) * factor)
    return int(lowered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--jsonl-rows", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--parquet-rows", type=int, nargs="*", default=[])
    parser.add_argument("--data", type=Path, default=Path("/tmp/hyperlearn-ingest"))
    parser.add_argument("--memory-limit", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument("--scheduler", help="also ingest each log on this existing Dask cluster's workers (an "
                        "address), right after the driver-only run of the same log")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "ingest")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: measure one spec, print JSON
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.memory_limit, args.scheduler)))
        return
    args.data.mkdir(parents=True, exist_ok=True)
    results = []
    runs = [("csv", rows) for rows in args.rows] + [("jsonl", rows) for rows in args.jsonl_rows]
    runs += [("parquet", rows) for rows in args.parquet_rows]
    for format_, rows in runs:
        log = args.data / f"ratings-{rows}.{format_}"
        if not log.exists():
            print(f"generating {log} ...", flush=True)
            write_log(log, rows, format_=format_)
        spec = args.data / f"spec-{rows}-{format_}.yaml"
        spec.write_text(SPEC.format(path=log.name))
        for scheduler in [None] + ([args.scheduler] if args.scheduler else []):
            load = os.getloadavg()[0]
            command = [sys.executable, __file__, "--measure", str(spec), "--memory-limit", str(args.memory_limit)]
            command += ["--scheduler", scheduler] if scheduler else []
            measured = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            result = {"format": format_, "rows": rows, "input_mb": log.stat().st_size / 1e6, "load_average": load}
            result |= measured
            print(json.dumps(result), flush=True)
            results.append(result)
    write_results(args.out, results, args.memory_limit)


def write_results(out: Path, results: list[dict], memory_limit: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    everything = {"memory_limit": memory_limit, "machine": machine, "results": results}
    (out / "results.json").write_text(json.dumps(everything, indent=2))
    lines = [
        f"memory_limit = {memory_limit / 2**30:.2f} GiB, {machine['cpus']} CPUs; "
        "load = 1-minute load average at the start (the machine is shared)",
        "",
        "| format | rows | where | input MB | wall s | driver CPU s | rows/s | driver peak RSS GB | workers' peak RSS GB "
        "| quarantined | merged | entries | load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        workers = r.get("workers_peak_rss_gb")
        lines.append(
            f"| {r['format']} | {r['rows']:,} | {r.get('where', 'driver')} | {r['input_mb']:.0f} | {r['wall_s']:.1f} | "
            f"{r['cpu_s']:.1f} | {r['rows_per_s']:,.0f} | {r['peak_rss_gb']:.2f} | "
            f"{', '.join(f'{g:.2f}' for g in workers) if workers else '–'} | "
            f"{r['rows_quarantined']:,} | {r['duplicates_merged']:,} | {r['entries']:,} | {r['load_average']:.1f} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for format_, where in dict.fromkeys((r["format"], r.get("where", "driver")) for r in results):
        chosen = [r for r in results if r["format"] == format_ and r.get("where", "driver") == where]
        rows = [r["rows"] for r in chosen]
        label = format_ if where == "driver" else f"{format_}, {where}"
        speed.plot(rows, [r["rows_per_s"] for r in chosen], "o-", label=label)
        memory.plot(rows, [r["peak_rss_gb"] for r in chosen], "o-", label=f"{label} (driver)")
    speed.set(xscale="log", xlabel="rows", ylabel="rows / s (wall)", title="ingest throughput")
    speed.legend()
    memory.axhline(1.5, color="grey", linestyle="--", label="target 1.5 GB")
    title = f"peak memory, memory_limit {memory_limit / 2**30:.1f} GiB"
    memory.set(xscale="log", xlabel="rows", ylabel="peak RSS (GB)", title=title)
    memory.legend()
    figure.tight_layout()
    figure.savefig(out / "ingest.png", dpi=120)


if __name__ == "__main__":
    main()
