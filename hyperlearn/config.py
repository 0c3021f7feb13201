"""Training settings: one typed schema from which spec validation, CLI help and the spec's JSON Schema all come.

`TrainingConfig` is a pydantic dataclass: every construction (a spec's `training:` block with the command-line
overrides applied, `TrainingConfig(...)` in code, `replace`) checks types and ranges, so no second validator
exists to disagree with it. `check_memory` refuses a rank whose factors would not fit before training starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import field
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, field_validator
from pydantic.dataclasses import dataclass

EncoderKind = Literal["chebyshev-lstm", "chebyshev", "none"]
InitKind = Literal["als", "random"]
Device = Literal["cpu", "cuda", "auto"]

Positive = Annotated[int, Field(strict=True, ge=1)]
Count = Annotated[int, Field(strict=True, ge=0)]
NonNegative = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Rate = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Flag = Annotated[bool, Field(strict=True)]

#: Bytes per factor entry while training: float32 (4 bytes) times 4 copies (the parameter, its gradient and
#: Adam's two moment estimates).
BYTES_PER_FACTOR_ENTRY = 4 * 4


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainingConfig:
    """Hyperparameters of the HyperLearn model and its distributed training (docs/method.md §2–§3)."""

    rank: Positive = field(default=10, metadata={"help": "CP rank R: width of every embedding"})
    cheb_order: Count = field(default=4, metadata={"help": "Chebyshev order q (q+1 polynomial terms)"})
    conv_width: Positive = field(default=32, metadata={"help": "output width F of the graph convolution"})
    lstm_width: Positive = field(default=32, metadata={"help": "hidden width of the LSTM diffusion cell"})
    diffusion_steps: Count = field(default=10, metadata={"help": "T: encoder refinement steps per forward pass"})
    encoder: EncoderKind = field(
        default="chebyshev-lstm",
        metadata={"help": "factor encoder: chebyshev-lstm (the method), chebyshev (no LSTM), none (plain CP)"},
    )
    projected: tuple[str, ...] = field(
        default=(),
        metadata={"help": "modalities whose starting factor is σ(X_(θ)P + c), a learned projection of their "
                  "unfolding (hyperlearn.projection), instead of free rows"},
    )
    projection_l2: NonNegative = field(
        default=10.0, metadata={"help": "weight decay on those projections, scaled as I-AutoRec's λ for a sum of squared errors"}
    )
    projection_dropout: Annotated[float, Field(strict=True, ge=0, lt=1)] = field(
        default=0.0,
        metadata={"help": "in training, drop each observed entry from a projection's input with this probability"},
    )
    learning_rate: Rate = field(default=1e-3, metadata={"help": "Adam learning rate"})
    encoder_lr_scale: Rate = field(
        default=1.0,
        metadata={"help": "the encoder's learning rate relative to learning_rate: its few weights move every "
                  "entity at once, so at a high rank they should move slower than the factors"},
    )
    rounds: Positive = field(default=50, metadata={"help": "maximum number of exchange rounds"})
    local_steps: Positive = field(default=10, metadata={"help": "optimiser steps per worker per round"})
    graph_weight: NonNegative = field(default=0.1, metadata={"help": "weight of the Dirichlet energy ½tr(AᵀLA)/n (graph smoothness per entity)"})
    proximal: NonNegative = field(
        default=1.0, metadata={"help": "distributed only: pull towards last round's state, damping Jacobi rounds"}
    )
    l2: NonNegative = field(default=0.05, metadata={"help": "ridge weight on the rows and biases each observed entry touches"})
    init: InitKind = field(default="als", metadata={"help": "starting factors: als (CP-ALS on observed entries) or random"})
    init_iterations: Positive = field(default=10, metadata={"help": "ALS sweeps for the starting factors"})
    refit: Flag = field(
        default=False,
        metadata={"help": "after early stopping, train again from the start on training + validation entries for "
                  "the best round's number of rounds, and publish that model"},
    )
    patience: Positive = field(default=5, metadata={"help": "rounds without a lower validation loss before stopping"})
    checkpoint_every: Positive = field(
        default=5,
        metadata={"help": "write the resume checkpoint (encoders, optimisers, random and early-stopping state) "
                  "every N rounds, and at every best round; a killed run carries on from it"},
    )
    init_from: Annotated[str, Field(strict=True, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")] = field(
        default="latest",
        metadata={"help": "warm start: latest (the dataset's latest published version, when there is one), a "
                  "version name, or none (a cold start); see hyperlearn.warm_start"},
    )
    warm_fit_steps: Count = field(
        default=50,
        metadata={"help": "warm start: optimiser steps fitting new entities, modalities and biases against the "
                  "parent's frozen factors"},
    )
    warm_anchor: NonNegative = field(
        default=10.0,
        metadata={"help": "warm start: weight of the pull ½Σ c_i‖A[i] − A_parent[i]‖² holding every warm-started "
                  "row near its parent's, each row weighted as its entries weigh in the data terms (0: none)"},
    )
    seed: Count = field(default=0, metadata={"help": "random seed (same seed and inputs give the same embeddings on CPU)"})
    device: Device = field(default="auto", metadata={"help": "cpu, cuda, or auto (cuda when a GPU is visible)"})

    @field_validator("projected")
    @classmethod
    def _distinct(cls, projected: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(projected)) != len(projected):
            raise ValueError(f"names a modality twice: {list(projected)}")
        return projected

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainingConfig":
        """Build from a mapping (a spec's `training:` block); a pydantic ValidationError names each bad setting."""
        return TypeAdapter(cls).validate_python(dict(values))

    def replace(self, **changes: Any) -> "TrainingConfig":
        """A copy with some settings changed, validated."""
        return dataclasses.replace(self, **changes)

    @property
    def cold(self) -> bool:
        """Whether the run starts cold by request (`init_from: none`), ignoring every published version."""
        return self.init_from == "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Short stable hash of every setting, stored with published embeddings."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class MemoryBudgetError(ValueError):
    """Training settings whose parameters would not fit in this machine's memory."""


def training_bytes(sizes: Mapping[str, int], config: TrainingConfig) -> int:
    """Bytes the rank-dependent parameters need while training: per modality θ its factor (n_θ × R), its
    encoder's R-wide weights ((q+1)·R·F for the convolution, R·(H or F) + R for the output layer) and, when
    projected, its projection (Σ_{k≠θ} n_k × R), each entry BYTES_PER_FACTOR_ENTRY bytes. Fixed-width weights
    (the LSTM cell) and the sparse inputs are not counted: this is a lower bound."""
    rank = config.rank
    encoder = 0
    if config.encoder != "none":
        hidden = config.lstm_width if config.encoder == "chebyshev-lstm" else config.conv_width
        encoder = (config.cheb_order + 1) * rank * config.conv_width + rank * hidden + rank
    total = sum(sizes.values())
    entries = sum(
        n * rank + encoder + ((total - n) * rank if name in config.projected else 0) for name, n in sizes.items()
    )
    return entries * BYTES_PER_FACTOR_ENTRY


def check_memory(sizes: Mapping[str, int], config: TrainingConfig, available: int | None = None) -> int:
    """The bytes `training_bytes` counts for entity counts `sizes` (modality → n_θ); raise MemoryBudgetError
    when they exceed `available` (default: this machine's physical memory)."""
    needed = training_bytes(sizes, config)
    available = _physical_memory() if available is None else available
    if needed > available:
        counts = ", ".join(f"{name} {n}" for name, n in sizes.items())
        raise MemoryBudgetError(
            f"rank {config.rank} needs at least {_gib(needed)} for factors, encoder and projection weights with "
            f"their gradients and Adam state ({BYTES_PER_FACTOR_ENTRY} bytes per entry; entities: {counts}), "
            f"more than the {_gib(available)} of memory here; lower rank"
        )
    return needed


def _physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB ({size} bytes)"
