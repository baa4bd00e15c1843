"""Training checkpoints: a model file (:mod:`gfldet.models.io`) plus what a run needs to continue exactly as if
never stopped (optimiser, GradScaler, EMA, RNG states, position: ``last.pt``), and the checks before ``--resume``."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..errors import GfldetError
from ..models.io import load_checkpoint, save_checkpoint
from .recipe import fit_epochs

__all__ = ["save_training_checkpoint", "restore_training_state", "check_resumable", "rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, NumPy and Python random states, in plain types and tensors (``weights_only`` loads them)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (also after a checkpoint round trip)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuples(state["python"]))


def _tuples(x: Any) -> Any:
    """``random.setstate`` needs tuples; a checkpoint round trip may give lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_training_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                             ema: Any, **run: Any) -> None:
    """Write ``model`` (:func:`save_checkpoint`) with the optimiser, GradScaler and EMA (or None) states, the RNG
    states and ``run`` (position, config, ...), so that :func:`restore_training_state` continues from it."""
    save_checkpoint(path, model, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                    ema=ema.state_dict() if ema is not None else None, rng=rng_state(), **run)


def restore_training_state(ck: dict[str, Any], path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                           scaler: Any, ema: Any) -> None:
    """Load what :func:`save_training_checkpoint` wrote (``ck``, read from ``path``) into the run's model,
    optimiser, GradScaler and EMA (or None), and restore the RNG states. Errors name ``path`` and the fix."""
    try:
        model.load_state_dict(ck["state_dict"])
        optimizer.load_state_dict(ck["optimizer"])
    except (RuntimeError, ValueError) as e:  # check_resumable compares the model settings first; this is the backstop
        raise GfldetError(f"{path}: the run's weights do not fit the model this config builds "
                          f"({str(e).strip().splitlines()[0]}); resume with the run's own config.yaml") from e
    scaler.load_state_dict(ck["scaler"])
    if ema is not None:
        if ck.get("ema") is None:
            raise GfldetError(f"{path}: run was saved without EMA but train.ema is now true")
        ema.load_state_dict(ck["ema"])
    set_rng_state(ck["rng"])


def check_resumable(cfg: Config) -> dict[str, Any]:
    """Before any data is read: ``cfg.out_dir`` holds a ``last.pt`` with training state, the run is not finished
    under ``cfg``, and ``cfg`` builds the same model (settings the checkpoint's run resolved are compared where
    ``cfg`` sets them). Each failure is a GfldetError that says what to do instead. Returns the checkpoint, which
    the run then continues from (the file is read once)."""
    path = Path(cfg.out_dir) / "last.pt"
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist (start the run without --resume)")
    ck = load_checkpoint(path, map_location="cpu")
    if "optimizer" not in ck:
        raise GfldetError(f"{path}: has no training state to resume from (a converted or exported checkpoint?)")
    saved = ck.get("config", {}).get("model", {})
    changed = [f"model.{k}: {saved[k]!r} in the run, {v!r} now" for k, v in cfg.to_dict()["model"].items()
               if v is not None and k in saved and saved[k] != v]
    if changed:
        raise GfldetError(f"cannot resume {cfg.out_dir} with other model settings ({'; '.join(changed)}): resume with "
                          f"the run's own config ({Path(cfg.out_dir) / 'config.yaml'}), or start a new run from its "
                          f"weights with --init {path}")
    t = cfg.train
    epoch, it = int(ck["epoch"]), int(ck["iteration"])
    if t.time_budget_s is not None:  # the epochs are fitted to the time the run has left (gfldet.engine.recipe)
        spent = float(ck.get("elapsed_s", 0.0))
        at_boundary = int(ck["epoch_iter"]) == 0 and epoch >= 1 and spent > 0
        if at_boundary and fit_epochs(t.time_budget_s, spent, epoch, spent / epoch) <= epoch:
            raise GfldetError(f"{cfg.out_dir} is finished: it spent {spent:.0f} s of train.time_budget_s="
                              f"{t.time_budget_s:g} ({epoch} epochs, {it} iterations); to train longer, --resume --set "
                              "train.time_budget_s=S with a larger S, or start a new run from its weights with --init")
    elif epoch >= t.epochs:
        raise GfldetError(f"{cfg.out_dir} is finished ({epoch} of train.epochs={t.epochs} epochs, {it} iterations): "
                          f"nothing to resume; to train longer, --resume --set train.epochs=N with N > {epoch} (cosine "
                          "decay stretches to N epochs; step milestones stay as config.yaml has them unless you also "
                          "--set train.milestones=[...]), or start a new run from its weights with --init")
    if t.max_iters is not None and it >= t.max_iters:
        raise GfldetError(f"{cfg.out_dir} stopped at train.max_iters={t.max_iters} (iteration {it}): to continue, "
                          "--resume --set train.max_iters=null (or a larger number)")
    return ck
