"""The scenes generator's drawing: object polygons, supersampled coverage, fills, clutter and fair placement."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from gfldet.data.synthetic_common import hsv_to_rgb

__all__ = ["background", "blend", "box_iou", "contrasting", "distractor", "object_size", "place", "rotation", "segment",
           "shape_polygons", "smooth_noise", "texture_fill"]

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
def interp_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Left knot index and weight of the right knot for ``n_out`` points spread evenly over ``n_in`` knots."""
    pos = np.linspace(0, n_in - 1, n_out, dtype=np.float32)
    i0 = np.clip(pos.astype(np.int64), 0, n_in - 2)
    return i0, (pos - i0).astype(np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """A smooth random field in [0, 1], ``(h, w, channels)``: a coarse random grid upsampled bilinearly (by
    indexing, not matrix products: BLAS threads cost more than they save on such small products)."""
    cells = max(1, int(cells))
    grid = rng.random((cells + 1, cells + 1, channels), dtype=np.float32)
    iy, fy = interp_weights(h, cells + 1)
    ix, fx = interp_weights(w, cells + 1)
    rows = grid[iy] * (1 - fy)[:, None, None] + grid[iy + 1] * fy[:, None, None]  # (h, cells + 1, C)
    return rows[:, ix] * (1 - fx)[None, :, None] + rows[:, ix + 1] * fx[None, :, None]


def coverage(polys: list[tuple[np.ndarray, int]], origin: tuple[int, int], hw: tuple[int, int],
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


def downsample(sub: np.ndarray, ss: int = _SS) -> np.ndarray:
    """Coverage per pixel in [0, 1] of a supersampled bool raster (the mean of each ``ss x ss`` block)."""
    h, w = sub.shape[0] // ss, sub.shape[1] // ss
    counts = sub.reshape(h, ss, w, ss).sum(axis=(1, 3), dtype=np.uint16)
    return counts.astype(np.float32) * np.float32(1.0 / (ss * ss))


def ellipse(rx: float, ry: float, n: int = 40, cx: float = 0.0, cy: float = 0.0,
             radii: np.ndarray | None = None) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    r = np.ones(n) if radii is None else radii
    return np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:2], b[:, :2])
    rb = np.minimum(a[2:], b[:, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-6)


# --------------------------------------------------------------------------- shapes
def shape_polygons(rng: np.random.Generator, kind: str, w: float, h: float) -> list[tuple[np.ndarray, int]]:
    """Polygons ``[(points (K, 2), fill), ...]`` of one object in its local frame (pixels, centred on 0, before
    rotation): the shape fits the ``w x h`` box; fill 255 adds, 0 cuts out."""
    m = min(w, h)
    if kind == "ring":
        k = rng.uniform(0.4, 0.72)
        k = min(k, max(0.2, 1.0 - 3.0 / m))  # a ring at least ~1.5 px thick
        off = rng.uniform(-0.05, 0.05, 2) * np.array([w, h])
        return [(ellipse(w / 2, h / 2, 48), 255), (ellipse(k * w / 2, k * h / 2, 40, off[0], off[1]), 0)]
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
        polys = [(ellipse(w / 2, h / 2, n, radii=r), 255)]
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
            polys.append((ellipse(hr, hr, 20, hx, hy), 0))
        return polys
    if kind == "crescent":
        k = rng.uniform(0.75, 0.95)
        ang = rng.uniform(0, 2 * math.pi)
        d = rng.uniform(0.3, 0.5)
        return [(ellipse(w / 2, h / 2, 48), 255),
                (ellipse(k * w / 2, k * h / 2, 48, d * w * math.cos(ang), d * h * math.sin(ang)), 0)]
    raise ValueError(f"unknown object kind {kind!r}")  # pragma: no cover - KINDS is fixed


def rotation(rng: np.random.Generator, kind: str) -> float:
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


def object_size(rng: np.random.Generator, kind: str, side: int, min_size: float,
                 large_prob: float, max_frac: float = 0.45) -> tuple[float, float]:
    """Local ``(w, h)``: size log-uniform up to ``max_frac`` of ``side`` (heavy on small objects), sometimes large;
    the kind's aspect ratio."""
    lo = max(min_size, _KIND_MIN[kind])
    if kind == "stick":  # thin whatever its length: thickness log-uniform, then the length from the aspect ratio
        t = math.exp(rng.uniform(math.log(2.0), math.log(max(2.5, 0.06 * side))))
        a_lo, a_hi = _KIND_AR[kind]
        length = min(t * math.exp(rng.uniform(math.log(a_lo), math.log(a_hi))), 0.95 * side)
        return length, t
    if rng.random() < large_prob:
        s = rng.uniform(0.35, 0.7) * side
    else:
        s = math.exp(rng.uniform(math.log(lo), math.log(max(lo + 1, max_frac * side))))
    a_lo, a_hi = _KIND_AR[kind]
    ar = math.exp(rng.uniform(math.log(a_lo), math.log(a_hi)))
    w, h = s * math.sqrt(ar), s / math.sqrt(ar)
    longest = max(w, h)
    if longest > 0.95 * side:
        w, h = w * 0.95 * side / longest, h * 0.95 * side / longest
    return max(w, 2.0), max(h, 2.0)


# --------------------------------------------------------------------------- textures
def local_coords(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(theta), math.sin(theta)
    dx, dy = xs - cx, ys - cy
    return c * dx + s * dy, -s * dx + c * dy


def contrasting(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    """A random colour whose brightness stands apart from the background colour ``bg`` (most of the time)."""
    hue, sat = rng.uniform(0, 360), rng.uniform(0.15, 0.95)
    bright = float(bg.mean()) / 255.0
    if rng.random() < 0.8:
        v = rng.uniform(0.05, max(0.1, bright - 0.3)) if bright > 0.5 else rng.uniform(min(0.9, bright + 0.3), 1.0)
    else:
        v = rng.uniform(0.1, 1.0)
    return hsv_to_rgb(hue, sat, v)


def texture_fill(rng: np.random.Generator, texture: str, colour: np.ndarray, xs: np.ndarray, ys: np.ndarray,
          frame: tuple[float, float, float], scale: float) -> np.ndarray:
    """The fill ``(h, w, 3)`` of an object of the given texture over the pixel centres ``xs``, ``ys``."""
    h, w = xs.shape
    u, v = local_coords(xs, ys, *frame)
    other = np.clip(colour + rng.choice([-1.0, 1.0]) * rng.uniform(50, 110), 0, 255)  # second colour
    if texture == "solid":
        t = 0.15 * (smooth_noise(rng, h, w, 3)[..., 0] - 0.5)  # mild shading
        return np.clip(colour[None, None] * (1.0 + t[..., None]), 0, 255)
    if texture == "stripes":
        period = rng.uniform(3.0, max(3.5, min(9.0, scale / 2)))
        a = rng.uniform(0, math.pi)
        t = np.clip(0.5 + 1.5 * np.sin(2 * math.pi * (u * math.cos(a) + v * math.sin(a)) / period), 0, 1)
    elif texture == "noise":
        t = smooth_noise(rng, h, w, int(rng.integers(3, 8)))[..., 0]
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


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured colour field ``(h, w, 3)`` float32 in [0, 255]."""
    base = hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.8))
    img = base[None, None] + 110.0 * (smooth_noise(rng, h, w, int(rng.integers(2, 5)), 3) - 0.5)
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
        img += 1.5 * amp * (smooth_noise(rng, h, w, int(rng.integers(16, 40)), 1) - 0.5)
    return np.clip(img, 0, 255)


def blend(img: np.ndarray, cov: np.ndarray, ox: int, oy: int, fill: np.ndarray | float) -> None:
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


def segment(rng: np.random.Generator, h: int, w: int, max_len: float) -> tuple[np.ndarray, int, int]:
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
    cov = downsample(coverage([(pts, 255)], (cx0, cy0), (cy1 - cy0, cx1 - cx0), ss=2), ss=2)
    return cov, cx0, cy0


def distractor(rng: np.random.Generator, h: int, w: int, side: int) -> tuple[np.ndarray, int, int]:
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
    pts = ellipse(rx, ry, n, cx, cy, r)
    cx0, cy0 = int(math.floor(pts[:, 0].min())) - 1, int(math.floor(pts[:, 1].min())) - 1
    cx1, cy1 = int(math.ceil(pts[:, 0].max())) + 1, int(math.ceil(pts[:, 1].max())) + 1
    cov = downsample(coverage([(pts, 255)], (cx0, cy0), (cy1 - cy0, cx1 - cx0), ss=2), ss=2)
    return cov, cx0, cy0


# --------------------------------------------------------------------------- scenes
def place(polys: list[tuple[np.ndarray, int]], centre: tuple[float, float], extent: tuple[float, float, float, float],
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
    sub = coverage(polys, (fx0, fy0), (fy1 - fy0, fx1 - fx0))
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
    cov = downsample(sub_in)
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
