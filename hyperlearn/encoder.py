"""The per-modality factor encoder (docs/method.md §2, after sRGCNN): graph convolution + recurrent diffusion.

    repeat T times:  δA = LSTM(ReLU(ChebConv(L̃, A))) → Linear → R numbers per row;  A ← A + δA

The output layer starts at zero, so an untrained encoder is the identity and training begins exactly at the
starting factors (the cheap decomposition); the encoder then learns a graph-aware correction. The number of
learned weights does not depend on the number of entities.
"""

from __future__ import annotations

import torch
from torch import nn

from hyperlearn.chebconv import ChebConv


class FactorEncoder(nn.Module):
    """Refines an n×R factor over `steps` diffusion steps on one modality's graph."""

    def __init__(
        self,
        rank: int,
        conv_width: int,
        lstm_width: int,
        order: int,
        steps: int,
        recurrent: bool = True,
    ) -> None:
        super().__init__()
        self.steps = steps
        self.conv = ChebConv(rank, conv_width, order)
        self.cell = nn.LSTMCell(conv_width, lstm_width) if recurrent else None
        self.out = nn.Linear(lstm_width if recurrent else conv_width, rank)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, rescaled_laplacian: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        state: tuple[torch.Tensor, torch.Tensor] | None = None
        for _ in range(self.steps):
            features = torch.relu(self.conv(rescaled_laplacian, factor))
            if self.cell is not None:
                state = self.cell(features, state)
                features = state[0]
            factor = factor + self.out(features)
        return factor
