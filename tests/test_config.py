"""The run configuration: YAML files, typed --set overrides, shipped recipes."""
from __future__ import annotations

from pathlib import Path

import pytest

from gfldet.config import ConfigError, load_config, resolve_training, step_milestones, warmup_length

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


def test_defaults_are_the_paper_with_pretrained_weights():
    c = load_config(None, ["model.weights_backbone=IMAGENET1K_V1", "train.batch_size=2"])
    r, notes = resolve_training(c, iters_per_epoch=7330, world_size=8)  # COCO train2017 on 8 x 2 images
    assert (r.model.frozen_stages, r.model.norm_eval) == (1, True)
    assert (r.train.lr, r.train.warmup_iters, r.train.milestones, r.train.grad_clip) == (0.01, 500, [8, 11], 0.0)
    assert (r.train.weight_decay, r.model.qfl_beta) == (1e-4, 2.0)
    assert "pretrained" in notes[0] and "model.weights_backbone=IMAGENET1K_V1" in notes[0]
    assert c.model.norm_eval is None and c.train.lr is None  # the input is left as it was


def test_from_scratch_regime_when_no_weights_are_named():
    c = load_config(None, ["train.epochs=6", "train.batch_size=8"])
    r, notes = resolve_training(c, iters_per_epoch=75)  # 600 images: 450 iterations in all
    assert (r.model.frozen_stages, r.model.norm_eval) == (0, False)
    assert (r.train.lr, r.train.grad_clip, r.train.milestones) == (0.01, 35.0, [4, 5])
    assert r.train.warmup_iters == 45  # 10% of the run, not the paper's 500
    assert "from scratch" in notes[0] and "no model.weights_backbone" in notes[0]
    mc = r.model_config(num_classes=3)
    assert (mc.frozen_stages, mc.norm_eval) == (0, False)
    # the unresolved run config gives the same model (the rule lives in one place)
    assert (c.model_config(3).frozen_stages, c.model_config(3).norm_eval) == (0, False)


def test_explicit_settings_win_over_the_regime():
    c = load_config(None, ["model.norm_eval=true", "model.frozen_stages=2", "train.lr=0.003", "train.warmup_iters=400",
                           "train.milestones=[3]", "train.grad_clip=0", "train.epochs=6", "train.batch_size=8"])
    r, notes = resolve_training(c, iters_per_epoch=75)
    assert (r.model.frozen_stages, r.model.norm_eval, r.train.lr, r.train.warmup_iters, r.train.milestones,
            r.train.grad_clip) == (2, True, 0.003, 400, [3], 0.0)
    assert "set in the config" in notes[0] and "model.norm_eval=True" in notes[0]
    assert any("warmup_iters=400" in n and "89%" in n for n in notes[1:])  # a long explicit warm-up is pointed out


@pytest.mark.parametrize("epochs,expected", [(12, [8, 11]), (24, [16, 22]), (36, [24, 33]), (6, [4, 5]), (3, [2]), (1, [])])
def test_automatic_milestones_scale_the_papers_schedule(epochs, expected):
    assert step_milestones(load_config(None, [f"train.epochs={epochs}"]).train) == expected


def test_warmup_is_capped_at_a_tenth_of_the_run():
    t = load_config(None).train
    assert (warmup_length(t, 90_000), warmup_length(t, 450), warmup_length(t, 5)) == (500, 45, 0)


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
