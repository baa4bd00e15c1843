"""``gfldet export``: a checkpoint to a deployable file - ONNX or OpenVINO IR, float32, bf16 or INT8.

Composes the two app parts: :func:`gfldet.export.export_onnx` traces the model to ONNX (the contract of
docs/onnx.md), and :mod:`gfldet.deploy.lowp` converts that file to OpenVINO IR and / or quantises it. Every path
goes through the float32 ONNX file, so each backend runs the same graph.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from .deploy import lowp
from .errors import GfldetError
from .export import export_onnx
from .files import refuse_existing

log = logging.getLogger(__name__)

__all__ = ["export_model", "FORMATS", "format_for"]

FORMATS = ("onnx", "openvino")


def format_for(path: str | os.PathLike) -> str:
    """The format a file name asks for: ``openvino`` for ``.xml``, ``onnx`` otherwise."""
    return "openvino" if os.fspath(path).lower().endswith(".xml") else "onnx"


def _outputs(out: Path, fmt: str) -> list[Path]:
    return [out, out.with_suffix(".bin")] if fmt == "openvino" else [out]


def export_model(model: nn.Module, out: str | os.PathLike, fmt: str | None = None, precision: str = "fp32",
                 int8: bool = False, calib: str | os.PathLike | None = None, calib_images: int = 300,
                 overwrite: bool = False, progress: bool = True, **onnx_kwargs: Any) -> dict[str, Any]:
    """Write ``model`` to ``out`` as ``fmt`` (default: :func:`format_for` ``out``).

    ``precision``: ``fp32``, or ``bf16`` for OpenVINO (the inference precision its CPU plugin applies to the float
    parts). ``int8`` with ``calib`` (a folder of images like the ones the model will see; the first
    ``calib_images``, sorted): post-training static quantisation (NNCF for OpenVINO, ONNX Runtime's QDQ quantiser
    for ONNX); the float scope of :mod:`gfldet.deploy.lowp` stays in float. ``onnx_kwargs`` go to
    :func:`gfldet.export.export_onnx` (``mode``, ``example_size``, ``opset``, ``cat_ids``). Nothing existing is
    replaced without ``overwrite``; the files are written beside ``out`` and renamed into place.
    Returns ``{"written": [...], "format", "precision", "bytes"}``.
    """
    out = Path(out)
    fmt = fmt or format_for(out)
    if fmt not in FORMATS:
        raise GfldetError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    if fmt == "openvino" and out.suffix.lower() != ".xml":
        raise GfldetError(f"--format openvino writes NAME.xml + NAME.bin: give --out with .xml, got {out}")
    if fmt == "onnx" and out.suffix.lower() == ".xml":
        raise GfldetError(f"{out}: an .xml file is an OpenVINO IR; use --format openvino, or an .onnx name")
    if precision not in ("fp32", "bf16"):
        raise GfldetError(f"precision must be fp32 or bf16 (INT8 is --int8), got {precision!r}")
    if precision == "bf16" and fmt != "openvino":
        raise GfldetError("bf16 is an OpenVINO inference precision: use --format openvino (ONNX Runtime's CPU provider "
                          "has no bf16 convolutions)")
    if int8 != (calib is not None):
        raise GfldetError("INT8 needs calibration images: give --int8 together with --calib IMAGES_DIR")
    if calib is not None and not Path(calib).exists():
        raise FileNotFoundError(f"--calib {calib}: no such folder of calibration images")
    refuse_existing(_outputs(out, fmt), overwrite)
    if fmt == "onnx" and not int8:
        export_onnx(model, out, overwrite=overwrite, **onnx_kwargs)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        fp32 = out.with_name(f"{out.stem}.fp32.tmp{os.getpid()}.onnx")
        try:
            export_onnx(model, fp32, overwrite=True, **onnx_kwargs)
            if fmt == "onnx":
                lowp.quantize_onnx(fp32, out, calib, calib_images, progress=progress, overwrite=True)
            else:
                lowp.to_openvino(fp32, out, precision, calib=calib, calib_images=calib_images, progress=progress,
                                 overwrite=True)
        finally:
            if fp32.exists():
                fp32.unlink()
    written = _outputs(out, fmt)
    return {"written": [str(p) for p in written], "format": fmt, "precision": "int8" if int8 else precision,
            "bytes": sum(p.stat().st_size for p in written)}
