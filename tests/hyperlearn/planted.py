"""A small run directory with planted low-rank structure, written straight in the trainers' formats.

Users and items live in latent clusters that their features reveal (so k-NN graphs are informative);
ratings = μ + biases + ⟨u, i⟩ + noise (order 2, squared loss) and taggings are user×item×tag triples drawn
with probability increasing in Σ_r u_r i_r t_r (order 3, BPR loss, PITF's pairwise structure, evaluated by
ranking tags for held-out (user, item) posts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hyperlearn.graphs import knn_graph, normalized_laplacian
from hyperlearn.rundir import Entries, Evaluation, RelationMeta, RunDir

NOISE = 0.3


def _clustered(rng, n, rank, clusters):
    labels = rng.integers(clusters, size=n)
    centres = rng.normal(scale=0.8, size=(clusters, rank))
    latent = centres[labels] + rng.normal(scale=0.15, size=(n, rank))
    features = np.eye(clusters)[labels] + rng.normal(scale=0.1, size=(n, clusters))
    return latent, features


def _write_splits(run: RunDir, meta: RelationMeta, coords, values, rng):
    order = rng.permutation(len(values))
    cut_test, cut_val = int(0.8 * len(order)), int(0.9 * len(order))
    parts = {"train": order[:cut_test], "validation": order[cut_test:cut_val], "test": order[cut_val:]}
    run.write_relation(
        meta, {split: Entries(coords[:, index], values[index].astype(np.float32), meta.shape) for split, index in parts.items()}
    )


def write_planted_run(
    run_dir: Path, seed: int = 0, n_users: int = 240, n_items: int = 160, n_tags: int = 20, rank: int = 4, n_ratings: int = 6000,
    tagging_weight: float = 0.5,
) -> RunDir:
    run = RunDir(run_dir)
    rng = np.random.default_rng(seed)
    users, user_features = _clustered(rng, n_users, rank, 6)
    items, item_features = _clustered(rng, n_items, rank, 5)
    tags = rng.normal(scale=0.8, size=(n_tags, rank))

    pairs = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    u, i = np.unravel_index(pairs, (n_users, n_items))
    ratings = 3.5 + 0.3 * rng.normal(size=n_users)[u] + 0.3 * rng.normal(size=n_items)[i]
    ratings = ratings + (users[u] * items[i]).sum(1) + rng.normal(scale=NOISE, size=len(u))
    shape2 = (n_users, n_items)
    rating = RelationMeta("rating", ("user", "item"), shape2, "squared", 1.0, float(ratings.min()), float(ratings.max()))
    _write_splits(run, rating, np.stack([u, i]), ratings, rng)

    candidates = np.stack([rng.integers(n, size=20000) for n in (n_users, n_items, n_tags)])
    affinity = (users[candidates[0]] * items[candidates[1]] * tags[candidates[2]]).sum(1)
    keep = rng.random(len(affinity)) < 1 / (1 + np.exp(-(3 * affinity - 2)))
    triples = np.unique(candidates[:, keep], axis=1)[:, :2500]
    shape3 = (n_users, n_items, n_tags)
    tagging = RelationMeta(
        "tagging", ("user", "item", "tag"), shape3, "bpr", tagging_weight, structure="pairwise", evaluation=Evaluation(2)
    )
    _write_splits(run, tagging, triples, np.ones(triples.shape[1]), rng)

    for name, features in [("user", user_features), ("item", item_features)]:
        run.write_laplacian(name, normalized_laplacian(knn_graph(features, 10)))
    return run
