"""Random weights for the tiny profile's checkpoints, shared by every endpoint's tiny writers."""
from __future__ import annotations

import math

import torch
from torch import nn


def random_state(module: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Trained-looking random values for every tensor of ``module``'s state dict.

    Matrices N(0, 1/fan_in) keep activations O(1) through deep stacks; BN running variances
    stay positive.
    """
    state = {}
    for key, value in module.state_dict().items():
        noise = torch.randn(value.shape, generator=generator)
        if not value.is_floating_point():
            state[key] = torch.zeros_like(value)
        elif key.endswith("running_var"):
            state[key] = 1.0 + 0.1 * noise.abs()
        elif key.endswith("running_mean") or key.endswith("bias") or value.ndim == 0:
            state[key] = 0.1 * noise
        elif value.ndim == 1:
            state[key] = 1.0 + 0.1 * noise
        else:
            state[key] = noise / math.sqrt(value[0].numel())
    return state
