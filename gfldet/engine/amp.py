"""Mixed precision in training: which autocast dtype ``train.amp`` means on a device (float16 on CUDA, bfloat16 on
a CPU with native bf16 units, float32 elsewhere)."""
from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("gfldet.engine.train")  # the trainer's logger: these lines belong to its log

__all__ = ["cpu_has_native_bf16", "autocast_dtype"]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX) and oneDNN may use it (an
    ``ONEDNN_MAX_CPU_ISA`` below those ISAs makes bf16 an emulation, slower than float32)."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if not (isa == "ALL" or any(tag in isa for tag in ("BF16", "AMX", "FP16", "AVX10", "VNNI_2"))):
        return False
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device``: float16 on CUDA, bfloat16 on a CPU with native bf16, None
    (float32, with a warning) elsewhere."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        log.info("train.amp on this CPU: bfloat16 autocast (native bf16 units)")
        return torch.bfloat16
    log.warning("train.amp is set but %s has no native float16/bfloat16 units: training in float32", device)
    return None
