"""Builders: ``gfl_resnet50_fpn(num_classes=80, weights=None, weights_backbone=None, **config)``.

Nothing is downloaded unless ``weights_backbone`` names torchvision ImageNet weights (torchvision fetches
them then); it may also be the path of a local state dict with torchvision's ResNet parameter names. ``weights`` is a path to a gfldet or mmdetection checkpoint of the same architecture.

As torchvision's detection builders do, the backbone's training regime follows from the weights: with
``weights_backbone`` or ``weights`` the reference's frozen stem + ``layer1`` and frozen BatchNorm statistics
(``frozen_stages=1, norm_eval=True``); without, every stage trainable with ordinary BatchNorm (``0, False``).
Passing ``frozen_stages`` / ``norm_eval`` explicitly overrides this (:data:`gfldet.config.REGIMES`).
"""
from __future__ import annotations

import os
import urllib.parse
from typing import Any

import torch

from ..config import ModelConfig, backbone_regime, torchvision_weights
from .detector import GFL

__all__ = ["gfl_resnet18_fpn", "gfl_resnet50_fpn", "gfl_resnet101_fpn", "gfl_resnext101_32x4d_fpn", "build_model",
           "backbone_state_dict", "ARCHS"]

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
    fixed = ARCHS[arch][0]
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise ValueError(f"{arch} fixes {clash}; use another builder instead of overriding them")
    regime = backbone_regime(weights_backbone is not None or weights is not None)
    for key in ("frozen_stages", "norm_eval"):
        if kwargs.get(key) is None:
            kwargs[key] = getattr(regime, key)
    cfg = ModelConfig(num_classes=num_classes, **fixed, **kwargs)
    if weights_backbone is not None and cfg.base_channels != 64:  # before anything is downloaded
        raise ValueError(f"ImageNet backbone weights are for the standard widths (base_channels=64), not base_channels={cfg.base_channels}")
    model = GFL(cfg, class_names=class_names)
    if weights_backbone is not None:
        model.backbone.load_torchvision_weights(backbone_state_dict(arch, weights_backbone))
    if weights is not None:
        from ..engine.checkpoint import load_weights_into

        load_weights_into(model, weights, strict=True)  # the builders' weights= is this model's; fine-tuning: model.init
    return model


def backbone_state_dict(arch: str, weights_backbone: Any) -> dict[str, torch.Tensor]:
    """The ImageNet state dict ``weights_backbone`` names for ``arch``'s backbone (torchvision's ResNet names): a
    local file, or torchvision weights (a ``WeightsEnum`` member or its name, e.g. ``IMAGENET1K_V1``) from torch
    hub's cache or downloaded into it. ``gfldet train`` calls it before reading any data, so that a missing file
    or no network stops a run at once."""
    if arch not in ARCHS:
        raise ValueError(f"unknown model.arch {arch!r}; choose from {sorted(ARCHS)}")
    tv_name = ARCHS[arch][1]
    if isinstance(weights_backbone, (str, os.PathLike)) and os.path.isfile(weights_backbone):
        # a local ImageNet state dict with torchvision's ResNet names (an "fc.*" head is ignored)
        try:
            sd = torch.load(weights_backbone, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{weights_backbone}: not a readable state dict ({type(e).__name__}: {e})") from e
        return sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if isinstance(weights_backbone, (str, os.PathLike)) and _looks_like_path(os.fspath(weights_backbone)):
        raise FileNotFoundError(f"backbone weights file not found: {weights_backbone} (model.weights_backbone; a state dict "
                                "with torchvision's ResNet names, or a torchvision weights name such as IMAGENET1K_V1)")
    if not tv_name:
        raise ValueError(f"torchvision publishes no ImageNet weights for {arch}'s backbone; load your own with "
                         "model.backbone.load_torchvision_weights(state_dict)")
    if isinstance(weights_backbone, str):
        weights_backbone = torchvision_weights(arch, weights_backbone, tv_name)
    return imagenet_state_dict(weights_backbone)


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.endswith((".pth", ".pt", ".bin", ".safetensors"))


def imagenet_state_dict(weights: Any) -> dict[str, torch.Tensor]:
    """The state dict of torchvision ImageNet ``weights`` (a ``WeightsEnum`` member): from torch hub's cache, or
    downloaded into it. Where it can be neither (offline, a damaged file), the error names the file, where to
    place it and the alternatives; it never falls back to a random backbone."""
    fname = os.path.basename(urllib.parse.urlparse(weights.url).path)
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    cached = os.path.join(folder, fname)
    alternatives = ("or set model.weights_backbone to the path of a local state dict with torchvision's ResNet names, "
                    "or to null to train from scratch")
    try:
        return weights.get_state_dict(progress=True)
    except OSError as e:  # urllib's URLError / HTTPError, socket errors, an unwritable cache folder
        raise ValueError(f"cannot fetch the ImageNet backbone weights {weights} from {weights.url} ({type(e).__name__}: {e}). "
                         f"Download {fname} on a machine with network access and place it in {folder} (torch hub's "
                         f"cache; $TORCH_HOME moves it), {alternatives}") from e
    except RuntimeError as e:
        if not os.path.isfile(cached):
            raise
        raise ValueError(f"{cached}: the cached ImageNet backbone weights {weights} cannot be read ({e}); the file is "
                         f"damaged: delete it to download it again, or replace it with a good copy of {weights.url}, "
                         f"{alternatives}") from e


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
