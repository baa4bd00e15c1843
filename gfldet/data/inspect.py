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
* the real ATSS assignment (:func:`gfldet.ops.assign.atss_assign`, the configured ``topk``, crowd boxes as
  ignore regions) on each image's own anchors: ground truths (GTs) that get no positive anchor never train;
* for each positive anchor the distances to the GT's four edges in strides of its level: those beyond
  ``reg_max - 0.1`` bins are clamped by the DFL targets, i.e. the box cannot be represented;
* recommendations: an input size and a ``reg_max``, each with its reason.

The assignment runs on images grouped by padded shape; with more than ``max_images`` images it runs on a
seeded random sample of them (the report says so). 10k annotations take a few seconds on a CPU.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config import Config, ModelConfig
from ..ops.assign import atss_assign
from ..ops.boxes import box_centers, box_to_distance
from ..ops.priors import grid_anchors, level_index
from ..ops.resize import keep_ratio_size, padded_size
from .coco import CocoDetection

__all__ = ["inspect_dataset", "format_report", "summary_line", "train_warnings", "plot_sizes", "write_report",
           "check_out_dir", "CANDIDATE_MIN_SIZES", "REG_MAX_CHOICES"]

log = logging.getLogger(__name__)

CANDIDATE_MIN_SIZES = (320, 416, 512, 640, 800, 1024, 1333)  # short sides tried for the input-size advice
REG_MAX_CHOICES = (8, 12, 16, 20, 24, 32)
MIN_POSITIVE_FRACTION = 0.99  # of GTs that must get an ATSS positive at a recommended input size
MIN_MEDIAN_PX = 16.0  # median sqrt(area) at a recommended input size
REG_MAX_COVERAGE = 0.995  # of positive (anchor, edge) pairs a recommended reg_max must represent
DEGENERATE_PX = 2.0  # boxes with a side below this after the resize are degenerate
DFL_EPS = 0.1  # the DFL targets clamp distances to reg_max - 0.1 bins (gfldet.ops.boxes.box_to_distance)
# train_warnings thresholds
WARN_NO_POSITIVE = 0.01
WARN_BEYOND_REG_MAX = 0.005
WARN_FEW_INSTANCES = 10
WARN_EMPTY_IMAGES = 0.5
WARN_DEGENERATE = 0.001  # fraction of boxes below DEGENERATE_PX
WARN_BELOW_STRIDE = 0.05  # fraction of boxes whose sqrt(area) is below the finest stride

_QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
_ANCHOR_BUDGET = 1 << 22  # images x anchors in one atss_assign call (bounds its (N, A) outputs)
_EXAMPLES = 5
CANDIDATE_MAX_IMAGES = 1000  # images the other candidate input sizes are assigned on (a subset of the sample)
_SQRT_AREA_EDGES = 2.0 ** np.arange(0.0, 12.0 + 1e-9, 0.25)  # 1 .. 4096 px, 4 bins per octave
_ASPECT_EDGES = 2.0 ** np.arange(-5.0, 5.0 + 1e-9, 0.25)  # h / w from 1/32 to 32
REPORT_FILE = "inspect.json"
PLOT_FILE = "sizes.png"


# --------------------------------------------------------------------------- helpers
def _qkey(q: float) -> str:
    return f"p{q * 100:g}"


def _quantiles(x: np.ndarray) -> dict[str, float | None]:
    if x.size == 0:
        return {_qkey(q): None for q in _QUANTILES}
    v = np.quantile(x.astype(np.float64), _QUANTILES)
    return {_qkey(q): float(round(val, 4)) for q, val in zip(_QUANTILES, v)}


def _hist(x: np.ndarray, edges: np.ndarray) -> dict[str, list]:
    """Counts over ``edges`` with values outside the range put in the first / last bin."""
    if x.size:
        x = np.clip(x, edges[0], np.nextafter(edges[-1], 0))
    counts, _ = np.histogram(x, bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _frac(num: int, den: int) -> float | None:
    return float(num) / den if den else None


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100.0 * x:.{digits}f}%"


def _resize(sizes_hw: np.ndarray, min_size: int, max_size: int, divisor: int) -> tuple[np.ndarray, np.ndarray]:
    """The detector's keep-ratio resize (:func:`gfldet.ops.resize.keep_ratio_size`, computed once per distinct
    image size) of ``(I, 2)`` ``(H, W)`` image sizes -> ``(I, 2)`` float64 ``(sx, sy)`` scales and ``(I, 2)``
    int64 padded ``(H, W)``."""
    distinct, inverse = np.unique(sizes_hw.reshape(-1, 2), axis=0, return_inverse=True)
    scales = np.zeros((len(distinct), 2), np.float64)
    pads = np.zeros((len(distinct), 2), np.int64)
    for k, (h, w) in enumerate(distinct.tolist()):
        nh, nw = keep_ratio_size(h, w, min_size, max_size)
        scales[k] = (nw / w, nh / h)
        pads[k] = padded_size(nh, nw, divisor)
    inverse = inverse.reshape(-1)
    return scales[inverse], pads[inverse]


class _Data:
    """The checked annotations as arrays: boxes xyxy in original pixels, sorted by image."""

    def __init__(self, ds: CocoDetection) -> None:
        # the arrays, not __getitem__, which would decode every image
        a = ds.annotation_arrays()
        self.sizes = a["sizes"].numpy().astype(np.int64)  # (I, 2) H, W
        self.offsets = a["offsets"].numpy().astype(np.int64)  # (I + 1,)
        self.boxes = a["boxes"].to(torch.float32)  # (B, 4)
        self.labels = a["labels"].numpy().astype(np.int64)  # (B,)
        self.crowd = a["crowd"].numpy().astype(bool)  # (B,)
        self.image_ids = a["image_ids"].numpy().astype(np.int64)  # (I,)
        self.num_images = int(self.sizes.shape[0])
        self.image_of = np.repeat(np.arange(self.num_images), np.diff(self.offsets))  # (B,)
        self.gt = np.flatnonzero(~self.crowd)  # box indices of the (non-crowd) ground truths
        self.gt_split = np.searchsorted(self.image_of[self.gt], np.arange(self.num_images + 1))
        self.ign = np.flatnonzero(self.crowd)
        self.ign_split = np.searchsorted(self.image_of[self.ign], np.arange(self.num_images + 1))

    def resized_boxes(self, scales: np.ndarray) -> torch.Tensor:
        """Boxes in the network-input frame, computed as the detector does (float32 box x float32 scale)."""
        sxy = torch.from_numpy(scales).to(torch.float32)[torch.from_numpy(self.image_of)]  # (B, 2)
        return self.boxes * sxy.repeat(1, 2)


class _Geometry:
    def __init__(self, cfg: Config) -> None:
        m = cfg.model
        self.strides = tuple(int(s) for s in ModelConfig.strides)
        self.divisor = int(ModelConfig.size_divisor)
        self.octave = float(m.octave_base_scale)
        self.anchor_sizes = tuple(self.octave * s for s in self.strides)
        self.topk = int(m.atss_topk)
        self.ignore_iof_thr = float(m.ignore_iof_thr)
        self.reg_max = int(m.reg_max)
        self.bin_width = float(m.bin_width) if m.box == "distribution" else 1.0
        if cfg.input.min_size is None or cfg.input.max_size is None:
            raise ValueError(f"the report is at the configured input size: set input.min_size and input.max_size (now "
                             f"{cfg.input.min_size} and {cfg.input.max_size}; null keeps every image at its own size)")
        self.min_size = int(cfg.input.min_size)
        self.max_size = int(cfg.input.max_size)


def _assign(data: _Data, boxes_r: torch.Tensor, pads: np.ndarray, images: np.ndarray, geo: _Geometry
            ) -> dict[str, np.ndarray]:
    """ATSS on ``images`` (indices) at the resized boxes ``boxes_r``, each image on the anchors of its own padded
    shape (images of one shape in one call). Returns, for the GTs of those images, ``gt`` (box indices) and
    ``num_pos``; and per positive anchor ``pos_gt`` (box index), ``pos_level`` and ``edges`` ``(P, 4)``
    (left, top, right, bottom distances in strides of the anchor's level)."""
    gts_all, npos_all, pos_gt, pos_level, edges = [], [], [], [], []
    if images.size == 0:
        e = np.zeros(0, dtype=np.int64)
        return {"gt": e, "num_pos": e, "pos_gt": e, "pos_level": e, "edges": np.zeros((0, 4), np.float32)}
    # Groups: images of one padded shape (they share anchors), those with crowd boxes apart (only they need the
    # ignore-region pass, which costs a dense (images x anchors) mask per call).
    has_ign = (np.diff(data.ign_split) > 0)[images].astype(np.int64)
    keys = np.concatenate([pads[images], has_ign[:, None]], axis=1)
    groups, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for si, (ph, pw, _) in enumerate(groups.tolist()):
        members = images[inverse == si]
        fm = [(int(math.ceil(ph / s)), int(math.ceil(pw / s))) for s in geo.strides]
        per_level = grid_anchors(fm, geo.strides, geo.octave)
        nla = [int(a.shape[0]) for a in per_level]
        anchors = torch.cat(per_level)
        lvl = level_index(nla)
        stride_of = torch.tensor(geo.strides, dtype=torch.float32)[lvl]  # (A,)
        centres = box_centers(anchors)
        step = max(1, _ANCHOR_BUDGET // max(1, anchors.shape[0]))
        for c0 in range(0, members.size, step):
            chunk = members[c0: c0 + step]
            ids = [data.gt[data.gt_split[i]: data.gt_split[i + 1]] for i in chunk]
            gt_boxes = [boxes_r[torch.from_numpy(g)] for g in ids]
            ign = [data.ign[data.ign_split[i]: data.ign_split[i + 1]] for i in chunk]
            gt_ignore = [boxes_r[torch.from_numpy(g)] for g in ign] if any(g.size for g in ign) else None
            flat_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
            counts = np.array([g.size for g in ids], dtype=np.int64)
            first = np.concatenate([[0], np.cumsum(counts)[:-1]])
            gts_all.append(flat_ids)
            if flat_ids.size == 0:
                npos_all.append(np.zeros(0, np.int64))
                continue
            res = atss_assign(anchors, nla, gt_boxes, gt_ignore=gt_ignore, topk=geo.topk,
                              ignore_iof_thr=geo.ignore_iof_thr)
            pn, pa = res.positive.nonzero(as_tuple=True)
            local = res.gt_index[pn, pa].numpy()
            g = flat_ids[first[pn.numpy()] + local]
            st = stride_of[pa][:, None]
            d = box_to_distance(centres[pa] / st, boxes_r[torch.from_numpy(g)] / st)  # as the DFL targets
            # positives of each GT of the chunk, in chunk order
            npos = np.bincount(first[pn.numpy()] + local, minlength=flat_ids.size)
            npos_all.append(npos.astype(np.int64))
            pos_gt.append(g)
            pos_level.append(lvl[pa].numpy())
            edges.append(d.numpy().astype(np.float32))
    cat = lambda xs, empty: np.concatenate(xs) if xs else empty  # noqa: E731
    e64 = np.zeros(0, dtype=np.int64)
    return {"gt": cat(gts_all, e64), "num_pos": cat(npos_all, e64), "pos_gt": cat(pos_gt, e64),
            "pos_level": cat(pos_level, e64), "edges": cat(edges, np.zeros((0, 4), np.float32))}


def _candidate(data: _Data, geo: _Geometry, min_size: int, max_size: int, sample: np.ndarray,
               assign: bool = True) -> dict[str, Any]:
    """Median object size (all GTs) and, with ``assign``, the fraction of GTs of ``sample`` with a positive."""
    scales, pads = _resize(data.sizes, min_size, max_size, geo.divisor)
    boxes_r = data.resized_boxes(scales)
    wh = (boxes_r[data.gt, 2:] - boxes_r[data.gt, :2]).numpy().astype(np.float64)
    sq = np.sqrt(np.clip(wh[:, 0] * wh[:, 1], 0, None))
    out: dict[str, Any] = {"min_size": int(min_size), "max_size": int(max_size),
                           "median_px": float(round(np.median(sq), 2)) if sq.size else None,
                           "fraction_with_positive": None}
    if assign:
        a = _assign(data, boxes_r, pads, sample, geo)
        out["fraction_with_positive"] = _frac(int((a["num_pos"] > 0).sum()), int(a["gt"].size))
    return out


def _passes(c: dict[str, Any]) -> bool:
    return (c["fraction_with_positive"] is not None and c["fraction_with_positive"] >= MIN_POSITIVE_FRACTION
            and c["median_px"] is not None and c["median_px"] >= MIN_MEDIAN_PX)


def _recommend_input(data: _Data, geo: _Geometry, sample: np.ndarray, current: dict[str, Any]) -> dict[str, Any]:
    ratio = geo.max_size / geo.min_size
    sizes = sorted(set(CANDIDATE_MIN_SIZES) | {geo.min_size})
    cands: dict[int, dict[str, Any]] = {geo.min_size: current}
    for s in sizes:
        if s != geo.min_size:
            cands[s] = _candidate(data, geo, s, max(s, int(round(s * ratio))), sample, assign=False)

    def evaluate(s: int) -> dict[str, Any]:
        c = cands[s]
        if c["fraction_with_positive"] is None and c["median_px"] is not None and c["median_px"] >= MIN_MEDIAN_PX:
            c.update(_candidate(data, geo, c["min_size"], c["max_size"], sample))
        return c

    cur = current
    rec: dict[str, Any]
    if not data.gt.size or cur["fraction_with_positive"] is None:
        where = "in the data set" if not data.gt.size else "in the images assigned"
        rec = {"min_size": geo.min_size, "max_size": geo.max_size, "change": False,
               "reason": f"no ground-truth boxes {where}: nothing to base a change on"}
    elif _passes(cur):
        smaller = None  # the smallest passing size below the current one, searched downwards until one fails
        for s in sorted((s for s in sizes if s < geo.min_size), reverse=True):
            if not _passes(evaluate(s)):
                break
            smaller = s
        why = (f"at the current {geo.min_size}x{geo.max_size} {_pct(cur['fraction_with_positive'])} of GTs get an ATSS "
               f"positive and the median object is {cur['median_px']:.0f} px (need >= {_pct(MIN_POSITIVE_FRACTION, 0)}"
               f" and >= {MIN_MEDIAN_PX:g} px)")
        if smaller is not None:
            why += f"; {smaller} would also do and trains faster"
        rec = {"min_size": geo.min_size, "max_size": geo.max_size, "change": False, "reason": why}
    else:
        larger = next((s for s in sizes if s > geo.min_size and _passes(evaluate(s))), None)
        problem = (f"at the current {geo.min_size}x{geo.max_size} only {_pct(cur['fraction_with_positive'])} of GTs "
                   f"get an ATSS positive" if (cur["fraction_with_positive"] or 0) < MIN_POSITIVE_FRACTION
                   else f"at the current {geo.min_size}x{geo.max_size} the median object is only {cur['median_px']:.1f} px")
        if larger is not None:
            c = cands[larger]
            rec = {"min_size": c["min_size"], "max_size": c["max_size"], "change": True,
                   "reason": f"{problem}; at {c['min_size']}x{c['max_size']} {_pct(c['fraction_with_positive'])} do "
                             f"and the median object is {c['median_px']:.0f} px (the smallest candidate that passes)"}
        else:
            for s in sizes:
                if s > geo.min_size:
                    evaluate(s)
            tried = [c for c in cands.values() if c["fraction_with_positive"] is not None]
            best = max(tried, key=lambda c: (c["fraction_with_positive"], -c["min_size"]))
            change = best["min_size"] != geo.min_size
            rec = {"min_size": best["min_size"], "max_size": best["max_size"], "change": change,
                   "reason": f"{problem}; no candidate up to {sizes[-1]} reaches {_pct(MIN_POSITIVE_FRACTION, 0)} with a "
                             f"median >= {MIN_MEDIAN_PX:g} px; {best['min_size']}x{best['max_size']} gives the most GTs "
                             f"a positive ({_pct(best['fraction_with_positive'])}): consider cropping/tiling the images "
                             f"or removing unusable boxes"}
    rec["candidates"] = [cands[s] for s in sizes]
    return rec


def _recommend_reg_max(coverage: list[dict[str, Any]], geo: _Geometry, current_beyond: float | None) -> dict[str, Any]:
    if current_beyond is None:
        return {"value": geo.reg_max, "change": False, "reason": "no positive anchors to measure: keep the current reg_max"}
    ok = [c for c in coverage if c["fraction_beyond"] <= 1.0 - REG_MAX_COVERAGE]
    where = f"at {geo.min_size}x{geo.max_size}"
    if ok:
        c = ok[0]
        v = c["reg_max"]
        reason = (f"the smallest of {list(REG_MAX_CHOICES)} representing >= {_pct(REG_MAX_COVERAGE)} of positive edges "
                  f"{where} ({_pct(1.0 - c['fraction_beyond'], 2)})")
        if v == geo.reg_max:
            reason += ": the current value"
        elif v < geo.reg_max:
            reason += (f"; the current {geo.reg_max} also does ({_pct(1.0 - current_beyond, 2)}): lowering it only "
                       f"trims the regression head")
        else:
            reason += f"; the current {geo.reg_max} clamps {_pct(current_beyond, 2)} of them"
    else:
        c = coverage[-1]
        v = c["reg_max"]
        reason = (f"even {v} leaves {_pct(c['fraction_beyond'], 2)} of positive edges {where} beyond it: the "
                  f"boxes are very elongated for their level")
    return {"value": int(v), "change": v != geo.reg_max, "reason": reason}


# --------------------------------------------------------------------------- the report
def inspect_dataset(ann_file: str | os.PathLike, images_dir: str | os.PathLike, cfg: Config | None = None, *,
                    max_images: int | None = 2000, seed: int = 0, dataset: CocoDetection | None = None,
                    recommend: bool = True) -> dict[str, Any]:
    """Inspect a COCO-format dataset at the input size and GFL settings of ``cfg`` (default: ``Config()``).

    ``max_images`` caps the images the ATSS assignment runs on (a seeded random sample; ``None``: all); the
    counts and box sizes always use every image. ``recommend=False`` skips the search over other input sizes
    (the trainer's quick summary). Raises :class:`~gfldet.data.coco.DatasetError` (a
    ``ValueError`` naming the file and the entry) on a malformed annotation file or a wrong image folder.
    Returns a JSON-serialisable dict (see :func:`format_report`).
    """
    t0 = time.perf_counter()
    cfg = cfg if cfg is not None else Config()
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive integer or None, got {max_images!r}")
    geo = _Geometry(cfg)
    # ``dataset``: the same file already loaded and checked (the trainer's), not read a second time
    ds = dataset if dataset is not None else CocoDetection(ann_file, images_dir, train=False, check_images=False)
    data = _Data(ds)
    s = ds.summary
    notes: list[str] = []
    if cfg.model.assigner != "atss":
        notes.append(f"model.assigner is {cfg.model.assigner!r}: positives below are ATSS's, not that assigner's")
    if cfg.model.box != "distribution":
        notes.append(f"model.box is {cfg.model.box!r}: reg_max does not bound its boxes; the reg_max figures apply "
                     f"to box='distribution' only")
    if list(cfg.model.anchor_ratios) != [1.0] or cfg.model.scales_per_octave != 1:
        notes.append("the model has several anchors per location; this report places one square anchor per location "
                     "(GFL's priors)")
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
    scales, pads = _resize(data.sizes, geo.min_size, geo.max_size, geo.divisor)
    boxes_r = data.resized_boxes(scales)
    wh = (boxes_r[data.gt, 2:] - boxes_r[data.gt, :2]).numpy().astype(np.float64)  # (G, 2)
    sq = np.sqrt(np.clip(wh[:, 0] * wh[:, 1], 0, None))
    aspect = wh[:, 1] / np.maximum(wh[:, 0], 1e-9)
    degenerate = wh.min(axis=1) < DEGENERATE_PX if n_gt else np.zeros(0, bool)
    anchor = np.asarray(geo.anchor_sizes, dtype=np.float64)
    if n_gt:
        nearest = np.abs(np.log2(np.maximum(sq, 1e-9))[:, None] - np.log2(anchor)[None, :]).argmin(axis=1)
    else:
        nearest = np.zeros(0, np.int64)
    nearest_counts = np.bincount(nearest, minlength=len(geo.strides))
    sizes = {
        "boxes": n_gt,
        "sqrt_area_px": _quantiles(sq),
        "aspect_ratio_h_over_w": _quantiles(aspect),
        "degenerate": int(degenerate.sum()),
        "degenerate_px": DEGENERATE_PX,
        "below_finest_stride": int((sq < geo.strides[0]).sum()),
        "below_half_finest_anchor": int((sq < anchor[0] / 2).sum()),
        "above_twice_coarsest_anchor": int((sq > anchor[-1] * 2).sum()),
        "image_scale": _quantiles(scales[:, 0]),
        "sqrt_area_hist": _hist(sq, _SQRT_AREA_EDGES),
        "aspect_hist": _hist(aspect, _ASPECT_EDGES),
    }
    ex_deg = [f"image id {int(data.image_ids[data.image_of[b]])}: {wh[k, 0]:.1f}x{wh[k, 1]:.1f} px"
              for k, b in zip(np.flatnonzero(degenerate)[:_EXAMPLES], data.gt[degenerate][:_EXAMPLES])]
    sizes["degenerate_examples"] = ex_deg

    # ---- 3. ATSS at the input size (on a sample of images when capped)
    if max_images is not None and data.num_images > max_images:
        sample = np.sort(np.random.default_rng(seed).choice(data.num_images, size=max_images, replace=False))
    else:
        sample = np.arange(data.num_images)
    t_assign = time.perf_counter()
    a = _assign(data, boxes_r, pads, sample, geo)
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
        "topk": geo.topk,
        "images": int(sample.size),
        "images_total": data.num_images,
        "sampled": bool(sample.size < data.num_images),
        "seed": seed,
        "ground_truths": gts_eval,
        "without_positive": int(no_pos.sum()),
        "fraction_without_positive": _frac(int(no_pos.sum()), gts_eval),
        "positives": int(a["pos_gt"].size),
        "mean_positives_per_gt": _frac(int(a["pos_gt"].size), gts_eval),
        "without_positive_sqrt_area_px": _quantiles(no_pos_sq),
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
                for r in REG_MAX_CHOICES]
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
        "fraction_edges_beyond": _frac(int(beyond.sum()), n_edges),
        "gts_with_positive": gts_with_pos,
        "gts_with_edge_beyond": int(gt_beyond.size),
        "fraction_gts_with_edge_beyond": _frac(int(gt_beyond.size), gts_with_pos),
        "edge_bins": _quantiles(e.reshape(-1)),
        "coverage": coverage,
        "examples": gt_b_examples,
    }

    # ---- 5. recommendations
    current = {"min_size": geo.min_size, "max_size": geo.max_size,
               "median_px": float(round(np.median(sq), 2)) if n_gt else None,
               "fraction_with_positive": _frac(gts_with_pos, gts_eval)}
    t_rec = time.perf_counter()
    cand_sample = sample
    if sample.size > CANDIDATE_MAX_IMAGES:
        cand_sample = np.sort(np.random.default_rng(seed + 1).choice(sample, size=CANDIDATE_MAX_IMAGES, replace=False))
    if recommend:
        rec_input = _recommend_input(data, geo, cand_sample, current)
    else:
        rec_input = {"min_size": geo.min_size, "max_size": geo.max_size, "change": False, "searched": False,
                     "reason": "other input sizes not tried (recommend=False)", "candidates": [current]}
    rec_input["candidate_images"] = int(cand_sample.size)
    rec_reg = _recommend_reg_max(coverage, geo, reg["fraction_edges_beyond"])
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
        out.append(f"{a['without_positive']} of {a['ground_truths']} GT boxes ({_pct(f)}) get no ATSS positive at "
                   f"{size}{sample}: they are never learned")
    f = r["fraction_edges_beyond"]
    if r.get("applies", True) and f is not None and f > WARN_BEYOND_REG_MAX:
        out.append(f"{_pct(f, 2)} of positive box edges lie beyond reg_max={r['reg_max']} and are clamped "
                   f"({r['gts_with_edge_beyond']} GT boxes cannot be represented); "
                   f"try reg_max={report['recommendations']['reg_max']['value']}")
    few = [c for c in report["classes"] if c["instances"] < WARN_FEW_INSTANCES]
    if few:
        names = ", ".join(f"{c['name']} (id {c['id']}): {c['instances']}" for c in few[:5])
        more = f" and {len(few) - 5} more" if len(few) > 5 else ""
        out.append(f"{len(few)} class(es) with fewer than {WARN_FEW_INSTANCES} instances: {names}{more}")
    f = _frac(d["images_without_annotations"], d["images"])
    if f is not None and f > WARN_EMPTY_IMAGES:
        out.append(f"{d['images_without_annotations']} of {d['images']} images ({_pct(f)}) have no annotations")
    n = s["boxes"]
    fd, fs = _frac(s["degenerate"], n), _frac(s["below_finest_stride"], n)
    if (fd or 0) > WARN_DEGENERATE or (fs or 0) > WARN_BELOW_STRIDE:
        out.append(f"tiny boxes at {size}: {s['degenerate']} ({_pct(fd, 2)}) have a side under {s['degenerate_px']:g} px, "
                   f"{s['below_finest_stride']} ({_pct(fs)}) are smaller than the finest stride "
                   f"({report['model']['strides'][0]} px)")
    return out


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
            f"{_pct(a['fraction_without_positive'])} of GTs without ATSS positive{sample}, "
            f"{_pct(r['fraction_edges_beyond'], 2)} of edges beyond reg_max={r['reg_max']}; "
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
    lines.append("  level  stride  anchor  nearest boxes  ATSS positives")
    for lv in report["levels"]:
        lines.append(f"  {lv['level']:<5}  {lv['stride']:>6}  {lv['anchor_size']:>6.0f}  {lv['nearest_boxes']:>13}  "
                     f"{lv['positives']:>14}")
    sample = (f"a random sample of {a['images']} of {a['images_total']} images" if a["sampled"]
              else f"all {a['images']} images")
    lines += [f"ATSS (topk {a['topk']}) at {size}, {sample}:",
              f"  GT boxes without a positive: {a['without_positive']} of {a['ground_truths']} "
              f"({_pct(a['fraction_without_positive'], 2)}); positives per GT {a['mean_positives_per_gt'] or 0:.1f}"]
    if a["examples"]:
        lines.append(f"    e.g. {'; '.join(a['examples'][:3])}")
    lines += [f"edges beyond reg_max={r['reg_max']} (distance > {r['limit_bins']:g} bins of {r['bin_width']:g} stride "
              f"from a positive anchor: clamped in training):",
              f"  {r['edges_beyond']} of {r['positive_edges']} positive (anchor, edge) pairs "
              f"({_pct(r['fraction_edges_beyond'], 2)}); GT boxes with such an edge: {r['gts_with_edge_beyond']} of "
              f"{r['gts_with_positive']} ({_pct(r['fraction_gts_with_edge_beyond'], 2)})",
              f"  edge distances in bins: {q(r['edge_bins'], '.2f')}",
              "  beyond each reg_max: " + ", ".join(f"{c['reg_max']}: {_pct(c['fraction_beyond'], 2)}" for c in r["coverage"])]
    if r["examples"]:
        lines.append(f"    e.g. {'; '.join(r['examples'][:3])}")
    ri, rr = rec["input_size"], rec["reg_max"]
    lines += ["recommendations:",
              f"  input size {ri['min_size']}x{ri['max_size']}{' (change)' if ri['change'] else ' (keep)'}: {ri['reason']}",
              f"  reg_max {rr['value']}{' (change)' if rr['change'] else ' (keep)'}: {rr['reason']}"]
    tried = [c for c in ri.get("candidates", []) if c["fraction_with_positive"] is not None]
    if tried:
        lines.append("  sizes tried: " + ", ".join(
            f"{c['min_size']}: median {c['median_px']:.0f} px, {_pct(c['fraction_with_positive'])} with positive" for c in tried))
    for n in report.get("notes", []):
        lines.append(f"note: {n}")
    warnings = report.get("warnings") or train_warnings(report)
    lines.append("warnings:" if warnings else "warnings: none")
    lines += [f"  - {w}" for w in warnings]
    lines.append(summary_line(report))
    return "\n".join(lines)


# --------------------------------------------------------------------------- picture and files
def plot_sizes(report_or_boxes: dict[str, Any] | Any, path: str | os.PathLike, *,
               strides: Sequence[int] = ModelConfig.strides, octave_base_scale: float = 8.0, dpi: int = 100) -> str:
    """Write a PNG: histogram of sqrt(area) (log axis, the anchor sizes of the FPN levels marked) and of the aspect
    ratio h/w. ``report_or_boxes`` is a report of :func:`inspect_dataset` (its histograms are drawn) or
    ``(N, 4)`` xyxy boxes already at the network input size (array or tensor; then ``strides`` and
    ``octave_base_scale`` give the anchors). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    if isinstance(report_or_boxes, dict):
        rep = report_or_boxes
        sh, ah = rep["sizes"]["sqrt_area_hist"], rep["sizes"]["aspect_hist"]
        anchors = [(lv["level"], lv["anchor_size"]) for lv in rep["levels"]]
        title = f"boxes at {rep['input']['min_size']}x{rep['input']['max_size']} ({rep['sizes']['boxes']})"
    else:
        b = report_or_boxes
        b = b.detach().cpu().numpy() if hasattr(b, "detach") else np.asarray(b)
        b = b.astype(np.float64).reshape(-1, 4)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        ok = (w > 0) & (h > 0)
        sh = _hist(np.sqrt(w[ok] * h[ok]), _SQRT_AREA_EDGES)
        ah = _hist(h[ok] / w[ok], _ASPECT_EDGES)
        anchors = [(f"P{int(round(math.log2(s)))}", octave_base_scale * s) for s in strides]
        title = f"boxes ({int(ok.sum())})"
    fig = Figure(figsize=(10.0, 3.8), dpi=dpi)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax, hist, colour in ((ax1, sh, "#007aff"), (ax2, ah, "#34c759")):
        edges = np.asarray(hist["edges"])
        ax.stairs(np.asarray(hist["counts"]), edges, fill=True, color=colour, alpha=0.7)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlim(edges[0], edges[-1])
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_ylabel("boxes", fontsize=8)
    for name, size in anchors:
        ax1.axvline(size, color="#ff3b30", lw=1.0, ls="--")
        ax1.text(size, 1.0, f" {name} {size:g}", color="#ff3b30", fontsize=7, rotation=90, va="top", ha="right",
                 transform=ax1.get_xaxis_transform(), bbox=dict(facecolor="white", alpha=0.7, lw=0, pad=1))
    ax1.axvline(DEGENERATE_PX, color="grey", lw=0.8, ls=":")
    ax1.set_xlabel("sqrt(area) after resize, px (dashed: ATSS anchor size per level)", fontsize=8)
    ax1.set_title(title, fontsize=9)
    ax2.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax2.set_xlabel("aspect ratio h / w", fontsize=8)
    ax2.set_title("aspect ratios", fontsize=9)
    fig.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png")
    log.debug("wrote %s", path)
    return path


def check_out_dir(out_dir: str | os.PathLike, force: bool = False) -> None:
    """Raise ``FileExistsError`` when ``out_dir`` already holds a report and ``force`` is not set (or when it
    is a file)."""
    from .folders import check_output_folder

    check_output_folder(out_dir, (REPORT_FILE,), force)


def write_report(report: dict[str, Any], out_dir: str | os.PathLike, *, force: bool = False) -> dict[str, str]:
    """Write ``inspect.json`` and ``sizes.png`` into ``out_dir`` (created); refuses to replace an existing
    ``inspect.json`` unless ``force``. Returns the paths written."""
    check_out_dir(out_dir, force)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    js = os.path.join(out_dir, REPORT_FILE)
    png = plot_sizes(report, os.path.join(out_dir, PLOT_FILE))
    tmp = js + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, js)
    return {"report": js, "plot": png}
