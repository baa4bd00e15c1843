"""NanoDet's parts in the shape gfldet's detector parts have (gfldet.models.parts), so that what reads a GFL's parts
(the ONNX exporter: normalise and pad, per-level outputs, priors, the box part's decode and extras, the quality
part's joint score) reads a NanoDet's the same way.

- :class:`PointPriorGenerator`: NanoDet's priors, one point per location at ``((j + offset) s, (i + offset) s)``
  (offset 0 for NanoDet-Plus, 0.5 for the legacy NanoDet), as zero-size boxes ``(x, y, x, y)`` whose centre is the
  point exactly; the one rule of NanoDet's priors (the decoder's :func:`center_priors` calls it).
- :class:`NanoDetTransform`: the graph side of NanoDet's input: RGB 0..255 -> BGR, the official normalisation
  (:func:`gfldet.models.nanodet.preprocess.official_normalize`), zero padding to the size divisor.

Shapes: A_l priors of level l (row-major), N images.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...ops.priors import valid_anchor_flags
from ..priors import Priors
from ..transform import pad_to_divisor
from .preprocess import official_normalize

__all__ = ["PointPriorGenerator", "NanoDetTransform"]


class PointPriorGenerator:
    """One point prior per feature-map location of each level (see the module docstring)."""

    num_anchors = 1

    def __init__(self, strides: Sequence[int], offset: float = 0.0):
        self.strides = tuple(int(s) for s in strides)
        self.offset = float(offset)

    def grid(self, featmap_sizes: Sequence[tuple[int, int]], device: torch.device | str | None = None) -> list[Tensor]:
        """Per level ``(A_l, 4)`` float32 ``(x, y, x, y)``, ``x = (j + offset) * stride`` (traceable)."""
        out = []
        for (h, w), s in zip(featmap_sizes, self.strides):
            xs = (torch.arange(w, dtype=torch.float32, device=device) + self.offset) * s
            ys = (torch.arange(h, dtype=torch.float32, device=device) + self.offset) * s
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            p = torch.stack([xx.flatten(), yy.flatten()], dim=-1)
            out.append(torch.cat([p, p], dim=-1))
        return out

    def anchor_strides(self, per_level: Sequence[Tensor]) -> Tensor:
        """``(A,)`` float32: the stride of each prior's level (traceable)."""
        return torch.cat([a.new_full((a.shape[0],), float(s), dtype=torch.float32)
                          for a, s in zip(per_level, self.strides)])

    def __call__(self, featmap_sizes: Sequence[tuple[int, int]], device: torch.device | str | None = None) -> Priors:
        per_level = self.grid(featmap_sizes, device)
        return Priors(per_level, torch.cat(per_level), self.anchor_strides(per_level))

    def valid(self, featmap_sizes: Sequence[tuple[int, int]], pad_shapes: Sequence[tuple[int, int]],
              device: torch.device) -> Tensor:
        """``(N, A)`` bool: priors whose location lies inside each image's padded size."""
        return valid_anchor_flags(featmap_sizes, self.strides, pad_shapes, device)


class NanoDetTransform(nn.Module):
    """``normalize``: ``(N, 3, H, W)`` float RGB 0..255 (warped, as :class:`NanoDetPreprocessor` warps) -> the
    network's normalised BGR; ``pad``: zeros at the bottom and right to multiples of ``size_divisor``. Traceable: the
    exported graph computes these, with the eager model's arithmetic (bit for bit on the same pixels)."""

    def __init__(self, mean_bgr: Sequence[float], std_bgr: Sequence[float], size_divisor: int = 32):
        super().__init__()
        self.size_divisor = int(size_divisor)
        # the official arithmetic's constants, mean / 255 and std / 255 in float32 (BGR)
        self.register_buffer("pixel_mean", torch.tensor(mean_bgr, dtype=torch.float32).view(3, 1, 1) / 255,
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std_bgr, dtype=torch.float32).view(3, 1, 1) / 255,
                             persistent=False)

    def normalize(self, x: Tensor) -> Tensor:
        return official_normalize(x.flip(-3), self.pixel_mean, self.pixel_std)

    def pad(self, x: Tensor) -> Tensor:
        return pad_to_divisor(x, self.size_divisor)
