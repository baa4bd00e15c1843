"""The one rule for the device a run or a command uses: :func:`check_device` (the name is one gfldet runs on and
this machine has it) and :func:`resolve_device` (the ``torch.device`` it means, ``auto`` resolved). ``train.device``
(:func:`gfldet.engine.preflight.preflight`, :func:`gfldet.engine.distributed.init_distributed`), ``--device`` of
eval / predict and the demo's device all go through them. :func:`place_model` is how a command puts a model on its
device: there, and on the CPU with the fast path taken (``GFL.optimize_for_cpu``)."""
from __future__ import annotations

import os

import torch

from ..config import ConfigError, device_name
from ..models.detector import GFL

__all__ = ["check_device", "resolve_device", "place_model"]


def check_device(device: str, key: str = "train.device") -> str:
    """:func:`gfldet.config.device_name` (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``N``), and that this machine
    has that device; returns the normalised name. A :class:`~gfldet.config.ConfigError` (a
    :class:`~gfldet.errors.GfldetError`) naming ``key`` otherwise."""
    device = device_name(device, key)
    if not device.startswith("cuda"):
        return device
    key = f"{key}={device!r}"
    if not torch.cuda.is_available():
        raise ConfigError(f"{key} but CUDA is not available on this machine; use cpu (or auto: CUDA when available)")
    if ":" in device:
        index, count = int(device.split(":", 1)[1]), torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"{key} but this machine has {count} CUDA devices (cuda:0..cuda:{count - 1}); "
                              "choose one of them, or auto")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(f"{key} would put every torchrun process on the same GPU; with torchrun set "
                              "train.device=auto or cuda (each process takes the GPU of its LOCAL_RANK)")
    return device


def resolve_device(name: str, key: str = "--device") -> torch.device:
    """The ``torch.device`` a device setting means on this machine: ``auto`` -> ``cuda`` where CUDA is available,
    else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` (``N`` read as ``cuda:N``) as named. An unknown name, or CUDA asked
    for on a machine without it (or an index it does not have), is a :class:`~gfldet.config.ConfigError` (a
    :class:`~gfldet.errors.GfldetError`) naming ``key`` and the value (:func:`check_device`). ``cuda`` without an
    index is returned as it is (the current CUDA device); :func:`~gfldet.engine.distributed.init_distributed` puts
    each torchrun process on the GPU of its ``LOCAL_RANK``."""
    name = check_device(name, key)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def place_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``; a :class:`~gfldet.GFL` on the CPU also takes the CPU fast path
    (:meth:`~gfldet.GFL.optimize_for_cpu`), and leaves it elsewhere (the fused modules would run their plain
    forward there anyway). The one place the commands (train, eval, predict, demo) decide it."""
    model = model.to(device)
    if isinstance(model, GFL):
        model.optimize_for_cpu(torch.device(device).type == "cpu")
    return model
