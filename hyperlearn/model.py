"""What one modality learns: its starting factor, its encoder, and its entity biases per relation."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from torch import nn

from hyperlearn.chebconv import symmetric_sparse_product, to_torch_csr
from hyperlearn.config import TrainingConfig
from hyperlearn.encoder import FactorEncoder
from hyperlearn.graphs import rescaled_laplacian


@dataclass
class ModalityState:
    """What a worker publishes each round: its embeddings (encoder output) and its entity biases per relation."""

    factor: np.ndarray
    biases: dict[str, np.ndarray]


class ModalityModel(nn.Module):
    """Parameters of one modality θ: A_θ⁰ (learned, starting from the cheap decomposition), the encoder
    weights, and a bias per entity for each relation spanning θ. `forward()` gives the embeddings A_θ."""

    def __init__(
        self,
        state: ModalityState,
        laplacian: scipy.sparse.csr_matrix | None,
        config: TrainingConfig,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.base = nn.Parameter(torch.as_tensor(state.factor, dtype=torch.float32).clone())
        self.biases = nn.ParameterDict(
            {name: nn.Parameter(torch.as_tensor(b, dtype=torch.float32).clone()) for name, b in state.biases.items()}
        )
        self.laplacian = None if laplacian is None else to_torch_csr(laplacian, device)
        has_graph = laplacian is not None
        self.rescaled = to_torch_csr(rescaled_laplacian(laplacian), device) if has_graph else _empty_csr(
            state.factor.shape[0], device
        )
        self.encoder = (
            None
            if config.encoder == "none"
            else FactorEncoder(
                rank=config.rank,
                conv_width=config.conv_width,
                lstm_width=config.lstm_width,
                order=config.cheb_order if has_graph else 0,
                steps=config.diffusion_steps,
                recurrent=config.encoder == "chebyshev-lstm",
            )
        )
        self.to(device)

    def forward(self) -> torch.Tensor:
        if self.encoder is None:
            return self.base
        return self.encoder(self.rescaled, self.base)

    def dirichlet_energy(self, factor: torch.Tensor) -> torch.Tensor:
        """½ tr(AᵀLA) / n: the graph smoothness of the embeddings, per entity so its weight is scale-free."""
        if self.laplacian is None:
            return factor.new_zeros(())
        return 0.5 * (factor * symmetric_sparse_product(self.laplacian, factor)).sum() / factor.shape[0]

    def state(self) -> ModalityState:
        with torch.no_grad():
            return ModalityState(
                factor=self().detach().cpu().numpy().copy(),
                biases={name: b.detach().cpu().numpy().copy() for name, b in self.biases.items()},
            )


def _empty_csr(n: int, device: torch.device | str) -> torch.Tensor:
    return to_torch_csr(scipy.sparse.csr_matrix((n, n), dtype=np.float32), device)


def modality_seed(seed: int, modality: str) -> int:
    """A per-modality seed that does not depend on worker placement or process."""
    return (seed * 1_000_003 + zlib.crc32(modality.encode())) % 2**31


def build_model(
    modality: str,
    state: ModalityState,
    laplacian: scipy.sparse.csr_matrix | None,
    config: TrainingConfig,
    device: torch.device | str,
) -> ModalityModel:
    """A modality's model with encoder weights drawn from its own seed, identical in joint and distributed runs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(modality_seed(config.seed, modality))
        return ModalityModel(state, laplacian, config, device)


def resolve_device(device: str) -> torch.device:
    """`auto` means the GPU when one is visible (inside a dask-cuda worker it is cuda:0), else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
