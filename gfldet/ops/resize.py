"""The input-image rules, in one place: what an image may be (:func:`check_image`) and its keep-ratio size. The
detector's preprocessing, the NumPy deployment path, the data transforms and ``gfldet inspect-data`` all call
:func:`keep_ratio_size` and :func:`padded_size`; the detector and the deployment runtime call :func:`check_image`.

Plain Python in and out (no tensors, no torch), so that every path computes the same sizes bit for bit and the
torch-free runtime can import it.
"""
from __future__ import annotations

import math

from collections.abc import Callable, Sequence

from ..errors import GfldetError

__all__ = ["check_image", "keep_ratio_size", "padded_size"]


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


def padded_size(h: int, w: int, divisor: int) -> tuple[int, int]:
    """``(h, w)`` rounded up to multiples of ``divisor`` (the batch padding)."""
    return int(math.ceil(h / divisor) * divisor), int(math.ceil(w / divisor) * divisor)
