"""The input-image rules, in one place: what an image may be (:func:`check_image`) and its keep-ratio size. The
detector's preprocessing, the NumPy deployment path, the data transforms and ``gfldet inspect-data`` all call
:func:`keep_ratio_size` and :func:`padded_size` (the mosaic augmentation :func:`fit_size`); the detector and the deployment runtime call :func:`check_image`.

Plain Python in and out (no tensors, no torch), so that every path computes the same sizes bit for bit and the
torch-free runtime can import it.
"""
from __future__ import annotations

import math

from collections.abc import Callable, Sequence

from ..errors import GfldetError

__all__ = ["check_image", "keep_ratio_size", "fit_size", "padded_size", "warp_resize_matrix", "cv_invert3x3"]


def check_image(i: int, shape: Sequence[int], dtype: object, is_uint8: bool, is_float: bool,
                value_range: Callable[[], tuple[bool, float, float]], kind: str = "tensor") -> None:
    """Raise GfldetError, naming image ``i``, unless it is a ``(3, H, W)`` RGB image of uint8, or of floats in [0, 1].

    ``value_range()`` -> ``(all finite, min, max)``: called for float images only (it reads every pixel)."""
    if len(shape) != 3 or shape[0] != 3 or shape[1] < 1 or shape[2] < 1:
        raise GfldetError(f"image {i}: expected a (3, H, W) RGB {kind}, got {tuple(shape)}")
    if is_uint8:
        return
    if is_float:
        finite, lo, hi = value_range()
        if not finite or lo < 0 or hi > 1:
            raise GfldetError(f"image {i}: float images must hold values in [0, 1], got range [{lo:g}, {hi:g}] "
                              "(pass uint8 for 0-255 data)")
        return
    raise GfldetError(f"image {i}: dtype {dtype} is not supported (use uint8 or float in [0, 1])")


def keep_ratio_size(h: int, w: int, min_size: float | None, max_size: float | None) -> tuple[int, int]:
    """Size ``(new_h, new_w)`` of an ``h x w`` image resized keeping its aspect ratio.

    ``scale = min(min_size / short_side, max_size / long_side)`` (either bound may be ``None``: not used; both
    ``None``: the size is unchanged), ``new = int(side * scale + 0.5)``, at least 1: the short side goes to
    ``min_size`` unless the long side would pass ``max_size`` (the paper's 800 / 1333).
    """
    if h <= 0 or w <= 0:
        raise GfldetError(f"image size must be positive, got h={h}, w={w}")
    scale = math.inf
    if min_size is not None:
        if min_size <= 0:
            raise GfldetError(f"min_size must be positive, got {min_size}")
        scale = min(scale, min_size / min(h, w))
    if max_size is not None:
        if max_size <= 0:
            raise GfldetError(f"max_size must be positive, got {max_size}")
        scale = min(scale, max_size / max(h, w))
    if scale == math.inf:
        return int(h), int(w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def fit_size(h: int, w: int, max_h: int, max_w: int) -> tuple[int, int]:
    """Size of an ``h x w`` image shrunk, keeping its aspect ratio, to fit inside ``max_h x max_w`` (unchanged where
    it fits): ``scale = min(1, max_h / h, max_w / w)``, rounded as :func:`keep_ratio_size` rounds."""
    if h <= 0 or w <= 0:
        raise GfldetError(f"image size must be positive, got h={h}, w={w}")
    scale = min(1.0, max_h / h, max_w / w)
    if scale == 1.0:
        return int(h), int(w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def padded_size(h: int, w: int, divisor: int) -> tuple[int, int]:
    """``(h, w)`` rounded up to multiples of ``divisor`` (the batch padding)."""
    return int(math.ceil(h / divisor) * divisor), int(math.ceil(w / divisor) * divisor)


def warp_resize_matrix(src_wh: tuple[int, int], dst_wh: tuple[int, int], keep_ratio: bool
                       ) -> tuple[list[list[float]], tuple[int, int]]:
    """NanoDet's val-pipeline warp matrix (3x3, row-major floats) of an image of size ``src_wh = (w, h)`` for the
    input size ``dst_wh``, and the ``(w, h)`` size of the warped image.

    ``keep_ratio`` False: ``diag(dst_w / w, dst_h / h, 1)``, the warped image is ``dst_wh``. True: the smallest canvas
    ``(int(r w), int(r h))`` with ``r`` the ratio that fits the image into ``dst_wh``; then the ratio is recomputed
    from that canvas (the official ``get_resize_matrix`` is called with it) and the matrix scales about the image
    centre into the canvas centre: ``x' = r (x - w / 2) + canvas_w / 2``. Floating point as the official NumPy code.
    """
    w, h = (int(v) for v in src_wh)
    dw, dh = (int(v) for v in dst_wh)
    if min(w, h, dw, dh) < 1:
        raise GfldetError(f"image size {tuple(src_wh)} and input size {tuple(dst_wh)} must be positive")
    if not keep_ratio:
        return [[dw / w, 0.0, 0.0], [0.0, dh / h, 0.0], [0.0, 0.0, 1.0]], (dw, dh)
    ratio = dh / h if w / h < dw / dh else dw / w
    cw, ch = int(ratio * w), int(ratio * h)  # get_minimum_dst_shape, no divisor in the val pipeline
    if min(cw, ch) < 1:
        raise GfldetError(f"image of size {tuple(src_wh)} is too elongated for the input size {tuple(dst_wh)}")
    ratio = ch / h if w / h < cw / ch else cw / w
    return [[ratio, 0.0, ratio * (-w / 2) + 0.5 * cw], [0.0, ratio, ratio * (-h / 2) + 0.5 * ch],
            [0.0, 0.0, 1.0]], (cw, ch)


def cv_invert3x3(m: Sequence[Sequence[float]]) -> list[float]:
    """``cv::invert`` of a 3x3 double matrix (its closed form: cofactors times ``1 / det``), row-major, as floats."""
    s = [[float(v) for v in row] for row in m]
    det = (s[0][0] * (s[1][1] * s[2][2] - s[1][2] * s[2][1]) - s[0][1] * (s[1][0] * s[2][2] - s[1][2] * s[2][0])
           + s[0][2] * (s[1][0] * s[2][1] - s[1][1] * s[2][0]))
    if det == 0:
        raise GfldetError("the warp matrix is singular")
    d = 1.0 / det
    return [(s[1][1] * s[2][2] - s[1][2] * s[2][1]) * d, (s[0][2] * s[2][1] - s[0][1] * s[2][2]) * d,
            (s[0][1] * s[1][2] - s[0][2] * s[1][1]) * d, (s[1][2] * s[2][0] - s[1][0] * s[2][2]) * d,
            (s[0][0] * s[2][2] - s[0][2] * s[2][0]) * d, (s[0][2] * s[1][0] - s[0][0] * s[1][2]) * d,
            (s[1][0] * s[2][1] - s[1][1] * s[2][0]) * d, (s[0][1] * s[2][0] - s[0][0] * s[2][1]) * d,
            (s[0][0] * s[1][1] - s[0][1] * s[1][0]) * d]
