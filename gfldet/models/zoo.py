"""Builders: ``gfl_resnet50_fpn(num_classes=80, weights=None, weights_backbone=None, **config)``.

Nothing is downloaded unless ``weights_backbone`` names torchvision ImageNet weights (torchvision fetches
them then); it may also be the path of a local state dict with torchvision's ResNet parameter names. ``weights`` is a path to a gfldet or mmdetection checkpoint of the same architecture.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from torchvision.models import get_weight

from ..config import ModelConfig
from .detector import GFL

__all__ = ["gfl_resnet18_fpn", "gfl_resnet50_fpn", "gfl_resnet101_fpn", "gfl_resnext101_32x4d_fpn", "build_model", "ARCHS"]

# builder name -> architecture fields and torchvision's name of the matching ImageNet classifier
ARCHS: dict[str, tuple[dict[str, int], str]] = {
    "gfl_resnet18_fpn": (dict(depth=18), "resnet18"),
    "gfl_resnet50_fpn": (dict(depth=50), "resnet50"),
    "gfl_resnet101_fpn": (dict(depth=101), "resnet101"),
    "gfl_resnext101_32x4d_fpn": (dict(depth=101, groups=32, width_per_group=4), ""),
}


def build_model(arch: str, *, num_classes: int = 80, weights: str | os.PathLike | None = None, weights_backbone: Any = None,
                class_names: list[str] | None = None, **kwargs: Any) -> GFL:
    """Build a GFL detector by builder name (``model.arch`` in configs)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown model.arch {arch!r}; choose from {sorted(ARCHS)}")
    fixed, tv_name = ARCHS[arch]
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise ValueError(f"{arch} fixes {clash}; use another builder instead of overriding them")
    cfg = ModelConfig(num_classes=num_classes, **fixed, **kwargs)
    if weights_backbone is not None and cfg.base_channels != 64:  # before anything is downloaded
        raise ValueError(f"ImageNet backbone weights are for the standard widths (base_channels=64), not base_channels={cfg.base_channels}")
    model = GFL(cfg, class_names=class_names)
    if isinstance(weights_backbone, (str, os.PathLike)) and os.path.isfile(weights_backbone):
        # a local ImageNet state dict with torchvision's ResNet names (an "fc.*" head is ignored)
        try:
            sd = torch.load(weights_backbone, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{weights_backbone}: not a readable state dict ({type(e).__name__}: {e})") from e
        model.backbone.load_torchvision_weights(sd.get("state_dict", sd) if isinstance(sd, dict) else sd)
    elif weights_backbone is not None:
        if not tv_name:
            raise ValueError(f"torchvision publishes no ImageNet weights for {arch}'s backbone; load your own with "
                             "model.backbone.load_torchvision_weights(state_dict)")
        if isinstance(weights_backbone, str):
            weights_backbone = get_weight(weights_backbone if "." in weights_backbone else f"{tv_name.replace('resnet', 'ResNet')}_Weights.{weights_backbone}")
        model.backbone.load_torchvision_weights(weights_backbone.get_state_dict(progress=True))
    if weights is not None:
        from ..engine.checkpoint import load_weights_into

        load_weights_into(model, weights)
    return model


def gfl_resnet18_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFL with a ResNet-18 FPN backbone (``fpn_channels``/``head_channels`` may be narrowed, e.g. 64)."""
    return build_model("gfl_resnet18_fpn", num_classes=num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs)


def gfl_resnet50_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFL R-50-FPN, the paper's main model (40.2 AP on COCO val with the 1x schedule)."""
    return build_model("gfl_resnet50_fpn", num_classes=num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs)


def gfl_resnet101_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFL R-101-FPN."""
    return build_model("gfl_resnet101_fpn", num_classes=num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs)


def gfl_resnext101_32x4d_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFL X-101-32x4d-FPN."""
    return build_model("gfl_resnext101_32x4d_fpn", num_classes=num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs)
