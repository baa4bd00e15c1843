"""NanoDet and NanoDet-Plus (RangiLyu/nanodet, Apache-2.0), the small GFL detectors, reimplemented number for number
with the official code: inference, and NanoDet-Plus's training (docs/nanodet.md)."""
from .model import (NANODET_SPECS, NanoDet, NanoDetConfig, NanoDetNetwork, NanoDetSpec, build_nanodet, nanodet_from_config,
                    nanodet_m, nanodet_plus_m, nanodet_plus_m_1_5x, official_to_gfldet)
from .parts import NanoDetTransform, PointPriorGenerator
from .postprocess import NanoDetDecoder, center_priors, offset_class_nms
from .preprocess import NanoDetBatch, NanoDetPreprocessor
from .warp import resize_matrix, warp_boxes, warp_perspective_bilinear

__all__ = ["NANODET_SPECS", "NanoDet", "NanoDetConfig", "NanoDetNetwork", "NanoDetSpec", "build_nanodet",
           "nanodet_from_config", "nanodet_m", "nanodet_plus_m", "nanodet_plus_m_1_5x", "official_to_gfldet",
           "NanoDetTransform", "PointPriorGenerator", "NanoDetDecoder", "center_priors", "offset_class_nms",
           "NanoDetBatch", "NanoDetPreprocessor", "resize_matrix", "warp_boxes", "warp_perspective_bilinear"]
