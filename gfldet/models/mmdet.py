"""mmdetection GFL checkpoints (``configs/gfl/*``) without mmdetection: the architecture (ResNet depth, ResNeXt
groups and width, FPN and head widths, number of tower convs, classes and ``reg_max``) is read off the tensors and
parameter names are mapped to gfldet's (and back). Loaded objects only; files: :mod:`.io` (``from_mmdet``).
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

import torch
from torch import Tensor

from .config import ModelConfig
from .backbone import RESNET_SPECS
from .detector import GFL

__all__ = ["model_from_mmdet", "mmdet_config_from_state_dict", "convert_mmdet_state_dict", "to_mmdet_state_dict",
           "split_mmdet_checkpoint"]

log = logging.getLogger(__name__)

_RENAMES = [
    (re.compile(r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)$"), r"neck.\1.\2.\3"),
    (re.compile(r"^bbox_head\.(cls_convs|reg_convs)\.(\d+)\.(conv|gn)\.(weight|bias)$"), r"head.\1.\2.\3.\4"),
    (re.compile(r"^bbox_head\.(gfl_cls|gfl_reg)\.(weight|bias)$"), r"head.\1.\2"),
    (re.compile(r"^bbox_head\.scales\.(\d+)\.scale$"), r"head.scales.\1.scale"),
    (re.compile(r"^(backbone\.(?:conv1|bn1|layer[1-4])\..+)$"), r"\1"),
]


def split_mmdet_checkpoint(obj: Any, path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict and ``meta`` of a loaded mmdetection file: ``{"state_dict": ..., "meta": ...}`` or a bare
    state dict (the rule both ``gfldet convert`` and fine-tuning with ``model.init`` follow)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict with a 'state_dict', got {type(obj).__name__}")
    sd = obj.get("state_dict", obj)
    meta = obj.get("meta", {}) if "state_dict" in obj else {}
    return sd, meta if isinstance(meta, dict) else {}


def _strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _count(sd: dict[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def _dcn_from_state_dict(sd: dict[str, Tensor]) -> dict[str, Any]:
    """``stage_with_dcn`` and ``deform_groups`` of a ResNet with mmcv's ``ModulatedDeformConv2dPack`` as conv2 (3 x 9
    offset-and-mask channels per deform group) in every bottleneck of some stages; anything else is refused."""
    keys = sorted(k for k in sd if ".conv_offset." in k)
    rx = re.compile(r"^backbone\.layer([1-4])\.(\d+)\.conv2\.conv_offset\.(weight|bias)$")
    odd = [k for k in keys if not rx.match(k)]
    if odd:
        raise ValueError(f"deformable convolutions outside the ResNet bottlenecks' conv2 are not supported: {odd[:4]}")
    stages, groups = [False] * 4, set()
    for i in range(1, 5):
        blocks = _count(sd, rf"^backbone\.layer{i}\.(\d+)\.")
        with_dcn = [b for b in range(blocks) if f"backbone.layer{i}.{b}.conv2.conv_offset.weight" in sd]
        if with_dcn and len(with_dcn) != blocks:
            raise ValueError(f"layer{i} has deformable convolutions in blocks {with_dcn} of {blocks}: gfldet supports "
                             "DCN in every block of a stage (stage_with_dcn) only")
        for b in with_dcn:
            key = f"backbone.layer{i}.{b}.conv2.conv_offset.weight"
            out = int(sd[key].shape[0])
            if out % 27:  # DCNv1 (DeformConv2dPack) has 18 offsets per group and no mask
                kind = " (18 per group: DCNv1's DeformConv2dPack, without a mask)" if out % 18 == 0 else ""
                raise ValueError(f"{key} has {out} outputs{kind}: gfldet supports modulated deformable convolutions "
                                 "(DCNv2, 27 per deform group) only")
            if f"backbone.layer{i}.{b}.conv2.conv_offset.bias" not in sd:
                raise ValueError(f"{key} has no bias: not mmcv's ModulatedDeformConv2dPack")
            groups.add(out // 27)
        stages[i - 1] = bool(with_dcn)
    if len(groups) > 1:
        raise ValueError(f"the deformable convolutions have different deform_groups {sorted(groups)}; one is supported")
    return {"stage_with_dcn": tuple(stages), "deform_groups": groups.pop() if groups else 1}


def mmdet_config_from_state_dict(sd: dict[str, Tensor], **overrides: Any) -> ModelConfig:
    """Infer a :class:`ModelConfig` from an mmdetection GFL state dict; ``overrides`` set other fields."""
    sd = _strip_prefix(sd)
    required = ["backbone.conv1.weight", "neck.lateral_convs.0.conv.weight", "bbox_head.gfl_cls.weight", "bbox_head.gfl_reg.weight"]
    missing = [k for k in required if k not in sd]
    if missing:
        raise ValueError(f"not an mmdetection GFL (ResNet-FPN) state dict: missing {missing}")
    if any(k.startswith("bbox_head.reg_conf") for k in sd):
        raise ValueError("this is a GFLv2 checkpoint (distribution-guided quality predictor 'reg_conf'); gfldet loads GFL (v1) only")
    dcn = _dcn_from_state_dict(sd)
    blocks = [_count(sd, rf"^backbone\.layer{i}\.(\d+)\.") for i in range(1, 5)]
    bottleneck = "backbone.layer1.0.conv3.weight" in sd
    depth = next(
        (d for d, (blk, layers) in RESNET_SPECS.items() if layers == blocks and (blk.expansion == 4) == bottleneck), None
    )
    if depth is None:
        raise ValueError(f"unrecognised ResNet: blocks per stage {blocks}, bottleneck={bottleneck}")
    base_channels = int(sd["backbone.conv1.weight"].shape[0])  # stem width (mmdetection ResNet base_channels)
    # layer1's output is base_channels * expansion wide; a stem of another width (mmdetection's stem_channels)
    # is not supported
    l1_out = int(sd["backbone.layer1.0.conv3.weight" if bottleneck else "backbone.layer1.0.conv2.weight"].shape[0])
    if l1_out != base_channels * (4 if bottleneck else 1):
        raise ValueError(f"the stem has {base_channels} channels but layer1 outputs {l1_out}: stem_channels different "
                         "from base_channels are not supported")
    groups, width_per_group = 1, 64
    if bottleneck:
        w = sd["backbone.layer1.0.conv2.weight"]  # (width, width / groups, 3, 3), width = groups * per_group
        groups = int(w.shape[0] // w.shape[1])
        if groups > 1:  # ResNeXt: width = groups * width_per_group at the standard base width
            if base_channels != 64:
                raise ValueError(f"a ResNeXt (groups={groups}) with base_channels={base_channels} is not supported")
            width_per_group = int(w.shape[0] // groups)
        else:  # a plain bottleneck: width = planes * width_per_group / 64 with planes = base_channels
            if (w.shape[0] * 64) % base_channels:
                raise ValueError(f"layer1 width {w.shape[0]} does not fit base_channels={base_channels}")
            width_per_group = int(w.shape[0] * 64 // base_channels)
    c3 = base_channels * 2 * (4 if bottleneck else 1)
    lat_in = int(sd["neck.lateral_convs.0.conv.weight"].shape[1])
    if lat_in != c3 or _count(sd, r"^neck\.lateral_convs\.(\d+)\.") != 3:
        raise ValueError(f"FPN must start at C3 with 3 lateral convs (start_level=1); lateral 0 takes {lat_in} channels, C3 has {c3}")
    num_outs = _count(sd, r"^neck\.fpn_convs\.(\d+)\.")
    reg_out = int(sd["bbox_head.gfl_reg.weight"].shape[0])
    if reg_out % 4:
        raise ValueError(f"gfl_reg has {reg_out} outputs, not a multiple of 4")
    kw: dict[str, Any] = dict(
        depth=depth,
        groups=groups,
        width_per_group=width_per_group,
        base_channels=base_channels,
        fpn_channels=int(sd["neck.lateral_convs.0.conv.weight"].shape[0]),
        head_channels=int(sd["bbox_head.gfl_cls.weight"].shape[1]),
        stacked_convs=_count(sd, r"^bbox_head\.cls_convs\.(\d+)\."),
        num_classes=int(sd["bbox_head.gfl_cls.weight"].shape[0]),
        reg_max=reg_out // 4 - 1,
        strides=tuple(8 * 2**i for i in range(num_outs)),
        **dcn,
    )
    kw.update(overrides)
    return ModelConfig(**kw)


def convert_mmdet_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an mmdetection GFL state dict to gfldet's names (values upcast to float32)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in _strip_prefix(sd).items():
        if key == "bbox_head.integral.project":  # a constant [0, 1, ..., n]; gfldet builds it
            if not torch.equal(value.float(), torch.arange(value.numel(), dtype=torch.float32)):
                raise ValueError(f"bbox_head.integral.project is not [0, 1, ..., n]: {value.tolist()[:6]} ...")
            continue
        for rx, repl in _RENAMES:
            if rx.match(key):
                new = rx.sub(repl, key)
                out[new] = value.float() if value.is_floating_point() else value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"mmdetection keys gfldet does not know: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return out


_INVERSE = [
    (re.compile(r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.(weight|bias)$"), r"neck.\1.\2.conv.\3"),
    (re.compile(r"^head\.(.+)$"), r"bbox_head.\1"),
    (re.compile(r"^(backbone\..+)$"), r"\1"),
]


def to_mmdet_state_dict(model: GFL) -> dict[str, Tensor]:
    """gfldet -> mmdetection parameter names (the inverse of :func:`convert_mmdet_state_dict`), e.g. to run
    gfldet-trained weights in mmdetection with the matching config."""
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        for rx, repl in _INVERSE:
            if rx.match(key):
                out[rx.sub(repl, key)] = value.detach().clone()
                break
        else:
            raise ValueError(f"no mmdetection name for {key}")
    out["bbox_head.integral.project"] = torch.arange(model.config.reg_max + 1, dtype=torch.float32)
    return out


def model_from_mmdet(obj: Any, path: str | os.PathLike = "checkpoint", **overrides: Any) -> GFL:
    """A ready :class:`GFL` (in eval mode) from a loaded mmdetection GFL checkpoint (``{"state_dict": ...,
    "meta": ...}`` or a bare state dict; ``path`` names it in errors). ``overrides``: other :class:`ModelConfig`
    fields (:func:`gfldet.from_mmdet`, which reads files, documents them)."""
    sd, meta = split_mmdet_checkpoint(obj, path)
    cfg = mmdet_config_from_state_dict(sd, **overrides)
    names = meta.get("CLASSES") or (meta.get("dataset_meta") or {}).get("classes")
    names = list(names) if names is not None and len(names) == cfg.num_classes else None
    model = GFL(cfg, class_names=names)
    converted = convert_mmdet_state_dict(sd)
    try:
        missing, unexpected = model.load_state_dict(converted, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"checkpoint does not fit the inferred model: {' '.join(str(e).split())[:400]}") from e
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the inferred model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    log.info("loaded mmdetection GFL: ResNet-%d (groups %d), %d classes, reg_max %d", cfg.depth, cfg.groups, cfg.num_classes, cfg.reg_max)
    return model.eval()
