"""ONNX export of a GFL detector (``gfldet export``); the contract is documented in ``docs/onnx.md``. NanoDet
(gfldet.models.nanodet) exports through the same graph: it has the parts read here, and states the rules in which
its runtime differs (its ``export_settings``: warp resize, BGR, NanoDet's selection and NMS) in the metadata.

One input, ``images``: ``(N, 3, H, W)`` float32 RGB in 0..255, any N, H, W (dynamic). Resizing is the caller's
job (:func:`gfldet.deploy.preprocess` does it the way the model does); normalisation and zero-padding to a
multiple of the size divisor happen inside the graph, exactly as :meth:`gfldet.GFL.preprocess` does.

Two modes:

* ``decoded`` (default): ``boxes (N, A, 4)`` xyxy pixels of the input, unclipped; ``scores (N, A, C)`` sigmoid
  class-quality scores (GFLV2: the joint score, class score x DGQP quality); ``priors (A, 3)`` ``(cx, cy, stride)`` of
  every prior (all levels, row-major per level); then the box representation's extras of every prior:
  ``distributions (N, A, 4, n+1)``, ``edge_peak``, ``edge_entropy``, ``edge_std`` (pixels) ``(N, A, 4)`` and
  ``loc_conf (N, A)``. Everything before score threshold and NMS (format 2; format 1 had no ``edge_peak`` and
  ``edge_entropy``).
* ``raw``: per level ``cls_p3..cls_p7`` ``(N, C, H_l, W_l)`` logits (GFLV2: of the joint score), then ``reg_p3..reg_p7``
  ``(N, 4(n+1), H_l, W_l)`` distribution logits (already multiplied by the level's learned scale).

:func:`gfldet.deploy.postprocess` turns the decoded outputs into final detections, the same as the PyTorch model's;
``raw`` is for one's own decoding (gfldet's runtime refuses it).
The model's settings (strides, classes, bins, test thresholds, input sizes) are stored in the file's
``metadata_props`` under ``gfldet.*`` keys so that a runtime needs nothing else.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import GfldetError
from .files import atomic_path, refuse_existing
from .ops.boxes import box_centers

log = logging.getLogger(__name__)

__all__ = ["export_onnx", "ExportModule", "is_gfl_assembly", "MODES", "FORMAT", "DECODED_OUTPUTS", "output_names", "quiet_exporter_logs", "EXPORTER_LOGGERS"]

MODES = ("decoded", "raw")
FORMAT = 2  # gfldet.format: 2 = decoded outputs with every uncertainty summary (the runtime needs >= 2)
# a decoded graph's outputs: the frame (boxes, scores, priors), then the distribution box's extras per prior
DECODED_OUTPUTS = ("boxes", "scores", "priors", "distributions", "edge_peak", "edge_entropy", "edge_std", "loc_conf")
DCN_OPSET = 19  # the first opset with DeformConv (torchvision's deform_conv2d exports to it)
_LEVEL_NAMES = ("p3", "p4", "p5", "p6", "p7", "p8", "p9")


# Loggers of the exporter's libraries: torch.onnx's dynamo exporter logs every optimisation pass at INFO
# (a few hundred lines per export) through these.
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")


@contextlib.contextmanager
def quiet_exporter_logs(names: tuple[str, ...] = EXPORTER_LOGGERS, level: int = logging.WARNING) -> Iterator[None]:
    """Raise the loggers ``names`` (and any of their descendants that set a level of their own) to at least
    ``level`` while the block runs, and restore their levels afterwards. Nothing changes when the ``gfldet``
    logger is enabled for DEBUG (``gfldet -v``): the exporter's messages are then shown."""
    if logging.getLogger("gfldet").isEnabledFor(logging.DEBUG):
        yield
        return
    prefixes = tuple(f"{n}." for n in names)
    targets = [logging.getLogger(n) for n in names]
    targets += [lg for key, lg in list(logging.Logger.manager.loggerDict.items())
                if isinstance(lg, logging.Logger) and key.startswith(prefixes) and lg.level != logging.NOTSET]
    saved = [(lg, lg.level) for lg in targets]
    for lg, old in saved:
        if old == logging.NOTSET or old < level:
            lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in saved:
            lg.setLevel(old)


def output_names(mode: str, num_levels: int) -> list[str]:
    if mode == "decoded":
        return list(DECODED_OUTPUTS)
    if mode == "raw":
        levels = _LEVEL_NAMES[:num_levels]
        return [f"cls_{l}" for l in levels] + [f"reg_{l}" for l in levels]
    raise GfldetError(f"unknown export mode {mode!r}; choose one of {MODES}")


def is_gfl_assembly(model: nn.Module) -> bool:
    """Whether ``model`` decodes as the ONNX outputs and gfldet.deploy assume: its box representation and quality
    estimator say they are exportable (``exportable``: GFL's distribution with unit bins; GFL's joint score, or
    GFLV2's joint score in its place), its head carries the estimator's branch, one prior per location."""
    return (bool(getattr(model.box, "exportable", False)) and bool(getattr(model.quality, "exportable", False))
            and model.head.quality_channels == model.quality.channels and model.prior_generator.num_anchors == 1)


class ExportModule(nn.Module):
    """The traced graph: ``images (N, 3, H, W)`` float 0..255 -> the outputs of ``mode`` (see module doc)."""

    def __init__(self, model: nn.Module, mode: str = "decoded"):
        super().__init__()
        if mode not in MODES:
            raise GfldetError(f"unknown export mode {mode!r}; choose one of {MODES}")
        if not is_gfl_assembly(model):
            raise GfldetError("ONNX export supports the GFL and GFLV2 detectors only (distribution with unit bins, joint "
                              "QFL score, one anchor per location), not another assembly")
        self.model, self.mode = model, mode

    def forward(self, images: Tensor):
        m = self.model
        # normalisation and zero-padding up to a multiple of the size divisor: the model's own transform
        x = m.transform.pad(m.transform.normalize(images))
        cls_logits, reg_outputs = m.forward_features(x)
        if self.mode == "raw":  # GFLV2: the joint score's logits and the distribution logits, as GFL's outputs
            n = m.head.box_channels
            joint = [m.quality.joint(c, r[:, n:] if m.head.quality_channels else None) for c, r in zip(cls_logits, reg_outputs)]
            return (*joint, *(r[:, :n] for r in reg_outputs))
        # the model's prior generator and box representation (identical floats to the eager model)
        per_level = m.prior_generator.grid([tuple(c.shape[-2:]) for c in cls_logits], x.device)
        centers, strides = box_centers(torch.cat(per_level)), m.prior_generator.anchor_strides(per_level)  # (A, 2), (A,)
        cls, box, quality = m.head.split(cls_logits, reg_outputs)
        scores = m.quality.joint(cls, None if quality is None else quality[..., None]).sigmoid()  # GFLV2: joint
        boxes = m.box.decode(box, centers, strides[:, None])
        extras = m.box.extras(box, strides)
        priors = torch.cat([centers, strides[:, None]], dim=-1)
        return (boxes, scores, priors, *(extras[k] for k in DECODED_OUTPUTS[3:]))


def _metadata(model: nn.Module, mode: str, class_names: list[str] | None, cat_ids: list[int] | None) -> dict[str, str]:
    if hasattr(model, "export_settings"):  # a detector that states its own runtime rules (NanoDet)
        settings = model.export_settings()
        num_classes, strides = int(settings["num_classes"]), settings["strides"]
        names = class_names or getattr(model, "class_names", None) or [str(i) for i in range(num_classes)]
        meta = {"gfldet.format": str(FORMAT), "gfldet.mode": json.dumps(mode)}
        meta.update({f"gfldet.{k}": json.dumps(v) for k, v in settings.items()})
        meta.update({
            "gfldet.class_names": json.dumps(list(names)),
            "gfldet.cat_ids": json.dumps(list(cat_ids) if cat_ids else list(range(1, num_classes + 1))),
            "gfldet.outputs": json.dumps(output_names(mode, len(strides))),
        })
        return meta
    cfg = model.config
    names = class_names or model.class_names or [str(i) for i in range(cfg.num_classes)]
    return {
        "gfldet.format": str(FORMAT),
        "gfldet.mode": json.dumps(mode),
        "gfldet.num_classes": str(cfg.num_classes),
        "gfldet.reg_max": str(cfg.reg_max),
        "gfldet.strides": json.dumps(list(cfg.strides)),
        "gfldet.size_divisor": str(cfg.size_divisor),
        "gfldet.pixel_mean": json.dumps(list(cfg.pixel_mean)),
        "gfldet.pixel_std": json.dumps(list(cfg.pixel_std)),
        "gfldet.min_size": json.dumps(cfg.min_size),
        "gfldet.max_size": json.dumps(cfg.max_size),
        "gfldet.score_thr": repr(float(cfg.score_thr)),
        "gfldet.nms_pre": str(cfg.nms_pre),
        "gfldet.nms_iou": repr(float(cfg.nms_iou)),
        "gfldet.max_per_img": str(cfg.max_per_img),
        "gfldet.class_names": json.dumps(list(names)),
        "gfldet.cat_ids": json.dumps(list(cat_ids) if cat_ids else list(range(1, cfg.num_classes + 1))),
        "gfldet.outputs": json.dumps(output_names(mode, len(cfg.strides))),
    }


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    mode: str = "decoded",
    example_size: tuple[int, int] = (320, 320),
    opset: int | None = None,
    class_names: list[str] | None = None,
    cat_ids: list[int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as one self-contained ONNX file with dynamic batch and image size.

    The file is written beside ``path`` and renamed into place, so an existing file is never left half
    written; it is replaced only with ``overwrite``. ``opset``: the ONNX opset, by default 18, or 19 for a model with
    deformable convolutions (``model.stage_with_dcn``), which become ONNX ``DeformConv`` (opset 19 and later).
    """
    import onnx  # torch.onnx needs onnx and onnxscript: fail here, before any work, when they are missing

    path = Path(path)
    refuse_existing([path], overwrite)
    # A feature map of size 1 in the traced example makes the exporter specialise the image size (torch.export
    # treats sizes 0 and 1 as constants), so every level must be at least 2 x 2 in the example.
    strides = tuple(model.prior_generator.strides)
    need = 2 * max(strides)
    if min(example_size) < need:
        raise GfldetError(f"example_size {tuple(example_size)} is too small to trace dynamic shapes: each side must be "
                          f">= {need} (twice the coarsest stride) so that no feature map is 1 pixel wide")
    dcn = tuple(getattr(getattr(model, "config", None), "stage_with_dcn", ()))
    if opset is None:
        opset = DCN_OPSET if any(dcn) else 18
    elif any(dcn) and opset < DCN_OPSET:
        raise GfldetError(f"the model uses deformable convolutions (model.stage_with_dcn={dcn}), which ONNX has as "
                          f"DeformConv from opset {DCN_OPSET} on: pass opset >= {DCN_OPSET} (gfldet export --opset), got {opset}")
    was_training = model.training
    wrapper = ExportModule(model, mode).eval()
    names = output_names(mode, len(strides))
    # a batch of 2: torch.export specialises a dimension whose example size is 1 as soon as a reshape reads it
    # (GFLV2's DGQP reshapes the distributions per image)
    example = torch.randint(0, 256, (2, 3, *example_size), dtype=torch.float32, device=model.transform.pixel_mean.device)
    batch, height, width = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("height", min=32, max=4096), torch.export.Dim("width", min=32, max=4096)
    try:
        with torch.no_grad(), quiet_exporter_logs():
            prog = torch.onnx.export(
                wrapper,
                (example,),
                dynamic_shapes={"images": {0: batch, 2: height, 3: width}},
                input_names=["images"],
                output_names=names,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        model.train(was_training)
    proto = prog.model_proto
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if any(not dims[i].dim_param for i in (0, 2, 3)):
        raise RuntimeError(f"the exporter fixed the input shape to {[d.dim_value or d.dim_param for d in dims]}; "
                           "batch, height and width must stay dynamic")
    for k, v in _metadata(model, mode, class_names, cat_ids).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    with atomic_path(path) as tmp:
        onnx.save_model(proto, os.fspath(tmp))
    log.info("wrote %s (%s mode, outputs %s)", path, mode, ", ".join(names))
    return path
