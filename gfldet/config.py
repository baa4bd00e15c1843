"""The run configuration (``gfldet train CONFIG.yaml --set key=value ...``): the dataclass tree, YAML files, typed
``--set`` overrides and value checks. A YAML config is a dump of these; nothing is looked up by string type name.
The detector's own settings are :class:`gfldet.models.config.ModelConfig`; the ``model`` section holds them."""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .models.config import REGIME_FIELDS, ConfigError, FieldError, ModelConfig, current_field_names
from .models.zoo import (ARCH_DEFAULT_FIELDS, ARCH_FIELDS, ARCHS, arch_config, arch_defaults, check_imagenet_width,
                         is_nanodet)

__all__ = ["Config", "ModelSettings", "DataConfig", "SplitConfig", "InputConfig", "TrainConfig", "ConfigError",
           "ModelConfig", "load_config", "apply_override", "validate_config", "format_config", "read_yaml", "load_yaml",
           "device_name", "model_fields"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# The model section: the run's own settings, then every ModelConfig field but those that come from elsewhere
# (the builder named by arch fixes the ResNet's depth and groups; the class count comes from the annotation
# file; the input sizes from the input section). Generated from ModelConfig, so a new detector setting is a
# config key at once. frozen_stages / norm_eval take null: the regime's (gfldet.engine.recipe.REGIMES) for this run's weights;
# fpn_channels, head_channels, stacked_convs, head_conv take null: the architecture's (GFL's 256 / 256 / 4 / conv
# for ResNets, a light 96 / 96 / 2 / dwsep head for the small torchvision backbones; gfldet.models.zoo.arch_defaults).
# train.schedule's values (gfldet.engine.recipe.lr_factor)
SCHEDULES = ("step", "cosine", "linear", "constant")
NOT_IN_MODEL_SECTION = frozenset({*ARCH_FIELDS, "num_classes", "min_size", "max_size", "train_min_sizes"})
RUN_SETTINGS = [
    # a builder: gfl_resnet18_fpn, gfl_resnet50_fpn, gfl_resnet101_fpn, gfl_resnext101_32x4d_fpn, and the light
    # gfl_mobilenet_v2_fpn, gfl_mobilenet_v3_large_fpn, gfl_shufflenet_v2_x1_0_fpn, gfl_efficientnet_b0_fpn
    ("arch", str, field(default="gfl_resnet50_fpn")),
    # torchvision ImageNet weights of the arch's backbone, e.g. IMAGENET1K_V1 (fetched by torch hub, SHA-256
    # checked), or the path of a local state dict with torchvision's parameter names
    ("weights_backbone", typing.Optional[str], field(default=None)),
    # a gfldet or mmdetection checkpoint to start from (fine-tuning): every tensor whose name and shape fit is
    # loaded, the others (e.g. the classifier of another class count) keep their initialisation; the log names them
    ("init", typing.Optional[str], field(default=None)),
    ("init_strict", bool, field(default=False)),  # true: every tensor must fit (an error names those that do not)
]


def _model_setting(f: dataclasses.Field, tp: Any) -> tuple[str, Any, dataclasses.Field]:
    """A model-section field for ModelConfig field ``f`` of type ``tp``: tuples become lists (YAML has no
    tuples), the regime's fields and the neck/head sizes that follow from the architecture (zoo.arch_defaults)
    become Optional with None by default, the rest keep ModelConfig's default."""
    if f.name in REGIME_FIELDS or f.name in ARCH_DEFAULT_FIELDS:
        return f.name, typing.Optional[tp], field(default=None)
    if typing.get_origin(tp) is tuple:
        return f.name, list[typing.get_args(tp)[0]], field(default_factory=functools.partial(list, f.default))
    return f.name, tp, field(default=f.default)


_MODEL_HINTS = typing.get_type_hints(ModelConfig)
ModelSettings = dataclasses.make_dataclass(
    "ModelSettings",
    RUN_SETTINGS + [_model_setting(f, _MODEL_HINTS[f.name]) for f in dataclasses.fields(ModelConfig)
                    if f.name not in NOT_IN_MODEL_SECTION],
    namespace={"__module__": __name__, "__doc__": (
        "The model section of a run config: arch, weights_backbone, init, init_strict, then every "
        ":class:`ModelConfig` field but the architecture's, the class count (from the annotation file) and the "
        "input sizes (from ``input``). Defaults are the paper's GFL R-50-FPN.")})
MODEL_SETTINGS = tuple(f.name for f in dataclasses.fields(ModelSettings)[len(RUN_SETTINGS):])


def model_fields(m: Any) -> dict[str, Any]:
    """The :class:`ModelConfig` fields a model section sets (lists as tuples; None: the regime's)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in ((k, getattr(m, k)) for k in MODEL_SETTINGS)}


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
    # probability that a training image is a mosaic of four (gfldet.data.transforms.mosaic: YOLOv4's, at the images'
    # own scale); 0: off
    mosaic: float = 0.0
    # the last epochs train without mosaic, on whole images as at test time (as ultralytics' close_mosaic); null:
    # 10% of train.epochs, rounded up. Counted from train.epochs: `--resume --set train.epochs=N` turns it back on
    # for the epochs before the new end's last ones
    mosaic_off_epochs: int | None = None


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 2  # images per process
    lr: float | None = None  # None: the regime's rate per 16 images scaled linearly (0.01 pretrained, the paper; 0.02 from scratch); NanoDet-Plus: 0.001
    # null: the architecture's recipe (gfldet.engine.recipe.RECIPES): "sgd" for GFL, "adamw" for NanoDet-Plus
    optimizer: str | None = None
    momentum: float = 0.9  # SGD's
    weight_decay: float | None = None  # null: the recipe's (1e-4 GFL, the paper's; 0.05 NanoDet-Plus)
    # None: 500 (the paper's), but at most WARMUP_MAX_FRACTION of the run's iterations. An explicit value wins.
    warmup_iters: int | None = None
    warmup_ratio: float | None = None  # the warm-up's first factor; null: the recipe's (0.001 GFL; 1e-4 NanoDet-Plus)
    # "step" (x gamma at each milestone epoch), "cosine" or "linear" (per iteration, down to final_lr_ratio x lr at
    # the run's end) or "constant" (no decay); null: the recipe's (step for GFL, cosine for NanoDet-Plus)
    schedule: str | None = None
    final_lr_ratio: float | None = None  # where cosine / linear end, a fraction of lr; null: the recipe's (0; NanoDet-Plus 0.05)
    # None: the paper's [8, 11] of 12 epochs scaled to train.epochs (2/3 and 11/12 of the run, rounded down:
    # [16, 22] for 24 epochs, mmdetection's 2x; [4, 5] for 6). An explicit list wins.
    milestones: list[int] | None = None
    gamma: float = 0.1
    # max global grad norm. None: the regime's (none pretrained, as the reference's GFL config; 35 from scratch,
    # where an early large gradient would otherwise throw the random network off); 0: no clipping.
    grad_clip: float | None = None
    # mixed precision in training: float16 autocast (with a GradScaler) on CUDA; bfloat16 autocast on a CPU with
    # native bf16 units (AVX512-BF16 or AMX; the speed-up measured: docs/demo.md); on other CPUs a warning and
    # float32 (emulated bf16 would be slower). Evaluation stays float32 on the CPU.
    amp: bool = False
    channels_last: bool = False  # NHWC activations and weights (oneDNN's own layout on the CPU; docs/demo.md)
    ema: bool | None = None  # null: the recipe's (off for GFL; on for NanoDet-Plus, whose evaluation uses it)
    ema_decay: float = 0.9998
    seed: int = 0
    eval_interval: int = 1  # epochs between evaluations on data.val (0: never)
    log_interval: int = 20  # iterations between metric lines
    checkpoint_iters: int = 0  # also write last.pt every N iterations (0: only at epoch ends)
    max_iters: int | None = None  # stop (and checkpoint) after this many iterations in total
    # Train for about this many seconds of wall-clock (evaluations included) instead of a fixed train.epochs: the
    # number of epochs is fitted to the time from the measured speed (after the first iterations, then at every
    # epoch's end) and the schedule (warm-up, decay, milestones, mosaic's last epochs) follows the fitted length;
    # train.epochs is only the first guess. The run ends on an epoch boundary within about half an epoch of the
    # budget; config.yaml records the epochs it ran. null: train.epochs as set.
    time_budget_s: float | None = None
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
        """The detector's :class:`ModelConfig` for this run (automatic frozen_stages / norm_eval: the regime's); a
        GFL's only (a NanoDet-Plus arch is built by ``gfldet.models.zoo.build_nanodet_arch`` from its name)."""
        m, ms = self.model, tuple(self.input.multiscale) if self.input.multiscale else None
        if is_nanodet(m.arch):
            raise ConfigError(f"model.arch={m.arch!r} is a NanoDet-Plus: it has no GFL ModelConfig (build it with "
                              "gfldet.models.zoo.build_nanodet_arch)")
        return arch_config(m.arch, pretrained=bool(m.weights_backbone or m.init), num_classes=num_classes,
                           min_size=self.input.min_size, max_size=self.input.max_size, train_min_sizes=ms,
                           **model_fields(m))


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
    if cls is ModelSettings:  # a config written before a model field was renamed
        data = current_field_names(data)
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


def load_yaml(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_yaml_classes()[0])  # a SafeLoader


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file as plain data, read as configs are (``1e-3`` is a number)."""
    return load_yaml(Path(path).read_text())


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
                unquoted = load_yaml(text)
            except yaml.YAMLError:
                unquoted = None
            if isinstance(unquoted, str):
                return unquoted
        return text
    if not text:
        return None
    try:
        return load_yaml(text)
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
            data = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        except UnicodeDecodeError as e:  # a ValueError, but not one of gfldet's: without this, a traceback
            raise ConfigError(f"{path}: not a YAML config: not UTF-8 text ({e.reason} at byte {e.start})") from e
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


def _check_nanodet(cfg: Config) -> None:
    """A NanoDet-Plus run (``model.arch: nanodet_plus_*``) has its own network and input rules: the GFL settings of the
    model section, the input sizes and multi-scale training, and the from-scratch BatchNorm initialisation do not
    apply to it, so a value set for them is an error rather than silently unused."""
    defaults = ModelSettings()
    changed = [k for k in MODEL_SETTINGS if getattr(cfg.model, k) != getattr(defaults, k)]
    if changed:
        raise ConfigError(f"model.{changed[0]}={getattr(cfg.model, changed[0])!r}: {cfg.model.arch} is a NanoDet-Plus, "
                          f"which has no GFL model settings ({', '.join('model.' + k for k in changed)}); remove them")
    inp, base = cfg.input, InputConfig()
    if inp.mosaic:
        raise ConfigError(f"input.mosaic={inp.mosaic}: {cfg.model.arch} trains with the official NanoDet-Plus "
                          "augmentation, which has no mosaic (set it to 0)")
    if (inp.min_size, inp.max_size) != (base.min_size, base.max_size) or inp.multiscale:
        raise ConfigError(f"input.min_size / max_size / multiscale = {inp.min_size} / {inp.max_size} / {inp.multiscale}: "
                          f"{cfg.model.arch} warps every image to the input size in its name (with the official random "
                          "scale in training); remove these settings, or choose the _320 or _416 architecture")
    if cfg.train.norm_init_batches:
        raise ConfigError(f"train.norm_init_batches={cfg.train.norm_init_batches}: it sets GFL's frozen backbone "
                          f"BatchNorm statistics; {cfg.model.arch} trains its BatchNorm (set it to 0)")


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
        (t.schedule in (None,) + SCHEDULES, "train.schedule", t.schedule,
         f"must be one of {', '.join(repr(s) for s in SCHEDULES)} or null"),
        (t.optimizer in (None, "sgd", "adamw"), "train.optimizer", t.optimizer, "must be 'sgd', 'adamw' or null"),
        (t.weight_decay is None or t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0 or null"),
        (t.final_lr_ratio is None or 0 <= t.final_lr_ratio < 1, "train.final_lr_ratio", t.final_lr_ratio,
         "must be in [0, 1) or null"),
        (t.warmup_iters is None or t.warmup_iters >= 0, "train.warmup_iters", t.warmup_iters, "must be >= 0 or null"),
        (t.milestones is None or all(m >= 1 for m in t.milestones), "train.milestones", t.milestones, "epochs must be >= 1"),
        (cfg.model.frozen_stages is None or 0 <= cfg.model.frozen_stages <= 4, "model.frozen_stages", cfg.model.frozen_stages,
         "must be 0..4 or null"),
        (t.norm_init_batches >= 0, "train.norm_init_batches", t.norm_init_batches, "must be >= 0"),
        (t.norm_init_batches == 0 or not (cfg.model.weights_backbone or cfg.model.init), "train.norm_init_batches",
         t.norm_init_batches, "is for training from scratch: it would replace the BatchNorm statistics of "
         "model.weights_backbone / model.init (set it to 0)"),
        (t.warmup_ratio is None or 0 < t.warmup_ratio <= 1, "train.warmup_ratio", t.warmup_ratio, "must be in (0, 1] or null"),
        (t.grad_clip is None or t.grad_clip >= 0, "train.grad_clip", t.grad_clip, "must be >= 0 (0: off) or null (the regime's)"),
        (0 < t.ema_decay < 1, "train.ema_decay", t.ema_decay, "must be in (0, 1)"),
        (t.max_iters is None or t.max_iters >= 1, "train.max_iters", t.max_iters, "must be >= 1 or null"),
        (t.time_budget_s is None or (isinstance(t.time_budget_s, (int, float)) and math.isfinite(t.time_budget_s)
                                     and t.time_budget_s > 0), "train.time_budget_s", t.time_budget_s,
         "must be a number of seconds > 0, or null"),
        (inp.min_size is None or inp.min_size >= 1, "input.min_size", inp.min_size, "must be >= 1 or null"),
        (inp.max_size is None or inp.max_size >= 1, "input.max_size", inp.max_size, "must be >= 1 or null"),
        (inp.min_size is None or inp.max_size is None or inp.max_size >= inp.min_size, "input.min_size/max_size",
         (inp.min_size, inp.max_size), "need min_size <= max_size"),
        (0 <= cfg.input.flip_prob <= 1, "input.flip_prob", cfg.input.flip_prob, "must be in [0, 1]"),
        (0 <= cfg.input.mosaic <= 1, "input.mosaic", cfg.input.mosaic, "must be in [0, 1]"),
        (cfg.input.mosaic_off_epochs is None or cfg.input.mosaic_off_epochs >= 0, "input.mosaic_off_epochs",
         cfg.input.mosaic_off_epochs, "must be >= 0 or null"),
        (not cfg.input.multiscale or min(cfg.input.multiscale) >= 1, "input.multiscale", cfg.input.multiscale, "sizes must be >= 1"),
    ]
    for ok, key, value, why in checks:
        if not ok:
            raise ConfigError(f"{key}: {value!r} {why}")
    m = cfg.model
    if is_nanodet(m.arch):
        _check_nanodet(cfg)
        return
    try:  # the detector's own rules (gfldet.models.config), named as this file's keys
        fixed = ARCHS[m.arch][0] if m.arch in ARCHS else {}  # the depth decides e.g. whether DCN fits
        sizes = arch_defaults(m.arch) if m.arch in ARCHS else {}
        ModelConfig(**fixed, **(sizes | {k: v for k, v in model_fields(m).items() if v is not None}))
        if m.weights_backbone and fixed.get("backbone") == "resnet":
            check_imagenet_width(m.base_channels)
    except FieldError as e:
        raise ConfigError(f"model.{e.key}: {e.value!r} {e.why}") from None
