"""The assigners of the criterion: ATSS (GFL), FCOS-style and RetinaNet-style (max-IoU), as small callables.

Each calls :mod:`gfldet.ops.atss` / :mod:`gfldet.ops.fcos_retina`.

Each is called as ``assigner(priors, valid, gt_boxes, gt_ignore)`` with the :class:`~gfldet.models.priors.Priors`
of the batch, ``valid (N, A)`` bool, per image ``(M_i, 4)`` GT boxes and optional ignore regions, and returns an
:class:`~gfldet.ops.assign_result.AssignResult`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..ops.assign_result import AssignResult
from ..ops.atss import atss_assign
from ..ops.fcos_retina import fcos_assign, fcos_regress_ranges, retina_assign
from .priors import Priors

__all__ = ["ATSSAssigner", "FCOSAssigner", "MaxIoUAssigner"]

GtIgnore = Sequence[Tensor | None] | None


class ATSSAssigner:
    """Adaptive Training Sample Selection (GFL's assigner): top-``k`` nearest anchors per level, IoU >= mean + std."""

    def __init__(self, topk: int = 9, ignore_iof_thr: float = 0.5):
        self.topk, self.ignore_iof_thr = topk, ignore_iof_thr

    def __call__(self, priors: Priors, valid: Tensor, gt_boxes: Sequence[Tensor], gt_ignore: GtIgnore = None) -> AssignResult:
        return atss_assign(priors.anchors, priors.num_level_anchors, gt_boxes, valid, gt_ignore, topk=self.topk,
                           ignore_iof_thr=self.ignore_iof_thr)


class FCOSAssigner:
    """FCOS: locations inside a GT's centre region whose largest edge distance falls in the level's range."""

    def __init__(self, range_bounds: Sequence[float] = (64.0, 128.0, 256.0, 512.0), center_radius: float = 1.5,
                 ignore_iof_thr: float = 0.5):
        self.range_bounds, self.center_radius, self.ignore_iof_thr = tuple(range_bounds), center_radius, ignore_iof_thr

    def __call__(self, priors: Priors, valid: Tensor, gt_boxes: Sequence[Tensor], gt_ignore: GtIgnore = None) -> AssignResult:
        counts = torch.tensor(priors.num_level_anchors, device=priors.anchors.device)
        ranges = torch.tensor(fcos_regress_ranges(self.range_bounds, len(priors.per_level)), device=counts.device)
        return fcos_assign(priors.anchors, priors.strides, torch.repeat_interleave(ranges, counts, dim=0), gt_boxes,
                           valid, gt_ignore, center_radius=self.center_radius, ignore_iof_thr=self.ignore_iof_thr)


class MaxIoUAssigner:
    """RetinaNet: IoU >= ``pos_iou`` positive, < ``neg_iou`` negative, each GT also takes its best anchors."""

    def __init__(self, pos_iou: float = 0.5, neg_iou: float = 0.4, min_pos_iou: float = 0.0, ignore_iof_thr: float = 0.5):
        self.pos_iou, self.neg_iou, self.min_pos_iou, self.ignore_iof_thr = pos_iou, neg_iou, min_pos_iou, ignore_iof_thr

    def __call__(self, priors: Priors, valid: Tensor, gt_boxes: Sequence[Tensor], gt_ignore: GtIgnore = None) -> AssignResult:
        return retina_assign(priors.anchors, gt_boxes, valid, gt_ignore, pos_iou_thr=self.pos_iou,
                             neg_iou_thr=self.neg_iou, min_pos_iou=self.min_pos_iou, ignore_iof_thr=self.ignore_iof_thr)
