"""COCO-style evaluation: detections -> COCO results, metrics with pycocotools, dataset-level inference loop.

``detections_to_coco``  model outputs (xyxy, 0-based contiguous labels) -> COCO result entries (xywh, category ids);
``coco_metrics``        pycocotools' ``COCOeval`` (bbox) on a ground-truth file / dict and a list of results;
``evaluate``            runs a model over a dataset (sharded under DDP, gathered to rank 0) and calls the two above;
``format_metrics``      a plain-text table of the metrics.

All AP / AR numbers come from pycocotools; nothing here re-implements AP. They are fractions in [0, 1].
A metric that COCO leaves undefined (``-1``: no ground truth in that area range, or of that class) is ``None``.

The dataset only needs to be duck-typed: ``len(ds)``, ``ds[i] -> (image (3, H, W) uint8 tensor, target dict
with an "image_id" (the COCO image id))`` and the attributes ``ann_file`` (the COCO json), ``cat_ids``
(label -> COCO category id) and, optionally, ``classes`` (names, in label order).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.coco import collate
from ..errors import GfldetError
from . import distributed as D

__all__ = ["detections_to_coco", "coco_metrics", "evaluate", "format_metrics", "METRIC_KEYS"]

log = logging.getLogger(__name__)

#: the summary keys of :func:`coco_metrics`, in the order of ``COCOeval.stats``' entries used
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
_STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR100": 8}


# --------------------------------------------------------------------------- conversion
def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_floating_point():
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def detections_to_coco(
    image_ids: Sequence[int], detections: Sequence[Mapping[str, Any]], cat_ids: Sequence[int] | None,
    box_digits: int = 3,
) -> list[dict]:
    """COCO ``bbox`` result entries ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.

    ``detections[i]`` holds the detections of image ``image_ids[i]``: ``boxes`` ``(D, 4)`` xyxy in original
    pixels, ``scores`` ``(D,)`` and ``labels`` ``(D,)`` (0-based, contiguous); tensors or arrays. ``labels`` are
    mapped to COCO category ids through ``cat_ids`` (``None``: the labels are the category ids). Boxes are
    rounded to ``box_digits`` decimals, scores to 5. The entries follow the detections' order.
    """
    if len(image_ids) != len(detections):
        raise ValueError(f"got {len(image_ids)} image ids for {len(detections)} detection dicts")
    lut = None if cat_ids is None else [int(c) for c in cat_ids]
    out: list[dict] = []
    for image_id, det in zip(image_ids, detections):
        boxes = _np(det["boxes"]).astype(np.float64).reshape(-1, 4)
        scores = _np(det["scores"]).astype(np.float64).reshape(-1)
        labels = _np(det["labels"]).astype(np.int64).reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
        if lut is not None and len(labels) and (labels.min() < 0 or labels.max() >= len(lut)):
            raise GfldetError(f"image {image_id}: labels must lie in [0, {len(lut)}), got {labels.min()}..{labels.max()}")
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        iid = int(image_id)
        for b, s, lab in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
            out.append({
                "image_id": iid,
                "category_id": lut[lab] if lut is not None else int(lab),
                "bbox": [round(v, box_digits) for v in b],
                "score": round(s, 5),
            })
    return out


# --------------------------------------------------------------------------- metrics
def _load_gt(ann_file_or_dict: str | os.PathLike | Mapping[str, Any]):
    """A pycocotools ``COCO`` built quietly from a json path or a dict (copied; ``iscrowd`` / ``area`` filled in
    when missing)."""
    from pycocotools.coco import COCO

    if isinstance(ann_file_or_dict, Mapping):
        data = copy.deepcopy(dict(ann_file_or_dict))
    else:
        with open(os.fspath(ann_file_or_dict), encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
            data = json.load(f)
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    for a in data["annotations"]:
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = float(a["bbox"][2] * a["bbox"][3])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _mean_valid(a: np.ndarray) -> float | None:
    a = a[a > -1]
    return float(a.mean()) if a.size else None


def coco_metrics(
    ann_file_or_dict: str | os.PathLike | Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    class_names: Sequence[str] | None = None,
    cat_ids: Sequence[int] | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    img_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """COCO bbox metrics of ``results`` (entries as made by :func:`detections_to_coco`) against a ground truth.

    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100": float in [0, 1] or None, "per_class": {name:
    AP@[.5:.95] or None}}``; ``None`` where COCO leaves the metric undefined (no non-crowd ground truth in that
    area range / of that class). Empty ``results`` give 0 for every defined metric.

    ``cat_ids`` (label -> category id) fixes the classes and their order in ``per_class`` and restricts the
    evaluation to those categories (default: every category of the ground truth); ``class_names`` are their
    names in the same order (default: the ground truth's names). ``img_ids`` restricts the evaluation to those
    images (default: all images of the ground truth). With ``out_dir``, writes ``pr_curve.png`` and
    ``per_class_ap.md`` there. pycocotools' prints are swallowed; its summary table is logged at INFO.
    """
    try:
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:  # pragma: no cover - pycocotools is an evaluation-only dependency
        raise ImportError("coco_metrics needs pycocotools: pip install pycocotools") from e

    gt = _load_gt(ann_file_or_dict)
    gt_cats = {int(c["id"]): c for c in gt.dataset["categories"]}
    if cat_ids is None:
        classes = sorted(gt_cats)
    else:
        classes = [int(c) for c in cat_ids]
    if class_names is None:
        names = [str(gt_cats[c].get("name", c)) if c in gt_cats else str(c) for c in classes]
    else:
        names = [str(n) for n in class_names]
        if len(names) != len(classes):
            raise GfldetError(f"{len(names)} class names for {len(classes)} categories {classes}")
    eval_cats = [c for c in classes if c in gt_cats]
    missing = [c for c in classes if c not in gt_cats]
    if missing:
        log.warning("category ids %s are not in the ground truth's categories", missing)
    unknown = sorted({int(r["category_id"]) for r in results} - set(eval_cats))
    if unknown:
        log.warning("%d results have category ids %s outside the evaluated categories %s; they are ignored",
                    sum(int(r["category_id"]) in unknown for r in results), unknown, eval_cats)

    with contextlib.redirect_stdout(io.StringIO()) as captured:
        if len(results):
            dt = gt.loadRes([dict(r) for r in results])  # loadRes adds keys to the entries: give it copies
        else:  # loadRes cannot take an empty list; an empty result set evaluates fine in COCOeval
            from pycocotools.coco import COCO

            dt = COCO()
            dt.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                          "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.catIds = sorted(eval_cats)
        if img_ids is not None:
            ev.params.imgIds = sorted({int(i) for i in img_ids})
        ev.evaluate()
        ev.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            ev.summarize()
    log.debug("pycocotools: %s", captured.getvalue().strip())
    log.info("COCO bbox evaluation (%d results, %d images, %d categories):\n%s", len(results),
             len(ev.params.imgIds), len(ev.params.catIds), summary.getvalue().rstrip())

    metrics: dict[str, Any] = {}
    for k in METRIC_KEYS:
        v = float(ev.stats[_STATS_INDEX[k]])
        metrics[k] = v if v > -1 else None

    # precision: [T iou thresholds, R recall thresholds, K categories, A area ranges, M max dets]
    precision = ev.eval["precision"]
    k_of = {c: i for i, c in enumerate(ev.params.catIds)}
    t50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
    t75 = int(np.argmin(np.abs(ev.params.iouThrs - 0.75)))
    per_class: dict[str, float | None] = {}
    rows = []
    for c, name in zip(classes, names):
        if c in k_of:
            p = precision[:, :, k_of[c], 0, -1]
            ap, ap50, ap75 = _mean_valid(p), _mean_valid(p[t50]), _mean_valid(p[t75])
        else:
            ap = ap50 = ap75 = None
        per_class[name] = ap
        n_gt = len(gt.getAnnIds(catIds=[c], imgIds=ev.params.imgIds, iscrowd=False)) if c in gt_cats else 0
        rows.append((name, c, n_gt, ap, ap50, ap75))
    metrics["per_class"] = per_class
    table = _per_class_markdown(rows)
    log.debug("per-class AP:\n%s", table)

    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "per_class_ap.md"), "w") as f:
            f.write(table)
        _plot_pr(os.path.join(out_dir, "pr_curve.png"), ev, [(k_of[c], n) for c, n in zip(classes, names) if c in k_of],
                 t50, t75)
    return metrics


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _per_class_markdown(rows: Sequence[tuple]) -> str:
    lines = ["| class | category id | GT instances | AP | AP50 | AP75 |", "|---|---:|---:|---:|---:|---:|"]
    for name, c, n_gt, ap, ap50, ap75 in rows:
        lines.append(f"| {name} | {c} | {n_gt} | {_fmt(ap)} | {_fmt(ap50)} | {_fmt(ap75)} |")
    return "\n".join(lines) + "\n"


def _plot_pr(path: str, ev, classes: Sequence[tuple[int, str]], t50: int, t75: int, max_classes: int = 10) -> None:
    """Precision-recall curves (area all, 100 detections): class-averaged at IoU 0.5 and 0.75, and per class
    at IoU 0.5 when there are at most ``max_classes`` classes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rec = ev.params.recThrs
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K)

    def mean_curve(p: np.ndarray) -> np.ndarray | None:  # (R, K) -> (R,), averaging the defined classes
        valid = (p > -1).all(axis=0)
        return p[:, valid].mean(axis=1) if valid.any() else None

    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for t, style in ((t50, "-"), (t75, "--")):
        curve = mean_curve(precision[t])
        if curve is not None:
            ax.plot(rec, curve, style, color="black", linewidth=2.0,
                    label=f"all classes, IoU {ev.params.iouThrs[t]:.2f} (AP {curve.mean():.3f})")
    if len(classes) <= max_classes:
        for k, name in classes:
            p = precision[t50, :, k]
            if (p > -1).all():
                ax.plot(rec, p, "-", linewidth=1.0, alpha=0.8, label=f"{name}, IoU 0.50 (AP {p.mean():.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("COCO precision-recall (area all, 100 detections)")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    log.debug("wrote %s", path)


# --------------------------------------------------------------------------- inference loop
# what ``evaluate(..., out_dir=...)`` writes into its folder (gfldet eval --out adds metrics.json)
EVAL_FILES = ("detections.json", "pr_curve.png", "per_class_ap.md")


def evaluate(
    model: nn.Module,
    dataset,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    amp: bool = False,
) -> dict[str, Any] | None:
    """COCO bbox metrics of ``model`` on ``dataset`` (see the module docstring for the duck-typed interface).

    Runs ``model(images)`` in eval mode under ``torch.inference_mode`` (and ``torch.autocast`` with ``amp``),
    images moved to ``device`` (the model is not moved); the model's train/eval mode is restored afterwards.
    Returns :func:`coco_metrics`' dict plus ``"results"`` (the number of detections). The evaluation is
    restricted to the images of ``dataset`` (a subset of the json's images is fine). With ``out_dir``, also
    writes ``detections.json`` (COCO results), ``pr_curve.png`` and ``per_class_ap.md``.

    Under ``torch.distributed`` with several processes every rank must call this: each runs the images
    ``rank, rank + world, ...`` (no duplicates), the results are gathered to rank 0 with ``all_gather_object``
    and only rank 0 computes the metrics and writes files; the other ranks return ``None``.
    """
    from tqdm.auto import tqdm

    rank, world = D.rank(), D.world_size()
    device = torch.device(device)
    net = D.unwrap(model)  # the bare module: a DDP wrapper would sync buffers in forward and hang on uneven shards
    indices = list(range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=indices, num_workers=num_workers, collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    image_ids: list[int] = []
    results: list[dict] = []
    was_training = net.training
    net.eval()
    t0 = time.perf_counter()
    try:
        with torch.inference_mode(), torch.autocast(device_type=device.type, enabled=amp):
            for images, targets in tqdm(loader, desc="eval", disable=not progress or rank != 0, dynamic_ncols=True,
                                        leave=False):
                images = [img.to(device, non_blocking=True) for img in images]
                dets = net(images)
                ids = [int(t["image_id"]) for t in targets]
                image_ids.extend(ids)
                results.extend(detections_to_coco(ids, dets, dataset.cat_ids))
    finally:
        net.train(was_training)
    elapsed = time.perf_counter() - t0
    log.info("inference on %d images: %.1f s (%.1f ms/image)%s", len(image_ids), elapsed,
             1000 * elapsed / max(1, len(image_ids)), f" on rank {rank}/{world}" if world > 1 else "")

    if world > 1:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, (image_ids, results))
        if rank != 0:
            return None
        image_ids = [i for ids, _ in gathered for i in ids]
        results = [r for _, res in gathered for r in res]

    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "detections.json"), "w") as f:
            json.dump(results, f)
    metrics = coco_metrics(dataset.ann_file, results, class_names=getattr(dataset, "classes", None),
                           cat_ids=dataset.cat_ids, out_dir=out_dir, img_ids=image_ids)
    metrics["results"] = len(results)
    return metrics


# --------------------------------------------------------------------------- reporting
def format_metrics(metrics: Mapping[str, Any]) -> str:
    """The summary metrics and the per-class AP as an aligned plain-text table (``-`` for undefined)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    rows = [(k, cell(metrics.get(k))) for k in METRIC_KEYS if k in metrics]
    if "results" in metrics:
        rows.append(("detections", str(metrics["results"])))
    per_class = metrics.get("per_class") or {}
    width = max([len(k) for k, _ in rows] + [len(str(n)) for n in per_class] + [6])
    lines = [f"{'metric':<{width}}  value"] + [f"{k:<{width}}  {v:>5}" for k, v in rows]
    if per_class:
        lines += ["", f"{'class':<{width}}  AP"] + [f"{str(n):<{width}}  {cell(v):>5}" for n, v in per_class.items()]
    return "\n".join(lines)
