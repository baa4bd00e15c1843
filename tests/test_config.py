"""The run configuration: YAML files, typed --set overrides, shipped recipes."""
from __future__ import annotations

from pathlib import Path

import pytest

from gfldet.config import Config, ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_shipped_configs_load_and_build_model_configs():
    assert {p.name for p in CONFIGS} >= {"gfl_r50_fpn_1x_coco.yaml", "gfl_r50_fpn_ms2x_coco.yaml",
                                         "gfl_r101_fpn_ms2x_coco.yaml", "gfl_x101_32x4d_fpn_ms2x_coco.yaml"}
    for p in CONFIGS:
        cfg = load_config(p)
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
    ("model.arch=3", "model.arch: expected a string"),
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
    unk = tmp_path / "unk.yaml"
    unk.write_text("train:\n  epochs: 2\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unk.yaml: unknown config key.*train.epoch"):
        load_config(unk)


def test_unknown_arch_is_reported():
    cfg = load_config(None, ["model.arch=gfl_resnet7_fpn"])
    with pytest.raises(ConfigError, match="gfl_resnet7_fpn"):
        cfg.model_config(3)


def test_defaults_are_the_paper():
    c = Config()
    assert (c.train.lr, c.train.warmup_iters, c.train.weight_decay, c.model.qfl_beta) == (None, 500, 1e-4, 2.0)


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
