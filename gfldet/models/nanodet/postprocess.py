"""NanoDet's test-time decoding, as the official ``head.post_process`` (``get_bboxes`` + ``multiclass_nms`` +
``warp_boxes``), where it differs from gfldet's GFL decoding (gfldet.models.postprocess):

- priors are points, one per location, at ``(i + offset) * stride``: offset 0 for NanoDet-Plus, 0.5 for the
  legacy NanoDet (GFL/mmdetection: 0 for anchor centres);
- boxes: GFL's integral decode (:meth:`gfldet.models.box_representations.DistributionBox.decode`), clamped to the padded
  network input of the whole batch (not to each image's own size);
- no per-level top-k (``nms_pre``): every (prior, class) pair whose sigmoid score is strictly above ``score_thr``
  is a candidate, in row-major (prior, class) order; no removal of empty boxes;
- class-wise NMS by coordinate offset: every box is shifted by ``label * (max coordinate + 1)`` and one
  ``torchvision.ops.nms`` runs over all candidates; at ``split_thr`` (10,000) candidates or more, NMS runs per class
  on the shifted boxes and the union is sorted by score (torchvision's ``batched_nms`` picks its per-class path
  at other sizes, which can keep other boxes where offsets round: hence this function);
- the first ``max_per_img`` boxes kept, then mapped back to the image by the inverse warp and clipped to it.

Shapes: N images, A priors (all levels), C classes, B = reg_max + 1 bins, D detections kept.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import nms

from ...ops.boxes import clip_boxes
from ..box_representations import DistributionBox
from .parts import PointPriorGenerator
from .warp import warp_boxes

__all__ = ["NanoDetDecoder", "center_priors", "offset_class_nms"]


def center_priors(input_hw: tuple[int, int], strides: Sequence[int], offset: float,
                  device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """``(A, 2)`` float32 prior points ``((j + offset) * s, (i + offset) * s)`` of every level (``ceil(H / s) x
    ceil(W / s)`` locations, row-major), and ``(A,)`` their strides: :class:`PointPriorGenerator`'s priors."""
    h, w = input_hw
    gen = PointPriorGenerator(strides, offset)
    per_level = gen.grid([(math.ceil(h / s), math.ceil(w / s)) for s in gen.strides], device)
    return torch.cat(per_level)[:, :2], gen.anchor_strides(per_level)


def offset_class_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_thr: float, split_thr: int = 10000) -> Tensor:
    """Indices kept by class-wise NMS as the official ``batched_nms`` does it (see the module docstring), in
    descending score order."""
    max_coordinate = boxes.max()
    shifted = boxes + (labels.to(boxes) * (max_coordinate + 1))[:, None]
    if boxes.shape[0] < split_thr:
        return nms(shifted, scores, iou_thr)
    kept = torch.zeros_like(scores, dtype=torch.bool)
    for c in torch.unique(labels):
        idx = (labels == c).nonzero().view(-1)
        kept[idx[nms(shifted[idx], scores[idx], iou_thr)]] = True
    keep = kept.nonzero().view(-1)
    return keep[scores[keep].argsort(descending=True)]


@dataclass
class NanoDetDecoder:
    """Detections from NanoDet's raw output, with the official test settings as defaults.

    ``prior_offset`` 0.0 (NanoDet-Plus) or 0.5 (legacy NanoDet); ``score_thr`` a strict lower bound on the sigmoid
    score; ``nms_iou``, ``max_per_img``, ``split_thr`` as :func:`offset_class_nms`.
    """

    num_classes: int
    strides: tuple[int, ...]
    reg_max: int = 7
    prior_offset: float = 0.0
    score_thr: float = 0.05
    nms_iou: float = 0.6
    max_per_img: int = 100
    split_thr: int = 10000

    def __post_init__(self):
        self.box = DistributionBox(self.reg_max)

    def decode_boxes(self, raw: Tensor, input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """``(N, A, C + 4B)`` raw output of a batch of padded size ``input_hw`` -> sigmoid scores ``(N, A, C)`` and
        boxes ``(N, A, 4)`` in the network-input frame, clamped to ``[0, W] x [0, H]``."""
        cls_logits, reg_logits = raw.split([self.num_classes, 4 * (self.reg_max + 1)], dim=-1)
        points, strides = center_priors(input_hw, self.strides, self.prior_offset, raw.device)
        if points.shape[0] != raw.shape[1]:
            raise ValueError(f"{raw.shape[1]} outputs per image for {points.shape[0]} priors of input {input_hw}")
        self.box.to(raw.device)
        boxes = clip_boxes(self.box.decode(reg_logits, points, strides[:, None]), input_hw)
        return cls_logits.sigmoid(), boxes

    def detections(self, scores: Tensor, boxes: Tensor, reg_logits: Tensor | None = None,
                   strides: Tensor | None = None) -> dict[str, Tensor]:
        """One image's ``(A, C)`` scores and ``(A, 4)`` boxes -> ``boxes (D, 4)``, ``scores (D,)``, ``labels (D,)``
        in descending score order (network-input frame); with its ``(A, 4B)`` distribution logits and ``(A,)``
        prior strides also ``strides (D,)`` and the box part's extras (``distributions``, ``edge_peak``,
        ``edge_entropy``, ``edge_std`` in network-input pixels, ``loc_conf``), as a GFL detection carries them."""
        valid = scores > self.score_thr
        idx = valid.nonzero()  # (k, 2): (prior, class), row-major as the official masked_select
        cand_boxes, cand_scores, labels = boxes[idx[:, 0]], scores[valid], idx[:, 1]
        keep = (offset_class_nms(cand_boxes, cand_scores, labels, self.nms_iou, self.split_thr)[:self.max_per_img]
                if cand_boxes.shape[0] else idx.new_zeros(0))
        det = {"boxes": cand_boxes[keep], "scores": cand_scores[keep], "labels": labels[keep]}
        if reg_logits is not None and strides is not None:
            prior = idx[keep, 0]
            det["strides"] = strides[prior]
            det.update(self.box.extras(reg_logits[prior].float(), det["strides"]))
        return det

    def __call__(self, raw: Tensor, input_hw: tuple[int, int], warp_matrices: Sequence[Tensor] | None = None,
                 original_sizes: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Tensor]]:
        """Per image detections; with ``warp_matrices`` and ``original_sizes`` ``(H, W)`` the boxes are mapped back to
        each image (inverse warp, clipped to it) and the network-frame boxes kept as ``input_boxes``."""
        scores, boxes = self.decode_boxes(raw, input_hw)
        reg_logits = raw[..., self.num_classes:]
        _, strides = center_priors(input_hw, self.strides, self.prior_offset, raw.device)
        out = []
        for i in range(raw.shape[0]):
            det = self.detections(scores[i], boxes[i], reg_logits[i], strides)
            if warp_matrices is not None and original_sizes is not None:
                h, w = original_sizes[i]
                inv = torch.linalg.inv(warp_matrices[i].to(torch.float64).cpu())
                det["input_boxes"] = det["boxes"]
                det["boxes"] = warp_boxes(det["boxes"].detach().cpu(), inv, w, h).to(det["boxes"].device)
                # the warp is a scale (and a shift): edge spreads in image pixels, x edges by its x scale
                sx, sy = float(inv[0, 0]), float(inv[1, 1])
                det["edge_std"] = det["edge_std"] * det["edge_std"].new_tensor([sx, sy, sx, sy])
            out.append(det)
        return out
