"""NanoDet-Plus's training objective, as the official ``NanoDetPlusHead.loss`` computes it.

The auxiliary head's (detached) predictions assign every image's priors (gfldet.ops.dsla, the Dynamic Soft Label
Assigner); the same targets then train the head and the auxiliary head, each with

- ``loss_qfl``: QFL (beta 2) of the class logits against the soft label: at a positive its class gets the IoU of
  the *auxiliary* prediction with its ground truth (the assigner's), everything else 0; summed and divided by the
  positives of the batch (averaged over processes, at least 1);
- ``loss_bbox``: 2 x GIoU loss (eps 1e-6) of the decoded boxes (pixels: points plus expected distances times the
  stride; gradients flow through the decode) against the ground truth, each positive weighted by its largest
  sigmoid class score (detached), divided by the sum of those weights (averaged over processes, at least 1);
- ``loss_dfl``: 0.25 x DFL of the distributions against the ground-truth distances in strides, clamped to
  ``[0, reg_max - 0.1]``, with the same weights, divided by 4 times their sum.

The auxiliary head's terms are ``loss_aux_qfl``, ``loss_aux_bbox``, ``loss_aux_dfl`` (the official
``aux_loss_*``); the total is the sum of all six. Differences from gfldet's GFL criterion (gfldet.models.criterion):
boxes in pixels rather than strides, normalisers without ``+ eps`` and with the batch's positives clamped to 1 as a
whole (not per image), the assignment from another head's predictions.

Shapes: N images, A priors (all levels), C classes, R = reg_max, P positives of the batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ...ops.boxes import box_to_distance
from ...ops.dsla import dynamic_soft_label_assign
from ...ops.losses import giou_loss, quality_focal_loss_sparse, reduce_mean
from ..box_representations import DistributionBox

__all__ = ["NanoDetTargets", "NanoDetPlusLoss"]


@dataclass
class NanoDetTargets:
    """labels ``(N, A)`` (C: background), scores ``(N, A)`` the QFL target at positives, boxes ``(N, A, 4)`` xyxy
    pixels at positives, positive ``(N, A)`` bool."""

    labels: Tensor
    scores: Tensor
    boxes: Tensor
    positive: Tensor


class NanoDetPlusLoss:
    """Targets from one head's outputs and the loss terms of any head's outputs (see the module docstring)."""

    def __init__(self, num_classes: int, reg_max: int = 7, topk: int = 13, iou_factor: float = 3.0,
                 qfl_beta: float = 2.0, qfl_weight: float = 1.0, bbox_weight: float = 2.0, dfl_weight: float = 0.25):
        self.num_classes, self.reg_max = num_classes, reg_max
        self.topk, self.iou_factor = topk, iou_factor
        self.qfl_beta, self.qfl_weight, self.bbox_weight, self.dfl_weight = qfl_beta, qfl_weight, bbox_weight, dfl_weight
        self.box = DistributionBox(reg_max)

    def split(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, A, C + 4 (R + 1))`` -> class logits ``(N, A, C)`` and distribution logits ``(N, A, 4 (R + 1))``."""
        return raw[..., :self.num_classes], raw[..., self.num_classes:]

    def decode(self, reg: Tensor, points: Tensor, strides: Tensor) -> Tensor:
        """Distribution logits -> ``(..., 4)`` xyxy boxes in pixels (the one decode, DistributionBox's)."""
        return self.box.decode(reg, points, strides[:, None])

    @torch.no_grad()
    def targets(self, raw: Tensor, points: Tensor, strides: Tensor, gt_boxes: Sequence[Tensor],
                gt_labels: Sequence[Tensor]) -> NanoDetTargets:
        """The assignment of every image from ``raw`` outputs (NanoDet-Plus: the auxiliary head's)."""
        cls, reg = self.split(raw.detach())
        boxes = self.decode(reg.float(), points, strides)
        n, a = cls.shape[:2]
        labels = torch.full((n, a), self.num_classes, dtype=torch.long, device=raw.device)
        scores = torch.zeros(n, a, device=raw.device)
        target_boxes = torch.zeros(n, a, 4, device=raw.device)
        for i in range(n):
            index, ious = dynamic_soft_label_assign(cls[i], points, boxes[i], gt_boxes[i], gt_labels[i], self.topk,
                                                    self.iou_factor)
            pos = index >= 0
            labels[i, pos] = gt_labels[i].long()[index[pos]]
            scores[i, pos] = ious[pos].float()
            target_boxes[i, pos] = gt_boxes[i].float()[index[pos]]
        return NanoDetTargets(labels, scores, target_boxes, labels < self.num_classes)

    def __call__(self, raw: Tensor, points: Tensor, strides: Tensor, t: NanoDetTargets,
                 prefix: str = "loss_") -> dict[str, Tensor]:
        """The three weighted terms of one head's ``raw (N, A, C + 4 (R + 1))`` outputs, named ``prefix + qfl``
        (``bbox``, ``dfl``)."""
        cls, reg = self.split(raw)
        n_idx, a_idx = t.positive.nonzero(as_tuple=True)
        weight = cls[n_idx, a_idx].detach().float().sigmoid().max(dim=1).values if n_idx.numel() else cls.new_zeros(0)
        # both normalisers averaged over the processes by every process, with positives or without, so that the
        # collectives pair up under DDP (the official head skips the second on a process without positives)
        num_pos = max(float(reduce_mean(t.positive.sum().float())), 1.0)
        norm = max(float(reduce_mean(weight.sum().float())), 1.0)
        qfl = quality_focal_loss_sparse(cls.reshape(-1, self.num_classes), t.labels.reshape(-1), t.scores.reshape(-1),
                                        beta=self.qfl_beta, reduction="sum")
        terms = {prefix + "qfl": self.qfl_weight * qfl / num_pos}
        if n_idx.numel() == 0:  # zero terms that keep the graph connected; "+ 0.0" turns -0.0 into 0.0
            terms[prefix + "bbox"] = reg.sum() * 0 + 0.0
            terms[prefix + "dfl"] = reg.sum() * 0 + 0.0
            return terms
        pos_reg = reg[n_idx, a_idx].float()  # (P, 4 (R + 1))
        pos_points, pos_strides = points[a_idx], strides[a_idx]
        pred = self.decode(pos_reg, pos_points, pos_strides)
        target = t.boxes[n_idx, a_idx]
        terms[prefix + "bbox"] = self.bbox_weight * giou_loss(pred, target, weight=weight, reduction="sum") / norm
        distances = box_to_distance(pos_points, target) / pos_strides[:, None]  # strides
        terms[prefix + "dfl"] = self.dfl_weight * self.box.weighted_dfl_sum(pos_reg, distances, weight) / (4.0 * norm)
        return terms
