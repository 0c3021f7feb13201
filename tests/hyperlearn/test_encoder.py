"""The factor encoder: identity at initialisation, gradients to every part, no LSTM variant."""

import numpy as np
import scipy.sparse
import torch

from hyperlearn.chebconv import to_torch_csr
from hyperlearn.encoder import FactorEncoder


def path_rescaled(n=8):
    weights = scipy.sparse.diags([np.ones(n - 1), np.ones(n - 1)], [1, -1])
    degree = np.asarray(weights.sum(1)).ravel()
    scale = scipy.sparse.diags(1 / np.sqrt(degree))
    return to_torch_csr(-(scale @ weights @ scale))


def test_untrained_encoder_returns_its_input():
    encoder = FactorEncoder(rank=3, conv_width=5, lstm_width=4, order=2, steps=3)
    factor = torch.randn(8, 3)
    torch.testing.assert_close(encoder(path_rescaled(), factor), factor)


def test_gradients_reach_conv_lstm_output_and_input():
    torch.manual_seed(0)
    encoder = FactorEncoder(rank=3, conv_width=5, lstm_width=4, order=2, steps=3)
    factor = torch.randn(8, 3, requires_grad=True)
    target = torch.randn(8, 3)
    optimiser = torch.optim.SGD(encoder.parameters(), lr=0.1)
    for _ in range(2):  # after one step the zero output layer no longer blocks the path to conv/LSTM
        optimiser.zero_grad()
        (encoder(path_rescaled(), factor) - target).pow(2).sum().backward()
        optimiser.step()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert factor.grad.abs().sum() > 0


def test_encoder_without_lstm_has_no_recurrent_cell_and_same_shapes():
    encoder = FactorEncoder(rank=3, conv_width=5, lstm_width=4, order=1, steps=2, recurrent=False)
    assert encoder.cell is None
    assert encoder(path_rescaled(), torch.randn(8, 3)).shape == (8, 3)


def test_learned_weights_do_not_depend_on_graph_size():
    small = FactorEncoder(rank=3, conv_width=5, lstm_width=4, order=2, steps=3)
    count = sum(p.numel() for p in small.parameters())
    assert small(path_rescaled(30), torch.randn(30, 3)).shape == (30, 3)
    assert count == sum(p.numel() for p in FactorEncoder(3, 5, 4, 2, 3).parameters())
