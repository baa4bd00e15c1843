"""gfldet: Generalized Focal Loss (Li et al., NeurIPS 2020) for dense object detection, in pure PyTorch."""
import logging

from .config import ModelConfig
from .engine.checkpoint import load_checkpoint, load_model, save_checkpoint
from .models import (GFL, build_model, from_mmdet, gfl_resnet18_fpn, gfl_resnet50_fpn, gfl_resnet101_fpn,
                     gfl_resnext101_32x4d_fpn)
from .ops import (Integral, atss_assign, distribution_focal_loss, generalized_focal_loss, giou_loss,
                  quality_focal_loss, quality_focal_loss_sparse)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ModelConfig", "GFL", "build_model", "from_mmdet", "gfl_resnet18_fpn", "gfl_resnet50_fpn", "gfl_resnet101_fpn",
    "gfl_resnext101_32x4d_fpn", "load_checkpoint", "load_model", "save_checkpoint", "Integral", "atss_assign",
    "distribution_focal_loss", "generalized_focal_loss", "giou_loss", "quality_focal_loss",
    "quality_focal_loss_sparse", "__version__",
]
