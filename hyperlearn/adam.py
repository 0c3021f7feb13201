"""Adam for every trainer: torch's fused Adam kernel without `torch.optim`'s import of the compiler.

`torch.optim.Optimizer.step` imports `torch._dynamo` the first time it runs. On the 2-core development machines
that import takes about 4 s of CPU in each process that trains: every Dask worker, while the run waits for its
cluster. Nothing here is compiled, so `Adam` calls the kernel `torch.optim.Adam(fused=True)` calls
(`torch._fused_adam_`) with the same arguments. Its steps equal that optimiser's to the bit, which
tests/hyperlearn/test_adam.py checks, and its state is kept the same way: per parameter, with grad, `step`,
`exp_avg` and `exp_avg_sq`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch

BETAS = (0.9, 0.999)
EPS = 1e-8


class Adam:
    """Adam over parameter groups ({"params": [...], "lr": rate}), with torch's default betas and eps, no weight
    decay; a parameter's state starts at its first gradient, as torch.optim's does."""

    def __init__(self, groups: Iterable[Mapping]) -> None:
        self.groups = [{"params": list(group["params"]), "lr": float(group["lr"])} for group in groups]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    @property
    def parameters(self) -> list[torch.Tensor]:
        """Every parameter, in group order: the index a parameter's state is saved under."""
        return [parameter for group in self.groups for parameter in group["params"]]

    def zero_grad(self) -> None:
        """Drop every gradient (the next backward writes fresh ones)."""
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step of every parameter that has a gradient."""
        for group in self.groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p) for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [], steps, amsgrad=False, lr=group["lr"], beta1=BETAS[0], beta2=BETAS[1], weight_decay=0.0, eps=EPS,
                maximize=False, grad_scale=None, found_inf=None,
            )

    def _state(self, parameter: torch.Tensor) -> dict[str, torch.Tensor]:
        if parameter not in self.state:
            self.state[parameter] = {
                "step": torch.zeros((), dtype=torch.float32, device=parameter.device),
                "exp_avg": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(parameter, memory_format=torch.preserve_format),
            }
        return self.state[parameter]

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Each started parameter's state as `<index>/<name>` arrays (the index in `parameters`)."""
        return {
            f"{index}/{name}": value.detach().cpu().numpy().copy()
            for index, parameter in enumerate(self.parameters)
            if parameter in self.state
            for name, value in self.state[parameter].items()
        }

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace the state with `state_arrays` output of an Adam over the same parameters in the same order."""
        parameters = self.parameters
        self.state = {}
        for key, value in arrays.items():
            index, _, name = key.partition("/")
            parameter = parameters[int(index)]
            self.state.setdefault(parameter, {})[name] = torch.as_tensor(np.array(value), device=parameter.device)
