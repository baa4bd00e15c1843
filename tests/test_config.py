"""The run configuration: YAML files, typed --set overrides, shipped recipes."""
from __future__ import annotations

from pathlib import Path

import pytest

from gfldet.config import ConfigError, load_config
from gfldet.engine.recipe import resolve_training
from gfldet.models.zoo import build_nanodet_arch, is_nanodet

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_shipped_configs_load_and_build_model_configs():
    assert {p.name for p in CONFIGS} >= {"gfl_r50_fpn_1x_coco.yaml", "gfl_r50_fpn_ms2x_coco.yaml",
                                         "gfl_r101_fpn_ms2x_coco.yaml", "gfl_x101_32x4d_fpn_ms2x_coco.yaml"}
    for p in CONFIGS:
        cfg = load_config(p)
        if is_nanodet(cfg.model.arch):
            model = build_nanodet_arch(cfg.model.arch, num_classes=80)
            assert model.spec.input_size == (416, 416) and resolve_training(cfg, 1233)[0].train.optimizer == "adamw"
            with pytest.raises(ConfigError, match="NanoDet-Plus"):
                cfg.model_config(num_classes=80)
            continue
        mc = cfg.model_config(num_classes=80)
        assert mc.num_classes == 80 and mc.reg_max == 16 and cfg.train.momentum == 0.9
    r50 = load_config(CONFIGS[[p.name for p in CONFIGS].index("gfl_r50_fpn_1x_coco.yaml")])
    assert (r50.train.epochs, r50.train.milestones, r50.input.min_size, r50.input.max_size) == (12, [8, 11], 800, 1333)
    ms = load_config(CONFIGS[[p.name for p in CONFIGS].index("gfl_r50_fpn_ms2x_coco.yaml")])
    assert ms.train.epochs == 24 and min(ms.input.multiscale) == 480 and max(ms.input.multiscale) == 960
    assert ms.model_config(80).train_min_sizes == tuple(ms.input.multiscale)


def test_yaml_roundtrip(tmp_path):
    cfg = load_config(None, ["train.lr=0.02", "input.multiscale=[480, 800]", "model.arch=gfl_resnet18_fpn"])
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert load_config(p) == cfg


@pytest.mark.parametrize("override, match", [
    ("train.lr=abc", "train.lr"),
    ("train.epochs=1.5", "train.epochs: expected an integer"),
    ("train.foo=1", "unknown config key: train.foo"),
    ("model.norm_eval=maybe", "model.norm_eval: expected true or false or null, got 'maybe'"),
    ("train.schedule=poly", "train.schedule"),
    ("train.amp=yes please", "train.amp"),
    ("input.multiscale=[480, x]", r"input.multiscale\[1\]"),
    ("nonsense", "key=value"),
    ("input.min_size=2000", "min_size"),
])
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2}\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00")  # e.g. a checkpoint passed as the config
    with pytest.raises(ConfigError, match=r"weights.yaml: not a YAML config: not UTF-8 text"):
        load_config(binary)
    unk = tmp_path / "unk.yaml"
    unk.write_text("train:\n  epochs: 2\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unk.yaml: unknown config key.*train.epoch"):
        load_config(unk)


def test_unknown_arch_is_reported():
    cfg = load_config(None, ["model.arch=gfl_resnet7_fpn"])
    with pytest.raises(ConfigError, match="gfl_resnet7_fpn"):
        cfg.model_config(3)


def test_norm_init_is_refused_with_pretrained_weights():
    with pytest.raises(ConfigError, match="train.norm_init_batches.*from scratch"):
        load_config(None, ["train.norm_init_batches=4", "model.weights_backbone=IMAGENET1K_V1"])
    with pytest.raises(ConfigError, match="train.norm_init_batches"):
        load_config(None, ["train.norm_init_batches=-1"])
    assert load_config(None, ["train.norm_init_batches=4"]).train.norm_init_batches == 4


def test_base_channels_override_reaches_the_model_config_and_is_checked():
    cfg = load_config(None, ["model.arch=gfl_resnet18_fpn", "model.base_channels=24"])
    assert cfg.model_config(num_classes=3).base_channels == 24
    with pytest.raises(ConfigError, match="model.base_channels"):
        load_config(None, ["model.base_channels=0"])
    with pytest.raises(ConfigError, match="model.base_channels.*ImageNet"):
        load_config(None, ["model.base_channels=32", "model.weights_backbone=IMAGENET1K_V1"])


# ---------------------------------------------------------------------------------------------------------
# YAML numbers, typed --set values, null for Optional fields, the printed config.

import dataclasses  # noqa: E402
import types  # noqa: E402
import typing  # noqa: E402

from gfldet import config as C  # noqa: E402


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("5E-4", 5e-4), ("1e3", 1000.0), ("+1e-3", 1e-3),
                                         ("-2.5e-2", -0.025), ("1.0e3", 1000.0), (".5e1", 5.0), ("0.02", 0.02)])
def test_exponent_floats_are_floats_in_files_and_overrides(tmp_path, text, value):
    p = tmp_path / "c.yaml"
    p.write_text(f"model: {{ignore_iof_thr: {text}}}\ntrain: {{lr: {text.lstrip('+-')}}}\n")
    cfg = load_config(p)
    assert cfg.model.ignore_iof_thr == pytest.approx(value) and isinstance(cfg.model.ignore_iof_thr, float)
    assert cfg.train.lr == pytest.approx(abs(value)) and isinstance(cfg.train.lr, float)
    assert load_config(None, [f"model.ignore_iof_thr={text}"]).model.ignore_iof_thr == pytest.approx(value)
    assert load_config(None, [f"train.lr={text.lstrip('+-')}"]).train.lr == pytest.approx(abs(value))


def test_other_scalars_resolve_as_before():
    import yaml

    for text in ["1", "0x10", "1_000", "1.5", "yes", "off", "null", "~", "abc", "1e", "e3", "1e3x", "2001-12-14", "[1, 2e2]"]:
        expected = yaml.safe_load(text)
        got = C.load_yaml(text)
        if text == "[1, 2e2]":
            assert got == [1, 200.0]
        else:
            assert got == expected and type(got) is type(expected), text


def test_a_bad_number_names_the_key_the_value_and_the_type(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number or null, got 'abc'"):
        load_config(None, ["train.lr=abc"])
    with pytest.raises(ConfigError, match=r"train\.momentum: expected a number, got 'fast'"):
        load_config(None, ["train.momentum=fast"])
    p = tmp_path / "q.yaml"
    p.write_text("train: {momentum: '0.9'}\n")
    with pytest.raises(ConfigError, match=r"q\.yaml: train\.momentum: expected a number, got '0\.9' .*quotes"):
        load_config(p)
    assert load_config(None, ["train.momentum=1"]).train.momentum == 1.0  # an int is a number


def test_string_fields_take_the_text_typed_on_the_command_line():
    cfg = load_config(None, ["out_dir=2024", "data.train.ann=1e3", "model.arch=gfl_resnet18_fpn",
                             "data.val.images=true", "model.init=007.pt", "model.weights_backbone=2"])
    assert (cfg.out_dir, cfg.data.train.ann, cfg.data.val.images, cfg.model.init, cfg.model.weights_backbone) == \
        ("2024", "1e3", "true", "007.pt", "2")
    assert load_config(None, ["out_dir='my runs/a'"]).out_dir == "my runs/a"  # YAML quotes are still understood
    assert load_config(None, ['out_dir="0"']).out_dir == "0"
    assert load_config(None, ["out_dir=null"]).out_dir == "null"  # not Optional: a folder named null

def test_a_number_for_a_string_field_in_a_file_is_refused_with_a_hint(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("model: {arch: 3}\n")
    with pytest.raises(ConfigError, match=r"model\.arch: expected a string, got 3 \(in YAML, quote it"):
        load_config(p)
    p.write_text("model: {init: 2024}\n")
    with pytest.raises(ConfigError, match=r"model\.init: expected a string or null, got 2024"):
        load_config(p)


@pytest.mark.parametrize("typed, device", [("0", "cuda:0"), ("3", "cuda:3"), ("cpu", "cpu"), ("cuda", "cuda"),
                                           ("cuda:1", "cuda:1"), ("auto", "auto"), (" 1 ", "cuda:1")])
def test_device_index_means_that_cuda_device(tmp_path, typed, device):
    assert load_config(None, [f"train.device={typed}"]).train.device == device
    if typed.strip().isdigit():
        p = tmp_path / "d.yaml"
        p.write_text(f"train: {{device: '{typed.strip()}'}}\n")
        assert load_config(p).train.device == device
        cfg = C.Config()
        cfg.train.device = typed.strip()
        C.validate_config(cfg)
        assert cfg.train.device == device


@pytest.mark.parametrize("typed, match", [("mps", "not a device"), ("0,1", "torchrun"), ("cuda:x", "not a device"),
                                          ("gpu", "not a device")])
def test_bad_devices_are_refused(typed, match):
    with pytest.raises(ConfigError, match=rf"train\.device: '{typed}' .*{match}"):
        load_config(None, [f"train.device={typed}"])


def _optional_fields(cls: type = C.Config, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _optional_fields(tp, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
            yield prefix + f.name


OPTIONAL = sorted(_optional_fields())


def test_input_sizes_are_optional_as_the_model_documents():
    assert {"input.min_size", "input.max_size", "model.init", "model.weights_backbone", "train.lr"} <= set(OPTIONAL)


@pytest.mark.parametrize("key", OPTIONAL)
@pytest.mark.parametrize("typed", ["null", "~", "none", "None", "NULL", ""])
def test_null_works_for_every_optional_field_on_the_command_line(key, typed):
    cfg = load_config(None, [f"{key}={typed}"])
    section, name = (cfg, key) if "." not in key else (getattr(cfg, key.split(".")[0]), key.split(".")[1])
    assert getattr(section, name) is None


@pytest.mark.parametrize("key", OPTIONAL)
def test_null_works_for_every_optional_field_in_files(tmp_path, key):
    section, name = key.split(".")
    p = tmp_path / "n.yaml"
    p.write_text(f"{section}:\n  {name}: null\n")
    assert getattr(getattr(load_config(p), section), name) is None


def test_input_min_size_null_reaches_the_model():
    cfg = load_config(None, ["input.min_size=null"])
    mc = cfg.model_config(3)
    assert (mc.min_size, mc.max_size) == (None, 1333)
    both = load_config(None, ["input.min_size=null", "input.max_size=null"]).model_config(3)
    assert (both.min_size, both.max_size) == (None, None)
    with pytest.raises(ConfigError, match="input.max_size"):
        load_config(None, ["input.min_size=null", "input.max_size=0"])
    with pytest.raises(ConfigError, match="input.min_size"):
        load_config(None, ["input.min_size=0", "input.max_size=null"])


def test_format_config_prints_every_field_and_reads_back(tmp_path):
    import yaml

    sets = ["train.lr=1e-3", "train.weight_decay=1e-5", "out_dir=2024", "data.train.ann=1e3", "data.val.images=yes",
            "input.min_size=null", "train.device=0", "model.weights_backbone=IMAGENET1K_V1", "input.multiscale=[480, 800]",
            "model.anchor_ratios=[1]", "train.milestones=[8, 11]"]
    cfg = load_config(None, sets)
    text = C.format_config(cfg)
    data = yaml.safe_load(text)

    def keys(cls, d):
        hints = typing.get_type_hints(cls)
        assert set(d) == {f.name for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                keys(hints[f.name], d[f.name])

    keys(C.Config, data)  # every field, defaults included
    p = tmp_path / "resolved.yaml"
    p.write_text(text)
    back = load_config(p)
    assert back == cfg
    assert (back.train.lr, back.out_dir, back.data.train.ann, back.train.device, back.input.min_size) == \
        (0.001, "2024", "1e3", "cuda:0", None)
    assert isinstance(back.model.anchor_ratios[0], float)
    assert cfg.to_yaml() == text
    assert load_config(None) == _reload(tmp_path, C.format_config(load_config(None)))


def _reload(tmp_path, text):
    p = tmp_path / "again.yaml"
    p.write_text(text)
    return load_config(p)


def test_the_model_section_is_every_model_config_field_but_those_set_elsewhere():
    from gfldet.models.config import ModelConfig

    settings = {f.name for f in dataclasses.fields(C.ModelSettings)}
    elsewhere = {"backbone", "depth", "groups", "width_per_group", "num_classes", "min_size", "max_size", "train_min_sizes"}
    assert settings == {f.name for f in dataclasses.fields(ModelConfig)} - elsewhere | {"arch", "weights_backbone", "init",
                                                                                       "init_strict"}
    mc = load_config(None, ["model.gn_groups=8", "model.pixel_std=[1, 1, 1]", "model.strides=[8, 16, 32, 64, 128]"]).model_config(3)
    assert (mc.gn_groups, mc.pixel_std, mc.strides) == (8, (1.0, 1.0, 1.0), (8, 16, 32, 64, 128))
    # the defaults are ModelConfig's, with the from-scratch regime (no weights named)
    assert load_config(None).model_config(80) == dataclasses.replace(ModelConfig(), frozen_stages=0, norm_eval=False)


def test_a_model_rule_is_the_model_configs_named_as_the_run_configs_key():
    from gfldet.models.config import ModelConfig

    with pytest.raises(ConfigError, match=r"^model\.fcos_radius: -1\.0 must be >= 0$"):
        load_config(None, ["model.fcos_radius=-1"])
    with pytest.raises(ValueError, match=r"^model config fcos_radius=-1\.0 must be >= 0$"):
        ModelConfig(fcos_radius=-1.0)
