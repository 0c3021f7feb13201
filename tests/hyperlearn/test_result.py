"""Checkpoints: a round trip keeps every factor and bias; writing leaves no temporary file behind."""

import numpy as np

from hyperlearn.model import ModalityState
from hyperlearn.result import load_checkpoint, save_checkpoint


def test_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    states = {
        "user": ModalityState(rng.normal(size=(4, 3)), {"rating": rng.normal(size=4), "tagging": rng.normal(size=4)}),
        "tag": ModalityState(rng.normal(size=(2, 3)), {"tagging": rng.normal(size=2)}),
    }
    path = tmp_path / "checkpoints" / "best.npz"
    save_checkpoint(path, states, round_number=7)
    loaded, round_number = load_checkpoint(path)
    assert round_number == 7 and set(loaded) == {"user", "tag"}
    for name, state in states.items():
        np.testing.assert_array_equal(loaded[name].factor, state.factor)
        assert set(loaded[name].biases) == set(state.biases)
        for relation, bias in state.biases.items():
            np.testing.assert_array_equal(loaded[name].biases[relation], bias)
    assert [p.name for p in path.parent.iterdir()] == ["best.npz"]
