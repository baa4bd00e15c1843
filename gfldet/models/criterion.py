"""Training targets and the weighted loss terms of a batch, all levels at once, from the criterion's parts.

GFL's objective (paper eq. 8) with its default parts, the ablations' with others (gfldet.models.quality,
gfldet.models.box_representations, gfldet.models.assigners).

Shapes: N images, A anchors of all levels, C classes, K box channels per anchor, P positives of the batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..ops.assign_result import AssignResult
from ..ops.boxes import box_centers, box_iou_aligned
from ..ops.losses import EPS32, giou_loss, reduce_mean
from .priors import Priors

__all__ = ["GFLTargets", "targets_from_assignment", "Criterion", "batch_positives"]


@dataclass
class GFLTargets:
    """Training targets of a batch (any assigner).

    labels: ``(N, A)`` int64 class of each anchor, ``C`` for background.
    label_weights: ``(N, A)`` 1 for positives and negatives, 0 for ignored / invalid anchors.
    boxes: ``(N, A, 4)`` xyxy pixel target box of each positive (0 elsewhere).
    positive: ``(N, A)`` bool.
    num_pos_avg: scalar tensor, the QFL normaliser: positives of the batch, each image counting at least 1.
    batch_positives: the positives of the batch averaged over processes, at least 1, once computed
    (:func:`batch_positives`).
    """

    labels: Tensor
    label_weights: Tensor
    boxes: Tensor
    positive: Tensor
    num_pos_avg: Tensor
    batch_positives: Tensor | None = None


@torch.no_grad()
def targets_from_assignment(
    res: AssignResult, anchors: Tensor, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor], num_classes: int
) -> GFLTargets:
    """Class labels, weights and target boxes of every anchor from an assignment (ATSS, FCOS or max-IoU)."""
    num_images, num_anchors = res.gt_index.shape
    device = anchors.device
    labels = torch.full((num_images, num_anchors), num_classes, dtype=torch.long, device=device)
    boxes = anchors.new_zeros(num_images, num_anchors, 4)
    n_idx, a_idx = res.positive.nonzero(as_tuple=True)
    if n_idx.numel() > 0:
        counts = torch.tensor([int(b.shape[0]) for b in gt_boxes], device=device)
        offsets = counts.cumsum(0) - counts
        g = offsets[n_idx] + res.gt_index[n_idx, a_idx]
        all_boxes = torch.cat([b.to(anchors) for b in gt_boxes])
        all_labels = torch.cat([lab.to(device=device, dtype=torch.long) for lab in gt_labels])
        labels[n_idx, a_idx] = all_labels[g]
        boxes[n_idx, a_idx] = all_boxes[g]
    label_weights = (~res.ignored).to(anchors.dtype)
    num_pos = res.positive.sum(dim=1).clamp(min=1).sum().to(torch.float32)
    return GFLTargets(labels, label_weights, boxes, res.positive, num_pos)


def batch_positives(targets: GFLTargets) -> Tensor:
    """The positives of the batch, averaged over processes, at least 1 (mmdetection's ATSS normaliser); computed once
    per batch (the criterion asks for it first, on every process, so that the collective pairs up under DDP also
    where only some processes have positives) and kept on ``targets``."""
    if targets.batch_positives is None:
        targets.batch_positives = reduce_mean(targets.positive.sum().to(torch.float32)).clamp(min=1.0)
    return targets.batch_positives


class Criterion:
    """Assignment, targets and the weighted loss terms, from its parts:

    * ``assigner``: ``(priors, valid, gt_boxes, gt_ignore) -> AssignResult`` (gfldet.models.assigners);
    * ``box``: the box representation (gfldet.models.box_representations): distances from its outputs, its loss term;
    * ``quality``: the quality estimator (gfldet.models.quality): classification loss, box-loss weights, branch.

    Terms, in this order: the classification term of the quality estimator, ``loss_bbox`` (GIoU of the decoded
    box, weight ``bbox_weight``), the box representation's term (``loss_dfl`` / ``loss_nll``), the branch's
    ``loss_quality``. Box terms are weighted per positive by the quality estimator's box weight and normalised by
    the sum of those weights (averaged over processes, at least 1), sums divided by ``avg_factor + eps`` as the
    reference.
    """

    def __init__(self, num_classes: int, assigner, box, quality, bbox_weight: float = 2.0):
        self.num_classes, self.assigner, self.box, self.quality, self.bbox_weight = num_classes, assigner, box, quality, bbox_weight

    @torch.no_grad()
    def targets(self, priors: Priors, valid: Tensor, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
                gt_ignore: Sequence[Tensor | None] | None = None) -> GFLTargets:
        """Targets for boxes in the network-input frame; ``valid (N, A)`` bool flags of the anchors."""
        res = self.assigner(priors, valid, gt_boxes, gt_ignore)
        return targets_from_assignment(res, priors.anchors, gt_boxes, gt_labels, self.num_classes)

    def __call__(self, cls: Tensor, box: Tensor, quality: Tensor | None, priors: Priors,
                 targets: GFLTargets) -> dict[str, Tensor]:
        """The weighted loss terms from ``cls (N, A, C)``, ``box (N, A, K)`` and ``quality (N, A)`` (or None) outputs.
        The quality estimator's ``joint`` turns the class logits into the classification input first."""
        num_images, num_anchors, _ = cls.shape
        batch_positives(targets)  # every process, before any branch on its own positives (DDP collectives pair up)
        cls = self.quality.joint(cls, None if quality is None else quality[..., None])  # GFLV2: the joint score's logits
        n_idx, a_idx = targets.positive.nonzero(as_tuple=True)
        ious = cls.new_zeros(num_images, num_anchors, dtype=torch.float32)
        terms: dict[str, Tensor] = {}
        key = self.box.loss_key
        if n_idx.numel() > 0:
            stride = priors.strides[a_idx][:, None]  # (P, 1)
            centers = box_centers(priors.anchors[a_idx]) / stride  # (P, 2), in strides
            pos_box = box[n_idx, a_idx].float()  # (P, K)
            pred_boxes = self.box.decode(pos_box, centers)
            target_boxes = targets.boxes[n_idx, a_idx] / stride
            with torch.no_grad():
                iou = box_iou_aligned(pred_boxes.detach(), target_boxes)
                ious[n_idx, a_idx] = iou
                weight = self.quality.box_weight(cls[n_idx, a_idx], centers, target_boxes, iou)  # (P,)
            weight_sum = weight.sum().detach().float()
        else:
            weight_sum = cls.new_zeros((), dtype=torch.float32)
        # averaged over the processes by every process, with positives or without, so that the collectives pair up
        # under DDP (as the reference, whose per-level sums are reduced whether or not a level has positives)
        box_norm = reduce_mean(weight_sum).clamp(min=1.0)
        if n_idx.numel() > 0:
            loss_bbox = giou_loss(pred_boxes, target_boxes, weight=weight, reduction="sum") / (1.0 + EPS32)
            terms["loss_bbox"] = self.bbox_weight * loss_bbox / box_norm
            box_term = self.box.loss(pos_box, centers, target_boxes, weight)
            if box_term is not None:
                terms[key] = self.box.loss_weight * box_term / box_norm
            q_target = self.quality.branch_target(centers, target_boxes, iou) if quality is not None else None
            if q_target is not None:
                terms.update(self.quality.branch_loss(quality[n_idx, a_idx], q_target, targets))
        else:  # zero terms that keep the graph connected (DDP) and the value 0, never NaN
            terms["loss_bbox"] = box.sum() * 0.0 + 0.0  # "+ 0.0" turns a -0.0 into 0.0
            if key is not None:
                terms[key] = box.sum() * 0.0 + 0.0
            if quality is not None and self.quality.branch_loss_key is not None:
                terms[self.quality.branch_loss_key] = quality.sum() * 0.0 + 0.0
        return {**self.quality.classification_loss(cls, targets, ious), **terms}
