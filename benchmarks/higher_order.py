"""Higher-order benchmark: tag recommendation (order 3) and knowledge-graph link prediction, HyperLearn against
its peers on the same splits, in one process.

    python benchmarks/higher_order.py --data-small DIR --data-100k DIR [--out DIR] [--quick]

`--data-small` holds MovieLens latest-small (ratings.csv, tags.csv, movies.csv); `--data-100k` MovieLens-100K
with its Freebase graph (fetched there with `fetch_movielens_100k` when missing). Each dataset goes through the
real pipeline once (examples/movielens-latest-small.yaml, examples/movielens-100k-kg.yaml: load_spec → ingest
→ build_graphs), and every model reads its splits from that run directory, so all see the same entries.

Tags (relation `tagging`, target `tag`, queries = held-out (user, movie) posts), once per split seed (the
test split holds under 200 posts, so one split's NDCG@10 has a standard error near 0.02); the tables show means
over the seeds ± their standard error:
- HyperLearn joint and distributed (hyperlearn.flows.cluster: 2 process workers × 1 thread, one trainer actor per
  modality), on the spec's relations (tags + ratings) and on the tags alone, with the spec's settings (a grid of
  learning rates can be given, chosen on validation NDCG@10 of joint runs on copies whose test splits are empty).
- Popularity (hyperlearn.ranking): global, per item, per user + item mixed with the weight chosen on validation,
  and hyperlearn.ranking's per-context popularity.
- PITF and plain CP with BPR (benchmarks/ranking_peers.py): (learning rate, l2, dim ∈ {32, 64}) chosen on
  validation NDCG@10 from a small grid, each setting early-stopped on validation (up to 200 epochs).
Knowledge graph (relation `triple`, target `tail_id`, queries = held-out (head, relation) pairs):
- HyperLearn joint with the triples first (the headline relation, which stops training) and the ratings and
  movie links after them, and on the triples alone.
- PyKEEN DistMult, ComplEx and CP at dimension 64, trained by PyKEEN's own sLCWA loop with the margin ranking
  loss and early-stopped on the validation MRR every model here is stopped on (hyperlearn.ranking's, checked
  every few epochs); read with PyKEEN's own filtered evaluator (per test triple, tails) and through
  hyperlearn.ranking (per query).
- Popularity: global, and per (head, relation type) context.
- Rating RMSE with and without the KG: HyperLearn joint with the ratings first (then triples and links) and on
  the ratings alone, same settings.

"train s" is training without the validation checks: HyperLearn's `fit_seconds` (its rounds and refit), the BPR
peers' and PyKEEN's epochs of the chosen setting.
Every choice reads validation only; test is read once per model. Ranking metrics are hyperlearn.ranking's
(filtered of the train and validation entries, ties pessimistic, means over queries). In-process models run on
`--threads` torch threads (default 2). Outputs in --out: results.json, results.md, validation curves (PNG).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root is not on sys.path, benchmarks/ is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from distributed import Client

from benchmarks.ranking_peers import (
    BprSettings,
    PykeenSettings,
    axis_popularity_scorer,
    choose_mix,
    mixed_scorer,
    train_bpr_peer,
    train_pykeen,
)
from hyperlearn.config import TrainingConfig
from hyperlearn.coordinator import train_distributed
from hyperlearn.flows.cluster import make_cluster
from hyperlearn.joint import train_joint
from hyperlearn.pipeline.graph_build import build_graphs
from hyperlearn.pipeline.ingest import ingest
from hyperlearn.pipeline.sources.movielens import fetch_movielens_100k
from hyperlearn.pipeline.spec import DatasetSpec, load_spec
from hyperlearn.ranking import (
    QueryScorer,
    RankingQueries,
    context_popularity_scorer,
    global_popularity_scorer,
    ranking_metrics,
    ranking_queries,
)
from hyperlearn.result import TrainResult
from hyperlearn.rundir import SPLITS, Entries, RunDir

REPO = Path(__file__).resolve().parents[1]
TAG_SPEC = REPO / "examples" / "movielens-latest-small.yaml"
KG_SPEC = REPO / "examples" / "movielens-100k-kg.yaml"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "higher_order"
KS = (1, 3, 10)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How much to run: the full benchmark or the `--quick` smoke check."""

    split_seeds: tuple[int, ...]  # the tag benchmark runs once per split seed; its tables show mean ± std. error
    tag_rounds: int
    kg_rounds: int
    learning_rates: tuple[float, ...]  # HyperLearn's grid on the tags, chosen on validation
    kg_learning_rates: tuple[float, ...]  # HyperLearn's grid on the KG
    peer_grid: tuple[tuple[float, float, int], ...]  # the BPR peers' (learning rate, l2, dim) grid, on validation
    peer_epochs: int  # at most; each peer early-stops on validation
    pykeen: PykeenSettings
    pykeen_models: tuple[str, ...]


def grid(rates: Sequence[float], l2s: Sequence[float], dims: Sequence[int]) -> tuple[tuple[float, float, int], ...]:
    return tuple((rate, l2, dim) for rate in rates for l2 in l2s for dim in dims)


FULL = Plan(split_seeds=(0, 1, 2), tag_rounds=40, kg_rounds=30, learning_rates=(0.01,), kg_learning_rates=(0.01,),
            peer_grid=grid((0.01, 0.003), (1e-4,), (32, 64)), peer_epochs=200,
            pykeen=PykeenSettings(max_epochs=100, check_every=4, patience=3), pykeen_models=("DistMult", "ComplEx", "CP"))
QUICK = Plan(split_seeds=(0,), tag_rounds=6, kg_rounds=3, learning_rates=(0.01,), kg_learning_rates=(0.01,),
             peer_grid=grid((0.01,), (1e-4,), (32, 64)), peer_epochs=8,
             pykeen=PykeenSettings(max_epochs=2, check_every=1, patience=1), pykeen_models=("DistMult",))


# --- data through the pipeline -----------------------------------------------------------------------------------


def prepare(spec: DatasetSpec, root: Path) -> RunDir:
    """Ingest `spec` and build its graphs into `root/<dataset>` with the real pipeline; return that run dir."""
    run = RunDir(root / spec.name)
    ingest(spec, run, root / f"{spec.name}-catalog")
    build_graphs(spec, run)
    return run


def run_copy(prepared: RunDir, destination: Path, keep: Sequence[str] | None = None, test: bool = True) -> RunDir:
    """A private copy of `prepared` with only the relations in `keep` (all when None), in that order, and the
    catalogs of the modalities they span, its test splits emptied when `test` is False (for choices made on
    validation)."""
    shutil.copytree(prepared.path, destination, ignore=shutil.ignore_patterns("checkpoints"))
    run = RunDir(destination)
    names = run.relation_names()
    kept = names if keep is None else list(keep)
    for name in set(names) - set(kept):
        run.remove_relation(name)
    run.order_relations(kept)
    spanned = {modality for name in kept for modality in run.read_relation_meta(name).modalities}
    for catalog in run.catalog.glob("*.parquet"):
        if catalog.stem not in spanned:
            catalog.unlink()
            if run.graph(catalog.stem).exists():
                run.graph(catalog.stem).unlink()
    if not test:
        for name in kept:
            meta = run.read_relation_meta(name)
            splits = {split: run.read_relation_split(name, split) for split in SPLITS}
            empty = Entries(np.empty((meta.order, 0), np.int64), np.empty(0, np.float32), meta.shape)
            run.write_relation(meta, {**splits, "test": empty})
    return run


@dataclass(frozen=True)
class RankingTask:
    """One relation's ranking task as every model sees it: coordinates per split, the target axis, the axis
    sizes, and the validation (known: train) and test (known: train + validation) queries."""

    train: np.ndarray
    validation: np.ndarray
    sizes: tuple[int, ...]
    target: int
    validation_queries: RankingQueries
    test_queries: RankingQueries

    def validate(self, scorer: QueryScorer, metric: str) -> float:
        return ranking_metrics(self.validation_queries, scorer, KS)[metric]

    def test(self, scorer: QueryScorer) -> dict[str, float]:
        return ranking_metrics(self.test_queries, scorer, KS)


def ranking_task(run: RunDir, relation: str) -> RankingTask:
    meta = run.read_relation_meta(relation)
    if meta.evaluation is None:
        raise ValueError(f"relation {relation!r} has no evaluation target")
    coords = {split: run.read_relation_split(relation, split).coords for split in SPLITS}
    target, candidates = meta.evaluation.target, meta.shape[meta.evaluation.target]
    fitted = np.concatenate([coords["train"], coords["validation"]], axis=1)
    return RankingTask(
        coords["train"], coords["validation"], tuple(meta.shape), target,
        ranking_queries(coords["validation"], coords["train"], target, candidates),
        ranking_queries(coords["test"], fitted, target, candidates),
    )


# --- HyperLearn -------------------------------------------------------------------------------------------------


def hyperlearn_record(name: str, result: TrainResult, relation: str, metric: str, wall: float) -> dict[str, Any]:
    """What the tables and curves need from one HyperLearn run."""
    prefix = f"test/{relation}/"
    return {
        "model": name,
        "test": {key.removeprefix(prefix): value for key, value in result.metrics.items() if key.startswith(prefix)},
        "curve": [row.get(f"validation/{relation}/{metric}") for row in result.history],
        "best_round": result.metrics.get("best_round"),
        "rounds_run": result.metrics.get("rounds_run"),
        "train_seconds": result.metrics["fit_seconds"],
        "wall_seconds": wall,
        "metrics": result.metrics,
    }


def timed(train: Callable[[], TrainResult]) -> tuple[TrainResult, float]:
    start = time.perf_counter()
    result = train()
    return result, time.perf_counter() - start


def choose_learning_rate(prepared: RunDir, keep: Sequence[str] | None, config: TrainingConfig,
                         rates: Sequence[float], relation: str, metric: str, scratch: Path, log: Log) -> dict[str, Any]:
    """The learning rate whose joint run reaches the best validation `metric` of `relation` at any round,
    trained on a copy without test entries; a grid of one rate is taken as it is, without a run."""
    if len(rates) == 1:
        return {"chosen": rates[0], "search": {}}
    search = {}
    for number, rate in enumerate(rates):
        copy = run_copy(prepared, scratch / f"select-{relation}-{len(keep or ())}-{number}", keep, test=False)
        result = train_joint(copy, config.replace(learning_rate=rate, refit=False), log=lambda line: None)
        curve = [row.get(f"validation/{relation}/{metric}", float("nan")) for row in result.history]
        search[rate] = float(np.nanmax(curve))
        log(f"[select] {relation} {keep or 'all'} lr {rate}: best validation {metric} {search[rate]:.4f}")
    chosen = max(search, key=lambda rate: search[rate])
    return {"chosen": chosen, "search": search}


# --- the two benchmarks -------------------------------------------------------------------------------------------


def with_split_seed(spec: DatasetSpec, seed: int) -> DatasetSpec:
    """`spec` with every split (the dataset's and each relation's own) drawn from `seed`."""
    relations = tuple(relation if relation.split is None else replace(relation, split=replace(relation.split, seed=seed))
                      for relation in spec.relations)
    return replace(spec, split=replace(spec.split, seed=seed), relations=relations)


def tag_benchmark(data: Path, plan: Plan, scratch: Path, client: Client, log: Log) -> dict[str, Any]:
    """The tag benchmark once per split seed of `plan`, and its rows summarised over the seeds."""
    spec = load_spec(TAG_SPEC, data_root=data)
    per_seed = {seed: tag_split(with_split_seed(spec, seed), plan, scratch / f"seed-{seed}", client,
                                lambda line, seed=seed: log(f"[seed {seed}] {line}"))
                for seed in plan.split_seeds}
    return {"relation": "tagging", "headline": "ndcg@10", "seeds": per_seed,
            "rows": summarise([split["rows"] for split in per_seed.values()])}


def tag_split(spec: DatasetSpec, plan: Plan, scratch: Path, client: Client, log: Log) -> dict[str, Any]:
    """Every model of the tag benchmark on the splits of `spec`."""
    prepared = prepare(spec, scratch / "prepared")
    task = ranking_task(prepared, "tagging")
    config = spec.training.replace(rounds=plan.tag_rounds, device="cpu")
    rows, selection = [], {}
    for label, keep in (("tags + ratings", None), ("tags only", ["tagging"])):
        choice = choose_learning_rate(prepared, keep, config, plan.learning_rates, "tagging", "ndcg@10", scratch, log)
        selection[label] = choice
        chosen = config.replace(learning_rate=choice["chosen"])
        for mode in ("joint", "distributed"):
            run = run_copy(prepared, scratch / f"tags-{mode}-{len(keep or ())}", keep)
            train = ((lambda: train_joint(run, chosen, log=lambda line: None)) if mode == "joint"
                     else (lambda: train_distributed(client, run, chosen, log=lambda line: None)))
            result, wall = timed(train)
            rows.append({**hyperlearn_record(f"HyperLearn {mode} ({label})", result, "tagging", "ndcg@10", wall),
                         "config": chosen.to_dict(), "validation_best": choice["search"].get(choice["chosen"])})
            log(f"[tags] {rows[-1]['model']}: test NDCG@10 {rows[-1]['test'].get('ndcg@10', float('nan')):.4f}")
    rows += popularity_rows(task, log)
    for kind, name in (("pitf", "PITF"), ("cp", "CP")):
        rows.append(bpr_row(kind, name, task, plan, log))
    return {"rows": rows, "selection": selection,
            "queries": {"validation": task.validation_queries.size, "test": task.test_queries.size},
            "entries": {"train": task.train.shape[1], "validation": task.validation.shape[1]}}


def summarise(splits: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per model over the splits: the mean of each test metric and of the train seconds, the standard
    error of the mean over splits (`test_se`, 0 for one split), the first split's curve."""
    rows = []
    for first, *others in zip(*splits):
        same = [first, *others]
        if any(row["model"] != first["model"] for row in same):
            raise ValueError(f"the splits' rows are not the same models: {[row['model'] for row in same]}")
        values = {key: np.array([row["test"][key] for row in same]) for key in first["test"]}
        rows.append({
            "model": first["model"], "splits": len(same), "curve": first.get("curve", []),
            "test": {key: float(v.mean()) for key, v in values.items()},
            "test_se": {key: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0 for key, v in values.items()},
            "train_seconds": float(np.mean([row["train_seconds"] for row in same])),
        })
    return rows


def popularity_rows(task: RankingTask, log: Log) -> list[dict[str, Any]]:
    """Global, per item, per user + item (mix weight on validation) and per-context popularity."""
    user, item = (axis for axis in range(len(task.sizes)) if axis != task.target)
    per_user = axis_popularity_scorer(task.train, task.target, task.sizes, [user])
    per_item = axis_popularity_scorer(task.train, task.target, task.sizes, [item])
    weight, search = choose_mix(per_user, per_item, lambda scorer: task.validate(scorer, "ndcg@10"))
    log(f"[popularity] user/item mix weight {weight} chosen on validation")
    scorers = {
        "popularity (global)": global_popularity_scorer(task.train, task.target, task.sizes[task.target]),
        "popularity (per item)": per_item,
        "popularity (per user + item, mixed)": mixed_scorer(per_user, per_item, weight),
        "popularity (hyperlearn.ranking per context)": context_popularity_scorer(task.train, task.target, task.sizes),
    }
    rows = []
    for name, scorer in scorers.items():
        start = time.perf_counter()
        test = task.test(scorer)
        rows.append({"model": name, "test": test, "train_seconds": time.perf_counter() - start, "curve": []})
    rows[2].update(mix_weight=weight, mix_search=search)
    return rows


def bpr_row(kind: str, name: str, task: RankingTask, plan: Plan, log: Log, tables: Sequence[int] | None = None,
            ) -> dict[str, Any]:
    """A BPR peer with (learning rate, l2, dim) chosen on validation NDCG@10 from `plan.peer_grid`, each setting
    early-stopped on validation; test read once, from the chosen model. `train_seconds` is the chosen setting's
    training time (validation checks excluded), `search_seconds` the whole grid's."""
    results = {}
    for rate, l2, dim in plan.peer_grid:
        settings = BprSettings(learning_rate=rate, l2=l2, dim=dim, epochs=plan.peer_epochs)
        results[(rate, l2, dim)] = train_bpr_peer(kind, task.train, task.sizes, task.target,
                                                  lambda scorer: task.validate(scorer, "ndcg@10"), settings, tables=tables)
        result = results[(rate, l2, dim)]
        log(f"[{kind}] lr {rate} l2 {l2} dim {dim}: best validation NDCG@10 {max(result.history):.4f} "
            f"at epoch {result.best_epoch} of {len(result.history)}, {result.seconds:.1f} s")
    chosen = max(results, key=lambda key: max(results[key].history))
    best = results[chosen]
    rate, l2, dim = chosen
    return {"model": f"{name} (BPR)", "test": task.test(best.scorer), "curve": best.history,
            "best_round": best.best_epoch, "train_seconds": best.seconds,
            "search_seconds": sum(result.seconds for result in results.values()),
            "config": asdict(BprSettings(learning_rate=rate, l2=l2, dim=dim, epochs=plan.peer_epochs)),
            "search": {str(key): max(result.history) for key, result in results.items()}}


def kg_benchmark(data: Path, plan: Plan, scratch: Path, log: Log) -> dict[str, Any]:
    fetch_movielens_100k(data)
    spec = load_spec(KG_SPEC, data_root=data)
    prepared = prepare(spec, scratch / "prepared")
    task = ranking_task(prepared, "triple")
    config = spec.training.replace(rounds=plan.kg_rounds, device="cpu")
    rows, rating_rows, selection = [], [], {}
    # The first relation of a run is its headline, the one that stops training: the KG table's runs put the
    # triples first, the RMSE table's the ratings.
    runs = (("ratings + KG + links", ["triple", "rating", "link"]), ("triples only", ["triple"]),
            ("ratings + KG + links", ["rating", "triple", "link"]), ("ratings only", ["rating"]))
    for label, keep in runs:
        relation, metric = ("triple", "mrr") if keep[0] == "triple" else ("rating", "rmse")
        if (relation, label) not in selection:
            selection[relation, label] = choose_learning_rate(prepared, keep, config, plan.kg_learning_rates,
                                                              relation, metric, scratch, log)
        chosen = config.replace(learning_rate=selection[relation, label]["chosen"])
        run = run_copy(prepared, scratch / f"kg-{'-'.join(keep)}", keep)
        result, wall = timed(lambda: train_joint(run, chosen, log=lambda line: None))
        record = {**hyperlearn_record(f"HyperLearn joint ({label})", result, relation, metric, wall),
                  "config": chosen.to_dict()}
        if relation == "triple":
            rows.append(record)
            log(f"[kg] {record['model']}: test MRR {record['test'].get('mrr', float('nan')):.4f}")
        else:
            rating_rows.append(record)
            log(f"[rating] {label}: test RMSE {record['test'].get('rmse', float('nan')):.4f}")
    for model in plan.pykeen_models:
        triples = {split: coords for split, coords in
                   (("train", task.train), ("validation", task.validation),
                    ("test", prepared.read_relation_split("triple", "test").coords))}
        trained = train_pykeen(model, triples, task.sizes[0], task.sizes[1],
                               lambda scorer: task.validate(scorer, "mrr"), plan.pykeen)
        rows.append({"model": f"PyKEEN {model} (dim {plan.pykeen.dim})", "test": task.test(trained.scorer),
                     "pykeen_test": trained.metrics, "curve": trained.history, "best_round": trained.best_epoch,
                     "epochs_run": trained.epochs_run, "train_seconds": trained.seconds,
                     "config": asdict(plan.pykeen)})
        log(f"[kg] PyKEEN {model}: best epoch {trained.best_epoch} of {trained.epochs_run}, "
            f"MRR (ours) {rows[-1]['test']['mrr']:.4f}, "
            f"(PyKEEN, per triple) {trained.metrics['inverse_harmonic_mean_rank']:.4f}, {trained.seconds:.1f} s")
    baselines = {"popularity (global)": global_popularity_scorer(task.train, task.target, task.sizes[task.target]),
                 "popularity (per head and relation type, hyperlearn.ranking per context)":
                     context_popularity_scorer(task.train, task.target, task.sizes)}
    for name, scorer in baselines.items():
        rows.append({"model": name, "curve": [], "train_seconds": 0.0, "test": task.test(scorer)})
    return {"relation": "triple", "headline": "mrr", "rows": rows, "rating_rows": rating_rows,
            "selection": {f"{label} ({relation} first)": choice for (relation, label), choice in selection.items()},
            "queries": {"validation": task.validation_queries.size, "test": task.test_queries.size}}


# --- report ---------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def _pm(mean: float | None, error: float | None) -> str:
    return _fmt(mean) if not error else f"{_fmt(mean)} ± {_fmt(error, 3)}"


def markdown(results: Mapping[str, Any]) -> str:
    lines = [f"# Higher-order benchmark{' (--quick)' if results['quick'] else ''}", "",
             f"`{results['command']}` — {results['wall_seconds'] / 60:.1f} min on {results['machine']['cpus']} CPUs, "
             f"commit {results['git']}.", ""]
    tags, kg = results["tags"], results["kg"]
    if kg is None:
        lines += ["**Stopped before the KG part finished: the tag tables only.**", ""]
        kg = {"rows": [], "rating_rows": [], "selection": {}, "queries": {"test": 0}}
    seeds = tags["seeds"]
    posts = ", ".join(str(split["queries"]["test"]) for split in seeds.values())
    lines += [f"## Tag recommendation (MovieLens latest-small; {len(seeds)} split seeds, {posts} test posts)", "",
              "Means over the split seeds ± their standard error; train s is training without the validation "
              "checks (HyperLearn: its rounds and refit; the BPR peers: the chosen setting's epochs).", "",
              "| model | NDCG@10 | Recall@10 | Hits@10 | MRR | train s |", "|---|---|---|---|---|---|"]
    for row in tags["rows"]:
        t, se = row["test"], row["test_se"]
        cells = " | ".join(_pm(t.get(key), se.get(key)) for key in ("ndcg@10", "recall@10", "hits@10", "mrr"))
        lines.append(f"| {row['model']} | {cells} | {_fmt(row['train_seconds'], 1)} |")
    lines += ["", "Test NDCG@10 per split seed:", "", "| model | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    for number, row in enumerate(tags["rows"]):
        per_seed = " | ".join(_fmt(split["rows"][number]["test"].get("ndcg@10")) for split in seeds.values())
        lines.append(f"| {row['model']} | {per_seed} |")
    lines += ["", f"## Link prediction (MovieLens-100K Freebase KG, {kg['queries']['test']} test (head, relation) "
              "queries, tails ranked, filtered)", "",
              "| model | MRR | Hits@10 | Recall@10 | Hits@1 | PyKEEN MRR (per triple) | PyKEEN Hits@10 | train s |",
              "|---|---|---|---|---|---|---|---|"]
    for row in kg["rows"]:
        t, p = row["test"], row.get("pykeen_test", {})
        lines.append(f"| {row['model']} | {_fmt(t.get('mrr'))} | {_fmt(t.get('hits@10'))} | {_fmt(t.get('recall@10'))} "
                     f"| {_fmt(t.get('hits@1'))} | {_fmt(p.get('inverse_harmonic_mean_rank'))} | "
                     f"{_fmt(p.get('hits_at_10'))} | {_fmt(row['train_seconds'], 1)} |")
    lines += ["", "## Does the KG lower rating RMSE? (u1.test)", "", "| model | test RMSE | train s |", "|---|---|---|"]
    for row in kg["rating_rows"]:
        lines.append(f"| {row['model']} | {_fmt(row['test'].get('rmse'))} | {_fmt(row['train_seconds'], 1)} |")
    tag_choices = {seed: split["selection"] for seed, split in seeds.items()}
    lines += ["", "Choices on validation: " + json.dumps({"tags": tag_choices, "kg": kg["selection"]}, default=str), ""]
    return "\n".join(lines)


def plot_curves(results: Mapping[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, metric, label in (("tags", "ndcg@10", "validation NDCG@10 (tags)"),
                               ("kg", "mrr", "validation MRR (KG tails; PyKEEN: its own, per triple)")):
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for row in (results[key] or {"rows": []})["rows"]:
            curve = [value for value in row.get("curve", []) if value is not None]
            if curve:
                axes.plot(range(len(curve)) if row["model"].startswith("HyperLearn") else range(1, len(curve) + 1),
                          curve, marker=".", label=row["model"])
        axes.set_xlabel("round (HyperLearn) / epoch (BPR peers) / check (PyKEEN)")
        axes.set_ylabel(label)
        if axes.get_legend_handles_labels()[0]:  # a part not run yet has no curves
            axes.legend(fontsize=7)
        figure.tight_layout()
        path = out / f"{key}_validation_{metric.replace('@', '_at_')}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths


def machine_info() -> dict[str, Any]:
    import os

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (" (dirty)" if git("status", "--porcelain") else "")


def run_benchmark(args: argparse.Namespace, log: Log) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": " ".join(["python", "benchmarks/higher_order.py", *sys.argv[1:]]),
                               "quick": args.quick, "plan": asdict(plan), "tags": None, "kg": None,
                               "machine": machine_info(), "git": git_state()}

    def write() -> None:  # after each part, so a long run that is stopped keeps what it finished
        results["wall_seconds"] = time.perf_counter() - start
        (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (args.out / "results.md").write_text(markdown(results))
        plot_curves(results, args.out)

    with tempfile.TemporaryDirectory(prefix="hyperlearn-higher-order-") as scratch:
        cluster = make_cluster(2, "cpu", threads_per_worker=1, log=log)
        with cluster, Client(cluster) as client:
            results["tags"] = tag_benchmark(args.data_small, plan, Path(scratch) / "tags", client, log)
        write()
        results["kg"] = kg_benchmark(args.data_100k, plan, Path(scratch) / "kg", log)
    write()
    log(f"[done] {results['wall_seconds'] / 60:.1f} min; wrote {args.out}")
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-small", type=Path, required=True, help="MovieLens latest-small folder")
    parser.add_argument("--data-100k", type=Path, required=True, help="MovieLens-100K folder (fetched when missing)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="a ~3-minute smoke run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of in-process models")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_benchmark(args, lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
