"""Training targets and the GFL objective (paper eq. 8) for a batch, all levels at once.

Shapes: N images, A anchors of all levels, C classes, B = n + 1 bins, P positives of the batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from ..ops.assign import AssignResult, atss_assign
from ..ops.boxes import box_centers, box_iou_aligned, box_to_distance, distance_to_box
from ..ops.integral import distribution_expectation
from ..ops.losses import _dfl, giou_loss, quality_focal_loss_sparse

__all__ = ["GFLTargets", "gfl_targets", "targets_from_assignment", "gfl_losses", "reduce_mean"]

# The reference divides a loss sum by (avg_factor + float32 eps).
_EPS32 = float(torch.finfo(torch.float32).eps)


def reduce_mean(x: Tensor) -> Tensor:
    """Average a tensor over the processes of the default group (identity when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x.div_(dist.get_world_size()))
    return x


@dataclass
class GFLTargets:
    """ATSS targets of a batch.

    labels: ``(N, A)`` int64 class of each anchor, ``C`` for background.
    label_weights: ``(N, A)`` 1 for positives and negatives, 0 for ignored / invalid anchors.
    boxes: ``(N, A, 4)`` xyxy pixel target box of each positive (0 elsewhere).
    positive: ``(N, A)`` bool.
    num_pos_avg: scalar tensor, the QFL normaliser: positives of the batch, each image counting at least 1.
    """

    labels: Tensor
    label_weights: Tensor
    boxes: Tensor
    positive: Tensor
    num_pos_avg: Tensor


@torch.no_grad()
def gfl_targets(
    anchors: Tensor,
    num_level_anchors: Sequence[int],
    valid: Tensor,
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    num_classes: int,
    gt_ignore: Sequence[Tensor | None] | None = None,
    topk: int = 9,
    ignore_iof_thr: float = 0.5,
) -> GFLTargets:
    res = atss_assign(anchors, num_level_anchors, gt_boxes, valid, gt_ignore, topk=topk, ignore_iof_thr=ignore_iof_thr)
    return targets_from_assignment(res, anchors, gt_boxes, gt_labels, num_classes)


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


def gfl_losses(
    cls_logits: Tensor,
    reg_logits: Tensor,
    anchors: Tensor,
    anchor_strides: Tensor,
    targets: GFLTargets,
    reg_max: int,
    beta: float = 2.0,
    weights: tuple[float, float, float] = (1.0, 2.0, 0.25),
) -> dict[str, Tensor]:
    """The weighted loss terms ``loss_qfl``, ``loss_bbox`` (GIoU), ``loss_dfl``.

    Args:
        cls_logits: ``(N, A, C)``; reg_logits: ``(N, A, 4 * B)``; anchors ``(A, 4)``; anchor_strides ``(A,)``.
    Box terms are weighted per positive by its highest detached class score and normalised by the sum of
    those weights (averaged over processes, at least 1); QFL is normalised by the number of positives.
    """
    num_images, num_anchors, num_classes = cls_logits.shape
    w_qfl, w_bbox, w_dfl = weights
    pos = targets.positive
    n_idx, a_idx = pos.nonzero(as_tuple=True)
    scores = cls_logits.new_zeros(num_images, num_anchors, dtype=torch.float32)

    if n_idx.numel() > 0:
        stride = anchor_strides[a_idx].to(torch.float32)[:, None]  # (P, 1)
        centers = box_centers(anchors[a_idx]) / stride  # (P, 2), in strides
        pos_reg = reg_logits[n_idx, a_idx].float()  # (P, 4B)
        pred_boxes = distance_to_box(centers, distribution_expectation(pos_reg, _project(reg_max, pos_reg)))
        target_boxes = targets.boxes[n_idx, a_idx] / stride
        with torch.no_grad():
            weight = cls_logits[n_idx, a_idx].detach().float().sigmoid().amax(dim=1)  # (P,)
            scores[n_idx, a_idx] = box_iou_aligned(pred_boxes.detach(), target_boxes)
        loss_bbox = giou_loss(pred_boxes, target_boxes, weight=weight, reduction="sum") / (1.0 + _EPS32)
        target_dist = box_to_distance(centers, target_boxes, reg_max, eps=0.1)  # (P, 4)
        dfl = _dfl(pos_reg.reshape(-1, reg_max + 1), target_dist.reshape(-1))  # (4P,)
        loss_dfl = (dfl * weight[:, None].expand(-1, 4).reshape(-1)).sum() / (4.0 + _EPS32)
        weight_sum = weight.sum()
    else:  # keeps the graph connected (DDP) and the value 0, never NaN
        loss_bbox = reg_logits.sum() * 0.0 + 0.0  # "+ 0.0" turns a -0.0 into 0.0
        loss_dfl = reg_logits.sum() * 0.0 + 0.0
        weight_sum = reg_logits.new_zeros(())

    loss_qfl = quality_focal_loss_sparse(
        cls_logits.reshape(-1, num_classes),
        targets.labels.reshape(-1),
        scores.reshape(-1),
        beta=beta,
        weight=targets.label_weights.reshape(-1),
        reduction="sum",
    )
    num_pos = reduce_mean(targets.num_pos_avg.to(loss_qfl))
    box_norm = reduce_mean(weight_sum.detach().float()).clamp(min=1.0)
    return {
        "loss_qfl": w_qfl * loss_qfl / (num_pos + _EPS32),
        "loss_bbox": w_bbox * loss_bbox / box_norm,
        "loss_dfl": w_dfl * loss_dfl / box_norm,
    }


_PROJECT_CACHE: dict[tuple[int, torch.device], Tensor] = {}


def _project(reg_max: int, like: Tensor) -> Tensor:
    key = (reg_max, like.device)
    if key not in _PROJECT_CACHE:
        _PROJECT_CACHE[key] = torch.linspace(0, reg_max, reg_max + 1, device=like.device)
    return _PROJECT_CACHE[key]
