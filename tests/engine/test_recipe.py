"""The training recipe a run resolves: the regime's automatic settings, warm-up and step milestones."""
from __future__ import annotations

import pytest

from gfldet.config import load_config
from gfldet.engine.recipe import resolve_training, step_milestones, warmup_length


def test_defaults_are_the_paper_with_pretrained_weights():
    c = load_config(None, ["model.weights_backbone=IMAGENET1K_V1", "train.batch_size=2"])
    r, notes = resolve_training(c, iters_per_epoch=7330, world_size=8)  # COCO train2017 on 8 x 2 images
    assert (r.model.frozen_stages, r.model.norm_eval) == (1, True)
    assert (r.train.lr, r.train.warmup_iters, r.train.milestones, r.train.grad_clip) == (0.01, 500, [8, 11], 0.0)
    assert (r.train.weight_decay, r.model.qfl_beta) == (1e-4, 2.0)
    assert "pretrained" in notes[0] and "model.weights_backbone=IMAGENET1K_V1" in notes[0]
    assert c.model.norm_eval is None and c.train.lr is None  # the input is left as it was


def test_light_backbones_fine_tune_with_trained_batchnorm_and_their_own_head_sizes():
    c = load_config(None, ["model.arch=gfl_mobilenet_v2_fpn", "model.weights_backbone=IMAGENET1K_V1",
                           "train.batch_size=8", "train.epochs=16"])
    r, notes = resolve_training(c, iters_per_epoch=20)  # 156 images
    assert (r.model.frozen_stages, r.model.norm_eval) == (1, False)
    assert (r.model.fpn_channels, r.model.head_channels, r.model.stacked_convs, r.model.head_conv) == (96, 96, 2, "dwsep")
    assert (r.train.lr, r.train.grad_clip) == (0.005, 0.0)
    assert "pretrained, light backbone" in notes[0]
    mc = c.model_config(num_classes=1)  # the unresolved config gives the same model
    assert (mc.frozen_stages, mc.norm_eval, mc.fpn_channels) == (1, False, 96)
    # from scratch, a light backbone takes the from-scratch regime as a ResNet does
    s, notes = resolve_training(load_config(None, ["model.arch=gfl_mobilenet_v2_fpn"]), iters_per_epoch=20)
    assert (s.model.frozen_stages, s.model.norm_eval, s.train.grad_clip) == (0, False, 35.0) and "from scratch" in notes[0]


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
