"""An exponential moving average of a model's weights (``train.ema``)."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from . import distributed as D

__all__ = ["ModelEMA"]


class ModelEMA:
    """Exponential moving average of a model's weights (decay ramped up over the first updates, so that early
    averages are not dominated by the random initialisation)."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, ramp: float = 2000.0):
        self.module = copy.deepcopy(D.unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.ramp, self.updates = decay, ramp, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.ramp))
        src = D.unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.is_floating_point():
                v.mul_(d).add_(src[k].detach(), alpha=1.0 - d)
            else:
                v.copy_(src[k])

    def state_dict(self) -> dict[str, Any]:
        return {"state_dict": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])
