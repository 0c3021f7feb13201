"""A built-in multimodal demo dataset with planted low-rank structure, small enough to train in seconds.

`generate_demo` writes a folder that exercises every part of the pipeline, and a `truth.json` that says what a
model should recover. The planted model:

- Users and items fall into latent clusters. An entity's factor (rank R) is its cluster's centroid plus a small
  individual offset, so entities of one cluster have similar factors.
- Side features follow the clusters (users: age and occupation; items: release year and genre flags), so a
  k-NN graph over the features links entities with similar factors: the intra-modal graphs carry information.
- A rating is μ + b_u + b_i + ⟨u, v⟩ + N(0, noise²), observed for pairs drawn with skewed user activity and
  item popularity. Some pairs are rated again later (the spec keeps the last rating), and a handful of rows are
  deliberately malformed so that a run shows its quarantine.
- A tagging (user, item, tag) is drawn among the rated pairs with probability ∝ exp(β·z), z the standardised
  triple product Σ_r u_r v_r t_r: an implicit relation of order 3.

Keys are strings (`u0001`, `i0042`, `t007`). The same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

SPEC_FILE = "demo.yaml"
TRUTH_FILE = "truth.json"
GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi", "documentary", "animation")
OCCUPATIONS = ("student", "engineer", "artist", "educator", "doctor", "writer", "retired", "other")
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
TAGGING_COLUMNS = ("user_id", "item_id", "tag", "timestamp")
TRAINING = {"rank": 8, "l2": 0.03, "rounds": 30}  # l2 chosen on validation (0.03: 0.391, 0.05: 0.399); planted rank 6
TAGGING_WEIGHT = 0.3  # the taggings' ranking loss is several times the ratings' squared error: keep ratings first

GLOBAL_MEAN = 3.5
USER_BIAS_STD = 0.3
ITEM_BIAS_STD = 0.4
INTERACTION_STD = 0.8  # approximate standard deviation of ⟨u, v⟩
INDIVIDUAL_SPREAD = 0.35  # an entity's offset from its cluster centroid, relative to the centroids' scale
TAG_SHARPNESS = 1.5  # β: how strongly the triple product drives which taggings are observed
START_TIME = 1_577_836_800  # 2020-01-01T00:00:00Z
DAY = 86_400
YEAR = 365 * DAY

# (column, replacement value or None to drop the last field, reason): one malformed rating row each.
MALFORMED_RATINGS = (
    ("user_id", "", "missing user key"),
    ("item_id", "", "missing item key"),
    ("rating", "four", "non-numeric rating"),
    ("rating", "inf", "infinite rating"),
    ("timestamp", None, "3 fields instead of 4"),
)


@dataclass(frozen=True)
class _Planted:
    """The hidden model: cluster labels, factors and biases of every entity."""

    n_clusters: int
    user_cluster: np.ndarray
    item_cluster: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    tag_factors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray

    def expected_rating(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        interaction = np.einsum("nr,nr->n", self.user_factors[users], self.item_factors[items])
        return GLOBAL_MEAN + self.user_bias[users] + self.item_bias[items] + interaction


def generate_demo(
    dest: Path,
    *,
    n_users: int = 600,
    n_items: int = 400,
    n_tags: int = 60,
    rank: int = 6,
    seed: int = 0,
    noise: float = 0.3,
    n_clusters: int = 6,
    n_ratings: int = 18_000,
    n_rerated: int = 200,
    n_taggings: int = 10_000,
) -> Path:
    """Write the demo dataset into `dest` and return the path of its spec, `dest/demo.yaml`.

    Files: `users.csv` (user_id, age, occupation), `items.csv` (item_id, year, one 0/1 column per genre),
    `ratings.csv` (user_id, item_id, rating, timestamp: `n_ratings` distinct pairs, `n_rerated` of them rated
    again later, plus the malformed rows of MALFORMED_RATINGS), `taggings.csv` (user_id, item_id, tag,
    timestamp: `n_taggings` distinct triples), `truth.json` (noise level, counts, malformed row numbers,
    cluster of every user and item) and the spec.
    """
    _check_sizes(
        n_users=n_users, n_items=n_items, n_tags=n_tags, rank=rank, n_clusters=n_clusters, n_ratings=n_ratings,
        n_rerated=n_rerated, n_taggings=n_taggings, noise=noise,
    )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    planted = _plant(rng, n_users, n_items, n_tags, rank, n_clusters)
    user_keys, item_keys, tag_keys = _keys("u", n_users, 4), _keys("i", n_items, 4), _keys("t", n_tags, 3)

    _write_csv(dest / "users.csv", ("user_id", "age", "occupation"), _user_rows(rng, planted, user_keys))
    _write_csv(dest / "items.csv", ("item_id", "year", *GENRES), _item_rows(rng, planted, item_keys))

    users, items = _rated_pairs(rng, n_users, n_items, n_ratings)
    rows, noise_rmse = _rating_rows(rng, planted, users, items, n_rerated, noise, user_keys, item_keys)
    rows, malformed = _with_malformed_rows(rng, rows, user_keys, item_keys)
    _write_csv(dest / "ratings.csv", RATING_COLUMNS, rows)

    tagging_rows = _tagging_rows(rng, planted, users, items, n_taggings, user_keys, item_keys, tag_keys)
    _write_csv(dest / "taggings.csv", TAGGING_COLUMNS, tagging_rows)

    truth = {
        "seed": seed,
        "rank": rank,
        "clusters": n_clusters,
        "noise": noise,
        "rating_noise_rmse": round(noise_rmse, 6),
        "global_mean": GLOBAL_MEAN,
        "tag_sharpness": TAG_SHARPNESS,
        "counts": {
            "users": n_users,
            "items": n_items,
            "tags": n_tags,
            "rating_rows": len(rows),
            "rating_entries": n_ratings,
            "rerated": n_rerated,
            "malformed": len(malformed),
            "tagging_rows": len(tagging_rows),
        },
        "malformed_rows": malformed,
        "user_cluster": dict(zip(user_keys, planted.user_cluster.tolist())),
        "item_cluster": dict(zip(item_keys, planted.item_cluster.tolist())),
    }
    (dest / TRUTH_FILE).write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    spec_path = dest / SPEC_FILE
    spec_path.write_text(_spec_text(seed), encoding="utf-8")
    return spec_path


def _check_sizes(
    *, n_users: int, n_items: int, n_tags: int, rank: int, n_clusters: int, n_ratings: int, n_rerated: int,
    n_taggings: int, noise: float,
) -> None:
    positive = {"n_users": n_users, "n_items": n_items, "n_tags": n_tags, "rank": rank, "n_clusters": n_clusters,
                "n_ratings": n_ratings, "n_taggings": n_taggings}
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if n_ratings > n_users * n_items:
        raise ValueError(f"n_ratings={n_ratings} exceeds the {n_users * n_items} user-item pairs")
    if not 0 <= n_rerated <= n_ratings:
        raise ValueError(f"n_rerated must be in [0, n_ratings], got {n_rerated}")
    if n_taggings > n_ratings * n_tags:
        raise ValueError(f"n_taggings={n_taggings} exceeds the {n_ratings * n_tags} (rated pair, tag) triples")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")


def _plant(rng: np.random.Generator, n_users: int, n_items: int, n_tags: int, rank: int, n_clusters: int) -> _Planted:
    # Entries of scale s give ⟨u, v⟩ a standard deviation of about s²·√rank.
    scale = np.sqrt(INTERACTION_STD / np.sqrt(rank))

    def clustered(n: int) -> tuple[np.ndarray, np.ndarray]:
        cluster = rng.integers(n_clusters, size=n)
        centroids = rng.normal(size=(n_clusters, rank))
        return cluster, scale * (centroids[cluster] + INDIVIDUAL_SPREAD * rng.normal(size=(n, rank)))

    user_cluster, user_factors = clustered(n_users)
    item_cluster, item_factors = clustered(n_items)
    return _Planted(
        n_clusters=n_clusters,
        user_cluster=user_cluster,
        item_cluster=item_cluster,
        user_factors=user_factors,
        item_factors=item_factors,
        tag_factors=rng.normal(size=(n_tags, rank)),
        user_bias=rng.normal(0.0, USER_BIAS_STD, size=n_users),
        item_bias=rng.normal(0.0, ITEM_BIAS_STD, size=n_items),
    )


def _keys(prefix: str, n: int, width: int) -> list[str]:
    width = max(width, len(str(n)))
    return [f"{prefix}{number:0{width}d}" for number in range(1, n + 1)]


def _user_rows(rng: np.random.Generator, planted: _Planted, keys: Sequence[str]) -> Iterable[list]:
    """Age centred on a per-cluster age; occupation mostly the cluster's own (a quarter drawn at random)."""
    cluster = planted.user_cluster
    centres = np.linspace(20, 65, planted.n_clusters)
    ages = np.clip(np.rint(centres[cluster] + rng.normal(0, 4, size=cluster.size)), 16, 80).astype(int)
    occupation = np.where(rng.random(cluster.size) < 0.75, cluster % len(OCCUPATIONS),
                          rng.integers(len(OCCUPATIONS), size=cluster.size))
    return ([key, age, OCCUPATIONS[job]] for key, age, job in zip(keys, ages, occupation))


def _item_rows(rng: np.random.Generator, planted: _Planted, keys: Sequence[str]) -> Iterable[list]:
    """Release year centred on a per-cluster year; two home genres per cluster, likely, the others rare."""
    cluster = planted.item_cluster
    centres = np.linspace(1965, 2020, planted.n_clusters)
    years = np.rint(centres[cluster] + rng.normal(0, 3, size=cluster.size)).astype(int)
    genre = np.arange(len(GENRES))
    home = (genre == (cluster % len(GENRES))[:, None]) | (genre == ((cluster + 1) % len(GENRES))[:, None])
    flags = (rng.random((cluster.size, len(GENRES))) < np.where(home, 0.8, 0.05)).astype(int)
    return ([key, year, *row] for key, year, row in zip(keys, years, flags.tolist()))


def _sample_without_replacement(rng: np.random.Generator, log_weights: np.ndarray, size: int) -> np.ndarray:
    """`size` distinct indices drawn one after another with probability ∝ exp(log_weights) (Gumbel top-k)."""
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    top = np.argpartition(-keys, size - 1)[:size]
    return top[np.argsort(-keys[top], kind="stable")]


def _rated_pairs(rng: np.random.Generator, n_users: int, n_items: int, n_ratings: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs; active users and popular items (log-normal weights) are rated more."""
    activity = rng.normal(0, 0.6, size=n_users)
    popularity = rng.normal(0, 0.8, size=n_items)
    cells = _sample_without_replacement(rng, (activity[:, None] + popularity[None, :]).ravel(), n_ratings)
    return np.divmod(cells, n_items)


def _rating_rows(
    rng: np.random.Generator, planted: _Planted, users: np.ndarray, items: np.ndarray, n_rerated: int,
    noise: float, user_keys: Sequence[str], item_keys: Sequence[str],
) -> tuple[list[list], float]:
    """Rating rows in time order, some pairs rated twice; and the RMSE of the kept (last) ratings against the
    noiseless model, the floor a perfect model reaches."""
    expected = planted.expected_rating(users, items)
    values = np.round(expected + noise * rng.normal(size=users.size), 3)
    times = rng.integers(START_TIME, START_TIME + YEAR, size=users.size)
    again = rng.choice(users.size, size=n_rerated, replace=False)
    new_values = np.round(expected[again] + noise * rng.normal(size=n_rerated), 3)
    new_times = times[again] + rng.integers(DAY, 60 * DAY, size=n_rerated)

    kept = values.copy()
    kept[again] = new_values
    noise_rmse = float(np.sqrt(np.mean((kept - expected) ** 2)))

    all_users = np.concatenate([users, users[again]])
    all_items = np.concatenate([items, items[again]])
    all_values = np.concatenate([values, new_values])
    all_times = np.concatenate([times, new_times])
    rows = [
        [user_keys[all_users[i]], item_keys[all_items[i]], f"{all_values[i]:.3f}", int(all_times[i])]
        for i in np.argsort(all_times, kind="stable")
    ]
    return rows, noise_rmse


def _with_malformed_rows(
    rng: np.random.Generator, rows: list[list], user_keys: Sequence[str], item_keys: Sequence[str]
) -> tuple[list[list], list[dict]]:
    """`rows` with one row per MALFORMED_RATINGS entry inserted at random places, and where they went."""
    total = len(rows) + len(MALFORMED_RATINGS)
    positions = np.sort(rng.choice(total, size=len(MALFORMED_RATINGS), replace=False))
    bad_rows, report = {}, []
    for position, (column, value, reason) in zip(positions.tolist(), MALFORMED_RATINGS):
        row = [user_keys[rng.integers(len(user_keys))], item_keys[rng.integers(len(item_keys))], "4.000",
               int(rng.integers(START_TIME, START_TIME + YEAR))]
        if value is None:
            row.pop()
        else:
            row[RATING_COLUMNS.index(column)] = value
        bad_rows[position] = row
        report.append({"row": position + 1, "field": column, "reason": reason})
    good = iter(rows)
    return [bad_rows[i] if i in bad_rows else next(good) for i in range(total)], report


def _tagging_rows(
    rng: np.random.Generator, planted: _Planted, users: np.ndarray, items: np.ndarray, n_taggings: int,
    user_keys: Sequence[str], item_keys: Sequence[str], tag_keys: Sequence[str],
) -> list[list]:
    """Distinct (user, item, tag) triples over the rated pairs, likelier the larger Σ_r u_r v_r t_r; time order."""
    pair_factors = planted.user_factors[users] * planted.item_factors[items]
    score = pair_factors @ planted.tag_factors.T  # rated pairs × tags
    z = (score - score.mean()) / (score.std() or 1.0)
    chosen = _sample_without_replacement(rng, TAG_SHARPNESS * z.ravel(), n_taggings)
    pair, tag = np.divmod(chosen, len(tag_keys))
    times = rng.integers(START_TIME, START_TIME + YEAR, size=n_taggings)
    return [
        [user_keys[users[pair[i]]], item_keys[items[pair[i]]], tag_keys[tag[i]], int(times[i])]
        for i in np.argsort(times, kind="stable")
    ]


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _spec_text(seed: int) -> str:
    """The dataset spec (docs/design.md format), paths relative to the spec's folder."""
    def source(name: str) -> dict:
        return {"path": name, "format": "csv"}

    spec = {
        "name": "demo",
        "modalities": [
            {
                "name": "user",
                "features": {"source": source("users.csv"), "key": "user_id", "numeric": ["age"],
                             "categorical": ["occupation"]},
                "graph": {"knn": {"k": 10}},
            },
            {
                "name": "item",
                "features": {"source": source("items.csv"), "key": "item_id", "numeric": ["year", *GENRES]},
                "graph": {"knn": {"k": 10}},
            },
            {"name": "tag"},
        ],
        "relations": [
            {
                "name": "rating",
                "modalities": {"user": "user_id", "item": "item_id"},
                "value": "rating",
                "loss": "squared",
                "time": "timestamp",
                "duplicates": "last",
                "source": source("ratings.csv"),
            },
            {
                "name": "tagging",
                "modalities": {"user": "user_id", "item": "item_id", "tag": "tag"},
                "value": 1,
                "loss": "bpr",
                "evaluate": {"target": "tag", "k": [5, 10]},
                "weight": TAGGING_WEIGHT,
                "time": "timestamp",
                "duplicates": "last",
                "source": source("taggings.csv"),
            },
        ],
        "split": {"test": 0.1, "validation": 0.05, "seed": 0, "group_by": ["user", "item"]},
        "training": dict(TRAINING),
    }
    header = (
        f"# HyperLearn demo dataset, generated by hyperlearn.pipeline.sources.synthetic.generate_demo(seed={seed}).\n"
        "# Planted truth (noise level, clusters, malformed rows): truth.json.\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=110)
