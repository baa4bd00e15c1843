"""Priors of a dense detector: one square anchor per feature-map location and level.

Level ``l`` of stride ``s`` with an ``H x W`` feature map has anchors centred at ``(j * s, i * s)``
(centre offset 0, as the reference), of side ``octave_base_scale * s``, ordered row-major (``i * W + j``),
which is the order of ``feature.permute(0, 2, 3, 1).reshape(N, -1, C)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["grid_anchors", "valid_anchor_flags", "level_index"]


def grid_anchors(
    featmap_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    octave_base_scale: float = 8.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """One ``(H_l * W_l, 4)`` xyxy anchor tensor per level."""
    out = []
    for (h, w), s in zip(featmap_sizes, strides):
        half = 0.5 * float(s) * octave_base_scale
        xs = torch.arange(w, device=device).to(dtype) * s
        ys = torch.arange(h, device=device).to(dtype) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        out.append(torch.stack([xx - half, yy - half, xx + half, yy + half], dim=1))
    return out


def valid_anchor_flags(
    featmap_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    pad_shapes: Sequence[tuple[int, int]],
    device: torch.device | str | None = None,
) -> Tensor:
    """``(N, A)`` bool: an anchor is valid for image ``k`` when its grid cell lies inside that image's own
    padded size (``ceil(pad_h / s)`` rows, ``ceil(pad_w / s)`` columns), as the reference's valid flags."""
    flags = []
    for ph, pw in pad_shapes:
        per_level = []
        for (h, w), s in zip(featmap_sizes, strides):
            vh = min(int(math.ceil(ph / s)), h)
            vw = min(int(math.ceil(pw / s)), w)
            row = torch.arange(h, device=device) < vh
            col = torch.arange(w, device=device) < vw
            per_level.append((row[:, None] & col[None, :]).reshape(-1))
        flags.append(torch.cat(per_level))
    return torch.stack(flags)


def level_index(num_level_anchors: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """``(A,)`` int64: the level of each anchor in the concatenation of all levels."""
    return torch.repeat_interleave(
        torch.arange(len(num_level_anchors), device=device), torch.tensor(list(num_level_anchors), device=device)
    )
