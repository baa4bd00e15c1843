"""Run an exported GFL (``gfldet export``) with ONNX Runtime or OpenVINO, through the one NumPy post-processing.

No torch here or below (NumPy, and the runtime's own package): a runtime-only install runs exported files.

:func:`load` opens a file (``.onnx``: ONNX Runtime by default; ``.xml``: an OpenVINO IR with its ``.bin`` beside)
and returns a :class:`Detector`: ``detector(images)`` resizes the images as the model does
(:func:`gfldet.deploy.preprocess`), runs the graph on the backend, post-processes
(:func:`gfldet.deploy.postprocess`) and maps the boxes back to the images given. A backend only turns a batch
into the graph's named outputs; everything around it is shared.

The ``gfldet.*`` settings of the model (strides, classes, test thresholds, input sizes, precision) are stored
in the file: an ONNX file's ``metadata_props``, an OpenVINO IR's ``rt_info`` under ``gfldet``.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GfldetError
from ..files import TORCH_SUFFIXES, file_kind, first_line
from ..settings import TEST_SETTINGS, invalid_test_settings
from .postprocess import postprocess
from .preprocess import preprocess

log = logging.getLogger(__name__)

__all__ = ["load", "Detector", "OnnxRuntimeBackend", "OpenVINOBackend", "OnnxDetector", "read_metadata", "BACKENDS",
           "PRECISIONS", "backend_for", "openvino_capabilities", "cpu_has_vnni"]

BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
_OV_HINT = {"fp32": "f32", "bf16": "bf16"}


def _check_exported_path(path: str) -> None:
    """Refuse, with advice, a missing file or a PyTorch checkpoint given where an exported file is expected."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported model not found: {path}")
    if file_kind(path) == "torch" or path.lower().endswith(TORCH_SUFFIXES):
        raise GfldetError(f"{path} is a PyTorch checkpoint, not an exported file: run it with `--backend torch`, "
                          f"or make one with `gfldet export --checkpoint {path} --out model.onnx`")


def backend_for(path: str | os.PathLike) -> str:
    """The default backend of a file: ``openvino`` for an IR (``.xml``), ``onnxruntime`` otherwise."""
    return "openvino" if os.fspath(path).lower().endswith(".xml") else "onnxruntime"


# gfldet.format of a decoded graph: 2 adds the per-prior edge_peak and edge_entropy outputs (format 1 had the
# runtime compute them again, a second copy of the uncertainty maths). What the runtime runs:
RUNTIME_FORMAT = 2


def _decode_meta(raw: dict[str, str], source: Any, kind: str = "an ONNX file") -> dict[str, Any]:
    if "mode" not in raw:
        raise GfldetError(f"{source}: not {kind} exported by gfldet (no gfldet.* metadata)")
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    meta.setdefault("precision", "fp32")
    return meta


def _onnx_props(props: dict[str, str]) -> dict[str, str]:
    """An ONNX file's ``gfldet.*`` metadata entries, prefix removed."""
    return {k[len("gfldet."):]: v for k, v in props.items() if k.startswith("gfldet.")}


def _ort_session(path: str, threads: int | None = None, providers: Sequence[str] = ("CPUExecutionProvider",),
                 optimize: bool = True) -> Any:
    """An ONNX Runtime session of ``path`` (``threads`` intra-op threads; ``optimize=False``: only parse the file),
    with errors that name the file."""
    try:
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError("running or reading an ONNX file needs `pip install onnxruntime`",
                                  name="onnxruntime") from e
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(path, options, providers=list(providers))
    except ort_errors.InvalidProtobuf as e:  # onnxruntime's own types, derived from Exception only
        raise GfldetError(f"{path}: not a readable ONNX file: {first_line(e)}") from e
    except (ort_errors.Fail, ort_errors.InvalidGraph, ort_errors.InvalidArgument, ort_errors.NotImplemented) as e:
        raise GfldetError(f"{path}: ONNX Runtime cannot load it: {first_line(e)}") from e


def _onnx_file_meta(path: str) -> dict[str, Any]:
    """The gfldet settings of an ONNX file, read by ONNX Runtime (the runtime install has no ``onnx`` package):
    a session with graph optimisations off, which parses the file and does nothing else."""
    _check_exported_path(path)
    session = _ort_session(path, optimize=False)
    return _decode_meta(_onnx_props(session.get_modelmeta().custom_metadata_map), path)


def _openvino_meta(model: Any, source: Any) -> dict[str, Any]:
    info = model.get_rt_info()
    raw = {}
    if "gfldet" in info:  # a dict of OVAny values, each the JSON text written at export
        raw = {k: v.astype(str) for k, v in dict(info["gfldet"]).items()}
    return _decode_meta(raw, source, "an OpenVINO model")


def read_metadata(path_or_model: str | os.PathLike | Any) -> dict[str, Any]:
    """The ``gfldet.*`` settings stored in an exported file (ONNX or OpenVINO IR) or a loaded ONNX proto /
    OpenVINO model, decoded (prefix removed; ``precision`` is ``fp32`` where the file does not say)."""
    if hasattr(path_or_model, "metadata_props"):
        proto = path_or_model
        # an error names the model by its graph, not by the printed proto (which holds every weight)
        graph = getattr(getattr(proto, "graph", None), "name", "") or "unnamed"
        raw = _onnx_props({p.key: p.value for p in proto.metadata_props})
        return _decode_meta(raw, f"the ONNX model passed in (graph {graph!r})", "a model")
    if hasattr(path_or_model, "get_rt_info"):
        return _openvino_meta(path_or_model, "model")
    path = os.fspath(path_or_model)
    if path.lower().endswith(".xml"):
        return _openvino_meta(_read_openvino(path), path)
    return _onnx_file_meta(path)


def check_runnable(meta: dict[str, Any], path: str) -> None:
    """Refuse, saying how to re-export, a file the runtime does not run: a ``raw`` export (per-level maps for one's
    own decoding) or a decoded file of an earlier format."""
    how = f"re-export it from its checkpoint: gfldet export --checkpoint CKPT --out {Path(path).name}"
    if meta.get("mode") != "decoded":
        raise GfldetError(f"{path} is a {meta.get('mode')!r} export (per-level maps for your own decoding, docs/onnx.md); "
                          f"gfldet's runtime runs decoded exports: {how} (mode decoded is the default)")
    if int(meta.get("format", 1)) < RUNTIME_FORMAT:
        raise GfldetError(f"{path} was exported by an earlier gfldet (format {meta.get('format', 1)}, without the "
                          f"per-prior uncertainty outputs the runtime reads now): {how}")


def _read_openvino(path: str) -> Any:
    _check_exported_path(path)
    try:
        import openvino as ov
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError("the openvino backend needs `pip install gfldet[deploy]` (openvino)",
                                  name="openvino") from e
    if path.lower().endswith(".xml") and not os.path.isfile(str(Path(path).with_suffix(".bin"))):
        raise FileNotFoundError(f"{path}: the OpenVINO IR's weights {Path(path).with_suffix('.bin')} are missing "
                                "(an IR is the .xml and the .bin beside it)")
    try:
        return ov.Core().read_model(path)
    except RuntimeError as e:
        raise GfldetError(f"{path}: OpenVINO cannot read it: {first_line(e)}") from e


def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI (int8 dot products without the 16-bit saturation of AVX2's VPMADDUBSW)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown: do not warn
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def openvino_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin reports this CPU can compute in (e.g. ``FP32``, ``BF16``, ``INT8``)."""
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OnnxRuntimeBackend:
    """An exported ONNX file (float32 or INT8 QDQ) on ONNX Runtime's CPU provider (or ``providers``)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, precision: str | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)):
        self.path = os.fspath(path)
        _check_exported_path(self.path)  # before the import: a wrong file gets its advice without onnxruntime too
        if self.path.lower().endswith(".xml"):
            raise GfldetError(f"{self.path} is an OpenVINO IR: run it with the openvino backend (--backend openvino)")
        self.session = _ort_session(self.path, threads, providers)
        self.meta = _decode_meta(_onnx_props(self.session.get_modelmeta().custom_metadata_map), self.path)
        check_runnable(self.meta, self.path)
        if precision not in (None, self.meta["precision"]):
            raise GfldetError(f"{self.path}: ONNX Runtime runs the file as it was exported ({self.meta['precision']}); "
                              f"precision {precision!r} is an OpenVINO setting (--backend openvino)")
        if self.meta.get("int8_reduce_range") is False and not cpu_has_vnni():
            log.warning("%s was quantised on a CPU with VNNI (8-bit weights); on this CPU without VNNI, ONNX Runtime's "
                        "int8 kernels can saturate and lose accuracy: re-export it here, or use OpenVINO", self.path)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, {"images": batch})))


class OpenVINOBackend:
    """An OpenVINO IR (or an ONNX file, which OpenVINO reads too) compiled for the CPU.

    ``precision``: the inference precision of the float parts, ``fp32``, ``bf16`` or ``auto`` (bf16 where the CPU
    has bf16 units, else fp32); by default the file's (an INT8 file's float parts: fp32 unless exported otherwise). OpenVINO would otherwise choose bf16 by itself on CPUs with AMX, so
    ``fp32`` is set explicitly. ``bf16`` on a CPU without bf16 units is refused. ``properties``: further OpenVINO CPU
    properties on top of these (e.g. ``{"PERF_COUNT": True}`` for OpenVINO's per-layer counters: bench/ov_profile.py).
    """

    name = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, precision: str | None = None,
                 properties: dict[str, Any] | None = None):
        self.path = os.fspath(path)
        _check_exported_path(self.path)  # before the import: a wrong file gets its advice without openvino too
        import openvino as ov

        model = _read_openvino(self.path)
        self.meta = _openvino_meta(model, self.path) if self.path.lower().endswith(".xml") else read_metadata(self.path)
        check_runnable(self.meta, self.path)
        file_precision = self.meta["precision"]
        if file_precision == "int8":  # the float parts of an INT8 model: as stored at export (fp32 by default)
            file_precision = self.meta.get("int8_float_precision", "fp32")
        precision = precision or file_precision
        if precision == "auto":  # what this CPU computes fastest: bf16 where it has bf16 units (within 0.5 AP, docs/deploy.md)
            precision = "bf16" if "BF16" in openvino_capabilities() else "fp32"
            log.info("%s: OpenVINO precision auto -> %s on this CPU", self.path, precision)
        if precision not in _OV_HINT:
            raise GfldetError(f"{self.path}: OpenVINO precision must be one of {sorted(_OV_HINT)} or 'auto', got {precision!r}")
        if precision == "bf16" and "BF16" not in openvino_capabilities():
            raise GfldetError(f"{self.path}: bf16 inference needs a CPU with bf16 units (AVX512-BF16 or AMX); this CPU "
                              f"offers {openvino_capabilities()}: run it with precision fp32 (--precision fp32)")
        self.precision = precision
        config = {"INFERENCE_PRECISION_HINT": _OV_HINT[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        config.update(properties or {})
        try:
            self.compiled = ov.Core().compile_model(model, "CPU", config)
        except RuntimeError as e:
            raise GfldetError(f"{self.path}: OpenVINO cannot compile it for the CPU: {first_line(e)}") from e
        self.request = self.compiled.create_infer_request()
        # a tensor can carry several names after OpenVINO's transformations (NanoDet's scores: also its producer's):
        # the graph output's name where it is one of them
        wanted = set(self.meta.get("outputs") or ())
        self.output_names = [next(iter(sorted(wanted & o.get_names())), o.get_any_name()) for o in self.compiled.outputs]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        res = self.request.infer({"images": batch})
        return {name: np.asarray(res[out]) for name, out in zip(self.output_names, self.compiled.outputs)}


_BACKEND_CLASSES = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVINOBackend}


class Detector:
    """An exported GFL on a runtime backend: ``detector(images)`` -> per image the PyTorch model's keys
    (``boxes, scores, labels, distributions, strides, edge_peak, edge_entropy, edge_std, loc_conf``) as NumPy
    arrays, boxes and ``edge_std`` in the pixels of the images given (resized to ``min_size``/``max_size`` of the
    checkpoint, as the model does)."""

    def __init__(self, backend: OnnxRuntimeBackend | OpenVINOBackend):
        self.backend = backend
        self._lock = threading.Lock()  # one backend request at a time (OpenVINO's infer request is not re-entrant)
        self.path = backend.path
        self.meta = backend.meta
        self.class_names = self.meta.get("class_names")
        self.cat_ids = self.meta.get("cat_ids")

    def configure(self, **changes: Any) -> Detector:
        """Change the test settings (``score_thr``, ``nms_pre``, ``nms_iou``, ``max_per_img``; the exported file's
        own are the default), checked by the same rules as the PyTorch model's ``GFL.configure``: the one way to
        change them. Returns the detector."""
        unknown = sorted(set(changes) - set(TEST_SETTINGS))
        if unknown:
            raise GfldetError(f"{self.path}: {unknown} cannot change on an exported model; configure changes "
                              f"{list(TEST_SETTINGS)} (input sizes and the network are fixed at export)")
        for key, value, why in invalid_test_settings(changes):
            raise GfldetError(f"{self.path}: {key}={value!r} {why}")
        self.meta = {**self.meta, **changes}
        return self

    def __call__(self, images: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        batch, sizes, scales, originals = preprocess(images, self.meta)
        with self._lock:
            outputs = self.backend.run(batch)
        return postprocess(outputs, sizes, self.meta, scales, originals)

    def as_module(self) -> Any:
        """A ``torch.nn.Module`` whose forward is this detector's, with tensors in and out (what
        ``gfldet.engine.evaluate`` runs): the metrics of an exported file are computed by the same code as a
        checkpoint's. Needs torch (the one method here that does)."""
        from .torch_module import DetectorModule

        return DetectorModule(self)


def load(path: str | os.PathLike, backend: str | None = None, threads: int | None = None,
         precision: str | None = None) -> Detector:
    """Open an exported file on ``backend`` (default: :func:`backend_for` the file). ``threads``: intra-op threads
    (default: the runtime's); ``precision``: OpenVINO's inference precision (see :class:`OpenVINOBackend`)."""
    backend = backend or backend_for(path)
    if backend not in _BACKEND_CLASSES:
        raise GfldetError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "onnxruntime":
        return Detector(OnnxRuntimeBackend(path, threads=threads, precision=precision))
    return Detector(OpenVINOBackend(path, threads=threads, precision=precision))


class OnnxDetector(Detector):
    """An exported ONNX file on ONNX Runtime (``load(path, "onnxruntime")``), kept under its first name."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None):
        super().__init__(OnnxRuntimeBackend(path, threads=threads, providers=providers))
