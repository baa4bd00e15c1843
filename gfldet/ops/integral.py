"""The integral representation of a box edge: a discrete distribution over ``n + 1`` bins.

Each of the four edge distances is predicted as logits over the bins ``0, 1, ..., n`` (``n = reg_max``,
in units of the level's stride); the distance is the expectation of the softmax (paper eq. 5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GfldetError

__all__ = ["Integral", "distribution_expectation", "edge_distributions"]


def edge_distributions(logits: Tensor, reg_max: int) -> Tensor:
    """``(..., 4 * (n + 1))`` logits -> ``(..., 4, n + 1)`` probabilities (softmax over the bins)."""
    x = logits.reshape(*logits.shape[:-1], 4, reg_max + 1)
    return F.softmax(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=-1)


def distribution_expectation(logits: Tensor, project: Tensor) -> Tensor:
    """``(..., 4 * (n + 1))`` logits -> ``(..., 4)`` expected distances, ``sum_i softmax_i * project_i``."""
    probs = edge_distributions(logits, project.numel() - 1)
    # F.linear as the reference (same float results); autocast would run it in half precision.
    with torch.autocast(device_type=probs.device.type, enabled=False):
        return F.linear(probs, project.to(probs.dtype)[None]).squeeze(-1)


class Integral(nn.Module):
    """Expected value of the four edge distributions, in bins. ``project`` is ``[0, 1, ..., n]``."""

    def __init__(self, reg_max: int = 16):
        super().__init__()
        if reg_max < 1:
            raise GfldetError(f"reg_max must be >= 1, got {reg_max}")
        self.reg_max = reg_max
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1), persistent=False)

    def forward(self, logits: Tensor) -> Tensor:  # (..., 4 * (n + 1)) -> (..., 4)
        return distribution_expectation(logits, self.project)
