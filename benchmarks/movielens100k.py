"""MovieLens-100K benchmark of HyperLearn (issue 3): every comparison in one process, on the same prepared data.

    python benchmarks/movielens100k.py --data DIR [--out benchmarks/results/movielens100k] [--quick]

DIR holds MovieLens-100K (fetched there with `fetch_movielens_100k` when missing). Each fold's run directory is
prepared once with the real pipeline (the example spec with its relation's sources swapped to u{k}.base /
u{k}.test, then `ingest` + `build_graphs`), and every run gets its own copy of it. What runs (method.md §3, §5):

1. Claim 1, "no accuracy lost by distributing": HyperLearn distributed (hyperlearn.flows.cluster: 2 process workers with
   1 thread each, one per modality) against the same model trained jointly in this process: test RMSE
   difference, seconds per round, and rounds/seconds until a common validation target.
2. Ablations, each a `TrainingConfig` change or a run-directory change: the movie factor as free rows at rank
   10 from the ALS start (the model without projected starts), no graphs (encoder "none", graph_weight 0), the
   graph regulariser only (encoder "none"), the encoder without its LSTM (encoder "chebyshev"), and no feature
   graphs (the run directory without graphs/).
3. Peers (benchmarks/peers.py), at sRGCNN's sizes (rank 10): TensorLy masked CP, and a sRGCNN-style model
   written as Monti's code computes it (dense Chebyshev matrices, Dirichlet term on the dense completed
   matrix); the per-iteration time ratio against one HyperLearn optimiser step at the same sizes (claim 3:
   ≈4.5×).
4. Seeds (3 on u1) and folds (u1…u5) of the headline setting.

Every choice uses validation entries (carved out of u{k}.base by the spec), never test: `l2` and
`projection_dropout` are picked on u1 validation over a small grid, one joint run each on a copy whose test
splits are empty; HyperLearn early-stops on validation; the peers' settings and iteration counts are picked on
validation too. Test RMSE is read once per
run, from the model validation chose: with the spec's `refit`, the model trained again on training +
validation entries for the chosen number of rounds. The rounds-vs-RMSE plot shows validation RMSE (the
training loop never sees test data).

Outputs in --out: results.json (every number, the exact configs, versions, machine), results.md (the tables),
rmse_vs_time.png, rmse_vs_rounds.png. RMSEs are deterministic (CPU, fixed seeds): rerunning the command gives
the same numbers; timings drift on a shared machine (compare rows of one run only). Every model in this process
runs on `--threads` torch threads (default 1); distributed runs use 2 workers × 1 thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):  # run as a script: the repository root is not on sys.path, benchmarks/ is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from distributed import Client

from benchmarks.peers import (
    RatingData,
    SRGCNNSettings,
    factored_loss_check,
    interleaved_step_times,
    srgcnn_stepper,
    tensorly_masked_cp,
    train_srgcnn,
)
from hyperlearn.flows.cluster import make_cluster
from hyperlearn.config import TrainingConfig
from hyperlearn.coordinator import train_distributed
from hyperlearn.joint import JointTrainers, train_joint
from hyperlearn.problem import Problem, load_problem
from hyperlearn.result import TrainResult
from hyperlearn.rundir import SPLITS, Entries, RunDir
from hyperlearn.trainer import ModalityTrainer
from hyperlearn.pipeline.graph_build import build_graphs
from hyperlearn.pipeline.ingest import ingest
from hyperlearn.pipeline.sources.movielens import fetch_movielens_100k
from hyperlearn.pipeline.spec import DatasetSpec, load_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "movielens-100k.yaml"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "movielens100k"
WORKER_THREADS = 1
Mode = Literal["distributed", "joint"]
Log = Callable[[str], None]


# --- what to run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How much to run: the full benchmark or the `--quick` smoke check."""

    folds: tuple[int, ...]
    seeds: tuple[int, ...]
    max_rounds: int | None  # caps TrainingConfig.rounds; None keeps the spec's
    grid: Mapping[str, tuple[float, ...]]  # TrainingConfig settings tried on validation, every combination
    tensorly_ridges: tuple[float, ...]
    tensorly_iterations: int
    srgcnn_iterations: int
    srgcnn_evaluate_every: int
    timing_threads: tuple[int, ...]  # torch thread counts the per-step timing is repeated at
    timing_blocks: int
    timing_per_block: int

    def capped(self, rounds: int) -> int:
        """A run's round limit under this plan's cap."""
        return rounds if self.max_rounds is None else min(rounds, self.max_rounds)


FULL = Plan(
    folds=(1, 2, 3, 4, 5), seeds=(0, 1, 2), max_rounds=None,
    grid={"l2": (0.5, 1.0, 1.5), "projection_dropout": (0.0, 0.3)},
    tensorly_ridges=(1.0, 10.0, 30.0), tensorly_iterations=200,
    srgcnn_iterations=1000, srgcnn_evaluate_every=50, timing_threads=(1,), timing_blocks=4, timing_per_block=5,
)
QUICK = Plan(
    folds=(1,), seeds=(0,), max_rounds=4, grid={"l2": (1.0,), "projection_dropout": (0.3,)},
    tensorly_ridges=(10.0,), tensorly_iterations=30,
    srgcnn_iterations=30, srgcnn_evaluate_every=10, timing_threads=(1,), timing_blocks=2, timing_per_block=2,
)

# The model before projected starts (the previous headline): free rows at sRGCNN's rank 10 from the ALS start,
# l2 and graph_weight chosen on u1 validation by the RMSE of that start. Also the sizes the peers run at.
FREE_ROWS: dict[str, Any] = {
    "projected": (), "rank": 10, "init": "als", "l2": 0.05, "graph_weight": 0.2, "learning_rate": 1e-3,
    "encoder_lr_scale": 1.0, "diffusion_steps": 10, "local_steps": 10, "rounds": 30, "patience": 10,
    "proximal": 1.0,
}


@dataclass(frozen=True)
class Variant:
    """One row of the main table: a training mode, changes to the base config, and whether graphs are used."""

    name: str
    mode: Mode
    overrides: Mapping[str, Any] = field(default_factory=dict)
    graphs: bool = True
    tuned: bool = True  # start from the settings chosen on validation (False: the spec's training block as is)
    note: str = ""

    def config(self, base: TrainingConfig, tuned: Mapping[str, Any], seed: int, plan: Plan) -> TrainingConfig:
        """The spec's config, plus the tuned settings (when `tuned`), this variant's changes, the seed and the
        plan's round cap; always on the CPU."""
        changes: dict[str, Any] = {**(tuned if self.tuned else {}), **self.overrides, "seed": seed, "device": "cpu"}
        config = base.replace(**changes)
        return config.replace(rounds=plan.capped(config.rounds))


HEADLINE = "HyperLearn distributed"
JOINT = "HyperLearn joint"
FREE = "free rows, rank 10 (no projection)"
MONTI = "sRGCNN as Monti's code (dense Chebyshev, dense Dirichlet)"


def variants() -> list[Variant]:
    """The u1 rows: claim 1 with the settings chosen on validation, the model without projected starts, then
    the ablations of the graph parts."""
    return [
        Variant(HEADLINE, "distributed", note="the method: one worker per modality, settings chosen on validation"),
        Variant(JOINT, "joint", note="same model and objective, all encoders in one process"),
        Variant(FREE, "distributed", FREE_ROWS, tuned=False,
                note="movie factor as free rows from the ALS start, rank 10, l2 0.05, graph_weight 0.2"),
        Variant("no graphs", "distributed", {"encoder": "none", "graph_weight": 0.0},
                note="encoder none, graph_weight 0: projection + CP + biases"),
        Variant("graph regulariser only", "distributed", {"encoder": "none"},
                note="encoder none, Dirichlet term kept"),
        Variant("encoder without LSTM", "distributed", {"encoder": "chebyshev"}, note="encoder chebyshev"),
        Variant("no feature graphs", "distributed", graphs=False, note="run directory without graphs/"),
    ]


# --- data ----------------------------------------------------------------------------------------------------


def fold_spec(spec: DatasetSpec, data_dir: Path, fold: int) -> DatasetSpec:
    """The spec with its rating relation reading u{fold}.base (train) and u{fold}.test (test) from `data_dir`."""
    relation = spec.relations[0]
    if set(relation.sources) != {"train", "test"}:
        raise ValueError(f"{spec.spec_path}: expected train/test sources, got {sorted(relation.sources)}")
    files = {"train": f"u{fold}.base", "test": f"u{fold}.test"}
    sources = {name: dataclasses.replace(source, path=data_dir / files[name]) for name, source in relation.sources.items()}
    return dataclasses.replace(spec, relations=(dataclasses.replace(relation, sources=sources), *spec.relations[1:]))


def prepare_fold(spec: DatasetSpec, data_dir: Path, fold: int, root: Path) -> RunDir:
    """Ingest fold `fold` and build its graphs into `root/u{fold}` with the real pipeline; return that run dir."""
    run = RunDir(root / f"u{fold}")
    specific = fold_spec(spec, data_dir, fold)
    ingest(specific, run, root / f"u{fold}-catalog")
    build_graphs(specific, run)
    return run


def run_copy(prepared: RunDir, destination: Path, graphs: bool) -> RunDir:
    """A private copy of a prepared run directory (its own checkpoints/), without graphs/ when `graphs` is False."""
    ignored = ["checkpoints"] + ([] if graphs else ["graphs"])
    shutil.copytree(prepared.path, destination, ignore=shutil.ignore_patterns(*ignored))
    return RunDir(destination)


# --- choosing settings on validation ------------------------------------------------------------------------


def choose_settings(run_dir: RunDir, base: TrainingConfig, plan: Plan, scratch: Path, log: Log) -> dict[str, Any]:
    """On validation only: every combination of `plan.grid`, one joint run each (early-stopped on validation,
    no refit) on a copy of `run_dir` whose test splits are empty, so no choice can see a test entry."""
    names = list(plan.grid)
    search = []
    for number, values in enumerate(itertools.product(*plan.grid.values())):
        setting = dict(zip(names, values))
        config = base.replace(**setting, device="cpu", refit=False, rounds=plan.capped(base.rounds))
        copy = without_test(run_copy(run_dir, scratch / f"select-{number:02d}", graphs=True))
        start = time.perf_counter()
        result = train_joint(copy, config, log=lambda line: None)
        best = result.history[int(result.metrics["best_round"])]
        rmse = best[_validation_key(best)]
        log(f"[select] {setting}: validation RMSE {rmse:.4f} (round {int(result.metrics['best_round'])})")
        search.append({**setting, "validation_rmse": rmse, "best_round": result.metrics["best_round"],
                       "seconds": time.perf_counter() - start})
    best = min(search, key=lambda row: row["validation_rmse"])
    return {"chosen": {name: best[name] for name in names}, "search": search,
            "split": "u1 validation (5% of u1.base)", "criterion": "best validation RMSE of a joint run"}


def without_test(run: RunDir) -> RunDir:
    """Replace every relation's test split in `run` by an empty one."""
    for name in run.relation_names():
        meta = run.read_relation_meta(name)
        splits = {split: run.read_relation_split(name, split) for split in SPLITS}
        empty = Entries(np.empty((meta.order, 0), np.int64), np.empty(0, np.float32), meta.shape)
        run.write_relation(meta, {**splits, "test": empty})
    return run


# --- HyperLearn runs -----------------------------------------------------------------------------------------


def run_hyperlearn(
    variant: Variant, config: TrainingConfig, run_dir: RunDir, client: Client, fold: int, log: Log
) -> dict[str, Any]:
    """Train one variant on one run directory; return its record (metrics, config, timings, per-round history)."""
    prefix = f"[u{fold} seed {config.seed} {variant.name}]"

    def quiet(line: str) -> None:
        log(f"{prefix} {line}")

    start = time.perf_counter()
    if variant.mode == "distributed":
        result = train_distributed(client, run_dir, config, log=quiet)
    else:
        result = train_joint(run_dir, config, log=quiet)
    wall = time.perf_counter() - start
    return _record(variant, config, fold, result, wall)


def _record(variant: Variant, config: TrainingConfig, fold: int, result: TrainResult, wall: float) -> dict[str, Any]:
    metrics = result.metrics
    key = _validation_key(result.history[0])
    return {
        "variant": variant.name,
        "mode": variant.mode,
        "fold": fold,
        "seed": config.seed,
        "graphs": variant.graphs,
        "note": variant.note,
        "config": config.to_dict(),
        "test_rmse": metrics["test_rmse"],
        "test_mae": metrics["test_mae"],
        "validation_rmse": metrics[key],
        "best_round": int(metrics["best_round"]),
        "rounds_run": int(metrics["rounds_run"]),
        "refit_rounds": int(metrics["refit_rounds"]),
        "train_seconds": metrics["train_seconds"],
        "seconds_per_round": metrics["seconds_per_round"],
        "seconds_per_step": metrics["seconds_per_round"] / config.local_steps,
        "setup_seconds": wall - metrics["train_seconds"],
        "wall_seconds": wall,
        "history": [
            {"round": int(row["round"]), "seconds": row["seconds"], "validation_rmse": row[key],
             "train_loss": row["train_loss"]}
            for row in result.history
        ],
    }


def _validation_key(row: Mapping[str, float]) -> str:
    return next(key for key in row if key.startswith("validation/") and key.endswith("/rmse"))


def first_reaching(history: Sequence[Mapping[str, float]], target: float) -> dict[str, float] | None:
    """The first round (and its seconds) whose validation RMSE is at or below `target`."""
    for row in history:
        if row["validation_rmse"] <= target:
            return {"round": row["round"], "seconds": row["seconds"]}
    return None


def compare_modes(distributed: Mapping[str, Any], joint: Mapping[str, Any]) -> dict[str, Any]:
    """Claim 1: test RMSE difference, seconds per round, and the cost of reaching a validation RMSE both reach
    (the worse of the two best validation RMSEs)."""
    target = max(distributed["validation_rmse"], joint["validation_rmse"])
    return {
        "test_rmse_distributed": distributed["test_rmse"],
        "test_rmse_joint": joint["test_rmse"],
        "test_rmse_difference": distributed["test_rmse"] - joint["test_rmse"],
        "seconds_per_round": {"distributed": distributed["seconds_per_round"], "joint": joint["seconds_per_round"]},
        "validation_target": target,
        "to_target": {"distributed": first_reaching(distributed["history"], target),
                      "joint": first_reaching(joint["history"], target)},
    }


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the values themselves."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": list(values)}


# --- per-iteration timing ------------------------------------------------------------------------------------


def hyperlearn_steppers(problem: Problem, run_dir: RunDir, config: TrainingConfig) -> dict[str, Callable[[], Any]]:
    """One round of one optimiser step, as training runs it: of the joint model (`JointTrainers` with
    local_steps=1) and of each modality's worker (`ModalityTrainer.update`), from the same start; each includes
    computing the state it publishes (one more forward pass)."""
    single = config.replace(local_steps=1)
    joint = JointTrainers(problem, single)
    states = joint.start()
    steppers: dict[str, Callable[[], Any]] = {"HyperLearn joint step": lambda: joint.round(states)}
    for modality in problem.modalities:
        trainer = ModalityTrainer(run_dir.read_trainer_share(modality, ("train",)), single, states[modality])
        steppers[f"HyperLearn worker step ({modality})"] = lambda trainer=trainer: trainer.update(states)
    return steppers


def srgcnn_variants(config: TrainingConfig) -> dict[str, SRGCNNSettings]:
    """Monti's computation and the two steps towards HyperLearn's, at HyperLearn's encoder sizes."""
    base = SRGCNNSettings(rank=config.rank, order=config.cheb_order, conv_width=config.conv_width,
                          lstm_width=config.lstm_width, steps=config.diffusion_steps, seed=config.seed)
    return {
        MONTI: base,
        "sRGCNN, sparse Chebyshev, dense Dirichlet": dataclasses.replace(base, chebyshev="sparse"),
        "sRGCNN, sparse Chebyshev, factored Dirichlet": dataclasses.replace(base, chebyshev="sparse", dirichlet="factored"),
    }


def time_iterations(data: RatingData, problem: Problem, run_dir: RunDir, config: TrainingConfig, plan: Plan,
                    log: Log) -> dict[str, Any]:
    """Seconds per optimiser step of the sRGCNN computations and of HyperLearn, measured interleaved, once per
    thread count of `plan.timing_threads` (dense products use threads better than sparse ones do)."""
    steppers = {name: srgcnn_stepper(data, settings)[1] for name, settings in srgcnn_variants(config).items()}
    steppers.update(hyperlearn_steppers(problem, run_dir, config))
    restore = torch.get_num_threads()
    by_threads = {}
    try:
        for threads in plan.timing_threads:
            torch.set_num_threads(threads)
            log(f"[timing] {threads} thread(s): {len(steppers)} models, {plan.timing_blocks} interleaved blocks "
                f"of {plan.timing_per_block} steps")
            times = interleaved_step_times(steppers, plan.timing_blocks, plan.timing_per_block)
            for name, summary in times.items():
                log(f"[timing] {threads} thread(s) {name}: {1000 * summary['median']:.1f} ms per step")
            worker = max(v["median"] for k, v in times.items() if k.startswith("HyperLearn worker step"))
            by_threads[str(threads)] = {
                "per_step": times,
                "ratio_monti_to_joint_step": times[MONTI]["median"] / times["HyperLearn joint step"]["median"],
                "ratio_monti_to_worker_step": times[MONTI]["median"] / worker,
            }
    finally:
        torch.set_num_threads(restore)
    return {"by_threads": by_threads, "protocol": f"{plan.timing_blocks} blocks x {plan.timing_per_block} steps "
            "per model, models alternating block by block, 2 untimed warm-up steps each; medians"}


# --- outputs -------------------------------------------------------------------------------------------------


_SPIN = "import time; t = time.perf_counter(); x = sum(range(20_000_000)); print(time.perf_counter() - t)"


def parallelism_probe() -> dict[str, float]:
    """How many cores this process really gets now: a CPU-bound loop alone, then two copies at once in two
    processes; effective cores = 2 · alone / (mean time of the two). About 2 on a free 2-core machine, about 1
    when other work holds a core (then two workers run no faster than one)."""
    def spin(copies: int) -> list[float]:
        children = [subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True)
                    for _ in range(copies)]
        return [float(child.communicate()[0]) for child in children]

    alone = spin(1)[0]
    together = spin(2)
    return {"alone_seconds": alone, "two_at_once_seconds": statistics.fmean(together),
            "effective_cores": 2 * alone / statistics.fmean(together)}


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "worker_threads": WORKER_THREADS,
        "load_average": os.getloadavg(),
        "parallelism_at_start": parallelism_probe(),
    }
    try:
        model = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        info["cpu_model"] = model.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    return info


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in ["hyperlearn", "torch", "numpy", "scipy", "sparse", "dask", "distributed", "tensorly", "matplotlib"]:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def git_state() -> dict[str, Any]:
    """The commit and the files under hyperlearn/, pipeline/ and benchmarks/ that differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "changed": git("status", "--porcelain", "--", "hyperlearn", "pipeline", "benchmarks").splitlines()}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(results: Mapping[str, Any]) -> str:
    """results.md: the main table, claim 1, seeds and folds, peers and the per-iteration ratio."""
    lines = [f"# MovieLens-100K benchmark ({'quick' if results['quick'] else 'full'})", "",
             f"Command: `{results['command']}`  ", f"Wall time: {results['wall_seconds'] / 60:.1f} min; "
             f"machine: {results['machine']['usable_cpus']} CPUs, {results['machine'].get('cpu_model', '?')}; "
             f"torch threads in this process: {results['machine']['torch_threads']}, distributed: 2 workers × "
             f"{WORKER_THREADS} thread; commit {results['git']['commit'][:10]}"
             f"{' (+ uncommitted changes)' if results['git']['changed'] else ''}; effective cores (two CPU-bound "
             f"processes vs one) at start / end: {results['machine']['parallelism_at_start']['effective_cores']:.2f}"
             f" / {results['parallelism_at_end']['effective_cores']:.2f}.", "",
             f"Settings chosen on u1 validation: `{json.dumps(results['selection']['chosen'])}`; "
             f"spec defaults otherwise: `{json.dumps(results['spec_training'])}`.", "",
             "## u1.base → u1.test", "",
             "| variant | mode | test RMSE | test MAE | val RMSE | best round | rounds | refit rounds | s/round | train s "
             "| total s | notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in results["runs"]:
        if run["fold"] != 1 or run["seed"] != results["seeds"]["values_of_seeds"][0]:
            continue
        lines.append(f"| {run['variant']} | {run['mode']} | {_fmt(run['test_rmse'])} | {_fmt(run['test_mae'])} | "
                     f"{_fmt(run['validation_rmse'])} | {run['best_round']} | {run['rounds_run']} | {run['refit_rounds']} | "
                     f"{_fmt(run['seconds_per_round'], 2)} | {_fmt(run['train_seconds'], 1)} | "
                     f"{_fmt(run['wall_seconds'], 1)} | {run['note']} |")
    for peer in results["peers"]["results"]:
        lines.append(f"| {peer['name']} | peer | {_fmt(peer['test_rmse'])} | {_fmt(peer['test_mae'])} | "
                     f"{_fmt(peer['validation_rmse'])} | {peer['setting'].get('best_iteration', peer['iterations'])} (iter.) | "
                     f"{peer['iterations']} (iter.) | – | {_fmt(peer['seconds_per_iteration'], 3)} (s/iter.) | "
                     f"{_fmt(peer['train_seconds'], 1)} | – | {peer.get('note', '')} |")
    lines += ["", "total s = the whole training call (start, worker/actor setup, rounds, refit, final test scoring); "
              "train s = the rounds and the refit; s/round = the early-stopped rounds only. Val RMSE is at the best "
              "round, while validation was held out; test RMSE is read once, from the refit model (trained on "
              "training + validation entries for the best round's number of rounds).", ""]
    lines += _claim1_lines(results["claim1"])
    lines += ["## Seeds and folds (headline: HyperLearn distributed, settings chosen on validation)", "",
              "| what | test RMSE mean | std | values |", "|---|---|---|---|"]
    for label, summary in (("seeds on u1", results["seeds"]), ("folds u1…u5", results["folds"])):
        values = ", ".join(f"{v:.4f}" for v in summary["values"])
        lines.append(f"| {label} ({len(summary['values'])}) | {_fmt(summary['mean'])} | {_fmt(summary['std'])} | {values} |")
    lines += _timing_lines(results["timing"])
    u1 = {r["variant"]: r for r in results["runs"] if r["fold"] == 1 and r["seed"] == results["seeds"]["values_of_seeds"][0]}
    lines += [f"From the u1 runs (s/round ÷ local_steps; includes the exchange and the per-round validation): "
              f"distributed {1000 * u1[HEADLINE]['seconds_per_step']:.1f} ms, joint "
              f"{1000 * u1[JOINT]['seconds_per_step']:.1f} ms per step.", ""]
    lines += _selection_lines(results["selection"])
    lines += _peer_notes(results["peers"])
    return "\n".join(lines) + "\n"


def _selection_lines(selection: Mapping[str, Any]) -> list[str]:
    names = list(selection["chosen"])
    lines = ["## HyperLearn settings tried on validation", "",
             f"Criterion: {selection['criterion']}, on {selection['split']}.", "",
             "| " + " | ".join(names) + " | validation RMSE | best round |", "|---|" + "---|" * (len(names) + 1)]
    for row in selection["search"]:
        cells = " | ".join(str(row[name]) for name in names)
        lines.append(f"| {cells} | {row['validation_rmse']:.4f} | {row['best_round']:.0f} |")
    return lines + [""]


def _timing_lines(timing: Mapping[str, Any]) -> list[str]:
    threads = list(timing["by_threads"])
    lines = ["", "## Time per optimiser step at sRGCNN's sizes (rank 10, free rows; interleaved, same data)", "",
             "| model | " + " | ".join(f"ms/step, {t} thread(s): median (q1–q3)" for t in threads) + " |",
             "|---|" + "---|" * len(threads)]
    for name in timing["by_threads"][threads[0]]["per_step"]:
        cells = [timing["by_threads"][t]["per_step"][name] for t in threads]
        lines.append(f"| {name} | " + " | ".join(
            f"{1000 * c['median']:.1f} ({1000 * c['q1']:.1f}–{1000 * c['q3']:.1f})" for c in cells) + " |")
    lines += ["", f"Protocol: {timing['protocol']}.", ""]
    for t in threads:
        ratios = timing["by_threads"][t]
        lines.append(f"- {t} thread(s): sRGCNN as Monti's code / HyperLearn joint step = "
                     f"**{ratios['ratio_monti_to_joint_step']:.1f}×**; / slowest HyperLearn worker step (one "
                     f"distributed iteration) = **{ratios['ratio_monti_to_worker_step']:.1f}×** (paper: ≈4.5×)")
    return lines + [""]


def _claim1_lines(claim1: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["## Claim 1: distributed vs joint", "",
             "| settings | test RMSE dist. | test RMSE joint | difference | s/round dist. | s/round joint | "
             "val target | to target dist. (round, s) | to target joint (round, s) |", "|---|---|---|---|---|---|---|---|---|"]
    for label, c in claim1.items():
        reach = {mode: ("–" if hit is None else f"{hit['round']}, {hit['seconds']:.1f}") for mode, hit in c["to_target"].items()}
        lines.append(f"| {label} | {_fmt(c['test_rmse_distributed'])} | {_fmt(c['test_rmse_joint'])} | "
                     f"{c['test_rmse_difference']:+.4f} | {_fmt(c['seconds_per_round']['distributed'], 2)} | "
                     f"{_fmt(c['seconds_per_round']['joint'], 2)} | {_fmt(c['validation_target'])} | "
                     f"{reach['distributed']} | {reach['joint']} |")
    return lines + ["", "Target: the worse of the two best validation RMSEs, so both runs reach it.", ""]


def _peer_notes(peers: Mapping[str, Any]) -> list[str]:
    lines = ["## Peers: what was tried on validation", ""]
    for row in peers["tensorly_search"]:
        lines.append(f"- TensorLy `l2_reg={row['l2_reg']}`: best validation RMSE {row['validation_rmse']:.4f} "
                     f"after {row['n_iter_max']} iterations")
    lines.append(f"- sRGCNN: {peers['srgcnn_note']}")
    return lines + [""]


def plot_curves(results: Mapping[str, Any], out: Path) -> list[Path]:
    """rmse_vs_rounds.png (HyperLearn u1 runs) and rmse_vs_time.png (the same plus the peers)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    u1 = [r for r in results["runs"] if r["fold"] == 1 and r["seed"] == results["seeds"]["values_of_seeds"][0]]
    written = []
    for name, x_label in (("rounds", "round"), ("time", "wall seconds since the training call started (log)")):
        figure = Figure(figsize=(9, 5.5), layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        ax.set_prop_cycle(color=[colormaps["tab20"](i) for i in range(20)])
        for run in u1:
            xs = [row["round"] if name == "rounds" else row["seconds"] + run["setup_seconds"] for row in run["history"]]
            ax.plot(xs, [row["validation_rmse"] for row in run["history"]], marker="." if run["mode"] == "joint" else "o",
                    markersize=3, linestyle=":" if run["mode"] == "joint" else "-", label=f"{run['variant']} ({run['mode']})")
        if name == "time":
            for peer in results["peers"]["results"]:
                points = [p for p in peer["history"] if p["seconds"] > 0]
                ax.plot([p["seconds"] for p in points], [p["validation_rmse"] for p in points], linestyle="--",
                        label=f"peer: {peer['name']} (seconds of its iterations)")
            ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel("validation RMSE (u1; test RMSE at the best round: results.md)")
        ax.set_ylim(top=min(1.1, ax.get_ylim()[1]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = out / f"rmse_vs_{name}.png"
        figure.savefig(path, dpi=110)
        written.append(path)
    return written


# --- the whole benchmark -------------------------------------------------------------------------------------


def run_benchmark(data_dir: Path, out: Path, plan: Plan, quick: bool, command: str, log: Log) -> dict[str, Any]:
    """Run everything in `plan` and write the outputs into `out`; return the results dictionary."""
    started = time.perf_counter()
    machine = machine_info()
    git_at_start = git_state()
    spec = load_spec(SPEC, data_root=data_dir)
    with tempfile.TemporaryDirectory(prefix="hyperlearn-bench-") as scratch:
        root = Path(scratch)
        prepared = {fold: prepare_fold(spec, data_dir, fold, root / "prepared") for fold in plan.folds}
        log(f"[data] prepared folds {list(prepared)} in {time.perf_counter() - started:.1f}s")
        selection = choose_settings(prepared[1], spec.training, plan, root / "select", log)
        log(f"[select] chosen on u1 validation: {selection['chosen']}")
        runs = _hyperlearn_runs(spec.training, selection, plan, prepared, root / "runs", log)
        peers, timing = _peer_runs(spec.training.replace(**FREE_ROWS, device="cpu"), prepared[1], plan, log)
    headline = [r for r in runs if r["variant"] == HEADLINE]
    by_name = {r["variant"]: r for r in runs if r["fold"] == 1 and r["seed"] == plan.seeds[0]}
    results = {
        "command": command,
        "quick": quick,
        "plan": dataclasses.asdict(plan),
        "machine": machine,
        "load_average_at_end": os.getloadavg(),
        "parallelism_at_end": parallelism_probe(),
        "versions": versions(),
        "git": git_at_start,
        "git_at_end": git_state(),
        "spec": str(SPEC.relative_to(REPO)),
        "spec_training": spec.training.to_dict(),
        "selection": selection,
        "runs": runs,
        "claim1": {"settings chosen on validation": compare_modes(by_name[HEADLINE], by_name[JOINT])},
        "seeds": {**spread([r["test_rmse"] for r in headline if r["fold"] == 1]), "values_of_seeds": list(plan.seeds)},
        "folds": {**spread([r["test_rmse"] for r in headline if r["seed"] == plan.seeds[0]]), "folds": list(plan.folds)},
        "peers": peers,
        "timing": timing,
    }
    results["wall_seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))
    (out / "results.md").write_text(markdown(results))
    plot_curves(results, out)
    log(f"[done] {results['wall_seconds'] / 60:.1f} min; wrote {out}/results.json, results.md, rmse_vs_*.png")
    return results


def _hyperlearn_runs(base: TrainingConfig, selection: Mapping[str, Any], plan: Plan, prepared: Mapping[int, Path],
                     scratch: Path, log: Log) -> list[dict[str, Any]]:
    """The u1 variants, then the headline on the other seeds and folds, on one 2-worker cluster."""
    rows = variants()
    headline = next(v for v in rows if v.name == HEADLINE)
    jobs = [(v, 1, plan.seeds[0]) for v in rows]
    jobs += [(headline, 1, seed) for seed in plan.seeds[1:]]
    jobs += [(headline, fold, plan.seeds[0]) for fold in plan.folds if fold != 1]
    records = []
    cluster = make_cluster(2, "cpu", threads_per_worker=WORKER_THREADS, log=log)
    with cluster, Client(cluster) as client:
        for number, (variant, fold, seed) in enumerate(jobs):
            config = variant.config(base, selection["chosen"], seed, plan)
            run_dir = run_copy(prepared[fold], scratch / f"{number:02d}", variant.graphs)
            record = run_hyperlearn(variant, config, run_dir, client, fold, log)
            log(f"[run] {variant.name} u{fold} seed {seed}: test RMSE {record['test_rmse']:.4f}, "
                f"{record['rounds_run']} rounds, {record['seconds_per_round']:.2f} s/round")
            records.append(record)
    return records


def _peer_runs(config: TrainingConfig, run_dir: RunDir, plan: Plan, log: Log) -> tuple[dict[str, Any], dict[str, Any]]:
    """TensorLy and sRGCNN on u1 (settings and iteration counts chosen on validation), then the step timing."""
    problem = load_problem(run_dir)
    data = RatingData.from_problem(problem)
    cp = tensorly_masked_cp(data, config.rank, plan.tensorly_ridges, plan.tensorly_iterations, config.seed, log)
    cp_record = cp.to_dict() | {"note": f"rank {config.rank}, l2_reg and iterations chosen on validation"}
    # Trained in the sparse/factored form of Monti's loss (the same values, checked here) so that a useful budget
    # fits; the cost of the dense form per step is what the timing table measures.
    monti = srgcnn_variants(config)[MONTI]
    check = factored_loss_check(data, monti)
    log(f"[srgcnn] dense vs factored loss over {len(check['losses']['dense/dense'])} steps: "
        f"max relative difference {check['max_relative_difference']:.1e}")
    settings = dataclasses.replace(monti, chebyshev="sparse", dirichlet="factored")
    srgcnn = train_srgcnn(data, settings, plan.srgcnn_iterations, plan.srgcnn_evaluate_every, log)
    note = (f"{plan.srgcnn_iterations} Adam steps (lr 1e-3, γ 1e-8, best of every {plan.srgcnn_evaluate_every} "
            f"on validation); Monti ran 25,000+")
    srgcnn_record = srgcnn.to_dict() | {"note": note}
    timing = time_iterations(data, problem, run_dir, config, plan, log)
    peers = {"results": [cp_record, srgcnn_record], "tensorly_search": cp.search, "factored_loss_check": check,
             "srgcnn_note": note + "; trained in the sparse/factored form of the same loss (identical values), "
             "its dense per-step cost is in the timing table"}
    return peers, timing


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, metavar="DIR",
                        help="MovieLens-100K folder (u.data, u.user, u.item, u1..u5.base/.test); fetched when missing")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help="where results.json, results.md and the plots go (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: u1 only, one seed, 6 rounds, small peer budgets (a few minutes)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch threads of this process (joint runs, peers); default %(default)s")
    parser.add_argument("--timing-threads", type=int, nargs="+", default=[1], metavar="N",
                        help="thread counts to repeat the per-step timing at (default: 1; on a shared 2-core VM "
                        "2 threads made steps erratically 10-100x slower)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # for the worker processes
    logging.getLogger("distributed").setLevel(logging.WARNING)
    clock = time.perf_counter()

    def log(line: str) -> None:
        print(f"{time.perf_counter() - clock:7.1f}s {line}", flush=True)

    data_dir = fetch_movielens_100k(args.data)
    command = " ".join(["python", "benchmarks/movielens100k.py", *(argv if argv is not None else sys.argv[1:])])
    plan = dataclasses.replace(QUICK if args.quick else FULL, timing_threads=tuple(args.timing_threads))
    run_benchmark(data_dir.resolve(), args.out, plan, args.quick, command, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
