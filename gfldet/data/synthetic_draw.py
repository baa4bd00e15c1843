"""The plain-shapes generator's drawing: shape geometry, anti-aliased masks, blur, noise backgrounds, textures."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .synthetic_common import hsv_to_rgb

__all__ = ["gaussian_blur", "smooth_noise", "background", "texture_patch", "shape_geometry", "render_mask", "box_iou"]

_SUPERSAMPLE = 4


def gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur_1d(a: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Gaussian blur of a 2-D array along one axis (edge values repeated beyond the border)."""
    if sigma <= 0:
        return a
    k = gaussian_kernel(sigma)
    r = k.size // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="edge")
    out = np.zeros_like(a, dtype=np.float32)
    n = a.shape[axis]
    for i, w in enumerate(k):
        out += w * np.take(p, np.arange(i, i + n), axis=axis)
    return out


def gaussian_blur(a: np.ndarray, sigma_x: float, sigma_y: float) -> np.ndarray:
    return blur_1d(blur_1d(a.astype(np.float32), sigma_x, axis=1), sigma_y, axis=0)


def interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` linear-interpolation weights from ``n_in`` evenly spread knots to ``n_out`` points."""
    pos = np.linspace(0, n_in - 1, n_out, dtype=np.float32)
    i0 = np.clip(pos.astype(int), 0, n_in - 2)
    f = pos - i0
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), i0] = 1 - f
    m[np.arange(n_out), i0 + 1] += f
    return m


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """A smooth random field in [0, 1]: a coarse random grid bilinearly upsampled to ``(h, w, channels)``."""
    grid = rng.random((cells + 1, cells + 1, channels), dtype=np.float32)
    my, mx = interp_matrix(h, cells + 1), interp_matrix(w, cells + 1)
    return np.stack([my @ grid[:, :, c] @ mx.T for c in range(channels)], axis=-1)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-saturation textured background, float32 ``(h, w, 3)`` in [0, 255]."""
    base = hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.75))
    coarse = smooth_noise(rng, h, w, cells=int(rng.integers(2, 5)), channels=3) - 0.5
    fine = smooth_noise(rng, h, w, cells=int(rng.integers(12, 24)), channels=1) - 0.5
    img = base[None, None, :] + 90.0 * coarse + 40.0 * fine
    return np.clip(img, 0, 255)


def texture_patch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A background-like occluder texture ``(h, w, 3)`` (it belongs to no class)."""
    base = hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.2), rng.uniform(0.3, 0.8))
    stripes = np.sin(np.arange(w, dtype=np.float32)[None, :] * rng.uniform(0.3, 0.9) + rng.uniform(0, 6.3))
    tex = 25.0 * stripes[:, :, None] + 50.0 * (smooth_noise(rng, h, w, cells=6, channels=3) - 0.5)
    return np.clip(base[None, None, :] + tex, 0, 255)


# --------------------------------------------------------------------------- shapes
def shape_geometry(rng: np.random.Generator, shape: str, box: np.ndarray) -> dict[str, Any]:
    """Random parameters of a shape that exactly fills ``box`` (xyxy)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if shape == "triangle":
        # one vertex on one side, the opposite side is the base; the apex touches its edge at one point
        side = int(rng.integers(4))
        t = rng.uniform(0.2, 0.8)
        if side == 0:  # apex up
            pts = [(x0 + t * w, y0), (x1, y1), (x0, y1)]
        elif side == 1:  # apex down
            pts = [(x0, y0), (x1, y0), (x0 + t * w, y1)]
        elif side == 2:  # apex left
            pts = [(x0, y0 + t * h), (x1, y0), (x1, y1)]
        else:  # apex right
            pts = [(x0, y0), (x1, y0 + t * h), (x0, y1)]
        return {"points": pts}
    if shape == "diamond":
        tx, ty = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        return {"points": [(x0 + tx * w, y0), (x1, y0 + ty * h), (x0 + tx * w, y1), (x0, y0 + ty * h)]}
    if shape == "cross":
        return {"bar": rng.uniform(0.25, 0.45)}
    if shape == "ring":
        return {"hole": rng.uniform(0.35, 0.6)}
    return {}


def render_mask(shape: str, geom: dict[str, Any], box: np.ndarray, origin: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
    """Anti-aliased coverage ``(h, w)`` float32 in [0, 1] of a shape on the pixel grid of a crop.

    Pixel ``(i, j)`` of the crop covers ``[ox + j, ox + j + 1) x [oy + i, oy + i + 1)`` of the image; the
    shape is drawn at ``_SUPERSAMPLE`` times the resolution and box-filtered down.
    """
    s = _SUPERSAMPLE
    ox, oy = origin
    h, w = hw
    canvas = Image.new("L", (w * s, h * s), 0)
    draw = ImageDraw.Draw(canvas)

    def tr(x: float, y: float) -> tuple[float, float]:  # image coords -> supersampled pixel-centre coords
        return ((x - ox) * s - 0.5, (y - oy) * s - 0.5)

    x0, y0, x1, y1 = [float(v) for v in box]
    if shape == "rectangle":
        draw.rectangle([tr(x0, y0), tr(x1, y1)], fill=255)
    elif shape == "ellipse":
        draw.ellipse([tr(x0, y0), tr(x1, y1)], fill=255)
    elif shape in ("triangle", "diamond"):
        draw.polygon([tr(x, y) for x, y in geom["points"]], fill=255)
    elif shape == "cross":
        bw, bh = geom["bar"] * (x1 - x0), geom["bar"] * (y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.rectangle([tr(cx - bw / 2, y0), tr(cx + bw / 2, y1)], fill=255)
        draw.rectangle([tr(x0, cy - bh / 2), tr(x1, cy + bh / 2)], fill=255)
    elif shape == "ring":
        draw.ellipse([tr(x0, y0), tr(x1, y1)], fill=255)
        f = (1 - geom["hole"]) / 2
        dx, dy = f * (x1 - x0), f * (y1 - y0)
        draw.ellipse([tr(x0 + dx, y0 + dy), tr(x1 - dx, y1 - dy)], fill=0)
    else:  # pragma: no cover - guarded by class_names
        raise ValueError(f"unknown shape {shape!r}")
    a = np.asarray(canvas, dtype=np.float32).reshape(h, s, w, s).mean(axis=(1, 3)) / 255.0
    return a


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box ``(4,)`` against ``(K, 4)`` boxes."""
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    lt = np.maximum(a[:2], b[:, :2])
    rb = np.minimum(a[2:], b[:, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-6)
