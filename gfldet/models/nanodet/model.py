"""The NanoDet detectors: NanoDet-Plus-m, NanoDet-Plus-m-1.5x and the legacy NanoDet-m, module for module as the
official configs (RangiLyu/nanodet, the commit in docs/nanodet.md), and the official checkpoint's state dict loaded
by name. NanoDet-Plus also trains as the official trainer does (gfldet.models.nanodet.loss, .augment).

>>> model = nanodet_plus_m(input_size=320).eval()
>>> dets = model([image])            # (3, H, W) RGB uint8 tensors -> [{"boxes", "scores", "labels"}], image frame
>>> batch = model.preprocess([image]); raw = model.network(batch.images)   # the official model(img): (N, A, C + 32)
>>> model = build_nanodet("nanodet-plus-m_320", num_classes=3, training=True).train()
>>> losses = model(images, targets)   # targets: [{"boxes" (M, 4) xyxy pixels, "labels" (M,)}]

Parameter names are the official ones (``backbone.*``, ``fpn.*``, ``head.*``); :func:`official_to_gfldet` maps an
official state dict (its ``model.`` / ``avg_model.`` prefixes, the training-only aux branch, the Integral buffer) to
this model's, :meth:`NanoDet.load_official_state_dict` loads it strictly.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import Tensor, nn

from ...errors import GfldetError
from ..transform import check_targets
from .backbone import ShuffleNetV2Backbone
from .blocks import ConvNormAct, DepthwiseSeparable
from ..coco_classes import COCO_NAMES
from ..quality import JointQFL
from .augment import NanoDetAugment
from .heads import NanoDetHead, NanoDetPlusHead, SimpleConvHead
from .loss import NanoDetPlusLoss
from .necks import GhostPAN, LegacyPAN
from .parts import NanoDetTransform, PointPriorGenerator
from .postprocess import NanoDetDecoder
from .preprocess import NanoDetBatch, NanoDetPreprocessor

__all__ = ["NanoDetSpec", "NanoDetConfig", "NANODET_SPECS", "NanoDet", "NanoDetNetwork", "build_nanodet", "nanodet_from_config", "nanodet_plus_m",
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
    detach_epoch: int = 10  # NanoDet-Plus training: from this epoch the auxiliary branch no longer trains the network


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


TEST_SETTINGS = ("score_thr", "nms_iou", "max_per_img")  # what NanoDet.configure changes (its decoder's)


@dataclass(frozen=True)
class NanoDetConfig:
    """A NanoDet's settings as a gfldet checkpoint records them (``model_config``: ``detector: nanodet``, the spec's
    fields, the decoder's test settings). ``min_size`` / ``max_size`` are None: a NanoDet warps every image to
    ``spec.input_size`` rather than resizing it as GFL does."""

    spec: NanoDetSpec
    score_thr: float = 0.05
    nms_iou: float = 0.6
    max_per_img: int = 100
    min_size = None
    max_size = None

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def to_dict(self) -> dict:
        spec = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.spec).items()}
        return {"detector": "nanodet", **spec, **{k: getattr(self, k) for k in TEST_SETTINGS}}

    @classmethod
    def from_dict(cls, d: Mapping) -> NanoDetConfig:
        d = dict(d)
        if d.pop("detector", None) != "nanodet":
            raise GfldetError(f"not a NanoDet model_config: {sorted(d)[:6]}...")
        names = {f.name for f in fields(NanoDetSpec)}
        unknown = sorted(set(d) - names - set(TEST_SETTINGS))
        if unknown:
            raise GfldetError(f"unknown NanoDet model_config keys {unknown}")
        spec = NanoDetSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})
        return cls(spec, **{k: d[k] for k in TEST_SETTINGS if k in d})


class NanoDetNetwork(nn.Module):
    """backbone -> fpn -> head: a ``(N, 3, H, W)`` normalised BGR batch -> the raw ``(N, A, C + 4 (R + 1))``.

    With ``aux`` (NanoDet-Plus training), also the official training-only branch: ``aux_fpn`` (a second GhostPAN of
    the same shape) and ``aux_head`` (:class:`SimpleConvHead` on the two necks' maps concatenated, twice the neck's
    width), which :meth:`forward_train` runs."""

    def __init__(self, spec: NanoDetSpec, aux: bool = False):
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
        if aux:
            if spec.neck != "ghost_pan":
                raise GfldetError("training is available for NanoDet-Plus (the legacy NanoDet-m trains with ATSS and "
                                  "no auxiliary head, which gfldet does not implement)")
            self.aux_fpn = GhostPAN(self.backbone.out_channels, c, use_depthwise=True, kernel_size=5, num_extra_level=1)
            self.aux_head = SimpleConvHead(spec.num_classes, 2 * c, 2 * c, 4, spec.strides, spec.reg_max)
        init_official(self)
        if aux:  # the official aux_fpn is a deepcopy of the initialised fpn: both necks start equal
            self.aux_fpn.load_state_dict(self.fpn.state_dict())

    @property
    def has_aux(self) -> bool:
        return hasattr(self, "aux_head")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.fpn(self.backbone(x)))

    def forward_train(self, x: Tensor, detach_aux: bool) -> tuple[Tensor, Tensor]:
        """The head's and the auxiliary head's raw outputs, as the official ``NanoDetPlus.forward_train``: the
        auxiliary branch reads the backbone's and the neck's maps detached when ``detach_aux`` (from the config's
        ``detach_epoch`` on), so that its loss then trains only itself."""
        feats = self.backbone(x)
        fpn_feats = self.fpn(feats)
        if detach_aux:
            aux_feats = self.aux_fpn([f.detach() for f in feats])
            dual = [torch.cat([f.detach(), a], dim=1) for f, a in zip(fpn_feats, aux_feats)]
        else:
            aux_feats = self.aux_fpn(feats)
            dual = [torch.cat([f, a], dim=1) for f, a in zip(fpn_feats, aux_feats)]
        return self.head(fpn_feats), self.aux_head(dual)


def init_official(network: nn.Module) -> None:
    """The official initialisation: every ConvModule / DepthwiseConvModule (gfldet's ConvNormAct and
    DepthwiseSeparable) kaiming-normal, fan-out, gain sqrt(2), bias 0, as their constructors do, the plain convs of the
    ghost blocks PyTorch's defaults; then ShuffleNetV2's convs N(0, 1 / in_channels_per_group) with BatchNorm weight 1,
    bias 1e-4; then every head conv N(0, 0.01) with bias 0, but the bias of each ``gfl_cls`` conv -4.595 (sigmoid
    0.01) on all its channels (NanoDet-Plus's carries the box logits too, where a constant leaves the softmax
    unchanged)."""
    for m in network.modules():
        convs = [m.conv] if isinstance(m, ConvNormAct) else [m.depthwise, m.pointwise] \
            if isinstance(m, DepthwiseSeparable) else []
        for conv in convs:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # the gain of leaky_relu, a=0
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
    for m in network.backbone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0, 1.0 / m.weight.shape[1])
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.constant_(m.bias, 0.0001)
            nn.init.zeros_(m.running_mean)
    heads = [network.head] + ([network.aux_head] if hasattr(network, "aux_head") else [])
    for head in heads:
        for m in head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        outputs = head.gfl_cls if isinstance(head.gfl_cls, nn.ModuleList) else [head.gfl_cls]
        for conv in outputs:
            nn.init.constant_(conv.bias, -4.595)


class NanoDet(nn.Module):
    """A NanoDet detector for inference: :attr:`preprocessor` (warp, normalise, pad), :attr:`network` and
    :attr:`decoder` (the official post-processing; its settings are attributes: ``model.decoder.score_thr = 0.3``).

    ``model(images)`` in eval mode: ``(3, H, W)`` RGB images -> per image ``boxes (D, 4)`` xyxy in the image's pixels,
    ``scores (D,)``, ``labels (D,)`` (0-based), ``input_boxes`` (network-input frame).

    Built with ``training=True`` (NanoDet-Plus), it also carries the auxiliary branch and trains as the official
    trainer: ``model.train(); losses = model(images, targets)`` with ``targets`` per image ``boxes (M, 4)`` xyxy
    pixels and ``labels (M,)`` (``iscrowd`` boxes are dropped, as the official assigner ignores nothing) gives the
    six weighted terms (gfldet.models.nanodet.loss), after the official training augmentation (:attr:`augment`).
    :meth:`set_epoch` tells it the epoch (the auxiliary branch is detached from ``spec.detach_epoch`` on).
    """

    def __init__(self, spec: NanoDetSpec, class_names: Sequence[str] | None = None, training: bool = False):
        super().__init__()
        self.spec = spec
        self.network = NanoDetNetwork(spec, aux=training)
        self.epoch = 0
        self.augment = NanoDetAugment(spec.input_size)
        self.criterion = NanoDetPlusLoss(spec.num_classes, spec.reg_max)
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

    @property
    def config(self) -> NanoDetConfig:
        d = self.decoder
        return NanoDetConfig(self.spec, float(d.score_thr), float(d.nms_iou), int(d.max_per_img))

    def configure(self, **changes) -> NanoDet:
        """Change the test settings (``score_thr``, ``nms_iou``, ``max_per_img``; the decoder's) as ``GFL.configure``
        does for GFL; anything else defines the network (or is GFL's, e.g. ``nms_pre``, ``min_size``: NanoDet has
        no pre-NMS top-k and warps to ``spec.input_size``). Returns the model."""
        other = sorted(set(changes) - set(TEST_SETTINGS))
        if other:
            raise GfldetError(f"{other} cannot change on a NanoDet; configure changes {list(TEST_SETTINGS)} (its input "
                              f"size is the architecture's, {self.spec.input_size[0]}x{self.spec.input_size[1]})")
        if "score_thr" in changes and not 0 <= float(changes["score_thr"]) < 1:
            raise GfldetError(f"score_thr must be in [0, 1), got {changes['score_thr']}")
        if "nms_iou" in changes and not 0 < float(changes["nms_iou"]) <= 1:
            raise GfldetError(f"nms_iou must be in (0, 1], got {changes['nms_iou']}")
        if "max_per_img" in changes and int(changes["max_per_img"]) < 1:
            raise GfldetError(f"max_per_img must be >= 1, got {changes['max_per_img']}")
        for k, v in changes.items():
            setattr(self.decoder, k, int(v) if k == "max_per_img" else float(v))
        return self

    def set_epoch(self, epoch: int) -> None:
        """The training epoch (0-based) that begins: the auxiliary branch is detached from ``spec.detach_epoch``."""
        self.epoch = int(epoch)

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict] | None = None):
        if not self.training:
            batch = self.preprocess(images)
            return self.postprocess(self.network(batch.images), batch)
        if not self.network.has_aux:
            raise GfldetError("this NanoDet was built for inference: build it with training=True (the auxiliary "
                              "branch that assigns the targets), or call model.eval() to detect")
        if targets is None:
            raise GfldetError("in training mode the model needs targets: model(images, targets)")
        device = next(self.network.parameters()).device
        checked = check_targets(targets, len(images), self.spec.num_classes, device)
        boxes = [b if crowd is None else b[~crowd] for b, _, crowd in checked]
        labels = [lab if crowd is None else lab[~crowd] for _, lab, crowd in checked]
        batch, boxes = self.augment(images, boxes, device)
        return self.losses(batch, boxes, labels)

    def losses(self, batch: Tensor, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor]) -> dict[str, Tensor]:
        """The official training objective of a network-input ``batch (N, 3, H, W)`` with per image boxes in its
        pixels and labels: the head's terms and the auxiliary head's (``loss_aux_*``)."""
        head_out, aux_out = self.network.forward_train(batch, detach_aux=self.epoch >= self.spec.detach_epoch)
        h, w = int(batch.shape[-2]), int(batch.shape[-1])
        sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in self.prior_generator.strides]
        priors = self.prior_generator(sizes, batch.device)
        points, strides = priors.anchors[:, :2], priors.strides
        targets = self.criterion.targets(aux_out, points, strides, gt_boxes, gt_labels)
        return {**self.criterion(head_out, points, strides, targets, "loss_"),
                **self.criterion(aux_out, points, strides, targets, "loss_aux_")}

    def load_official_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load an official NanoDet state dict (or checkpoint ``state_dict``) strictly, via :func:`official_to_gfldet`."""
        mapped = official_to_gfldet(state_dict, self.spec, keep_aux=self.network.has_aux)
        try:
            missing, unexpected = self.network.load_state_dict(mapped, strict=False)
        except RuntimeError as e:  # shapes that differ: another NanoDet's weights
            raise GfldetError(f"the state dict does not fit {self.spec}: {e}") from None
        aux_missing = [k for k in missing if k.startswith(("aux_fpn.", "aux_head."))]
        if aux_missing and len(aux_missing) == len(missing) and not unexpected:
            log.info("the state dict has no auxiliary branch (an inference export): aux_fpn and aux_head keep their "
                     "initialisation (%d tensors)", len(aux_missing))
            missing = []
        if missing or unexpected:
            raise GfldetError(f"the state dict does not fit {self.spec}: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}")


def official_to_gfldet(state_dict: Mapping[str, Tensor], spec: NanoDetSpec | None = None, keep_aux: bool = False
                       ) -> dict[str, Tensor]:
    """An official NanoDet state dict -> :class:`NanoDetNetwork`'s, the official loader's rules first: a key
    ``avg_model.X`` (the EMA weights of a training checkpoint) replaces ``model.X``; then the ``module.`` and
    ``model.`` prefixes go. Dropped: ``aux_fpn.*`` and ``aux_head.*`` (NanoDet-Plus's training-only assigner
    branch; kept with ``keep_aux``, for a model built to train), ``head.distribution_project.project`` (the Integral's fixed ``0..reg_max``, checked), and the legacy
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
        if k.startswith(("aux_fpn.", "aux_head.")) and not keep_aux:
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


def nanodet_from_config(config: NanoDetConfig | Mapping, class_names: Sequence[str] | None = None,
                        training: bool = False) -> NanoDet:
    """The NanoDet a :class:`NanoDetConfig` (or its ``to_dict()``) describes, with its test settings."""
    cfg = config if isinstance(config, NanoDetConfig) else NanoDetConfig.from_dict(config)
    model = NanoDet(cfg.spec, class_names=class_names, training=training)
    return model.configure(**{k: getattr(cfg, k) for k in TEST_SETTINGS})


def build_nanodet(name: str, *, num_classes: int | None = None, input_size: int | tuple[int, int] | None = None,
                  training: bool = False, class_names: Sequence[str] | None = None) -> NanoDet:
    """A NanoDet of :data:`NANODET_SPECS` (random weights, the official initialisation), optionally with another
    class count or input size; ``training``: with the auxiliary branch that NanoDet-Plus trains with; ``class_names``
    (as many as classes; COCO's for 80 classes when not given)."""
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
    return NanoDet(spec, class_names=class_names, training=training)


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
