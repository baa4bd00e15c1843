"""``gfldet eval``: COCO metrics of a model on a COCO-format data set, from a gfldet checkpoint, published weights
or an exported file on a runtime backend (its metrics computed by the same code: gfldet.engine.evaluate).

    from gfldet.evaluate import run_eval
    metrics = run_eval(checkpoint="runs/x/best.pt", ann="val.json", images="val/", out="report")
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from .data.coco import CocoDetection
from .deploy import BACKENDS, load
from .engine.device import place_model, resolve_device
from .engine.evaluate import EVAL_FILES, evaluate
from .errors import GfldetError
from .files import check_output_folder, refuse_existing, write_json
from .models.io import load_checkpoint, model_from_checkpoint
from .models.pretrained import load_pretrained

__all__ = ["run_eval"]

log = logging.getLogger(__name__)


def _out_path(out: str | os.PathLike | None, force: bool) -> Path | None:
    """``out``: a folder (metrics.json and pictures, as for predict) or a NAME.json file (the metrics only); checked
    before the evaluation so that its result is never lost and nothing is overwritten without ``force``."""
    if not out:
        return None
    out = Path(out)
    if out.suffix == ".json":
        if out.is_dir():
            raise GfldetError(f"--out {out} is a folder: give a NAME.json file or a folder name without .json")
        refuse_existing([out], force)
        return out
    return check_output_folder(out, ("metrics.json", *EVAL_FILES), force)


def _data(ann: str | None, images: str | None, meta: dict[str, Any], source: str) -> tuple[str, str]:
    """``ann``/``images``, or the validation split of the run a checkpoint came from (``meta``)."""
    if ann and images:
        return ann, images
    if ann or images:
        raise GfldetError("give both --ann and --images, or neither (then the checkpoint's own validation data is used)")
    val = (meta.get("config") or {}).get("data", {}).get("val", {})
    if not (val.get("ann") and val.get("images")):
        raise GfldetError(f"{source} names no validation data (not saved by `gfldet train` with data.val): "
                          "pass --ann ANN.json --images DIR")
    log.info("evaluating on the run's validation data %s", val["ann"])
    return val["ann"], val["images"]


def _exported_model(checkpoint: str | None, weights: str | None, backend: str, device: str, threads: int | None,
                    precision: str | None, settings: dict[str, Any]) -> torch.nn.Module:
    """An exported file on a runtime backend, as a module the evaluation runs."""
    if weights:
        raise GfldetError(f"--weights run with the torch backend; --backend {backend} takes --checkpoint FILE "
                          "(a file from `gfldet export`)")
    if device not in ("auto", "cpu"):
        log.warning("--device %s is ignored by the %s backend (it runs on the CPU)", device, backend)
    detector = load(checkpoint, backend=backend, threads=threads, precision=precision).configure(**settings)
    model = detector.as_module()
    model.class_names = detector.class_names
    return model


def run_eval(checkpoint: str | None = None, *, weights: str | None = None, ann: str | None = None,
             images: str | None = None, out: str | os.PathLike | None = None, force: bool = False,
             backend: str = "torch", threads: int | None = None, precision: str | None = None, batch_size: int = 2,
             workers: int = 2, score_thr: float | None = None, device: str = "auto",
             progress: bool = True) -> dict[str, Any]:
    """COCO metrics (:func:`gfldet.engine.evaluate.evaluate`) of ``checkpoint`` (a gfldet checkpoint, or with
    ``backend`` onnxruntime / openvino a file from ``gfldet export``) or ``weights`` (published weights by name or
    file) on ``ann`` / ``images`` (default: the checkpoint's own validation data). ``score_thr`` None keeps the
    model's own (the test settings it was saved or exported with). ``out``: a folder for metrics.json and the
    evaluation's pictures and tables, or NAME.json for the metrics only (refused if present, unless ``force``).
    Returns the metrics, with ``written`` (the metrics file) where ``out`` is given."""
    if (checkpoint is None) == (weights is None):
        raise GfldetError("give a checkpoint or weights (published weights' name or file), not both or neither")
    dev = resolve_device(device, "--device")
    out_path = _out_path(out, force)
    settings = {"score_thr": score_thr} if score_thr is not None else {}
    if backend in BACKENDS:
        if not (ann and images):
            raise GfldetError(f"--backend {backend}: give --ann ANN.json and --images DIR (an exported file does not "
                              "name the data it was trained on)")
        model = _exported_model(checkpoint, weights, backend, device, threads, precision, settings)
    elif backend != "torch":
        raise GfldetError(f"unknown backend {backend!r}; choose torch or one of {sorted(BACKENDS)}")
    else:
        if threads or precision:
            raise GfldetError("--threads and --precision are for the onnxruntime / openvino backends")
        if weights:
            model, meta = load_pretrained(weights, progress=progress), {}
        else:
            meta = load_checkpoint(checkpoint)
            model = model_from_checkpoint(meta, checkpoint)
        model = place_model(model.configure(**settings), dev)
        ann, images = _data(ann, images, meta, checkpoint or weights)
    dataset = CocoDetection(ann, images, train=False)
    if model.class_names is not None and list(model.class_names) != list(dataset.classes):
        raise GfldetError(f"{ann}: categories {dataset.classes} differ from the model's {model.class_names}")
    folder = out_path if out_path is not None and out_path.suffix != ".json" else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    metrics = evaluate(model, dataset, batch_size=batch_size, device=dev if backend == "torch" else torch.device("cpu"),
                       num_workers=workers, progress=progress, out_dir=str(folder) if folder else None)
    if out_path:
        path = folder / "metrics.json" if folder else out_path
        write_json(path, {k: v for k, v in metrics.items() if k != "results"}, indent=2)  # replaced whole or not at all
        metrics["written"] = str(path)
    return metrics
