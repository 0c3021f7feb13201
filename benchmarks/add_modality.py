"""Adding a modality, measured: warm-started retraining against a cold one, and how far the old modalities drift.

    python benchmarks/add_modality.py --data-small DIR --data-100k DIR [--out DIR] [--rounds N --patience N]

Two cases, each through the real pipeline (load_spec → ingest → build_graphs → train → publish, the flow's steps
without Prefect), in joint mode on this machine's cores:

- MovieLens latest-small (`--data-small`: ratings.csv, tags.csv): version 1 is the ratings alone (users ×
  movies); version 2 is examples/movielens-latest-small.yaml, which adds tags (users × movies × tags).
- MovieLens-100K (`--data-100k`: u1.base, u1.test, u.kg, u.link, from `hyperlearn datasets get movielens-100k`):
  version 1 is the ratings alone; version 2 is examples/movielens-100k-kg.yaml, which adds Freebase entities and
  relation types (KG triples, movie ↔ entity links).

Version 2 is trained twice: cold (`init_from: none`, in a dataset folder of its own) and warm (from version 1,
published in the same dataset folder, `init_from: latest`). Reported per case:
- the early-stopping criterion of version 2 (its first relation's validation NDCG@10, or the validation loss)
  per round against wall seconds from the start of training (for warm: from loading the parent, so the warm
  start's own fit is counted), the rounds and seconds cold needs to reach its best, and the rounds and seconds
  warm needs to reach cold's best;
- drift of the old modalities (users, movies) from version 1 to each version 2: mean cosine of an entity's two
  embeddings, and the mean overlap of its 10 nearest neighbours (cosine, among the entities both know).
Outputs in --out (default benchmarks/results/add_modality): results.json, results.md, add_modality.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root is not on sys.path, benchmarks/ is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import yaml

from hyperlearn.flows.training import start_from_parent, train
from hyperlearn.pipeline.graph_build import build_graphs
from hyperlearn.pipeline.ingest import ingest
from hyperlearn.pipeline.lineage import parent_version
from hyperlearn.pipeline.outputs import VersionRecord, staged_run_dir, training_summary, write_record, write_training_outputs
from hyperlearn.pipeline.publish import new_version, publish
from hyperlearn.pipeline.published import open_version
from hyperlearn.pipeline.spec import load_spec
from hyperlearn.rundir import DatasetDir

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NEIGHBOURS = 10
#: The old modalities whose drift is measured, per case.
OLD_MODALITIES = ("user", "movie")


def ratings_only(example: dict[str, Any]) -> dict[str, Any]:
    """Version 1 of a case: the example spec with only its rating relation and the modalities it spans."""
    rating = next(r for r in example["relations"] if r["name"] == "rating")
    kept = set(rating["modalities"])
    return {
        **example,
        "modalities": [m for m in example["modalities"] if m["name"] in kept],
        "relations": [rating],
    }


def run_version(
    document: dict[str, Any], data_root: Path, out: Path, init_from: str, caps: dict[str, int],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Ingest, build graphs, train (joint) and publish one version of `document` into `out`; return its folder,
    history, metrics, warm-start record and the seconds the warm start took."""
    spec_dir = Path(tempfile.mkdtemp(prefix="add-modality-spec-"))
    spec_path = spec_dir / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(document, sort_keys=False))
    spec = load_spec(spec_path, data_root, overrides={"init_from": init_from, **caps})
    config = spec.training
    dataset = DatasetDir(out / spec.name)
    version = new_version()
    dataset.path.mkdir(parents=True, exist_ok=True)
    with staged_run_dir(dataset.path, version) as run:
        report = ingest(spec, run, dataset.catalog)
        graphs = {name: stats.to_dict() for name, stats in build_graphs(spec, run).items()}
        parent = parent_version(dataset, config.init_from)
        clock = time.perf_counter()
        warm, reason = (None, None) if parent is None else start_from_parent(run, parent, config, log)
        warm_seconds = time.perf_counter() - clock
        result, device = train(run, config, mode="joint", log=log, warm=warm)
        write_training_outputs(run, dataset=spec.name, version=version, config=config, result=result)
        summary = training_summary(result, device)
        lineage = None if warm is None else {"version": warm.parent, "warm_started": list(warm.warm_started),
                                             "new": list(warm.new), "encoders_resumed": sorted(warm.encoders)}
        write_record(run, VersionRecord(spec, version, config, summary, report.to_dict(), graphs, {},
                                        parent=lineage, cold_start_reason=reason))
        published = publish(run.path, dataset.path, version, catalog_source=run.catalog)
    return {
        "path": str(published),
        "history": result.history,
        "metrics": summary["metrics"],
        "parent": lineage,
        "cold_start_reason": reason,
        "warm_start_seconds": warm_seconds,
        "first_relation": spec.relations[0].name,
        "criterion": criterion_name(spec),
    }


def criterion_name(spec) -> str:
    """The early-stopping criterion's key in the history (hyperlearn.metrics.early_stopping_criterion)."""
    first = spec.relations[0]
    if first.evaluation is not None:
        k = 10 if 10 in first.evaluation.k else max(first.evaluation.k)
        return f"validation/{first.name}/ndcg@{k}"
    return "validation_loss"


def curve(run: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounds, wall seconds (warm start included) and criterion values of a run's history."""
    history = run["history"]
    rounds = np.array([row["round"] for row in history])
    seconds = np.array([row["seconds"] for row in history]) + run["warm_start_seconds"]
    values = np.array([row[run["criterion"]] for row in history], dtype=float)
    return rounds, seconds, values


def time_to_reach(run: dict[str, Any], target: float, higher: bool) -> tuple[int | None, float | None]:
    """The first round (and its wall seconds) whose criterion is at least as good as `target`."""
    rounds, seconds, values = curve(run)
    reached = values >= target if higher else values <= target
    if not reached.any():
        return None, None
    first = int(np.argmax(reached))
    return int(rounds[first]), float(seconds[first])


def drift(parent: Path, child: Path, modality: str) -> dict[str, float]:
    """Mean cosine of the same entity's embeddings in two versions, and the mean overlap of its top-10 cosine
    neighbours (among the entities both versions know), matched by key."""
    old, new = open_version(parent), open_version(child)
    old_keys, new_keys = old.keys(modality), new.keys(modality)
    common = old_keys.intersection(new_keys)
    a = _unit(old.embeddings(modality)[old_keys.get_indexer(common)])
    b = _unit(new.embeddings(modality)[new_keys.get_indexer(common)])
    cosine = float(np.mean(np.sum(a * b, axis=1)))
    overlaps = []
    for start in range(0, len(common), 1024):
        rows = slice(start, min(start + 1024, len(common)))
        near_a, near_b = _neighbours(a, rows), _neighbours(b, rows)
        overlaps.extend(len(set(x) & set(y)) / NEIGHBOURS for x, y in zip(near_a, near_b))
    return {"entities": len(common), "mean_cosine": cosine, "neighbour_overlap@10": float(np.mean(overlaps))}


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = matrix.astype(np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _neighbours(unit: np.ndarray, rows: slice) -> np.ndarray:
    similarity = unit[rows] @ unit.T
    similarity[np.arange(similarity.shape[0]), np.arange(rows.start, rows.stop)] = -np.inf  # not itself
    return np.argsort(-similarity, axis=1, kind="stable")[:, :NEIGHBOURS]


def run_case(name: str, example: Path, data_root: Path, work: Path, caps: dict[str, int]) -> dict[str, Any]:
    """Version 1 (ratings), then version 2 cold and warm; the comparison and the drift."""
    def log(line: str) -> None:
        print(f"[{name}] {line}", flush=True)

    document = yaml.safe_load(example.read_text())
    clock = time.perf_counter()
    first = run_version(ratings_only(document), data_root, work / "warm", "none", caps, log)
    warm = run_version(document, data_root, work / "warm", "latest", caps, log)
    cold = run_version(document, data_root, work / "cold", "none", caps, log)
    higher = cold["criterion"] != "validation_loss"
    _, _, cold_values = curve(cold)
    best = float(np.nanmax(cold_values) if higher else np.nanmin(cold_values))
    cold_round, cold_seconds = time_to_reach(cold, best, higher)
    warm_round, warm_seconds = time_to_reach(warm, best, higher)
    drifts = {
        kind: {m: drift(Path(first["path"]), Path(run["path"]), m) for m in OLD_MODALITIES}
        for kind, run in (("warm", warm), ("cold", cold))
    }
    return {
        "case": name,
        "spec": str(example.relative_to(ROOT)),
        "criterion": cold["criterion"],
        "higher_is_better": higher,
        "cold_best": best,
        "cold": {"rounds_to_best": cold_round, "seconds_to_best": cold_seconds, "metrics": cold["metrics"],
                 "curve": [list(map(float, c)) for c in curve(cold)]},
        "warm": {"rounds_to_cold_best": warm_round, "seconds_to_cold_best": warm_seconds,
                 "warm_start_seconds": warm["warm_start_seconds"], "parent": warm["parent"],
                 "cold_start_reason": warm["cold_start_reason"], "metrics": warm["metrics"],
                 "curve": [list(map(float, c)) for c in curve(warm)]},
        "version_1_metrics": first["metrics"],
        "time_ratio": None if warm_seconds is None or not cold_seconds else warm_seconds / cold_seconds,
        "drift": drifts,
        "wall_seconds": time.perf_counter() - clock,
    }


def write_results(
    cases: list[dict[str, Any]], out: Path, load: tuple[float, float, float], caps: dict[str, int]
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    environment = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                   "load_average_at_start": load, "load_average_at_end": os.getloadavg(), "mode": "joint",
                   "caps": caps}
    (out / "results.json").write_text(json.dumps({"environment": environment, "cases": cases}, indent=2) + "\n")
    lines = [
        "# Adding a modality: warm vs cold (benchmarks/add_modality.py)",
        "",
        f"Joint mode, {os.cpu_count()} cores, load average {load[0]:.1f} at the start and "
        f"{environment['load_average_at_end'][0]:.1f} at the end (other work was running; wall times are inflated); "
        f"settings of the example specs{' with ' + str(caps) if caps else ''}.",
        "",
        "| case | criterion | cold best | cold: rounds / s to best | warm: rounds / s to cold's best | warm / cold time |",
        "|---|---|---|---|---|---|",
    ]
    for case in cases:
        cold, warm = case["cold"], case["warm"]
        ratio = "not reached" if case["time_ratio"] is None else f"{case['time_ratio']:.2f}"
        lines.append(
            f"| {case['case']} | {case['criterion']} | {case['cold_best']:.4f} | {cold['rounds_to_best']} / "
            f"{cold['seconds_to_best']:.1f} | {warm['rounds_to_cold_best']} / "
            f"{_seconds(warm['seconds_to_cold_best'])} (warm start {warm['warm_start_seconds']:.1f} s) | {ratio} |"
        )
    lines += ["", "| case | modality | version 2 | entities | mean cosine to version 1 | neighbour overlap@10 |",
              "|---|---|---|---|---|---|"]
    for case in cases:
        for kind, per in case["drift"].items():
            for modality, d in per.items():
                lines.append(f"| {case['case']} | {modality} | {kind} | {d['entities']} | {d['mean_cosine']:.3f} | "
                             f"{d['neighbour_overlap@10']:.3f} |")
    lines += ["", "| case | version | test metrics |", "|---|---|---|"]
    for case in cases:
        for kind, metrics in (("1 (ratings)", case["version_1_metrics"]), ("2 cold", case["cold"]["metrics"]),
                              ("2 warm", case["warm"]["metrics"])):
            shown = {k: v for k, v in metrics.items() if k.startswith("test_") and v is not None}
            lines.append(f"| {case['case']} | {kind} | " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(cases, out / "add_modality.png")


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def plot(cases: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(cases), figsize=(6 * len(cases), 8), squeeze=False)
    for column, case in enumerate(cases):
        top = axes[0][column]
        for kind, style in (("cold", "o-"), ("warm", "s-")):
            _, seconds, values = case[kind]["curve"]
            top.plot(seconds, values, style, label=kind, markersize=3)
        top.axhline(case["cold_best"], color="grey", linestyle="--", label="cold's best")
        top.set(title=f"{case['case']}: version 2", xlabel="wall seconds (warm: from loading the parent)",
                ylabel=case["criterion"])
        top.legend()
        bottom = axes[1][column]
        labels, cosines, overlaps = [], [], []
        for kind, per in case["drift"].items():
            for modality, d in per.items():
                labels.append(f"{modality}\n{kind}")
                cosines.append(d["mean_cosine"])
                overlaps.append(d["neighbour_overlap@10"])
        x = np.arange(len(labels))
        bottom.bar(x - 0.2, cosines, 0.4, label="mean cosine")
        bottom.bar(x + 0.2, overlaps, 0.4, label="neighbour overlap@10")
        bottom.axhline(0.8, color="grey", linestyle="--", label="target overlap 0.8")
        bottom.set_xticks(x, labels)
        bottom.set(title="old modalities: version 1 → version 2", ylim=(min(0, *cosines), 1.05))
        bottom.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-small", type=Path, help="MovieLens latest-small folder")
    parser.add_argument("--data-100k", type=Path, help="MovieLens-100K folder with u.kg and u.link")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "add_modality")
    parser.add_argument("--rounds", type=int, help="cap on rounds per run (default: the example spec's)")
    parser.add_argument("--patience", type=int, help="early-stopping patience (default: the example spec's)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    caps = {name: value for name, value in (("rounds", args.rounds), ("patience", args.patience)) if value is not None}
    cases = []
    with tempfile.TemporaryDirectory(prefix="add-modality-") as work:
        planned = [("latest-small: ratings → + tags", "movielens-latest-small.yaml", args.data_small, "small"),
                   ("100K: ratings → + Freebase KG", "movielens-100k-kg.yaml", args.data_100k, "100k")]
        for name, example, data, folder in planned:
            if data is not None:
                cases.append(run_case(name, EXAMPLES / example, data, Path(work) / folder, caps))
                write_results(cases, args.out, load, caps)  # each case as it finishes
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
