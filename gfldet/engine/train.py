"""The training loop: SGD (GFL) or AdamW (NanoDet-Plus) with linear warm-up and a step (or cosine) schedule, optional gradient clipping,
AMP on CUDA, optional EMA, periodic COCO evaluation keeping ``best.pt``, atomic checkpoints and exact resume,
and DDP under ``torchrun``.

A run folder holds ``config.yaml`` (the resolved config), ``last.pt``, ``best.pt``, ``metrics.jsonl`` (one JSON
object per logged iteration and per evaluation) and the pictures ``loss_curves.png`` / ``val_ap.png``.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from ..config import Config
from ..data.coco import CocoDetection, collate
from ..data.folders import claim_dir
from ..data.inspect import inspect_dataset, summary_line, train_warnings
from ..errors import GfldetError
from ..models.io import load_weights_into, save_checkpoint
from ..models.zoo import backbone_state_dict, build_from_config, build_nanodet_arch, is_nanodet
from ..viz import plot_curves
from . import distributed as D
from . import evaluate as evaluation  # module attribute: a caller (bench/vs_torchvision.py) may wrap evaluate()
from .device import place_model
from .checkpoint import check_resumable, restore_training_state, rng_state, save_training_checkpoint, set_rng_state
from .amp import autocast_dtype
from .ema import ModelEMA
from .evaluate import EVAL_FILES
from .norm_init import init_backbone_norms
from .preflight import preflight
from .recipe import LENGTH_SETTINGS, TIME_FIT_ITERS, fit_epochs, lr_factor, mosaic_prob, resolve_training

log = logging.getLogger(__name__)

__all__ = ["train", "NonFiniteLossError", "RUN_FILES"]


class NonFiniteLossError(GfldetError, FloatingPointError):
    """A loss term became NaN or infinite; the message names the term and the step. Divergence comes from the
    run's settings (learning rate, warm-up, precision, data), so it is a :class:`~gfldet.errors.GfldetError` (a
    ``ValueError``), and a ``FloatingPointError`` as before."""


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _get(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def automatic_again(cfg: Config, ck: dict[str, Any]) -> Config:
    """The config a resumed timed run re-fits from: the settings that follow the run's length and that the run chose
    itself (``auto_length_settings`` in its ``last.pt``) null again where ``cfg`` still has the value the run saved
    (the run's own config.yaml has them filled in for the length fitted before); a value set anew (``--set``) stays."""
    saved = ck.get("config", {})
    out = copy.deepcopy(cfg)
    for dotted in ck.get("auto_length_settings", []):
        section, key = dotted.split(".")
        if _get(out, dotted) == saved.get(section, {}).get(key):
            setattr(getattr(out, section), key, None)
    return out


class _Run:
    """State of one training run (kept in one object so that the loop reads top to bottom)."""

    def __init__(self, cfg: Config, resumed: dict[str, Any] | None, progress: bool, start_over: bool = False):
        """``resumed``: the ``last.pt`` to continue from (read once by :func:`check_resumable`), or None."""
        resume = resumed is not None
        self.cfg, self.progress = cfg, progress
        self.device = D.init_distributed(cfg.train.device)
        self.main = D.is_main()
        self.out = Path(cfg.out_dir)  # created only once data and model are ready (a failed start leaves nothing)
        _seed_all(cfg.train.seed + D.rank())

        d = cfg.data
        if not d.train.ann or not d.train.images:
            raise GfldetError("data.train.ann and data.train.images must be set (a COCO JSON file and its image folder)")
        self.train_set = CocoDetection(d.train.ann, d.train.images, train=True, flip_prob=cfg.input.flip_prob,
                                       seed=cfg.train.seed, check_images=d.check_images, mosaic_prob=cfg.input.mosaic)
        self.val_set = None
        if d.val.ann and cfg.train.eval_interval > 0:
            self.val_set = CocoDetection(d.val.ann, d.val.images, train=False, check_images=d.check_images)
            if self.val_set.classes != self.train_set.classes:
                raise GfldetError(f"{d.val.ann}: categories {self.val_set.classes} differ from the training set's {self.train_set.classes}")

        self.world = D.world_size()
        per_process = math.ceil(len(self.train_set) / self.world)  # DistributedSampler's length (drop_last=False)
        self.iters_per_epoch = max(1, math.ceil(per_process / cfg.train.batch_size))
        self.user_cfg = cfg  # as given: a time budget re-resolves it with the epochs it fits (_fit_to_time)
        if resume and cfg.train.time_budget_s is not None:
            self.user_cfg = automatic_again(cfg, resumed)
        cfg, notes = resolve_training(cfg, self.iters_per_epoch, self.world)
        # the settings that follow the run's length and were chosen by the run (null as given): a resume re-fits them
        self.auto_length = [k for k in LENGTH_SETTINGS if _get(self.user_cfg, k) is None]
        self.cfg = cfg
        if self.main:
            for note in notes:
                log.info("%s", note)
            self._inspect_data()
        # resuming: last.pt replaces every weight, so neither the ImageNet weights nor model.init are read again
        weights_backbone = None if resume else cfg.model.weights_backbone
        if is_nanodet(cfg.model.arch):
            model = build_nanodet_arch(cfg.model.arch, num_classes=self.train_set.num_classes,
                                       class_names=self.train_set.classes, weights_backbone=weights_backbone)
        else:
            model = build_from_config(cfg.model.arch, cfg.model_config(self.train_set.num_classes),
                                      class_names=self.train_set.classes, weights_backbone=weights_backbone)
        if cfg.model.init and not resume:  # logs what was loaded and what kept its initialisation
            load_weights_into(model, cfg.model.init, strict=cfg.model.init_strict)
        self.model = place_model(model, self.device)  # on the CPU with the fast path (GFL.optimize_for_cpu)
        if cfg.train.channels_last:  # weights NHWC: oneDNN then keeps the activations NHWC as well
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.train.norm_init_batches > 0 and not resume:
            # the same images, in dataset order, on every process, so that all ranks get the same statistics
            bs, n = cfg.train.batch_size, len(self.train_set)
            batches = ([self.train_set[(b * bs + i) % n][0].to(self.device) for i in range(bs)]
                       for b in range(cfg.train.norm_init_batches))
            layers = init_backbone_norms(self.model, batches)
            if D.is_main():
                log.info("set the frozen statistics of %d backbone BatchNorm layers from %d training batches",
                         layers, cfg.train.norm_init_batches)
        self.base_lr = float(cfg.train.lr)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.train.optimizer == "adamw":  # torch's default betas and eps, as the official NanoDet configs
            self.optimizer = torch.optim.AdamW(params, lr=self.base_lr, weight_decay=cfg.train.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=self.base_lr, momentum=cfg.train.momentum,
                                             weight_decay=cfg.train.weight_decay)
        self.amp_dtype = autocast_dtype(cfg.train.amp, self.device)
        self.amp = self.amp_dtype == torch.float16  # CUDA float16: a GradScaler, and autocast in evaluation too
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ema = ModelEMA(self.model, cfg.train.ema_decay) if cfg.train.ema else None
        self.ddp_model: nn.Module = self.model
        if self.world > 1:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        self.sampler = DistributedSampler(self.train_set, num_replicas=self.world, rank=D.rank(), shuffle=True,
                                          seed=cfg.train.seed, drop_last=False)
        self.epoch, self.epoch_iter, self.it, self.best_ap = 0, 0, 0, -1.0
        self.elapsed = 0.0  # seconds spent training and evaluating (across resumes): what train.time_budget_s counts
        self._since = time.perf_counter()  # when the time was last counted into self.elapsed (count_time)
        self.last_eval_it = -1  # iteration of the last evaluation (the end of a run is always evaluated)
        if resume:
            self._resume(resumed)
        elif self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if start_over:
                old = [f for f in RUN_FILES if (self.out / f).exists()]
                for f in old:
                    (self.out / f).unlink()
                if old:
                    log.warning("starting over in %s (--exist-ok): removed the previous run's %s", self.out, ", ".join(old))
            (self.out / "metrics.jsonl").write_text("")
        if self.main:  # the settings the run trains with (on resume, a --set may have changed them)
            (self.out / "config.yaml").write_text(cfg.to_yaml())

    def _inspect_data(self) -> None:
        """One line on what the training data looks like to this model, and warnings on what would silently hurt
        (boxes no anchor is assigned to, edges beyond reg_max, rare classes); ``gfldet inspect-data`` has more."""
        d = self.cfg.data.train
        if is_nanodet(self.cfg.model.arch):  # the report is of GFL's resize, anchors and assigner
            log.info("training data: not summarised (gfldet inspect-data reports for GFL's anchors and assigner, not "
                     "for %s's Dynamic Soft Label Assigner)", self.cfg.model.arch)
            return
        if self.cfg.input.min_size is None or self.cfg.input.max_size is None:
            log.info("training data: not summarised (input.min_size / max_size null: images keep their own sizes)")
            return
        report = inspect_dataset(d.ann, d.images, self.cfg, dataset=self.train_set, max_images=500, recommend=False)
        log.info("training %s", summary_line(report))
        for warning in train_warnings(report):
            log.warning("training data: %s (gfldet inspect-data %s --images %s)", warning, d.ann, d.images)

    # ------------------------------------------------------------------ checkpoints
    def _run_state(self) -> dict[str, Any]:
        """What ``last.pt`` holds besides the model, optimiser, GradScaler, EMA and RNG states."""
        return {
            "epoch": self.epoch,
            "epoch_iter": self.epoch_iter,
            "iteration": self.it,
            "best_ap": self.best_ap,
            "last_eval_iter": self.last_eval_it,
            "elapsed_s": self.elapsed,
            "auto_length_settings": self.auto_length,
            "config": self.cfg.to_dict(),
            "world_size": self.world,
            "cat_ids": self._cat_ids(),
        }

    def _cat_ids(self) -> list[int]:
        return [int(c) for c in self.train_set.cat_ids]

    def count_time(self) -> None:
        """Add the time since the last count to ``self.elapsed`` (before every checkpoint and fit)."""
        now = time.perf_counter()
        self.elapsed, self._since = self.elapsed + now - self._since, now

    def save_last(self) -> None:
        self.count_time()
        if self.main:
            save_training_checkpoint(self.out / "last.pt", self.model, self.optimizer, self.scaler, self.ema,
                                     **self._run_state())

    def _resume(self, ck: dict[str, Any]) -> None:
        path = self.out / "last.pt"
        if ck.get("world_size", 1) != self.world:
            log.warning("resuming a run saved with %d processes on %d: data order changes", ck.get("world_size", 1), self.world)
        restore_training_state(ck, path, self.model, self.optimizer, self.scaler, self.ema)
        self.epoch, self.epoch_iter, self.it = int(ck["epoch"]), int(ck["epoch_iter"]), int(ck["iteration"])
        self.best_ap = float(ck["best_ap"])
        self.last_eval_it = int(ck.get("last_eval_iter", -1))
        self.elapsed = float(ck.get("elapsed_s", 0.0))
        if self.main:  # drop metric lines written after this checkpoint (they will be written again); an evaluation
            # made because the run was stopped stays (marked stopped_early: best.pt may be that model)
            mpath = self.out / "metrics.jsonl"
            lines = mpath.read_text().splitlines() if mpath.exists() else []
            keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("iter", 0) <= self.it]
            mpath.write_text("".join(ln + "\n" for ln in keep))
        log.info("resumed from %s at epoch %d, iteration %d", path, self.epoch + 1, self.it)

    # ------------------------------------------------------------------ metrics
    def log_metrics(self, record: dict[str, Any]) -> None:
        if self.main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def plot(self) -> None:
        if not self.main:
            return
        recs = [json.loads(ln) for ln in (self.out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        train_recs = [r for r in recs if "loss" in r]
        if train_recs:
            keys = ["loss"] + [k for k in train_recs[0] if k.startswith("loss_")] + ["lr"]
            plot_curves({k: [r[k] for r in train_recs] for k in keys}, self.out / "loss_curves.png",
                        smooth=3, title=f"training losses (every {self.cfg.train.log_interval} iterations)")
        evals = [r for r in recs if "eval" in r]
        if evals:
            nan = float("nan")  # COCO leaves a metric undefined (None) when e.g. no GT falls in its range
            plot_curves({k: [nan if r["eval"][k] is None else r["eval"][k] for r in evals] for k in ("AP", "AP50", "AP75")},
                        self.out / "val_ap.png", smooth=1, title="validation AP per evaluation", xlabel="iteration",
                        ylabel="AP", x=[r["iter"] for r in evals])

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, Any] | None:
        model = self.ema.module if self.ema is not None else self.model
        metrics = evaluation.evaluate(model, self.val_set, batch_size=self.cfg.train.batch_size, device=self.device,
                           num_workers=self.cfg.data.num_workers, progress=self.progress and self.main,
                           out_dir=str(self.out) if self.main else None, amp=self.amp)
        self.model.train()
        return metrics

    def evaluate_and_keep_best(self, stopped_early: bool = False) -> dict[str, Any] | None:
        """Evaluate now; log the metrics and write ``best.pt`` when the AP is the best so far (main process). The
        random state is restored afterwards: when and how often a run is evaluated never changes its training."""
        rng = rng_state()
        metrics = self.evaluate()
        set_rng_state(rng)
        self.last_eval_it = self.it
        if not self.main or metrics is None:
            return None
        summary = {k: metrics[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")}
        record = {"iter": self.it, "epoch": self.epoch, "eval": summary, "per_class": metrics.get("per_class")}
        if stopped_early:
            record["stopped_early"] = True
        self.log_metrics(record)
        where = f"iteration {self.it} (stopped by train.max_iters)" if stopped_early else f"epoch {self.epoch}"
        log.info("%s: AP %s AP50 %s", where, metrics["AP"], metrics["AP50"])
        if metrics["AP"] is not None and metrics["AP"] > self.best_ap:
            self.best_ap = float(metrics["AP"])
            best_model = self.ema.module if self.ema is not None else self.model
            save_checkpoint(self.out / "best.pt", best_model, epoch=self.epoch, iteration=self.it, metrics=summary,
                            config=self.cfg.to_dict(), cat_ids=self._cat_ids())
        return summary

    # ------------------------------------------------------------------ loop
    def position(self) -> float:
        """Epochs done, fractional within the epoch in progress."""
        return self.epoch + self.epoch_iter / self.iters_per_epoch

    def _fit_to_time(self, epoch_s: float | None = None) -> None:
        """Fit ``train.epochs`` to ``train.time_budget_s`` from the seconds spent (``self.elapsed``) and an epoch's
        seconds (default: the mean so far), and resolve the schedule again for that length (warm-up, decay,
        milestones, mosaic's last epochs follow)."""
        if epoch_s is None:
            epoch_s = self.elapsed / self.position()
        # every process takes the mean of the measurements: they all fit the same length
        m = D.all_reduce_mean({"epoch_s": epoch_s, "elapsed_s": self.elapsed}, self.device)
        budget = self.cfg.train.time_budget_s
        if m["epoch_s"] <= 0:  # nothing measured yet (a checkpoint written before time was counted)
            return
        epochs = fit_epochs(budget, m["elapsed_s"], self.position(), m["epoch_s"])
        if epochs == self.cfg.train.epochs:
            return
        user = copy.deepcopy(self.user_cfg)
        user.train.epochs = epochs
        self.cfg, _ = resolve_training(user, self.iters_per_epoch, self.world)
        if self.main:
            log.info("train.time_budget_s=%g: %.1f s an epoch (evaluation included), %.0f s spent at epoch %.2f -> "
                     "%d epochs (%d iterations)", budget, m["epoch_s"], m["elapsed_s"], self.position(), epochs,
                     epochs * self.iters_per_epoch)
            (self.out / "config.yaml").write_text(self.cfg.to_yaml())

    def batches(self, epoch: int, skip: int):
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        self.train_set.mosaic_prob = mosaic_prob(self.cfg, epoch)
        order = list(self.sampler)[skip * self.cfg.train.batch_size:]
        batches = [order[i:i + self.cfg.train.batch_size] for i in range(0, len(order), self.cfg.train.batch_size)]
        nw = self.cfg.data.num_workers
        # An own generator: creating the loader must not draw from the global RNG (exact resume).
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 1000 + epoch)
        return DataLoader(self.train_set, batch_sampler=batches, collate_fn=collate, num_workers=nw, generator=gen,
                          persistent_workers=False, pin_memory=self.device.type == "cuda")

    def step(self, images, targets) -> dict[str, float]:
        t = self.cfg.train
        factor = lr_factor(self.it, self.epoch, self.iters_per_epoch, self.cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = self.base_lr * factor
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in tg.items()} for tg in targets]
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            losses = self.ddp_model(images, targets)
        values = {k: float(v.detach()) for k, v in losses.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss at epoch {self.epoch + 1}, iteration {self.it + 1}: "
                + ", ".join(f"{k} = {values[k]}" for k in bad) + "; last.pt keeps the last good state (try a lower train.lr or train.grad_clip)")
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if t.grad_clip:
            self.scaler.unscale_(self.optimizer)
            values["grad_norm"] = float(nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        values["loss"] = sum(values[k] for k in losses)
        values["lr"] = self.base_lr * factor
        return values

    def run(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        self.model.train()
        total = t.epochs * self.iters_per_epoch
        if t.max_iters is not None:
            total = min(total, t.max_iters)
        timed = t.time_budget_s is not None
        if self.main:
            log.info("training %s on %d images (%d classes), %d process(es) x batch %d, lr %.5g, %s",
                     cfg.model.arch, len(self.train_set), self.train_set.num_classes, self.world, t.batch_size,
                     self.base_lr, f"{t.time_budget_s:g} s (the epochs are fitted to it)" if timed else f"{total} iterations")
        if timed and self.epoch > 0:  # resumed: fitted again from the time the run has spent so far
            self._fit_to_time()
        last_metrics: dict[str, Any] | None = None
        stopped = False
        self._since = time.perf_counter()  # the loop's time counts from here (self.elapsed holds earlier sittings')
        while self.epoch < self.cfg.train.epochs and not stopped:
            t = self.cfg.train
            fit_from = None  # when the first epoch's timed iterations began (train.time_budget_s)
            if hasattr(self.model, "set_epoch"):  # a model whose training changes with the epoch (NanoDet-Plus)
                self.model.set_epoch(self.epoch)
            loader = self.batches(self.epoch, self.epoch_iter)
            bar = tqdm(loader, total=self.iters_per_epoch, initial=self.epoch_iter, disable=not (self.progress and self.main),
                       desc=f"epoch {self.epoch + 1}/{t.epochs}", dynamic_ncols=True)
            window: list[dict[str, float]] = []
            tick = time.perf_counter()
            for images, targets in bar:
                values = self.step(images, targets)
                self.it += 1
                self.epoch_iter += 1
                window.append(values)
                if timed and self.epoch == 0:  # fit the run's length once the speed is known
                    if self.epoch_iter == 2:
                        fit_from = time.perf_counter()
                    elif fit_from is not None and self.epoch_iter == 2 + TIME_FIT_ITERS < self.iters_per_epoch:
                        per_iter = (time.perf_counter() - fit_from) / TIME_FIT_ITERS
                        self.count_time()
                        self._fit_to_time(per_iter * self.iters_per_epoch)
                        bar.set_description(f"epoch {self.epoch + 1}/{self.cfg.train.epochs}")
                # the loss terms present (the ablation assemblies name theirs differently, gfldet.models.assemble)
                bar.set_postfix(loss=f"{values['loss']:.3f}", **{k[5:]: f"{v:.3f}" for k, v in values.items() if k.startswith("loss_")},
                                lr=f"{values['lr']:.2e}")
                if self.it % t.log_interval == 0 or self.epoch_iter == self.iters_per_epoch:
                    mean = {k: sum(w[k] for w in window) / len(window) for k in window[0] if k != "lr"}
                    mean = D.all_reduce_mean(mean, self.device)
                    now = time.perf_counter()
                    self.log_metrics({"iter": self.it, "epoch": self.epoch + 1, "lr": values["lr"], **mean,
                                      "sec_per_iter": (now - tick) / len(window)})
                    window, tick = [], now
                if t.checkpoint_iters and self.it % t.checkpoint_iters == 0 and self.epoch_iter < self.iters_per_epoch:
                    self.save_last()
                if t.max_iters is not None and self.it >= t.max_iters:
                    stopped = True
                    break
            bar.close()
            t = self.cfg.train  # fitted again in the epoch when a time budget is set
            if self.epoch_iter >= self.iters_per_epoch:
                self.epoch += 1
                self.epoch_iter = 0
                if timed:  # fitted before the evaluation is decided: the fitted end is evaluated, and only then
                    self.count_time()
                    self._fit_to_time()
                    t = self.cfg.train
                if self.val_set is not None and (self.epoch % t.eval_interval == 0 or self.epoch == t.epochs):
                    last_metrics = self.evaluate_and_keep_best() or last_metrics
            if stopped and self.val_set is not None and self.last_eval_it != self.it:
                # stopped by train.max_iters between evaluations: the model that exists is evaluated (and best.pt kept)
                last_metrics = self.evaluate_and_keep_best(stopped_early=True) or last_metrics
            self.save_last()
            self.plot()
            D.barrier()
        if self.main and (self.val_set is None or self.best_ap < 0):
            # without validation (or with no AP defined on it), best.pt is the final model
            final = self.ema.module if self.ema is not None else self.model
            save_checkpoint(self.out / "best.pt", final, epoch=self.epoch, iteration=self.it, config=self.cfg.to_dict(),
                            cat_ids=self._cat_ids())
        return {"out_dir": str(self.out), "iterations": self.it, "epochs_done": self.epoch, "stopped_early": stopped,
                "best_ap": self.best_ap if self.best_ap >= 0 else None, "last_eval": last_metrics}


RUN_FILES = ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "loss_curves.png", "val_ap.png", *EVAL_FILES)


def train(cfg: Config, resume: bool = False, progress: bool = True, exist_ok: bool = False,
          increment: bool = False) -> dict[str, Any]:
    """Train a GFL detector as ``cfg`` says; with ``resume``, continue the run in ``cfg.out_dir`` from its
    ``last.pt`` (model, optimiser, GradScaler, EMA, RNG states and position), so that an interrupted run ends
    with the same weights as an uninterrupted one.

    A folder that already holds a run (``last.pt``) is never trained over silently: ``exist_ok`` starts over in
    it (the previous run's checkpoints are removed), ``increment`` takes the next free name (``runs/x-1``,
    ``runs/x-2``, ... as ``gfldet demo`` does), otherwise a GfldetError says which to choose. The config is
    checked (:func:`gfldet.engine.preflight.preflight`) before any data set is read, and a run that fails before it
    wrote anything leaves no folder behind.
    """
    if resume and (exist_ok or increment):
        raise GfldetError("--resume continues the run in out_dir; it cannot be combined with --exist-ok or --increment")
    if exist_ok and increment:
        raise GfldetError("--exist-ok starts over in out_dir, --increment takes the next free name: choose one")
    preflight(cfg, resume=resume)
    if cfg.model.weights_backbone and not resume and D.launched_main():  # fetched (or found missing) before any data
        backbone_state_dict(cfg.model.arch, cfg.model.weights_backbone)
    out = Path(cfg.out_dir)
    resumed = check_resumable(cfg) if resume else None
    if not resume and (out / "last.pt").exists() and not exist_ok:
        if not increment:
            raise GfldetError(f"{cfg.out_dir} already holds a run (last.pt): pass --resume to continue it, --exist-ok to "
                              "start over in it, --increment to take the next free name, or choose another out_dir")
        if D.launched_world_size() > 1:
            raise GfldetError("--increment under torchrun would let the processes pick different folders; give an "
                              "unused out_dir instead")
        cfg = copy.deepcopy(cfg)
        claimed = claim_dir(out)  # created at once: two runs started together never share it
        log.info("%s holds a run; this one goes to %s", out, claimed)
        out, cfg.out_dir = claimed, str(claimed)
    existed = out.exists() and not increment
    try:
        run = _Run(cfg, resumed, progress, start_over=exist_ok)
        try:
            return run.run()
        finally:
            D.barrier()
    except BaseException:
        if not existed and D.launched_main() and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no empty folder
        raise
