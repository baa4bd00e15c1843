"""Test-time decoding: score threshold and top-k per level, box decoding, clipping, class-aware NMS.

Shapes: N images, A anchors of all levels, A_l of level l, C classes, K box channels per anchor, D detections kept.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from ..ops.boxes import box_centers, clip_boxes
from .priors import Priors

__all__ = ["Postprocessor", "postprocess_image"]


def postprocess_image(
    cls_logits: Sequence[Tensor],
    box_logits: Sequence[Tensor],
    quality_logits: Sequence[Tensor] | None,
    anchors: Sequence[Tensor],
    strides: Sequence[int],
    image_size: tuple[int, int],
    box,
    quality,
    score_thr: float = 0.05,
    nms_pre: int = 1000,
    nms_iou: float = 0.6,
    max_per_img: int = 100,
) -> dict[str, Tensor]:
    """Detections of one image from its per-level outputs.

    Args:
        cls_logits: per level ``(A_l, C)``; box_logits: per level ``(A_l, K)``; quality_logits: per level ``(A_l,)``
            or None; anchors: per level ``(A_l, 4)``; image_size: ``(H, W)`` the boxes are clipped to.
        box: the box representation (distances, extras); quality: the quality estimator (test-time score).
    Score threshold and per-level top-k use the class score (``sigmoid`` of the quality estimator's ``joint``: the
    class score itself, GFLV2's joint score); the quality estimator then gives the NMS and output score (a
    branch's score factor: mmdetection's ``filter_scores_and_topk`` then score factors, not a threshold on the
    product).
    Returns:
        ``boxes (D, 4)`` xyxy in the frame of the network input, ``scores (D,)``, ``labels (D,)`` int64,
        ``strides (D,)`` the stride of each box's level, and the box representation's extras (GFL:
        ``distributions (D, 4, B)`` and the uncertainty summaries of :func:`gfldet.ops.uncertainty.edge_uncertainty`,
        ``edge_std`` in pixels of the network input).
    """
    all_boxes, all_scores, all_labels, all_logits, all_strides = [], [], [], [], []
    for lvl, (cls, reg, anc, stride) in enumerate(zip(cls_logits, box_logits, anchors, strides)):
        q = None if quality_logits is None else quality_logits[lvl]
        scores = quality.joint(cls, None if q is None else q[:, None]).float().sigmoid()  # (A_l, C); GFLV2: joint
        keep = scores > score_thr
        flat_scores = scores[keep]
        idxs = keep.nonzero()  # (k, 2): (anchor, class), row-major as the reference
        # stable: exact ties keep the (anchor, class) order, so that any implementation can reproduce it
        flat_scores, order = flat_scores.sort(descending=True, stable=True)
        top = min(nms_pre, idxs.shape[0])
        flat_scores, idxs = flat_scores[:top], idxs[order[:top]]
        a_idx, labels = idxs.unbind(dim=1)
        flat_scores = quality.rescore(flat_scores, None if q is None else q[a_idx])
        logits = reg[a_idx].float()
        boxes = clip_boxes(box.decode(logits, box_centers(anc[a_idx]), stride), image_size)
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
    return {"boxes": boxes, "scores": scores, "labels": labels, "strides": strides_t, **box.extras(logits, strides_t)}


class Postprocessor:
    """Detections of a batch from the head's flattened outputs, per image with :func:`postprocess_image`.

    ``settings`` holds the test settings ``score_thr``, ``nms_pre``, ``nms_iou``, ``max_per_img`` (the detector's
    :class:`~gfldet.models.config.ModelConfig` is one), read at each call: ``model.configure(score_thr=...)`` replaces it.
    """

    def __init__(self, box, quality, settings):
        self.box, self.quality, self.settings = box, quality, settings

    def __call__(self, cls: Tensor, box: Tensor, quality: Tensor | None, priors: Priors, strides: Sequence[int],
                 image_sizes: Sequence[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """``cls (N, A, C)``, ``box (N, A, K)``, ``quality (N, A)`` or None -> per image detections (network-input
        frame, clipped to each image's size)."""
        bounds = [0]
        for n in priors.num_level_anchors:
            bounds.append(bounds[-1] + n)
        levels = list(zip(bounds[:-1], bounds[1:]))
        s, out = self.settings, []
        for i, image_size in enumerate(image_sizes):
            out.append(postprocess_image(
                [cls[i, lo:hi] for lo, hi in levels],
                [box[i, lo:hi] for lo, hi in levels],
                None if quality is None else [quality[i, lo:hi] for lo, hi in levels],
                priors.per_level, strides, image_size, self.box, self.quality,
                s.score_thr, s.nms_pre, s.nms_iou, s.max_per_img,
            ))
        return out
