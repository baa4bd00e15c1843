"""The GFL detector: pre-processing -> ResNet -> FPN -> GFL head -> losses (training) or detections (eval).

It keeps torchvision's detection contract::

    model.train(); losses = model(images, targets)   # dict of already-weighted loss_* terms
    model.eval();  detections = model(images)        # [{"boxes", "scores", "labels", "distributions", ...}]

Each detection also carries its localisation uncertainty (gfldet.ops.uncertainty): ``edge_peak``,
``edge_entropy``, ``edge_std`` (pixels of the image given) per edge and a box-level ``loc_conf``.

Shapes: N images, A anchors of all levels, C classes, B = reg_max + 1 bins, M boxes of an image.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from ..ops.integral import Integral
from ..ops.priors import grid_anchors, valid_anchor_flags
from ..ops.resize import keep_ratio_size, padded_size
from .backbone import FPN, ResNetBackbone
from .criterion import GFLTargets, gfl_losses, gfl_targets
from .fusion import set_fusion
from .head import GFLHead
from .postprocess import decode_image
from .variants import VariantHead, variant_decode, variant_losses, variant_targets

__all__ = ["GFL", "BatchMeta"]


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


class GFL(nn.Module):
    """Generalized Focal Loss detector (ATSS assignment, QFL + DFL + GIoU) on a ResNet-FPN."""

    def __init__(self, config: ModelConfig | None = None, class_names: Sequence[str] | None = None):
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and len(self.class_names) != cfg.num_classes:
            raise ValueError(f"{len(self.class_names)} class names given for num_classes={cfg.num_classes}")
        self.backbone = ResNetBackbone(cfg.depth, cfg.groups, cfg.width_per_group, cfg.frozen_stages, cfg.norm_eval,
                                       base_channels=cfg.base_channels)
        self.neck = FPN(self.backbone.out_channels, cfg.fpn_channels, num_outs=len(cfg.strides))
        if cfg.is_variant:  # another quality / box representation, assigner or anchors (gfldet.models.variants)
            self.head = VariantHead(cfg)
        else:
            self.head = GFLHead(
                cfg.num_classes, cfg.fpn_channels, cfg.head_channels, cfg.stacked_convs, cfg.reg_max, len(cfg.strides), cfg.gn_groups
            )
        self.integral = Integral(cfg.reg_max)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(3, 1, 1), persistent=False)
        self._anchor_cache: dict[tuple, list[Tensor]] = {}

    # ------------------------------------------------------------------ input
    def preprocess(self, images: Sequence[Tensor]) -> tuple[Tensor, BatchMeta]:
        """List of ``(3, H, W)`` uint8 or float-in-[0, 1] RGB images -> normalised, zero-padded ``(N, 3, H', W')``."""
        cfg = self.config
        if isinstance(images, Tensor):
            images = list(images) if images.dim() == 4 else [images]
        if len(images) == 0:
            raise ValueError("expected a non-empty list of (3, H, W) images")
        min_size = cfg.min_size
        if self.training and cfg.train_min_sizes:  # multi-scale training: one short side per batch
            min_size = cfg.train_min_sizes[int(torch.randint(len(cfg.train_min_sizes), (1,)))]
        tensors, sizes, scales, originals = [], [], [], []
        for i, img in enumerate(images):
            if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != 3 or img.shape[1] < 1 or img.shape[2] < 1:
                shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
                raise ValueError(f"image {i}: expected a (3, H, W) RGB tensor, got {shape}")
            h, w = int(img.shape[1]), int(img.shape[2])
            if img.dtype == torch.uint8:
                x = img.to(self.pixel_mean.device, torch.float32)
            elif img.is_floating_point():
                x = img.to(self.pixel_mean.device, torch.float32)
                if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
                    raise ValueError(
                        f"image {i}: float images must hold values in [0, 1], got range "
                        f"[{float(x.min()):g}, {float(x.max()):g}] (pass uint8 for 0-255 data)"
                    )
                x = x * 255.0
            else:
                raise ValueError(f"image {i}: dtype {img.dtype} is not supported (use uint8 or float in [0, 1])")
            nh, nw = keep_ratio_size(h, w, min_size, cfg.max_size)
            if (nh, nw) != (h, w):
                x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            x = (x - self.pixel_mean) / self.pixel_std
            tensors.append(x)
            sizes.append((nh, nw))
            scales.append((nw / w, nh / h))
            originals.append((h, w))
        d = cfg.size_divisor
        pads = [padded_size(h, w, d) for h, w in sizes]
        bh, bw = max(p[0] for p in pads), max(p[1] for p in pads)
        batch = tensors[0].new_zeros(len(tensors), 3, bh, bw)
        for i, x in enumerate(tensors):
            batch[i, :, : x.shape[1], : x.shape[2]] = x
        return batch, BatchMeta(sizes, pads, scales, originals)

    # ------------------------------------------------------------------ network
    def forward_features(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(N, 3, H, W)`` normalised batch -> per level class logits ``(N, C, H_l, W_l)`` and
        distribution logits ``(N, 4B, H_l, W_l)``."""
        return self.head(self.neck(self.backbone(batch)))

    def anchors(self, featmap_sizes: Sequence[tuple[int, int]], device: torch.device) -> list[Tensor]:
        key = (tuple(featmap_sizes), str(device))
        if key not in self._anchor_cache:
            if len(self._anchor_cache) > 64:
                self._anchor_cache.clear()
            self._anchor_cache[key] = grid_anchors(featmap_sizes, self.config.strides, self.config.octave_base_scale, device)
        return self._anchor_cache[key]

    @staticmethod
    def _flatten(maps: Sequence[Tensor]) -> Tensor:
        """Per level ``(N, K, H, W)`` -> ``(N, A, K)`` with anchors in row-major order per level."""
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps], dim=1)

    # ------------------------------------------------------------------ training
    def compute_targets(
        self,
        cls_logits: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        pad_shapes: Sequence[tuple[int, int]],
        gt_ignore: Sequence[Tensor | None] | None = None,
    ) -> GFLTargets:
        """ATSS targets for boxes given in the network-input frame."""
        if self.config.is_variant:
            return variant_targets(self, cls_logits, gt_boxes, gt_labels, pad_shapes, gt_ignore)[0]
        sizes = [tuple(m.shape[-2:]) for m in cls_logits]
        device = cls_logits[0].device
        anchors = self.anchors(sizes, device)
        valid = valid_anchor_flags(sizes, self.config.strides, pad_shapes, device)
        return gfl_targets(
            torch.cat(anchors),
            [a.shape[0] for a in anchors],
            valid,
            gt_boxes,
            gt_labels,
            self.config.num_classes,
            gt_ignore,
            topk=self.config.atss_topk,
            ignore_iof_thr=self.config.ignore_iof_thr,
        )

    def compute_losses(
        self,
        cls_logits: Sequence[Tensor],
        reg_logits: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        pad_shapes: Sequence[tuple[int, int]],
        gt_ignore: Sequence[Tensor | None] | None = None,
    ) -> dict[str, Tensor]:
        """Weighted losses from raw head outputs and boxes in the network-input frame."""
        if self.config.is_variant:
            return variant_losses(self, cls_logits, reg_logits, gt_boxes, gt_labels, pad_shapes, gt_ignore)
        cfg = self.config
        targets = self.compute_targets(cls_logits, gt_boxes, gt_labels, pad_shapes, gt_ignore)
        sizes = [tuple(m.shape[-2:]) for m in cls_logits]
        anchors = self.anchors(sizes, cls_logits[0].device)
        strides = torch.repeat_interleave(
            torch.tensor(cfg.strides, device=cls_logits[0].device, dtype=torch.float32),
            torch.tensor([a.shape[0] for a in anchors], device=cls_logits[0].device),
        )
        return gfl_losses(
            self._flatten(cls_logits),
            self._flatten(reg_logits),
            torch.cat(anchors),
            strides,
            targets,
            cfg.reg_max,
            beta=cfg.qfl_beta,
            weights=(cfg.loss_qfl_weight, cfg.loss_bbox_weight, cfg.loss_dfl_weight),
        )

    def _prepare_targets(self, targets: Sequence[dict], meta: BatchMeta, device: torch.device):
        if len(targets) != len(meta.image_sizes):
            raise ValueError(f"got {len(targets)} targets for {len(meta.image_sizes)} images")
        boxes_out, labels_out, ignore_out = [], [], []
        for i, t in enumerate(targets):
            if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
                raise ValueError(f"target {i}: expected a dict with 'boxes' (M, 4) and 'labels' (M,)")
            boxes = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4) if len(t["boxes"]) else torch.zeros(0, 4, device=device)
            labels = torch.as_tensor(t["labels"], device=device).reshape(-1).long()
            if boxes.shape[0] != labels.shape[0]:
                raise ValueError(f"target {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
            bad = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if bad.any():
                j = int(bad.nonzero()[0])
                raise ValueError(
                    f"target {i}: box {j} {boxes[j].tolist()} is degenerate (need finite x1 < x2 and y1 < y2, xyxy pixels)"
                )
            lab_bad = (labels < 0) | (labels >= self.config.num_classes)
            if lab_bad.any():
                j = int(lab_bad.nonzero()[0])
                raise ValueError(f"target {i}: label {int(labels[j])} of box {j} is outside [0, {self.config.num_classes})")
            sx, sy = meta.scales[i]
            boxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
            crowd = t.get("iscrowd")
            if crowd is not None:
                crowd = torch.as_tensor(crowd, device=device).reshape(-1).bool()
                if crowd.shape[0] != boxes.shape[0]:
                    raise ValueError(f"target {i}: 'iscrowd' has {crowd.shape[0]} entries for {boxes.shape[0]} boxes")
                ignore_out.append(boxes[crowd])
                boxes, labels = boxes[~crowd], labels[~crowd]
            else:
                ignore_out.append(None)
            boxes_out.append(boxes)
            labels_out.append(labels)
        return boxes_out, labels_out, ignore_out

    # ------------------------------------------------------------------ inference
    def decode(
        self, cls_logits: Sequence[Tensor], reg_logits: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Detections (in the network-input frame, clipped to each image's size) from raw head outputs."""
        if self.config.is_variant:  # representation variants decode in gfldet.models.variants
            return variant_decode(self, cls_logits, reg_logits, image_sizes)
        cfg = self.config
        sizes = [tuple(m.shape[-2:]) for m in cls_logits]
        anchors = self.anchors(sizes, cls_logits[0].device)
        c_flat = [m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in cls_logits]
        r_flat = [m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in reg_logits]
        return [
            decode_image(
                [c[i] for c in c_flat],
                [r[i] for r in r_flat],
                anchors,
                cfg.strides,
                image_sizes[i],
                self.integral.project,
                cfg.score_thr,
                cfg.nms_pre,
                cfg.nms_iou,
                cfg.max_per_img,
            )
            for i in range(len(image_sizes))
        ]

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode the model needs targets: model(images, targets)")
        batch, meta = self.preprocess(images)
        if self.training:  # check the targets before the expensive forward pass
            boxes, labels, ignore = self._prepare_targets(targets, meta, batch.device)
            cls_logits, reg_logits = self.forward_features(batch)
            return self.compute_losses(cls_logits, reg_logits, boxes, labels, meta.pad_shapes, ignore)
        cls_logits, reg_logits = self.forward_features(batch)
        dets = self.decode(cls_logits, reg_logits, meta.image_sizes)
        for d, (sx, sy), (h, w) in zip(dets, meta.scales, meta.original_sizes):
            if (sx, sy) != (1.0, 1.0):
                d["boxes"] = d["boxes"] / d["boxes"].new_tensor([sx, sy, sx, sy])
                d["boxes"] = d["boxes"].clamp(min=0).minimum(d["boxes"].new_tensor([w, h, w, h]))
                if "edge_std" in d:  # pixels of the network input -> pixels of the image given
                    d["edge_std"] = d["edge_std"] / d["edge_std"].new_tensor([sx, sy, sx, sy])
        return dets

    def train(self, mode: bool = True):
        """``nn.Module.train``, and the CPU fast path of the mode (gfldet.models.fusion): fused convolutions for
        inference in eval mode, the backbone's frozen-statistics BatchNorm folded into its convolutions in training."""
        super().train(mode)
        return set_fusion(self, "training" if mode else "inference")
