"""Reference pre- and post-processing in NumPy for exported models, shared by every runtime backend.

:func:`postprocess` turns the outputs of an exported GFL (``decoded`` or ``raw`` mode, see ``docs/onnx.md``)
into final detections with the same steps as the PyTorch model (``gfldet.models.postprocess.decode_image``):
per level, scores above ``score_thr``, the ``nms_pre`` best (anchor, class) pairs; boxes clipped to the image;
boxes of zero width or height dropped; class-aware NMS; the ``max_per_img`` best. Each detection carries its
edge distributions and uncertainty summaries (``gfldet.ops.uncertainty``).

:func:`preprocess` resizes and pads images as the model does. :mod:`gfldet.deploy.runtime` runs an exported file
(ONNX Runtime or OpenVINO) between the two.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import torch

from ..models.transform import image_as_float, resize_image

__all__ = ["postprocess", "nms", "batched_nms", "preprocess", "decode_raw", "edge_uncertainty_np"]


# ------------------------------------------------------------------------------------------------ NMS
def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, best score first. A box is suppressed by a kept one when their
    IoU (areas ``(x2 - x1) * (y2 - y1)``, no +1) is greater than ``iou_thr``."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            continue
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_thr]] = True
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_thr: float) -> np.ndarray:
    """Class-aware NMS (boxes of different labels never suppress each other); kept indices, best first.

    As torchvision's ``batched_nms`` on the CPU (which the PyTorch model uses, as the reference's mmcv does):
    up to 1,000 boxes, one NMS over boxes shifted apart per class by ``label * (max coordinate + 1)`` in
    float32 (the shift costs a little precision for high labels, so IoUs within ~1e-3 of the threshold
    are decided as torchvision decides them); above that, one NMS per class. Exact score ties are broken by
    index here; torchvision's unstable sort may break them otherwise.
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = boxes.astype(np.float32)
    if boxes.size <= 4000:
        offset = labels.astype(np.float32) * (boxes.max() + np.float32(1))
        return nms(boxes + offset[:, None], scores, iou_thr)
    keep = [idx[nms(boxes[idx], scores[idx], iou_thr)] for idx in (np.nonzero(labels == c)[0] for c in np.unique(labels))]
    keep = np.sort(np.concatenate(keep))
    return keep[np.argsort(-scores[keep], kind="stable")]


# ------------------------------------------------------------------------------------------------ decoding
def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -88: the sigmoid is then 0, as it should be
        return 1.0 / (1.0 + np.exp(-x))


def edge_uncertainty_np(probs: np.ndarray, scale: np.ndarray | float) -> dict[str, np.ndarray]:
    """NumPy twin of :func:`gfldet.ops.uncertainty.edge_uncertainty` for ``probs (D, 4, B)`` over bins 0..n."""
    p = probs.astype(np.float32)
    x = np.arange(p.shape[-1], dtype=np.float32)
    mean = (p * x).sum(-1, keepdims=True)
    var = np.clip((p * (x - mean) ** 2).sum(-1), 0, None)
    scale = np.asarray(scale, dtype=np.float32)
    if scale.ndim == 1:
        scale = scale[:, None]
    tiny = np.finfo(np.float32).tiny
    top2 = -np.sort(-p, axis=-1)[..., :2].sum(-1) if p.shape[-1] > 1 else p[..., 0]
    return {
        "edge_peak": p.max(-1) if p.size else np.zeros(p.shape[:-1], np.float32),
        "edge_entropy": np.clip(-(p * np.log(np.maximum(p, tiny))).sum(-1), 0, None),
        "edge_std": np.sqrt(var) * scale,
        "loc_conf": top2.mean(-1),
    }


def _priors(featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int]) -> np.ndarray:
    out = []
    for (h, w), s in zip(featmap_sizes, strides):
        cy, cx = np.meshgrid(np.arange(h, dtype=np.float32) * s, np.arange(w, dtype=np.float32) * s, indexing="ij")
        out.append(np.stack([cx.reshape(-1), cy.reshape(-1), np.full(h * w, s, np.float32)], axis=1))
    return np.concatenate(out)


def decode_raw(cls_maps: Sequence[np.ndarray], reg_maps: Sequence[np.ndarray], strides: Sequence[int], reg_max: int) -> dict[str, np.ndarray]:
    """Raw per-level outputs -> the ``decoded`` outputs (``boxes, scores, distributions, priors``)."""
    n = cls_maps[0].shape[0]
    scores = np.concatenate([c.transpose(0, 2, 3, 1).reshape(n, -1, c.shape[1]) for c in cls_maps], axis=1)
    logits = np.concatenate([r.transpose(0, 2, 3, 1).reshape(n, -1, 4, reg_max + 1) for r in reg_maps], axis=1)
    priors = _priors([c.shape[-2:] for c in cls_maps], strides)
    probs = _softmax(logits.astype(np.float32))
    d = (probs @ np.arange(reg_max + 1, dtype=np.float32)) * priors[None, :, 2:3]
    cx, cy = priors[None, :, 0], priors[None, :, 1]
    boxes = np.stack([cx - d[..., 0], cy - d[..., 1], cx + d[..., 2], cy + d[..., 3]], axis=-1)
    return {"boxes": boxes, "scores": _sigmoid(scores.astype(np.float32)), "distributions": probs, "priors": priors}


def _level_slices(strides_per_prior: np.ndarray) -> list[slice]:
    cuts = np.nonzero(np.diff(strides_per_prior))[0] + 1
    bounds = [0, *cuts.tolist(), len(strides_per_prior)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def postprocess(
    outputs: dict[str, np.ndarray],
    image_sizes: Sequence[tuple[int, int]],
    meta: dict[str, Any],
    scales: Sequence[tuple[float, float]] | None = None,
    original_sizes: Sequence[tuple[int, int]] | None = None,
    score_thr: float | None = None,
) -> list[dict[str, np.ndarray]]:
    """Final detections per image from an exported model's outputs (either mode, by name).

    Args:
        outputs: output name -> array, as the runtime returns them.
        image_sizes: per image ``(H, W)`` of the network input before padding (boxes are clipped to it).
        meta: the ``gfldet.*`` settings of the file (:func:`read_metadata`); keys without the prefix.
        scales, original_sizes: per image ``(sx, sy)`` resize factors and original ``(H, W)``; when given,
            boxes and ``edge_std`` are mapped back to the original images.
    Returns:
        per image a dict of ``boxes (D, 4)``, ``scores``, ``labels``, ``distributions (D, 4, B)``,
        ``strides``, ``edge_peak``, ``edge_entropy``, ``edge_std`` (D, 4) and ``loc_conf (D,)``.
    """
    strides = list(meta["strides"])
    thr = float(meta["score_thr"] if score_thr is None else score_thr)
    nms_pre, nms_iou, max_det = int(meta["nms_pre"]), float(meta["nms_iou"]), int(meta["max_per_img"])
    if "boxes" in outputs:
        dec = outputs
    else:
        nl = len(strides)
        levels = [f"p{i}" for i in range(3, 3 + nl)]
        try:
            cls_maps = [outputs[f"cls_{l}"] for l in levels]
            reg_maps = [outputs[f"reg_{l}"] for l in levels]
        except KeyError as e:
            raise ValueError(f"outputs hold neither 'boxes' (decoded mode) nor raw level maps: missing {e}") from e
        dec = decode_raw(cls_maps, reg_maps, strides, int(meta["reg_max"]))
    prior_strides = dec["priors"][:, 2]
    slices = _level_slices(prior_strides)
    results = []
    for i, (h, w) in enumerate(image_sizes):
        b_all, s_all, l_all, a_all = [], [], [], []
        for sl in slices:
            sc = dec["scores"][i, sl]
            anchor, label = np.nonzero(sc > thr)  # row-major (anchor, class), as the PyTorch decoder
            flat = sc[anchor, label]
            order = np.argsort(-flat, kind="stable")[:nms_pre]
            a_idx = anchor[order] + sl.start
            b_all.append(dec["boxes"][i, a_idx])
            s_all.append(flat[order])
            l_all.append(label[order])
            a_all.append(a_idx)
        boxes, scores = np.concatenate(b_all).astype(np.float32), np.concatenate(s_all).astype(np.float32)
        labels, anchors = np.concatenate(l_all).astype(np.int64), np.concatenate(a_all)
        boxes = np.stack([np.clip(boxes[:, 0], 0, w), np.clip(boxes[:, 1], 0, h), np.clip(boxes[:, 2], 0, w), np.clip(boxes[:, 3], 0, h)], axis=1) if boxes.size else boxes.reshape(0, 4)
        ok = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        boxes, scores, labels, anchors = boxes[ok], scores[ok], labels[ok], anchors[ok]
        keep = batched_nms(boxes, scores, labels, nms_iou)[:max_det]
        boxes, scores, labels, anchors = boxes[keep], scores[keep], labels[keep], anchors[keep]
        probs = dec["distributions"][i, anchors].astype(np.float32)
        det_strides = prior_strides[anchors].astype(np.float32)
        det = {"boxes": boxes, "scores": scores, "labels": labels, "distributions": probs, "strides": det_strides,
               **edge_uncertainty_np(probs.reshape(-1, 4, probs.shape[-1]) if probs.size else np.zeros((0, 4, int(meta["reg_max"]) + 1), np.float32), det_strides)}
        if scales is not None:
            sx, sy = scales[i]
            if (sx, sy) != (1.0, 1.0):
                oh, ow = original_sizes[i]
                f = np.array([sx, sy, sx, sy], np.float32)
                det["boxes"] = np.minimum(np.clip(det["boxes"] / f, 0, None), np.array([ow, oh, ow, oh], np.float32))
                det["edge_std"] = det["edge_std"] / f
        results.append(det)
    return results


# ------------------------------------------------------------------------------------------------ input
def preprocess(images: Sequence[Any], meta: dict[str, Any]) -> tuple[np.ndarray, list, list, list]:
    """``(3, H, W)`` RGB images (arrays or tensors; uint8, or float in [0, 1]) -> the ``images`` input of an exported model
    (float32 0..255, resized as the model does, padded to a common size with the pixel mean, which the
    graph normalises to 0 as the model's zero padding), the resized sizes, scales and original sizes."""
    mean = np.asarray(meta.get("pixel_mean", (123.675, 116.28, 103.53)), np.float32)
    arrs, sizes, scales, originals = [], [], [], []
    for k, img in enumerate(images):  # the model's own image checks and resize (gfldet.models.transform)
        t = torch.as_tensor(np.asarray(img))
        x = resize_image(image_as_float(k, t), meta.get("min_size"), meta.get("max_size"))
        h, w, nh, nw = int(t.shape[1]), int(t.shape[2]), int(x.shape[1]), int(x.shape[2])
        arrs.append(x.numpy())
        sizes.append((nh, nw))
        scales.append((nw / w, nh / h))
        originals.append((h, w))
    bh, bw = max(s[0] for s in sizes), max(s[1] for s in sizes)
    batch = np.empty((len(arrs), 3, bh, bw), np.float32)
    batch[:] = mean[None, :, None, None]
    for k, a in enumerate(arrs):
        batch[k, :, : a.shape[1], : a.shape[2]] = a
    return batch, sizes, scales, originals
