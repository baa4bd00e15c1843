"""Deterministic synthetic detection images with sharp and ambiguous object edges.

Every image is drawn from a seeded :class:`numpy.random.Generator`, so the same seed always gives the same
pixels and boxes. Objects are shapes whose class is told by shape and a class-tinted colour
(``rectangle``, ``ellipse``, ``triangle``, then ``diamond``, ``cross``, ``ring`` for more classes), on a
smooth, noisy colour background, from small to large, sometimes crowded and overlapping.

What Generalized Focal Loss is about is the *ambiguity* of edges, so each object gets one of four effects:

``sharp``     crisp, anti-aliased edges, full contrast.
``blur``      its layer is Gaussian-blurred: isotropically (all four edges ambiguous) or along x only (left
              and right ambiguous) or y only (top and bottom ambiguous).
``faded``     its opacity ramps down towards one side, ending at almost nothing there (that edge is ambiguous).
``occluded``  a background-textured bar hides one side of it (that edge is ambiguous).

Boxes are *amodal*: the extent of the whole shape, also where it is blurred out, faded out or hidden. An
edge is also marked ambiguous when objects drawn later hide most of the object's pixels along that edge.
Per object, ``ambiguous`` is an ``(M, 4)`` bool array in (left, top, right, bottom) order, the order of
GFL's edge distributions, and ``effects`` an ``(M,)`` int array indexing :data:`EFFECTS`.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import GfldetError
from . import synthetic_draw as paint
from .synthetic_common import hsv_to_rgb, overlap_window, write_generated_coco

__all__ = [
    "SHAPES",
    "EFFECTS",
    "EDGES",
    "class_names",
    "make_sample",
    "make_split",
    "write_coco",
]

log = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = ("rectangle", "ellipse", "triangle", "diamond", "cross", "ring")
EFFECTS: tuple[str, ...] = ("sharp", "blur", "faded", "occluded")
EDGES: tuple[str, ...] = ("left", "top", "right", "bottom")

# A base hue per class (degrees); object colours are jittered around it.
_CLASS_HUES = (0.0, 120.0, 225.0, 50.0, 290.0, 175.0)


def class_names(num_classes: int = 3) -> list[str]:
    """Names of the first ``num_classes`` synthetic classes (label ``i`` is ``class_names()[i]``)."""
    _check_num_classes(num_classes)
    return list(SHAPES[:num_classes])


def _check_num_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= len(SHAPES):
        raise GfldetError(f"num_classes must be in [1, {len(SHAPES)}], got {num_classes}")


# --------------------------------------------------------------------------- samples
def make_sample(
    rng: np.random.Generator,
    size: tuple[int, int] = (320, 320),
    num_classes: int = 3,
    *,
    num_objects: tuple[int, int] = (2, 7),
    min_object: float = 0.05,
    max_object: float = 0.5,
    effect_probs: Sequence[float] = (0.55, 0.2, 0.1, 0.15),
    max_iou: float = 0.35,
    crowd_prob: float = 0.3,
    noise: tuple[float, float] = (2.0, 8.0),
    with_meta: bool = False,
):
    """Draw one synthetic detection image.

    Args:
        rng: the only source of randomness (``numpy.random.default_rng(seed)``).
        size: ``(H, W)`` of the image.
        num_classes: classes used, 1 to ``len(SHAPES)``; label ``i`` is the shape ``SHAPES[i]``.
        num_objects: inclusive ``(min, max)`` objects per image (fewer when they do not fit).
        min_object, max_object: range of the object size (square root of the box area) as a fraction of
            ``min(H, W)``, sampled log-uniformly.
        effect_probs: probabilities of the effects ``EFFECTS`` = (sharp, blur, faded, occluded).
        max_iou: the largest IoU a new box may have with any earlier box.
        crowd_prob: probability that an object is placed next to (overlapping) an earlier one.
        noise: range of the standard deviation of the per-pixel Gaussian noise (0-255 scale).
        with_meta: also return a dict of per-object metadata (see below).

    Returns:
        ``image`` ``(H, W, 3)`` uint8 RGB, ``boxes`` ``(M, 4)`` float32 xyxy pixels (amodal), ``labels``
        ``(M,)`` int64 in ``[0, num_classes)``; with ``with_meta`` also a dict with ``ambiguous`` ``(M, 4)``
        bool (left, top, right, bottom), ``effects`` ``(M,)`` int64 indexing ``EFFECTS``, ``blur_sigma``
        ``(M, 2)`` float32 (x, y) and ``visible`` ``(M,)`` float32, the visible fraction of the shape.
    """
    _check_num_classes(num_classes)
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise GfldetError(f"image size must be at least 16x16, got {size}")
    probs = np.asarray(effect_probs, dtype=np.float64)
    if probs.shape != (len(EFFECTS),) or (probs < 0).any() or probs.sum() <= 0:
        raise GfldetError(f"effect_probs must be {len(EFFECTS)} non-negative numbers, got {effect_probs}")
    probs = probs / probs.sum()
    side = min(h, w)
    lo_px, hi_px = max(6.0, min_object * side), max(8.0, max_object * side)

    img = paint.background(rng, h, w)
    n_target = int(rng.integers(num_objects[0], num_objects[1] + 1))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    effects: list[int] = []
    sigmas: list[tuple[float, float]] = []
    ambiguous: list[np.ndarray] = []
    masks: list[tuple[np.ndarray, int, int]] = []  # unblurred coverage and its crop origin
    # everything drawn: (it hides the objects with an index below this, coverage crop, crop x0, crop y0)
    layers: list[tuple[int, np.ndarray, int, int]] = []

    for _ in range(n_target):
        box = None
        for _try in range(30):
            s = math.exp(rng.uniform(math.log(lo_px), math.log(hi_px)))
            ar = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            bw, bh = min(s * math.sqrt(ar), w - 4.0), min(s / math.sqrt(ar), h - 4.0)
            if boxes and rng.random() < crowd_prob:  # crowd: centre near an earlier object's edge
                ref = boxes[int(rng.integers(len(boxes)))]
                cx = rng.uniform(ref[0], ref[2]) + rng.choice([-1, 1]) * 0.5 * (ref[2] - ref[0])
                cy = rng.uniform(ref[1], ref[3]) + rng.choice([-1, 1]) * 0.5 * (ref[3] - ref[1]) * rng.random()
            else:
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            x0 = float(np.clip(cx - bw / 2, 1.0, w - 1.0 - bw))
            y0 = float(np.clip(cy - bh / 2, 1.0, h - 1.0 - bh))
            cand = np.array([x0, y0, x0 + bw, y0 + bh], dtype=np.float32)
            if boxes and paint.box_iou(cand, np.stack(boxes)).max() > max_iou:
                continue
            box = cand
            break
        if box is None:
            continue
        label = int(rng.integers(num_classes))
        shape = SHAPES[label]
        geom = paint.shape_geometry(rng, shape, box)
        effect = int(rng.choice(len(EFFECTS), p=probs))
        amb = np.zeros(4, dtype=bool)
        obj = float(math.sqrt((box[2] - box[0]) * (box[3] - box[1])))
        sx = sy = 0.0
        if effect == 1:  # blur: isotropic, or along one axis only
            sigma = rng.uniform(0.06, 0.14) * obj + 1.0
            mode = int(rng.choice(3, p=[0.5, 0.25, 0.25]))
            sx = sigma if mode in (0, 1) else 0.0
            sy = sigma if mode in (0, 2) else 0.0
            amb[[0, 2]] = sx > 0
            amb[[1, 3]] = sy > 0
        margin = int(math.ceil(3 * max(sx, sy))) + 2
        cx0, cy0 = max(0, int(math.floor(box[0])) - margin), max(0, int(math.floor(box[1])) - margin)
        cx1, cy1 = min(w, int(math.ceil(box[2])) + margin), min(h, int(math.ceil(box[3])) + margin)
        ch, cw = cy1 - cy0, cx1 - cx0
        shape_mask = paint.render_mask(shape, geom, box, (cx0, cy0), (ch, cw))
        alpha = paint.gaussian_blur(shape_mask, sx, sy) if effect == 1 else shape_mask.copy()

        # colour: class hue with jitter, strong saturation, a brightness that stands out from the background
        hue = _CLASS_HUES[label] + rng.uniform(-18, 18)
        colour = hsv_to_rgb(hue, rng.uniform(0.55, 0.95), rng.uniform(0.55, 1.0))
        region = img[cy0:cy1, cx0:cx1]
        shade = 1.0 + 0.15 * (paint.smooth_noise(rng, ch, cw, cells=3) - 0.5)  # mild shading inside the object
        fill = np.clip(colour[None, None, :] * shade, 0, 255)

        if effect == 2:  # faded: opacity ramps down to ~0 towards one side
            e = int(rng.integers(4))
            amb[e] = True
            ys, xs = np.mgrid[cy0:cy1, cx0:cx1].astype(np.float32) + 0.5
            t = [(xs - box[0]) / (box[2] - box[0]), (ys - box[1]) / (box[3] - box[1]),
                 (box[2] - xs) / (box[2] - box[0]), (box[3] - ys) / (box[3] - box[1])][e]
            lo = rng.uniform(0.0, 0.08)
            hi = rng.uniform(0.65, 1.0)
            alpha = alpha * np.clip(lo + (hi - lo) * t / rng.uniform(0.7, 1.0), lo, hi)
        region[:] = region * (1 - alpha[..., None]) + fill * alpha[..., None]

        if effect == 3:  # occluded: a textured bar over one side (25-50% of the object)
            e = int(rng.integers(4))
            f = rng.uniform(0.25, 0.5)
            bx0, by0, bx1, by1 = [float(v) for v in box]
            if e == 0:
                bx1 = box[0] + f * (box[2] - box[0])
                bx0 = box[0] - rng.uniform(0.1, 0.5) * obj
            elif e == 1:
                by1 = box[1] + f * (box[3] - box[1])
                by0 = box[1] - rng.uniform(0.1, 0.5) * obj
            elif e == 2:
                bx0 = box[2] - f * (box[2] - box[0])
                bx1 = box[2] + rng.uniform(0.1, 0.5) * obj
            else:
                by0 = box[3] - f * (box[3] - box[1])
                by1 = box[3] + rng.uniform(0.1, 0.5) * obj
            # the bar runs past the object along the other axis
            if e in (0, 2):
                by0, by1 = by0 - rng.uniform(0.1, 0.6) * obj, by1 + rng.uniform(0.1, 0.6) * obj
            else:
                bx0, bx1 = bx0 - rng.uniform(0.1, 0.6) * obj, bx1 + rng.uniform(0.1, 0.6) * obj
            ox0, oy0 = max(0, int(math.floor(bx0))), max(0, int(math.floor(by0)))
            ox1, oy1 = min(w, int(math.ceil(bx1))), min(h, int(math.ceil(by1)))
            bar = paint.render_mask("rectangle", {}, np.array([bx0, by0, bx1, by1]), (ox0, oy0), (oy1 - oy0, ox1 - ox0))
            tex = paint.texture_patch(rng, oy1 - oy0, ox1 - ox0)
            reg = img[oy0:oy1, ox0:ox1]
            reg[:] = reg * (1 - bar[..., None]) + tex * bar[..., None]
            layers.append((len(boxes) + 1, bar, ox0, oy0))  # hides this object and all earlier ones
        layers.append((len(boxes), alpha, cx0, cy0))  # the object hides earlier objects

        boxes.append(box)
        labels.append(label)
        effects.append(effect)
        sigmas.append((sx, sy))
        ambiguous.append(amb)
        masks.append((shape_mask, cx0, cy0))

    # visibility: an edge is ambiguous when later drawings hide most of the object's pixels along it
    visible = []
    keep = []
    for i, (m, cx0, cy0) in enumerate(masks):
        occ = np.zeros_like(m)
        for hides_below, cov, lx0, ly0 in layers:
            if hides_below <= i:
                continue
            window = overlap_window(m.shape, cx0, cy0, cov.shape, lx0, ly0)
            if window is None:
                continue
            sub = occ[window[0]]
            np.maximum(sub, cov[window[1]], out=sub)
        vis = m * (1 - occ)
        frac = float(vis.sum() / max(m.sum(), 1e-6))
        visible.append(frac)
        keep.append(frac >= 0.35)  # an object hidden this much is no longer fair to annotate
        b = boxes[i]
        band = max(1.5, 0.1 * min(b[2] - b[0], b[3] - b[1]))
        ys, xs = np.mgrid[cy0 : cy0 + m.shape[0], cx0 : cx0 + m.shape[1]].astype(np.float32) + 0.5
        near = [xs < b[0] + band, ys < b[1] + band, xs > b[2] - band, ys > b[3] - band]
        for e in range(4):
            tot = float((m * near[e]).sum())
            if tot > 0 and float((vis * near[e]).sum()) / tot < 0.5:
                ambiguous[i][e] = True
    if masks and not all(keep):
        idx = [i for i, k in enumerate(keep) if k]
        log.debug("dropped %d mostly hidden objects", len(keep) - len(idx))
    else:
        idx = list(range(len(masks)))

    sigma_n = rng.uniform(*noise)
    img = img + rng.normal(0.0, sigma_n, size=img.shape).astype(np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    boxes_a = np.stack([boxes[i] for i in idx]).astype(np.float32) if idx else np.zeros((0, 4), np.float32)
    labels_a = np.array([labels[i] for i in idx], dtype=np.int64)
    if not with_meta:
        return image, boxes_a, labels_a
    meta = {
        "ambiguous": np.stack([ambiguous[i] for i in idx]) if idx else np.zeros((0, 4), bool),
        "effects": np.array([effects[i] for i in idx], dtype=np.int64),
        "blur_sigma": np.array([sigmas[i] for i in idx], dtype=np.float32).reshape(-1, 2),
        "visible": np.array([visible[i] for i in idx], dtype=np.float32),
    }
    return image, boxes_a, labels_a, meta


def make_split(n: int, seed: int, size: tuple[int, int] = (320, 320), num_classes: int = 3, **kwargs: Any) -> list[dict[str, Any]]:
    """``n`` samples from ``numpy.random.default_rng(seed)``, each a dict with ``image``, ``boxes``,
    ``labels``, ``ambiguous``, ``effects``, ``blur_sigma``, ``visible`` (see :func:`make_sample`).

    Sample ``i`` depends only on ``(seed, i)``, so a longer split starts with the shorter one.
    """
    if n < 0:
        raise GfldetError(f"n must be >= 0, got {n}")
    return [_split_sample(seed, i, size, num_classes, kwargs) for i in range(n)]


def _split_sample(seed: int, i: int, size: tuple[int, int], num_classes: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Sample ``i`` of the split ``seed``: its own generator, so that it depends on ``(seed, i)`` only."""
    image, boxes, labels, meta = make_sample(np.random.default_rng([int(seed), int(i)]), size, num_classes, with_meta=True, **kwargs)
    return {"image": image, "boxes": boxes, "labels": labels, **meta}


def _write_samples(img_dir: str, indices: Sequence[int], seed: int, size: tuple[int, int], num_classes: int,
                   kwargs: dict[str, Any]) -> list[tuple[int, int, int, list[dict[str, Any]]]]:
    """Generate samples ``indices`` of the split ``seed``, save each as ``img_dir/{i:06d}.png`` and return per
    image ``(i, height, width, objects)`` with COCO ``bbox`` / ``category_id`` / ``ambiguous`` / ``effect``."""
    out = []
    for i in indices:
        s = _split_sample(seed, i, size, num_classes, kwargs)
        image = s["image"]
        # zlib level 1: noisy images hardly compress at any level, and level 1 encodes faster than the default 6;
        # the pixels are the same
        Image.fromarray(image).save(os.path.join(img_dir, f"{i:06d}.png"), compress_level=1)
        objects = []
        for b, lab, amb, eff in zip(s["boxes"], s["labels"], s["ambiguous"], s["effects"]):
            x0, y0, x1, y1 = [float(v) for v in b]
            bw, bh = x1 - x0, y1 - y0
            objects.append({"category_id": int(lab) + 1, "bbox": [round(x0, 3), round(y0, 3), round(bw, 3), round(bh, 3)],
                            "area": round(bw * bh, 3), "iscrowd": 0, "ambiguous": [bool(a) for a in amb],
                            "effect": EFFECTS[int(eff)]})
        out.append((int(i), int(image.shape[0]), int(image.shape[1]), objects))
    return out


def write_coco(folder: str | os.PathLike, n: int, seed: int, size: tuple[int, int] = (320, 320), num_classes: int = 3,
               workers: int = 1, **kwargs: Any) -> str:
    """Write a split as a COCO detection dataset: ``folder/images/*.png`` and ``folder/annotations.json``.

    Category ids start at 1 (label ``i`` -> id ``i + 1``); ``bbox`` is ``[x, y, w, h]``. Each annotation
    also carries the non-standard fields ``ambiguous`` ([left, top, right, bottom] bools) and ``effect``.
    Image ``i`` is :func:`make_split`'s sample ``i``. ``workers > 1`` generates the images in that many
    threads; the files written are the same for any number of workers. Returns the path of ``annotations.json``.
    """
    if n < 0:
        raise GfldetError(f"n must be >= 0, got {n}")
    if workers < 1:
        raise GfldetError(f"workers must be >= 1, got {workers}")
    _check_num_classes(num_classes)
    size = (int(size[0]), int(size[1]))
    return write_generated_coco(
        os.fspath(folder), n, workers, lambda img_dir, c: _write_samples(img_dir, c, seed, size, num_classes, kwargs),
        info={"description": f"gfldet synthetic detection split (seed {seed}, {n} images)", "version": "1"},
        categories=[{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(class_names(num_classes))])
