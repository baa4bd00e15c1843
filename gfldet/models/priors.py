"""The prior generator: anchors of every level for a set of feature-map sizes (cached), strides, valid flags.

Shapes: N images, A anchors of all levels (location-major, anchor-minor within a level), A_l of level l.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..ops.priors import multi_anchors, valid_anchor_flags

__all__ = ["Priors", "AnchorGenerator"]


@dataclass
class Priors:
    """The priors of one set of feature-map sizes.

    per_level: ``(A_l, 4)`` xyxy anchors of each level; anchors: ``(A, 4)`` all levels; strides: ``(A,)`` float32,
    the stride of each anchor's level.
    """

    per_level: list[Tensor]
    anchors: Tensor
    strides: Tensor

    @property
    def num_level_anchors(self) -> list[int]:
        return [int(a.shape[0]) for a in self.per_level]


class AnchorGenerator:
    """Anchors at every location of every level (:func:`gfldet.ops.priors.multi_anchors`: one square anchor of side
    ``octave_base_scale * stride`` for GFL, ``ratios x scales_per_octave`` anchors for RetinaNet-style priors)."""

    def __init__(self, strides: Sequence[int], octave_base_scale: float = 8.0, scales_per_octave: int = 1,
                 ratios: Sequence[float] = (1.0,), cache_size: int = 64):
        self.strides = tuple(int(s) for s in strides)
        self.octave_base_scale, self.scales_per_octave, self.ratios = octave_base_scale, scales_per_octave, tuple(ratios)
        self.cache_size = cache_size
        self._cache: dict[tuple, Priors] = {}

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return len(self.ratios) * self.scales_per_octave

    def grid(self, featmap_sizes: Sequence[tuple[int, int]], device: torch.device | str | None = None) -> list[Tensor]:
        """Per level ``(A_l, 4)`` anchors, computed afresh (no cache: also traceable with symbolic sizes)."""
        return multi_anchors(featmap_sizes, self.strides, self.octave_base_scale, self.scales_per_octave, self.ratios,
                             device)

    def anchor_strides(self, per_level: Sequence[Tensor]) -> Tensor:
        """``(A,)`` float32: the stride of each anchor's level (traceable)."""
        return torch.cat([a.new_full((a.shape[0],), float(s), dtype=torch.float32) for a, s in zip(per_level, self.strides)])

    def __call__(self, featmap_sizes: Sequence[tuple[int, int]], device: torch.device) -> Priors:
        key = (tuple(tuple(int(v) for v in s) for s in featmap_sizes), str(device))
        if key not in self._cache:
            if len(self._cache) > self.cache_size:
                self._cache.clear()
            per_level = self.grid(key[0], device)
            self._cache[key] = Priors(per_level, torch.cat(per_level), self.anchor_strides(per_level))
        return self._cache[key]

    def valid(self, featmap_sizes: Sequence[tuple[int, int]], pad_shapes: Sequence[tuple[int, int]],
              device: torch.device) -> Tensor:
        """``(N, A)`` bool: anchors whose location lies inside each image's padded size."""
        valid = valid_anchor_flags(featmap_sizes, self.strides, pad_shapes, device)
        return valid if self.num_anchors == 1 else valid.repeat_interleave(self.num_anchors, dim=1)
