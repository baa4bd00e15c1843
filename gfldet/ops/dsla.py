"""The Dynamic Soft Label Assigner of NanoDet-Plus (RangiLyu/nanodet, ``DynamicSoftLabelAssigner``; its ideas from
OTA and YOLOX's SimOTA), for one image.

Which priors train towards which ground truth is decided from the predictions themselves:

1. candidates: priors whose point lies strictly inside at least one ground-truth box (any of them);
2. cost of candidate p for ground truth g: ``cls_cost + iou_factor * -log(IoU(box_p, g) + 1e-7)``, where
   ``cls_cost`` is the QFL-style cost of p's class logits against the soft label ``IoU(box_p, g)`` at g's class
   and 0 elsewhere: ``sum_c BCE(x_c, y_c) |y_c - sigmoid(x_c)|^2``; a candidate's cost is computed for every g,
   also for those whose box does not contain its point (the official assigner has no centre prior);
3. dynamic k: each g takes the ``k_g = max(1, int(sum of its 13 largest IoUs))`` candidates of lowest cost;
4. a prior taken by several g keeps only the g of lowest cost among all ground truths (as the official code, the
   minimum runs over every g, not only those that took it).

The result is per prior the index of its ground truth (-1: negative) and the IoU of its predicted box with it, the
positive's QFL target. Ignore regions are not used: NanoDet-Plus's configs run the assigner with
``ignore_iof_thr=-1`` (crowd boxes neither train nor are ignored).

The class cost is computed as ``sum_c BCE(x_c, 0) sigmoid(x_c)^2`` over all classes, with g's class term swapped
for its soft-label term: the same value as the official ``(V, M, C)`` tensor summed over C, in ``O(V M)`` memory;
only the order of the float32 additions differs.

Shapes: A priors, C classes, M ground truths, V candidates.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import box_iou

__all__ = ["dynamic_soft_label_assign"]

IOU_EPS = 1e-7  # inside the IoU cost's logarithm (the official value)


@torch.no_grad()
def dynamic_soft_label_assign(cls_logits: Tensor, points: Tensor, pred_boxes: Tensor, gt_boxes: Tensor,
                              gt_labels: Tensor, topk: int = 13, iou_factor: float = 3.0) -> tuple[Tensor, Tensor]:
    """Assign one image's priors (see the module docstring).

    Args:
        cls_logits: ``(A, C)`` class logits of the predictions that assign (NanoDet-Plus: the auxiliary head's).
        points: ``(A, 2)`` prior points (pixels).
        pred_boxes: ``(A, 4)`` decoded xyxy predicted boxes (pixels).
        gt_boxes: ``(M, 4)`` xyxy ground truths; ``gt_labels`` ``(M,)`` their classes in ``[0, C)``.
    Returns:
        ``gt_index (A,)`` int64, the assigned ground truth or -1, and ``ious (A,)`` float, the IoU of each
        positive's predicted box with its ground truth (0 for negatives).
    """
    num_priors = points.shape[0]
    gt_index = torch.full((num_priors,), -1, dtype=torch.long, device=points.device)
    ious_out = pred_boxes.new_zeros(num_priors)
    if gt_boxes.shape[0] == 0 or num_priors == 0:
        return gt_index, ious_out
    gt_boxes = gt_boxes.to(pred_boxes.dtype)
    deltas = torch.cat([points[:, None] - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - points[:, None]], dim=-1)
    candidate = (deltas.min(dim=-1).values > 0).any(dim=1)  # (A,)
    cand = candidate.nonzero().squeeze(1)
    if cand.numel() == 0:
        return gt_index, ious_out

    logits = cls_logits[cand].float()  # (V, C)
    ious = box_iou(pred_boxes[cand], gt_boxes)  # (V, M)
    labels = gt_labels.long()
    x_g = logits[:, labels]  # (V, M): each candidate's logit at each ground truth's class
    negative_terms = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") \
        * logits.sigmoid().pow(2)
    soft = ious.to(logits.dtype)
    neg_g = F.binary_cross_entropy_with_logits(x_g, torch.zeros_like(x_g), reduction="none") * x_g.sigmoid().pow(2)
    pos_g = F.binary_cross_entropy_with_logits(x_g, soft, reduction="none") * (soft - x_g.sigmoid()).abs().pow(2)
    cls_cost = negative_terms.sum(dim=1, keepdim=True) - neg_g + pos_g
    cost = cls_cost + iou_factor * -torch.log(ious + IOU_EPS)  # (V, M)

    # dynamic k per ground truth, then its k cheapest candidates
    k_top = min(topk, ious.shape[0])
    dynamic_k = ious.topk(k_top, dim=0).values.sum(dim=0).int().clamp(min=1)  # (M,)
    rank = cost.argsort(dim=0).argsort(dim=0)  # (V, M): each candidate's place in each column, cheapest first
    matched = rank < dynamic_k[None, :]
    multiple = matched.sum(dim=1) > 1
    if bool(multiple.any()):
        cheapest = cost[multiple].argmin(dim=1)
        matched[multiple] = F.one_hot(cheapest, cost.shape[1]).bool()
    fg = matched.any(dim=1)
    assigned = matched[fg].float().argmax(dim=1)
    positive = cand[fg]
    gt_index[positive] = assigned
    ious_out[positive] = ious[fg].gather(1, assigned[:, None]).squeeze(1).to(ious_out.dtype)
    return gt_index, ious_out
