"""An exported model's detector as a ``torch.nn.Module`` (tensors in and out), for code that runs PyTorch models
(``gfldet eval --backend``). The one module of :mod:`gfldet.deploy` that imports torch: the runtime never loads it."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["DetectorModule"]


class DetectorModule(nn.Module):
    """``forward(images)``: ``(3, H, W)`` tensors -> per image the detector's dict, as tensors."""

    def __init__(self, detector: Any):
        super().__init__()
        self.detector = detector

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        dets = self.detector([img.cpu().numpy() for img in images])
        return [{k: torch.from_numpy(v) for k, v in d.items()} for d in dets]
