"""The deployment runtime's input side in NumPy: the model's image checks, keep-ratio resize and batch padding.

The rules themselves live once in :mod:`gfldet.ops.resize` (what an image may be, the resized size); the bilinear
interpolation here computes what the PyTorch model's ``F.interpolate(mode="bilinear", align_corners=False)``
computes (the same source coordinates and weights, in float32; tests hold it to torch's within float rounding),
so that an exported model sees the pixels the eager model sees. No torch: this runs where only NumPy and a
runtime are installed.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import GfldetError
from ..ops.resize import check_image, keep_ratio_size

__all__ = ["preprocess", "image_as_float", "resize_bilinear"]

DEFAULT_MEAN = (123.675, 116.28, 103.53)


def image_as_float(i: int, img: Any) -> np.ndarray:
    """Image ``i`` (a ``(3, H, W)`` RGB array, or anything ``np.asarray`` takes, e.g. a CPU tensor; uint8 or float in
    [0, 1]) checked by :func:`gfldet.ops.resize.check_image` -> float32 0..255."""
    a = np.asarray(img)

    def value_range() -> tuple[bool, float, float]:
        if not a.size:
            return True, 0.0, 0.0
        x = a.astype(np.float32, copy=False)
        return bool(np.isfinite(x).all()), float(x.min()), float(x.max())

    check_image(i, a.shape, a.dtype, a.dtype == np.uint8, np.issubdtype(a.dtype, np.floating), value_range, "array")
    if a.dtype == np.uint8:
        return a.astype(np.float32)
    return a.astype(np.float32) * np.float32(255.0)


def _source_index(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output position along one axis: the two source indices and their weights, as ATen's CPU kernel computes
    them for ``align_corners=False`` with no scale factor given: ``src = max(scale (dst + 0.5) - 0.5, 0)`` with
    ``scale = in / out`` (float32), ``i0 = min(floor(src), in - 1)``, ``i1 = i0 + 1`` unless at the last pixel,
    ``w1 = src - i0``. ``src`` is rounded to float32 once (the fused multiply-add ATen's x86 kernels compile to:
    in float64 the product is exact), which keeps the weights equal to torch's, not one rounding apart."""
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float64)
    src = np.maximum((np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1))
    return i0, i1, np.float32(1) - w1, w1


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(C, H, W)`` float32 -> ``(C, h, w)``: bilinear, half-pixel centres (``align_corners=False``), no
    antialiasing, as torch's ``F.interpolate``: ``wy0 (wx0 x00 + wx1 x01) + wy1 (wx0 x10 + wx1 x11)``, computed
    along the width first (separable; the same products and sums)."""
    h, w = size
    if (h, w) == x.shape[1:]:
        return x
    y0, y1, wy0, wy1 = _source_index(h, x.shape[1])
    x0, x1, wx0, wx1 = _source_index(w, x.shape[2])
    r = x[:, np.concatenate([y0, y1])]  # only the rows that are read: (C, 2h, W)
    t = np.take(r, x0, axis=2) * wx0 + np.take(r, x1, axis=2) * wx1  # (C, 2h, w)
    return t[:, :h] * wy0[:, None] + t[:, h:] * wy1[:, None]


def preprocess(images: Sequence[Any], meta: dict[str, Any]) -> tuple[np.ndarray, list, list, list]:
    """``(3, H, W)`` RGB images (uint8, or float in [0, 1]) -> the ``images`` input of an exported model (float32
    0..255, resized as the model does, padded to a common size with the pixel mean, which the graph normalises
    to 0 as the model's zero padding), the resized ``(H, W)``, the ``(sx, sy)`` scales and the original sizes."""
    if len(images) == 0:
        raise GfldetError("expected a non-empty list of (3, H, W) images")
    mean = np.asarray(meta.get("pixel_mean", DEFAULT_MEAN), np.float32)
    arrs, sizes, scales, originals = [], [], [], []
    for k, img in enumerate(images):
        x = image_as_float(k, img)
        h, w = int(x.shape[1]), int(x.shape[2])
        nh, nw = keep_ratio_size(h, w, meta.get("min_size"), meta.get("max_size"))
        arrs.append(resize_bilinear(x, (nh, nw)))
        sizes.append((nh, nw))
        scales.append((nw / w, nh / h))
        originals.append((h, w))
    bh, bw = max(s[0] for s in sizes), max(s[1] for s in sizes)
    if len(arrs) == 1 and (bh, bw) == arrs[0].shape[1:]:
        return np.ascontiguousarray(arrs[0][None]), sizes, scales, originals
    batch = np.empty((len(arrs), 3, bh, bw), np.float32)
    batch[:] = mean[None, :, None, None]
    for k, a in enumerate(arrs):
        batch[k, :, : a.shape[1], : a.shape[2]] = a
    return batch, sizes, scales, originals
