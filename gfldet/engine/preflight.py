"""Checks before a run reads any data or loads any weights: the architecture, the weights files and names, the
device (:func:`gfldet.engine.device.check_device`), the data files and folders (each error names the key, the value
and the fix)."""
from __future__ import annotations

import os

from ..config import Config, ConfigError, validate_config
from ..models.zoo import check_arch, imagenet_name, looks_like_path, torchvision_weights
from .device import check_device

__all__ = ["preflight", "check_device"]  # check_device: here for existing callers; it lives in gfldet.engine.device


def preflight(cfg: Config, resume: bool = False) -> None:
    """Check what the config alone can tell before any data is read or any weights are loaded: ``model.arch`` is
    a builder, ``model.init`` and a path-like ``model.weights_backbone`` are files (a torchvision weights name must
    name weights for the architecture's backbone; nothing is downloaded), ``train.device`` exists on this machine,
    and the ``data.train`` / ``data.val`` files and folders that are set exist. Runs :func:`validate_config` first.

    Raises :class:`ConfigError` (a :class:`~gfldet.errors.GfldetError`) or ``FileNotFoundError`` with one message
    naming the key, the value and the fix. Empty data settings are not errors here (the trainer says what it needs).
    With ``resume`` the weights files are not checked: the run's ``last.pt`` replaces them."""
    validate_config(cfg)
    if not str(cfg.out_dir).strip():
        raise ConfigError("out_dir is empty; name the run folder (--out DIR or out_dir: DIR)")
    if os.path.exists(cfg.out_dir) and not os.path.isdir(cfg.out_dir):
        raise ConfigError(f"out_dir={cfg.out_dir!r} is a file, not a folder; choose another run folder")
    m = cfg.model
    check_arch(m.arch)
    if resume:
        check_device(cfg.train.device)
        return
    if m.init is not None and not os.path.isfile(m.init):
        raise FileNotFoundError(f"model.init={m.init!r}: no such file; set it to the path of a gfldet or mmdetection "
                                f"checkpoint of {m.arch}, or to null to start without one")
    if m.weights_backbone is not None and not os.path.isfile(m.weights_backbone):
        if looks_like_path(m.weights_backbone):
            raise FileNotFoundError(
                f"model.weights_backbone={m.weights_backbone!r}: no such file; set it to the path of a state dict with "
                f"torchvision's parameter names, to a torchvision weights name such as IMAGENET1K_V1, or to "
                f"null to train from scratch")
        torchvision_weights(m.arch, m.weights_backbone, imagenet_name(m.arch))
    check_device(cfg.train.device)
    for split in ("train", "val"):
        s = getattr(cfg.data, split)
        for name, want_dir in (("ann", False), ("images", True)):
            value = getattr(s, name)
            if not value:
                continue
            key, what = f"data.{split}.{name}", ("folder" if want_dir else "file")
            fix = ("the folder the annotation file's file_name entries are relative to" if want_dir
                   else "a COCO-format annotation JSON")
            if not os.path.exists(value):
                raise FileNotFoundError(f"{key}={value!r}: no such {what}; set it to {fix}")
            if os.path.isdir(value) != want_dir:
                raise FileNotFoundError(f"{key}={value!r} is a {'file' if want_dir else 'folder'}; set it to {fix}")
