"""Data-dependent initialisation of a randomly initialised backbone's frozen BatchNorm statistics.

gfldet's backbone normalises with frozen running statistics (the reference's ``norm_eval=True``). With
ImageNet weights those statistics are meaningful; with a random initialisation they are mean 0 / variance 1,
i.e. no normalisation at all, and activations grow with depth, which makes training from scratch slow and
unstable. :func:`init_backbone_norms` sets the statistics once, before the first step, to the cumulative
average over a few batches of training images (BatchNorm briefly in training mode); afterwards they are
frozen again and training proceeds exactly as usual. The statistics are buffers, so checkpoints carry them.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ..errors import GfldetError

__all__ = ["init_backbone_norms"]


@torch.no_grad()
def init_backbone_norms(model: nn.Module, batches: Iterable[Sequence[Tensor]]) -> int:
    """Set the running statistics of every BatchNorm of ``model.backbone`` from ``batches`` (lists of
    ``(3, H, W)`` images as the model takes them). Returns the number of layers set."""
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    was_training = [m.training for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches
        m.training = True  # set directly: FrozenStatsBatchNorm2d.train() always keeps eval mode
    seen = 0
    try:
        for images in batches:
            x, _ = model.preprocess(list(images))
            model.backbone(x)
            seen += 1
    finally:
        for m, mom, tr in zip(bns, momenta, was_training):
            m.momentum = mom
            m.training = tr
    if seen == 0:
        raise GfldetError("init_backbone_norms got no batch of images")
    return len(bns)
