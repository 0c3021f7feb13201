"""Adding a modality, measured: warm-started retraining against a cold one, and how far the old modalities drift.

    python benchmarks/add_modality.py --data-small DIR --data-100k DIR [--out DIR] [--rounds N --patience N]
        [--variant NAME:SETTING=VALUE,...]...

Two cases, each through the real pipeline (load_spec → ingest → build_graphs → train → publish, the flow's steps
without Prefect), in joint mode on this machine's cores:

- MovieLens latest-small (`--data-small`: ratings.csv, tags.csv): version 1 is the ratings alone (users ×
  movies); version 2 is examples/movielens-latest-small.yaml, which adds tags (users × movies × tags).
- MovieLens-100K (`--data-100k`: u1.base, u1.test, u.kg, u.link, from `hyperlearn datasets get movielens-100k`):
  version 1 is the ratings alone; version 2 is examples/movielens-100k-kg.yaml, which adds Freebase entities and
  relation types (KG triples, movie ↔ entity links).

Version 2 is trained cold (`init_from: none`, in a dataset folder of its own) and warm (from version 1, published
in the same dataset folder, `init_from: <version 1>`) with the spec's settings; each `--variant` trains one more
warm version 2 from the same version 1 with some settings changed (e.g. `no-anchor:warm_anchor=0`), to measure
what each part of the warm start is worth. Reported per case:
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
#: The test metrics shown per relation (each relation has those its kind has).
TEST_METRICS = ("rmse", "ndcg@10", "mrr", "hits@10")
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
    document: dict[str, Any], data_root: Path, out: Path, init_from: str, settings: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Ingest, build graphs, train (joint) and publish one version of `document` into `out`; return its folder,
    history, metrics, warm-start record and the seconds the warm start took."""
    spec_dir = Path(tempfile.mkdtemp(prefix="add-modality-spec-"))
    spec_path = spec_dir / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(document, sort_keys=False))
    spec = load_spec(spec_path, data_root, overrides={"init_from": init_from, **settings})
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
        "version": version,
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
    return np.argpartition(-similarity, NEIGHBOURS, axis=1)[:, :NEIGHBOURS]  # a set: their order does not count


def run_case(
    name: str, example: Path, data_root: Path, work: Path, caps: dict[str, int],
    variants: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Version 1 (ratings), then version 2 cold, warm, and warm with each of `variants`' settings (name →
    settings); the comparison and the drift."""
    def log(line: str) -> None:
        print(f"[{name}] {line}", flush=True)

    document = yaml.safe_load(example.read_text())
    clock = time.perf_counter()
    first = run_version(ratings_only(document), data_root, work / "warm", "none", caps, log)
    cold = run_version(document, data_root, work / "cold", "none", caps, log)
    warm_runs = {
        kind: run_version(document, data_root, work / "warm", first["version"], {**caps, **settings}, log)
        for kind, settings in {"warm": {}, **{f"warm, {v}": settings for v, settings in variants.items()}}.items()
    }
    higher = cold["criterion"] != "validation_loss"
    _, _, cold_values = curve(cold)
    best = float(np.nanmax(cold_values) if higher else np.nanmin(cold_values))
    cold_round, cold_seconds = time_to_reach(cold, best, higher)
    drifts = {
        kind: {m: drift(Path(first["path"]), Path(run["path"]), m) for m in OLD_MODALITIES}
        for kind, run in (*warm_runs.items(), ("cold", cold))
    }
    warm = {}
    for kind, run in warm_runs.items():
        warm_round, warm_seconds = time_to_reach(run, best, higher)
        warm[kind] = {
            "settings": {"warm": {}, **{f"warm, {v}": s for v, s in variants.items()}}[kind],
            "rounds_to_cold_best": warm_round, "seconds_to_cold_best": warm_seconds,
            "warm_start_seconds": run["warm_start_seconds"], "parent": run["parent"],
            "cold_start_reason": run["cold_start_reason"], "metrics": run["metrics"],
            "curve": [list(map(float, c)) for c in curve(run)],
            "time_ratio": None if warm_seconds is None or not cold_seconds else warm_seconds / cold_seconds,
        }
    return {
        "case": name,
        "spec": str(example.relative_to(ROOT)),
        "criterion": cold["criterion"],
        "higher_is_better": higher,
        "cold_best": best,
        "cold": {"rounds_to_best": cold_round, "seconds_to_best": cold_seconds, "metrics": cold["metrics"],
                 "curve": [list(map(float, c)) for c in curve(cold)]},
        "warm": warm,
        "version_1_metrics": first["metrics"],
        "drift": drifts,
        "wall_seconds": time.perf_counter() - clock,
    }


def environment(load: tuple[float, float, float], caps: dict[str, int], threads: int) -> dict[str, Any]:
    """Where a case ran: versions, cores, torch threads, the load average at its start and end, the caps."""
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "threads": threads, "load_average_at_start": load, "load_average_at_end": os.getloadavg(),
            "mode": "joint", "caps": caps}


def write_results(cases: list[dict[str, Any]], out: Path) -> None:
    """results.json, results.md and add_modality.png for `cases` (each with its `environment`)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"cases": cases}, indent=2) + "\n")
    lines = ["# Adding a modality: warm vs cold (benchmarks/add_modality.py)", ""]
    for case in cases:
        env, caps = case["environment"], case["environment"]["caps"]
        threads = f" ({env['threads']} torch thread(s))" if "threads" in env else ""
        lines.append(
            f"- {case['case']}: joint mode, {env['cpus']} cores shared with other work{threads}, load average {env['load_average_at_start'][0]:.1f} at the start and "
            f"{env['load_average_at_end'][0]:.1f} at the end (wall times are inflated); the example spec's "
            f"settings{' with ' + str(caps) if caps else ''}."
        )
    lines += [
        "",
        "| case | version 2 | criterion | cold best | cold: rounds / s to best | warm: rounds / s to cold's best "
        "| warm / cold time |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        cold = case["cold"]
        for kind, warm in case["warm"].items():
            ratio = "not reached" if warm["time_ratio"] is None else f"{warm['time_ratio']:.2f}"
            lines.append(
                f"| {case['case']} | {kind} | {case['criterion']} | {case['cold_best']:.4f} | "
                f"{cold['rounds_to_best']} / {cold['seconds_to_best']:.1f} | {warm['rounds_to_cold_best']} / "
                f"{_seconds(warm['seconds_to_cold_best'])} (warm start {warm['warm_start_seconds']:.1f} s) | {ratio} |"
            )
    lines += ["", "| case | modality | version 2 | entities | mean cosine to version 1 | neighbour overlap@10 |",
              "|---|---|---|---|---|---|"]
    for case in cases:
        for kind, per in case["drift"].items():
            for modality, d in per.items():
                lines.append(f"| {case['case']} | {modality} | {kind} | {d['entities']} | {d['mean_cosine']:.3f} | "
                             f"{d['neighbour_overlap@10']:.3f} |")
    lines += ["", "| case | version | test metrics (every relation's) |", "|---|---|---|"]
    for case in cases:
        versions = [("1 (ratings)", case["version_1_metrics"]), ("2 cold", case["cold"]["metrics"])]
        versions += [(f"2 {kind}", warm["metrics"]) for kind, warm in case["warm"].items()]
        for kind, metrics in versions:
            shown = {k[len("test/"):]: v for k, v in metrics.items()
                     if k.startswith("test/") and k.rsplit("/", 1)[1] in TEST_METRICS and v is not None}
            lines.append(f"| {case['case']} | {kind} | " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(cases, out / "add_modality.png")


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def plot(cases: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(cases), figsize=(7 * len(cases), 10), squeeze=False)
    for column, case in enumerate(cases):
        top = axes[0][column]
        runs = [("cold", case["cold"])] + list(case["warm"].items())
        for (kind, run), style in zip(runs, ("o-", "s-", "^-", "v-", "d-", "x-", "+-")):
            _, seconds, values = run["curve"]
            top.plot(seconds, values, style, label=kind, markersize=3)
        top.axhline(case["cold_best"], color="grey", linestyle="--", label="cold's best")
        top.set(title=f"{case['case']}: version 2", xlabel="wall seconds (warm: from loading the parent)",
                ylabel=case["criterion"])
        top.legend()
        bottom = axes[1][column]
        labels, cosines, overlaps = [], [], []
        for kind, per in case["drift"].items():
            for modality, d in per.items():
                labels.append(f"{modality}: {kind}")
                cosines.append(d["mean_cosine"])
                overlaps.append(d["neighbour_overlap@10"])
        x = np.arange(len(labels))
        bottom.bar(x - 0.2, cosines, 0.4, label="mean cosine")
        bottom.bar(x + 0.2, overlaps, 0.4, label="neighbour overlap@10")
        bottom.axhline(0.8, color="grey", linestyle="--", label="target overlap 0.8")
        bottom.set_xticks(x, labels, rotation=35, ha="right", fontsize=7)
        bottom.set(title="old modalities: version 1 → version 2", ylim=(min(0, *cosines), 1.05))
        bottom.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME:SETTING=VALUE,...` → (NAME, {SETTING: VALUE}), each value read as YAML (numbers, booleans)."""
    name, _, settings = text.partition(":")
    pairs = [item.split("=", 1) for item in settings.split(",") if item]
    if not name or any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected NAME:SETTING=VALUE,..., got {text!r}")
    return name, {key: yaml.safe_load(value) for key, value in pairs}


def _saved_cases(path: Path) -> list[dict[str, Any]]:
    """The cases of a results.json (one written before cases carried their environment has it at the top)."""
    saved = json.loads(path.read_text())
    return [{"environment": saved.get("environment"), **case} for case in saved["cases"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-small", type=Path, help="MovieLens latest-small folder")
    parser.add_argument("--data-100k", type=Path, help="MovieLens-100K folder with u.kg and u.link")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "add_modality")
    parser.add_argument("--rounds", type=int, help="cap on rounds per run (default: the example spec's)")
    parser.add_argument("--patience", type=int, help="early-stopping patience (default: the example spec's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], type=parse_variant,
                        help="NAME:SETTING=VALUE,...: one more warm version 2 with these training settings")
    parser.add_argument("--cases", default="small,100k", help="which cases to run (with their data given)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="RESULTS_JSON",
                        help="train nothing: write --out from the cases of these results.json files (cases run apart)")
    args = parser.parse_args()
    if args.merge:
        write_results([case for path in args.merge for case in _saved_cases(path)], args.out)
        print((args.out / "results.md").read_text())
        return
    torch.set_num_threads(args.threads)
    caps = {name: value for name, value in (("rounds", args.rounds), ("patience", args.patience)) if value is not None}
    cases = []
    with tempfile.TemporaryDirectory(prefix="add-modality-") as work:
        planned = [("latest-small: ratings → + tags", "movielens-latest-small.yaml", args.data_small, "small"),
                   ("100K: ratings → + Freebase KG", "movielens-100k-kg.yaml", args.data_100k, "100k")]
        for name, example, data, folder in planned:
            if data is not None and folder in args.cases.split(","):
                load = os.getloadavg()
                case = run_case(name, EXAMPLES / example, data, Path(work) / folder, caps, dict(args.variant))
                cases.append({**case, "environment": environment(load, caps, args.threads)})
                write_results(cases, args.out)  # each case as it finishes
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
