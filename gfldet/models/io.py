"""Model files: gfldet checkpoints (written atomically, read with ``weights_only=True``), mmdetection checkpoints,
and telling files apart by their content (torch, ONNX, empty). The one place gfldet reads or writes model weights.

A gfldet checkpoint is ``{"format": "gfldet", "version": 1, "model_config": {...}, "class_names": [...],
"state_dict": {...}, ...}``, plain types only so that it loads with ``torch.load(weights_only=True)``. Writes are
atomic: a temporary file in the same folder, fsync'd, then renamed over the target; the file gets the mode an
ordinary ``open(path, "w")`` would give it (``0o666 & ~umask``)."""
from __future__ import annotations

import logging
import os
import pickle
import re
from typing import Any

import torch
from torch import nn

from ..errors import GfldetError
from ..files import TORCH_SUFFIXES, atomic_path, file_kind, first_line  # noqa: F401 (re-exported)
from .config import ModelConfig
from .detector import GFL
from .mmdet import convert_mmdet_state_dict, mmdet_state_dict, model_from_mmdet
from .nanodet import NanoDet, nanodet_from_config, official_to_gfldet
from .transfer import load_state, transfer_weights

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "model_from_checkpoint", "load_weights_into", "from_mmdet",
           "read_torch_file", "read_weights", "checkpoint_kind", "check_gfldet", "atomic_torch_save", "file_kind",
           "first_line", "FORMAT", "VERSION", "TORCH_SUFFIXES"]

log = logging.getLogger(__name__)

FORMAT = "gfldet"
VERSION = 1


# ------------------------------------------------------------------------------------------------ writing
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written ``path`` (:func:`gfldet.files.atomic_path`: a sibling temp
    file, flushed, renamed). The file gets mode ``0o666 & ~umask``, as any other file the process writes; an
    existing ``path``'s mode is not kept."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Write ``model`` (a :class:`~gfldet.GFL` or a NanoDet, possibly DDP-wrapped) and ``extra`` entries
    atomically; ``model_config`` is its config's ``to_dict()`` (a NanoDet's says ``detector: nanodet``)."""
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
def read_torch_file(path: str, map_location: str | torch.device = "cpu", *, what: str = "gfldet checkpoint",
                    trusted: bool = False) -> Any:
    """``torch.load(path, weights_only=not trusted)``; every failure is a GfldetError (FileNotFoundError for a
    missing file) naming the file and ``what`` was expected, and none suggests ``weights_only=False``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{'checkpoint' if what == 'gfldet checkpoint' else what} not found: {path}")
    kind = file_kind(path)
    if kind == "onnx":
        raise GfldetError(f"{path} is an ONNX file (from `gfldet export`), not a {what}: "
                          "run it with `--backend onnxruntime`")
    if kind != "torch":
        raise GfldetError(f"{path}: not a {what} (not a file torch.save wrote{'; the file is empty' if kind == 'empty' else ''})")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False, i.e. running arbitrary code from the file: not relayed
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        raise GfldetError(f"{path}: not a {what}: it holds Python objects other than tensors and plain types"
                          f"{f' ({found.group(1)})' if found else ''}, which gfldet does not load (an mmdetection "
                          "checkpoint saved with such metadata: if you trust it, `gfldet convert --trusted FILE OUT.pt`, "
                          "then use OUT.pt, or from_mmdet(FILE, trusted=True))") from e
    except Exception as e:  # corrupt, truncated, not saved by torch; with trusted, whatever unpickling raises
        raise GfldetError(f"{path}: not a readable {what} (corrupt, truncated or not saved by torch): {first_line(e)}") from e


def checkpoint_kind(obj: Any) -> str:
    """What a loaded file holds: ``"gfldet"`` (a dict marked ``format: gfldet``), ``"mmdetection"`` (any other
    dict: ``{"state_dict": ..., "meta": ...}`` or a bare state dict, as ``gfldet convert`` reads them) or ``""``."""
    if not isinstance(obj, dict):
        return ""
    return "gfldet" if obj.get("format") == FORMAT else "mmdetection"


def check_gfldet(obj: Any, path: str) -> dict[str, Any]:
    """``obj`` (read from ``path``) as a gfldet checkpoint of a version this gfldet reads; a GfldetError otherwise."""
    if checkpoint_kind(obj) != "gfldet":
        hint = " (an mmdetection checkpoint? use gfldet.from_mmdet or `gfldet convert`)" if isinstance(obj, dict) and "state_dict" in obj else ""
        raise GfldetError(f"{path}: not a gfldet checkpoint{hint}")
    if obj.get("version", 0) > VERSION:
        raise GfldetError(f"{path}: checkpoint format version {obj.get('version')} is newer than this gfldet ({VERSION})")
    for key in ("model_config", "state_dict"):
        if key not in obj:
            raise GfldetError(f"{path}: gfldet checkpoint lacks {key!r}")
    return obj


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a gfldet checkpoint with ``weights_only=True``; a missing, corrupt or foreign file (an ONNX export
    included) gives a GfldetError (FileNotFoundError for a missing one) that names the file."""
    path = os.fspath(path)
    return check_gfldet(read_torch_file(path, map_location), path)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", **settings: Any):
    """Build the :class:`~gfldet.GFL` a checkpoint describes and load its weights (eval mode). ``settings``
    (input sizes and test settings, e.g. ``score_thr=0.3``) are applied by ``GFL.configure``, the one way to
    change them; the network is the checkpoint's."""
    return model_from_checkpoint(load_checkpoint(path, map_location), path).configure(**settings)


def model_from_checkpoint(obj: dict[str, Any], path: str | os.PathLike):
    """:func:`load_model` for a checkpoint already read with :func:`load_checkpoint` (``path`` names it in
    errors), so that a command needing both its metadata and its model reads the file once. A NanoDet-Plus
    checkpoint of a training run is built without its training-only auxiliary branch (its tensors are not read)."""
    if obj["model_config"].get("detector") == "nanodet":
        try:
            model = nanodet_from_config(obj["model_config"], class_names=obj.get("class_names"))
        except (TypeError, GfldetError) as e:
            raise GfldetError(f"{path}: bad NanoDet model_config: {e}") from e
        sd = {k: v for k, v in obj["state_dict"].items() if not k.startswith(("network.aux_fpn.", "network.aux_head."))}
        load_state(model, sd, path)
        return model.eval()
    try:
        cfg = ModelConfig.from_dict(dict(obj["model_config"]))
    except (TypeError, GfldetError) as e:  # TypeError: a value of the wrong type compared by a rule
        raise GfldetError(f"{path}: bad model_config: {e}") from e
    try:
        model = GFL(cfg, class_names=obj.get("class_names"))
    except GfldetError as e:  # a user's error (a bug inside keeps its own traceback)
        raise GfldetError(f"{path}: {e}") from e
    load_state(model, obj["state_dict"], path)
    return model.eval()


# ------------------------------------------------------------------------------------------------ weights
def read_weights(path: str) -> tuple[dict[str, torch.Tensor], str, dict[str, Any] | None]:
    """The file's state dict in gfldet's names, what kind of file it is, and its model_config (gfldet files).
    gfldet checkpoints and mmdetection ones are told apart by their content (:func:`checkpoint_kind`); the file
    is read once."""
    obj = read_torch_file(path)
    kind = checkpoint_kind(obj)
    if kind == "gfldet":
        obj = check_gfldet(obj, path)
        return obj["state_dict"], "gfldet checkpoint", obj["model_config"]
    if kind != "mmdetection":
        raise GfldetError(f"{path}: neither a gfldet checkpoint nor an mmdetection one: it holds a {type(obj).__name__}, "
                          "not a dict of tensors")
    try:
        return convert_mmdet_state_dict(mmdet_state_dict(obj, path)[0]), "mmdetection checkpoint", None
    except GfldetError as e:
        raise GfldetError(f"{path}: neither a gfldet checkpoint nor an mmdetection one: {e}") from e


def load_weights_into(model: nn.Module, path: str | os.PathLike, strict: bool = False) -> dict[str, Any]:
    """Load a gfldet (or mmdetection) checkpoint's weights into an already built model, e.g. to fine-tune: what
    fits is copied, the rest keeps its initialisation, another architecture is refused, one log line says
    what happened (:func:`gfldet.models.transfer.transfer_weights`, which also documents ``strict`` and the
    returned report)."""
    path = os.fspath(path)
    if isinstance(model, NanoDet):
        file_sd, kind, file_config = read_nanodet_weights(path, model)
    else:
        file_sd, kind, file_config = read_weights(path)
    return transfer_weights(model, file_sd, path, kind, file_config, strict=strict)


def read_nanodet_weights(path: str, model: NanoDet) -> tuple[dict[str, torch.Tensor], str, dict[str, Any] | None]:
    """A NanoDet's weights file in ``model``'s names: a gfldet checkpoint of a NanoDet, or an official NanoDet
    checkpoint or state dict (``official_to_gfldet``: the EMA weights where it has them; the auxiliary branch kept
    when ``model`` trains with one)."""
    obj = read_torch_file(path, what="NanoDet checkpoint")
    if checkpoint_kind(obj) == "gfldet":
        obj = check_gfldet(obj, path)
        if obj["model_config"].get("detector") != "nanodet":
            raise GfldetError(f"{path}: a gfldet checkpoint of a GFL detector, not of a NanoDet")
        return obj["state_dict"], "gfldet checkpoint", None
    if not isinstance(obj, dict):
        raise GfldetError(f"{path}: not a NanoDet checkpoint: it holds a {type(obj).__name__}, not a dict of tensors")
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise GfldetError(f"{path}: not a NanoDet checkpoint (no state dict of tensors)")
    mapped = official_to_gfldet(sd, model.spec, keep_aux=model.network.has_aux)
    return {f"network.{k}": v for k, v in mapped.items()}, "official NanoDet checkpoint", None


def from_mmdet(checkpoint: str | os.PathLike | dict[str, Any], *, trusted: bool = False, **overrides: Any) -> GFL:
    """Build a ready :class:`GFL` (in eval mode) from an mmdetection GFL checkpoint.

    Args:
        checkpoint: path to a ``.pth`` file holding ``{"state_dict": ...}``, or such a dict, or the state dict.
        trusted: allow full unpickling of the file (only for files you trust).
        overrides: :class:`ModelConfig` fields to set (e.g. ``min_size=None`` to feed pre-sized images,
            ``score_thr=0.3``); architecture fields are inferred and should not be overridden.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        path = os.fspath(checkpoint)
        obj = read_torch_file(path, what="mmdetection checkpoint", trusted=trusted)
        if checkpoint_kind(obj) == "gfldet":
            raise GfldetError(f"{path} is a gfldet checkpoint, not an mmdetection one: load it with gfldet.load_model")
        return model_from_mmdet(obj, path, **overrides)
    if isinstance(checkpoint, dict):
        return model_from_mmdet(checkpoint, "checkpoint", **overrides)
    raise TypeError(f"expected a path or a state dict, got {type(checkpoint).__name__}")
