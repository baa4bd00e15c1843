"""NanoDet's training-time input pipeline, as the official ``ShapeTransform`` and ``color_aug_and_norm`` with the
NanoDet-Plus configs' settings, without OpenCV.

Per image (BGR, as the network is trained on OpenCV's channel order):

1. one 3x3 matrix ``M = Resize @ T @ Str @ Scl @ C``: ``C`` moves the image centre to the origin, ``Scl`` scales by
   ``U(scale)``, ``Str`` stretches x and y by ``U(stretch[0])`` and ``U(stretch[1])``, ``T`` moves the centre to
   ``U(0.5 - translate, 0.5 + translate)`` times the width and height, ``Resize`` stretches the image to the input
   size (NanoDet-Plus: ``keep_ratio`` false); the image is warped with it (gfldet.models.nanodet.warp, the bilinear
   warp of the val path) and its boxes through it (four corners, their bounding box, clipped: boxes pushed out of
   the input keep a zero width, as the official pipeline keeps them);
2. colour, each with probability 1/2, on the image scaled to [0, 1]: brightness ``+ U(-b, b)``, contrast
   ``* U(contrast)``, saturation ``* U(saturation)`` in HSV, OpenCV's float round trip in closed form
   (:func:`saturate`);
3. the official normalisation ``(img - mean / 255) / (std / 255)`` of the [0, 1] image, and zero padding of the batch to a multiple of 32.

The random flip is the data set's (gfldet.data.coco, ``input.flip_prob``), applied before this; rotation, shear and
perspective are 0 in every NanoDet-Plus config and not implemented. Random numbers come from torch's global
generator (saved and restored with a training checkpoint).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops.resize import padded_size
from .preprocess import NANODET_MEAN_BGR, NANODET_STD_BGR, image_as_bgr
from .warp import resize_matrix, warp_boxes, warp_perspective_bilinear

__all__ = ["NanoDetAugment", "random_shape_matrix", "saturate"]


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def random_shape_matrix(width: int, height: int, scale: tuple[float, float], stretch: tuple[tuple[float, float], ...],
                        translate: float) -> Tensor:
    """The random part of the official ``ShapeTransform``'s matrix (``T @ Str @ Scl @ C``), float64 3x3."""
    c = torch.eye(3, dtype=torch.float64)
    c[0, 2], c[1, 2] = -width / 2, -height / 2
    scl = torch.eye(3, dtype=torch.float64)
    s = _uniform(*scale)
    scl[0, 0] = scl[1, 1] = s
    stc = torch.eye(3, dtype=torch.float64)
    stc[0, 0], stc[1, 1] = _uniform(*stretch[0]), _uniform(*stretch[1])
    t = torch.eye(3, dtype=torch.float64)
    t[0, 2] = _uniform(0.5 - translate, 0.5 + translate) * width
    t[1, 2] = _uniform(0.5 - translate, 0.5 + translate) * height
    return t @ stc @ scl @ c


FLT_EPSILON = 1.1920928955078125e-07  # OpenCV's, in its float HSV conversion


def saturate(img: Tensor, alpha: float) -> Tensor:
    """``(H, W, 3)`` float image, saturation scaled by ``alpha`` as OpenCV's float BGR -> HSV -> BGR round trip
    with S multiplied does it. OpenCV takes ``S = (V - min) / (|V| + eps)`` (``V`` the largest channel) and gives back
    each channel as ``V (1 - S f)`` with ``f = (V - c) / (V - min)`` from the hue, so the result is
    ``V - alpha (V - c) V / (|V| + eps)``: ``V - alpha (V - c)`` where ``V > 0``, and where a negative brightness
    shift made ``V < 0``, ``V + alpha (V - c)`` (the round trip is not the identity there; kept, as the official
    pipeline has it)."""
    v = img.amax(dim=-1, keepdim=True)
    return v - alpha * (v - img) * (v / (v.abs() + FLT_EPSILON))


@dataclass
class NanoDetAugment:
    """The official training pipeline's settings (NanoDet-Plus configs: the defaults) and its application to a batch."""

    input_size: tuple[int, int] = (416, 416)  # (w, h)
    scale: tuple[float, float] = (0.6, 1.4)
    stretch: tuple[tuple[float, float], tuple[float, float]] = ((0.8, 1.2), (0.8, 1.2))
    translate: float = 0.2
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.6, 1.4)
    saturation: tuple[float, float] = (0.5, 1.2)
    mean: tuple[float, float, float] = NANODET_MEAN_BGR
    std: tuple[float, float, float] = NANODET_STD_BGR
    size_divisor: int = 32

    def image(self, bgr: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """One ``(H, W, 3)`` BGR image (uint8, or float 0..255: :func:`image_as_bgr`) and its ``(M, 4)`` boxes ->
        ``(3, h, w)`` normalised BGR network input and the boxes in it, on the image's device."""
        h, w = int(bgr.shape[0]), int(bgr.shape[1])
        resize, size = resize_matrix((w, h), self.input_size, keep_ratio=False)
        m = resize.to(torch.float64) @ random_shape_matrix(w, h, self.scale, self.stretch, self.translate)
        warped = warp_perspective_bilinear(bgr.contiguous(), m, size)
        out_boxes = warp_boxes(boxes.cpu(), m, size[0], size[1])
        img = warped.to(torch.float32) / 255
        # each step draws its coin as the official code does; a range that is the identity changes nothing
        if float(torch.rand(())) < 0.5 and self.brightness:
            img = img + _uniform(-self.brightness, self.brightness)
        if float(torch.rand(())) < 0.5 and tuple(self.contrast) != (1, 1):
            img = img * _uniform(*self.contrast)
        if float(torch.rand(())) < 0.5 and tuple(self.saturation) != (1, 1):
            img = saturate(img, _uniform(*self.saturation))
        mean = torch.tensor(self.mean, dtype=torch.float32, device=img.device) / 255
        std = torch.tensor(self.std, dtype=torch.float32, device=img.device) / 255
        return ((img - mean) / std).permute(2, 0, 1), out_boxes  # the official _normalize on the [0, 1] image

    def __call__(self, images: Sequence[Tensor], boxes: Sequence[Tensor],
                 device: torch.device | str | None = None) -> tuple[Tensor, list[Tensor]]:
        """A batch of ``(3, H, W)`` RGB images (uint8, or float in [0, 1]) and their boxes: ``(N, 3, H', W')``
        float32 (zero-padded to the size divisor) and per image its boxes, on ``device``. The warp runs on the CPU
        (its sample positions and weights are built there, as the val path's), the batch is moved afterwards."""
        xs, out_boxes = [], []
        for i, (img, b) in enumerate(zip(images, boxes)):
            x, ob = self.image(image_as_bgr(i, img.cpu()), b)
            xs.append(x)
            out_boxes.append(ob.to(device))
        ph, pw = padded_size(max(x.shape[1] for x in xs), max(x.shape[2] for x in xs), self.size_divisor)
        batch = torch.stack([F.pad(x, (0, pw - x.shape[2], 0, ph - x.shape[1])) for x in xs])
        return batch.to(device), out_boxes
