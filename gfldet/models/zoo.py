"""Builders: ``gfl_resnet50_fpn(num_classes=80, weights=None, weights_backbone=None, **config)``.

Nothing is downloaded unless ``weights_backbone`` names torchvision ImageNet weights (torchvision fetches
them then); it may also be the path of a local state dict with torchvision's ResNet parameter names. ``weights`` is a path to a gfldet or mmdetection checkpoint of the same architecture.

As torchvision's detection builders do, the backbone's training regime follows from the weights: with
``weights_backbone`` or ``weights`` the reference's frozen stem + ``layer1`` and frozen BatchNorm statistics
(``frozen_stages=1, norm_eval=True``); without, every stage trainable with ordinary BatchNorm (``0, False``).
Passing ``frozen_stages`` / ``norm_eval`` explicitly overrides this (:data:`gfldet.models.config.BACKBONE_REGIMES`).
"""
from __future__ import annotations

import http.client
import logging
import os
import urllib.parse
from typing import Any

import torch

from ..errors import GfldetError
from ..files import hash_prefix, sha256_file
from .config import REGIME_FIELDS, BackboneRegime, ConfigError, FieldError, ModelConfig, backbone_regime
from .detector import GFL
from .io import load_weights_into
from .nanodet import NANODET_SPECS, NanoDet, build_nanodet
from .tv_backbone import TV_BACKBONES

log = logging.getLogger(__name__)

__all__ = ["gfl_resnet18_fpn", "gfl_resnet50_fpn", "gfl_resnet101_fpn", "gfl_resnext101_32x4d_fpn", "gflv2_resnet50_fpn",
           "gflv2_resnet101_fpn", "gflv2_resnext101_32x4d_fpn", "gfl_mobilenet_v2_fpn", "gfl_mobilenet_v3_large_fpn",
           "gfl_shufflenet_v2_x1_0_fpn", "gfl_efficientnet_b0_fpn", "build_model",
           "build_from_config", "arch_config", "arch_regime", "check_arch", "check_imagenet_width", "backbone_state_dict",
           "torchvision_weights", "imagenet_cache_path", "looks_like_path", "arch_defaults", "ARCHS", "ARCH_FIELDS", "ARCH_DEFAULT_FIELDS",
           "LIGHT_HEAD", "NANODET_ARCHS", "is_nanodet", "imagenet_name", "build_nanodet_arch"]

# builder name -> architecture fields and torchvision's name of the matching ImageNet classifier
ARCHS: dict[str, tuple[dict[str, Any], str]] = {
    "gfl_resnet18_fpn": (dict(backbone="resnet", depth=18), "resnet18"),
    "gfl_resnet50_fpn": (dict(backbone="resnet", depth=50), "resnet50"),
    "gfl_resnet101_fpn": (dict(backbone="resnet", depth=101), "resnet101"),
    "gfl_resnext101_32x4d_fpn": (dict(backbone="resnet", depth=101, groups=32, width_per_group=4), ""),
    **{f"gfl_{name}_fpn": (dict(backbone=name), name) for name in TV_BACKBONES},
}

# NanoDet-Plus, trainable (gfldet.models.nanodet): arch -> (the NanoDet spec, torchvision's ImageNet ShuffleNetV2).
# Its input size is part of the name (the network input is that square); the GFL model section does not apply.
NANODET_ARCHS: dict[str, tuple[str, str]] = {
    "nanodet_plus_m_320": ("nanodet-plus-m_320", "shufflenet_v2_x1_0"),
    "nanodet_plus_m_416": ("nanodet-plus-m_416", "shufflenet_v2_x1_0"),
    "nanodet_plus_m_1_5x_320": ("nanodet-plus-m-1.5x_320", "shufflenet_v2_x1_5"),
    "nanodet_plus_m_1_5x_416": ("nanodet-plus-m-1.5x_416", "shufflenet_v2_x1_5"),
}
assert all(spec in NANODET_SPECS for spec, _ in NANODET_ARCHS.values())


def is_nanodet(arch: str) -> bool:
    """``arch`` names a NanoDet-Plus architecture (:data:`NANODET_ARCHS`) rather than a GFL builder."""
    return arch in NANODET_ARCHS


def imagenet_name(arch: str) -> str:
    """torchvision's name of the ImageNet classifier whose weights fit ``arch``'s backbone ("" where none does)."""
    check_arch(arch)
    return NANODET_ARCHS[arch][1] if is_nanodet(arch) else ARCHS[arch][1]


def build_nanodet_arch(arch: str, *, num_classes: int, class_names: list[str] | None = None,
                       weights_backbone: Any = None, training: bool = True) -> NanoDet:
    """The NanoDet-Plus of ``arch`` for ``num_classes`` (the official initialisation; ``training``: with the
    auxiliary branch), with torchvision's ImageNet ShuffleNetV2 weights ``weights_backbone`` when given (the
    official configs train from them)."""
    check_arch(arch)
    model = build_nanodet(NANODET_ARCHS[arch][0], num_classes=num_classes, training=training, class_names=class_names)
    if weights_backbone is not None:
        model.backbone.load_torchvision_weights(backbone_state_dict(arch, weights_backbone))
    return model


# the ModelConfig fields a builder fixes (the run config has no keys for them: model.arch chooses them)
ARCH_FIELDS = tuple(sorted(set().union(*(fixed for fixed, _ in ARCHS.values()))))

# Neck and head sizes that follow from the backbone when not set (None in a run config). GFL's 256-channel FPN and
# 4-conv towers are sized for ResNet-50: on a 2-3 M parameter MobileNet they would be over 3x the backbone's
# parameters and about 20x its work at 320 px (docs/light.md: 23.5 against 1.2 GFLOPs). The light backbones get a 96-channel FPN and two depthwise-separable
# tower layers per branch (NanoDet's head widths are 96-128).
LIGHT_HEAD: dict[str, Any] = dict(fpn_channels=96, head_channels=96, stacked_convs=2, head_conv="dwsep")
ARCH_DEFAULT_FIELDS = tuple(LIGHT_HEAD)


def arch_defaults(arch: str) -> dict[str, Any]:
    """The neck/head settings of ``arch`` that apply where none is given: ModelConfig's (GFL's) for ResNets,
    :data:`LIGHT_HEAD` for the lightweight torchvision backbones."""
    check_arch(arch)
    if is_nanodet(arch):
        return {}  # the GFL neck and head settings do not apply
    if ARCHS[arch][0]["backbone"] == "resnet":
        return {k: ModelConfig.__dataclass_fields__[k].default for k in ARCH_DEFAULT_FIELDS}
    return dict(LIGHT_HEAD)


def check_arch(arch: str) -> None:
    """``arch`` names a builder; a ConfigError naming the value and the choices otherwise."""
    if arch not in ARCHS and arch not in NANODET_ARCHS:
        hint = (f" (GFLV2 is GFL with model.quality: dgqp: model.arch: {arch.replace('gflv2_', 'gfl_')})"
                if arch.replace("gflv2_", "gfl_") in ARCHS else "")
        raise ConfigError(f"model.arch={arch!r} is not a known architecture; choose one of: {', '.join(sorted(ARCHS) + sorted(NANODET_ARCHS))}{hint}")


def check_imagenet_width(base_channels: int) -> None:
    """ImageNet backbone weights fit the standard width only (checked before anything is downloaded)."""
    if base_channels != 64:
        raise FieldError("base_channels", base_channels,
                         "is not the standard width: ImageNet weights (model.weights_backbone) fit base_channels=64 only")


def arch_regime(arch: str, pretrained: bool) -> BackboneRegime:
    """How the backbone of builder ``arch`` trains when started from pretrained weights or from random ones (the
    backbone family decides between the ResNets' and the light backbones' pretrained regimes)."""
    check_arch(arch)
    return backbone_regime(pretrained, ARCHS[arch][0]["backbone"])


def arch_config(arch: str, *, pretrained: bool, **fields: Any) -> ModelConfig:
    """The :class:`ModelConfig` of builder ``arch`` with ``fields`` set; ``frozen_stages`` / ``norm_eval`` left
    unset (or None) come from the regime of a ``pretrained`` model or of one trained from scratch."""
    check_arch(arch)
    fixed = ARCHS[arch][0]
    clash = sorted(set(fields) & set(fixed))
    if clash:
        raise GfldetError(f"{arch} fixes {clash}; use another builder instead of overriding them")
    regime = arch_regime(arch, pretrained)
    for key in REGIME_FIELDS:
        if fields.get(key) is None:
            fields[key] = getattr(regime, key)
    for key, value in arch_defaults(arch).items():
        if fields.get(key) is None:
            fields[key] = value
    return ModelConfig(**fixed, **fields)


def build_from_config(arch: str, cfg: ModelConfig, *, weights: str | os.PathLike | None = None,
                      weights_backbone: Any = None, class_names: list[str] | None = None) -> GFL:
    """The :class:`GFL` of ``cfg`` (from :func:`arch_config`), with ``arch``'s ImageNet backbone weights
    ``weights_backbone`` and this model's checkpoint ``weights`` loaded when given."""
    if weights_backbone is not None and cfg.backbone == "resnet":
        check_imagenet_width(cfg.base_channels)
    model = GFL(cfg, class_names=class_names)
    if weights_backbone is not None:
        model.backbone.load_torchvision_weights(backbone_state_dict(arch, weights_backbone))
    if weights is not None:
        load_weights_into(model, weights, strict=True)  # the builders' weights= is this model's; fine-tuning: model.init
    return model


def build_model(arch: str, *, num_classes: int = 80, weights: str | os.PathLike | None = None, weights_backbone: Any = None,
                class_names: list[str] | None = None, **kwargs: Any) -> GFL:
    """Build a GFL detector by builder name (``model.arch`` in configs)."""
    cfg = arch_config(arch, pretrained=weights_backbone is not None or weights is not None, num_classes=num_classes, **kwargs)
    return build_from_config(arch, cfg, weights=weights, weights_backbone=weights_backbone, class_names=class_names)


def backbone_state_dict(arch: str, weights_backbone: Any) -> dict[str, torch.Tensor]:
    """The ImageNet state dict ``weights_backbone`` names for ``arch``'s backbone (torchvision's parameter names): a
    local file, or torchvision weights (a ``WeightsEnum`` member or its name, e.g. ``IMAGENET1K_V1``) from torch
    hub's cache or downloaded into it. ``gfldet train`` calls it before reading any data, so that a missing file
    or no network stops a run at once."""
    tv_name = imagenet_name(arch)
    if isinstance(weights_backbone, (str, os.PathLike)) and os.path.isfile(weights_backbone):
        # a local ImageNet state dict with torchvision's parameter names (its classifier is ignored)
        try:
            sd = torch.load(weights_backbone, map_location="cpu", weights_only=True)
        except Exception as e:
            raise GfldetError(f"{weights_backbone}: not a readable state dict ({type(e).__name__}: {e})") from e
        return sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if isinstance(weights_backbone, (str, os.PathLike)) and looks_like_path(os.fspath(weights_backbone)):
        raise FileNotFoundError(f"backbone weights file not found: {weights_backbone} (model.weights_backbone; a state dict "
                                "with torchvision's parameter names, or a torchvision weights name such as IMAGENET1K_V1)")
    if not tv_name:
        raise GfldetError(f"torchvision publishes no ImageNet weights for {arch}'s backbone; load your own with "
                          "model.backbone.load_torchvision_weights(state_dict)")
    if isinstance(weights_backbone, str):
        weights_backbone = torchvision_weights(arch, weights_backbone, tv_name)
    return imagenet_state_dict(weights_backbone)


def looks_like_path(name: str) -> bool:
    """A weights setting that names a file (rather than torchvision weights such as ``IMAGENET1K_V1``)."""
    return os.sep in name or "/" in name or name.endswith((".pth", ".pt", ".bin", ".safetensors"))


def torchvision_weights(arch: str, name: str, tv_name: str) -> Any:
    """The torchvision ImageNet weights (a ``WeightsEnum`` member, looked up, not fetched) that ``name`` (e.g.
    ``IMAGENET1K_V1`` or ``ResNet50_Weights.IMAGENET1K_V1``) names for ``arch``'s backbone, torchvision's
    ``tv_name``; a ConfigError naming the value and the choices otherwise. The one rule for preflight and the
    builders."""
    key = f"model.weights_backbone={name!r}"
    if not tv_name:
        raise ConfigError(f"{key}: torchvision publishes no ImageNet weights for {arch}'s backbone; set it to the path "
                          "of a state dict with torchvision's parameter names, or to null to train from scratch")
    from torchvision.models import get_model_weights, get_weight

    enum_name = get_model_weights(tv_name).__name__  # e.g. ResNet50_Weights, MobileNet_V2_Weights
    choices = ", ".join(w.name for w in get_model_weights(tv_name))
    try:
        weights = get_weight(name if "." in name else f"{enum_name}.{name}")
    except (KeyError, ValueError, AttributeError):
        raise ConfigError(f"{key} is not a torchvision ImageNet weights name for {arch} ({tv_name}); choose one of: "
                          f"{choices} (or a file path, or null to train from scratch)") from None
    if type(weights).__name__ != enum_name:
        raise ConfigError(f"{key} are weights of another network, not of {arch}'s backbone ({tv_name}); use one of "
                          f"{choices} (or {enum_name}.<name>)")
    return weights


def imagenet_cache_path(weights: Any) -> str:
    """Where torch hub keeps torchvision ImageNet ``weights`` (a ``WeightsEnum`` member): its cache folder
    (``$TORCH_HOME/hub/checkpoints``) and torchvision's file name."""
    fname = os.path.basename(urllib.parse.urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", fname)


def imagenet_state_dict(weights: Any, *, progress: bool = True) -> dict[str, torch.Tensor]:
    """The state dict of torchvision ImageNet ``weights`` (a ``WeightsEnum`` member): from torch hub's cache, or
    downloaded into it (the file torchvision itself would fetch, under the same name). The file's SHA-256 must
    start with the hex digits that end its name (torch hub's ``check_hash`` rule), for a download and for a file
    found in the cache alike. Where the file can be neither fetched nor read, the error names it, where to place it
    and the alternatives; it never falls back to a random backbone."""
    cached = imagenet_cache_path(weights)
    folder, fname = os.path.split(cached)
    prefix = hash_prefix(fname)
    alternatives = ("or set model.weights_backbone to the path of a local state dict with torchvision's parameter names, "
                    "or to null to train from scratch")
    if not os.path.isfile(cached):
        log.info("downloading the ImageNet backbone weights %s from %s to %s", weights, weights.url, cached)
        try:
            os.makedirs(folder, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, cached, hash_prefix=prefix, progress=progress)
        except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, an unwritable folder
            raise GfldetError(f"cannot fetch the ImageNet backbone weights {weights} from {weights.url} ({type(e).__name__}: "
                              f"{e}). Download {fname} on a machine with network access and place it in {folder} (torch "
                              f"hub's cache; $TORCH_HOME moves it), {alternatives}") from e
        except RuntimeError as e:  # torch hub's "invalid hash value"; it keeps no partial file
            raise GfldetError(f"{fname} from {weights.url} failed its SHA-256 check ({e}); it was not kept. Try again "
                              f"later, or place a good copy in {folder}, {alternatives}") from e
    damaged = (f"delete it to download it again, or replace it with a good copy of {weights.url}, {alternatives}")
    if prefix and not sha256_file(cached).startswith(prefix):
        raise GfldetError(f"{cached}: the cached ImageNet backbone weights {weights} are damaged or another file (its "
                          f"SHA-256 does not start with {prefix}, as its name says it must): {damaged}")
    try:
        return torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        raise GfldetError(f"{cached}: the cached ImageNet backbone weights {weights} cannot be read "
                          f"({type(e).__name__}: {e}): {damaged}") from e


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


# GFLV2 (Li et al., CVPR 2021): the GFL detector with quality="dgqp" (the distribution-guided quality predictor;
# gfldet.models.quality.JointDGQP). In run configs: the gfl_* arch with model.quality: dgqp.
def _gflv2(arch: str, num_classes: int, weights, weights_backbone, kwargs: dict[str, Any]) -> GFL:
    if kwargs.setdefault("quality", "dgqp") != "dgqp":
        raise GfldetError(f"GFLV2 builders fix quality='dgqp', got quality={kwargs['quality']!r}; use {arch} instead")
    return build_model(arch, num_classes=num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs)


def gflv2_resnet50_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFLV2 R-50-FPN (the GFLV2 paper: 41.0 AP on COCO val with the 1x schedule, against GFL's 40.2)."""
    return _gflv2("gfl_resnet50_fpn", num_classes, weights, weights_backbone, kwargs)


def gflv2_resnet101_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFLV2 R-101-FPN."""
    return _gflv2("gfl_resnet101_fpn", num_classes, weights, weights_backbone, kwargs)


def gflv2_resnext101_32x4d_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFLV2 X-101-32x4d-FPN."""
    return _gflv2("gfl_resnext101_32x4d_fpn", num_classes, weights, weights_backbone, kwargs)


# The lightweight torchvision backbones (gfldet.models.tv_backbone), with the light neck and head (LIGHT_HEAD) unless
# fpn_channels / head_channels / stacked_convs / head_conv are given.
def gfl_mobilenet_v2_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFL on torchvision's MobileNetV2 (ImageNet: ``weights_backbone="IMAGENET1K_V1"``) with the light head."""
    return build_model("gfl_mobilenet_v2_fpn", num_classes=num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs)


def gfl_mobilenet_v3_large_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFL on torchvision's MobileNetV3-Large (ImageNet: ``IMAGENET1K_V1``) with the light head."""
    return build_model("gfl_mobilenet_v3_large_fpn", num_classes=num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs)


def gfl_shufflenet_v2_x1_0_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFL on torchvision's ShuffleNetV2 1.0x (ImageNet: ``IMAGENET1K_V1``) with the light head."""
    return build_model("gfl_shufflenet_v2_x1_0_fpn", num_classes=num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs)


def gfl_efficientnet_b0_fpn(*, num_classes: int = 80, weights=None, weights_backbone=None, **kwargs: Any) -> GFL:
    """GFL on torchvision's EfficientNet-B0 (ImageNet: ``IMAGENET1K_V1``) with the light head."""
    return build_model("gfl_efficientnet_b0_fpn", num_classes=num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs)
