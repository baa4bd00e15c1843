"""What a COCO-format dataset looks like to a GFL detector, before training on it (``gfldet inspect-data``).

>>> report = inspect_dataset("data/train.json", "data/images", load_config("run.yaml"))
>>> print(format_report(report))
>>> summary_line(report); train_warnings(report)   # one line / the problems that silently hurt training

Everything is computed from the annotation file (checked by :class:`~gfldet.data.coco.CocoDetection`, which
also probes that the image folder exists and that a sample of its files do; no image is decoded: sizes are
the JSON's ``width``/``height``), at the network input size of the config (the detector's keep-ratio resize:
scale ``min(min_size / short side, max_size / long side)``, padding to a multiple of 32):

* counts: images, annotations, images without annotations, instances per category;
* box sizes after the resize: quantiles of ``sqrt(w * h)`` and of the aspect ratio ``h / w``, and per FPN level
  the boxes whose size is nearest to that level's ATSS anchor (``octave_base_scale * stride``);
* the real assignment: the run's own prior generator and assigner (``gfldet.models.assemble``; ATSS with the
  configured ``topk`` for GFL, crowd boxes as ignore regions) on each image's own anchors, at the run's strides and
  size divisor: ground truths (GTs) that get no positive anchor never train;
* for each positive anchor the distances to the GT's four edges in strides of its level: those beyond
  ``reg_max - 0.1`` bins are clamped by the DFL targets, i.e. the box cannot be represented;
* recommendations: an input size and a ``reg_max``, each with its reason.

The assignment runs on images grouped by padded shape; with more than ``max_images`` images it runs on a
seeded random sample of them (the report says so). 10k annotations take a few seconds on a CPU.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np

from ..config import Config
from ..errors import GfldetError
from ..files import check_output_folder, write_json
from ..models.zoo import is_nanodet
from . import inspect_stats as stats
from .coco import CocoDetection
from .inspect_plot import plot_sizes
from .inspect_stats import CANDIDATE_MIN_SIZES, REG_MAX_CHOICES

__all__ = ["inspect_dataset", "format_report", "summary_line", "train_warnings", "plot_sizes", "write_report",
           "check_out_dir", "CANDIDATE_MIN_SIZES", "REG_MAX_CHOICES"]

log = logging.getLogger(__name__)

DFL_EPS = 0.1  # the DFL targets clamp distances to reg_max - 0.1 bins (gfldet.ops.boxes.box_to_distance)
# train_warnings thresholds
WARN_NO_POSITIVE = 0.01
WARN_BEYOND_REG_MAX = 0.005
WARN_FEW_INSTANCES = 10
WARN_EMPTY_IMAGES = 0.5
WARN_DEGENERATE = 0.001  # fraction of boxes below stats.DEGENERATE_PX
WARN_BELOW_STRIDE = 0.05  # fraction of boxes whose sqrt(area) is below the finest stride

_EXAMPLES = 5
CANDIDATE_MAX_IMAGES = 1000  # images the other candidate input sizes are assigned on (a subset of the sample)
REPORT_FILE = "inspect.json"
PLOT_FILE = "sizes.png"


# --------------------------------------------------------------------------- the report
def inspect_dataset(ann_file: str | os.PathLike, images_dir: str | os.PathLike, cfg: Config | None = None, *,
                    max_images: int | None = 2000, seed: int = 0, dataset: CocoDetection | None = None,
                    recommend: bool = True) -> dict[str, Any]:
    """Inspect a COCO-format dataset at the input size and GFL settings of ``cfg`` (default: ``Config()``).

    ``max_images`` caps the images the ATSS assignment runs on (a seeded random sample; ``None``: all); the
    counts and box sizes always use every image. ``recommend=False`` skips the search over other input sizes
    (the trainer's quick summary). Raises :class:`~gfldet.data.coco.DatasetError` (a GfldetError
    naming the file and the entry) on a malformed annotation file or a wrong image folder.
    Returns a JSON-serialisable dict (see :func:`format_report`).
    """
    t0 = time.perf_counter()
    cfg = cfg if cfg is not None else Config()
    if is_nanodet(cfg.model.arch):
        raise GfldetError(f"inspect-data reports a data set against GFL's resize, FPN levels, ATSS assignment and reg_max; "
                          f"model.arch={cfg.model.arch} (NanoDet-Plus) warps every image to its input size and assigns "
                          "with its Dynamic Soft Label Assigner, which the report does not model: run it with a GFL "
                          "config (or none)")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise GfldetError(f"max_images must be a positive integer or None, got {max_images!r}")
    geo = stats.Geometry(cfg)
    # ``dataset``: the same file already loaded and checked (the trainer's), not read a second time
    ds = dataset if dataset is not None else CocoDetection(ann_file, images_dir, train=False, check_images=False)
    data = stats.Data(ds)
    s = ds.summary
    notes: list[str] = []
    if cfg.model.box != "distribution":
        notes.append(f"model.box is {cfg.model.box!r}: reg_max does not bound its boxes; the reg_max figures apply "
                     f"to box='distribution' only")
    if list(cfg.model.anchor_ratios) != [1.0] or cfg.model.scales_per_octave != 1:
        notes.append("the model has several anchors per location: the assignment uses all of them; the per-level "
                     "anchor size below is the base one (octave_base_scale x stride)")
    if cfg.input.multiscale:
        notes.append(f"training draws short sides from {list(cfg.input.multiscale)}; this report is at "
                     f"input.min_size={geo.min_size}")

    # ---- 1. counts
    n_gt = int(data.gt.size)
    inst = np.bincount(data.labels[data.gt], minlength=len(ds.cat_ids))
    crowd_inst = np.bincount(data.labels[data.ign], minlength=len(ds.cat_ids))
    classes = [{"id": int(cid), "name": name, "instances": int(inst[i]), "crowd": int(crowd_inst[i])}
               for i, (cid, name) in enumerate(zip(ds.cat_ids, ds.classes))]
    has_gt = np.diff(data.gt_split) > 0
    dataset = {
        "images": data.num_images,
        "annotations": int(s["annotations"]),
        "crowd_annotations": int(s["crowd_annotations"]),
        "ground_truths": n_gt,
        "categories": len(ds.cat_ids),
        "images_without_annotations": int(s["images_without_boxes"]),
        "images_without_ground_truth": int((~has_gt).sum()),
        "images_in_file": int(s["images_in_file"]),
        "annotations_in_file": int(s["annotations_in_file"]),
        "dropped": dict(s["dropped"]),
        "fixed": dict(s["fixed"]),
    }

    # ---- 2. sizes at the input size
    scales, pads = stats.resize_sizes(data.sizes, geo.min_size, geo.max_size, geo.divisor)
    boxes_r = data.resized_boxes(scales)
    wh = (boxes_r[data.gt, 2:] - boxes_r[data.gt, :2]).numpy().astype(np.float64)  # (G, 2)
    sq = np.sqrt(np.clip(wh[:, 0] * wh[:, 1], 0, None))
    aspect = wh[:, 1] / np.maximum(wh[:, 0], 1e-9)
    degenerate = wh.min(axis=1) < stats.DEGENERATE_PX if n_gt else np.zeros(0, bool)
    anchor = np.asarray(geo.anchor_sizes, dtype=np.float64)
    if n_gt:
        nearest = np.abs(np.log2(np.maximum(sq, 1e-9))[:, None] - np.log2(anchor)[None, :]).argmin(axis=1)
    else:
        nearest = np.zeros(0, np.int64)
    nearest_counts = np.bincount(nearest, minlength=len(geo.strides))
    sizes = {
        "boxes": n_gt,
        "sqrt_area_px": stats.quantiles(sq),
        "aspect_ratio_h_over_w": stats.quantiles(aspect),
        "degenerate": int(degenerate.sum()),
        "degenerate_px": stats.DEGENERATE_PX,
        "below_finest_stride": int((sq < geo.strides[0]).sum()),
        "below_half_finest_anchor": int((sq < anchor[0] / 2).sum()),
        "above_twice_coarsest_anchor": int((sq > anchor[-1] * 2).sum()),
        "image_scale": stats.quantiles(scales[:, 0]),
        "sqrt_area_hist": stats.hist(sq, stats.SQRT_AREA_EDGES),
        "aspect_hist": stats.hist(aspect, stats.ASPECT_EDGES),
    }
    ex_deg = [f"image id {int(data.image_ids[data.image_of[b]])}: {wh[k, 0]:.1f}x{wh[k, 1]:.1f} px"
              for k, b in zip(np.flatnonzero(degenerate)[:_EXAMPLES], data.gt[degenerate][:_EXAMPLES])]
    sizes["degenerate_examples"] = ex_deg

    # ---- 3. the assignment at the input size (on a sample of images when capped)
    if max_images is not None and data.num_images > max_images:
        sample = np.sort(np.random.default_rng(seed).choice(data.num_images, size=max_images, replace=False))
    else:
        sample = np.arange(data.num_images)
    t_assign = time.perf_counter()
    a = stats.assign_sample(data, boxes_r, pads, sample, geo)
    t_assign = time.perf_counter() - t_assign
    gts_eval = int(a["gt"].size)
    no_pos = a["num_pos"] == 0
    row_of = lambda boxes: np.searchsorted(data.gt, boxes)  # noqa: E731  box index -> its row in wh / sq
    no_pos_rows = row_of(a["gt"][no_pos])
    no_pos_examples = [f"image id {int(data.image_ids[data.image_of[data.gt[k]]])}: box {wh[k, 0]:.1f}x{wh[k, 1]:.1f} px"
                       for k in no_pos_rows[:_EXAMPLES]]
    pos_per_level = np.bincount(a["pos_level"], minlength=len(geo.strides))
    levels = [{"level": f"P{int(round(math.log2(st)))}", "stride": st, "anchor_size": float(anchor[i]),
               "nearest_boxes": int(nearest_counts[i]), "positives": int(pos_per_level[i])}
              for i, st in enumerate(geo.strides)]
    # no-positive GTs by size: the share among boxes below the finest stride tells whether it is a size problem
    no_pos_sq = sq[no_pos_rows]
    assignment = {
        "min_size": geo.min_size,
        "max_size": geo.max_size,
        "assigner": geo.assigner_name,
        "topk": geo.topk,
        "images": int(sample.size),
        "images_total": data.num_images,
        "sampled": bool(sample.size < data.num_images),
        "seed": seed,
        "ground_truths": gts_eval,
        "without_positive": int(no_pos.sum()),
        "fraction_without_positive": stats.frac(int(no_pos.sum()), gts_eval),
        "positives": int(a["pos_gt"].size),
        "mean_positives_per_gt": stats.frac(int(a["pos_gt"].size), gts_eval),
        "without_positive_sqrt_area_px": stats.quantiles(no_pos_sq),
        "examples": no_pos_examples,
        "seconds": round(t_assign, 3),
    }

    # ---- 4. edges beyond reg_max
    e = a["edges"] / geo.bin_width  # (P, 4) in bins
    limit = geo.reg_max - DFL_EPS
    beyond = e > limit
    n_edges = int(e.size)
    gts_with_pos = int((~no_pos).sum())
    gt_beyond = np.unique(a["pos_gt"][beyond.any(axis=1)]) if n_edges else np.zeros(0, np.int64)
    coverage = [{"reg_max": r, "fraction_beyond": float((e > r - DFL_EPS).mean()) if n_edges else 0.0}
                for r in stats.REG_MAX_CHOICES]
    gt_b_examples = []
    for b, k in zip(gt_beyond[:_EXAMPLES], row_of(gt_beyond[:_EXAMPLES])):
        rows = a["pos_gt"] == b
        gt_b_examples.append(f"image id {int(data.image_ids[data.image_of[b]])}: box {wh[k, 0]:.0f}x{wh[k, 1]:.0f} px, "
                             f"edge up to {float(e[rows].max()):.1f} bins")
    reg = {
        "reg_max": geo.reg_max,
        "bin_width": geo.bin_width,
        "applies": cfg.model.box == "distribution",
        "limit_bins": limit,
        "positive_edges": n_edges,
        "edges_beyond": int(beyond.sum()),
        "fraction_edges_beyond": stats.frac(int(beyond.sum()), n_edges),
        "gts_with_positive": gts_with_pos,
        "gts_with_edge_beyond": int(gt_beyond.size),
        "fraction_gts_with_edge_beyond": stats.frac(int(gt_beyond.size), gts_with_pos),
        "edge_bins": stats.quantiles(e.reshape(-1)),
        "coverage": coverage,
        "examples": gt_b_examples,
    }

    # ---- 5. recommendations
    current = {"min_size": geo.min_size, "max_size": geo.max_size,
               "median_px": float(round(np.median(sq), 2)) if n_gt else None,
               "fraction_with_positive": stats.frac(gts_with_pos, gts_eval)}
    t_rec = time.perf_counter()
    cand_sample = sample
    if sample.size > CANDIDATE_MAX_IMAGES:
        cand_sample = np.sort(np.random.default_rng(seed + 1).choice(sample, size=CANDIDATE_MAX_IMAGES, replace=False))
    if recommend:
        rec_input = stats.recommend_input(data, geo, cand_sample, current)
    else:
        rec_input = {"min_size": geo.min_size, "max_size": geo.max_size, "change": False, "searched": False,
                     "reason": "other input sizes not tried (recommend=False)", "candidates": [current]}
    rec_input["candidate_images"] = int(cand_sample.size)
    rec_reg = stats.recommend_reg_max(coverage, geo, reg["fraction_edges_beyond"])
    if cfg.model.box != "distribution":
        rec_reg = {"value": geo.reg_max, "change": False, "reason": f"box={cfg.model.box!r} has no reg_max limit"}
    t_rec = time.perf_counter() - t_rec

    report = {
        "ann_file": os.fspath(ann_file),
        "images_dir": os.fspath(images_dir),
        "input": {"min_size": geo.min_size, "max_size": geo.max_size, "size_divisor": geo.divisor,
                  "multiscale": list(cfg.input.multiscale) if cfg.input.multiscale else None},
        "model": {"strides": list(geo.strides), "octave_base_scale": geo.octave, "anchor_sizes": list(geo.anchor_sizes),
                  "atss_topk": geo.topk, "ignore_iof_thr": geo.ignore_iof_thr, "reg_max": geo.reg_max,
                  "bin_width": float(cfg.model.bin_width), "box": cfg.model.box, "assigner": cfg.model.assigner},
        "dataset": dataset,
        "classes": classes,
        "sizes": sizes,
        "levels": levels,
        "assignment": assignment,
        "reg_max": reg,
        "recommendations": {"input_size": rec_input, "reg_max": rec_reg},
        "notes": notes,
        "seconds": {"total": 0.0, "assignment": round(t_assign, 3), "recommendations": round(t_rec, 3)},
    }
    report["warnings"] = train_warnings(report)
    report["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    log.debug("inspected %s in %.2f s", ann_file, report["seconds"]["total"])
    return report


def train_warnings(report: dict[str, Any]) -> list[str]:
    """Short messages for what would silently hurt training (empty when nothing does)."""
    out: list[str] = []
    d, a, r, s = report["dataset"], report["assignment"], report["reg_max"], report["sizes"]
    size = f"{report['input']['min_size']}x{report['input']['max_size']}"
    f = a["fraction_without_positive"]
    if f is not None and f > WARN_NO_POSITIVE:
        sample = f" (sample of {a['images']} images)" if a["sampled"] else ""
        out.append(f"{a['without_positive']} of {a['ground_truths']} GT boxes ({stats.pct(f)}) get no {_assigner(a)} positive at "
                   f"{size}{sample}: they are never learned")
    f = r["fraction_edges_beyond"]
    if r.get("applies", True) and f is not None and f > WARN_BEYOND_REG_MAX:
        out.append(f"{stats.pct(f, 2)} of positive box edges lie beyond reg_max={r['reg_max']} and are clamped "
                   f"({r['gts_with_edge_beyond']} GT boxes cannot be represented); "
                   f"try reg_max={report['recommendations']['reg_max']['value']}")
    few = [c for c in report["classes"] if c["instances"] < WARN_FEW_INSTANCES]
    if few:
        names = ", ".join(f"{c['name']} (id {c['id']}): {c['instances']}" for c in few[:5])
        more = f" and {len(few) - 5} more" if len(few) > 5 else ""
        out.append(f"{len(few)} class(es) with fewer than {WARN_FEW_INSTANCES} instances: {names}{more}")
    f = stats.frac(d["images_without_annotations"], d["images"])
    if f is not None and f > WARN_EMPTY_IMAGES:
        out.append(f"{d['images_without_annotations']} of {d['images']} images ({stats.pct(f)}) have no annotations")
    n = s["boxes"]
    fd, fs = stats.frac(s["degenerate"], n), stats.frac(s["below_finest_stride"], n)
    if (fd or 0) > WARN_DEGENERATE or (fs or 0) > WARN_BELOW_STRIDE:
        out.append(f"tiny boxes at {size}: {s['degenerate']} ({stats.pct(fd, 2)}) have a side under {s['degenerate_px']:g} px, "
                   f"{s['below_finest_stride']} ({stats.pct(fs)}) are smaller than the finest stride "
                   f"({report['model']['strides'][0]} px)")
    return out


def _assigner(assignment: dict[str, Any]) -> str:
    """The assigner's name as the report prints it (reports written before it was recorded: ATSS)."""
    return {"atss": "ATSS", "fcos": "FCOS", "retina": "max-IoU"}.get(assignment.get("assigner", "atss"),
                                                                       str(assignment.get("assigner")))


def summary_line(report: dict[str, Any]) -> str:
    """One line: counts, sizes, ATSS coverage, reg_max coverage and the advice."""
    d, a, r, s = report["dataset"], report["assignment"], report["reg_max"], report["sizes"]
    rec = report["recommendations"]
    med = s["sqrt_area_px"]["p50"]
    sample = f" ({a['images']}-image sample)" if a["sampled"] else ""
    ri, rr = rec["input_size"], rec["reg_max"]
    return (f"data: {d['images']} images ({d['images_without_annotations']} without annotations), "
            f"{d['ground_truths']} boxes, {d['categories']} classes; at {report['input']['min_size']}x"
            f"{report['input']['max_size']}: median object {'n/a' if med is None else f'{med:.0f} px'}, "
            f"{stats.pct(a['fraction_without_positive'])} of GTs without {_assigner(a)} positive{sample}, "
            f"{stats.pct(r['fraction_edges_beyond'], 2)} of edges beyond reg_max={r['reg_max']}; "
            + (f"advice: input {ri['min_size']}x{ri['max_size']}{'' if ri['change'] else ' (keep)'}, "
               if ri.get("searched", True) else "advice: ")
            + f"reg_max {rr['value']}{'' if rr['change'] else ' (keep)'}; {len(report.get('warnings', []))} warning(s)")


def format_report(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    d, s, a, r = report["dataset"], report["sizes"], report["assignment"], report["reg_max"]
    inp, rec = report["input"], report["recommendations"]
    size = f"{inp['min_size']}x{inp['max_size']}"
    lines = [f"dataset {report['ann_file']} (images in {report['images_dir']})",
             f"  images {d['images']}, annotations {d['annotations']} ({d['crowd_annotations']} crowd), "
             f"images without annotations {d['images_without_annotations']}"]
    dropped = {k: v for k, v in d["dropped"].items() if v}
    fixed = {k: v for k, v in d["fixed"].items() if v}
    if dropped or fixed:
        lines.append(f"  dropped: {dropped or 'none'}; fixed: {fixed or 'none'}")
    lines.append(f"  instances per class ({d['categories']}):")
    width = max([len(c["name"]) for c in report["classes"]] + [4])
    for c in report["classes"]:
        crowd = f" (+{c['crowd']} crowd)" if c["crowd"] else ""
        lines.append(f"    {c['name']:<{width}}  id {c['id']:>5}  {c['instances']:>7}{crowd}")

    def q(x: dict[str, Any], fmt: str) -> str:
        keys = ("p0", "p5", "p25", "p50", "p75", "p95", "p100")
        names = ("min", "p5", "p25", "median", "p75", "p95", "max")
        return ", ".join(f"{n} {'n/a' if x[k] is None else format(x[k], fmt)}" for n, k in zip(names, keys))

    lines += [f"box sizes after the resize to {size} (short side to {inp['min_size']}, long side <= {inp['max_size']}):",
              f"  sqrt(area) px: {q(s['sqrt_area_px'], '.1f')}",
              f"  aspect h/w:    {q(s['aspect_ratio_h_over_w'], '.2f')}",
              f"  degenerate (side < {s['degenerate_px']:g} px): {s['degenerate']}; smaller than the finest stride: "
              f"{s['below_finest_stride']}"]
    if s.get("degenerate_examples"):
        lines.append(f"    e.g. {'; '.join(s['degenerate_examples'][:3])}")
    lines.append(f"  level  stride  anchor  nearest boxes  {_assigner(a) + ' positives':>14}")
    for lv in report["levels"]:
        lines.append(f"  {lv['level']:<5}  {lv['stride']:>6}  {lv['anchor_size']:>6.0f}  {lv['nearest_boxes']:>13}  "
                     f"{lv['positives']:>14}")
    sample = (f"a random sample of {a['images']} of {a['images_total']} images" if a["sampled"]
              else f"all {a['images']} images")
    how = f"ATSS (topk {a['topk']})" if _assigner(a) == "ATSS" else f"the {_assigner(a)} assigner"
    lines += [f"{how} at {size}, {sample}:",
              f"  GT boxes without a positive: {a['without_positive']} of {a['ground_truths']} "
              f"({stats.pct(a['fraction_without_positive'], 2)}); positives per GT {a['mean_positives_per_gt'] or 0:.1f}"]
    if a["examples"]:
        lines.append(f"    e.g. {'; '.join(a['examples'][:3])}")
    lines += [f"edges beyond reg_max={r['reg_max']} (distance > {r['limit_bins']:g} bins of {r['bin_width']:g} stride "
              f"from a positive anchor: clamped in training):",
              f"  {r['edges_beyond']} of {r['positive_edges']} positive (anchor, edge) pairs "
              f"({stats.pct(r['fraction_edges_beyond'], 2)}); GT boxes with such an edge: {r['gts_with_edge_beyond']} of "
              f"{r['gts_with_positive']} ({stats.pct(r['fraction_gts_with_edge_beyond'], 2)})",
              f"  edge distances in bins: {q(r['edge_bins'], '.2f')}",
              "  beyond each reg_max: " + ", ".join(f"{c['reg_max']}: {stats.pct(c['fraction_beyond'], 2)}" for c in r["coverage"])]
    if r["examples"]:
        lines.append(f"    e.g. {'; '.join(r['examples'][:3])}")
    ri, rr = rec["input_size"], rec["reg_max"]
    lines += ["recommendations:",
              f"  input size {ri['min_size']}x{ri['max_size']}{' (change)' if ri['change'] else ' (keep)'}: {ri['reason']}",
              f"  reg_max {rr['value']}{' (change)' if rr['change'] else ' (keep)'}: {rr['reason']}"]
    tried = [c for c in ri.get("candidates", []) if c["fraction_with_positive"] is not None]
    if tried:
        lines.append("  sizes tried: " + ", ".join(
            f"{c['min_size']}: median {c['median_px']:.0f} px, {stats.pct(c['fraction_with_positive'])} with positive" for c in tried))
    for n in report.get("notes", []):
        lines.append(f"note: {n}")
    warnings = report.get("warnings") or train_warnings(report)
    lines.append("warnings:" if warnings else "warnings: none")
    lines += [f"  - {w}" for w in warnings]
    lines.append(summary_line(report))
    return "\n".join(lines)


def check_out_dir(out_dir: str | os.PathLike, force: bool = False) -> None:
    """Raise ``FileExistsError`` when ``out_dir`` already holds a report and ``force`` is not set (or when it
    is a file)."""
    check_output_folder(out_dir, (REPORT_FILE,), force)


def write_report(report: dict[str, Any], out_dir: str | os.PathLike, *, force: bool = False) -> dict[str, str]:
    """Write ``inspect.json`` and ``sizes.png`` into ``out_dir`` (created); refuses to replace an existing
    ``inspect.json`` unless ``force``. Returns the paths written."""
    check_out_dir(out_dir, force)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    js = os.path.join(out_dir, REPORT_FILE)
    png = plot_sizes(report, os.path.join(out_dir, PLOT_FILE))
    write_json(js, report, indent=2)
    return {"report": js, "plot": png}
