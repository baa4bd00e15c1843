"""``train.time_budget_s``: a run fits its number of epochs, and its schedule, to a wall-clock budget; it resumes to
the same weights and refuses to resume once the budget is spent. The loop's clock is replaced by one that advances
one second a training step, so the fitted lengths are exact on any machine."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from gfldet.config import ConfigError, load_config
from gfldet.data.synthetic import write_coco
from gfldet.engine import train as train_module
from gfldet.engine.recipe import fit_epochs, lr_factor, resolve_training
from gfldet.engine.train import train
from gfldet.errors import GfldetError
from tests._runs import assert_same_run, data_sets


def test_fit_epochs():
    assert fit_epochs(100, 10, 1, 10) == 10  # 90 s left at 10 s an epoch
    assert fit_epochs(100, 0, 0, 30) == 3 and fit_epochs(100, 0, 0, 40) == 3  # nearest epoch (2.5 rounds up)
    assert fit_epochs(100, 0, 0, 45) == 2
    assert fit_epochs(10, 50, 2.3, 20) == 3  # over budget mid-epoch: the epoch in progress ends
    assert fit_epochs(100, 120, 4, 30) == 4  # over budget at an epoch's end: stop there
    assert fit_epochs(1, 0, 0, 100) == 1  # at least one epoch
    with pytest.raises(ValueError, match="epoch_s"):
        fit_epochs(100, 0, 0, 0)
    with pytest.raises(ConfigError, match="train.time_budget_s"):
        load_config(None, ["train.time_budget_s=0"])


class _Clock:
    """Stands in for the training loop's ``time`` module: one second passes in each training step,
    ``eval_s`` in each evaluation, none elsewhere."""

    def __init__(self):
        self.now, self.eval_s = 0.0, 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(train_module, "time", c)
    step = train_module._Run.step

    def timed_step(self, images, targets):
        c.now += 1.0
        return step(self, images, targets)

    monkeypatch.setattr(train_module._Run, "step", timed_step)
    evaluate = train_module._Run.evaluate

    def timed_evaluate(self):
        c.now += c.eval_s
        return evaluate(self)

    monkeypatch.setattr(train_module._Run, "evaluate", timed_evaluate)
    return c


@pytest.fixture(scope="module")
def data14(tmp_path_factory):
    """14 training images of 64 px: 14 iterations an epoch in batches of 1, enough for the early fit (after 12)."""
    d = tmp_path_factory.mktemp("coco14")
    tr = write_coco(d / "train", n=14, seed=0, size=(64, 64))
    va = write_coco(d / "val", n=2, seed=1, size=(64, 64))
    return tr, str(d / "train"), va, str(d / "val")


def _sets(data, out, **extra):
    s = data_sets(data, out) + ["model.arch=gfl_shufflenet_v2_x1_0_fpn", "model.fpn_channels=32",
                                "model.head_channels=32", "model.stacked_convs=1", "input.min_size=64", "input.max_size=64", "train.batch_size=1",
                                "train.epochs=1", "train.schedule=cosine", "train.ema=true", "train.eval_interval=2"]
    return s + [f"{k}={v}" for k, v in extra.items()]


def test_the_epochs_and_the_schedule_follow_the_budget(data14, tmp_path, clock):
    out = tmp_path / "run"
    cfg = load_config(None, _sets(data14, out, **{"train.time_budget_s": 42}))
    res = train(cfg, progress=False)
    # 1 s a step, 14 steps an epoch: 42 s hold 3 epochs (train.epochs=1 was only the first guess)
    assert (res["epochs_done"], res["iterations"]) == (3, 42)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3 and saved["train"]["time_budget_s"] == 42
    # from the early fit (iteration 12) on, the rate follows the cosine of the fitted 42 iterations down to 0
    fitted, _ = resolve_training(load_config(None, _sets(data14, out, **{"train.epochs": 3})), 14)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["iter"]: r["lr"] for r in lines if "lr" in r}
    for it in (13, 30, 42):  # the rate logged at iteration `it` is the one its step (0-based it - 1) used
        assert lrs[it] == pytest.approx(fitted.train.lr * lr_factor(it - 1, (it - 1) // 14, 14, fitted), rel=1e-9)
    assert lrs[42] < 1e-2 * fitted.train.lr
    # evaluated every second epoch and at the fitted end (epoch 3)
    assert [r["epoch"] for r in lines if "eval" in r] == [2, 3]


def test_evaluations_count_in_the_budget(data14, tmp_path, clock):
    clock.eval_s = 7.0  # 14 s of steps and 7 s of evaluation an epoch
    out = tmp_path / "run"
    res = train(load_config(None, _sets(data14, out, **{"train.time_budget_s": 60, "train.eval_interval": 1})),
                progress=False)
    # 60 s hold 4 epochs of steps alone, but 3 with their evaluations (14 + 7, 35 + 7, 56 + 7: the run stops there)
    assert (res["epochs_done"], res["iterations"]) == (3, 42)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if "eval" in r] == [1, 2, 3]  # each epoch evaluated once
    assert torch.load(out / "last.pt", weights_only=True)["elapsed_s"] == 63.0


def test_a_timed_run_resumes_to_the_same_weights_and_then_is_finished(data14, tmp_path, clock):
    budget = {"train.time_budget_s": 42, "train.schedule": "step"}
    full, part = tmp_path / "full", tmp_path / "part"
    train(load_config(None, _sets(data14, full, **budget)), progress=False)
    clock.now = 0.0
    train(load_config(None, _sets(data14, part, **budget, **{"train.max_iters": 18})), progress=False)
    mid = torch.load(part / "last.pt", weights_only=True)
    assert (mid["iteration"], mid["elapsed_s"]) == (18, 18.0)
    train(load_config(None, _sets(data14, part, **budget)), resume=True, progress=False)
    assert_same_run(full, part, 42)
    with pytest.raises(GfldetError, match=r"spent 42 s of train.time_budget_s=42.*larger"):
        train(load_config(None, _sets(data14, part, **budget)), resume=True, progress=False)
    # a larger budget continues the run (resumed as the CLI does, from the run's config.yaml, where the step milestones
    # chosen for 3 epochs are written out): 14 s more is one more epoch, and the milestones follow the new length
    assert yaml.safe_load((part / "config.yaml").read_text())["train"]["milestones"] == [2]
    res = train(load_config(part / "config.yaml", ["train.time_budget_s=56"]), resume=True, progress=False)
    assert (res["epochs_done"], res["iterations"]) == (4, 56)
    assert yaml.safe_load((part / "config.yaml").read_text())["train"]["milestones"] == [2, 3]  # 2/3 and 11/12 of 4
