"""Lower precision for deployment: an exported ONNX file to OpenVINO IR (fp32 / bf16) and to INT8.

INT8 is post-training static quantisation with each runtime's own tool: NNCF for OpenVINO,
``onnxruntime.quantization`` (QDQ, per-channel weights) for ONNX Runtime, calibrated on images the user gives.

What stays in float (the *float scope*): everything computed from the head's two output convolutions
(``head.gfl_cls``, ``head.gfl_reg``) onwards - the sigmoid of the class-quality score, the edge distributions'
softmax, the integral over the bins, the box decode and, for GFLV2, the DGQP quality branch, which reads the
distributions. The output convolutions themselves are quantised (int8 inputs and weights, float outputs). Why:
the integral ``sum_i i * p_i`` turns a small error on many bins into a shift of the edge in strides, which INT8
steps of the softmax's inputs would make (ultralytics keeps its DFL in float for this reason), and the scores
feed a threshold and NMS; these ops are a small share of the time, the convolutions are the rest.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.image_files import collect_images, read_image
from ..errors import GfldetError
from ..files import atomic_path, refuse_existing, replace_together
from .preprocess import preprocess
from .runtime import cpu_has_vnni, read_metadata

log = logging.getLogger(__name__)

__all__ = ["HEAD_OUTPUT_WEIGHTS", "is_head_output_weight", "ONNX_QUANTIZED_OPS", "float_scope_onnx", "float_scope_openvino", "calibration_batches", "calibration_files",
           "calibration_input", "quantize_onnx",
           "to_openvino"]

# ONNX Runtime quantises the inputs of these operator types only. Its default list also takes Add, Mul, Resize,
# MaxPool...: in a gfldet graph those include the GroupNorm's affine Mul/Add and the normalisation around
# InstanceNormalization, which costs AP where Conv alone costs none (docs/deploy.md, "What INT8 quantises").
ONNX_QUANTIZED_OPS = ("Conv",)
# the initializers (ONNX) of the head's output convolutions' weights in an exported graph: GFL's shared
# model.head.gfl_cls / gfl_reg, NanoDet's per-level model.network.head.gfl_cls.<level> (classes and boxes in one conv)
HEAD_OUTPUT_WEIGHTS = ("model.head.gfl_cls.weight", "model.head.gfl_reg.weight")
_HEAD_OUTPUT_WEIGHT = re.compile(r"model\.(network\.)?head\.gfl_(cls|reg)(\.\d+)?\.weight")


def is_head_output_weight(name: str) -> bool:
    """Whether an initializer is the weight of one of the head's output convolutions (:data:`HEAD_OUTPUT_WEIGHTS`,
    or a per-level one of NanoDet's)."""
    return _HEAD_OUTPUT_WEIGHT.fullmatch(name) is not None


def _downstream(start: Iterable[Any], consumers) -> list[Any]:
    seen, order, stack = set(), [], list(start)
    while stack:
        node = stack.pop()
        for c in consumers(node):
            if id(c) not in seen:
                seen.add(id(c))
                order.append(c)
                stack.append(c)
    return order


def float_scope_onnx(proto: Any) -> list[str]:
    """Names of the nodes of an exported ONNX graph that stay in float: all nodes fed, directly or not, by the
    head's output convolutions (those convolutions excluded). Raises GfldetError if the graph has none."""
    graph = proto.graph
    for i, node in enumerate(graph.node):  # ORT's quantiser matches nodes by name: give every node one
        if not node.name:
            node.name = f"gfldet_node_{i}"
    by_input: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            by_input.setdefault(name, []).append(node)
    heads = [n for n in graph.node if n.op_type == "Conv" and len(n.input) > 1 and is_head_output_weight(n.input[1])]
    if not heads:
        raise GfldetError(f"no head output convolution (weights {HEAD_OUTPUT_WEIGHTS}) in the graph: not a gfldet export")
    scope = _downstream(heads, lambda n: [c for out in n.output for c in by_input.get(out, [])])
    return [n.name for n in scope if n not in heads]


def float_scope_openvino(model: Any, proto: Any) -> list[str]:
    """Friendly names of the operations of ``model`` (OpenVINO's conversion of the ONNX graph ``proto``) that stay
    in float: those that compute a tensor of :func:`float_scope_onnx`'s nodes, and everything downstream of them.

    Matched by tensor name, not by weight name: the conversion folds each level's scale into ``gfl_reg``'s
    weights, so that convolution's weight no longer carries its name. As on the ONNX side, the output convolutions
    themselves may take int8 inputs; what they compute onwards stays in float."""
    scope = set(float_scope_onnx(proto))
    tensors = {out for node in proto.graph.node if node.name in scope for out in node.output}
    seeds = [op for op in model.get_ops() if op.get_type_name() not in ("Result", "Constant", "Parameter")
             and any(name in tensors for out in op.outputs() for name in out.get_names())]
    if not seeds:
        raise ValueError("none of the float-scope tensors of the ONNX graph is in the OpenVINO model")

    def consumers(op):
        return [t.get_node() for out in op.outputs() for t in out.get_target_inputs()]

    ops = {id(op): op for op in [*seeds, *_downstream(seeds, consumers)]}
    return sorted(op.get_friendly_name() for op in ops.values() if op.get_type_name() != "Result")


def calibration_files(images: str | os.PathLike | Sequence[str | os.PathLike], limit: int = 300) -> list[Path]:
    """The calibration images: the first ``limit`` image files of a folder (sorted), or of the files given."""
    return collect_images([images] if isinstance(images, (str, os.PathLike)) else list(images))[:limit]


def calibration_input(file: str | os.PathLike, meta: dict[str, Any]) -> np.ndarray:
    """One calibration batch: the image resized and padded as the model is run (:func:`gfldet.deploy.preprocess`).
    An unreadable file raises GfldetError naming it."""
    return preprocess([read_image(file)], meta)[0]


def calibration_batches(images: str | os.PathLike | Sequence[str | os.PathLike], meta: dict[str, Any],
                        limit: int = 300, progress: bool = True) -> Iterator[np.ndarray]:
    """:func:`calibration_input` of each of :func:`calibration_files`, with a progress bar."""
    from tqdm.auto import tqdm

    for f in tqdm(calibration_files(images, limit), desc="calibrate", disable=not progress):
        yield calibration_input(f, meta)


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, calib: str | os.PathLike, calib_images: int = 300,
                  progress: bool = True, overwrite: bool = False) -> Path:
    """INT8 QDQ copy of an exported ONNX file: the convolutions' inputs quantised (:data:`ONNX_QUANTIZED_OPS`),
    per-channel int8 weights and uint8 activations min-max calibrated on ``calib``; the float scope kept in float; the ``gfldet.*`` metadata carried over with ``precision: int8``.

    On a CPU without VNNI the weights use 7 bits (``reduce_range``), which avoids the saturation of AVX2's int8
    dot product; the file records it (``gfldet.int8_reduce_range``)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src, dst = Path(src), Path(dst)
    refuse_existing([dst], overwrite)
    proto = onnx.load(os.fspath(src))
    meta = read_metadata(proto)
    keep_float = float_scope_onnx(proto)
    named = dst.with_name(f"{dst.name}.named{os.getpid()}.onnx")  # every node named: the exclusion list uses names
    onnx.save_model(proto, os.fspath(named))
    batches = calibration_batches(calib, meta, calib_images, progress)

    class Reader(CalibrationDataReader):
        def get_next(self):
            batch = next(batches, None)
            return None if batch is None else {"images": batch}

    reduce_range = not cpu_has_vnni()
    try:
        with atomic_path(dst, suffix=".onnx") as tmp:
            quantize_static(os.fspath(named), os.fspath(tmp), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=keep_float,
                            op_types_to_quantize=list(ONNX_QUANTIZED_OPS), extra_options={"ActivationSymmetric": False})
            q = onnx.load(os.fspath(tmp))
            _set_onnx_meta(q, {"precision": "int8", "int8_tool": "onnxruntime.quantization QDQ, per-channel",
                               "int8_reduce_range": reduce_range})
            onnx.save_model(q, os.fspath(tmp))
    finally:
        named.unlink(missing_ok=True)
    log.info("wrote %s (INT8 QDQ, %d nodes kept in float)", dst, len(keep_float))
    return dst


def _set_onnx_meta(proto: Any, values: dict[str, Any]) -> None:
    import json

    keep = [p for p in proto.metadata_props if p.key[len("gfldet."):] not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"gfldet.{k}", json.dumps(v)


def to_openvino(src: str | os.PathLike, dst: str | os.PathLike, precision: str = "fp32",
                calib: str | os.PathLike | None = None, calib_images: int = 300, progress: bool = True,
                overwrite: bool = False) -> Path:
    """An exported ONNX file as an OpenVINO IR (``dst`` = ``.xml``, weights in the ``.bin`` beside it), float32
    weights. ``precision``: the inference precision stored for the float parts (``fp32`` or ``bf16``; the runtime
    applies it). With ``calib``: INT8 through NNCF (``nncf.quantize``, default preset, the float scope ignored)."""
    import openvino as ov

    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() != ".xml":
        raise GfldetError(f"an OpenVINO IR is written as NAME.xml (+ NAME.bin), got {dst}")
    refuse_existing([dst, dst.with_suffix(".bin")], overwrite)
    meta = read_metadata(src)
    model = ov.convert_model(os.fspath(src))
    stored = dict(meta)
    if calib is not None:
        import nncf
        import onnx

        keep_float = float_scope_openvino(model, onnx.load(os.fspath(src)))
        # files, read again on each of NNCF's passes rather than all held in memory
        dataset = nncf.Dataset(calibration_files(calib, calib_images), lambda f: calibration_input(f, meta))
        nncf_log = logging.getLogger("nncf")  # NNCF logs every quantiser it places at INFO
        level = nncf_log.level
        if not logging.getLogger("gfldet").isEnabledFor(logging.DEBUG):
            nncf_log.setLevel(logging.WARNING)
        try:
            model = nncf.quantize(model, dataset, subset_size=calib_images,
                                  ignored_scope=nncf.IgnoredScope(names=keep_float, validate=False))
        finally:
            nncf_log.setLevel(level)
        stored.update(int8_tool=f"nncf {nncf.__version__} (default preset)", precision="int8",
                      int8_float_precision=precision)
    else:
        stored["precision"] = precision
    import json

    for k, v in stored.items():
        model.set_rt_info(json.dumps(v), ["gfldet", k])
    tmp_xml = dst.with_name(f"{dst.stem}.tmp{os.getpid()}.xml")
    try:
        ov.save_model(model, os.fspath(tmp_xml), compress_to_fp16=False)
        replace_together([(tmp_xml.with_suffix(".bin"), dst.with_suffix(".bin")), (tmp_xml, dst)])
    finally:
        for p in (tmp_xml, tmp_xml.with_suffix(".bin")):
            if p.exists():
                p.unlink()
    log.info("wrote %s + %s (OpenVINO IR, %s)", dst, dst.with_suffix(".bin").name, stored["precision"])
    return dst
