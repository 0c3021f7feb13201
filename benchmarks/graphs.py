"""Graph building on the CPU against the GPU: k-NN graph and normalised Laplacian (hyperlearn.graphs).

    python benchmarks/graphs.py [--sizes 1000 5000 20000] [--dims 4 32] [--k 10] [--repeats 3]
                                [--out benchmarks/results/graphs]

For each number of entities n and feature width d, standard-normal features (fixed seed) go through
`knn_graph` three ways: SciPy's k-d tree (the CPU default), the blocked brute force on NumPy, and the same
blocked brute force on CuPy; then `normalized_laplacian` of the graph on NumPy and on CuPy. Each time is the
best of --repeats calls, wall clock, including the GPU's copies to and from the host (the functions take and
return host arrays) and after one untimed call that compiles CuPy's kernels. The GPU columns are filled only
where CuPy finds a GPU; elsewhere they stay empty, with the reason recorded. Every GPU graph is compared with
the CPU's, edge for edge. Outputs in --out: results.json (every number, machine, settings, load average) and
results.md (the table). The machine may be shared: the load average before each size is recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root is not on sys.path, benchmarks/ is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from hyperlearn.arrays import array_module
from hyperlearn.graphs import knn_graph, normalized_laplacian


def best_seconds(call: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The shortest wall time of `repeats` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return min(times), result


def gpu_module(stack: ExitStack) -> tuple[ModuleType | None, str]:
    """CuPy, entered for the whole benchmark, when it finds a GPU; else None and why not."""
    try:
        cupy = stack.enter_context(array_module("cuda"))
        cupy.zeros(1).sum().item()
    except Exception as error:  # noqa: BLE001 - any failure means no GPU column, and the reason is reported
        return None, f"{type(error).__name__}: {error}"
    return cupy, cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()


def measure(n: int, d: int, k: int, repeats: int, cupy: ModuleType | None) -> dict[str, Any]:
    """One row of the table: seconds per method for n entities with d features."""
    features = np.random.default_rng(0).normal(size=(n, d))
    row: dict[str, Any] = {"n": n, "d": d, "k": k, "load_average": os.getloadavg()[0]}
    row["knn_kd_tree_cpu_s"], graph = best_seconds(lambda: knn_graph(features, k, search="kd-tree"), repeats)
    row["knn_blocks_cpu_s"], blocked = best_seconds(lambda: knn_graph(features, k, search="blocks"), repeats)
    row["laplacian_cpu_s"], laplacian = best_seconds(lambda: normalized_laplacian(graph), repeats)
    row["edges"] = graph.nnz // 2
    row["blocks_same_as_kd_tree"] = (blocked != graph).nnz == 0
    if cupy is not None:
        knn_graph(features[: min(n, 256)], k, xp=cupy)  # compile the kernels once, untimed
        normalized_laplacian(graph, xp=cupy)
        row["knn_blocks_gpu_s"], on_gpu = best_seconds(lambda: knn_graph(features, k, xp=cupy), repeats)
        row["laplacian_gpu_s"], laplacian_on_gpu = best_seconds(lambda: normalized_laplacian(graph, xp=cupy), repeats)
        row["gpu_same_graph"] = (on_gpu != graph).nnz == 0
        row["gpu_laplacian_max_difference"] = float(abs(laplacian_on_gpu - laplacian).max())
    return row


def table(rows: list[dict[str, Any]], gpu: str | None) -> str:
    """The results as a Markdown table (seconds; '' where no GPU was found)."""
    header = ["n", "d", "edges", "k-d tree (CPU)", "blocks (CPU)", "blocks (GPU)", "Laplacian (CPU)",
              "Laplacian (GPU)", "same graphs", "load avg"]

    def seconds(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.3f}" if key in row else ""

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        same = row["blocks_same_as_kd_tree"] and row.get("gpu_same_graph", True)
        cells = [f"{row['n']:,}", str(row["d"]), f"{row['edges']:,}", seconds(row, "knn_kd_tree_cpu_s"),
                 seconds(row, "knn_blocks_cpu_s"), seconds(row, "knn_blocks_gpu_s"), seconds(row, "laplacian_cpu_s"),
                 seconds(row, "laplacian_gpu_s"), "yes" if same else "NO", f"{row['load_average']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"GPU: {gpu}" if gpu else "GPU: none found here; the GPU columns are empty.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 5_000, 20_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/graphs"))
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        cupy, device = gpu_module(stack)
        rows = []
        for n in args.sizes:
            for d in args.dims:
                rows.append(measure(n, d, args.k, args.repeats, cupy))
                print(json.dumps(rows[-1]), flush=True)
    gpu = device if cupy is not None else None
    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "gpu": gpu, "no_gpu_reason": None if cupy is not None else device},
        "settings": vars(args) | {"out": str(args.out)},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(table(rows, gpu))
    print(table(rows, gpu))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
