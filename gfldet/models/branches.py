"""The head's quality branches: each maps the regression tower's features and the level's box outputs to quality
logits ``(N, A * Q, H, W)``; a quality estimator (gfldet.models.quality) builds its own.

* :class:`ConvBranch`: a 3x3 convolution on the regression tower (the ATSS / FCOS centerness branch, the
  ablations' IoU branch);
* :class:`DGQP`: GFLV2's Distribution-Guided Quality Predictor, a small MLP (two 1x1 convolutions) on the
  statistics of the edge distributions (gfldet.ops.dgqp).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..ops.dgqp import distribution_statistics, statistics_channels

__all__ = ["ConvBranch", "DGQP"]


class ConvBranch(nn.Conv2d):
    """``Q`` logits per anchor from a 3x3 convolution on the regression tower's features."""

    def __init__(self, feat_channels: int, out_channels: int):
        super().__init__(feat_channels, out_channels, 3, padding=1)

    def forward(self, reg_feat: Tensor, box: Tensor) -> Tensor:  # noqa: D102 - the box outputs are not used
        return super().forward(reg_feat)


class DGQP(nn.Sequential):
    """GFLV2's quality predictor: ``Conv1x1(4 (k + mean) -> channels), ReLU, Conv1x1(channels -> 1)`` on
    :func:`~gfldet.ops.dgqp.distribution_statistics` of the level's distribution logits (after the level's scale).

    It returns the quality *logit*; the official ``reg_conf`` ends in a Sigmoid, which the quality estimator
    applies inside the joint score (gfldet.ops.dgqp.joint_logit). The parameters sit at indices 0 and 2 as in
    the official ``reg_conf`` (``bbox_head.reg_conf.{0,2}.*`` in its checkpoints). The statistics are not
    detached: the classification loss also trains the distributions, as in the official code.
    """

    def __init__(self, reg_max: int, topk: int = 4, channels: int = 64, add_mean: bool = True):
        super().__init__(nn.Conv2d(statistics_channels(topk, add_mean), channels, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, 1, 1))
        self.reg_max, self.topk, self.add_mean = reg_max, topk, add_mean

    def forward(self, reg_feat: Tensor, box: Tensor) -> Tensor:  # noqa: D102 - reads the distributions only
        stats = distribution_statistics(box, self.reg_max, self.topk, self.add_mean)
        return super().forward(stats.to(self[0].weight.dtype))
