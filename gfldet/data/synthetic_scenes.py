"""A second deterministic synthetic detection data set: cluttered scenes of textured, non-box-like objects.

Unlike :mod:`gfldet.data.synthetic` (plain shapes told apart by a class-tinted colour, on a smooth background,
with amodal boxes and edge effects), these scenes are built to be hard in other ways:

- eight object kinds whose class is told by *shape only* (colours and textures are drawn independently of the
  class, except the checkered patch): ``ring`` (annulus), ``plus`` (plus sign), ``star`` (4-7 points),
  ``stick`` (thin bar, long side 4-9 times the short one), ``chevron``, ``checker`` (checkered patch),
  ``holed_blob`` (irregular blob with 1-3 holes), ``crescent``;
- **non-contiguous category ids** (:data:`CATEGORIES`: 3, 7, 11, 20, 21, 40, 45, 63);
- objects filled with solid colour, stripes, smooth noise or a gradient, on a cluttered background: a noisy
  colour field with a texture (stripes, grid or fine noise), random line segments and distractor blobs that
  belong to no class (smooth, without holes);
- object sizes log-uniform from a few pixels, heavy on small objects, plus some large ones; box aspect ratios
  from about 1:9 to 9:1 (sticks; the other kinds up to 1:5 and 5:1); free or partial rotation depending on the kind;
- partial occlusion between objects (later objects hide earlier ones), objects cut by the image border, and
  some low-contrast objects (colour pulled towards the local background).

Boxes are the *tight* box of the object's rendered shape inside the image (after clipping by the border) at
1/4-pixel resolution: the shape is drawn 4x supersampled and the box is the extent of its covered sub-pixels.
Occlusion does not shrink a box (a partly hidden object keeps the box of its whole in-image shape). Objects are
placed so that annotations stay fair: never where less than ``min_inside`` of the shape would lie inside the
image, nor where it would leave an earlier object between 3% and ``min_visible`` visible; an object hidden
(almost) entirely by later ones is dropped, as is one that the thin lines drawn last would hide below
``min_visible``.

Every image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, i, _SALT])`` only, so a split is
reproducible and :func:`write_scenes_coco` writes the same bytes for any number of worker threads.

>>> path = write_scenes_coco("data/scenes/train", n=600, seed=0, size=(192, 192), workers=2)
>>> paths = scenes_data()   # cached train / val splits: {"train_ann", "train_images", "val_ann", "val_images", "root"}
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .folders import cached_splits, generation_workers
from .synthetic import hsv_to_rgb, overlap_window  # the demo generator's colour and occlusion helpers

__all__ = [
    "CATEGORIES",
    "KINDS",
    "TEXTURES",
    "SCENES_DATA_VERSION",
    "make_scene",
    "split_scene",
    "write_scenes_coco",
    "scenes_data",
]

log = logging.getLogger(__name__)

#: ``(category id, name)`` of the object kinds, in label order (label ``i`` is ``CATEGORIES[i]``).
CATEGORIES: tuple[tuple[int, str], ...] = (
    (3, "ring"),
    (7, "plus"),
    (11, "star"),
    (20, "stick"),
    (21, "chevron"),
    (40, "checker"),
    (45, "holed_blob"),
    (63, "crescent"),
)
KINDS: tuple[str, ...] = tuple(name for _, name in CATEGORIES)
#: object fills (``checker`` is the checkered patch's own and is used by no other kind)
TEXTURES: tuple[str, ...] = ("solid", "stripes", "noise", "gradient", "checker")
# bump when what a seed generates changes. v1 (3-11 objects of >= 7 px, 1-5 distractors, 4-14 segments) and v2
# (2-8 objects of >= 10 px, less clutter) were too hard for the benchmark's budget (600 images x 6 epochs from
# scratch): gfldet reached 0.018 / 0.028 AP and torchvision's FCOS 0.013 on v1, too close to 0 to compare.
# v3: 1-6 objects of >= 14 px, 20% large, 0-2 distractors, 1-5 segments, 5% low contrast.
SCENES_DATA_VERSION = 3

_SALT = 0x5CE7E5  # keeps these streams apart from gfldet.data.synthetic's for the same seed
_SS = 4  # supersampling factor of the object shapes (boxes are exact to 1 / _SS pixel)

# per kind: (range of the local aspect ratio w / h, smallest object size in pixels (sqrt of the shape's box area))
_KIND_AR: dict[str, tuple[float, float]] = {
    "ring": (1 / 3, 3.0), "plus": (1 / 3, 3.0), "star": (0.5, 2.0), "stick": (4.0, 9.0), "chevron": (0.25, 4.0),
    "checker": (0.2, 5.0), "holed_blob": (0.4, 2.5), "crescent": (0.5, 2.0),
}
_KIND_MIN: dict[str, float] = {
    "ring": 10.0, "plus": 8.0, "star": 10.0, "stick": 2.0, "chevron": 9.0, "checker": 10.0, "holed_blob": 14.0,
    "crescent": 10.0,
}


# --------------------------------------------------------------------------- small helpers
def _interp_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Left knot index and weight of the right knot for ``n_out`` points spread evenly over ``n_in`` knots."""
    pos = np.linspace(0, n_in - 1, n_out, dtype=np.float32)
    i0 = np.clip(pos.astype(np.int64), 0, n_in - 2)
    return i0, (pos - i0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """A smooth random field in [0, 1], ``(h, w, channels)``: a coarse random grid upsampled bilinearly (by
    indexing, not matrix products: BLAS threads cost more than they save on such small products)."""
    cells = max(1, int(cells))
    grid = rng.random((cells + 1, cells + 1, channels), dtype=np.float32)
    iy, fy = _interp_weights(h, cells + 1)
    ix, fx = _interp_weights(w, cells + 1)
    rows = grid[iy] * (1 - fy)[:, None, None] + grid[iy + 1] * fy[:, None, None]  # (h, cells + 1, C)
    return rows[:, ix] * (1 - fx)[None, :, None] + rows[:, ix + 1] * fx[None, :, None]


def _coverage(polys: list[tuple[np.ndarray, int]], origin: tuple[int, int], hw: tuple[int, int],
              ss: int = _SS) -> np.ndarray:
    """Supersampled binary raster ``(h * ss, w * ss)`` bool of polygons drawn in order (fill 255 adds, 0 cuts a
    hole) on the crop whose top-left pixel is ``origin`` (image pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``)."""
    h, w = hw
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    ox, oy = origin
    for pts, fill in polys:
        q = (pts - np.array([ox, oy], dtype=np.float64)) * ss - 0.5  # image coords -> sub-pixel centre coords
        draw.polygon([(float(x), float(y)) for x, y in q], fill=fill)
    return np.asarray(canvas) > 0


def _downsample(sub: np.ndarray, ss: int = _SS) -> np.ndarray:
    """Coverage per pixel in [0, 1] of a supersampled bool raster (the mean of each ``ss x ss`` block)."""
    h, w = sub.shape[0] // ss, sub.shape[1] // ss
    counts = sub.reshape(h, ss, w, ss).sum(axis=(1, 3), dtype=np.uint16)
    return counts.astype(np.float32) * np.float32(1.0 / (ss * ss))


def _ellipse(rx: float, ry: float, n: int = 40, cx: float = 0.0, cy: float = 0.0,
             radii: np.ndarray | None = None) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    r = np.ones(n) if radii is None else radii
    return np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], axis=1)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:2], b[:, :2])
    rb = np.minimum(a[2:], b[:, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-6)


# --------------------------------------------------------------------------- shapes
def _shape_polygons(rng: np.random.Generator, kind: str, w: float, h: float) -> list[tuple[np.ndarray, int]]:
    """Polygons ``[(points (K, 2), fill), ...]`` of one object in its local frame (pixels, centred on 0, before
    rotation): the shape fits the ``w x h`` box; fill 255 adds, 0 cuts out."""
    m = min(w, h)
    if kind == "ring":
        k = rng.uniform(0.4, 0.72)
        k = min(k, max(0.2, 1.0 - 3.0 / m))  # a ring at least ~1.5 px thick
        off = rng.uniform(-0.05, 0.05, 2) * np.array([w, h])
        return [(_ellipse(w / 2, h / 2, 48), 255), (_ellipse(k * w / 2, k * h / 2, 40, off[0], off[1]), 0)]
    if kind == "plus":
        a = max(2.0, rng.uniform(0.22, 0.4) * w)  # thickness of the vertical arm
        b = max(2.0, rng.uniform(0.22, 0.4) * h)  # thickness of the horizontal arm
        vc = rng.uniform(-0.15, 0.15) * h  # where the horizontal arm crosses
        vert = np.array([[-a / 2, -h / 2], [a / 2, -h / 2], [a / 2, h / 2], [-a / 2, h / 2]])
        horiz = np.array([[-w / 2, vc - b / 2], [w / 2, vc - b / 2], [w / 2, vc + b / 2], [-w / 2, vc + b / 2]])
        return [(vert, 255), (horiz, 255)]
    if kind == "star":
        n = int(rng.integers(4, 8))
        inner = rng.uniform(0.38, 0.55)
        radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
        t = np.arange(2 * n) * math.pi / n + rng.uniform(0, 2 * math.pi)
        return [(np.stack([w / 2 * radii * np.cos(t), h / 2 * radii * np.sin(t)], axis=1), 255)]
    if kind == "stick":
        half_l, r = w / 2, h / 2
        if rng.random() < 0.5:  # square ends
            return [(np.array([[-half_l, -r], [half_l, -r], [half_l, r], [-half_l, r]]), 255)]
        t = np.linspace(-math.pi / 2, math.pi / 2, 9)  # rounded ends (a capsule)
        right = np.stack([half_l - r + r * np.cos(t), r * np.sin(t)], axis=1)
        left = np.stack([-half_l + r - r * np.cos(t), -r * np.sin(t)], axis=1)
        return [(np.concatenate([right, left]), 255)]
    if kind == "chevron":  # ">" with two parallel-edged arms
        t = rng.uniform(0.3, 0.5) * w
        pts = np.array([[-w / 2, -h / 2], [-w / 2 + t, -h / 2], [w / 2, 0.0], [-w / 2 + t, h / 2], [-w / 2, h / 2],
                        [w / 2 - t, 0.0]])
        return [(pts, 255)]
    if kind == "checker":
        return [(np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]]), 255)]
    if kind == "holed_blob":
        n = 48
        t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
        r = np.ones(n)
        for f in (2, 3, 4):
            r += rng.uniform(0.0, 0.12) * np.cos(f * t + rng.uniform(0, 2 * math.pi))
        r /= r.max()
        polys = [(_ellipse(w / 2, h / 2, n, radii=r), 255)]
        holes: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(1, 4))):
            for _try in range(10):
                hr = max(1.5, rng.uniform(0.1, 0.18) * m)
                ang, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.5) * (r.min() * 0.5 * m - hr)
                hx, hy = dist * math.cos(ang), dist * math.sin(ang)
                if all(math.hypot(hx - x, hy - y) > hr + q + 1.5 for x, y, q in holes):
                    holes.append((hx, hy, hr))
                    break
        for hx, hy, hr in holes:
            polys.append((_ellipse(hr, hr, 20, hx, hy), 0))
        return polys
    if kind == "crescent":
        k = rng.uniform(0.75, 0.95)
        ang = rng.uniform(0, 2 * math.pi)
        d = rng.uniform(0.3, 0.5)
        return [(_ellipse(w / 2, h / 2, 48), 255),
                (_ellipse(k * w / 2, k * h / 2, 48, d * w * math.cos(ang), d * h * math.sin(ang)), 0)]
    raise ValueError(f"unknown object kind {kind!r}")  # pragma: no cover - KINDS is fixed


def _rotation(rng: np.random.Generator, kind: str) -> float:
    """Rotation (radians) of an object of ``kind``: free, or near the axes for the kinds whose boxes should stay
    elongated or whose identity depends on orientation."""
    if kind in ("ring", "star", "holed_blob", "crescent"):
        return rng.uniform(0, 2 * math.pi)
    if kind == "plus":
        return math.radians(rng.uniform(-25, 25))
    if kind == "stick":  # horizontal or vertical, straight or slightly tilted
        tilt = 0.0 if rng.random() < 0.5 else rng.uniform(-3, 3)
        return math.radians(90 * int(rng.integers(2)) + tilt)
    if kind == "chevron":
        return math.radians(90 * int(rng.integers(4)) + rng.uniform(-10, 10))
    if kind == "checker":
        return 0.0 if rng.random() < 0.5 else math.radians(rng.uniform(-20, 20))
    raise ValueError(kind)  # pragma: no cover


def _object_size(rng: np.random.Generator, kind: str, side: int, min_size: float,
                 large_prob: float) -> tuple[float, float]:
    """Local ``(w, h)``: size log-uniform (heavy on small objects), sometimes large; the kind's aspect ratio."""
    lo = max(min_size, _KIND_MIN[kind])
    if kind == "stick":  # thin whatever its length: thickness log-uniform, then the length from the aspect ratio
        t = math.exp(rng.uniform(math.log(2.0), math.log(max(2.5, 0.06 * side))))
        a_lo, a_hi = _KIND_AR[kind]
        length = min(t * math.exp(rng.uniform(math.log(a_lo), math.log(a_hi))), 0.95 * side)
        return length, t
    if rng.random() < large_prob:
        s = rng.uniform(0.35, 0.7) * side
    else:
        s = math.exp(rng.uniform(math.log(lo), math.log(max(lo + 1, 0.45 * side))))
    a_lo, a_hi = _KIND_AR[kind]
    ar = math.exp(rng.uniform(math.log(a_lo), math.log(a_hi)))
    w, h = s * math.sqrt(ar), s / math.sqrt(ar)
    longest = max(w, h)
    if longest > 0.95 * side:
        w, h = w * 0.95 * side / longest, h * 0.95 * side / longest
    return max(w, 2.0), max(h, 2.0)


# --------------------------------------------------------------------------- textures
def _local_coords(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(theta), math.sin(theta)
    dx, dy = xs - cx, ys - cy
    return c * dx + s * dy, -s * dx + c * dy


def _contrasting(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    """A random colour whose brightness stands apart from the background colour ``bg`` (most of the time)."""
    hue, sat = rng.uniform(0, 360), rng.uniform(0.15, 0.95)
    bright = float(bg.mean()) / 255.0
    if rng.random() < 0.8:
        v = rng.uniform(0.05, max(0.1, bright - 0.3)) if bright > 0.5 else rng.uniform(min(0.9, bright + 0.3), 1.0)
    else:
        v = rng.uniform(0.1, 1.0)
    return hsv_to_rgb(hue, sat, v)


def _fill(rng: np.random.Generator, texture: str, colour: np.ndarray, xs: np.ndarray, ys: np.ndarray,
          frame: tuple[float, float, float], scale: float) -> np.ndarray:
    """The fill ``(h, w, 3)`` of an object of the given texture over the pixel centres ``xs``, ``ys``."""
    h, w = xs.shape
    u, v = _local_coords(xs, ys, *frame)
    other = np.clip(colour + rng.choice([-1.0, 1.0]) * rng.uniform(50, 110), 0, 255)  # second colour
    if texture == "solid":
        t = 0.15 * (_smooth_noise(rng, h, w, 3)[..., 0] - 0.5)  # mild shading
        return np.clip(colour[None, None] * (1.0 + t[..., None]), 0, 255)
    if texture == "stripes":
        period = rng.uniform(3.0, max(3.5, min(9.0, scale / 2)))
        a = rng.uniform(0, math.pi)
        t = np.clip(0.5 + 1.5 * np.sin(2 * math.pi * (u * math.cos(a) + v * math.sin(a)) / period), 0, 1)
    elif texture == "noise":
        t = _smooth_noise(rng, h, w, int(rng.integers(3, 8)))[..., 0]
        t = np.clip((t - 0.5) * 2.5 + 0.5, 0, 1)
    elif texture == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        p = u * math.cos(a) + v * math.sin(a)
        t = (p - p.min()) / max(float(np.ptp(p)), 1e-6)
    elif texture == "checker":
        other = np.clip(colour + rng.choice([-1.0, 1.0]) * rng.uniform(90, 160), 0, 255)
        cell = rng.uniform(max(2.0, scale / 7), max(2.5, scale / 2.5))
        t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    else:  # pragma: no cover - TEXTURES is fixed
        raise ValueError(texture)
    return colour[None, None] * (1 - t[..., None]) + other[None, None] * t[..., None]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured colour field ``(h, w, 3)`` float32 in [0, 255]."""
    base = hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.8))
    img = base[None, None] + 110.0 * (_smooth_noise(rng, h, w, int(rng.integers(2, 5)), 3) - 0.5)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    kind = int(rng.integers(4))
    amp = rng.uniform(8, 30)
    if kind == 0:  # stripes at a random angle
        a, period = rng.uniform(0, math.pi), rng.uniform(4, 24)
        img += amp * np.sin(2 * math.pi * (xs * math.cos(a) + ys * math.sin(a)) / period)[..., None]
    elif kind == 1:  # a faint grid
        period = rng.uniform(8, 32)
        line = ((xs % period) < 1.0) | ((ys % period) < 1.0)
        img += amp * line[..., None] * rng.choice([-1.0, 1.0])
    elif kind == 2:  # fine noise
        img += 1.5 * amp * (_smooth_noise(rng, h, w, int(rng.integers(16, 40)), 1) - 0.5)
    return np.clip(img, 0, 255)


def _blend(img: np.ndarray, cov: np.ndarray, ox: int, oy: int, fill: np.ndarray | float) -> None:
    """Alpha-blend ``fill`` with coverage ``cov`` into ``img`` at ``(ox, oy)``; parts outside the image dropped."""
    h, w = img.shape[:2]
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + cov.shape[1], w), min(oy + cov.shape[0], h)
    if x1 <= x0 or y1 <= y0:
        return
    c = cov[y0 - oy:y1 - oy, x0 - ox:x1 - ox, None]
    f = fill[y0 - oy:y1 - oy, x0 - ox:x1 - ox] if isinstance(fill, np.ndarray) and fill.ndim == 3 else fill
    region = img[y0:y1, x0:x1]
    region[:] = region * (1 - c) + f * c


def _segment(rng: np.random.Generator, h: int, w: int, max_len: float) -> tuple[np.ndarray, int, int]:
    """A thin random line segment as ``(coverage crop, x0, y0)`` (drawn 2x supersampled)."""
    x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
    ang, length = rng.uniform(0, 2 * math.pi), rng.uniform(10, max_len)
    x1, y1 = x0 + length * math.cos(ang), y0 + length * math.sin(ang)
    width = rng.uniform(0.8, 1.6)
    d = np.array([x1 - x0, y1 - y0]) / max(length, 1e-6)
    n = np.array([-d[1], d[0]]) * width / 2
    pts = np.array([[x0, y0] + n, [x1, y1] + n, [x1, y1] - n, [x0, y0] - n])
    cx0, cy0 = int(math.floor(pts[:, 0].min())) - 1, int(math.floor(pts[:, 1].min())) - 1
    cx1, cy1 = int(math.ceil(pts[:, 0].max())) + 1, int(math.ceil(pts[:, 1].max())) + 1
    cov = _downsample(_coverage([(pts, 255)], (cx0, cy0), (cy1 - cy0, cx1 - cx0), ss=2), ss=2)
    return cov, cx0, cy0


def _distractor(rng: np.random.Generator, h: int, w: int, side: int) -> tuple[np.ndarray, int, int]:
    """A smooth irregular blob without holes (no class) as ``(coverage crop, x0, y0)``."""
    s = math.exp(rng.uniform(math.log(6), math.log(0.35 * side)))
    ar = math.exp(rng.uniform(-0.7, 0.7))
    rx, ry = s * math.sqrt(ar) / 2, s / math.sqrt(ar) / 2
    n = 32
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    r = np.ones(n)
    for f in (2, 3):
        r += rng.uniform(0.0, 0.2) * np.cos(f * t + rng.uniform(0, 2 * math.pi))
    r /= r.max()
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    pts = _ellipse(rx, ry, n, cx, cy, r)
    cx0, cy0 = int(math.floor(pts[:, 0].min())) - 1, int(math.floor(pts[:, 1].min())) - 1
    cx1, cy1 = int(math.ceil(pts[:, 0].max())) + 1, int(math.ceil(pts[:, 1].max())) + 1
    cov = _downsample(_coverage([(pts, 255)], (cx0, cy0), (cy1 - cy0, cx1 - cx0), ss=2), ss=2)
    return cov, cx0, cy0


# --------------------------------------------------------------------------- scenes
def _place(polys: list[tuple[np.ndarray, int]], centre: tuple[float, float], extent: tuple[float, float, float, float],
           hw: tuple[int, int], masks: list[tuple[np.ndarray, int, int]], left_visible: list[np.ndarray],
           min_visible: float, min_inside: float) -> dict[str, Any] | None:
    """Render an object (local polygons, rotated) at ``centre`` and check it: ``None`` when too little of it lies
    inside the image or when it would leave an earlier object between 3% and ``min_visible`` visible (a fragment
    too small to annotate fairly but still there; objects hidden entirely are fine). Otherwise its tight in-image
    box, coverage crop, inside fraction and, per earlier object it overlaps, that object's new visibility map."""
    h, w = hw
    cx, cy = centre
    ex0, ey0, ex1, ey1 = extent
    polys = [(p + np.array([cx, cy]), f) for p, f in polys]
    # the whole shape's crop (may reach outside the image), rendered supersampled
    fx0, fy0 = int(math.floor(cx + ex0)) - 1, int(math.floor(cy + ey0)) - 1
    fx1, fy1 = int(math.ceil(cx + ex1)) + 1, int(math.ceil(cy + ey1)) + 1
    ix0, iy0, ix1, iy1 = max(fx0, 0), max(fy0, 0), min(fx1, w), min(fy1, h)
    if ix1 - ix0 < 2 or iy1 - iy0 < 2:
        return None
    sub = _coverage(polys, (fx0, fy0), (fy1 - fy0, fx1 - fx0))
    full_area = int(sub.sum())
    sub_in = sub[(iy0 - fy0) * _SS:(iy1 - fy0) * _SS, (ix0 - fx0) * _SS:(ix1 - fx0) * _SS]
    in_area = int(sub_in.sum())
    if full_area == 0 or in_area < min_inside * full_area:
        return None
    cols = np.flatnonzero(sub_in.any(axis=0))
    rows = np.flatnonzero(sub_in.any(axis=1))
    box = np.array([ix0 + cols[0] / _SS, iy0 + rows[0] / _SS, ix0 + (cols[-1] + 1) / _SS, iy0 + (rows[-1] + 1) / _SS],
                   dtype=np.float32)
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    cov = _downsample(sub_in)
    occludes = []
    for j, (m, mx, my) in enumerate(masks):
        ax0, ay0 = max(mx, ix0), max(my, iy0)
        ax1, ay1 = min(mx + m.shape[1], ix1), min(my + m.shape[0], iy1)
        if ax1 <= ax0 or ay1 <= ay0:
            continue
        kept = left_visible[j].copy()
        kept[ay0 - my:ay1 - my, ax0 - mx:ax1 - mx] *= 1 - cov[ay0 - iy0:ay1 - iy0, ax0 - ix0:ax1 - ix0]
        vis = float((m * kept).sum() / max(float(m.sum()), 1e-6))
        if 0.03 < vis < min_visible:
            return None
        occludes.append((j, kept))
    return {"centre": (cx, cy), "box": box, "coverage": cov, "x0": ix0, "y0": iy0, "inside": in_area / full_area,
            "occludes": occludes}


def make_scene(
    rng: np.random.Generator,
    size: tuple[int, int] = (192, 192),
    *,
    num_objects: tuple[int, int] = (1, 6),
    min_size: float = 14.0,
    large_prob: float = 0.2,
    border_prob: float = 0.15,
    crowd_prob: float = 0.35,
    max_iou: float = 0.45,
    low_contrast_prob: float = 0.05,
    min_visible: float = 0.3,
    min_inside: float = 0.35,
    noise: tuple[float, float] = (2.0, 5.0),
    with_meta: bool = False,
):
    """Draw one cluttered scene.

    Args:
        rng: the only source of randomness.
        size: ``(H, W)``, each at least 32.
        num_objects: inclusive range of objects tried per image (some are dropped, see below).
        min_size: smallest object size (square root of its local box area), pixels; each kind also has its own.
        large_prob: probability of a large object (0.35 to 0.7 of the image side); otherwise log-uniform.
        border_prob: probability that an object is placed across the image border.
        crowd_prob: probability that an object is placed next to an earlier one (partial occlusion).
        max_iou: the largest IoU a new object's box may have with an earlier one's.
        low_contrast_prob: probability that an object's colours are pulled close to the local background.
        min_visible: no object is left with less of its in-image shape unoccluded (hidden ones are dropped).
        min_inside: no object is placed with less of its shape inside the image.
        noise: range of the per-pixel Gaussian noise's standard deviation (0-255 scale).
        with_meta: also return per-object metadata.

    Returns:
        ``image`` ``(H, W, 3)`` uint8, ``boxes`` ``(M, 4)`` float32 xyxy (tight, inside the image, multiples of
        1/4 pixel), ``labels`` ``(M,)`` int64 indexing :data:`CATEGORIES`; with ``with_meta`` also a dict with
        ``masks`` (per object ``(coverage (h, w) float32 in [0, 1], x0, y0)``: the shape's per-pixel coverage on
        the image grid, inside the image, with its top-left pixel), ``visible`` ``(M,)`` float32 (unoccluded
        fraction of the in-image shape), ``inside`` ``(M,)`` float32 (fraction of the shape inside the image),
        ``truncated`` ``(M,)`` bool (cut by the border), ``low_contrast`` ``(M,)`` bool, ``textures`` ``(M,)``
        int64 indexing :data:`TEXTURES`.
    """
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"image size must be at least 32x32, got {size}")
    if not 0 < num_objects[0] <= num_objects[1]:
        raise ValueError(f"num_objects must be (min, max) with 0 < min <= max, got {num_objects}")
    side = min(h, w)
    img = _background(rng, h, w)

    # clutter that belongs to no class: distractor blobs, then line segments
    for _ in range(int(rng.integers(0, 3))):
        cov, ox, oy = _distractor(rng, h, w, side)
        bg = img[min(max(oy, 0), h - 1), min(max(ox, 0), w - 1)]
        colour = _contrasting(rng, bg)
        cov = cov * rng.uniform(0.5, 1.0)
        ch, cw = cov.shape
        fill = colour[None, None] + 40.0 * (_smooth_noise(rng, ch, cw, 3, 1) - 0.5) if rng.random() < 0.5 else colour
        _blend(img, cov, ox, oy, fill)
    for _ in range(int(rng.integers(1, 6))):
        cov, ox, oy = _segment(rng, h, w, 0.8 * side)
        colour = hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.8), rng.uniform(0.05, 1.0))
        _blend(img, cov * rng.uniform(0.4, 1.0), ox, oy, colour)

    boxes: list[np.ndarray] = []  # tight in-image boxes of the objects drawn so far
    labels: list[int] = []
    masks: list[tuple[np.ndarray, int, int]] = []  # in-image coverage crops
    inside: list[float] = []
    truncated: list[bool] = []
    low: list[bool] = []
    textures: list[int] = []
    left_visible: list[np.ndarray] = []  # per object: the fraction of each pixel of its crop that later objects leave
    layers: list[tuple[int, np.ndarray, int, int]] = []  # (hides objects with index below, coverage, x0, y0)

    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        label = int(rng.integers(len(KINDS)))
        kind = KINDS[label]
        lw, lh = _object_size(rng, kind, side, min_size, large_prob)
        polys = _shape_polygons(rng, kind, lw, lh)
        theta = _rotation(rng, kind)
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[c, s], [-s, c]])  # row vectors: p @ rot = (x c - y s, x s + y c)
        polys = [(p @ rot, f) for p, f in polys]
        allpts = np.concatenate([p for p, f in polys if f])
        ex0, ey0 = allpts.min(axis=0)
        ex1, ey1 = allpts.max(axis=0)
        placed = None
        for _try in range(20):
            r = rng.random()
            if boxes and r < crowd_prob:  # next to an earlier object: its centre near that object's edge
                ref = boxes[int(rng.integers(len(boxes)))]
                cx = rng.uniform(ref[0], ref[2]) + rng.choice([-0.5, 0.5]) * (ex1 - ex0) * rng.uniform(0.5, 1.2)
                cy = rng.uniform(ref[1], ref[3]) + rng.choice([-0.5, 0.5]) * (ey1 - ey0) * rng.uniform(0.0, 1.2)
            elif r < crowd_prob + border_prob:  # across a border
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                e = int(rng.integers(4))
                if e == 0:
                    cx = rng.uniform(-0.25, 0.25) * (ex1 - ex0)
                elif e == 1:
                    cy = rng.uniform(-0.25, 0.25) * (ey1 - ey0)
                elif e == 2:
                    cx = w + rng.uniform(-0.25, 0.25) * (ex1 - ex0)
                else:
                    cy = h + rng.uniform(-0.25, 0.25) * (ey1 - ey0)
            else:  # inside the image
                lo_x, hi_x = 1 - ex0, w - 1 - ex1
                lo_y, hi_y = 1 - ey0, h - 1 - ey1
                cx = rng.uniform(lo_x, hi_x) if hi_x > lo_x else w / 2
                cy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else h / 2
            approx = np.array([max(cx + ex0, 0), max(cy + ey0, 0), min(cx + ex1, w), min(cy + ey1, h)], np.float32)
            if approx[2] - approx[0] < 2 or approx[3] - approx[1] < 2:
                continue
            if boxes and _box_iou(approx, np.stack(boxes)).max() > max_iou:
                continue
            placed = _place(polys, (cx, cy), (ex0, ey0, ex1, ey1), (h, w), masks, left_visible, min_visible, min_inside)
            if placed is not None:
                break
        if placed is None:  # nowhere to put it without hiding (most of) another object or leaving the image
            continue
        cx, cy = placed["centre"]
        box, cov, ix0, iy0 = placed["box"], placed["coverage"], placed["x0"], placed["y0"]
        iy1, ix1 = iy0 + cov.shape[0], ix0 + cov.shape[1]

        # colours and texture
        region_bg = img[iy0:iy1, ix0:ix1].reshape(-1, 3).mean(axis=0)
        colour = _contrasting(rng, region_bg)
        texture = TEXTURES.index("checker") if kind == "checker" else int(rng.choice(4, p=[0.4, 0.2, 0.25, 0.15]))
        ys, xs = np.mgrid[iy0:iy1, ix0:ix1].astype(np.float32) + 0.5
        fill = _fill(rng, TEXTURES[texture], colour, xs, ys, (cx, cy, theta), math.sqrt(lw * lh))
        is_low = bool(rng.random() < low_contrast_prob)
        if is_low:  # pull the colours towards the background
            k = rng.uniform(0.15, 0.3)
            fill = region_bg[None, None] + k * (fill - region_bg[None, None])
        _blend(img, cov, ix0, iy0, fill)
        for j, kept in placed["occludes"]:  # what the new object leaves visible of earlier ones
            left_visible[j] = kept
        layers.append((len(boxes), cov, ix0, iy0))

        boxes.append(box)
        labels.append(label)
        masks.append((cov, ix0, iy0))
        left_visible.append(np.ones_like(cov))
        inside.append(placed["inside"])
        truncated.append(placed["inside"] < 1.0)
        low.append(is_low)
        textures.append(texture)

    # a few thin lines over everything
    for _ in range(int(rng.integers(0, 4))):
        cov, ox, oy = _segment(rng, h, w, 0.6 * side)
        _blend(img, cov, ox, oy, hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.8), rng.uniform(0.05, 1.0)))
        layers.append((len(boxes), cov, ox, oy))

    # visibility: what later drawings leave of each object's in-image shape
    visible: list[float] = []
    for i, (m, mx, my) in enumerate(masks):
        keep_frac = np.ones_like(m)
        for hides_below, cov, lx, ly in layers:
            if hides_below <= i:
                continue
            window = overlap_window(m.shape, mx, my, cov.shape, lx, ly)
            if window is not None:
                keep_frac[window[0]] *= 1 - cov[window[1]]
        visible.append(float((m * keep_frac).sum() / max(float(m.sum()), 1e-6)))
    idx = [i for i in range(len(masks)) if visible[i] >= min_visible and inside[i] >= min_inside
           and boxes[i][2] - boxes[i][0] >= 2 and boxes[i][3] - boxes[i][1] >= 2]
    if len(idx) < len(masks):
        log.debug("dropped %d mostly hidden or mostly outside objects", len(masks) - len(idx))

    img += np.float32(rng.uniform(*noise)) * rng.standard_normal(img.shape, dtype=np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    boxes_a = np.stack([boxes[i] for i in idx]).astype(np.float32) if idx else np.zeros((0, 4), np.float32)
    labels_a = np.array([labels[i] for i in idx], dtype=np.int64)
    if not with_meta:
        return image, boxes_a, labels_a
    meta = {
        "masks": [masks[i] for i in idx],
        "visible": np.array([visible[i] for i in idx], dtype=np.float32),
        "inside": np.array([inside[i] for i in idx], dtype=np.float32),
        "truncated": np.array([truncated[i] for i in idx], dtype=bool),
        "low_contrast": np.array([low[i] for i in idx], dtype=bool),
        "textures": np.array([textures[i] for i in idx], dtype=np.int64),
    }
    return image, boxes_a, labels_a, meta


def split_scene(seed: int, i: int, size: tuple[int, int], kwargs: dict[str, Any]) -> tuple:
    """Image ``i`` of the split ``seed``: its own generator, so that it depends on ``(seed, i)`` only."""
    return make_scene(np.random.default_rng([int(seed), int(i), _SALT]), size, with_meta=True, **kwargs)


def _write_scenes(img_dir: str, indices: range, seed: int, size: tuple[int, int],
                  kwargs: dict[str, Any]) -> list[tuple[int, int, int, list[dict[str, Any]]]]:
    out = []
    for i in indices:
        image, boxes, labels, meta = split_scene(seed, i, size, kwargs)
        Image.fromarray(image).save(os.path.join(img_dir, f"{i:06d}.png"), compress_level=1)
        objects = []
        for k, (b, lab) in enumerate(zip(boxes.tolist(), labels.tolist())):
            x0, y0, x1, y1 = b  # multiples of 1/4: exact in float32 and in JSON
            objects.append({"category_id": CATEGORIES[lab][0], "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                            "truncated": bool(meta["truncated"][k]), "visible": round(float(meta["visible"][k]), 3),
                            "low_contrast": bool(meta["low_contrast"][k]),
                            "texture": TEXTURES[int(meta["textures"][k])]})
        out.append((int(i), int(image.shape[0]), int(image.shape[1]), objects))
    return out


def write_scenes_coco(folder: str | os.PathLike, n: int, seed: int, size: tuple[int, int] = (192, 192),
                      workers: int = 1, **kwargs: Any) -> str:
    """Write ``n`` scenes as a COCO detection data set: ``folder/images/*.png`` and ``folder/annotations.json``.

    Image ``i`` (id ``i + 1``) depends on ``(seed, i)`` only; the files are the same for any ``workers`` (threads).
    Categories are :data:`CATEGORIES` (non-contiguous ids); ``bbox`` is ``[x, y, w, h]`` and ``area`` the box's
    area. Annotations also carry the non-standard fields ``truncated``, ``visible``, ``low_contrast`` and
    ``texture``. ``kwargs`` go to :func:`make_scene`. Returns the path of ``annotations.json``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    folder = os.fspath(folder)
    img_dir = os.path.join(folder, "images")
    os.makedirs(img_dir, exist_ok=True)
    size = (int(size[0]), int(size[1]))
    chunks = [range(a, min(n, a + 8)) for a in range(0, n, 8)]
    if workers == 1:
        parts = [_write_scenes(img_dir, c, seed, size, kwargs) for c in chunks]
    else:
        from concurrent.futures import ThreadPoolExecutor

        # threads overlap what releases the GIL (numpy, Pillow's drawing and PNG encoder)
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda c: _write_scenes(img_dir, c, seed, size, kwargs), chunks))
    images, annotations = [], []
    for part in parts:
        for i, h, w, objects in part:
            images.append({"id": i + 1, "file_name": f"images/{i:06d}.png", "height": h, "width": w})
            for obj in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **obj})
    data = {
        "info": {"description": f"gfldet synthetic scenes (seed {seed}, {n} images)",
                 "version": str(SCENES_DATA_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "scene_object"} for cid, name in CATEGORIES],
    }
    path = os.path.join(folder, "annotations.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)
    log.info("wrote %d scenes, %d boxes to %s", len(images), len(annotations), folder)
    return path


# --------------------------------------------------------------------------- cached splits
def scenes_data(cache_dir: str | os.PathLike | None = None, train_images: int = 600, val_images: int = 150,
                image_size: int = 192, seed: int = 0) -> dict[str, str]:
    """Train and validation splits of scenes, generated on first use into the cache and reused afterwards.

    Returns ``{"train_ann", "train_images", "val_ann", "val_images", "root"}``. The folder name encodes the
    settings and :data:`SCENES_DATA_VERSION`; generation is atomic (:func:`gfldet.data.folders.cached_splits`).
    """
    name = f"scenes-v{SCENES_DATA_VERSION}-{train_images}x{val_images}-{image_size}px-s{seed}"

    def generate(folder: Path) -> dict[str, Any]:
        size, workers = (image_size, image_size), generation_workers()
        write_scenes_coco(folder / "train", train_images, seed, size, workers=workers)
        write_scenes_coco(folder / "val", val_images, seed + 1_000_003, size, workers=workers)
        return {"version": SCENES_DATA_VERSION, "train_images": train_images, "val_images": val_images,
                "image_size": image_size, "seed": seed}

    return cached_splits(name, generate, cache_dir, what="scenes data set")
