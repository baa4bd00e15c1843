"""Configuration dataclasses. A YAML config is a dump of these; nothing is looked up by string type name."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["ModelConfig", "Config", "ModelSettings", "DataConfig", "SplitConfig", "InputConfig", "TrainConfig", "ConfigError",
           "load_config", "apply_override", "validate_config", "format_config", "read_yaml", "preflight", "device_name", "check_device", "torchvision_weights", "Regime", "REGIMES", "backbone_regime", "resolve_training",
           "warmup_length", "step_milestones", "WARMUP_MAX_FRACTION"]


QUALITIES = ("qfl", "none", "centerness", "iou")
BOXES = ("distribution", "dirac", "gaussian")
ASSIGNERS = ("atss", "fcos", "retina")


@dataclass
class ModelConfig:
    """Everything that defines a GFL detector: architecture, training targets and losses, test settings.

    Defaults are the paper's / reference's GFL R-50-FPN 1x on COCO.
    """

    # backbone: torchvision ResNet / ResNeXt
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
    loss_qfl_weight: float = 1.0
    loss_bbox_weight: float = 2.0
    loss_dfl_weight: float = 0.25  # also the weight of the Gaussian NLL when box="gaussian"
    # test
    score_thr: float = 0.05
    nms_pre: int = 1000
    nms_iou: float = 0.6
    max_per_img: int = 100
    # The representations the paper ablates (Table 1; gfldet.models.variants). The defaults are GFL itself.
    quality: str = "qfl"  # qfl (joint, QFL) | none (focal loss) | centerness | iou (separate branches, BCE)
    box: str = "distribution"  # distribution (DFL) | dirac (direct distances, GIoU) | gaussian (mean, log-var, NLL)
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
        choices = {"quality": QUALITIES, "box": BOXES, "assigner": ASSIGNERS}
        for key, allowed in choices.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ValueError(f"model config {key}={value!r} is not one of {allowed}")
        ratios = tuple(self.anchor_ratios)
        checks = [
            (self.base_channels >= 1, "base_channels", self.base_channels, "must be >= 1"),
            (self.bin_width > 0, "bin_width", self.bin_width, "must be > 0"),
            (len(ratios) >= 1 and all(r > 0 for r in ratios), "anchor_ratios", ratios, "must be one or more numbers > 0"),
            (self.scales_per_octave >= 1, "scales_per_octave", self.scales_per_octave, "must be >= 1"),
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
        for ok, key, value, why in checks:
            if not ok:
                raise ValueError(f"model config {key}={value!r} {why}")

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location (1 for GFL)."""
        return len(self.anchor_ratios) * self.scales_per_octave

    @property
    def is_variant(self) -> bool:
        """True when the config departs from GFL's representations (QFL, distribution with unit bins, ATSS,
        one anchor per location); such a detector runs through :mod:`gfldet.models.variants`."""
        current = (self.quality, self.box, float(self.bin_width), self.assigner, tuple(self.anchor_ratios), self.scales_per_octave)
        return current != ("qfl", "distribution", 1.0, "atss", (1.0,), 1)

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


# ---------------------------------------------------------------------------------------------------------
# The training / evaluation configuration tree (`gfldet train CONFIG.yaml --set key=value ...`).

import dataclasses
import functools
import logging
import os
import re
import types
import typing
from dataclasses import field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class ModelSettings:
    """The model section of a run config; the number of classes comes from the annotation file and the input
    sizes from ``input``. Defaults are the paper's GFL R-50-FPN."""

    arch: str = "gfl_resnet50_fpn"  # a builder: gfl_resnet18_fpn, gfl_resnet50_fpn, gfl_resnet101_fpn, gfl_resnext101_32x4d_fpn
    # torchvision ImageNet weights, e.g. IMAGENET1K_V1 (torchvision downloads them), or the path of a local state
    # dict with torchvision's ResNet parameter names
    weights_backbone: str | None = None
    # a gfldet or mmdetection checkpoint to start from (fine-tuning): every tensor whose name and shape fit is
    # loaded, the others (e.g. the classifier of another class count) keep their initialisation; the log names them
    init: str | None = None
    init_strict: bool = False  # true: every tensor must fit (an error names those that do not)
    # null: chosen by the regime (REGIMES below): 1 and true with weights_backbone or init (the reference's frozen
    # stem + layer1 and frozen BatchNorm statistics), 0 and false from scratch. An explicit value always wins.
    frozen_stages: int | None = None
    norm_eval: bool | None = None
    reg_max: int = ModelConfig.reg_max
    fpn_channels: int = ModelConfig.fpn_channels
    head_channels: int = ModelConfig.head_channels
    stacked_convs: int = ModelConfig.stacked_convs
    base_channels: int = ModelConfig.base_channels
    atss_topk: int = ModelConfig.atss_topk
    ignore_iof_thr: float = ModelConfig.ignore_iof_thr
    qfl_beta: float = ModelConfig.qfl_beta
    loss_qfl_weight: float = ModelConfig.loss_qfl_weight
    loss_bbox_weight: float = ModelConfig.loss_bbox_weight
    loss_dfl_weight: float = ModelConfig.loss_dfl_weight
    score_thr: float = ModelConfig.score_thr
    nms_pre: int = ModelConfig.nms_pre
    nms_iou: float = ModelConfig.nms_iou
    max_per_img: int = ModelConfig.max_per_img
    # representation variants (gfldet.models.variants; defaults: GFL)
    quality: str = ModelConfig.quality
    box: str = ModelConfig.box
    bin_width: float = ModelConfig.bin_width
    assigner: str = ModelConfig.assigner
    octave_base_scale: float = ModelConfig.octave_base_scale
    anchor_ratios: list[float] = field(default_factory=lambda: list(ModelConfig.anchor_ratios))
    scales_per_octave: int = ModelConfig.scales_per_octave
    fcos_radius: float = ModelConfig.fcos_radius
    fcos_range_bounds: list[float] = field(default_factory=lambda: list(ModelConfig.fcos_range_bounds))
    retina_pos_iou: float = ModelConfig.retina_pos_iou
    retina_neg_iou: float = ModelConfig.retina_neg_iou
    retina_min_pos_iou: float = ModelConfig.retina_min_pos_iou
    focal_alpha: float = ModelConfig.focal_alpha
    focal_gamma: float = ModelConfig.focal_gamma
    loss_quality_weight: float = ModelConfig.loss_quality_weight


@dataclass
class SplitConfig:
    ann: str = ""  # COCO-format annotation JSON
    images: str = ""  # folder the JSON's file_name entries are relative to


@dataclass
class DataConfig:
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig = field(default_factory=SplitConfig)
    num_workers: int = 2
    check_images: bool = True


@dataclass
class InputConfig:
    # keep-ratio resize inside the model (ModelConfig.min_size / max_size): short side (test, and training without
    # multi-scale) and long side cap; null drops that bound (both null: images at their own size, padded)
    min_size: int | None = 800
    max_size: int | None = 1333
    multiscale: list[int] | None = None  # training short sides to draw from per batch (the paper's 2x: 480..960)
    flip_prob: float = 0.5


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 2  # images per process
    lr: float | None = None  # None: the regime's rate per 16 images scaled linearly (0.01 pretrained, the paper; 0.02 from scratch)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # None: 500 (the paper's), but at most WARMUP_MAX_FRACTION of the run's iterations. An explicit value wins.
    warmup_iters: int | None = None
    warmup_ratio: float = 0.001
    schedule: str = "step"  # "step" (x gamma at each milestone epoch) or "cosine"
    # None: the paper's [8, 11] of 12 epochs scaled to train.epochs (2/3 and 11/12 of the run, rounded down:
    # [16, 22] for 24 epochs, mmdetection's 2x; [4, 5] for 6). An explicit list wins.
    milestones: list[int] | None = None
    gamma: float = 0.1
    # max global grad norm. None: the regime's (none pretrained, as the reference's GFL config; 35 from scratch,
    # where an early large gradient would otherwise throw the random network off); 0: no clipping.
    grad_clip: float | None = None
    # mixed precision in training: float16 autocast (with a GradScaler) on CUDA; bfloat16 autocast on a CPU with
    # native bf16 units (AVX512-BF16 or AMX: about 1.7x faster training steps on an AVX512-BF16 EPYC); on other
    # CPUs a warning and float32 (emulated bf16 would be slower). Evaluation stays float32 on the CPU.
    amp: bool = False
    channels_last: bool = False  # NHWC activations and weights (oneDNN's own layout on the CPU; ~15% faster steps)
    ema: bool = False
    ema_decay: float = 0.9998
    seed: int = 0
    eval_interval: int = 1  # epochs between evaluations on data.val (0: never)
    log_interval: int = 20  # iterations between metric lines
    checkpoint_iters: int = 0  # also write last.pt every N iterations (0: only at epoch ends)
    max_iters: int | None = None  # stop (and checkpoint) after this many iterations in total
    # auto (CUDA when available) | cpu | cuda | cuda:N | N (a bare CUDA index, read as cuda:N). Under torchrun use
    # auto or cuda: each process takes the GPU of its LOCAL_RANK.
    device: str = "auto"
    # Training from scratch (no backbone weights): set the frozen backbone BatchNorm statistics from this many
    # training batches before the first step (gfldet.engine.norm_init). 0: keep them as built.
    norm_init_batches: int = 0


@dataclass
class Config:
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataConfig = field(default_factory=DataConfig)
    input: InputConfig = field(default_factory=InputConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "runs/exp"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        """Every field as YAML that :func:`load_config` reads back to an equal config (:func:`format_config`)."""
        return format_config(self)

    def model_config(self, num_classes: int) -> ModelConfig:
        """The detector's :class:`ModelConfig` for this run."""
        from .models.zoo import ARCHS

        if self.model.arch not in ARCHS:
            raise ConfigError(f"model.arch: unknown builder {self.model.arch!r}; choose from {sorted(ARCHS)}")
        m = asdict(self.model)
        for k in ("arch", "weights_backbone", "init", "init_strict"):
            m.pop(k)
        regime = backbone_regime(bool(self.model.weights_backbone or self.model.init))
        for k in ("frozen_stages", "norm_eval"):
            if m[k] is None:
                m[k] = getattr(regime, k)
        m = {k: tuple(v) if isinstance(v, list) else v for k, v in m.items()}
        ms = tuple(self.input.multiscale) if self.input.multiscale else None
        return ModelConfig(num_classes=num_classes, min_size=self.input.min_size, max_size=self.input.max_size,
                           train_min_sizes=ms, **ARCHS[self.model.arch][0], **m)


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


def _optional(tp: Any) -> tuple[bool, tuple[Any, ...]]:
    """``(accepts None, the other types)`` of an annotation: ``str | None`` -> ``(True, (str,))``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return type(None) in args, tuple(a for a in args if a is not type(None))
    return False, (tp,)


_NUMBER = re.compile(r"^\s*[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\s*$")


def _check_type(key: str, value: Any, tp: Any, nullable: bool = False) -> Any:
    """Check (and lightly coerce: int -> float, list -> tuple) ``value`` against the annotation ``tp``. Errors name
    the key, the value and the expected type (``nullable``: the field also takes null, which the message says)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        accepts_none, options = _optional(tp)
        if value is None and accepts_none:
            return None
        nullable = nullable or accepts_none
        if len(options) == 1:  # Optional[X]: X's own message is the precise one
            return _check_type(key, value, options[0], nullable)
        for a in options:
            try:
                return _check_type(key, value, a)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not a valid {_tname(tp)}")
    origin = typing.get_origin(tp)
    or_null = " or null" if nullable else ""
    quoted = (" (a quoted string: write the number without quotes)"
              if isinstance(value, str) and _NUMBER.match(value) and tp in (float, int) else "")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list{or_null}, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        items = [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number{or_null}, got {value!r}{quoted}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer{or_null}, got {value!r}{quoted}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false{or_null}, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            hint = " (in YAML, quote it to keep it as text)" if isinstance(value, (int, float, bool)) else ""
            raise ConfigError(f"{key}: expected a string{or_null}, got {value!r}{hint}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _tname(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + u for u in unknown)}")
    kw = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kw[name] = _from_dict(tp, value, f"{prefix}{name}.")
        else:
            kw[name] = _check_type(prefix + name, value, tp)
    return cls(**kw)


# YAML 1.1 (PyYAML) reads a float only with a dot and a signed exponent: 1e-3, 5E-4, 1e3, 1.0e3 are strings there.
# Config files and --set values also read these as floats, as YAML 1.2's core schema does; nothing else changes.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


@functools.lru_cache(maxsize=None)
def _yaml_classes() -> tuple[type, type]:
    """SafeLoader / SafeDumper with the exponent-float resolver (the dumper then quotes strings such as ``'1e3'``)."""
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        pass

    class ConfigDumper(yaml.SafeDumper):
        pass

    for cls in (ConfigLoader, ConfigDumper):
        cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))
    return ConfigLoader, ConfigDumper


def _load_yaml(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_yaml_classes()[0])  # a SafeLoader


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file as plain data, read as configs are (``1e-3`` is a number)."""
    return _load_yaml(Path(path).read_text())


def format_config(cfg: Config) -> str:
    """``cfg`` as YAML, every field included (defaults too), in declaration order; :func:`load_config` reads it
    back to an equal config. What ``gfldet config`` prints and what a run writes as ``config.yaml``."""
    import yaml

    return yaml.dump(dataclasses.asdict(cfg), Dumper=_yaml_classes()[1], sort_keys=False, allow_unicode=True)


_NULL_WORDS = ("", "null", "~", "none")  # --set KEY=<one of these> sets an Optional field to None


def _parse_override(key: str, raw: str, tp: Any) -> Any:
    """The value of ``--set key=raw`` for a field annotated ``tp``. A string field takes the text as typed
    (``out_dir=2024`` is the folder "2024"; YAML quotes are removed); null / ~ / none / nothing give None for an
    Optional field; every other field reads ``raw`` as YAML (``train.lr=1e-3``, ``input.multiscale=[480, 800]``)."""
    import yaml

    text = raw.strip()
    nullable, options = _optional(tp)
    if nullable and text.lower() in _NULL_WORDS:
        return None
    if options == (str,):
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            try:
                unquoted = _load_yaml(text)
            except yaml.YAMLError:
                unquoted = None
            if isinstance(unquoted, str):
                return unquoted
        return text
    if not text:
        return None
    try:
        return _load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {e}") from e


def apply_override(cfg: Config, assignment: str) -> None:
    """Apply one ``key=value``: e.g. ``train.lr=1e-3``, ``input.multiscale=[480,800]``, ``out_dir=2024``,
    ``model.init=null``. The value is read according to the field's declared type (:func:`_parse_override`)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    node: Any = cfg
    for i, part in enumerate(parts[:-1]):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            raise ConfigError(f"unknown config key: {'.'.join(parts[: i + 1])}")
        node = getattr(node, part)
    last = parts[-1]
    if not dataclasses.is_dataclass(node) or last not in {f.name for f in dataclasses.fields(node)}:
        raise ConfigError(f"unknown config key: {key}")
    tp = typing.get_type_hints(type(node))[last]
    value = _parse_override(key, raw, tp)
    if dataclasses.is_dataclass(tp):
        setattr(node, last, _from_dict(tp, value, key + "."))
    else:
        setattr(node, last, _check_type(key, value, tp))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (a dump of :class:`Config`, any subset of keys) and apply ``key=value`` overrides."""
    import yaml

    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = _load_yaml(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        try:
            cfg = _from_dict(Config, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    for a in overrides:
        apply_override(cfg, a)
    validate_config(cfg)
    return cfg


_DEVICE = re.compile(r"^(?:auto|cpu|cuda(?::[0-9]+)?)$")


def _normalise_device(device: str) -> str:
    """``"N"`` (a bare CUDA index, as ultralytics takes it) -> ``"cuda:N"``; anything else as it is."""
    d = device.strip()
    return f"cuda:{int(d)}" if re.fullmatch(r"[0-9]+", d) else d


def device_name(device: str, key: str = "train.device") -> str:
    """The one rule for a device setting (``train.device``, ``--device``): ``auto``, ``cpu``, ``cuda``, ``cuda:N``
    or ``N`` (read as ``cuda:N``, as ultralytics takes it); returns the normalised name, a ConfigError naming
    ``key`` otherwise. :func:`check_device` also checks that this machine has it."""
    normal = _normalise_device(device)
    if not _DEVICE.match(normal):
        fix = ("one process runs on one device: for several GPUs launch with torchrun --nproc_per_node=N and "
               "train.device=auto" if re.fullmatch(r"[0-9]+(?:\s*,\s*[0-9]+)+", normal) else
               "use auto, cpu, cuda, cuda:N or N (a CUDA index)")
        raise ConfigError(f"{key}: {device!r} is not a device gfldet runs on; {fix}")
    return normal


def validate_config(cfg: Config) -> None:
    """Value checks beyond types. Also normalises ``train.device`` in place (``"0"`` -> ``"cuda:0"``)."""
    t = cfg.train
    device = device_name(t.device)
    if device != t.device:
        log.debug("train.device %r read as %r", t.device, device)
        t.device = device
    inp = cfg.input
    checks = [
        (t.epochs >= 1, "train.epochs", t.epochs, "must be >= 1"),
        (t.batch_size >= 1, "train.batch_size", t.batch_size, "must be >= 1"),
        (t.lr is None or t.lr > 0, "train.lr", t.lr, "must be > 0"),
        (t.schedule in ("step", "cosine"), "train.schedule", t.schedule, "must be 'step' or 'cosine'"),
        (t.warmup_iters is None or t.warmup_iters >= 0, "train.warmup_iters", t.warmup_iters, "must be >= 0 or null"),
        (t.milestones is None or all(m >= 1 for m in t.milestones), "train.milestones", t.milestones, "epochs must be >= 1"),
        (cfg.model.frozen_stages is None or 0 <= cfg.model.frozen_stages <= 4, "model.frozen_stages", cfg.model.frozen_stages,
         "must be 0..4 or null"),
        (t.norm_init_batches >= 0, "train.norm_init_batches", t.norm_init_batches, "must be >= 0"),
        (t.norm_init_batches == 0 or not (cfg.model.weights_backbone or cfg.model.init), "train.norm_init_batches",
         t.norm_init_batches, "is for training from scratch: it would replace the BatchNorm statistics of "
         "model.weights_backbone / model.init (set it to 0)"),
        (cfg.model.base_channels >= 1, "model.base_channels", cfg.model.base_channels, "must be >= 1"),
        (cfg.model.base_channels == 64 or not cfg.model.weights_backbone, "model.base_channels", cfg.model.base_channels,
         "must be 64 (the standard width) with model.weights_backbone: ImageNet weights fit no other width"),
        (0 < t.warmup_ratio <= 1, "train.warmup_ratio", t.warmup_ratio, "must be in (0, 1]"),
        (t.grad_clip is None or t.grad_clip >= 0, "train.grad_clip", t.grad_clip, "must be >= 0 (0: off) or null (the regime's)"),
        (0 < t.ema_decay < 1, "train.ema_decay", t.ema_decay, "must be in (0, 1)"),
        (t.max_iters is None or t.max_iters >= 1, "train.max_iters", t.max_iters, "must be >= 1 or null"),
        (inp.min_size is None or inp.min_size >= 1, "input.min_size", inp.min_size, "must be >= 1 or null"),
        (inp.max_size is None or inp.max_size >= 1, "input.max_size", inp.max_size, "must be >= 1 or null"),
        (inp.min_size is None or inp.max_size is None or inp.max_size >= inp.min_size, "input.min_size/max_size",
         (inp.min_size, inp.max_size), "need min_size <= max_size"),
        (0 <= cfg.input.flip_prob <= 1, "input.flip_prob", cfg.input.flip_prob, "must be in [0, 1]"),
        (not cfg.input.multiscale or min(cfg.input.multiscale) >= 1, "input.multiscale", cfg.input.multiscale, "sizes must be >= 1"),
    ]
    for ok, key, value, why in checks:
        if not ok:
            raise ConfigError(f"{key}: {value!r} {why}")
    for key, allowed in (("quality", QUALITIES), ("box", BOXES), ("assigner", ASSIGNERS)):
        value = getattr(cfg.model, key)
        if value not in allowed:
            raise ConfigError(f"model.{key}: {value!r} is not one of {allowed}")


def preflight(cfg: Config, resume: bool = False) -> None:
    """Check what the config alone can tell before any data is read or any weights are loaded: ``model.arch`` is
    a builder, ``model.init`` and a path-like ``model.weights_backbone`` are files (a torchvision weights name must
    name weights for the architecture's backbone; nothing is downloaded), ``train.device`` exists on this machine,
    and the ``data.train`` / ``data.val`` files and folders that are set exist. Runs :func:`validate_config` first.

    Raises :class:`ConfigError` (a ``ValueError``) or ``FileNotFoundError`` with one message naming the key, the
    value and the fix. Empty data settings are not errors here (the trainer says what it needs). With ``resume``
    the weights files are not checked: the run's ``last.pt`` replaces them."""
    validate_config(cfg)
    if not str(cfg.out_dir).strip():
        raise ConfigError("out_dir is empty; name the run folder (--out DIR or out_dir: DIR)")
    if os.path.exists(cfg.out_dir) and not os.path.isdir(cfg.out_dir):
        raise ConfigError(f"out_dir={cfg.out_dir!r} is a file, not a folder; choose another run folder")
    from .models.zoo import ARCHS, _looks_like_path  # lazily: models import this module

    m = cfg.model
    if m.arch not in ARCHS:
        raise ConfigError(f"model.arch={m.arch!r} is not a known architecture; choose one of: {', '.join(sorted(ARCHS))}")
    if resume:
        check_device(cfg.train.device)
        return
    if m.init is not None and not os.path.isfile(m.init):
        raise FileNotFoundError(f"model.init={m.init!r}: no such file; set it to the path of a gfldet or mmdetection "
                                f"checkpoint of {m.arch}, or to null to start without one")
    if m.weights_backbone is not None and not os.path.isfile(m.weights_backbone):
        if _looks_like_path(m.weights_backbone):
            raise FileNotFoundError(
                f"model.weights_backbone={m.weights_backbone!r}: no such file; set it to the path of a state dict with "
                f"torchvision's ResNet parameter names, to a torchvision weights name such as IMAGENET1K_V1, or to "
                f"null to train from scratch")
        torchvision_weights(m.arch, m.weights_backbone, ARCHS[m.arch][1])
    check_device(cfg.train.device)
    for split in ("train", "val"):
        s = getattr(cfg.data, split)
        for name, want_dir in (("ann", False), ("images", True)):
            value = getattr(s, name)
            if not value:
                continue
            key, what = f"data.{split}.{name}", ("folder" if want_dir else "file")
            fix = ("the folder the annotation file's file_name entries are relative to" if want_dir
                   else "a COCO-format annotation JSON")
            if not os.path.exists(value):
                raise FileNotFoundError(f"{key}={value!r}: no such {what}; set it to {fix}")
            if os.path.isdir(value) != want_dir:
                raise FileNotFoundError(f"{key}={value!r} is a {'file' if want_dir else 'folder'}; set it to {fix}")


def torchvision_weights(arch: str, name: str, tv_name: str) -> Any:
    """The torchvision ImageNet weights (a ``WeightsEnum`` member, looked up, not fetched) that ``name`` (e.g.
    ``IMAGENET1K_V1`` or ``ResNet50_Weights.IMAGENET1K_V1``) names for ``arch``'s backbone, torchvision's
    ``tv_name``; a ConfigError naming the value and the choices otherwise. The one rule for preflight and the
    builders."""
    key = f"model.weights_backbone={name!r}"
    if not tv_name:
        raise ConfigError(f"{key}: torchvision publishes no ImageNet weights for {arch}'s backbone; set it to the path "
                          "of a state dict with torchvision's ResNet parameter names, or to null to train from scratch")
    from torchvision.models import get_model_weights, get_weight

    enum_name = f"{tv_name.replace('resnet', 'ResNet')}_Weights"
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


def check_device(device: str, key: str = "train.device") -> str:
    """:func:`device_name`, and that this machine has that device (as ``init_distributed`` and the commands use
    it); returns the normalised name."""
    device = device_name(device, key)
    if not device.startswith("cuda"):
        return device
    import torch

    key = f"{key}={device!r}"
    if not torch.cuda.is_available():
        raise ConfigError(f"{key} but CUDA is not available on this machine; use cpu (or auto: CUDA when available)")
    if ":" in device:
        index, count = int(device.split(":", 1)[1]), torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"{key} but this machine has {count} CUDA devices (cuda:0..cuda:{count - 1}); "
                              "choose one of them, or auto")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(f"{key} would put every torchrun process on the same GPU; with torchrun set "
                              "train.device=auto or cuda (each process takes the GPU of its LOCAL_RANK)")
    return device


# ---------------------------------------------------------------------------------------------------------
# Training regimes. The paper's recipe (frozen stem + layer1, frozen BatchNorm statistics, lr 0.01 per 16 images,
# no clipping) is for an ImageNet-initialised backbone; applied to a random one it freezes random layers and
# "normalises" with statistics that are mean 0 / variance 1, i.e. not at all. torchvision's detection builders
# switch on the same condition (FrozenBatchNorm2d and 3 trainable layers with weights, BatchNorm2d and 5 without).
# From scratch (cf. He et al., "Rethinking ImageNet Pre-training", 2019: normalisation trained, lr 0.02 per 16
# images) gfldet trains every layer with ordinary BatchNorm at twice the paper's rate, with gradients clipped.


@dataclass(frozen=True)
class Regime:
    name: str
    frozen_stages: int
    norm_eval: bool
    lr_per_16: float  # base learning rate for a total batch of 16 images (scaled linearly)
    grad_clip: float  # 0: none


REGIMES = {
    True: Regime("pretrained", frozen_stages=1, norm_eval=True, lr_per_16=0.01, grad_clip=0.0),
    False: Regime("from scratch", frozen_stages=0, norm_eval=False, lr_per_16=0.02, grad_clip=35.0),
}
WARMUP_ITERS = 500  # the paper's
WARMUP_MAX_FRACTION = 0.1  # the automatic warm-up never takes more than this share of the run


def backbone_regime(pretrained: bool) -> Regime:
    """The regime of a model that starts from pretrained weights (``True``) or from random ones."""
    return REGIMES[bool(pretrained)]


def warmup_length(t: TrainConfig, total_iters: int) -> int:
    """Warm-up iterations: ``train.warmup_iters`` when set, else 500 capped at 10% of ``total_iters``
    (the paper's 500 of 90k iterations stays 500; a 450-iteration run warms up for 45)."""
    if t.warmup_iters is not None:
        return int(t.warmup_iters)
    return min(WARMUP_ITERS, int(WARMUP_MAX_FRACTION * max(0, total_iters)))


def step_milestones(t: TrainConfig) -> list[int]:
    """Epochs at which the step schedule multiplies the rate by ``gamma``: ``train.milestones`` when set, else the
    paper's [8, 11] of 12 scaled to ``train.epochs`` (rounded down; milestones at 0 or repeated are dropped)."""
    if t.milestones is not None:
        return [int(m) for m in t.milestones]
    return sorted({m for m in (t.epochs * 2 // 3, t.epochs * 11 // 12) if 1 <= m < t.epochs})


def resolve_training(cfg: Config, iters_per_epoch: int, world_size: int = 1) -> tuple[Config, list[str]]:
    """A copy of ``cfg`` with every automatic (null) setting of the model and training sections filled in for a
    run of ``iters_per_epoch`` iterations per epoch on ``world_size`` processes, and log lines that say which
    regime runs, why, and which values were chosen (explicit values are kept and named as such)."""
    import copy

    out = copy.deepcopy(cfg)
    m, t = out.model, out.train
    pretrained = bool(m.weights_backbone or m.init)
    regime = backbone_regime(pretrained)
    why = (f"model.weights_backbone={m.weights_backbone}" if m.weights_backbone else f"model.init={m.init}") if pretrained \
        else "no model.weights_backbone or model.init"
    chosen, explicit = [], []

    def pick(section: Any, key: str, value: Any, label: str) -> None:
        if getattr(section, key) is None:
            setattr(section, key, value)
            chosen.append(f"{label}={value}")
        else:
            explicit.append(f"{label}={getattr(section, key)}")

    total_batch = t.batch_size * world_size
    total_iters = t.epochs * iters_per_epoch if t.max_iters is None else min(t.max_iters, t.epochs * iters_per_epoch)
    pick(m, "frozen_stages", regime.frozen_stages, "model.frozen_stages")
    pick(m, "norm_eval", regime.norm_eval, "model.norm_eval")
    pick(t, "lr", round(regime.lr_per_16 * total_batch / 16, 10), "train.lr")
    pick(t, "grad_clip", regime.grad_clip, "train.grad_clip")
    pick(t, "warmup_iters", warmup_length(t, total_iters), "train.warmup_iters")
    if t.schedule == "step":
        pick(t, "milestones", step_milestones(t), "train.milestones")
    lines = [f"training regime: {regime.name} ({why}); chosen: {', '.join(chosen) or 'nothing'}"
             + (f"; set in the config: {', '.join(explicit)}" if explicit else "")]
    if cfg.train.warmup_iters is not None and total_iters and t.warmup_iters > 0.25 * total_iters:
        lines.append(f"train.warmup_iters={t.warmup_iters} is {t.warmup_iters / total_iters:.0%} of this run's "
                     f"{total_iters} iterations (null: at most {WARMUP_MAX_FRACTION:.0%})")
    return out, lines
