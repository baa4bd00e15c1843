"""The training recipe a run resolves: the architecture's recipe (GFL's or NanoDet-Plus's: optimiser, weight decay,
schedule, EMA) and, for GFL, the regime (pretrained or from scratch) fill every automatic (null) setting of the model
and training sections; warm-up length and step milestones scale with the run's length; the learning-rate factor of
each iteration follows from them."""
from __future__ import annotations

import copy
import math
from typing import Any

from dataclasses import dataclass

from ..config import Config, TrainConfig
from ..models.config import BackboneRegime
from ..models.zoo import arch_defaults, arch_regime, is_nanodet

__all__ = ["resolve_training", "lr_factor", "mosaic_prob", "warmup_length", "step_milestones", "WARMUP_ITERS", "WARMUP_MAX_FRACTION",
           "Regime", "REGIMES", "training_regime", "RECIPES", "fit_epochs", "TIME_FIT_ITERS", "LENGTH_SETTINGS"]

# The optimisation recipe of each detector family, for the settings left null in a run config.
# GFL: the paper's SGD (momentum 0.9, weight decay 1e-4, linear warm-up from 0.001, step decay at 2/3 and 11/12 of the
# run), no EMA; its rate and clipping come from the regime (REGIMES). NanoDet-Plus: the official configs'
# (config/nanodet-plus-*.yml at the commit in docs/nanodet.md): AdamW, lr 0.001 (the official rate for a batch of 96;
# not scaled with the batch: AdamW's step does not grow with the gradient's size), weight decay 0.05 on every
# parameter, linear warm-up from 1e-4, cosine to 5e-5 (0.05 x lr), gradients clipped at 35, EMA of the weights
# (decay 0.9998, the official formula; evaluated and saved as best.pt). The official cosine steps once per epoch;
# gfldet's per iteration (the same curve at the epochs' starts, smooth in between: short runs have few epochs).
RECIPES = {
    "gfl": dict(optimizer="sgd", weight_decay=1e-4, warmup_ratio=0.001, schedule="step", final_lr_ratio=0.0, ema=False),
    "nanodet": dict(optimizer="adamw", lr=0.001, weight_decay=0.05, warmup_ratio=1e-4, schedule="cosine",
                    final_lr_ratio=0.05, ema=True, grad_clip=35.0),
}


@dataclass(frozen=True)
class Regime:
    """A training regime: how the backbone trains (gfldet.models.config.BackboneRegime: frozen stages, BatchNorm
    mode; the builders apply it) and the optimisation policy that goes with it."""

    backbone: BackboneRegime
    lr_per_16: float  # base learning rate for a total batch of 16 images (scaled linearly)
    grad_clip: float  # 0: none

    @property
    def name(self) -> str:
        return self.backbone.name


# The optimisation policy by where the weights come from: the paper's (lr 0.01 per 16 images, no clipping) from
# pretrained weights; from scratch (cf. He et al., "Rethinking ImageNet Pre-training", 2019: normalisation trained,
# lr 0.02 per 16 images) twice the paper's rate with gradients clipped. The light backbones' pretrained regime trains
# at the paper's rate as well (docs/light.md).
REGIMES = {True: dict(lr_per_16=0.01, grad_clip=0.0), False: dict(lr_per_16=0.02, grad_clip=35.0)}


def training_regime(arch: str, pretrained: bool) -> Regime:
    """The regime of a run of builder ``arch`` from pretrained weights (``True``) or from random ones."""
    return Regime(arch_regime(arch, pretrained), **REGIMES[bool(pretrained)])

WARMUP_ITERS = 500  # the paper's
WARMUP_MAX_FRACTION = 0.1  # the automatic warm-up never takes more than this share of the run
MOSAIC_OFF_FRACTION = 0.1  # the share of the epochs (rounded up) that train without mosaic at the end: ultralytics'
# close_mosaic is 10 of its default 100 epochs


def mosaic_off_epochs(cfg: Config) -> int:
    """``input.mosaic_off_epochs``, or where null 10% of ``train.epochs`` rounded up."""
    off = cfg.input.mosaic_off_epochs
    return off if off is not None else math.ceil(MOSAIC_OFF_FRACTION * cfg.train.epochs)


def mosaic_prob(cfg: Config, epoch: int) -> float:
    """The mosaic probability of (0-based) ``epoch``: ``input.mosaic`` but 0 in the last ``mosaic_off_epochs`` epochs
    (a run resumed with more ``train.epochs`` counts them from its new end: mosaic can come back on)."""
    return cfg.input.mosaic if epoch < cfg.train.epochs - mosaic_off_epochs(cfg) else 0.0


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


# A run with train.time_budget_s first fits its length after this many timed iterations (the first two, which
# build oneDNN's kernels and the data pipeline's caches, are not timed), then again at every epoch's end.
TIME_FIT_ITERS = 10
# The settings resolve_training derives from the run's length (null in a config: chosen per run)
LENGTH_SETTINGS = ("train.warmup_iters", "train.milestones", "input.mosaic_off_epochs")


def fit_epochs(budget_s: float, elapsed_s: float, position: float, epoch_s: float) -> int:
    """The epochs of a run with a time budget of ``budget_s`` seconds that has run ``elapsed_s`` seconds and stands
    at ``position`` epochs (fractional within an epoch), where an epoch takes ``epoch_s`` seconds (evaluation
    included): where the run would be when the budget is spent, rounded to the nearest epoch (the run ends within
    half an epoch of its budget), never before the end of the epoch in progress, and at least 1."""
    if epoch_s <= 0:
        raise ValueError(f"epoch_s must be > 0, got {epoch_s}")
    at_end = position + max(0.0, budget_s - elapsed_s) / epoch_s
    return max(1, math.ceil(position - 1e-9), int(math.floor(at_end + 0.5)))


def resolve_training(cfg: Config, iters_per_epoch: int, world_size: int = 1) -> tuple[Config, list[str]]:
    """A copy of ``cfg`` with every automatic (null) setting of the model and training sections filled in for a
    run of ``iters_per_epoch`` iterations per epoch on ``world_size`` processes, and log lines that say which
    regime runs, why, and which values were chosen (explicit values are kept and named as such)."""
    out = copy.deepcopy(cfg)
    m, t = out.model, out.train
    pretrained = bool(m.weights_backbone or m.init)
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
    if is_nanodet(m.arch):
        recipe, name = RECIPES["nanodet"], "NanoDet-Plus (the official configs' recipe" + (
            ")" if pretrained else "; they start from ImageNet: model.weights_backbone=IMAGENET1K_V1)")
    else:
        regime = training_regime(m.arch, pretrained)
        recipe = {**RECIPES["gfl"], "lr": round(regime.lr_per_16 * total_batch / 16, 10), "grad_clip": regime.grad_clip}
        name = regime.name
        for key, value in arch_defaults(m.arch).items():  # the neck and head sizes of the architecture
            if getattr(m, key) is None:
                setattr(m, key, value)
        pick(m, "frozen_stages", regime.backbone.frozen_stages, "model.frozen_stages")
        pick(m, "norm_eval", regime.backbone.norm_eval, "model.norm_eval")
    for key in ("optimizer", "lr", "weight_decay", "grad_clip", "warmup_ratio", "schedule", "final_lr_ratio", "ema"):
        pick(t, key, recipe[key], f"train.{key}")
    pick(t, "warmup_iters", warmup_length(t, total_iters), "train.warmup_iters")
    if out.input.mosaic:
        pick(out.input, "mosaic_off_epochs", mosaic_off_epochs(out), "input.mosaic_off_epochs")
    if t.schedule == "step":
        pick(t, "milestones", step_milestones(t), "train.milestones")
    lines = [f"training regime: {name} ({why}); chosen: {', '.join(chosen) or 'nothing'}"
             + (f"; set in the config: {', '.join(explicit)}" if explicit else "")]
    if cfg.train.warmup_iters is not None and total_iters and t.warmup_iters > 0.25 * total_iters:
        lines.append(f"train.warmup_iters={t.warmup_iters} is {t.warmup_iters / total_iters:.0%} of this run's "
                     f"{total_iters} iterations (null: at most {WARMUP_MAX_FRACTION:.0%})")
    return out, lines


def lr_factor(it: int, epoch: int, iters_per_epoch: int, cfg: Config) -> float:
    """Multiplier of the base learning rate at global iteration ``it`` (0-based) in ``epoch`` (0-based).

    Linear warm-up from ``warmup_ratio`` over ``warmup_iters`` iterations (the reference's LinearLR), times either
    ``gamma`` per milestone epoch reached (MultiStepLR: with milestones [8, 11] epochs 9-11 run at 0.1x and
    epoch 12 at 0.01x), a per-iteration cosine or linear decay to ``final_lr_ratio`` over the whole run, or no
    decay (``constant``). Null (automatic)
    warm-up and milestones follow :func:`gfldet.engine.recipe.warmup_length` and
    :func:`gfldet.engine.recipe.step_milestones`; ``cfg`` is a resolved config (:func:`resolve_training`).
    """
    t = cfg.train
    if t.schedule is None or t.warmup_ratio is None or t.final_lr_ratio is None:
        raise ValueError("lr_factor needs a resolved config (resolve_training fills train.schedule, warmup_ratio, "
                         "final_lr_ratio)")
    total = max(1, t.epochs * iters_per_epoch)
    warmup = warmup_length(t, total if t.max_iters is None else min(total, t.max_iters))
    warm = 1.0
    if warmup > 0 and it < warmup:
        warm = t.warmup_ratio + (1.0 - t.warmup_ratio) * it / warmup
    done, end = min(it, total) / total, t.final_lr_ratio
    if t.schedule == "cosine":
        decay = end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * done))
    elif t.schedule == "linear":  # as ultralytics' default (lrf), per iteration rather than per epoch
        decay = 1.0 - (1.0 - end) * done
    elif t.schedule == "constant":
        decay = 1.0
    else:
        decay = t.gamma ** sum(1 for m in step_milestones(t) if epoch >= m)
    return warm * decay
