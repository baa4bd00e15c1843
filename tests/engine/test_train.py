"""Training end to end on a generated COCO-format dataset: CLI run, exact resume, non-finite loss, DDP."""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import yaml

import gfldet
from tests._runs import assert_same_run, data_sets, train_cli
from gfldet.cli import main
from gfldet.config import ConfigError, load_config
from gfldet.data.coco import CocoDetection
from gfldet.models.io import load_model
from gfldet.engine.recipe import lr_factor, mosaic_prob, resolve_training
from gfldet.engine.train import NonFiniteLossError, train
from gfldet.models.backbone import FrozenStatsBatchNorm2d

ROOT = Path(__file__).resolve().parents[2]


def _sets(data, out, **extra):
    s = data_sets(data, out) + ["model.arch=gfl_resnet18_fpn", "model.fpn_channels=32", "model.head_channels=32",
                                "input.min_size=96", "input.max_size=96", "train.epochs=1", "train.batch_size=2",
                                "train.warmup_iters=2"]
    return s + [f"{k}={v}" for k, v in extra.items()]


def test_cli_two_iterations_then_eval_and_predict(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(_sets(data, out)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["iterations"] == 2 and result["epochs_done"] == 1
    for f in ("last.pt", "best.pt", "metrics.jsonl", "config.yaml", "loss_curves.png", "val_ap.png", "pr_curve.png"):
        assert (out / f).is_file(), f
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if "loss" in r]
    assert [r["iter"] for r in train_recs] == [1, 2]
    assert all(set(r) >= {"loss_qfl", "loss_bbox", "loss_dfl", "lr"} for r in train_recs)
    assert any("eval" in r and set(r["eval"]) >= {"AP", "AP50", "AR100"} for r in recs)
    cfg = load_config(out / "config.yaml")  # the resolved config reads back
    assert cfg.train.batch_size == 2 and cfg.model.arch == "gfl_resnet18_fpn"
    model = gfldet.load_model(out / "best.pt")
    assert model.config.num_classes == 3 and model.class_names is not None

    tr, tri, va, vai = data
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--ann", va, "--images", vai, "--out", str(tmp_path / "m"),
                 "--workers", "0", "--no-progress"]) == 0
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert set(m) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "per_class"}
    assert all(m[k] is None or 0.0 <= m[k] <= 1.0 for k in ("AP", "AP50", "AP75", "AR100"))

    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(out / "best.pt"), str(Path(vai) / "images"), "--out", str(pred),
                 "--score-thr", "0.0", "--show-distributions", "--no-progress"]) == 0
    res = json.loads((pred / "predictions.json").read_text())
    assert isinstance(res, list)
    assert len(list(pred.glob("*_det.png"))) == 2
    for r in res:
        assert r["category_id"] in (1, 2, 3) and len(r["bbox"]) == 4


def test_refuses_to_overwrite_a_run(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(_sets(data, out, **{"train.max_iters": 1})) == 0
    before = (out / "last.pt").read_bytes()
    assert train_cli(_sets(data, out)) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "last.pt").read_bytes() == before


def test_resume_gives_the_same_weights(data, tmp_path):
    common = {"train.epochs": 2, "input.multiscale": "[64,96]", "train.ema": "true", "train.eval_interval": 1}
    full = tmp_path / "full"
    part = tmp_path / "part"
    train(load_config(None, _sets(data, full, **common)), progress=False)
    train(load_config(None, _sets(data, part, **common, **{"train.max_iters": 3})), progress=False)
    mid = torch.load(part / "last.pt", weights_only=True)
    assert mid["iteration"] == 3 and mid["epoch"] == 1 and mid["epoch_iter"] == 1
    train(load_config(None, _sets(data, part, **common)), resume=True, progress=False)
    a, b = assert_same_run(full, part, 4)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)
    la = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    # the interrupted run also evaluated where it stopped (marked); otherwise the logs are the same
    assert [r.get("iter") for r in la] == [r.get("iter") for r in lb if not r.get("stopped_early")]
    assert [r["iter"] for r in lb if r.get("stopped_early")] == [3]


def test_non_finite_loss_stops_with_the_term_and_step(data, tmp_path, monkeypatch):
    real = gfldet.GFL.compute_losses
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            out["loss_dfl"] = out["loss_dfl"] * float("nan")
        return out

    monkeypatch.setattr(gfldet.GFL, "compute_losses", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 2: loss_dfl = nan"):
        train(load_config(None, _sets(data, tmp_path / "nan", **{"train.epochs": 2})), progress=False)


def test_lr_schedule():
    cfg, _ = resolve_training(load_config(None, ["train.warmup_iters=10", "train.warmup_ratio=0.001",
                                                 "train.milestones=[8, 11]", "train.epochs=12"]), 100)
    assert lr_factor(0, 0, 100, cfg) == pytest.approx(0.001)
    assert lr_factor(5, 0, 100, cfg) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(10, 0, 100, cfg) == 1.0
    assert lr_factor(800, 8, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(1100, 11, 100, cfg) == pytest.approx(0.01)
    cos, _ = resolve_training(load_config(None, ["train.schedule=cosine", "train.warmup_iters=0", "train.epochs=2"]), 10)
    assert lr_factor(0, 0, 10, cos) == 1.0 and lr_factor(10, 1, 10, cos) == pytest.approx(0.5)
    assert lr_factor(20, 1, 10, cos) == 0.0  # GFL's cosine ends at 0 (train.final_lr_ratio 0)
    lin, _ = resolve_training(load_config(None, ["train.schedule=linear", "train.final_lr_ratio=0.01",
                                                 "train.warmup_iters=4", "train.epochs=2"]), 10)
    assert lr_factor(2, 0, 10, lin) == pytest.approx((0.001 + 0.999 * 0.5) * (1 - 0.99 * 0.1))
    assert lr_factor(10, 1, 10, lin) == pytest.approx(1 - 0.99 * 0.5) and lr_factor(20, 1, 10, lin) == pytest.approx(0.01)
    const, _ = resolve_training(load_config(None, ["train.schedule=constant", "train.warmup_iters=5"]), 10)
    assert lr_factor(5, 0, 10, const) == 1.0 and lr_factor(119, 11, 10, const) == 1.0
    assert const.train.milestones is None  # no milestones chosen for a schedule without steps
    with pytest.raises(ConfigError, match="train.schedule.*'linear'"):
        load_config(None, ["train.schedule=exp"])
    with pytest.raises(ValueError, match="resolved"):
        lr_factor(0, 0, 10, load_config(None, []))


def test_mosaic_stops_for_the_last_epochs(data, tmp_path, monkeypatch):
    cfg, lines = resolve_training(load_config(None, ["input.mosaic=0.5", "train.epochs=12"]), 10)
    assert cfg.input.mosaic_off_epochs == 2 and "input.mosaic_off_epochs=2" in lines[0]  # 10% of 12, rounded up
    assert [mosaic_prob(cfg, e) for e in (0, 9, 10, 11)] == [0.5, 0.5, 0.0, 0.0]
    keep, _ = resolve_training(load_config(None, ["input.mosaic=1", "input.mosaic_off_epochs=0", "train.epochs=3"]), 10)
    assert [mosaic_prob(keep, e) for e in range(3)] == [1.0, 1.0, 1.0]
    off, _ = resolve_training(load_config(None, []), 10)
    assert off.input.mosaic_off_epochs is None and mosaic_prob(off, 0) == 0.0
    with pytest.raises(ConfigError, match="input.mosaic"):
        load_config(None, ["input.mosaic=2"])
    with pytest.raises(ConfigError, match="input.mosaic=0.5.*no mosaic"):
        load_config(None, ["model.arch=nanodet_plus_m_320", "input.mosaic=0.5", "input.min_size=null",
                           "input.max_size=null"])
    # a run with mosaic trains with finite losses, and its last epoch (10% of 2, rounded up) sees whole images
    seen = []
    getitem = CocoDetection.__getitem__

    def spy(self, index):
        if self.train:
            seen.append((self.epoch, self.mosaic_prob))
        return getitem(self, index)

    monkeypatch.setattr(CocoDetection, "__getitem__", spy)
    res = train(load_config(None, _sets(data, tmp_path / "mosaic", **{"train.epochs": 2, "input.mosaic": 1.0})),
                progress=False)
    assert res["iterations"] > 0 and math.isfinite(json.loads(
        (tmp_path / "mosaic" / "metrics.jsonl").read_text().splitlines()[0])["loss"])
    assert {e: p for e, p in seen} == {0: 1.0, 1: 0.0}


def test_default_lr_scales_with_the_batch(data, tmp_path):
    res = train(load_config(None, _sets(data, tmp_path / "lr", **{"train.max_iters": 1})), progress=False)
    ck = torch.load(tmp_path / "lr" / "last.pt", weights_only=True)
    # no backbone weights named: the from-scratch rate, 0.02 per 16 images
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.02 * 2 / 16 * (0.001 + 0.999 * 0 / 2))
    assert res["iterations"] == 1


def test_a_config_naming_no_weights_trains_from_scratch_and_says_so(data, tmp_path, caplog):
    sets = [s for s in _sets(data, tmp_path / "scratch") if not s.startswith("train.warmup_iters")]
    with caplog.at_level(logging.INFO, logger="gfldet"):
        train(load_config(None, sets + ["train.max_iters=1"]), progress=False)
    assert any("training regime: from scratch" in r.getMessage() and "no model.weights_backbone" in r.getMessage()
               for r in caplog.records)
    # the one-line data summary at the run's input size (gfldet.data.inspect)
    assert any(r.getMessage().startswith("training data: 4 images") and "without ATSS positive" in r.getMessage()
               for r in caplog.records)
    saved = yaml.safe_load((tmp_path / "scratch" / "config.yaml").read_text())  # the resolved values, not nulls
    assert (saved["model"]["norm_eval"], saved["model"]["frozen_stages"], saved["train"]["grad_clip"]) == (False, 0, 35.0)
    assert saved["train"]["warmup_iters"] == 0  # 10% of a 2-iteration run
    model = load_model(tmp_path / "scratch" / "last.pt")
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(isinstance(m, FrozenStatsBatchNorm2d) for m in bns)
    assert all(p.requires_grad for p in model.backbone.parameters())  # nothing frozen


# ------------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DDP_WORKER = r"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.environ["GFLDET_ROOT"])
from tests.engine.test_train import ddp_case
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
model, images, targets = ddp_case()
ddp = torch.nn.parallel.DistributedDataParallel(model)
n = len(images) // world
losses = ddp(images[rank * n:(rank + 1) * n], targets[rank * n:(rank + 1) * n])
sum(losses.values()).backward()
vals = torch.stack([losses[k].detach() for k in sorted(losses)])
dist.all_reduce(vals); vals /= world
if rank == 0:
    torch.save({"losses": vals, "grads": {k: p.grad for k, p in model.named_parameters() if p.grad is not None}}, sys.argv[1])
dist.destroy_process_group()
"""


def ddp_case():
    torch.manual_seed(0)
    # frozen BatchNorm statistics (the pretrained regime): with batch statistics, 2 x 2 images normalise
    # differently from 4, and the comparison would not be exact
    model = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=32, head_channels=32, min_size=None, max_size=None,
                                    norm_eval=True, frozen_stages=1).train()
    with torch.no_grad():
        model.head.gfl_cls.bias.fill_(-1.0)
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 96, 96, generator=g) for _ in range(4)]  # one size: padding identical either way
    targets = []
    for i in range(4):
        k = 1 + i % 3
        xy = torch.rand(k, 2, generator=g) * 50
        targets.append({"boxes": torch.cat([xy, xy + 20 + 20 * torch.rand(k, 2, generator=g)], 1),
                        "labels": torch.randint(0, 3, (k,), generator=g)})
    return model, images, targets


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    # The workers run single-threaded; so does the reference: CPU kernels sum in an order that depends on the
    # thread count, and the backbone's small gradients carry visible cancellation noise between 1 and 2 threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, images, targets = ddp_case()
        losses = model(images, targets)
        sum(losses.values()).backward()
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "ddp.pt"
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    env = dict(os.environ, GFLDET_ROOT=str(ROOT), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}", str(script), str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(out, weights_only=True)
    ref = torch.stack([losses[k].detach() for k in sorted(losses)])
    torch.testing.assert_close(got["losses"], ref, rtol=1e-5, atol=1e-6)
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == got["grads"].keys()
    for k, g in grads.items():
        torch.testing.assert_close(got["grads"][k], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=k)


def test_amp_and_channels_last_on_the_cpu(data, tmp_path, caplog):
    """train.amp on a CPU: bfloat16 autocast where the CPU has bf16 units, else float32 with a warning; with
    train.channels_last the weights train in NHWC and the checkpoint loads into an ordinary model."""
    from gfldet.engine.amp import cpu_has_native_bf16

    with caplog.at_level(logging.INFO, logger="gfldet"):
        res = train(load_config(None, _sets(data, tmp_path / "amp", **{"train.amp": "true", "train.channels_last": "true",
                                                                       "train.max_iters": 1})), progress=False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    if cpu_has_native_bf16():
        assert "bfloat16 autocast" in text
    else:
        assert "training in float32" in text
    assert res["iterations"] == 1 and res["last_eval"] is not None
    ck = torch.load(tmp_path / "amp" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    model = load_model(tmp_path / "amp" / "last.pt")  # an ordinary (NCHW) model
    assert model.backbone.conv1.weight.is_contiguous()
