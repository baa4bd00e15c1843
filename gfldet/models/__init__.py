"""The GFL detector, its parts and builders."""
from .backbone import FPN, FrozenStatsBatchNorm2d, ResNetBackbone
from .detector import GFL, BatchMeta
from .head import GFLHead
from .io import from_mmdet
from .zoo import (ARCHS, build_model, gfl_resnet18_fpn, gfl_resnet50_fpn, gfl_resnet101_fpn, gfl_resnext101_32x4d_fpn,
                  gflv2_resnet50_fpn, gflv2_resnet101_fpn, gflv2_resnext101_32x4d_fpn, gfl_mobilenet_v2_fpn,
                  gfl_mobilenet_v3_large_fpn, gfl_shufflenet_v2_x1_0_fpn, gfl_efficientnet_b0_fpn)
from .tv_backbone import TorchvisionBackbone

__all__ = ["FPN", "FrozenStatsBatchNorm2d", "ResNetBackbone", "GFL", "BatchMeta", "GFLHead", "from_mmdet", "ARCHS",
           "build_model", "gfl_resnet18_fpn", "gfl_resnet50_fpn", "gfl_resnet101_fpn", "gfl_resnext101_32x4d_fpn",
           "gflv2_resnet50_fpn", "gflv2_resnet101_fpn", "gflv2_resnext101_32x4d_fpn", "gfl_mobilenet_v2_fpn",
           "gfl_mobilenet_v3_large_fpn", "gfl_shufflenet_v2_x1_0_fpn", "gfl_efficientnet_b0_fpn", "TorchvisionBackbone"]
