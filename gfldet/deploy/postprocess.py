"""The deployment runtime's output side in NumPy: an exported graph's decoded outputs -> final detections.

The graph (``gfldet export``, ``decoded`` mode: ``docs/onnx.md``) already decodes every prior with the model's
own code: boxes, scores, the edge distributions and their uncertainty summaries. What is left is the selection the
PyTorch model makes after decoding (``gfldet.models.postprocess.postprocess_image``), written here once in NumPy and
tested against it: per level, scores above ``score_thr`` and the ``nms_pre`` best (prior, class) pairs; boxes
clipped to the image; boxes of zero width or height dropped; class-aware NMS; the ``max_per_img`` best; then
boxes and ``edge_std`` mapped back to the images given. No torch: this runs where only NumPy and a runtime are.

What differs between detector families is read from the file's settings, each rule written once here with its
default the GFL one: ``nms_pre`` None (NanoDet: every candidate, no per-level top-k), ``clip`` (``image``: to each
image's resized size; ``batch``: to the padded batch, as NanoDet), ``drop_empty`` (GFL drops boxes of zero width or
height, NanoDet keeps them), ``nms`` (``torchvision``: torchvision's ``batched_nms``; ``offset``: NanoDet's
``multiclass_nms``, one offset NMS below ``nms_split_thr`` candidates and per class on the offset boxes from
there), ``resize`` (``keep_ratio``: boxes divided by the scales; ``warp``: the corners through the inverse warp).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import GfldetError
from ..ops.resize import padded_size

__all__ = ["postprocess", "nms", "batched_nms", "warp_boxes", "FRAME_OUTPUTS", "NMS_STYLES"]

NMS_STYLES = ("torchvision", "offset")

# outputs of a decoded graph that are not per-prior extras of a detection
FRAME_OUTPUTS = ("boxes", "scores", "priors")


# ------------------------------------------------------------------------------------------------ NMS
# Up to this many candidates NMS computes their IoU matrix at once (n x n float32: 1 MiB at 512) and then only walks
# it; above, it computes the IoUs of each kept box with the rest (fewer operations, more Python per box).
_MATRIX_NMS_MAX = 512


def _overlaps(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, areas: np.ndarray, i: np.ndarray,
              j: np.ndarray, iou_thr: float) -> np.ndarray:
    """Whether boxes ``i`` and ``j`` (indices that broadcast against each other) overlap by IoU > ``iou_thr``."""
    w = np.clip(np.minimum(x2[i], x2[j]) - np.maximum(x1[i], x1[j]), 0, None)
    h = np.clip(np.minimum(y2[i], y2[j]) - np.maximum(y1[i], y1[j]), 0, None)
    inter = w * h
    return inter / (areas[i] + areas[j] - inter) > iou_thr


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, best score first (at most ``max_keep``: the first ``max_keep`` of the
    full result). A box is suppressed by a kept one when their IoU (areas ``(x2 - x1) * (y2 - y1)``, no +1;
    ``inter / (area_i + area_j - inter)`` in float32, as torchvision's kernel) is greater than ``iou_thr``."""
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    coords = [np.ascontiguousarray(b[:, k]) for k in range(4)]
    areas = (coords[2] - coords[0]) * (coords[3] - coords[1])
    n, limit = len(order), len(order) if max_keep is None else max_keep
    keep: list[int] = []
    if n <= _MATRIX_NMS_MAX:
        idx = np.arange(n)
        over = _overlaps(*coords, areas, idx[:, None], idx[None, :], iou_thr)  # (n, n), symmetric
        suppressed = np.zeros(n, dtype=bool)
        for i in range(n):
            if suppressed[i]:
                continue
            keep.append(i)
            if len(keep) == limit:
                break
            suppressed |= over[i]
        return order[np.asarray(keep, dtype=np.int64)]
    alive = np.arange(n)
    while alive.size and len(keep) < limit:
        i, rest = alive[0], alive[1:]
        keep.append(i)
        alive = rest[~_overlaps(*coords, areas, i, rest, iou_thr)]
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_thr: float,
                max_keep: int | None = None, style: str = "torchvision", split_thr: int = 10000) -> np.ndarray:
    """Class-aware NMS (boxes of different labels never suppress each other); kept indices, best first, at most
    ``max_keep``.

    As torchvision's ``batched_nms`` on the CPU (which the PyTorch model uses, as the reference's mmcv does):
    up to 1,000 boxes, one NMS over boxes shifted apart per class by ``label * (max coordinate + 1)`` in
    float32 (the shift costs a little precision for high labels, so IoUs within ~1e-3 of the threshold
    are decided as torchvision decides them); above that, one NMS per class. Exact score ties are broken by
    index here; torchvision's unstable sort may break them otherwise.

    ``style="offset"``: NanoDet's ``multiclass_nms`` (gfldet.models.nanodet.offset_class_nms): the offset NMS below
    ``split_thr`` boxes; from there one NMS per class on the offset boxes, the union sorted by score.
    """
    if style not in NMS_STYLES:
        raise GfldetError(f"NMS style {style!r} is not one of {NMS_STYLES}: exported by a newer gfldet?")
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = boxes.astype(np.float32)
    offset = labels.astype(np.float32) * (boxes.max() + np.float32(1))
    if (style == "torchvision" and boxes.size <= 4000) or (style == "offset" and boxes.shape[0] < split_thr):
        return nms(boxes + offset[:, None], scores, iou_thr, max_keep)
    if style == "offset":
        boxes = boxes + offset[:, None]
    keep = [idx[nms(boxes[idx], scores[idx], iou_thr, max_keep)]
            for idx in (np.nonzero(labels == c)[0] for c in np.unique(labels))]
    keep = np.sort(np.concatenate(keep))
    return keep[np.argsort(-scores[keep], kind="stable")][:max_keep]


# ------------------------------------------------------------------------------------------------ selection
def _level_bounds(prior_strides: np.ndarray) -> list[tuple[int, int]]:
    cuts = np.nonzero(np.diff(prior_strides))[0] + 1
    bounds = [0, *cuts.tolist(), len(prior_strides)]
    return list(zip(bounds[:-1], bounds[1:]))


def _select(scores: np.ndarray, bounds: Sequence[tuple[int, int]], thr: float, nms_pre: int | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per level, the (prior, class) pairs scoring above ``thr``, best ``nms_pre`` first (None: all of them, in
    row-major order): priors, labels, scores."""
    if nms_pre is None:
        prior, label = np.nonzero(scores > thr)
        return prior, label.astype(np.int64), scores[prior, label].astype(np.float32)
    a_all, l_all, s_all = [], [], []
    for lo, hi in bounds:
        sc = scores[lo:hi]
        prior, label = np.nonzero(sc > thr)  # row-major (prior, class), as the PyTorch decoder
        flat = sc[prior, label]
        order = np.argsort(-flat, kind="stable")[:nms_pre]
        a_all.append(prior[order] + lo)
        l_all.append(label[order])
        s_all.append(flat[order])
    return np.concatenate(a_all), np.concatenate(l_all).astype(np.int64), np.concatenate(s_all).astype(np.float32)


def postprocess(
    outputs: dict[str, np.ndarray],
    image_sizes: Sequence[tuple[int, int]],
    meta: dict[str, Any],
    scales: Sequence[tuple[float, float]] | None = None,
    original_sizes: Sequence[tuple[int, int]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Final detections per image from a decoded graph's outputs.

    Args:
        outputs: output name -> array, as the runtime returns them: ``boxes (N, A, 4)``, ``scores (N, A, C)``,
            ``priors (A, 3)`` and the per-prior extras (``(N, A, ...)``: distributions and uncertainty).
        image_sizes: per image ``(H, W)`` of the network input before padding (boxes are clipped to it).
        meta: the ``gfldet.*`` settings of the file (:func:`gfldet.deploy.read_metadata`); keys without the prefix
            (its test settings as ``Detector.configure`` left them).
        scales, original_sizes: per image ``(sx, sy)`` resize factors (a ``warp`` file: the 3x3 warp matrix) and
            original ``(H, W)``; when given, boxes and ``edge_std`` are mapped back to the original images.
    Returns:
        per image a dict of ``boxes (D, 4)``, ``scores``, ``labels``, ``strides`` and each extra at the kept
        priors (GFL: ``distributions (D, 4, B)``, ``edge_peak``, ``edge_entropy``, ``edge_std`` (D, 4), ``loc_conf``).
    """
    missing = [k for k in FRAME_OUTPUTS if k not in outputs]
    if missing:
        raise GfldetError(f"the outputs lack {missing}: not a decoded gfldet graph (outputs: {sorted(outputs)})")
    thr = float(meta["score_thr"])
    nms_pre = None if meta.get("nms_pre") is None else int(meta["nms_pre"])
    nms_iou, max_det = float(meta["nms_iou"]), int(meta["max_per_img"])
    style, split_thr = meta.get("nms", "torchvision"), int(meta.get("nms_split_thr", 10000))
    drop_empty, warp = bool(meta.get("drop_empty", True)), meta.get("resize", "keep_ratio") == "warp"
    clip = meta.get("clip", "image")
    if clip not in ("image", "batch"):
        raise GfldetError(f"the file's clip {clip!r} is not 'image' or 'batch': exported by a newer gfldet?")
    if clip == "batch":  # every image clipped to the padded batch, as the graph's input
        batch_hw = padded_size(max(h for h, _ in image_sizes), max(w for _, w in image_sizes),
                               int(meta["size_divisor"]))
        image_sizes = [batch_hw] * len(image_sizes)
    extras = [k for k in outputs if k not in FRAME_OUTPUTS]
    prior_strides = outputs["priors"][:, 2]
    bounds = _level_bounds(prior_strides)
    results = []
    for i, (h, w) in enumerate(image_sizes):
        priors, labels, scores = _select(outputs["scores"][i], bounds, thr, nms_pre)
        boxes = outputs["boxes"][i, priors].astype(np.float32).reshape(-1, 4)
        boxes = np.minimum(np.maximum(boxes, np.float32(0)), np.array([w, h, w, h], np.float32))  # clip to the image
        if drop_empty:
            ok = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
            boxes, scores, labels, priors = boxes[ok], scores[ok], labels[ok], priors[ok]
        keep = batched_nms(boxes, scores, labels, nms_iou, max_det, style, split_thr)
        priors = priors[keep]
        det = {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep],
               "strides": prior_strides[priors].astype(np.float32)}
        det.update({k: outputs[k][i, priors].astype(np.float32) for k in extras})
        if scales is not None and warp:
            _warp_to_image(det, scales[i], original_sizes[i])
        elif scales is not None:
            _to_image(det, scales[i], original_sizes[i])
        results.append(det)
    return results


def _to_image(det: dict[str, np.ndarray], scale: tuple[float, float], original_size: tuple[int, int]) -> None:
    """Boxes and ``edge_std`` from the network input's pixels to the image's (as the PyTorch model's
    ``DetectionTransform.to_images``): divided by the resize factors, boxes clipped to the image."""
    sx, sy = scale
    if (sx, sy) == (1.0, 1.0):
        return
    oh, ow = original_size
    f = np.array([sx, sy, sx, sy], np.float32)
    det["boxes"] = np.minimum(np.maximum(det["boxes"] / f, np.float32(0)), np.array([ow, oh, ow, oh], np.float32))
    if "edge_std" in det:
        det["edge_std"] = det["edge_std"] / f


def warp_boxes(boxes: np.ndarray, m: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(D, 4)`` xyxy boxes through the 3x3 matrix ``m``: the four corners mapped (float64), their bounding box,
    clipped to ``[0, width] x [0, height]``, float32 (NanoDet's ``warp_boxes``, gfldet.models.nanodet.warp_boxes)."""
    if boxes.size == 0:
        return boxes.reshape(0, 4).astype(np.float32)
    x1, y1, x2, y2 = boxes.astype(np.float64).T
    corners = np.stack([np.stack([x1, y1], -1), np.stack([x2, y2], -1), np.stack([x1, y2], -1),
                        np.stack([x2, y1], -1)], axis=1)  # (D, 4, 2)
    xy = np.concatenate([corners, np.ones_like(corners[..., :1])], -1) @ np.asarray(m, np.float64).T
    xy = xy[..., :2] / xy[..., 2:3]
    lo, hi = xy.min(1), xy.max(1)
    out = np.stack([np.clip(lo[:, 0], 0, width), np.clip(lo[:, 1], 0, height), np.clip(hi[:, 0], 0, width),
                    np.clip(hi[:, 1], 0, height)], axis=-1)
    return out.astype(np.float32)


def _warp_to_image(det: dict[str, np.ndarray], m: Sequence[Sequence[float]], original_size: tuple[int, int]) -> None:
    """Boxes from the warped input back to the image (the inverse warp of their corners, clipped to the image);
    ``edge_std`` divided by the warp's scales (its matrices scale and shift, they do not rotate)."""
    m = np.asarray(m, np.float64)
    oh, ow = original_size
    det["boxes"] = warp_boxes(det["boxes"], np.linalg.inv(m), ow, oh)
    if "edge_std" in det:
        f = np.array([m[0, 0], m[1, 1], m[0, 0], m[1, 1]], np.float32)
        det["edge_std"] = det["edge_std"] / f
