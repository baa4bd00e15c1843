"""The representations GFL is compared with in the paper's ablations (Table 1), as options of one detector.

A :class:`~gfldet.config.ModelConfig` picks

* ``quality``: ``"qfl"`` the joint class-quality score trained with QFL (GFL); ``"none"`` a plain classifier
  trained with sigmoid focal loss (alpha 0.25, gamma 2) on one-hot targets; ``"centerness"`` / ``"iou"`` the
  same classifier plus a separate one-channel branch on the regression tower, trained with BCE towards the
  centerness of the prior's centre in its GT (FCOS / ATSS) or the IoU of the decoded box with its GT, and
  multiplied with the class score at test time;
* ``box``: ``"distribution"`` the general distribution over ``n + 1`` bins of width ``bin_width`` (delta)
  trained with DFL + GIoU (GFL); ``"dirac"`` four distances regressed directly (``exp`` of the scaled output,
  times the stride) trained with GIoU only; ``"gaussian"`` a mean (as Dirac) and a log-variance per edge,
  trained with the Gaussian negative log-likelihood of the GT distance plus GIoU on the mean box;
* ``assigner``: ``"atss"``, ``"fcos"`` or ``"retina"`` (:mod:`gfldet.ops.assigners`), and the anchors per
  location (``anchor_ratios`` x ``scales_per_octave``; RetinaNet uses 3 x 3).

``quality="centerness", box="dirac", assigner="atss"`` is the ATSS detector (:func:`atss_config`).

The default config (QFL, distribution with unit bins, ATSS, one anchor) never comes here: it runs the
reference-exact code of :mod:`gfldet.models.criterion` and :mod:`gfldet.models.postprocess`.

Output layout of :class:`VariantHead`, per level: class logits ``(N, A*C, H, W)`` and box outputs
``(N, A*K + A*Q, H, W)``: first ``A*K`` box channels (K = 4(n+1), 4 or 8, anchor-major), then ``Q`` = 1 quality
logit per anchor for the centerness / IoU branches (Q = 0 otherwise). Priors are ordered location-major,
anchor-minor, as ``map.permute(0, 2, 3, 1).reshape(N, H*W*A, -1)`` gives.

Shapes: N images, A anchors (all levels and anchors of a location), C classes, K box channels per anchor,
P positives of the batch, D detections.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from .config import ModelConfig
from ..ops.assign import atss_assign
from ..ops.assigners import fcos_assign, fcos_regress_ranges, retina_assign
from ..ops.boxes import box_centers, box_iou_aligned, box_to_distance, distance_to_box
from ..ops.integral import distribution_expectation, edge_distributions
from ..ops.losses import _dfl, _upcast, giou_loss, quality_focal_loss_sparse, reduce_loss
from ..ops.priors import valid_anchor_flags
from ..ops.uncertainty import edge_uncertainty
from .criterion import _EPS32, GFLTargets, reduce_mean, targets_from_assignment
from .head import GFLHead

if TYPE_CHECKING:
    from .detector import GFL

__all__ = [
    "VariantHead", "is_variant", "atss_config", "box_channels", "multi_anchors", "sigmoid_focal_loss",
    "gaussian_nll", "centerness_target", "dfl_targets", "variant_targets", "variant_losses", "variant_decode", "variant_outputs",
]

log = logging.getLogger(__name__)

# exp() of a scaled output larger than this (1e4 strides) is clamped: the distance is already absurd and the
# clamp keeps float32 finite.
_MAX_LOG_DIST = math.log(1e4)
# The Gaussian's log-variance is clamped to a sane range (sigma from 0.007 to 150 strides).
_LOGVAR_RANGE = (-10.0, 10.0)


def is_variant(cfg: ModelConfig) -> bool:
    """Whether ``cfg`` runs through this module rather than the reference GFL path."""
    return cfg.is_variant


def atss_config(**overrides) -> ModelConfig:
    """The ATSS baseline (Zhang et al. 2020, as mmdetection's ``atss_r50_fpn_1x_coco``): ATSS assignment, sigmoid
    focal loss, a centerness branch, direct distance regression with GIoU weighted by the centerness target;
    at test time the NMS score is ``sigmoid(cls) * sigmoid(centerness)``.

    Departure: mmdetection's ATSS regresses anchor deltas (``DeltaXYWHBBoxCoder``) decoded before the GIoU loss;
    here the four distances from the anchor centre are regressed (``exp`` of the scaled output times the stride),
    the point form of the ATSS paper, so that ATSS and GFL differ only in the representations.
    """
    kw = dict(quality="centerness", box="dirac", assigner="atss")
    kw.update(overrides)
    return ModelConfig(**kw)


def box_channels(cfg: ModelConfig) -> int:
    """Box outputs per anchor: ``4 (n + 1)`` for the distribution, 4 for Dirac, 8 (mean, log-variance) for Gaussian."""
    return {"distribution": 4 * (cfg.reg_max + 1), "dirac": 4, "gaussian": 8}[cfg.box]


def _quality_channels(cfg: ModelConfig) -> int:
    return 1 if cfg.quality in ("centerness", "iou") else 0


class VariantHead(GFLHead):
    """:class:`GFLHead` with ``A`` anchors per location, another box representation and an optional quality
    branch (a 3x3 conv on the regression tower, as the ATSS / FCOS centerness branch; the level's ``Scale``
    multiplies the box outputs only)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg.num_classes, cfg.fpn_channels, cfg.head_channels, cfg.stacked_convs, cfg.reg_max,
                         len(cfg.strides), cfg.gn_groups)
        a = cfg.num_anchors
        self.num_anchors, self.box_channels, self.quality_channels = a, box_channels(cfg), _quality_channels(cfg)
        feat = cfg.head_channels if cfg.stacked_convs > 0 else cfg.fpn_channels
        prior_bias = -math.log((1 - 0.01) / 0.01)  # GFLHead's prior probability 0.01
        self.gfl_cls = nn.Conv2d(feat, a * cfg.num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(feat, a * self.box_channels, 3, padding=1)
        self.gfl_quality = nn.Conv2d(feat, a * self.quality_channels, 3, padding=1) if self.quality_channels else None
        for m in (self.gfl_cls, self.gfl_reg, self.gfl_quality):
            if m is not None:
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.gfl_cls.bias, prior_bias)

    def forward_level(self, x: Tensor, level: int) -> tuple[Tensor, Tensor]:
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        reg = self.scales[level](self.gfl_reg(reg_feat)).float()
        if self.gfl_quality is not None:
            reg = torch.cat([reg, self.gfl_quality(reg_feat).float()], dim=1)
        return self.gfl_cls(cls_feat), reg


# ---------------------------------------------------------------------------------------------------- priors
def multi_anchors(
    featmap_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    octave_base_scale: float,
    scales_per_octave: int,
    ratios: Sequence[float],
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """Per level ``(H*W*R*S, 4)`` xyxy anchors: at every location (centre ``(j*s, i*s)``, offset 0 as GFL's
    priors), ``R`` ratios (``h / w``) times ``S`` scales ``octave_base_scale * 2^(k / S)`` of base size ``s``, ordered
    ratio-major then scale (mmdetection's ``AnchorGenerator``). One ratio 1 and one scale gives
    :func:`gfldet.ops.priors.grid_anchors`'s anchors."""
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


def _anchors(model: GFL, sizes: Sequence[tuple[int, int]], device: torch.device) -> list[Tensor]:
    cfg = model.config
    if cfg.num_anchors == 1 and tuple(cfg.anchor_ratios) == (1.0,):
        return model.anchors(sizes, device)  # GFL's own priors (and cache)
    key = ("multi", tuple(sizes), str(device))
    if key not in model._anchor_cache:
        model._anchor_cache[key] = multi_anchors(sizes, cfg.strides, cfg.octave_base_scale, cfg.scales_per_octave,
                                                 cfg.anchor_ratios, device)
    return model._anchor_cache[key]


def _flatten(maps: Sequence[Tensor], num_anchors: int) -> Tensor:
    """Per level ``(N, A_l*K, H, W)`` -> ``(N, sum H*W*A_l, K)``."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1] // num_anchors) for m in maps], dim=1)


def variant_outputs(cfg: ModelConfig, cls_logits: Sequence[Tensor], reg_logits: Sequence[Tensor]):
    """Raw per-level head outputs -> ``cls (N, A, C)``, ``box (N, A, K)`` and ``quality (N, A)`` logits (or None)."""
    a, k = cfg.num_anchors, box_channels(cfg)
    cls = _flatten(cls_logits, a)
    box = _flatten([m[:, : a * k] for m in reg_logits], a)
    quality = _flatten([m[:, a * k:] for m in reg_logits], a)[..., 0] if _quality_channels(cfg) else None
    return cls, box, quality


# ---------------------------------------------------------------------------------------------------- losses
def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017; GFL's eq. 1), ``-alpha_t (1 - p_t)^gamma log(p_t)``, from logits.

    Args:
        logits, targets: ``(..., C)``; targets in ``{0, 1}`` (one-hot rows, all zero for background).
        weight: optional, broadcast against the loss (e.g. ``(P, 1)`` per-row weights).
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    logits = _upcast(logits)
    targets = targets.to(logits.dtype)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return reduce_loss(alpha_t * (1 - p_t).pow(gamma) * ce, weight, reduction)


def gaussian_nll(mean: Tensor, log_var: Tensor, target: Tensor, weight: Tensor | None = None,
                 reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of ``target`` under ``N(mean, exp(log_var))``:
    ``0.5 log(2 pi) + 0.5 log_var + 0.5 (target - mean)^2 exp(-log_var)``, element-wise."""
    mean, log_var = _upcast(mean), _upcast(log_var)
    target = target.to(mean.dtype)
    loss = 0.5 * math.log(2 * math.pi) + 0.5 * log_var + 0.5 * (target - mean).square() * torch.exp(-log_var)
    return reduce_loss(loss, weight, reduction)


def centerness_target(points: Tensor, boxes: Tensor) -> Tensor:
    """FCOS / ATSS centerness of ``(..., 2)`` points in their ``(..., 4)`` GT boxes:
    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``; 0 for a point outside its box (the reference
    never sees one with ATSS or FCOS; max-IoU assignment can give one)."""
    d = box_to_distance(points, boxes).clamp(min=0)
    lr = d[..., [0, 2]]
    tb = d[..., [1, 3]]
    ratio = (lr.amin(-1) / lr.amax(-1).clamp(min=1e-12)) * (tb.amin(-1) / tb.amax(-1).clamp(min=1e-12))
    return ratio.sqrt()


def dfl_targets(distances: Tensor, bin_width: float, reg_max: int) -> Tensor:
    """DFL targets in bins for distances in strides, with bins at ``0, delta, ..., n delta`` strides: ``y / delta``,
    clamped to ``[0, n - 0.1]`` as the reference clamps (so that the right bin ``floor + 1`` exists)."""
    return (distances / bin_width).clamp(min=0, max=reg_max - 0.1)


def _distances(cfg: ModelConfig, box_logits: Tensor, project: Tensor) -> Tensor:
    """``(..., K)`` box outputs -> ``(..., 4)`` distances in strides (the mean for the Gaussian)."""
    if cfg.box == "distribution":
        return distribution_expectation(box_logits, project) * cfg.bin_width
    return box_logits[..., :4].clamp(max=_MAX_LOG_DIST).exp()


def variant_targets(
    model: GFL,
    cls_logits: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    pad_shapes: Sequence[tuple[int, int]],
    gt_ignore: Sequence[Tensor | None] | None = None,
) -> tuple[GFLTargets, Tensor, Tensor]:
    """Targets of the configured assigner, the ``(A, 4)`` anchors and their ``(A,)`` strides."""
    cfg = model.config
    sizes = [tuple(m.shape[-2:]) for m in cls_logits]
    device = cls_logits[0].device
    per_level = _anchors(model, sizes, device)
    anchors = torch.cat(per_level)
    counts = torch.tensor([a.shape[0] for a in per_level], device=device)
    strides = torch.repeat_interleave(torch.tensor(cfg.strides, device=device, dtype=torch.float32), counts)
    valid = valid_anchor_flags(sizes, cfg.strides, pad_shapes, device).repeat_interleave(cfg.num_anchors, dim=1)
    if cfg.assigner == "atss":
        res = atss_assign(anchors, [a.shape[0] for a in per_level], gt_boxes, valid, gt_ignore, topk=cfg.atss_topk,
                          ignore_iof_thr=cfg.ignore_iof_thr)
    elif cfg.assigner == "fcos":
        ranges = torch.tensor(fcos_regress_ranges(cfg.fcos_range_bounds, len(cfg.strides)), device=device)
        res = fcos_assign(anchors, strides, torch.repeat_interleave(ranges, counts, dim=0), gt_boxes, valid, gt_ignore,
                          center_radius=cfg.fcos_radius, ignore_iof_thr=cfg.ignore_iof_thr)
    else:
        res = retina_assign(anchors, gt_boxes, valid, gt_ignore, pos_iou_thr=cfg.retina_pos_iou,
                            neg_iou_thr=cfg.retina_neg_iou, min_pos_iou=cfg.retina_min_pos_iou,
                            ignore_iof_thr=cfg.ignore_iof_thr)
    return targets_from_assignment(res, anchors, gt_boxes, gt_labels, cfg.num_classes), anchors, strides


def variant_losses(
    model: GFL,
    cls_logits: Sequence[Tensor],
    reg_logits: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    pad_shapes: Sequence[tuple[int, int]],
    gt_ignore: Sequence[Tensor | None] | None = None,
) -> dict[str, Tensor]:
    """The weighted loss terms of a variant: ``loss_qfl`` (QFL) or ``loss_cls`` (focal loss); ``loss_bbox``
    (GIoU); ``loss_dfl`` (distribution) or ``loss_nll`` (Gaussian); ``loss_quality`` (centerness / IoU branch).

    Normalisers, as the reference of each method: QFL by the positives (each image counting at least 1, as GFL);
    focal loss and the quality branch's BCE by the positives of the batch (at least 1, as mmdetection's ATSS);
    box terms by the sum of their per-positive weights (at least 1): the highest detached class score with QFL
    (GFL), the centerness target with a centerness branch (ATSS), 1 otherwise.
    """
    cfg = model.config
    targets, anchors, strides = variant_targets(model, cls_logits, gt_boxes, gt_labels, pad_shapes, gt_ignore)
    cls, box, quality = variant_outputs(cfg, cls_logits, reg_logits)
    num_images, num_anchors, num_classes = cls.shape
    pos = targets.positive
    n_idx, a_idx = pos.nonzero(as_tuple=True)
    num_pos_total = reduce_mean(pos.sum().to(torch.float32)).clamp(min=1.0)
    iou_scores = cls.new_zeros(num_images, num_anchors, dtype=torch.float32)
    losses: dict[str, Tensor] = {}
    box_key = {"distribution": "loss_dfl", "gaussian": "loss_nll"}.get(cfg.box)

    if n_idx.numel() > 0:
        stride = strides[a_idx][:, None]  # (P, 1)
        centers = box_centers(anchors[a_idx]) / stride  # (P, 2), strides
        pos_box = box[n_idx, a_idx].float()  # (P, K)
        project = model.integral.project
        pred_boxes = distance_to_box(centers, _distances(cfg, pos_box, project))
        target_boxes = targets.boxes[n_idx, a_idx] / stride
        with torch.no_grad():
            iou = box_iou_aligned(pred_boxes.detach(), target_boxes)
            iou_scores[n_idx, a_idx] = iou
            if cfg.quality == "qfl":
                weight = cls[n_idx, a_idx].detach().float().sigmoid().amax(dim=1)
            elif cfg.quality == "centerness":
                ctr = centerness_target(centers, target_boxes)
                weight = ctr
            else:
                weight = torch.ones_like(iou)
        box_norm = reduce_mean(weight.sum().float()).clamp(min=1.0)
        losses["loss_bbox"] = cfg.loss_bbox_weight * giou_loss(pred_boxes, target_boxes, weight=weight, reduction="sum") / box_norm
        if cfg.box == "distribution":
            t = dfl_targets(box_to_distance(centers, target_boxes), cfg.bin_width, cfg.reg_max)
            dfl = _dfl(pos_box.reshape(-1, cfg.reg_max + 1), t.reshape(-1)).reshape(-1, 4)
            losses[box_key] = cfg.loss_dfl_weight * (dfl * weight[:, None]).sum() / 4.0 / box_norm
        elif cfg.box == "gaussian":
            log_var = pos_box[:, 4:].clamp(*_LOGVAR_RANGE)
            nll = gaussian_nll(pos_box[:, :4].clamp(max=_MAX_LOG_DIST).exp(), log_var,
                               box_to_distance(centers, target_boxes), reduction="none")
            losses[box_key] = cfg.loss_dfl_weight * (nll * weight[:, None]).sum() / 4.0 / box_norm
        if quality is not None:
            q_target = ctr if cfg.quality == "centerness" else iou
            bce = F.binary_cross_entropy_with_logits(quality[n_idx, a_idx].float(), q_target, reduction="sum")
            losses["loss_quality"] = cfg.loss_quality_weight * bce / num_pos_total
    else:  # no positive: zero terms that keep the graph connected (DDP), never NaN
        zero = torch.cat([m.reshape(-1) for m in reg_logits]).sum() * 0.0 + 0.0
        losses["loss_bbox"] = zero
        if box_key is not None:
            losses[box_key] = zero.clone()
        if quality is not None:
            losses["loss_quality"] = zero.clone()

    flat_cls = cls.reshape(-1, num_classes)
    labels = targets.labels.reshape(-1)
    if cfg.quality == "qfl":
        qfl = quality_focal_loss_sparse(flat_cls, labels, iou_scores.reshape(-1), beta=cfg.qfl_beta,
                                        weight=targets.label_weights.reshape(-1), reduction="sum")
        num_pos = reduce_mean(targets.num_pos_avg.to(qfl))
        cls_loss = {"loss_qfl": cfg.loss_qfl_weight * qfl / (num_pos + _EPS32)}
    else:
        onehot = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(flat_cls.dtype)  # background row: zeros
        fl = sigmoid_focal_loss(flat_cls, onehot, cfg.focal_alpha, cfg.focal_gamma,
                                weight=targets.label_weights.reshape(-1, 1), reduction="sum")
        cls_loss = {"loss_cls": cfg.loss_qfl_weight * fl / num_pos_total}
    return {**cls_loss, **losses}


# ---------------------------------------------------------------------------------------------------- decode
@torch.no_grad()
def variant_decode(model: GFL, cls_logits: Sequence[Tensor], reg_logits: Sequence[Tensor],
                   image_sizes: Sequence[tuple[int, int]]) -> list[dict[str, Tensor]]:
    """Detections of a variant, per image: ``boxes``, ``scores``, ``labels``, ``strides``; with the distribution
    also ``distributions`` and the uncertainty summaries of :func:`gfldet.ops.uncertainty.edge_uncertainty`
    (bins at ``0, delta, ..., n delta``); with the Gaussian an ``edge_std`` (pixels) from its variance.

    Score threshold and per-level top-k use the class score; with a centerness / IoU branch the NMS and output
    score is ``sigmoid(cls) * sigmoid(quality)``. This follows mmdetection's ATSS (``BaseDenseHead`` with score
    factors: ``filter_scores_and_topk`` on the class scores, then the scores multiplied by the score factors
    before NMS), not a threshold on the product.
    """
    cfg = model.config
    sizes = [tuple(m.shape[-2:]) for m in cls_logits]
    device = cls_logits[0].device
    per_level = _anchors(model, sizes, device)
    cls, box, quality = variant_outputs(cfg, cls_logits, reg_logits)
    bounds = [0]
    for a in per_level:
        bounds.append(bounds[-1] + a.shape[0])
    project = model.integral.project
    out = []
    for i, image_size in enumerate(image_sizes):
        parts: dict[str, list[Tensor]] = {"boxes": [], "scores": [], "labels": [], "box": [], "strides": []}
        for lvl, (anc, s) in enumerate(zip(per_level, cfg.strides)):
            lo, hi = bounds[lvl], bounds[lvl + 1]
            scores = cls[i, lo:hi].float().sigmoid()  # (A_l, C)
            keep = scores > cfg.score_thr
            flat = scores[keep]
            idxs = keep.nonzero()  # (k, 2): (anchor, class), row-major
            flat, order = flat.sort(descending=True)
            top = min(cfg.nms_pre, idxs.shape[0])
            flat, idxs = flat[:top], idxs[order[:top]]
            a_idx, labels = idxs.unbind(dim=1)
            if quality is not None:
                flat = flat * quality[i, lo + a_idx].float().sigmoid()
            b = box[i, lo + a_idx].float()
            boxes = distance_to_box(box_centers(anc[a_idx]), _distances(cfg, b, project) * s, max_shape=image_size)
            parts["boxes"].append(boxes)
            parts["scores"].append(flat)
            parts["labels"].append(labels)
            parts["box"].append(b)
            parts["strides"].append(torch.full_like(flat, float(s)))
        boxes, scores, labels, braw, strides_t = (torch.cat(parts[k]) for k in ("boxes", "scores", "labels", "box", "strides"))
        ok = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        boxes, scores, labels, braw, strides_t = boxes[ok], scores[ok], labels[ok], braw[ok], strides_t[ok]
        if boxes.shape[0] > 0:
            k = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.max_per_img]
            boxes, scores, labels, braw, strides_t = boxes[k], scores[k], labels[k], braw[k], strides_t[k]
        det = {"boxes": boxes, "scores": scores, "labels": labels, "strides": strides_t}
        if cfg.box == "distribution":
            probs = edge_distributions(braw, cfg.reg_max)
            det["distributions"] = probs
            det.update(edge_uncertainty(probs, project * cfg.bin_width, strides_t))
        elif cfg.box == "gaussian":
            det["edge_std"] = torch.exp(0.5 * braw[:, 4:].clamp(*_LOGVAR_RANGE)) * strides_t[:, None]
        out.append(det)
    return out
