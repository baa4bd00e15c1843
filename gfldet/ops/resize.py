"""The keep-ratio resize rule, in one place: the detector's preprocessing, the NumPy deployment path, the data
transforms and ``gfldet inspect-data`` all call :func:`keep_ratio_size` and :func:`padded_size`.

Plain Python integers in and out (no tensors), so that every path computes the same sizes bit for bit.
"""
from __future__ import annotations

import math

__all__ = ["keep_ratio_size", "padded_size"]


def keep_ratio_size(h: int, w: int, min_size: float | None, max_size: float | None) -> tuple[int, int]:
    """Size ``(new_h, new_w)`` of an ``h x w`` image resized keeping its aspect ratio.

    ``scale = min(min_size / short_side, max_size / long_side)`` (either bound may be ``None``: not used; both
    ``None``: the size is unchanged), ``new = int(side * scale + 0.5)``, at least 1: the short side goes to
    ``min_size`` unless the long side would pass ``max_size`` (the paper's 800 / 1333).
    """
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got h={h}, w={w}")
    scale = math.inf
    if min_size is not None:
        if min_size <= 0:
            raise ValueError(f"min_size must be positive, got {min_size}")
        scale = min(scale, min_size / min(h, w))
    if max_size is not None:
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, got {max_size}")
        scale = min(scale, max_size / max(h, w))
    if scale == math.inf:
        return int(h), int(w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def padded_size(h: int, w: int, divisor: int) -> tuple[int, int]:
    """``(h, w)`` rounded up to multiples of ``divisor`` (the batch padding)."""
    return int(math.ceil(h / divisor) * divisor), int(math.ceil(w / divisor) * divisor)
