"""mmdetection GFL checkpoints (``configs/gfl/*``) and GFocalV2's (GFLV2, mmdetection 2.x names) without
mmdetection: the architecture (ResNet depth, ResNeXt groups and width, FPN and head widths, number of tower convs,
classes, ``reg_max``, GFLV2's DGQP) is read off the tensors and parameter names are mapped to gfldet's (and back). Loaded objects only; files: :mod:`.io` (``from_mmdet``).
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

import torch
from torch import Tensor

from ..errors import GfldetError
from .config import ModelConfig
from .backbone import RESNET_SPECS
from .detector import GFL

__all__ = ["model_from_mmdet", "mmdet_config_from_state_dict", "convert_mmdet_state_dict", "to_mmdet_state_dict",
           "split_mmdet_checkpoint", "mmdet_state_dict", "drop_background_column", "class_names_of"]

log = logging.getLogger(__name__)

_RENAMES = [
    (re.compile(r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)$"), r"neck.\1.\2.\3"),
    (re.compile(r"^bbox_head\.(cls_convs|reg_convs)\.(\d+)\.(conv|gn)\.(weight|bias)$"), r"head.\1.\2.\3.\4"),
    (re.compile(r"^bbox_head\.(gfl_cls|gfl_reg)\.(weight|bias)$"), r"head.\1.\2"),
    (re.compile(r"^bbox_head\.scales\.(\d+)\.scale$"), r"head.scales.\1.scale"),
    (re.compile(r"^bbox_head\.reg_conf\.([02])\.(weight|bias)$"), r"head.gfl_quality.\1.\2"),  # GFLV2's DGQP
    (re.compile(r"^(backbone\.(?:conv1|bn1|layer[1-4])\..+)$"), r"\1"),
]


def split_mmdet_checkpoint(obj: Any, path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict and ``meta`` of a loaded mmdetection file: ``{"state_dict": ..., "meta": ...}`` or a bare
    state dict (the rule both ``gfldet convert`` and fine-tuning with ``model.init`` follow)."""
    if not isinstance(obj, dict):
        raise GfldetError(f"{path}: expected a dict with a 'state_dict', got {type(obj).__name__}")
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
    """``stage_with_dcn``, ``deform_groups`` and ``dcn_modulated`` of a ResNet with mmcv's deformable convolution
    as conv2 in every bottleneck of some stages: ``ModulatedDeformConv2dPack`` (DCNv2, 27 offset-and-mask channels
    per deform group) or ``DeformConv2dPack`` (DCNv1, 18 offset channels); anything else is refused. A count that
    both divide (54, 108, ...) is read as DCNv2."""
    keys = sorted(k for k in sd if ".conv_offset." in k)
    rx = re.compile(r"^backbone\.layer([1-4])\.(\d+)\.conv2\.conv_offset\.(weight|bias)$")
    odd = [k for k in keys if not rx.match(k)]
    if odd:
        raise GfldetError(f"deformable convolutions outside the ResNet bottlenecks' conv2 are not supported: {odd[:4]}")
    stages, kinds = [False] * 4, set()
    for i in range(1, 5):
        blocks = _count(sd, rf"^backbone\.layer{i}\.(\d+)\.")
        with_dcn = [b for b in range(blocks) if f"backbone.layer{i}.{b}.conv2.conv_offset.weight" in sd]
        if with_dcn and len(with_dcn) != blocks:
            raise GfldetError(f"layer{i} has deformable convolutions in blocks {with_dcn} of {blocks}: gfldet supports "
                              "DCN in every block of a stage (stage_with_dcn) only")
        for b in with_dcn:
            key = f"backbone.layer{i}.{b}.conv2.conv_offset.weight"
            out = int(sd[key].shape[0])
            if out % 27 and out % 18:
                raise GfldetError(f"{key} has {out} outputs: neither DCNv2 (27 per deform group: offsets and mask) nor "
                                  "DCNv1 (18 per deform group: offsets)")
            if f"backbone.layer{i}.{b}.conv2.conv_offset.bias" not in sd:
                raise GfldetError(f"{key} has no bias: not mmcv's ModulatedDeformConv2dPack / DeformConv2dPack")
            kinds.add((out // 27, True) if out % 27 == 0 else (out // 18, False))
        stages[i - 1] = bool(with_dcn)
    if len(kinds) > 1:
        raise GfldetError(f"the deformable convolutions differ in deform_groups / kind {sorted(kinds)}; one is supported")
    groups, modulated = kinds.pop() if kinds else (1, True)
    return {"stage_with_dcn": tuple(stages), "deform_groups": groups, "dcn_modulated": modulated}


def mmdet_config_from_state_dict(sd: dict[str, Tensor], **overrides: Any) -> ModelConfig:
    """Infer a :class:`ModelConfig` from an mmdetection GFL state dict; ``overrides`` set other fields."""
    sd = _strip_prefix(sd)
    required = ["backbone.conv1.weight", "neck.lateral_convs.0.conv.weight", "bbox_head.gfl_cls.weight", "bbox_head.gfl_reg.weight"]
    missing = [k for k in required if k not in sd]
    if missing:
        raise GfldetError(f"not an mmdetection GFL (ResNet-FPN) state dict: missing {missing}")
    dcn = _dcn_from_state_dict(sd)
    blocks = [_count(sd, rf"^backbone\.layer{i}\.(\d+)\.") for i in range(1, 5)]
    bottleneck = "backbone.layer1.0.conv3.weight" in sd
    depth = next(
        (d for d, (blk, layers) in RESNET_SPECS.items() if layers == blocks and (blk.expansion == 4) == bottleneck), None
    )
    if depth is None:
        raise GfldetError(f"unrecognised ResNet: blocks per stage {blocks}, bottleneck={bottleneck}")
    base_channels = int(sd["backbone.conv1.weight"].shape[0])  # stem width (mmdetection ResNet base_channels)
    # layer1's output is base_channels * expansion wide; a stem of another width (mmdetection's stem_channels)
    # is not supported
    l1_out = int(sd["backbone.layer1.0.conv3.weight" if bottleneck else "backbone.layer1.0.conv2.weight"].shape[0])
    if l1_out != base_channels * (4 if bottleneck else 1):
        raise GfldetError(f"the stem has {base_channels} channels but layer1 outputs {l1_out}: stem_channels different "
                          "from base_channels are not supported")
    groups, width_per_group = 1, 64
    if bottleneck:
        w = sd["backbone.layer1.0.conv2.weight"]  # (width, width / groups, 3, 3), width = groups * per_group
        groups = int(w.shape[0] // w.shape[1])
        if groups > 1:  # ResNeXt: width = groups * width_per_group at the standard base width
            if base_channels != 64:
                raise GfldetError(f"a ResNeXt (groups={groups}) with base_channels={base_channels} is not supported")
            width_per_group = int(w.shape[0] // groups)
        else:  # a plain bottleneck: width = planes * width_per_group / 64 with planes = base_channels
            if (w.shape[0] * 64) % base_channels:
                raise GfldetError(f"layer1 width {w.shape[0]} does not fit base_channels={base_channels}")
            width_per_group = int(w.shape[0] * 64 // base_channels)
    c3 = base_channels * 2 * (4 if bottleneck else 1)
    lat_in = int(sd["neck.lateral_convs.0.conv.weight"].shape[1])
    if lat_in != c3 or _count(sd, r"^neck\.lateral_convs\.(\d+)\.") != 3:
        raise GfldetError(f"FPN must start at C3 with 3 lateral convs (start_level=1); lateral 0 takes {lat_in} channels, C3 has {c3}")
    num_outs = _count(sd, r"^neck\.fpn_convs\.(\d+)\.")
    reg_out = int(sd["bbox_head.gfl_reg.weight"].shape[0])
    if reg_out % 4:
        raise GfldetError(f"gfl_reg has {reg_out} outputs, not a multiple of 4")
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
    if "bbox_head.reg_conf.0.weight" in sd:
        kw.update(_gflv2_fields(sd, overrides))
    kw.update(overrides)
    return ModelConfig(**kw)


def _gflv2_fields(sd: dict[str, Tensor], overrides: dict[str, Any]) -> dict[str, Any]:
    """GFLV2 (GFocalV2's ``reg_conf``) settings read off the tensors: ``reg_conf.0`` is ``(reg_channels,
    4 * (reg_topk + add_mean), 1, 1)``. The statistics count ``reg_topk + add_mean`` cannot tell the two apart:
    ``add_mean`` is taken as true (every official config), unless ``overrides`` say otherwise."""
    w0, w2 = sd["bbox_head.reg_conf.0.weight"], sd.get("bbox_head.reg_conf.2.weight")
    if w0.dim() != 4 or w0.shape[1] % 4 or w2 is None or tuple(w2.shape[:2]) != (1, w0.shape[0]):
        raise GfldetError(f"bbox_head.reg_conf (GFLv2's quality predictor) has shapes {tuple(w0.shape)} / "
                          f"{None if w2 is None else tuple(w2.shape)}; expected GFocalV2's Conv1x1(4 * (topk + mean) -> "
                          "channels), ReLU, Conv1x1(channels -> 1)")
    add_mean = bool(overrides.get("add_mean", True))
    return dict(quality="dgqp", reg_channels=int(w0.shape[0]), add_mean=add_mean,
                reg_topk=int(w0.shape[1]) // 4 - int(add_mean))


def class_names_of(meta: dict[str, Any]) -> list[str] | None:
    """The class names an mmdetection checkpoint's ``meta`` records (2.x ``CLASSES``, 3.x ``dataset_meta``)."""
    names = meta.get("CLASSES") or (meta.get("dataset_meta") or {}).get("classes")
    return list(names) if names is not None else None


def drop_background_column(sd: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Tensor]:
    """GFocalV2 trains with mmdetection 2.x's ``use_sigmoid=False``, which gives ``gfl_cls`` ``num_classes + 1``
    outputs: the last is a background column, trained towards 0 and dropped at test time. gfldet's GFLV2 has
    ``num_classes`` outputs, so that column is removed here. Which files have it: a GFLV2 state dict (``reg_conf``)
    whose ``meta`` names one class fewer than ``gfl_cls`` has outputs; without class names in the meta, one with
    81 outputs (the official COCO checkpoints). Anything else is returned as it is."""
    w = sd.get("bbox_head.gfl_cls.weight")
    if w is None or "bbox_head.reg_conf.0.weight" not in sd:
        return sd
    out_ch, names = int(w.shape[0]), class_names_of(meta)
    if not (len(names) == out_ch - 1 if names is not None else out_ch == 81):
        return sd
    log.info("GFocalV2 checkpoint: dropping gfl_cls's background column (%d outputs for %d classes)", out_ch, out_ch - 1)
    out = dict(sd)
    out["bbox_head.gfl_cls.weight"] = w[:-1]
    if "bbox_head.gfl_cls.bias" in sd:
        out["bbox_head.gfl_cls.bias"] = sd["bbox_head.gfl_cls.bias"][:-1]
    return out


def mmdet_state_dict(obj: Any, path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict (mmdetection names, without a ``module.`` prefix or GFocalV2's background column) and the
    ``meta`` of a loaded mmdetection file: what both loading a model and fine-tuning from the file read."""
    sd, meta = split_mmdet_checkpoint(obj, path)
    sd = _strip_prefix(sd)
    return drop_background_column(sd, meta), meta


def convert_mmdet_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an mmdetection GFL state dict to gfldet's names (values upcast to float32)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in _strip_prefix(sd).items():
        if key == "bbox_head.integral.project":  # a constant [0, 1, ..., n]; gfldet builds it
            if not torch.equal(value.float(), torch.arange(value.numel(), dtype=torch.float32)):
                raise GfldetError(f"bbox_head.integral.project is not [0, 1, ..., n]: {value.tolist()[:6]} ...")
            continue
        for rx, repl in _RENAMES:
            if rx.match(key):
                new = rx.sub(repl, key)
                out[new] = value.float() if value.is_floating_point() else value
                break
        else:
            unknown.append(key)
    if unknown:
        raise GfldetError(f"mmdetection keys gfldet does not know: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return out


_INVERSE = [
    (re.compile(r"^head\.gfl_quality\.([02])\.(weight|bias)$"), r"bbox_head.reg_conf.\1.\2"),  # GFLV2's DGQP
    (re.compile(r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.(weight|bias)$"), r"neck.\1.\2.conv.\3"),
    (re.compile(r"^head\.(.+)$"), r"bbox_head.\1"),
    (re.compile(r"^(backbone\..+)$"), r"\1"),
]


def to_mmdet_state_dict(model: GFL) -> dict[str, Tensor]:
    """gfldet -> mmdetection parameter names (the inverse of :func:`convert_mmdet_state_dict`), e.g. to run
    gfldet-trained weights in mmdetection with the matching config. A GFLV2 model's ``gfl_cls`` keeps its
    ``num_classes`` outputs (mmdetection 3.x's sigmoid GFL head with the DGQP forward, as the parity fixture);
    GFocalV2's own mmdetection-2.x head expects a background column more."""
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        for rx, repl in _INVERSE:
            if rx.match(key):
                out[rx.sub(repl, key)] = value.detach().clone()
                break
        else:
            raise GfldetError(f"no mmdetection name for {key}")
    out["bbox_head.integral.project"] = torch.arange(model.config.reg_max + 1, dtype=torch.float32)
    return out


def model_from_mmdet(obj: Any, path: str | os.PathLike = "checkpoint", **overrides: Any) -> GFL:
    """A ready :class:`GFL` (in eval mode) from a loaded mmdetection GFL checkpoint (``{"state_dict": ...,
    "meta": ...}`` or a bare state dict; ``path`` names it in errors). ``overrides``: other :class:`ModelConfig`
    fields (:func:`gfldet.from_mmdet`, which reads files, documents them)."""
    sd, meta = mmdet_state_dict(obj, path)
    cfg = mmdet_config_from_state_dict(sd, **overrides)
    names = class_names_of(meta)
    names = names if names is not None and len(names) == cfg.num_classes else None
    model = GFL(cfg, class_names=names)
    converted = convert_mmdet_state_dict(sd)
    try:
        missing, unexpected = model.load_state_dict(converted, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise GfldetError(f"checkpoint does not fit the inferred model: {' '.join(str(e).split())[:400]}") from e
    if missing or unexpected:
        raise GfldetError(f"checkpoint does not fit the inferred model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    log.info("loaded mmdetection GFL: ResNet-%d (groups %d), %d classes, reg_max %d", cfg.depth, cfg.groups, cfg.num_classes, cfg.reg_max)
    return model.eval()
