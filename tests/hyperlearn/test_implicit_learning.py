"""Order-3 implicit data learns: BPR with PITF's pairwise structure beats the popularity baselines."""

import numpy as np

from hyperlearn.collapse import collapsed_modalities
from hyperlearn.config import TrainingConfig
from hyperlearn.joint import train_joint


def test_bpr_pairwise_tagging_beats_the_popularity_baselines_and_does_not_collapse(planted_run):
    """The planted tagging relation (user × item × tag, ranked over tags for held-out posts): after a few rounds
    the model's test NDCG@10 is above both baselines on the same queries, and the tag factors are alive."""
    config = TrainingConfig(
        rank=8, encoder="none", learning_rate=0.05, l2=0.01, rounds=6, local_steps=10, patience=6, device="cpu"
    )
    result = train_joint(planted_run, config, log=lambda line: None)
    metrics = result.metrics
    model = metrics["test/tagging/ndcg@10"]
    assert model > metrics["test/tagging/popularity_ndcg@10"] + 0.03
    assert model > metrics["test/tagging/context_popularity_ndcg@10"] + 0.02
    assert result.history[0]["validation/tagging/ndcg@10"] < result.history[-1]["validation/tagging/ndcg@10"]
    assert not collapsed_modalities(result.states)
    assert np.linalg.norm(result.states["tag"].factor) > 0.1
