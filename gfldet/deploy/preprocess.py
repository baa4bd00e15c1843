"""The deployment runtime's input side in NumPy: the model's image checks, its resize and batch padding.

Two resizes, chosen by the file's ``gfldet.resize``: ``keep_ratio`` (gfldet's GFL, the default) and ``warp``
(NanoDet: OpenCV's ``warpPerspective`` with the val pipeline's scale matrix, :func:`warp_bilinear`, bit for bit with
gfldet.models.nanodet.warp for uint8 images; ``gfldet.input_size`` and ``gfldet.keep_ratio`` pick the matrix).

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
from ..ops.resize import check_image, cv_invert3x3, keep_ratio_size, warp_resize_matrix

__all__ = ["preprocess", "image_as_float", "resize_bilinear", "warp_bilinear", "RESIZES"]

RESIZES = ("keep_ratio", "warp")  # gfldet.resize of a file (absent: keep_ratio)

DEFAULT_MEAN = (123.675, 116.28, 103.53)


def checked_image(i: int, img: Any) -> np.ndarray:
    """Image ``i`` (a ``(3, H, W)`` RGB array, or anything ``np.asarray`` takes, e.g. a CPU tensor; uint8 or float in
    [0, 1]) as an array, checked by :func:`gfldet.ops.resize.check_image`."""
    a = np.asarray(img)

    def value_range() -> tuple[bool, float, float]:
        if not a.size:
            return True, 0.0, 0.0
        x = a.astype(np.float32, copy=False)
        return bool(np.isfinite(x).all()), float(x.min()), float(x.max())

    check_image(i, a.shape, a.dtype, a.dtype == np.uint8, np.issubdtype(a.dtype, np.floating), value_range, "array")
    return a


def image_as_float(i: int, img: Any) -> np.ndarray:
    """:func:`checked_image` -> float32 0..255."""
    a = checked_image(i, img)
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


# ------------------------------------------------------------------------------------------------ NanoDet's warp
# cv2.warpPerspective's bilinear kernel (OpenCV <= 4.10), as gfldet.models.nanodet.warp computes it in torch (its
# docstring has the derivation): 1/32-pixel source positions, 15-bit integer weights, zero border.
_INTER_BITS, _INTER_TAB = 5, 32
_REMAP_BITS = 15
_BLOCK = 32
_INT_MIN, _INT_MAX = -(2 ** 31), 2 ** 31 - 1


def _warp_positions(minv: Sequence[float], dst_w: int, dst_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Source positions in 1/32 pixel (int64), as OpenCV's WarpPerspectiveInvoker (blocks of ``bw0`` columns, each
    product and sum rounded to double in C's order, ``cvRound`` half to even): ``(dst_h, dst_w)`` each, or, for a
    matrix without rotation, shear or perspective (NanoDet's scale-and-shift), ``(1, dst_w)`` and ``(dst_h, 1)``:
    the same numbers, X then depends on the column only and Y on the row only (the zero terms add exact zeros)."""
    bh0 = min(_BLOCK // 2, dst_h)
    bw0 = min(_BLOCK * _BLOCK // bh0, dst_w)
    m0, m1, m2, m3, m4, m5, m6, m7, m8 = minv
    separable = m1 == 0 and m3 == 0 and m6 == 0 and m7 == 0
    x = np.arange(dst_w, dtype=np.int64)
    xb = ((x // bw0) * bw0).astype(np.float64)[None, :]
    x1 = (x % bw0).astype(np.float64)[None, :]
    y = np.arange(dst_h, dtype=np.float64)[:, None]
    if separable:
        x0 = (m0 * xb + m1 * 0.0) + m2
        y0 = (m3 * 0.0 + m4 * y) + m5
        w = np.full((1, 1), m8)
        wx = wy = w
    else:
        x0 = (m0 * xb + m1 * y) + m2
        y0 = (m3 * xb + m4 * y) + m5
        wx = wy = ((m6 * xb + m7 * y) + m8) + m6 * x1

    def scale(w: np.ndarray) -> np.ndarray:
        nonzero = w != 0
        return np.where(nonzero, _INTER_TAB / np.where(nonzero, w, 1.0), 0.0)

    fx = np.clip((x0 + m0 * x1) * scale(wx), _INT_MIN, _INT_MAX)
    fy = np.clip((y0 + m3 * (0.0 if separable else x1)) * scale(wy), _INT_MIN, _INT_MAX)
    return np.rint(fx).astype(np.int64), np.rint(fy).astype(np.int64)


def warp_bilinear(img: np.ndarray, m: Sequence[Sequence[float]], dst_wh: tuple[int, int]) -> np.ndarray:
    """``cv2.warpPerspective(img, m, dst_wh)`` (bilinear, constant border 0) of a ``(C, H, W)`` image -> ``(C, h, w)``
    of its dtype: bit for bit with :func:`gfldet.models.nanodet.warp.warp_perspective_bilinear` (and OpenCV <= 4.10)
    for uint8; float32 images with the same positions and float weights, as that function. A matrix without
    rotation, shear or perspective (NanoDet's) gathers rows, then columns; uint8 sums in int32 (at most
    255 x 2^15)."""
    dst_w, dst_h = (int(v) for v in dst_wh)
    c, h, w = img.shape
    X, Y = _warp_positions(cv_invert3x3(m), dst_w, dst_h)
    sx = np.clip(X >> _INTER_BITS, -(2 ** 15), 2 ** 15 - 1)  # saturate_cast<short>
    sy = np.clip(Y >> _INTER_BITS, -(2 ** 15), 2 ** 15 - 1)
    ax, ay = X & (_INTER_TAB - 1), Y & (_INTER_TAB - 1)
    exact = img.dtype == np.uint8
    src = np.pad(img if exact else img.astype(np.float32), ((0, 0), (1, 1), (1, 1)))  # the zero border
    px0, px1 = np.clip(sx + 1, 0, w + 1), np.clip(sx + 2, 0, w + 1)
    py0, py1 = np.clip(sy + 1, 0, h + 1), np.clip(sy + 2, 0, h + 1)
    wx0, wy0 = _INTER_TAB - ax, _INTER_TAB - ay
    weights = (wy0 * wx0, wy0 * ax, ay * wx0, ay * ax)
    if X.shape[0] == 1:  # separable: px (1, w'), py (h', 1)
        rows0, rows1 = np.take(src, py0[:, 0], axis=1), np.take(src, py1[:, 0], axis=1)
        taps = (np.take(rows0, px0[0], axis=2), np.take(rows0, px1[0], axis=2), np.take(rows1, px0[0], axis=2),
                np.take(rows1, px1[0], axis=2))
    else:
        flat, stride = src.reshape(c, -1), w + 2
        taps = tuple(flat[:, py * stride + px] for py, px in ((py0, px0), (py0, px1), (py1, px0), (py1, px1)))
    if exact:
        scale = 1 << (_REMAP_BITS - 2 * _INTER_BITS)
        acc = sum(t.astype(np.int32) * (wt * scale).astype(np.int32) for t, wt in zip(taps, weights))
        return np.clip((acc + (1 << (_REMAP_BITS - 1))) >> _REMAP_BITS, 0, 255).astype(np.uint8)
    acc = sum(t * (wt.astype(np.float32) / np.float32(_INTER_TAB ** 2)) for t, wt in zip(taps, weights))
    return acc.astype(np.float32)


def _warp_inputs(images: Sequence[Any], meta: dict[str, Any]) -> tuple[list[np.ndarray], list, list]:
    """Per image the warped float32 0..255 image, its 3x3 warp matrix and its original ``(H, W)``."""
    arrs, matrices, originals = [], [], []
    for k, img in enumerate(images):
        a = checked_image(k, img)
        if a.dtype != np.uint8:  # as the eager model: a float image scaled to 0..255, warped with float weights
            a = a.astype(np.float32) * np.float32(255)
        h, w = int(a.shape[1]), int(a.shape[2])
        m, size = warp_resize_matrix((w, h), tuple(meta["input_size"]), bool(meta["keep_ratio"]))
        arrs.append(warp_bilinear(a, m, size).astype(np.float32))
        matrices.append(m)
        originals.append((h, w))
    return arrs, matrices, originals


def preprocess(images: Sequence[Any], meta: dict[str, Any]) -> tuple[np.ndarray, list, list, list]:
    """``(3, H, W)`` RGB images (uint8, or float in [0, 1]) -> the ``images`` input of an exported model (float32
    0..255 RGB, resized as the model does, padded to a common size with the pixel mean, which the graph normalises
    to 0 as the model's zero padding), the resized ``(H, W)``, per image how it was resized (``keep_ratio``: the
    ``(sx, sy)`` scales; ``warp``: the 3x3 warp matrix) and the original sizes."""
    if len(images) == 0:
        raise GfldetError("expected a non-empty list of (3, H, W) images")
    resize = meta.get("resize", "keep_ratio")
    if resize not in RESIZES:
        raise GfldetError(f"the file's resize {resize!r} is not one of {RESIZES}: exported by a newer gfldet?")
    mean = np.asarray(meta.get("pixel_mean", DEFAULT_MEAN), np.float32)
    if resize == "warp":
        arrs, scales, originals = _warp_inputs(images, meta)
        sizes = [(int(a.shape[1]), int(a.shape[2])) for a in arrs]
    else:
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
