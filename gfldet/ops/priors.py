"""Priors of a dense detector: anchors per feature-map location and level, and their valid flags.

Level ``l`` of stride ``s`` with an ``H x W`` feature map has anchors centred at ``(j * s, i * s)``
(centre offset 0, as the reference), of side ``octave_base_scale * s`` (GFL: one square anchor per location),
ordered row-major (``i * W + j``), which is the order of ``feature.permute(0, 2, 3, 1).reshape(N, -1, C)``.
:func:`multi_anchors` puts several anchors (ratios x scales) at each location, location-major.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["grid_anchors", "multi_anchors", "valid_anchor_flags", "level_index"]


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


def multi_anchors(
    featmap_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    octave_base_scale: float,
    scales_per_octave: int = 1,
    ratios: Sequence[float] = (1.0,),
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """Per level ``(H*W*R*S, 4)`` xyxy anchors: at every location (centre ``(j*s, i*s)``, offset 0 as GFL's
    priors), ``R`` ratios (``h / w``) times ``S`` scales ``octave_base_scale * 2^(k / S)`` of base size ``s``,
    ordered ratio-major then scale (mmdetection's ``AnchorGenerator``). One ratio 1 and one scale is
    :func:`grid_anchors` (the same tensors)."""
    if scales_per_octave == 1 and tuple(ratios) == (1.0,):
        return grid_anchors(featmap_sizes, strides, octave_base_scale, device)
    scales = torch.tensor([octave_base_scale * 2.0 ** (k / scales_per_octave) for k in range(scales_per_octave)],
                          dtype=torch.float32, device=device)
    r = torch.tensor(list(ratios), dtype=torch.float32, device=device)
    h_ratio = r.sqrt()
    w_ratio = 1.0 / h_ratio
    out = []
    for (h, w), s in zip(featmap_sizes, strides):
        ws = (float(s) * w_ratio[:, None] * scales[None, :]).reshape(-1)  # (R*S,)
        hs = (float(s) * h_ratio[:, None] * scales[None, :]).reshape(-1)
        base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=1)  # (R*S, 4)
        xs = torch.arange(w, device=device, dtype=torch.float32) * s
        ys = torch.arange(h, device=device, dtype=torch.float32) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([xx.reshape(-1), yy.reshape(-1)] * 2, dim=1)  # (H*W, 4)
        out.append((shifts[:, None, :] + base[None]).reshape(-1, 4))
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
