"""The detector's input transform: checks, keep-ratio resize, normalise, pad; targets in, detections out.

Targets are scaled into the frame of the network input, detections back into the frame of the images given.

Shapes: N images, M boxes of an image.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GfldetError
from ..ops.resize import check_image, keep_ratio_size, padded_size

__all__ = ["BatchMeta", "DetectionTransform", "pad_to_divisor", "check_targets"]


@dataclass
class BatchMeta:
    """Geometry of a pre-processed batch.

    image_sizes: per image ``(H, W)`` after resizing (the frame of boxes in the network input).
    pad_shapes: per image ``(H, W)`` rounded up to the size divisor (anchors beyond it are invalid).
    scales: per image ``(sx, sy)``, resized size over original size.
    original_sizes: per image ``(H, W)`` as given.
    """

    image_sizes: list[tuple[int, int]]
    pad_shapes: list[tuple[int, int]]
    scales: list[tuple[float, float]]
    original_sizes: list[tuple[int, int]]


def image_as_float(i: int, img: Tensor, device: torch.device | str | None = None) -> Tensor:
    """Checks image ``i`` (:func:`gfldet.ops.resize.check_image`: a ``(3, H, W)`` RGB tensor, uint8 or float in
    [0, 1]) and returns it as float32 0..255."""
    if not isinstance(img, Tensor):
        raise GfldetError(f"image {i}: expected a (3, H, W) RGB tensor, got {type(img).__name__}")
    x = img.to(device, torch.float32)

    def value_range() -> tuple[bool, float, float]:
        if not x.numel():
            return True, 0.0, 0.0
        return bool(torch.isfinite(x).all()), float(x.min()), float(x.max())

    check_image(i, tuple(img.shape), img.dtype, img.dtype == torch.uint8, img.is_floating_point(), value_range)
    return x if img.dtype == torch.uint8 else x * 255.0


def resize_image(x: Tensor, min_size: int | None, max_size: int | None) -> Tensor:
    """``(3, H, W)`` float image -> bilinearly resized to :func:`gfldet.ops.resize.keep_ratio_size` (the one rule)."""
    h, w = int(x.shape[1]), int(x.shape[2])
    nh, nw = keep_ratio_size(h, w, min_size, max_size)
    if (nh, nw) == (h, w):
        return x
    return F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]


def pad_to_divisor(x: Tensor, d: int) -> Tensor:
    """``(N, C, H, W)`` -> zero-padded (bottom, right) to multiples of ``d`` (traceable with symbolic sizes)."""
    h, w = x.shape[-2], x.shape[-1]
    return F.pad(x, (0, (d - w % d) % d, 0, (d - h % d) % d))


class DetectionTransform(nn.Module):
    """List of ``(3, H, W)`` uint8 or float-in-[0, 1] RGB images -> a normalised, zero-padded ``(N, 3, H', W')``
    batch and its :class:`BatchMeta`; targets into the batch's frame; detections back to the images given.

    ``settings`` holds ``min_size``, ``max_size`` (keep-ratio resize; None: not used), ``size_divisor``,
    ``train_min_sizes`` (None, or the short sides one of which each training batch draws: multi-scale training) and
    ``pixel_mean`` / ``pixel_std``; the detector's :class:`~gfldet.models.config.ModelConfig` is one. The sizes are read at
    each call, so that changing them on a built model (``model.configure(min_size=...)``) takes effect.
    """

    def __init__(self, settings):
        super().__init__()
        self.settings = settings
        self.register_buffer("pixel_mean", torch.tensor(settings.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(settings.pixel_std).view(3, 1, 1), persistent=False)

    def normalize(self, x: Tensor) -> Tensor:
        """``(..., 3, H, W)`` float RGB in 0..255 -> normalised."""
        return (x - self.pixel_mean) / self.pixel_std

    def pad(self, x: Tensor) -> Tensor:
        """``(N, 3, H, W)`` -> zero-padded (bottom, right) to multiples of the size divisor (traceable)."""
        return pad_to_divisor(x, self.settings.size_divisor)

    def forward(self, images: Sequence[Tensor]) -> tuple[Tensor, BatchMeta]:
        if isinstance(images, Tensor):
            images = list(images) if images.dim() == 4 else [images]
        if len(images) == 0:
            raise GfldetError("expected a non-empty list of (3, H, W) images")
        s = self.settings
        min_size = s.min_size
        if self.training and s.train_min_sizes:  # multi-scale training: one short side per batch
            min_size = s.train_min_sizes[int(torch.randint(len(s.train_min_sizes), (1,)))]
        tensors, sizes, scales, originals = [], [], [], []
        for i, img in enumerate(images):
            x = resize_image(image_as_float(i, img, self.pixel_mean.device), min_size, s.max_size)
            h, w = int(img.shape[1]), int(img.shape[2])
            nh, nw = int(x.shape[1]), int(x.shape[2])
            tensors.append(self.normalize(x))
            sizes.append((nh, nw))
            scales.append((nw / w, nh / h))
            originals.append((h, w))
        pads = [padded_size(h, w, s.size_divisor) for h, w in sizes]
        bh, bw = max(p[0] for p in pads), max(p[1] for p in pads)
        batch = tensors[0].new_zeros(len(tensors), 3, bh, bw)
        for i, x in enumerate(tensors):
            batch[i, :, : x.shape[1], : x.shape[2]] = x
        return batch, BatchMeta(sizes, pads, scales, originals)

    @staticmethod
    def targets(targets: Sequence[dict], meta: BatchMeta, num_classes: int, device: torch.device):
        """Checks the targets (:func:`check_targets`) and scales their boxes into the batch's frame. Returns per
        image boxes, labels and crowd boxes (ignore regions, or None)."""
        boxes_out, labels_out, ignore_out = [], [], []
        for i, (boxes, labels, crowd) in enumerate(check_targets(targets, len(meta.image_sizes), num_classes, device)):
            sx, sy = meta.scales[i]
            boxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
            ignore_out.append(None if crowd is None else boxes[crowd])
            keep = slice(None) if crowd is None else ~crowd
            boxes_out.append(boxes[keep])
            labels_out.append(labels[keep])
        return boxes_out, labels_out, ignore_out

    @staticmethod
    def to_images(detections: list[dict[str, Tensor]], meta: BatchMeta) -> list[dict[str, Tensor]]:
        """Detections in the batch's frame -> in the frame of the images given (boxes, and ``edge_std`` pixels)."""
        for d, (sx, sy), (h, w) in zip(detections, meta.scales, meta.original_sizes):
            if (sx, sy) != (1.0, 1.0):
                d["boxes"] = d["boxes"] / d["boxes"].new_tensor([sx, sy, sx, sy])
                d["boxes"] = d["boxes"].clamp(min=0).minimum(d["boxes"].new_tensor([w, h, w, h]))
                if "edge_std" in d:  # pixels of the network input -> pixels of the image given
                    d["edge_std"] = d["edge_std"] / d["edge_std"].new_tensor([sx, sy, sx, sy])
        return detections


def check_targets(targets: Sequence[dict], num_images: int, num_classes: int, device: torch.device
                  ) -> list[tuple[Tensor, Tensor, Tensor | None]]:
    """The training targets of ``num_images`` images, checked: per image ``boxes (M, 4)`` float32 xyxy pixels of
    the image given (finite, x1 < x2, y1 < y2), ``labels (M,)`` int64 in ``[0, num_classes)`` and the optional
    ``iscrowd (M,)`` as a bool mask (None without it). A GfldetError names the image, the box and the value."""
    if len(targets) != num_images:
        raise GfldetError(f"got {len(targets)} targets for {num_images} images")
    out = []
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise GfldetError(f"target {i}: expected a dict with 'boxes' (M, 4) and 'labels' (M,)")
        boxes = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4) if len(t["boxes"]) else torch.zeros(0, 4, device=device)
        labels = torch.as_tensor(t["labels"], device=device).reshape(-1).long()
        if boxes.shape[0] != labels.shape[0]:
            raise GfldetError(f"target {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
        bad = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if bad.any():
            j = int(bad.nonzero()[0])
            raise GfldetError(
                f"target {i}: box {j} {boxes[j].tolist()} is degenerate (need finite x1 < x2 and y1 < y2, xyxy pixels)"
            )
        lab_bad = (labels < 0) | (labels >= num_classes)
        if lab_bad.any():
            j = int(lab_bad.nonzero()[0])
            raise GfldetError(f"target {i}: label {int(labels[j])} of box {j} is outside [0, {num_classes})")
        crowd = t.get("iscrowd")
        if crowd is not None:
            crowd = torch.as_tensor(crowd, device=device).reshape(-1).bool()
            if crowd.shape[0] != boxes.shape[0]:
                raise GfldetError(f"target {i}: 'iscrowd' has {crowd.shape[0]} entries for {boxes.shape[0]} boxes")
        out.append((boxes, labels, crowd))
    return out
