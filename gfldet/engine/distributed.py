"""PyTorch's own distributed training (``torchrun`` + DDP): process-group set-up and small helpers."""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import nn

from .device import resolve_device

log = logging.getLogger(__name__)

__all__ = ["init_distributed", "is_distributed", "rank", "world_size", "is_main", "launched_world_size", "launched_main",
           "barrier", "all_reduce_mean", "cleanup", "unwrap"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside (possibly nested) ``DistributedDataParallel`` / ``DataParallel`` wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``), known before the group is joined."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_main() -> bool:
    """Whether this is rank 0 of what ``torchrun`` started (``RANK``), known before the group is joined."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: str = "auto") -> torch.device:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), with NCCL on CUDA and gloo on CPU,
    and return this process's device. Without torchrun: no group, device from ``device``
    (:func:`~gfldet.engine.device.resolve_device`, which refuses CUDA on a machine without it); ``cuda`` and
    ``auto`` on CUDA put the process on the GPU of its ``LOCAL_RANK``."""
    dev = resolve_device(device, "train.device")
    want_cuda = dev.type == "cuda"
    ws = launched_world_size()
    if ws > 1 and not dist.is_initialized():
        backend = "nccl" if want_cuda else "gloo"
        dist.init_process_group(backend=backend)
        log.info("distributed: rank %d of %d, backend %s", dist.get_rank(), ws, backend)
    if want_cuda:
        if dev.index is not None:
            return dev
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return dev


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar metrics over processes (for logging)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
