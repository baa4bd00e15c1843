"""Assemblies: the parts of a detector built from a :class:`~gfldet.models.config.ModelConfig`, GFL's and the ablations'.

GFL is the default assembly; the representations the paper compares in its ablations (Table 1) are others:

* ``quality``: ``"qfl"`` GFL's joint class-quality score (:class:`~gfldet.models.quality.JointQFL`); ``"dgqp"``
  GFLV2's joint score with the distribution-guided quality predictor (:class:`~gfldet.models.quality.JointDGQP`);
  ``"none"`` a
  plain focal-loss classifier; ``"centerness"`` / ``"iou"`` that classifier plus a branch (gfldet.models.quality);
* ``box``: ``"distribution"`` the general distribution over ``n + 1`` bins of width ``bin_width`` (GFL);
  ``"dirac"`` direct distances; ``"gaussian"`` mean and log-variance trained with KL-Loss, ``"gaussian_nll"`` the
  same with the plain NLL (gfldet.models.box_representations);
* ``assigner``: ``"atss"``, ``"fcos"`` or ``"retina"`` (gfldet.models.assigners), and the anchors per location
  (``anchor_ratios`` x ``scales_per_octave``; RetinaNet uses 3 x 3).

``quality="centerness", box="dirac", assigner="atss"`` is the ATSS detector (:func:`atss_config`).
A new part is used by handing it to :class:`~gfldet.models.detector.GFL` (keyword arguments) or by an assembly.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import ModelConfig
from .assigners import ATSSAssigner, FCOSAssigner, MaxIoUAssigner
from .backbone import FPN, ResNetBackbone
from .box_representations import DiracBox, DistributionBox, GaussianBox, GaussianNLLBox
from .criterion import Criterion
from .head import TOWER_LAYERS, GFLHead
from .postprocess import Postprocessor
from .priors import AnchorGenerator
from .quality import CenternessBranch, FocalClassifier, IoUBranch, JointDGQP, JointQFL
from .transform import DetectionTransform
from .tv_backbone import TorchvisionBackbone

__all__ = ["PARTS", "BOX_PARTS", "QUALITY_PARTS", "ASSIGNER_PARTS", "assemble", "atss_config", "box_part",
           "quality_part", "assigner_part", "prior_part"]

# The parts of a detector, in the order they are built (the RNG draws of a fresh initialisation depend on it).
PARTS = ("transform", "prior_generator", "box", "quality", "assigner", "backbone", "neck", "head", "criterion",
         "postprocessor")


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


def _focal_estimator(kind: type, cfg: ModelConfig):
    """A focal-loss classifier, with or without a quality branch (the ablations' estimators)."""
    return kind(cfg.focal_alpha, cfg.focal_gamma, cfg.loss_cls_weight, cfg.loss_quality_weight)


# name (the ModelConfig field's value) -> the part built from the config: a new representation, estimator or
# assigner is one entry here (and its name in models/config.py's choices), nothing in the detector, the criterion or
# the exporter. tests/models/test_assemble.py checks the names against ModelConfig's choices.
BOX_PARTS: dict[str, Callable[[ModelConfig], Any]] = {
    "distribution": lambda cfg: DistributionBox(cfg.reg_max, cfg.bin_width, cfg.loss_dfl_weight),
    "dirac": lambda cfg: DiracBox(cfg.loss_dfl_weight),
    "gaussian": lambda cfg: GaussianBox(cfg.loss_dfl_weight),
    "gaussian_nll": lambda cfg: GaussianNLLBox(cfg.loss_dfl_weight),
}
QUALITY_PARTS: dict[str, Callable[[ModelConfig], Any]] = {
    "qfl": lambda cfg: JointQFL(cfg.qfl_beta, cfg.loss_cls_weight),
    "dgqp": lambda cfg: JointDGQP(cfg.qfl_beta, cfg.loss_cls_weight, cfg.reg_max, cfg.reg_topk, cfg.reg_channels,
                                  cfg.add_mean),
    "none": lambda cfg: _focal_estimator(FocalClassifier, cfg),
    "centerness": lambda cfg: _focal_estimator(CenternessBranch, cfg),
    "iou": lambda cfg: _focal_estimator(IoUBranch, cfg),
}
ASSIGNER_PARTS: dict[str, Callable[[ModelConfig], Any]] = {
    "atss": lambda cfg: ATSSAssigner(cfg.atss_topk, cfg.ignore_iof_thr),
    "fcos": lambda cfg: FCOSAssigner(cfg.fcos_range_bounds, cfg.fcos_radius, cfg.ignore_iof_thr),
    "retina": lambda cfg: MaxIoUAssigner(cfg.retina_pos_iou, cfg.retina_neg_iou, cfg.retina_min_pos_iou,
                                         cfg.ignore_iof_thr),
}


def box_part(cfg: ModelConfig):
    """The box representation of ``cfg.box`` (:data:`BOX_PARTS`)."""
    return BOX_PARTS[cfg.box](cfg)


def quality_part(cfg: ModelConfig):
    """The quality estimator of ``cfg.quality`` (:data:`QUALITY_PARTS`)."""
    return QUALITY_PARTS[cfg.quality](cfg)


def prior_part(cfg: ModelConfig) -> AnchorGenerator:
    """The prior generator of ``cfg`` (strides, anchor scale and ratios)."""
    return AnchorGenerator(cfg.strides, cfg.octave_base_scale, cfg.scales_per_octave, cfg.anchor_ratios)


def assigner_part(cfg: ModelConfig):
    """The assigner of ``cfg.assigner`` (:data:`ASSIGNER_PARTS`)."""
    return ASSIGNER_PARTS[cfg.assigner](cfg)


def _build(name: str, cfg: ModelConfig, p: dict[str, Any]):
    if name == "transform":
        return DetectionTransform(cfg)
    if name == "prior_generator":
        return prior_part(cfg)
    if name == "box":
        return box_part(cfg)
    if name == "quality":
        return quality_part(cfg)
    if name == "assigner":
        return assigner_part(cfg)
    if name == "backbone":
        if cfg.backbone != "resnet":
            return TorchvisionBackbone(cfg.backbone, cfg.frozen_stages, cfg.norm_eval)
        return ResNetBackbone(cfg.depth, cfg.groups, cfg.width_per_group, cfg.frozen_stages, cfg.norm_eval,
                              base_channels=cfg.base_channels, stage_with_dcn=cfg.stage_with_dcn,
                              deform_groups=cfg.deform_groups, dcn_modulated=cfg.dcn_modulated)
    if name == "neck":
        return FPN(p["backbone"].out_channels, cfg.fpn_channels, num_outs=len(cfg.strides))
    if name == "head":
        return GFLHead(cfg.num_classes, cfg.fpn_channels, cfg.head_channels, cfg.stacked_convs, cfg.reg_max,
                       len(cfg.strides), cfg.gn_groups, box_channels=p["box"].channels,
                       num_anchors=p["prior_generator"].num_anchors, quality_channels=p["quality"].channels,
                       quality_branch=p["quality"].branch, tower_layer=TOWER_LAYERS[cfg.head_conv])
    if name == "criterion":
        return Criterion(cfg.num_classes, p["assigner"], p["box"], p["quality"], cfg.loss_bbox_weight)
    return Postprocessor(p["box"], p["quality"], cfg)


def assemble(cfg: ModelConfig, **given) -> dict[str, Any]:
    """The parts of a detector for ``cfg``: those ``given`` (not None) as they are, the others built from ``cfg``
    (and from the parts before them: the head's channels come from the box representation, the quality estimator
    and the prior generator)."""
    unknown = set(given) - set(PARTS)
    if unknown:
        raise TypeError(f"unknown detector parts {sorted(unknown)}; the parts are {PARTS}")
    parts: dict[str, Any] = {}
    for name in PARTS:
        parts[name] = given[name] if given.get(name) is not None else _build(name, cfg, parts)
    return parts
