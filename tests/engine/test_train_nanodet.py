"""NanoDet-Plus through the commands: ``gfldet train`` with ``model.arch: nanodet_plus_m_320`` (the official recipe),
its checkpoint read by eval and predict, exact resume, fine-tuning from an official checkpoint, and the config's
refusals of GFL-only settings."""
from __future__ import annotations

import json

import pytest
import torch

import gfldet
from tests._runs import assert_same_run, data_sets, train_cli
from gfldet.cli import main
from gfldet.config import ConfigError, load_config
from gfldet.engine.recipe import lr_factor, resolve_training
from gfldet.engine.train import train
from gfldet.models.io import load_weights_into
from gfldet.models.nanodet import NanoDet
from gfldet.models.zoo import build_nanodet_arch


def _sets(data, out, **extra):
    return data_sets(data, out) + ["model.arch=nanodet_plus_m_320", "train.batch_size=2"] + \
        [f"{k}={v}" for k, v in extra.items()]


def test_recipe_is_the_official_one():
    cfg, notes = resolve_training(load_config(None, ["model.arch=nanodet_plus_m_416", "train.epochs=300",
                                                     "train.batch_size=96"]), iters_per_epoch=1233)
    t = cfg.train
    assert (t.optimizer, t.lr, t.weight_decay, t.warmup_iters, t.warmup_ratio, t.schedule, t.final_lr_ratio,
            t.grad_clip, t.ema, t.ema_decay) == ("adamw", 0.001, 0.05, 500, 1e-4, "cosine", 0.05, 35.0, True, 0.9998)
    assert "NanoDet-Plus" in notes[0]
    total = 300 * 1233
    assert lr_factor(0, 0, 1233, cfg) == pytest.approx(1e-4)
    assert lr_factor(total, 299, 1233, cfg) == pytest.approx(0.05)  # eta_min 5e-5 of lr 1e-3
    assert lr_factor(total // 2, 150, 1233, cfg) == pytest.approx(0.05 + 0.95 * 0.5)
    # GFL's recipe is unchanged by the table
    g, _ = resolve_training(load_config(None, []), iters_per_epoch=100)
    assert (g.train.optimizer, g.train.weight_decay, g.train.schedule, g.train.ema, g.train.final_lr_ratio) == \
        ("sgd", 1e-4, "step", False, 0.0)


@pytest.mark.parametrize("setting, key", [("model.reg_max=8", "model.reg_max"), ("input.min_size=320", "input.min_size"),
                                          ("input.multiscale=[256,320]", "input"),
                                          ("train.norm_init_batches=2", "train.norm_init_batches")])
def test_gfl_only_settings_are_refused(setting, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, ["model.arch=nanodet_plus_m_320", setting])


def test_train_eval_predict(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(_sets(data, out, **{"train.epochs": 1})) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["iterations"] == 2
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if "loss" in r]
    terms = {f"loss_{a}{t}" for a in ("", "aux_") for t in ("qfl", "bbox", "dfl")}
    assert all(set(r) >= terms | {"grad_norm", "lr"} for r in train_recs)
    assert all(all(r[k] == r[k] and abs(r[k]) < 1e6 for k in terms) for r in train_recs)
    cfg = load_config(out / "config.yaml")
    assert (cfg.train.optimizer, cfg.train.ema) == ("adamw", True)

    model = gfldet.load_model(out / "best.pt")  # the EMA weights, without the training-only branch
    assert isinstance(model, NanoDet) and not model.network.has_aux and model.class_names is not None
    tr, tri, va, vai = data
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--ann", va, "--images", vai, "--no-progress",
                 "--out", str(tmp_path / "ev.json")]) == 0
    assert "AP" in json.loads((tmp_path / "ev.json").read_text())
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out / "best.pt"), vai, "--out", str(tmp_path / "pred"),
                 "--score-thr", "0.0", "--no-progress"]) == 0
    preds = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert preds and all(len(p["edge_std"]) == 4 and 0 <= p["loc_conf"] <= 1 for p in preds)


def test_resume_continues_exactly(data, tmp_path):
    """Stopped after 3 of 4 iterations (mid-epoch) and resumed, a run ends with the weights of one never stopped:
    the random augmentation, the EMA and AdamW's moments are part of last.pt."""
    common = {"train.epochs": 2, "train.eval_interval": 0}
    full, part = tmp_path / "full", tmp_path / "part"
    assert train_cli(_sets(data, full, **common)) == 0
    assert train_cli(_sets(data, part, **common, **{"train.max_iters": 3})) == 0
    train(load_config(None, _sets(data, part, **common)), resume=True, progress=False)
    assert_same_run(full, part, 4)


def test_fine_tune_from_an_official_checkpoint(tmp_path, caplog):
    """An official training checkpoint (``model.``/``avg_model.`` keys, aux branch included) initialises a run for
    another class count: everything but the class-count-shaped output convs is taken, the EMA weights first."""
    official = build_nanodet_arch("nanodet_plus_m_320", num_classes=80)
    sd = {f"model.{k}": v for k, v in official.network.state_dict().items()}
    sd.update({f"avg_model.{k}": v + 1 for k, v in official.network.state_dict().items() if v.is_floating_point()})
    path = tmp_path / "nanodet-plus-m_320.ckpt"
    torch.save({"state_dict": sd, "epoch": 300}, path)
    model = build_nanodet_arch("nanodet_plus_m_320", num_classes=3)
    report = load_weights_into(model, path)
    assert set(report["reinitialised"]) == {f"network.head.gfl_cls.{i}.{p}" for i in range(4) for p in ("weight", "bias")} \
        | {"network.aux_head.gfl_cls.weight", "network.aux_head.gfl_cls.bias"}
    w = official.network.backbone.conv1[0].weight
    assert torch.equal(model.network.backbone.conv1[0].weight, w + 1)  # avg_model (EMA) wins


def test_float_images_train_as_their_uint8_twins():
    """A float image in [0, 1] is the uint8 image scaled (the val path's rule): the same training input, up to the
    warp's float weights against OpenCV's fixed-point ones (well under one grey level)."""
    from gfldet.models.nanodet.augment import NanoDetAugment

    img = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    boxes = [torch.tensor([[10.0, 10.0, 60.0, 50.0]])]
    aug = NanoDetAugment((96, 96), brightness=0.0, contrast=(1, 1), saturation=(1, 1))
    torch.manual_seed(1)
    a, ba = aug([img], boxes)
    torch.manual_seed(1)
    b, bb = aug([img.float() / 255], boxes)
    assert torch.allclose(a, b, atol=1.5 / 57.12) and torch.equal(ba[0], bb[0])
    with pytest.raises(gfldet.GfldetError, match=r"image 0: float images must hold values in \[0, 1\]"):
        aug([img.float()], boxes)


def test_demo_and_inspect_data_refuse_nanodet_with_the_way_forward(data, tmp_path):
    from gfldet.data.inspect import inspect_dataset
    from gfldet.demo import run_demo

    with pytest.raises(gfldet.GfldetError, match="gfldet train --set model.arch=nanodet_plus_m_320"):
        run_demo(tmp_path / "demo", arch="nanodet_plus_m_320")
    assert not (tmp_path / "demo").exists()
    with pytest.raises(gfldet.GfldetError, match="Dynamic Soft Label Assigner"):
        inspect_dataset(data[0], data[1], load_config(None, ["model.arch=nanodet_plus_m_320"]))
