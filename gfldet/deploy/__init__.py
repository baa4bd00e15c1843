"""Exported GFL models at run time, without torch: one NumPy pre- and post-processing around ONNX Runtime and
OpenVINO backends; and the conversion to OpenVINO IR and INT8 (:mod:`gfldet.deploy.lowp`, which needs the training
install).

``gfldet.deploy.load(FILE)(images)`` gives, per image, the eager model's keys in the images' pixels. Importing this
package imports NumPy and nothing of torch (a runtime-only install: README, "Deploy without torch")."""
from .postprocess import batched_nms, nms, postprocess, warp_boxes
from .preprocess import preprocess, resize_bilinear, warp_bilinear
from .runtime import (BACKENDS, PRECISIONS, Detector, OnnxDetector, OnnxRuntimeBackend, OpenVINOBackend, backend_for,
                      check_runnable, load, openvino_capabilities, read_metadata)

__all__ = ["load", "Detector", "OnnxDetector", "OnnxRuntimeBackend", "OpenVINOBackend", "read_metadata", "backend_for",
           "check_runnable", "openvino_capabilities", "BACKENDS", "PRECISIONS", "postprocess", "preprocess", "nms",
           "batched_nms", "resize_bilinear", "warp_bilinear", "warp_boxes"]
