"""gfldet checkpoints: ``{"format": "gfldet", "version": 1, "model_config": {...}, "class_names": [...],
"state_dict": {...}, ...}``, plain types only so that they load with ``torch.load(weights_only=True)``.
Writes are atomic: a temporary file in the same folder, fsync'd, then renamed over the target; the file gets
the mode an ordinary ``open(path, "w")`` would give it (``0o666 & ~umask``)."""
from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..files import file_kind, first_line

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "model_from_checkpoint", "load_weights_into", "FORMAT", "VERSION"]

log = logging.getLogger(__name__)

FORMAT = "gfldet"
VERSION = 1


# A fine-tuning transfer changes the output layers (gfl_cls for another class count, gfl_reg for another
# reg_max), a handful of tensors. When less than this share of the model's tensors is filled from the file,
# or of the file's tensors is used, the file is another architecture: a ResNet-50 checkpoint fills only ~55%
# of a ResNet-101's tensors (and the reverse uses ~55% of the file), another FPN or head width far less.
_MIN_SHARE = 0.9
_ARCH_FIELDS = ("depth", "groups", "width_per_group", "base_channels", "fpn_channels", "head_channels", "stacked_convs", "strides")


# ------------------------------------------------------------------------------------------------ writing
def _current_umask() -> int:
    """The process's umask. Linux shows it in /proc/self/status; elsewhere the only way to read it is to set it
    and set it back (``os.umask`` is process-wide: for that instant, files other threads create would get the
    umask 0), which is why /proc is tried first."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0)
    os.umask(old)
    return old


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written ``path``: write a sibling temp file, then rename.
    The file gets mode ``0o666 & ~umask`` (umask read at each call), as any other file the process writes,
    not the 0600 of the temp file; an existing ``path``'s mode is not kept."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
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


# ------------------------------------------------------------------------------------------------ reading
def _read_torch_file(path: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; every failure is a ValueError (FileNotFoundError for a missing
    file) naming the file, and none suggests ``weights_only=False``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    kind = file_kind(path)
    if kind == "onnx":
        raise ValueError(f"{path} is an ONNX file (from `gfldet export`), not a gfldet checkpoint: "
                         "run it with `--backend onnxruntime`")
    if kind != "torch":
        raise ValueError(f"{path}: not a gfldet checkpoint (not a file torch.save wrote{'; the file is empty' if kind == 'empty' else ''})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False, i.e. running arbitrary code from the file: not relayed
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        raise ValueError(f"{path}: not a gfldet checkpoint: it holds Python objects other than tensors and plain "
                         f"types{f' ({found.group(1)})' if found else ''}, which gfldet does not load (an mmdetection "
                         "checkpoint saved with such metadata: `gfldet convert --trusted FILE OUT.pt` if you trust it, "
                         "then use OUT.pt)") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable gfldet checkpoint (corrupt, truncated or not saved by torch): {first_line(e)}") from e


def _check_gfldet(obj: Any, path: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        hint = " (an mmdetection checkpoint? use gfldet.from_mmdet or `gfldet convert`)" if isinstance(obj, dict) and "state_dict" in obj else ""
        raise ValueError(f"{path}: not a gfldet checkpoint{hint}")
    if obj.get("version", 0) > VERSION:
        raise ValueError(f"{path}: checkpoint format version {obj.get('version')} is newer than this gfldet ({VERSION})")
    for key in ("model_config", "state_dict"):
        if key not in obj:
            raise ValueError(f"{path}: gfldet checkpoint lacks {key!r}")
    return obj


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a gfldet checkpoint with ``weights_only=True``; a missing, corrupt or foreign file (an ONNX export
    included) gives a ValueError (FileNotFoundError for a missing one) that names the file."""
    path = os.fspath(path)
    return _check_gfldet(_read_torch_file(path, map_location), path)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides: Any):
    """Build the :class:`~gfldet.GFL` a checkpoint describes and load its weights (eval mode).
    ``overrides`` change non-architecture settings such as ``score_thr`` or ``min_size``."""
    return model_from_checkpoint(load_checkpoint(path, map_location), path, **overrides)


def model_from_checkpoint(obj: dict[str, Any], path: str | os.PathLike, **overrides: Any):
    """:func:`load_model` for a checkpoint already read with :func:`load_checkpoint` (``path`` names it in
    errors), so that a command needing both its metadata and its model reads the file once."""
    from ..models.detector import GFL

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


# ------------------------------------------------------------------------------------------------ weights
def _read_weights(path: str) -> tuple[dict[str, torch.Tensor], str, dict[str, Any] | None]:
    """The file's state dict in gfldet's names, what kind of file it is, and its model_config (gfldet files).
    gfldet checkpoints and mmdetection ones (a dict with ``state_dict``, usually ``meta``) are told apart by
    their content; the file is read once."""
    obj = _read_torch_file(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = _check_gfldet(obj, path)
        return obj["state_dict"], "gfldet checkpoint", obj["model_config"]
    from ..models.mmdet import convert_mmdet_state_dict, split_mmdet_checkpoint

    try:
        return convert_mmdet_state_dict(split_mmdet_checkpoint(obj, path)[0]), "mmdetection checkpoint", None
    except ValueError as e:
        raise ValueError(f"{path}: neither a gfldet checkpoint nor an mmdetection one: {e}") from e


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _listing(items: list[str], limit: int = 6) -> str:
    """``a, b, c`` for short lists, ``a, b, ... (N in all)`` for long ones."""
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])}, ... ({len(items)} in all)"


def _compare(model_sd: dict[str, torch.Tensor], file_sd: dict[str, Any]) -> tuple[list[str], dict[str, str], list[str]]:
    """Split names into those the file fills (same name and shape), the model's others with the reason, and
    the file's tensors the model lacks."""
    loaded, unfilled = [], {}
    for name, t in model_sd.items():
        other = file_sd.get(name)
        if not isinstance(other, torch.Tensor):
            unfilled[name] = "not in the file"
        elif _shape(other) != _shape(t):
            unfilled[name] = f"file {_shape(other)}, model {_shape(t)}"
        else:
            loaded.append(name)
    ignored = [k for k in file_sd if k not in model_sd]
    return loaded, unfilled, ignored


def _mismatch_text(unfilled: dict[str, str], ignored: list[str]) -> str:
    shapes = [f"{k} ({why})" for k, why in unfilled.items() if why != "not in the file"]
    missing = [k for k, why in unfilled.items() if why == "not in the file"]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} differ in shape: {_listing(shapes, 4)}")
    if missing:
        parts.append(f"{len(missing)} of the model's are missing from the file: {_listing(missing, 4)}")
    if ignored:
        parts.append(f"{len(ignored)} in the file are not in the model: {_listing(ignored, 4)}")
    return "; ".join(parts)


def _load_state(model: nn.Module, state_dict: dict, path: str) -> None:
    """Strict load; a mismatch is one readable ValueError naming the file and the tensors with both shapes."""
    _, unfilled, ignored = _compare(model.state_dict(), state_dict)
    if unfilled or ignored:
        raise ValueError(f"{path}: weights do not fit the model: {_mismatch_text(unfilled, ignored)}")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:  # e.g. a tensor that is not a tensor: names and shapes fit
        raise ValueError(f"{path}: weights do not fit the model: {' '.join(str(e).split())[:300]}") from e


def _arch_difference(model: nn.Module, file_config: dict[str, Any] | None) -> str:
    """``"depth 50 in the file, 101 in the model"`` from a gfldet file's model_config, or ``""``."""
    config = getattr(model, "config", None)
    if not file_config or config is None:
        return ""
    diffs = []
    for field in _ARCH_FIELDS:
        if field in file_config and hasattr(config, field):
            theirs, ours = _plain(file_config[field]), _plain(getattr(config, field))
            if theirs != ours:
                diffs.append(f"{field} {theirs} in the file, {ours} in the model")
    return "; ".join(diffs)


def _plain(value: Any) -> Any:
    """Tuples as lists, as a saved model_config holds them."""
    return list(value) if isinstance(value, tuple) else value


def load_weights_into(model: nn.Module, path: str | os.PathLike, strict: bool = False) -> dict[str, Any]:
    """Load a gfldet (or mmdetection) checkpoint's weights into an already built model, e.g. to fine-tune.

    ``strict=False`` (default): every tensor whose name and shape fit the model is copied. The model's other
    tensors (missing from the file, or of another shape, e.g. ``head.gfl_cls.*`` for another class count)
    are not touched, so they keep the values the model was built with: for a freshly built model that is
    exactly its construction init (``gfl_cls``: normal std 0.01 and the prior-probability bias; a pretrained
    backbone's weights where one was loaded). Tensors of the file that the model lacks are ignored. One info
    line names what was left out and why. When the file fills less than 90% of the model's tensors, or less
    than 90% of the file's tensors are used (``num_batches_tracked`` counters aside), it is another
    architecture (depth, width, ...) and a ValueError says so, rather than leaving a half-random model.

    ``strict=True``: every tensor must fit; otherwise a ValueError names the file and the mismatched tensors.

    Returns ``{"loaded": [names], "reinitialised": {name: reason}, "ignored": [names]}``, where
    "reinitialised" lists the model's tensors that kept their initial values.
    """
    path = os.fspath(path)
    file_sd, kind, file_config = _read_weights(path)
    model_sd = model.state_dict()
    if strict:
        _load_state(model, file_sd, path)
        log.info("loaded all %d tensors from %s (%s)", len(model_sd), path, kind)
        return {"loaded": list(model_sd), "reinitialised": {}, "ignored": []}

    loaded, unfilled, ignored = _compare(model_sd, file_sd)
    counted = [k for k in model_sd if not k.endswith("num_batches_tracked")]
    counted_file = [k for k in file_sd if not k.endswith("num_batches_tracked")]
    n_loaded = sum(1 for k in loaded if not k.endswith("num_batches_tracked"))
    if n_loaded == 0 or n_loaded < _MIN_SHARE * len(counted) or n_loaded < _MIN_SHARE * len(counted_file):
        raise ValueError(
            f"{path}: the checkpoint does not look like this model's architecture "
            f"({_arch_difference(model, file_config) or 'arch, depth or width mismatch?'}): only {n_loaded} tensors fit, "
            f"of the model's {len(counted)} and the file's {len(counted_file)}; {_mismatch_text(unfilled, ignored)}")
    model.load_state_dict({k: file_sd[k] for k in loaded}, strict=False)

    message = [f"loaded {len(loaded)} of the model's {len(model_sd)} tensors from {path} ({kind})"]
    if unfilled:
        message.append(f"kept the model's own initialisation for {_listing([f'{k} ({why})' for k, why in unfilled.items()])}")
    if ignored:
        message.append(f"ignored {len(ignored)} tensors not in the model: {_listing(ignored)}")
    log.info("%s", "; ".join(message))
    return {"loaded": loaded, "reinitialised": unfilled, "ignored": ignored}
