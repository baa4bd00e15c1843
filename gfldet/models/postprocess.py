"""Test-time decoding: score threshold and top-k per level, box decoding, clipping, class-aware NMS.

Shapes: A_l anchors of level l, C classes, B = n + 1 bins, D detections kept.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from ..ops.boxes import box_centers, distance_to_box
from ..ops.integral import distribution_expectation, edge_distributions
from ..ops.uncertainty import edge_uncertainty

__all__ = ["decode_image"]


def decode_image(
    cls_logits: Sequence[Tensor],
    reg_logits: Sequence[Tensor],
    anchors: Sequence[Tensor],
    strides: Sequence[int],
    image_size: tuple[int, int],
    project: Tensor,
    score_thr: float = 0.05,
    nms_pre: int = 1000,
    nms_iou: float = 0.6,
    max_per_img: int = 100,
) -> dict[str, Tensor]:
    """Detections of one image from its per-level outputs.

    Args:
        cls_logits: per level ``(A_l, C)``; reg_logits: per level ``(A_l, 4 * B)``; anchors: per level ``(A_l, 4)``.
        image_size: ``(H, W)`` the boxes are clipped to.
    Returns:
        ``boxes (D, 4)`` xyxy in the frame of the network input, ``scores (D,)``, ``labels (D,)`` int64,
        ``distributions (D, 4, B)`` the learned (l, t, r, b) edge distributions, ``strides (D,)`` the stride of
        each box's level, and the uncertainty summaries of :func:`gfldet.ops.uncertainty.edge_uncertainty`
        (``edge_peak``, ``edge_entropy``, ``edge_std`` in pixels of the network input, ``loc_conf``).
    """
    reg_max = project.numel() - 1
    all_boxes, all_scores, all_labels, all_logits, all_strides = [], [], [], [], []
    for cls, reg, anc, stride in zip(cls_logits, reg_logits, anchors, strides):
        scores = cls.float().sigmoid()  # (A_l, C)
        keep = scores > score_thr
        flat_scores = scores[keep]
        idxs = keep.nonzero()  # (K, 2): (anchor, class), row-major as the reference
        # stable: exact ties keep the (anchor, class) order, so that any implementation can reproduce it
        flat_scores, order = flat_scores.sort(descending=True, stable=True)
        top = min(nms_pre, idxs.shape[0])
        flat_scores, idxs = flat_scores[:top], idxs[order[:top]]
        a_idx, labels = idxs.unbind(dim=1)
        logits = reg[a_idx].float()
        dists = distribution_expectation(logits, project) * stride
        boxes = distance_to_box(box_centers(anc[a_idx]), dists, max_shape=image_size)
        all_boxes.append(boxes)
        all_scores.append(flat_scores)
        all_labels.append(labels)
        all_logits.append(logits)
        all_strides.append(torch.full_like(flat_scores, float(stride)))
    boxes = torch.cat(all_boxes)
    scores = torch.cat(all_scores)
    labels = torch.cat(all_labels)
    logits = torch.cat(all_logits)
    strides_t = torch.cat(all_strides)
    # min_bbox_size = 0: boxes of zero width or height (after clipping) are dropped, as the reference does.
    wh_ok = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    if not bool(wh_ok.all()):
        boxes, scores, labels, logits, strides_t = boxes[wh_ok], scores[wh_ok], labels[wh_ok], logits[wh_ok], strides_t[wh_ok]
    if boxes.shape[0] > 0:
        keep = batched_nms(boxes, scores, labels, nms_iou)[:max_per_img]
        boxes, scores, labels, logits, strides_t = boxes[keep], scores[keep], labels[keep], logits[keep], strides_t[keep]
    probs = edge_distributions(logits, reg_max)
    return {
        "boxes": boxes,
        "scores": scores,
        "labels": labels,
        "distributions": probs,
        "strides": strides_t,
        **edge_uncertainty(probs, project, strides_t),
    }
