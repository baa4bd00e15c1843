"""Exported GFL models at run time: one NumPy pre- and post-processing, ONNX Runtime and OpenVINO backends,
and the conversion to OpenVINO IR and INT8 (:mod:`gfldet.deploy.lowp`).

``gfldet.deploy.load(FILE)(images)`` gives, per image, the eager model's keys in the images' pixels."""
from .postprocess import batched_nms, decode_raw, edge_uncertainty_np, nms, postprocess, preprocess
from .runtime import (BACKENDS, PRECISIONS, Detector, OnnxDetector, OnnxRuntimeBackend, OpenVINOBackend, backend_for,
                      load, openvino_capabilities, read_metadata)

__all__ = ["load", "Detector", "OnnxDetector", "OnnxRuntimeBackend", "OpenVINOBackend", "read_metadata", "backend_for",
           "openvino_capabilities", "BACKENDS", "PRECISIONS", "postprocess", "preprocess", "nms", "batched_nms",
           "decode_raw", "edge_uncertainty_np"]
