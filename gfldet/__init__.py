"""gfldet: Generalized Focal Loss (Li et al., NeurIPS 2020) for dense object detection, in pure PyTorch.

The public face: the model builders and class, ``load_model`` / ``from_mmdet``, ``load_pretrained`` (published
COCO weights by name), the losses, the config types and :class:`GfldetError` (the error a user's mistake raises).
Training, evaluation and checkpoint files are reached through :mod:`gfldet.engine`, the tensor maths through
:mod:`gfldet.ops`. Names are imported on first use (PEP 562), so ``import gfldet.ops`` loads the ops alone.
"""
from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# public name -> the module that defines it
_EXPORTS = {
    "GFL": "gfldet.models",
    "build_model": "gfldet.models",
    "gfl_resnet18_fpn": "gfldet.models",
    "gfl_resnet50_fpn": "gfldet.models",
    "gfl_resnet101_fpn": "gfldet.models",
    "gfl_resnext101_32x4d_fpn": "gfldet.models",
    "gflv2_resnet50_fpn": "gfldet.models",
    "gflv2_resnet101_fpn": "gfldet.models",
    "gflv2_resnext101_32x4d_fpn": "gfldet.models",
    "gfl_mobilenet_v2_fpn": "gfldet.models",
    "gfl_mobilenet_v3_large_fpn": "gfldet.models",
    "gfl_shufflenet_v2_x1_0_fpn": "gfldet.models",
    "gfl_efficientnet_b0_fpn": "gfldet.models",
    "from_mmdet": "gfldet.models",
    "load_model": "gfldet.models.io",
    "load_pretrained": "gfldet.models.pretrained",
    "ModelConfig": "gfldet.models.config",
    "Config": "gfldet.config",
    "GfldetError": "gfldet.errors",
    "quality_focal_loss": "gfldet.ops",
    "quality_focal_loss_sparse": "gfldet.ops",
    "distribution_focal_loss": "gfldet.ops",
    "generalized_focal_loss": "gfldet.ops",
    "giou_loss": "gfldet.ops",
    "atss_assign": "gfldet.ops",
}
# still importable from gfldet for existing code, but not part of the public face
_COMPAT = {
    "load_checkpoint": "gfldet.models.io",  # gfldet.models.io
    "save_checkpoint": "gfldet.models.io",  # gfldet.models.io
    "Integral": "gfldet.ops",  # gfldet.ops
}
_SUBPACKAGES = {"analysis", "cli", "config", "data", "demo", "deploy", "engine", "errors", "evaluate", "export",
                "files", "models", "ops", "predict", "settings", "ship", "viz"}

__all__ = [*_EXPORTS, "__version__"]  # the public face is _EXPORTS, written once

if TYPE_CHECKING:  # for type checkers and IDEs: what __getattr__ resolves at run time
    from .config import Config
    from .errors import GfldetError
    from .models.config import ModelConfig
    from .models.io import load_model
    from .models.pretrained import load_pretrained
    from .models import (GFL, build_model, from_mmdet, gfl_resnet18_fpn, gfl_resnet50_fpn, gfl_resnet101_fpn,
                         gfl_resnext101_32x4d_fpn, gflv2_resnet50_fpn, gflv2_resnet101_fpn, gflv2_resnext101_32x4d_fpn,
                         gfl_mobilenet_v2_fpn, gfl_mobilenet_v3_large_fpn, gfl_shufflenet_v2_x1_0_fpn,
                         gfl_efficientnet_b0_fpn)
    from .ops import (atss_assign, distribution_focal_loss, generalized_focal_loss, giou_loss, quality_focal_loss,
                      quality_focal_loss_sparse)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name) or _COMPAT.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_COMPAT) | _SUBPACKAGES)
