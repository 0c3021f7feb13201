"""Training settings: one typed schema from which spec validation and CLI help both come."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

EncoderKind = Literal["chebyshev-lstm", "chebyshev", "none"]
InitKind = Literal["als", "random"]
Device = Literal["cpu", "cuda", "auto"]


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of the HyperLearn model and its distributed training (method.md §2–§3)."""

    rank: int = field(default=10, metadata={"help": "CP rank R: width of every embedding"})
    cheb_order: int = field(default=4, metadata={"help": "Chebyshev order q (q+1 polynomial terms)"})
    conv_width: int = field(default=32, metadata={"help": "output width F of the graph convolution"})
    lstm_width: int = field(default=32, metadata={"help": "hidden width of the LSTM diffusion cell"})
    diffusion_steps: int = field(default=10, metadata={"help": "T: encoder refinement steps per forward pass"})
    encoder: EncoderKind = field(
        default="chebyshev-lstm",
        metadata={"help": "factor encoder: chebyshev-lstm (the method), chebyshev (no LSTM), none (plain CP)"},
    )
    projected: tuple[str, ...] = field(
        default=(),
        metadata={"help": "modalities whose starting factor is σ(X_(θ)P + c), a learned projection of their "
                  "unfolding (hyperlearn.projection), instead of free rows"},
    )
    projection_l2: float = field(
        default=10.0, metadata={"help": "weight decay on those projections, scaled as I-AutoRec's λ for a sum of squared errors"}
    )
    projection_dropout: float = field(
        default=0.0,
        metadata={"help": "in training, drop each observed entry from a projection's input with this probability"},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    encoder_lr_scale: float = field(
        default=1.0,
        metadata={"help": "the encoder's learning rate relative to learning_rate: its few weights move every "
                  "entity at once, so at a high rank they should move slower than the factors"},
    )
    rounds: int = field(default=50, metadata={"help": "maximum number of exchange rounds"})
    local_steps: int = field(default=10, metadata={"help": "optimiser steps per worker per round"})
    graph_weight: float = field(default=0.1, metadata={"help": "weight of the Dirichlet energy ½tr(AᵀLA)/n (graph smoothness per entity)"})
    proximal: float = field(
        default=1.0, metadata={"help": "distributed only: pull towards last round's state, damping Jacobi rounds"}
    )
    l2: float = field(default=0.05, metadata={"help": "ridge weight on the rows and biases each observed entry touches"})
    init: InitKind = field(default="als", metadata={"help": "starting factors: als (CP-ALS on observed entries) or random"})
    init_iterations: int = field(default=10, metadata={"help": "ALS sweeps for the starting factors"})
    refit: bool = field(
        default=False,
        metadata={"help": "after early stopping, train again from the start on training + validation entries for "
                  "the best round's number of rounds, and publish that model"},
    )
    patience: int = field(default=5, metadata={"help": "rounds without a lower validation loss before stopping"})
    seed: int = field(default=0, metadata={"help": "random seed (same seed and inputs give the same embeddings on CPU)"})
    device: Device = field(default="auto", metadata={"help": "cpu, cuda, or auto (cuda when a GPU is visible)"})

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "training") -> "TrainingConfig":
        """Build from a mapping (a spec's `training:` block), rejecting unknown keys and wrong types by name."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
        defaults = cls()
        checked: dict[str, Any] = {}
        for name, value in values.items():
            expected = type(getattr(defaults, name))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if expected is tuple and isinstance(value, list) and all(isinstance(item, str) for item in value):
                value = tuple(value)
            if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
                raise ValueError(f"{where}.{name}: expected {expected.__name__}, got {value!r}")
            checked[name] = value
        config = cls(**checked)
        config.validate(where)
        return config

    def validate(self, where: str = "training") -> None:
        """Raise ValueError naming the first setting outside its valid range."""
        positive = ["rank", "conv_width", "lstm_width", "rounds", "local_steps", "init_iterations", "patience"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ["cheb_order", "diffusion_steps", "seed"]:
            if getattr(self, name) < 0:
                raise ValueError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ["learning_rate", "encoder_lr_scale"]:
            if not getattr(self, name) > 0:
                raise ValueError(f"{where}.{name}: must be > 0, got {getattr(self, name)}")
        for name in ["graph_weight", "l2", "proximal", "projection_l2"]:
            if getattr(self, name) < 0:
                raise ValueError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.projection_dropout < 1.0:
            raise ValueError(f"{where}.projection_dropout: must be in [0, 1), got {self.projection_dropout}")
        if len(set(self.projected)) != len(self.projected):
            raise ValueError(f"{where}.projected: names a modality twice: {list(self.projected)}")
        choices = {"encoder": EncoderKind, "init": InitKind, "device": Device}
        for name, kind in choices.items():
            if getattr(self, name) not in kind.__args__:
                raise ValueError(f"{where}.{name}: must be one of {list(kind.__args__)}, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> "TrainingConfig":
        """A copy with some settings changed, validated."""
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Short stable hash of every setting, stored with published embeddings."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
