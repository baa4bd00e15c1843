"""The detector's configuration (:class:`ModelConfig`), its rules, and the backbone training regimes. Imports
nothing of gfldet but :mod:`gfldet.errors`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import GfldetError
from ..settings import TEST_SETTINGS, invalid_test_settings

__all__ = ["ModelConfig", "RUNTIME_FIELDS", "ConfigError", "FieldError", "BACKBONES", "HEAD_CONVS", "QUALITIES", "BOXES", "ASSIGNERS", "BackboneRegime", "BACKBONE_REGIMES", "LIGHT_PRETRAINED", "REGIME_FIELDS",
           "RENAMED_FIELDS", "current_field_names",
           "backbone_regime"]


class ConfigError(GfldetError):
    """A bad configuration value; the message names the key. A :class:`~gfldet.errors.GfldetError` (a
    ``ValueError``)."""


class FieldError(ConfigError):
    """One field's rule broken: ``key``, ``value`` and ``why`` are kept, so that the run config can name the key
    as ``model.KEY`` while :class:`ModelConfig` says ``model config KEY=VALUE``."""

    def __init__(self, key: str, value: Any, why: str):
        self.key, self.value, self.why = key, value, why
        super().__init__(f"model config {key}={value!r} {why}")


BACKBONES = ("resnet", "mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2_x1_0", "efficientnet_b0")
HEAD_CONVS = ("conv", "dwsep")
QUALITIES = ("qfl", "dgqp", "none", "centerness", "iou")
BOXES = ("distribution", "dirac", "gaussian", "gaussian_nll")
ASSIGNERS = ("atss", "fcos", "retina")


# old name -> new name, for checkpoints and run configs written before the rename (ModelConfig.from_dict reads both)
RENAMED_FIELDS = {"loss_qfl_weight": "loss_cls_weight"}  # it weighs a focal loss in the ablations' assemblies


def current_field_names(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with the fields of :data:`RENAMED_FIELDS` under their current names (a checkpoint's model_config or a
    run config's model section written before a rename)."""
    return {RENAMED_FIELDS.get(k, k): v for k, v in d.items()}


# The settings a built detector may change (GFL.configure): the input sizes and the test settings. Every other field
# defines the network or its training targets: change those by building another model.
RUNTIME_FIELDS = ("min_size", "max_size", "train_min_sizes", "score_thr", "nms_pre", "nms_iou", "max_per_img")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a GFL detector: architecture, training targets and losses, test settings.

    Defaults are the paper's / reference's GFL R-50-FPN 1x on COCO. Immutable: a changed copy is
    ``dataclasses.replace(cfg, **changes)`` (validated like a new one); a built detector changes its input sizes
    and test settings with :meth:`gfldet.models.detector.GFL.configure`.
    """

    # backbone: "resnet" (torchvision's ResNet / ResNeXt, sized by depth, groups, width_per_group, base_channels) or
    # one of torchvision's lightweight ImageNet networks (gfldet.models.tv_backbone): mobilenet_v2,
    # mobilenet_v3_large, shufflenet_v2_x1_0, efficientnet_b0. The builder (model.arch) fixes it.
    backbone: str = "resnet"
    depth: int = 50
    groups: int = 1
    width_per_group: int = 64
    # channels of the stem and layer1; layers 2-4 double it each (mmdetection's ResNet base_channels). 64 is the
    # standard ResNet (the only width ImageNet weights fit); smaller values give narrow, faster networks for
    # training from scratch, which also want norm_eval=False and frozen_stages=0 (the demo: 24, False, 0).
    base_channels: int = 64
    frozen_stages: int = 1  # stem + layer1 frozen, as the reference
    # Backbone BatchNorm: True normalises with frozen running statistics (the reference's norm_eval=True, right
    # for ImageNet-initialised backbones); False uses batch statistics in training and updates the running ones
    # (ordinary BatchNorm, better when training from scratch, as the demo does). Not synchronised across DDP ranks.
    norm_eval: bool = True
    # Modulated deformable convolution (DCNv2, gfldet.models.dcn) as the 3x3 conv2 of every bottleneck in layer1..layer4
    # where True (mmdetection's stage_with_dcn; its DCN configs: (False, True, True, True) for c3-c5), with
    # deform_groups offset groups. Bottleneck depths (50, 101, 152) only, as in mmdetection.
    stage_with_dcn: tuple[bool, bool, bool, bool] = (False, False, False, False)
    deform_groups: int = 1
    # true: modulated DCN (DCNv2, mmdetection's dcn type 'DCNv2'); false: DCNv1 (type 'DCN': offsets, no mask),
    # which mmdetection's published GFL DCN models use
    dcn_modulated: bool = True
    # neck and head
    fpn_channels: int = 256
    head_channels: int = 256
    stacked_convs: int = 4
    # the layer of the head's towers: "conv" (3x3 conv, GroupNorm, ReLU: GFL's) or "dwsep" (depthwise 3x3 and
    # pointwise 1x1, GroupNorm, ReLU: a light head for small backbones, as NanoDet's)
    head_conv: str = "conv"
    gn_groups: int = 32
    num_classes: int = 80
    reg_max: int = 16  # n: each edge is a distribution over the n + 1 bins 0..n (in strides)
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    octave_base_scale: float = 8.0
    # input: keep-ratio resize inside the model (None disables it), normalisation, padding
    min_size: int | None = 800
    max_size: int | None = 1333
    # multi-scale training: in train mode each batch's short side is drawn from these (None: min_size)
    train_min_sizes: tuple[int, ...] | None = None
    size_divisor: int = 32
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # training: assignment and losses
    atss_topk: int = 9
    # The reference's GFL config has no ignore regions (COCO crowd boxes are dropped there); gfldet
    # ignores anchors mostly inside a crowd box (IoF > 0.5) when targets carry "iscrowd". <= 0 disables.
    ignore_iof_thr: float = 0.5
    qfl_beta: float = 2.0
    loss_cls_weight: float = 1.0
    loss_bbox_weight: float = 2.0
    loss_dfl_weight: float = 0.25  # also the weight of the Gaussian NLL when box="gaussian" or "gaussian_nll"
    # test
    score_thr: float = 0.05
    nms_pre: int = 1000
    nms_iou: float = 0.6
    max_per_img: int = 100
    # The representations the paper ablates (Table 1; the parts in gfldet.models.assemble). The defaults are GFL itself.
    # qfl (GFL: joint score, QFL) | dgqp (GFLV2: joint score times the distribution-guided quality, QFL) |
    # none (focal loss) | centerness | iou (separate branches, BCE)
    quality: str = "qfl"
    # GFLV2's DGQP (quality="dgqp"): the top reg_topk probabilities of each edge's distribution (and their mean
    # with add_mean) -> 1x1 conv to reg_channels -> ReLU -> 1x1 conv -> sigmoid (the official defaults 4, 64, true)
    reg_topk: int = 4
    reg_channels: int = 64
    add_mean: bool = True
    # distribution (DFL) | dirac (direct distances, GIoU) | gaussian (mean, log-var, KL-Loss) | gaussian_nll (plain NLL)
    box: str = "distribution"
    bin_width: float = 1.0  # delta: bins at 0, delta, ..., n * delta strides (box="distribution")
    assigner: str = "atss"  # atss | fcos | retina
    anchor_ratios: tuple[float, ...] = (1.0,)  # h / w of the anchors of a location (RetinaNet: 0.5, 1, 2)
    scales_per_octave: int = 1  # anchor sizes octave_base_scale * 2^(i / scales_per_octave) (RetinaNet: 3)
    fcos_radius: float = 1.5  # FCOS centre sampling radius, strides (0: inside the box is enough)
    fcos_range_bounds: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)  # FCOS regression range edges, pixels
    retina_pos_iou: float = 0.5
    retina_neg_iou: float = 0.4
    retina_min_pos_iou: float = 0.0
    focal_alpha: float = 0.25  # focal loss of the quality="none" | "centerness" | "iou" classifiers
    focal_gamma: float = 2.0
    loss_quality_weight: float = 1.0  # the centerness / IoU branch's BCE

    def __post_init__(self) -> None:
        choices = {"backbone": BACKBONES, "head_conv": HEAD_CONVS, "quality": QUALITIES, "box": BOXES, "assigner": ASSIGNERS}
        for key, allowed in choices.items():
            value = getattr(self, key)
            if value not in allowed:
                raise FieldError(key, value, f"is not one of {allowed}")
        ratios = tuple(self.anchor_ratios)
        dcn = tuple(self.stage_with_dcn)
        checks = [
            (len(dcn) == 4 and all(isinstance(b, bool) for b in dcn), "stage_with_dcn", dcn,
             "must be 4 booleans (layer1..layer4)"),
            (not any(dcn) or self.backbone == "resnet", "stage_with_dcn", dcn,
             f"is for ResNet backbones; {self.backbone} has no deformable variant"),
            (not any(dcn) or self.depth not in (18, 34), "stage_with_dcn", dcn,
             f"needs bottleneck blocks (depth 50, 101 or 152); ResNet-{self.depth} has basic blocks"),
            (isinstance(self.deform_groups, int) and self.deform_groups >= 1, "deform_groups", self.deform_groups,
             "must be an integer >= 1"),
            (not any(dcn) or not isinstance(self.deform_groups, int) or self.deform_groups < 1
             or all(w % self.deform_groups == 0 for w in self.dcn_widths), "deform_groups", self.deform_groups,
             f"must divide the input width of every deformable conv2 ({self.dcn_widths})"),
            (self.base_channels >= 1, "base_channels", self.base_channels, "must be >= 1"),
            (self.bin_width > 0, "bin_width", self.bin_width, "must be > 0"),
            (len(ratios) >= 1 and all(r > 0 for r in ratios), "anchor_ratios", ratios, "must be one or more numbers > 0"),
            (self.scales_per_octave >= 1, "scales_per_octave", self.scales_per_octave, "must be >= 1"),
            (self.quality != "dgqp" or 1 <= self.reg_topk <= self.reg_max + 1, "reg_topk", self.reg_topk,
             f"must be in [1, reg_max + 1 = {self.reg_max + 1}] (the bins of an edge)"),
            (self.reg_channels >= 1, "reg_channels", self.reg_channels, "must be >= 1"),
            (self.quality != "dgqp" or self.box == "distribution", "quality", self.quality,
             f"reads the edge distributions: it needs box='distribution', not {self.box!r}"),
            (self.quality != "dgqp" or self.num_anchors == 1, "quality", self.quality,
             "reads one distribution per location: it needs one anchor per location"),
            (self.fcos_radius >= 0, "fcos_radius", self.fcos_radius, "must be >= 0"),
            (0 <= self.retina_neg_iou <= self.retina_pos_iou <= 1, "retina_neg_iou/retina_pos_iou",
             (self.retina_neg_iou, self.retina_pos_iou), "need 0 <= neg <= pos <= 1"),
            (0 <= self.retina_min_pos_iou <= 1, "retina_min_pos_iou", self.retina_min_pos_iou, "must be in [0, 1]"),
            (0 <= self.focal_alpha <= 1, "focal_alpha", self.focal_alpha, "must be in [0, 1]"),
            (self.focal_gamma >= 0, "focal_gamma", self.focal_gamma, "must be >= 0"),
            (self.assigner != "fcos" or self.num_anchors == 1, "assigner", self.assigner,
             f"assigns locations and needs one anchor per location, got {self.num_anchors} "
             f"(anchor_ratios={ratios}, scales_per_octave={self.scales_per_octave})"),
            (self.assigner != "fcos" or len(self.fcos_range_bounds) == len(self.strides) - 1, "fcos_range_bounds",
             tuple(self.fcos_range_bounds), f"must hold {len(self.strides) - 1} edges for {len(self.strides)} levels"),
        ]
        sizes = [] if self.train_min_sizes is None else list(self.train_min_sizes)
        checks += [  # input sizes and test settings: what GFL.configure changes on a built model
            (self.min_size is None or self.min_size >= 1, "min_size", self.min_size, "must be >= 1 or None"),
            (self.max_size is None or self.max_size >= 1, "max_size", self.max_size, "must be >= 1 or None"),
            (all(s >= 1 for s in sizes), "train_min_sizes", self.train_min_sizes, "must be sizes >= 1 or None"),
        ]
        checks += [(False, key, value, why)
                   for key, value, why in invalid_test_settings({k: getattr(self, k) for k in TEST_SETTINGS})]
        for ok, key, value, why in checks:
            if not ok:
                raise FieldError(key, value, why)

    @property
    def dcn_widths(self) -> tuple[int, ...]:
        """The input widths of conv2 in the stages with DCN (torchvision's bottleneck width)."""
        return tuple(self.base_channels * 2**i * self.width_per_group // 64 * self.groups
                     for i, on in enumerate(self.stage_with_dcn) if on)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location (1 for GFL)."""
        return len(self.anchor_ratios) * self.scales_per_octave

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = current_field_names(d)
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown model config keys: {unknown}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)


# ---------------------------------------------------------------------------------------------------------
# What a backbone trains as, by where its weights come from. The paper's recipe (frozen stem + layer1, frozen
# BatchNorm statistics) is for an ImageNet-initialised backbone; applied to a random one it freezes random layers and
# "normalises" with statistics that are mean 0 / variance 1, i.e. not at all. torchvision's detection builders
# switch on the same condition (FrozenBatchNorm2d and 3 trainable layers with weights, BatchNorm2d and 5 without).
# The builders (gfldet.models.zoo) take frozen_stages / norm_eval from here; the training policy that goes with each
# (learning rate, gradient clipping) is the engine's (gfldet.engine.recipe.Regime).


@dataclass(frozen=True)
class BackboneRegime:
    name: str  # "pretrained", "from scratch", "pretrained, light backbone": named in the training log
    frozen_stages: int
    norm_eval: bool


BACKBONE_REGIMES = {
    True: BackboneRegime("pretrained", frozen_stages=1, norm_eval=True),
    False: BackboneRegime("from scratch", frozen_stages=0, norm_eval=False),  # every layer, ordinary BatchNorm
}
# The lightweight torchvision backbones (MobileNet, ShuffleNet, EfficientNet) fine-tuned from ImageNet: the same
# frozen stem + stride-4 layers, but BatchNorm trained (batch statistics, running ones updated), as NanoDet and YOLO
# train theirs. Frozen ImageNet statistics cost these networks accuracy in gfldet's fine-tuning runs (docs/light.md);
# ResNets keep the paper's.
LIGHT_PRETRAINED = BackboneRegime("pretrained, light backbone", frozen_stages=1, norm_eval=False)
REGIME_FIELDS = ("frozen_stages", "norm_eval")  # the ModelConfig fields a regime chooses when they are not set


def backbone_regime(pretrained: bool, backbone: str = "resnet") -> BackboneRegime:
    """How the backbone of a model that starts from pretrained weights (``True``) or from random ones trains, for
    its ``backbone`` family (``ModelConfig.backbone``: ``resnet`` or a lightweight torchvision network)."""
    if pretrained and backbone != "resnet":
        return LIGHT_PRETRAINED
    return BACKBONE_REGIMES[bool(pretrained)]
