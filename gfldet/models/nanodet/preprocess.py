"""NanoDet's val preprocessing without OpenCV: RGB tensors in, the official network input out.

Per image: RGB -> BGR (NanoDet's weights expect OpenCV's channel order), the warp of gfldet.models.nanodet.warp to
the input size (NanoDet-Plus: stretched to the square; legacy NanoDet: ratio kept), then
``(img / 255 - mean / 255) / (std / 255)`` in float32 with the BGR mean and std, as the official ``_normalize``;
the batch is zero-padded (after normalisation, so the pad is 0, not black) at the right and bottom to a multiple of
32 of the largest image (the official ``stack_batch_img(divisible=32)``).

Shapes: images ``(3, H, W)``; batch ``(N, 3, H', W')``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import GfldetError
from ...ops.resize import check_image, padded_size
from .warp import resize_matrix, warp_perspective_bilinear

__all__ = ["NanoDetBatch", "NanoDetPreprocessor", "image_as_bgr", "NANODET_MEAN_BGR", "NANODET_STD_BGR", "official_normalize"]

NANODET_MEAN_BGR = (103.53, 116.28, 123.675)
NANODET_STD_BGR = (57.375, 57.12, 58.395)


def official_normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(x / 255 - mean) / std``, float32, with ``mean`` and ``std`` already divided by 255 (float32) and shaped to
    broadcast against ``x`` (0..255): the official ``_normalize``'s arithmetic, written once for the eager
    preprocessor and the exported graph (gfldet.models.nanodet.parts.NanoDetTransform)."""
    return (x.to(torch.float32) / 255 - mean) / std


def image_as_bgr(i: int, img: Tensor) -> Tensor:
    """Image ``i`` of a call, a ``(3, H, W)`` RGB tensor, checked (uint8, or float in [0, 1]; a GfldetError names
    it otherwise), as the ``(H, W, 3)`` BGR the warp takes: uint8 as it is (the official path, bit for bit), float
    scaled to 0..255 (warped with float weights). The one input rule of the val and the training pipelines."""
    if not isinstance(img, Tensor):
        raise GfldetError(f"image {i}: expected a (3, H, W) RGB tensor, got {type(img).__name__}")

    def value_range() -> tuple[bool, float, float]:
        x = img.float()
        return bool(torch.isfinite(x).all()), float(x.min()), float(x.max())

    check_image(i, tuple(img.shape), img.dtype, img.dtype == torch.uint8, img.is_floating_point(), value_range)
    bgr = img.flip(0).permute(1, 2, 0)
    return bgr if img.dtype == torch.uint8 else bgr.to(torch.float32) * 255


@dataclass
class NanoDetBatch:
    """A preprocessed batch: ``images (N, 3, H', W')`` float32 BGR, normalised, padded; per image its 3x3 float64
    ``warp_matrices`` (original -> network input), ``original_sizes`` and ``warped_sizes`` ``(H, W)``."""

    images: Tensor
    warp_matrices: list[Tensor]
    original_sizes: list[tuple[int, int]]
    warped_sizes: list[tuple[int, int]]

    @property
    def input_hw(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])


@dataclass
class NanoDetPreprocessor:
    """``input_size`` ``(w, h)`` as the official configs write it; ``keep_ratio`` False for NanoDet-Plus, True for
    the legacy NanoDet; ``size_divisor`` of the batch padding."""

    input_size: tuple[int, int] = (416, 416)
    keep_ratio: bool = False
    mean: tuple[float, float, float] = NANODET_MEAN_BGR
    std: tuple[float, float, float] = NANODET_STD_BGR
    size_divisor: int = 32

    def normalize(self, bgr: Tensor) -> Tensor:
        """``(H, W, 3)`` BGR uint8 (or float 0..255) -> ``(3, H, W)`` float32, the official arithmetic."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=bgr.device) / 255
        std = torch.tensor(self.std, dtype=torch.float32, device=bgr.device) / 255
        return official_normalize(bgr, mean, std).permute(2, 0, 1)

    def warp(self, bgr: Tensor) -> tuple[Tensor, Tensor]:
        """``(H, W, 3)`` BGR -> the warped image ``(h', w', 3)`` and its warp matrix."""
        h, w = int(bgr.shape[0]), int(bgr.shape[1])
        m, size = resize_matrix((w, h), self.input_size, self.keep_ratio)
        return warp_perspective_bilinear(bgr, m, size), m

    def __call__(self, images: Sequence[Tensor]) -> NanoDetBatch:
        """``(3, H, W)`` RGB images, uint8 (the official path: bit for bit) or float in [0, 1] (scaled to 0..255 and
        warped with float weights) -> :class:`NanoDetBatch`."""
        if len(images) == 0:
            raise GfldetError("no images given")
        normed, matrices, sizes, warped = [], [], [], []
        for i, img in enumerate(images):
            bgr = image_as_bgr(i, img)
            out, m = self.warp(bgr)
            normed.append(self.normalize(out))
            matrices.append(m)
            sizes.append((int(img.shape[1]), int(img.shape[2])))
            warped.append((int(out.shape[0]), int(out.shape[1])))
        ph, pw = padded_size(max(h for h, _ in warped), max(w for _, w in warped), self.size_divisor)
        batch = torch.stack([F.pad(x, (0, pw - x.shape[2], 0, ph - x.shape[1])) for x in normed])
        return NanoDetBatch(batch, matrices, sizes, warped)
