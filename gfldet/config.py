"""Configuration dataclasses. A YAML config is a dump of these; nothing is looked up by string type name."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["ModelConfig"]


@dataclass
class ModelConfig:
    """Everything that defines a GFL detector: architecture, training targets and losses, test settings.

    Defaults are the paper's / reference's GFL R-50-FPN 1x on COCO.
    """

    # backbone: torchvision ResNet / ResNeXt
    depth: int = 50
    groups: int = 1
    width_per_group: int = 64
    frozen_stages: int = 1  # stem + layer1 frozen, as the reference
    # neck and head
    fpn_channels: int = 256
    head_channels: int = 256
    stacked_convs: int = 4
    gn_groups: int = 32
    num_classes: int = 80
    reg_max: int = 16  # n: each edge is a distribution over the n + 1 bins 0..n (in strides)
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    octave_base_scale: float = 8.0
    # input: keep-ratio resize inside the model (None disables it), normalisation, padding
    min_size: int | None = 800
    max_size: int | None = 1333
    size_divisor: int = 32
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # training: assignment and losses
    atss_topk: int = 9
    # The reference's GFL config has no ignore regions (COCO crowd boxes are dropped there); gfldet
    # ignores anchors mostly inside a crowd box (IoF > 0.5) when targets carry "iscrowd". <= 0 disables.
    ignore_iof_thr: float = 0.5
    qfl_beta: float = 2.0
    loss_qfl_weight: float = 1.0
    loss_bbox_weight: float = 2.0
    loss_dfl_weight: float = 0.25
    # test
    score_thr: float = 0.05
    nms_pre: int = 1000
    nms_iou: float = 0.6
    max_per_img: int = 100

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)
