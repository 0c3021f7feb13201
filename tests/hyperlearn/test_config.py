import dataclasses

import pytest
from pydantic import ValidationError

from hyperlearn.config import BYTES_PER_FACTOR_ENTRY, MemoryBudgetError, TrainingConfig, check_memory, training_bytes


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rank": 0}, "rank"),
        ({"rank": 2.0}, "rank"),
        ({"rank": True}, "rank"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"l2": True}, "l2"),
        ({"projection_dropout": 1.0}, "projection_dropout"),
        ({"encoder": "gcn"}, "encoder"),
        ({"projected": ("user", "user")}, "projected"),
        ({"refit": 1}, "refit"),
    ],
)
def test_every_construction_is_validated(changes, field):
    with pytest.raises(ValidationError) as error:
        TrainingConfig(**changes)
    assert error.value.errors()[0]["loc"] == (field,)
    with pytest.raises(ValidationError):
        TrainingConfig().replace(**changes)
    with pytest.raises(ValidationError):
        TrainingConfig.from_dict(changes)


def test_from_dict_takes_yaml_and_command_line_types():
    config = TrainingConfig.from_dict({"rank": 3, "learning_rate": 1, "projected": ["movie"], "refit": True})
    assert (config.rank, config.learning_rate, config.projected, config.refit) == (3, 1.0, ("movie",), True)
    with pytest.raises(ValidationError, match="unexpected_keyword_argument"):
        TrainingConfig.from_dict({"ranks": 3})


def test_fields_keep_their_help_for_the_command_line():
    assert all(f.metadata["help"] for f in dataclasses.fields(TrainingConfig))


def test_training_bytes_counts_factors_encoders_and_projections():
    sizes = {"user": 100, "item": 50}
    plain = TrainingConfig(rank=8, encoder="none")
    assert training_bytes(sizes, plain) == 150 * 8 * BYTES_PER_FACTOR_ENTRY
    projected = plain.replace(projected=("item",))
    assert training_bytes(sizes, projected) == (150 * 8 + 100 * 8) * BYTES_PER_FACTOR_ENTRY  # P_item: n_user × R
    encoded = plain.replace(encoder="chebyshev-lstm", cheb_order=2, conv_width=4, lstm_width=6)
    per_encoder = 3 * 8 * 4 + 8 * 6 + 8
    assert training_bytes(sizes, encoded) == (150 * 8 + 2 * per_encoder) * BYTES_PER_FACTOR_ENTRY


def test_check_memory_refuses_with_what_it_would_need():
    config = TrainingConfig(rank=1000, encoder="none")
    needed = 2_000_000 * 1000 * BYTES_PER_FACTOR_ENTRY
    assert check_memory({"user": 2_000_000}, config, available=needed) == needed
    message = rf"rank 1000 needs at least 29\.8 GiB \({needed} bytes\).*user 2000000"
    with pytest.raises(MemoryBudgetError, match=message):
        check_memory({"user": 2_000_000}, config, available=needed - 1)
