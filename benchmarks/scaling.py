"""The paper's scaling claim, measured: does adding a modality leave the time per training round unchanged?

    python benchmarks/scaling.py [--orders 2 3 4 5 6 8] [--layouts order-k star] [--rounds 5]
                                 [--out benchmarks/results/scaling]

For each layout and number of modalities K, a planted dataset (2,000 entities per modality, each with a k-NN
graph over noisy copies of its planted factors; 50,000 tuples per relation, values = μ + biases + the planted
CP product + noise, squared loss) is trained at rank 16 for `--rounds` rounds, once with one Dask worker per
modality (`DaskTrainers`, a fresh local cluster of K single-threaded workers that import the trainer as they
start) and once jointly (`JointTrainers`, one process). Layouts: "order-k", one relation of order K over all
modalities; "star", a hub modality and K−1 order-2 relations, each between the hub and one other modality.

Measured per (layout, K):
- `wall_per_round`: distributed round (every trainer's `local_steps`, the states in and out), median of the
  rounds; on a machine with fewer cores than K the workers share cores, so this grows with K by construction;
- `critical_path`: what a round costs when every worker has its own core: the slowest trainer's `update`, timed
  alone in this process on one thread (median of `--repeats` after one warm-up call), plus the exchange of that
  trainer's states (a Dask round trip of the states it reads and the state it returns, to and from its worker);
- `joint_round`: a joint round (all modalities' steps in one process), median of the rounds;
- `bytes_per_round`: the states a distributed round moves (each trainer receives those `states_needed` says it
  reads and returns its own);
- `trainer_start`: `DaskTrainers` construction, of which `als_start` is the starting ALS on the driver;
- `validation_rmse` after the last distributed and joint round (final error; the planted noise is 0.3).

The machine may be shared: the load average before and after each (layout, K) is recorded beside it, and every
time under load is an upper bound. Results: results.json, results.md and scaling.png in `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: the repository root is not on sys.path, benchmarks/ is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from distributed import Client

from hyperlearn.config import TrainingConfig
from hyperlearn.coordinator import DaskTrainers, place_modalities, states_needed
from hyperlearn.flows.cluster import make_cluster
from hyperlearn.graphs import knn_graph, normalized_laplacian
from hyperlearn.joint import JointTrainers
from hyperlearn.problem import Problem, load_problem
from hyperlearn.rounds import States, TrainerSet, validation_metrics
from hyperlearn.rundir import Entries, ModalityState, RelationMeta, RunDir
from hyperlearn.start import initial_states
from hyperlearn.trainer import ModalityTrainer
from hyperlearn.warm_start import WarmStart
from hyperlearn.workers import cluster_workers

REPOSITORY = Path(__file__).resolve().parents[1]
ENTITIES = 2_000
TUPLES = 50_000
RANK = 16
NOISE = 0.3
GRAPH_NEIGHBOURS = 10
LAYOUTS = ("order-k", "star")


def modality_names(k: int) -> list[str]:
    return [f"m{i}" for i in range(k)]


def relation_layout(layout: str, k: int) -> list[tuple[str, ...]]:
    """The modalities of each relation: one order-K relation, or a star of K−1 pairs around the hub m0."""
    names = modality_names(k)
    if layout == "order-k":
        return [tuple(names)]
    if layout == "star":
        return [(names[0], leaf) for leaf in names[1:]]
    raise ValueError(f"unknown layout {layout!r}; known: {LAYOUTS}")


def write_planted_run(directory: Path, layout: str, k: int, seed: int = 0) -> RunDir:
    """A run directory with planted CP structure: each modality's factor is Gaussian with entries scaled so that
    every relation's CP term has unit variance, each relation's values are μ + biases + that term + noise."""
    run = RunDir(directory)
    rng = np.random.default_rng(seed)
    names = modality_names(k)
    factors = {}
    for name in names:
        latent = rng.normal(size=(ENTITIES, RANK))
        factors[name] = latent
        features = latent + rng.normal(scale=0.3, size=latent.shape)
        run.write_laplacian(name, normalized_laplacian(knn_graph(features, GRAPH_NEIGHBOURS)))
    for number, modalities in enumerate(relation_layout(layout, k)):
        coords = _distinct_tuples(rng, len(modalities))
        scale = RANK ** (-0.5 / len(modalities))  # Σ_r of R products of unit Gaussians has variance R
        product = np.ones((TUPLES, RANK))
        for axis, name in enumerate(modalities):
            product *= scale * factors[name][coords[axis]]
        term = product.sum(1)
        values = 3.5 + term + rng.normal(scale=NOISE, size=TUPLES)
        for axis in range(len(modalities)):
            values += 0.2 * rng.normal(size=ENTITIES)[coords[axis]]
        meta = RelationMeta(
            f"r{number}", modalities, (ENTITIES,) * len(modalities), "squared", 1.0,
            float(values.min()), float(values.max()),
        )
        order = rng.permutation(TUPLES)
        cut_validation, cut_test = int(0.8 * TUPLES), int(0.9 * TUPLES)
        parts = {"train": order[:cut_validation], "validation": order[cut_validation:cut_test],
                 "test": order[cut_test:]}
        run.write_relation(meta, {
            split: Entries(coords[:, index], values[index].astype(np.float32), meta.shape)
            for split, index in parts.items()
        })
    return run


def _distinct_tuples(rng: np.random.Generator, order: int) -> np.ndarray:
    """TUPLES distinct uniform tuples of `order` entities each, (order, TUPLES) int64."""
    drawn = rng.integers(ENTITIES, size=(order, TUPLES * 11 // 10))
    distinct = np.unique(drawn, axis=1)
    return distinct[:, rng.permutation(distinct.shape[1])[:TUPLES]]


def state_bytes(state: ModalityState) -> int:
    return state.factor.nbytes + sum(bias.nbytes for bias in state.biases.values())


def bytes_per_round(problem: Problem, states: States) -> int:
    """What one distributed round moves: each trainer's `states_needed` in, its own state out."""
    return sum(
        sum(state_bytes(states[m]) for m in needed) + state_bytes(states[modality])
        for modality, needed in states_needed(problem).items()
    )


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    clock = time.perf_counter()
    value = call()
    return value, time.perf_counter() - clock


def timed_rounds(trainers: TrainerSet, states: States, rounds: int) -> tuple[States, list[float]]:
    """`rounds` rounds of `trainers` from `states`: the last states and each round's seconds."""
    seconds = []
    for _ in range(rounds):
        states, elapsed = timed(lambda: trainers.round(states))
        seconds.append(elapsed)
    return states, seconds


def validation_rmse(problem: Problem, states: States, config: TrainingConfig) -> float:
    metrics = validation_metrics(problem, states, config)
    return float(np.mean([value for key, value in metrics.items() if key.endswith("/rmse")]))


def _echo(states: dict[str, ModalityState], modality: str) -> ModalityState:
    """What a trainer's worker does with the states of a round, less the update: receive them, return its own."""
    return states[modality]


def critical_path(
    client: Client, run: RunDir, problem: Problem, config: TrainingConfig, states: States,
    placement: dict[str, str], repeats: int,
) -> dict[str, Any]:
    """The slowest trainer's update timed alone on one thread, plus the Dask round trip of its states."""
    needed = states_needed(problem)
    threads = torch.get_num_threads()
    updates, exchanges = {}, {}
    for modality in problem.modalities:
        share = run.read_trainer_share(modality, ("train",))
        trainer = ModalityTrainer(share, config, states[modality], threads=1)
        inbound = {m: states[m] for m in needed[modality]}
        trainer.update(inbound)  # warm-up: the first call allocates what later ones reuse
        updates[modality] = statistics.median(timed(lambda: trainer.update(inbound))[1] for _ in range(repeats))
        exchanges[modality] = statistics.median(
            timed(lambda: client.submit(_echo, inbound, modality, workers=[placement[modality]], pure=False).result())[1]
            for _ in range(repeats)
        )
    torch.set_num_threads(threads)  # the trainers set one thread for this process; joint training gets them back
    slowest = max(updates, key=updates.get)
    return {
        "slowest": slowest,
        "update": updates[slowest],
        "exchange": exchanges[slowest],
        "seconds": updates[slowest] + exchanges[slowest],
        "updates": updates,
    }


def measure(layout: str, k: int, rounds: int, repeats: int, scratch: Path, log: Callable[[str], None]) -> dict:
    """Every number of one (layout, K): distributed and joint rounds, critical path, bytes, start, error."""
    load_before = os.getloadavg()
    run = write_planted_run(scratch / f"{layout}-{k}", layout, k)
    problem = load_problem(run)
    config = TrainingConfig(rank=RANK, rounds=rounds, refit=False, device="cpu", seed=0)
    states, als_seconds = timed(lambda: initial_states(problem, config))
    record: dict[str, Any] = {"layout": layout, "k": k, "als_start": als_seconds}
    with make_cluster(k, "cpu", threads_per_worker=1, log=log) as cluster, Client(cluster) as client:
        placement, resource = place_modalities(problem.sizes, cluster_workers(client), log)
        trainers, record["trainer_start"] = timed(
            lambda: DaskTrainers(client, run, problem, config, placement, False, resource=resource, log=log)
        )
        try:
            current = trainers.start()
            record["bytes_per_round"] = bytes_per_round(problem, current)
            current, seconds = timed_rounds(trainers, current, rounds)
            record["distributed_rounds"] = seconds
            record["wall_per_round"] = statistics.median(seconds)
            record["distributed_validation_rmse"] = validation_rmse(problem, current, config)
        finally:
            trainers.close()
        record["critical_path"] = critical_path(client, run, problem, config, states, placement, repeats)
    same_start = WarmStart("", states, {}, (), tuple(problem.modalities), anchors={})  # the ALS start, not again
    joint = JointTrainers(problem, config, same_start)
    current, seconds = timed_rounds(joint, joint.start(), rounds)
    record["joint_rounds"] = seconds
    record["joint_round"] = statistics.median(seconds)
    record["joint_validation_rmse"] = validation_rmse(problem, current, config)
    record["load_before"], record["load_after"] = load_before, os.getloadavg()
    log(f"{layout} K={k}: round {record['wall_per_round']:.3f} s, critical path "
        f"{record['critical_path']['seconds']:.3f} s, joint {record['joint_round']:.3f} s, "
        f"{record['bytes_per_round'] / 1e6:.2f} MB, start {record['trainer_start']:.2f} s "
        f"(ALS {als_seconds:.2f} s), RMSE {record['distributed_validation_rmse']:.4f} / "
        f"{record['joint_validation_rmse']:.4f}, load {load_before[0]:.2f} → {record['load_after'][0]:.2f}")
    return record


def ratios(records: Sequence[dict], layout: str) -> dict[str, float]:
    """Critical path, bytes and trainer start at the largest K over the smallest, for one layout."""
    rows = sorted((r for r in records if r["layout"] == layout), key=lambda r: r["k"])
    if len(rows) < 2:
        return {}
    first, last = rows[0], rows[-1]
    return {
        "k": (first["k"], last["k"]),
        "critical_path": last["critical_path"]["seconds"] / first["critical_path"]["seconds"],
        "bytes_per_round": last["bytes_per_round"] / first["bytes_per_round"],
        "trainer_start": last["trainer_start"] / first["trainer_start"],
    }


def markdown(results: dict) -> str:
    lines = [
        "# Time per round against the number of modalities (`benchmarks/scaling.py`)",
        "",
        f"Planted data: {ENTITIES:,} entities per modality, {TUPLES:,} tuples per relation, rank {RANK}, "
        f"{results['rounds']} rounds; {results['machine']['cpus']} CPU cores, {results['machine']['torch']}. "
        "Critical path = the slowest trainer's update alone on one thread + the Dask round trip of its states. "
        "Load average (1 min) before → after each row: times under load are upper bounds.",
        "",
        "| layout | K | wall per round | critical path (update + exchange) | joint round | bytes per round | "
        "trainer start (ALS) | validation RMSE dist / joint | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["records"]:
        path = r["critical_path"]
        lines.append(
            f"| {r['layout']} | {r['k']} | {r['wall_per_round']:.3f} s | {path['seconds']:.3f} s "
            f"({path['update']:.3f} + {path['exchange']:.3f}) | {r['joint_round']:.3f} s | "
            f"{r['bytes_per_round'] / 1e6:.2f} MB | {r['trainer_start']:.2f} s ({r['als_start']:.2f} s) | "
            f"{r['distributed_validation_rmse']:.4f} / {r['joint_validation_rmse']:.4f} | "
            f"{r['load_before'][0]:.2f} → {r['load_after'][0]:.2f} |"
        )
    lines += ["", "Largest K over smallest:", ""]
    for layout, ratio in results["ratios"].items():
        if ratio:
            lines.append(
                f"- {layout} (K={ratio['k'][0]}→{ratio['k'][1]}): critical path ×{ratio['critical_path']:.2f}, "
                f"bytes ×{ratio['bytes_per_round']:.2f}, trainer start ×{ratio['trainer_start']:.2f}"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for layout in LAYOUTS:
        rows = sorted((r for r in results["records"] if r["layout"] == layout), key=lambda r: r["k"])
        if not rows:
            continue
        ks = [r["k"] for r in rows]
        axes[0].plot(ks, [r["critical_path"]["seconds"] for r in rows], "o-", label=f"{layout}: critical path")
        axes[0].plot(ks, [r["wall_per_round"] for r in rows], "s--", label=f"{layout}: wall (shared cores)")
        axes[0].plot(ks, [r["joint_round"] for r in rows], "^:", label=f"{layout}: joint")
        axes[1].plot(ks, [r["bytes_per_round"] / 1e6 for r in rows], "o-", label=layout)
        axes[2].plot(ks, [r["trainer_start"] for r in rows], "o-", label=f"{layout}: trainer start")
        axes[2].plot(ks, [r["als_start"] for r in rows], "^:", label=f"{layout}: of which ALS")
    for axis, title in zip(axes, ("seconds per round", "MB sent per round", "seconds to start the trainers")):
        axis.set_xlabel("modalities K")
        axis.set_title(title)
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timings of each trainer's update alone")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of this process (ALS start, joint rounds); 0: torch's default")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "benchmarks" / "results" / "scaling")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "driver_threads": torch.get_num_threads()},
        "records": [],
    }
    with tempfile.TemporaryDirectory(prefix="hyperlearn-scaling-") as scratch:
        for layout in args.layouts:
            for k in args.orders:
                try:
                    results["records"].append(measure(layout, k, args.rounds, args.repeats, Path(scratch), log))
                except MemoryError as error:
                    log(f"{layout} K={k} does not fit: {error}")
                results["ratios"] = {layout: ratios(results["records"], layout) for layout in args.layouts}
                (args.out / "results.json").write_text(json.dumps(results, indent=2))
                (args.out / "results.md").write_text(markdown(results))
    plot(results, args.out / "scaling.png")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
