"""The NanoDet detectors (inference): NanoDet-Plus-m, NanoDet-Plus-m-1.5x and the legacy NanoDet-m, module for
module as the official configs (RangiLyu/nanodet, the commit in docs/nanodet.md), and the official checkpoint's
state dict loaded by name.

>>> model = nanodet_plus_m(input_size=320).eval()
>>> dets = model([image])            # (3, H, W) RGB uint8 tensors -> [{"boxes", "scores", "labels"}], image frame
>>> batch = model.preprocess([image]); raw = model.network(batch.images)   # the official model(img): (N, A, C + 32)

Parameter names are the official ones (``backbone.*``, ``fpn.*``, ``head.*``); :func:`official_to_gfldet` maps an
official state dict (its ``model.`` / ``avg_model.`` prefixes, the training-only aux branch, the Integral buffer) to
this model's, :meth:`NanoDet.load_official_state_dict` loads it strictly.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ...errors import GfldetError
from .backbone import ShuffleNetV2Backbone
from ..coco_classes import COCO_NAMES
from ..quality import JointQFL
from .heads import NanoDetHead, NanoDetPlusHead
from .necks import GhostPAN, LegacyPAN
from .parts import NanoDetTransform, PointPriorGenerator
from .postprocess import NanoDetDecoder
from .preprocess import NanoDetBatch, NanoDetPreprocessor

__all__ = ["NanoDetSpec", "NANODET_SPECS", "NanoDet", "NanoDetNetwork", "build_nanodet", "nanodet_plus_m",
           "nanodet_plus_m_1_5x", "nanodet_m", "official_to_gfldet"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NanoDetSpec:
    """One official config's inference-relevant settings (``config/*.yml``)."""

    model_size: str  # ShuffleNetV2 width
    neck: str  # "ghost_pan" (Plus) or "pan" (legacy)
    channels: int  # neck and head width
    strides: tuple[int, ...]
    input_size: tuple[int, int]  # (w, h)
    keep_ratio: bool
    prior_offset: float
    num_classes: int = 80
    reg_max: int = 7
    stacked_convs: int = 2


_PLUS = dict(neck="ghost_pan", strides=(8, 16, 32, 64), keep_ratio=False, prior_offset=0.0)
_LEGACY = dict(neck="pan", strides=(8, 16, 32), keep_ratio=True, prior_offset=0.5)
NANODET_SPECS: dict[str, NanoDetSpec] = {
    "nanodet-plus-m_320": NanoDetSpec("1.0x", channels=96, input_size=(320, 320), **_PLUS),
    "nanodet-plus-m_416": NanoDetSpec("1.0x", channels=96, input_size=(416, 416), **_PLUS),
    "nanodet-plus-m-1.5x_320": NanoDetSpec("1.5x", channels=128, input_size=(320, 320), **_PLUS),
    "nanodet-plus-m-1.5x_416": NanoDetSpec("1.5x", channels=128, input_size=(416, 416), **_PLUS),
    "nanodet-m": NanoDetSpec("1.0x", channels=96, input_size=(320, 320), **_LEGACY),
    "nanodet-m-416": NanoDetSpec("1.0x", channels=96, input_size=(416, 416), **_LEGACY),
}


class NanoDetNetwork(nn.Module):
    """backbone -> fpn -> head: a ``(N, 3, H, W)`` normalised BGR batch -> the raw ``(N, A, C + 4 (R + 1))``."""

    def __init__(self, spec: NanoDetSpec):
        super().__init__()
        self.backbone = ShuffleNetV2Backbone(spec.model_size, (2, 3, 4), "LeakyReLU")
        c = spec.channels
        if spec.neck == "ghost_pan":
            if len(spec.strides) != 4:
                raise GfldetError(f"NanoDet-Plus has 4 levels (strides 8-64), got strides {spec.strides}")
            self.fpn = GhostPAN(self.backbone.out_channels, c, use_depthwise=True, kernel_size=5, num_extra_level=1)
            self.head = NanoDetPlusHead(spec.num_classes, c, c, spec.stacked_convs, 5, spec.strides, spec.reg_max)
        elif spec.neck == "pan":
            if len(spec.strides) != 3:
                raise GfldetError(f"the legacy NanoDet has 3 levels (strides 8-32), got strides {spec.strides}")
            self.fpn = LegacyPAN(self.backbone.out_channels, c)
            self.head = NanoDetHead(spec.num_classes, c, c, spec.stacked_convs, spec.strides, spec.reg_max,
                                    share_cls_reg=True)
        else:
            raise GfldetError(f"NanoDet neck {spec.neck!r} is not 'ghost_pan' or 'pan'")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.fpn(self.backbone(x)))


class NanoDet(nn.Module):
    """A NanoDet detector for inference: :attr:`preprocessor` (warp, normalise, pad), :attr:`network` and
    :attr:`decoder` (the official post-processing; its settings are attributes: ``model.decoder.score_thr = 0.3``).

    ``model(images)`` in eval mode: ``(3, H, W)`` RGB images -> per image ``boxes (D, 4)`` xyxy in the image's pixels,
    ``scores (D,)``, ``labels (D,)`` (0-based), ``input_boxes`` (network-input frame). Training is not available yet.
    """

    def __init__(self, spec: NanoDetSpec, class_names: Sequence[str] | None = None):
        super().__init__()
        self.spec = spec
        self.network = NanoDetNetwork(spec)
        self.preprocessor = NanoDetPreprocessor(spec.input_size, spec.keep_ratio)
        self.decoder = NanoDetDecoder(spec.num_classes, spec.strides, spec.reg_max, spec.prior_offset)
        if class_names is None and spec.num_classes == len(COCO_NAMES):
            class_names = COCO_NAMES
        if class_names is not None and len(class_names) != spec.num_classes:
            raise GfldetError(f"{len(class_names)} class names given for num_classes={spec.num_classes}")
        self.class_names = None if class_names is None else list(class_names)
        # gfldet's detector parts, which the exporter reads (docs/nanodet.md, "Export"): the graph's normalisation
        # and padding, the point priors, the decoder's box part (one DistributionBox), the joint QFL score
        self.transform = NanoDetTransform(self.preprocessor.mean, self.preprocessor.std, self.preprocessor.size_divisor)
        self.prior_generator = PointPriorGenerator(spec.strides, spec.prior_offset)
        self.box = self.decoder.box
        self.quality = JointQFL()

    # the official parameter names start at the network: backbone.*, fpn.*, head.*
    @property
    def backbone(self) -> nn.Module:
        return self.network.backbone

    @property
    def fpn(self) -> nn.Module:
        return self.network.fpn

    @property
    def head(self) -> nn.Module:
        return self.network.head

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(N, 3, H, W)`` normalised BGR batch -> per level class logits ``(N, C, H_l, W_l)`` and distribution
        logits ``(N, 4 (R + 1), H_l, W_l)`` (the same numbers as :attr:`network`'s raw output, not yet flattened)."""
        levels = self.head.forward_levels(self.fpn(self.backbone(x)))
        c = self.spec.num_classes
        return [o[:, :c] for o in levels], [o[:, c:] for o in levels]

    def export_settings(self) -> dict:
        """What an exported file records for the torch-free runtime (gfldet.export, ``gfldet.*`` metadata): the
        input rules (warp resize, BGR network input, mean and std in the graph input's RGB order), the decoder's
        settings and where they differ from GFL's (no ``nms_pre``, clip to the padded batch, empty boxes kept, the
        offset class NMS), read from this model's preprocessor and decoder."""
        p, d = self.preprocessor, self.decoder
        return {
            "detector": "nanodet", "num_classes": d.num_classes, "reg_max": d.reg_max, "strides": list(d.strides),
            "size_divisor": p.size_divisor, "pixel_mean": list(p.mean[::-1]), "pixel_std": list(p.std[::-1]),
            "channel_order": "bgr", "resize": "warp", "input_size": list(p.input_size), "keep_ratio": p.keep_ratio,
            "prior_offset": d.prior_offset, "min_size": None, "max_size": None, "score_thr": float(d.score_thr),
            "nms_pre": None, "nms_iou": float(d.nms_iou), "max_per_img": int(d.max_per_img), "nms": "offset",
            "nms_split_thr": int(d.split_thr), "clip": "batch", "drop_empty": False,
        }

    def preprocess(self, images: Sequence[Tensor]) -> NanoDetBatch:
        batch = self.preprocessor(images)
        batch.images = batch.images.to(next(self.network.parameters()).device)
        return batch

    def postprocess(self, raw: Tensor, batch: NanoDetBatch) -> list[dict[str, Tensor]]:
        return self.decoder(raw, batch.input_hw, batch.warp_matrices, batch.original_sizes)

    def forward(self, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        if self.training:
            raise GfldetError("NanoDet training is not available yet: call model.eval() for inference")
        batch = self.preprocess(images)
        return self.postprocess(self.network(batch.images), batch)

    def load_official_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load an official NanoDet state dict (or checkpoint ``state_dict``) strictly, via :func:`official_to_gfldet`."""
        mapped = official_to_gfldet(state_dict, self.spec)
        try:
            missing, unexpected = self.network.load_state_dict(mapped, strict=False)
        except RuntimeError as e:  # shapes that differ: another NanoDet's weights
            raise GfldetError(f"the state dict does not fit {self.spec}: {e}") from None
        if missing or unexpected:
            raise GfldetError(f"the state dict does not fit {self.spec}: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}")


def official_to_gfldet(state_dict: Mapping[str, Tensor], spec: NanoDetSpec | None = None) -> dict[str, Tensor]:
    """An official NanoDet state dict -> :class:`NanoDetNetwork`'s, the official loader's rules first: a key
    ``avg_model.X`` (the EMA weights of a training checkpoint) replaces ``model.X``; then the ``module.`` and
    ``model.`` prefixes go. Dropped: ``aux_fpn.*`` and ``aux_head.*`` (NanoDet-Plus's training-only assigner
    branch), ``head.distribution_project.project`` (the Integral's fixed ``0..reg_max``, checked), and the legacy
    head's ``head.gfl_reg.*`` (built but unused when it shares the tower). Every other name is kept as it is."""
    sd = dict(state_dict)
    for k in list(sd):
        if k.startswith("avg_model."):
            sd["model." + k[len("avg_model."):]] = sd.pop(k)
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        for prefix in ("module.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith(("aux_fpn.", "aux_head.")):
            continue
        if k == "head.distribution_project.project":
            reg_max = spec.reg_max if spec is not None else v.numel() - 1
            if not torch.equal(v.float().cpu(), torch.linspace(0, reg_max, reg_max + 1)):
                raise GfldetError(f"head.distribution_project.project is not 0..{reg_max}: {v.tolist()}")
            continue
        if k.startswith("head.gfl_reg.") and (spec is None or spec.neck == "pan"):
            continue
        out[k] = v
    log.debug("official NanoDet state dict: %d tensors kept, %d dropped", len(out), len(sd) - len(out))
    return out


def build_nanodet(name: str, *, num_classes: int | None = None, input_size: int | tuple[int, int] | None = None
                  ) -> NanoDet:
    """A NanoDet of :data:`NANODET_SPECS` (random weights), optionally with another class count or input size."""
    if name not in NANODET_SPECS:
        raise GfldetError(f"unknown NanoDet {name!r}: choose one of {sorted(NANODET_SPECS)}")
    spec = NANODET_SPECS[name]
    if num_classes is not None:
        if num_classes < 1:
            raise GfldetError(f"num_classes must be >= 1, got {num_classes}")
        spec = replace(spec, num_classes=int(num_classes))
    if input_size is not None:
        wh = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(wh) != 2 or min(wh) < 32:
            raise GfldetError(f"input_size must be a size >= 32 or a (w, h) pair, got {input_size}")
        spec = replace(spec, input_size=(int(wh[0]), int(wh[1])))
    return NanoDet(spec)


def nanodet_plus_m(*, num_classes: int = 80, input_size: int | tuple[int, int] = 416) -> NanoDet:
    """NanoDet-Plus-m: ShuffleNetV2 1.0x, GhostPAN 96, NanoDetPlusHead (config/nanodet-plus-m_416.yml)."""
    return build_nanodet("nanodet-plus-m_416", num_classes=num_classes, input_size=input_size)


def nanodet_plus_m_1_5x(*, num_classes: int = 80, input_size: int | tuple[int, int] = 416) -> NanoDet:
    """NanoDet-Plus-m-1.5x: ShuffleNetV2 1.5x, GhostPAN 128 (config/nanodet-plus-m-1.5x_416.yml)."""
    return build_nanodet("nanodet-plus-m-1.5x_416", num_classes=num_classes, input_size=input_size)


def nanodet_m(*, num_classes: int = 80, input_size: int | tuple[int, int] = 320) -> NanoDet:
    """The legacy NanoDet-m: ShuffleNetV2 1.0x, PAN 96, shared NanoDetHead, ratio kept
    (config/legacy_v0.x_configs/nanodet-m.yml)."""
    return build_nanodet("nanodet-m", num_classes=num_classes, input_size=input_size)
