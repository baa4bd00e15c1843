"""gfldet checkpoints: ``{"format": "gfldet", "version": 1, "model_config": {...}, "class_names": [...],
"state_dict": {...}, ...}``, plain types only so that they load with ``torch.load(weights_only=True)``.
Writes are atomic: a temporary file in the same folder, fsync'd, then renamed over the target."""
from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "load_weights_into", "FORMAT", "VERSION"]

FORMAT = "gfldet"
VERSION = 1


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written ``path``: write a sibling temp file, then rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Write ``model`` (a :class:`~gfldet.GFL`, possibly DDP-wrapped) and ``extra`` entries atomically."""
    model = getattr(model, "module", model)
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.to_dict(),
        "class_names": model.class_names,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    obj.update(extra)
    atomic_torch_save(obj, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a gfldet checkpoint with ``weights_only=True``; a missing, corrupt or foreign file gives a ValueError
    (FileNotFoundError for a missing one) that names the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable gfldet checkpoint (corrupt, truncated or not saved by torch): {msg}") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        hint = " (an mmdetection checkpoint? use gfldet.from_mmdet or `gfldet convert`)" if isinstance(obj, dict) and "state_dict" in obj else ""
        raise ValueError(f"{path}: not a gfldet checkpoint{hint}")
    if obj.get("version", 0) > VERSION:
        raise ValueError(f"{path}: checkpoint format version {obj.get('version')} is newer than this gfldet ({VERSION})")
    for key in ("model_config", "state_dict"):
        if key not in obj:
            raise ValueError(f"{path}: gfldet checkpoint lacks {key!r}")
    return obj


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides: Any):
    """Build the :class:`~gfldet.GFL` a checkpoint describes and load its weights (eval mode).
    ``overrides`` change non-architecture settings such as ``score_thr`` or ``min_size``."""
    from ..models.detector import GFL

    obj = load_checkpoint(path, map_location)
    cfg_dict = dict(obj["model_config"])
    cfg_dict.update(overrides)
    try:
        cfg = ModelConfig.from_dict(cfg_dict)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad model_config: {e}") from e
    try:
        model = GFL(cfg, class_names=obj.get("class_names"))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    _load_state(model, obj["state_dict"], path)
    return model.eval()


def _load_state(model: nn.Module, state_dict: dict, path: str) -> None:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the model: {str(e).splitlines()[0]} ...") from e


def load_weights_into(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a gfldet (or mmdetection) checkpoint's weights into an already built model of the same shape."""
    path = os.fspath(path)
    try:
        obj = load_checkpoint(path)
        sd = obj["state_dict"]
    except ValueError as e:
        if "mmdetection" not in str(e):
            raise
        from ..models.mmdet import convert_mmdet_state_dict, load_mmdet_checkpoint

        sd = convert_mmdet_state_dict(load_mmdet_checkpoint(path)[0])
    _load_state(model, sd, path)
