"""The statistics behind gfldet inspect-data: the ATSS assignment on a data set's boxes and the advice drawn from it."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..errors import GfldetError
from ..models.assemble import assigner_part, prior_part
from ..ops.boxes import box_centers, box_to_distance
from ..ops.priors import level_index
from ..ops.resize import keep_ratio_size, padded_size
from .coco import CocoDetection

__all__ = ["Data", "Geometry", "assign_sample", "candidate", "frac", "hist", "pct", "quantiles", "recommend_input",
           "recommend_reg_max", "resize_sizes", "CANDIDATE_MIN_SIZES", "REG_MAX_CHOICES", "MIN_POSITIVE_FRACTION",
           "MIN_MEDIAN_PX", "REG_MAX_COVERAGE"]

CANDIDATE_MIN_SIZES = (320, 416, 512, 640, 800, 1024, 1333)  # short sides tried for the input-size advice
REG_MAX_CHOICES = (8, 12, 16, 20, 24, 32)
MIN_POSITIVE_FRACTION = 0.99  # of GTs that must get an ATSS positive at a recommended input size
MIN_MEDIAN_PX = 16.0  # median sqrt(area) at a recommended input size
REG_MAX_COVERAGE = 0.995  # of positive (anchor, edge) pairs a recommended reg_max must represent
_QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
_ANCHOR_BUDGET = 1 << 22  # images x anchors in one atss_assign call (bounds its (N, A) outputs)
DEGENERATE_PX = 2.0  # boxes with a side below this after the resize are degenerate
SQRT_AREA_EDGES = 2.0 ** np.arange(0.0, 12.0 + 1e-9, 0.25)  # 1 .. 4096 px, 4 bins per octave
ASPECT_EDGES = 2.0 ** np.arange(-5.0, 5.0 + 1e-9, 0.25)  # h / w from 1/32 to 32


# --------------------------------------------------------------------------- helpers
def qkey(q: float) -> str:
    return f"p{q * 100:g}"


def quantiles(x: np.ndarray) -> dict[str, float | None]:
    if x.size == 0:
        return {qkey(q): None for q in _QUANTILES}
    v = np.quantile(x.astype(np.float64), _QUANTILES)
    return {qkey(q): float(round(val, 4)) for q, val in zip(_QUANTILES, v)}


def hist(x: np.ndarray, edges: np.ndarray) -> dict[str, list]:
    """Counts over ``edges`` with values outside the range put in the first / last bin."""
    if x.size:
        x = np.clip(x, edges[0], np.nextafter(edges[-1], 0))
    counts, _ = np.histogram(x, bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def frac(num: int, den: int) -> float | None:
    return float(num) / den if den else None


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100.0 * x:.{digits}f}%"


def resize_sizes(sizes_hw: np.ndarray, min_size: int, max_size: int, divisor: int) -> tuple[np.ndarray, np.ndarray]:
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


class Data:
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


class Geometry:
    """The run's detector geometry, from its own :class:`ModelConfig` (``cfg.model_config``): strides, size divisor,
    and the model's prior generator and assigner themselves (``gfldet.models.assemble``), so that the report's
    positives are the ones training will make."""

    def __init__(self, cfg: Config) -> None:
        if cfg.input.min_size is None or cfg.input.max_size is None:
            raise GfldetError(f"the report is at the configured input size: set input.min_size and input.max_size (now "
                              f"{cfg.input.min_size} and {cfg.input.max_size}; null keeps every image at its own size)")
        mc = cfg.model_config(num_classes=1)  # the classes change neither priors nor assignment
        self.strides = tuple(int(s) for s in mc.strides)
        self.divisor = int(mc.size_divisor)
        self.octave = float(mc.octave_base_scale)
        self.anchor_sizes = tuple(self.octave * s for s in self.strides)
        self.prior_generator = prior_part(mc)
        self.assigner = assigner_part(mc)
        self.assigner_name = mc.assigner
        self.topk = int(mc.atss_topk)
        self.ignore_iof_thr = float(mc.ignore_iof_thr)
        self.reg_max = int(mc.reg_max)
        self.bin_width = float(mc.bin_width) if mc.box == "distribution" else 1.0
        self.min_size = int(cfg.input.min_size)
        self.max_size = int(cfg.input.max_size)


def assign_sample(data: Data, boxes_r: torch.Tensor, pads: np.ndarray, images: np.ndarray, geo: Geometry
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
        priors = geo.prior_generator(fm, torch.device("cpu"))  # the model's own priors and assigner
        lvl = level_index(priors.num_level_anchors)
        stride_of = priors.strides  # (A,)
        centres = box_centers(priors.anchors)
        step = max(1, _ANCHOR_BUDGET // max(1, priors.anchors.shape[0]))
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
            valid = geo.prior_generator.valid(fm, [(ph, pw)] * len(chunk), torch.device("cpu"))
            res = geo.assigner(priors, valid, gt_boxes, gt_ignore)
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


def candidate(data: Data, geo: Geometry, min_size: int, max_size: int, sample: np.ndarray,
               assign: bool = True) -> dict[str, Any]:
    """Median object size (all GTs) and, with ``assign``, the fraction of GTs of ``sample`` with a positive."""
    scales, pads = resize_sizes(data.sizes, min_size, max_size, geo.divisor)
    boxes_r = data.resized_boxes(scales)
    wh = (boxes_r[data.gt, 2:] - boxes_r[data.gt, :2]).numpy().astype(np.float64)
    sq = np.sqrt(np.clip(wh[:, 0] * wh[:, 1], 0, None))
    out: dict[str, Any] = {"min_size": int(min_size), "max_size": int(max_size),
                           "median_px": float(round(np.median(sq), 2)) if sq.size else None,
                           "fraction_with_positive": None}
    if assign:
        a = assign_sample(data, boxes_r, pads, sample, geo)
        out["fraction_with_positive"] = frac(int((a["num_pos"] > 0).sum()), int(a["gt"].size))
    return out


def passes(c: dict[str, Any]) -> bool:
    return (c["fraction_with_positive"] is not None and c["fraction_with_positive"] >= MIN_POSITIVE_FRACTION
            and c["median_px"] is not None and c["median_px"] >= MIN_MEDIAN_PX)


def recommend_input(data: Data, geo: Geometry, sample: np.ndarray, current: dict[str, Any]) -> dict[str, Any]:
    ratio = geo.max_size / geo.min_size
    sizes = sorted(set(CANDIDATE_MIN_SIZES) | {geo.min_size})
    cands: dict[int, dict[str, Any]] = {geo.min_size: current}
    for s in sizes:
        if s != geo.min_size:
            cands[s] = candidate(data, geo, s, max(s, int(round(s * ratio))), sample, assign=False)

    def evaluate(s: int) -> dict[str, Any]:
        c = cands[s]
        if c["fraction_with_positive"] is None and c["median_px"] is not None and c["median_px"] >= MIN_MEDIAN_PX:
            c.update(candidate(data, geo, c["min_size"], c["max_size"], sample))
        return c

    cur = current
    rec: dict[str, Any]
    if not data.gt.size or cur["fraction_with_positive"] is None:
        where = "in the data set" if not data.gt.size else "in the images assigned"
        rec = {"min_size": geo.min_size, "max_size": geo.max_size, "change": False,
               "reason": f"no ground-truth boxes {where}: nothing to base a change on"}
    elif passes(cur):
        smaller = None  # the smallest passing size below the current one, searched downwards until one fails
        for s in sorted((s for s in sizes if s < geo.min_size), reverse=True):
            if not passes(evaluate(s)):
                break
            smaller = s
        why = (f"at the current {geo.min_size}x{geo.max_size} {pct(cur['fraction_with_positive'])} of GTs get an ATSS "
               f"positive and the median object is {cur['median_px']:.0f} px (need >= {pct(MIN_POSITIVE_FRACTION, 0)}"
               f" and >= {MIN_MEDIAN_PX:g} px)")
        if smaller is not None:
            why += f"; {smaller} would also do and trains faster"
        rec = {"min_size": geo.min_size, "max_size": geo.max_size, "change": False, "reason": why}
    else:
        larger = next((s for s in sizes if s > geo.min_size and passes(evaluate(s))), None)
        problem = (f"at the current {geo.min_size}x{geo.max_size} only {pct(cur['fraction_with_positive'])} of GTs "
                   f"get an ATSS positive" if (cur["fraction_with_positive"] or 0) < MIN_POSITIVE_FRACTION
                   else f"at the current {geo.min_size}x{geo.max_size} the median object is only {cur['median_px']:.1f} px")
        if larger is not None:
            c = cands[larger]
            rec = {"min_size": c["min_size"], "max_size": c["max_size"], "change": True,
                   "reason": f"{problem}; at {c['min_size']}x{c['max_size']} {pct(c['fraction_with_positive'])} do "
                             f"and the median object is {c['median_px']:.0f} px (the smallest candidate that passes)"}
        else:
            for s in sizes:
                if s > geo.min_size:
                    evaluate(s)
            tried = [c for c in cands.values() if c["fraction_with_positive"] is not None]
            best = max(tried, key=lambda c: (c["fraction_with_positive"], -c["min_size"]))
            change = best["min_size"] != geo.min_size
            rec = {"min_size": best["min_size"], "max_size": best["max_size"], "change": change,
                   "reason": f"{problem}; no candidate up to {sizes[-1]} reaches {pct(MIN_POSITIVE_FRACTION, 0)} with a "
                             f"median >= {MIN_MEDIAN_PX:g} px; {best['min_size']}x{best['max_size']} gives the most GTs "
                             f"a positive ({pct(best['fraction_with_positive'])}): consider cropping/tiling the images "
                             f"or removing unusable boxes"}
    rec["candidates"] = [cands[s] for s in sizes]
    return rec


def recommend_reg_max(coverage: list[dict[str, Any]], geo: Geometry, current_beyond: float | None) -> dict[str, Any]:
    if current_beyond is None:
        return {"value": geo.reg_max, "change": False, "reason": "no positive anchors to measure: keep the current reg_max"}
    ok = [c for c in coverage if c["fraction_beyond"] <= 1.0 - REG_MAX_COVERAGE]
    where = f"at {geo.min_size}x{geo.max_size}"
    if ok:
        c = ok[0]
        v = c["reg_max"]
        reason = (f"the smallest of {list(REG_MAX_CHOICES)} representing >= {pct(REG_MAX_COVERAGE)} of positive edges "
                  f"{where} ({pct(1.0 - c['fraction_beyond'], 2)})")
        if v == geo.reg_max:
            reason += ": the current value"
        elif v < geo.reg_max:
            reason += (f"; the current {geo.reg_max} also does ({pct(1.0 - current_beyond, 2)}): lowering it only "
                       f"trims the regression head")
        else:
            reason += f"; the current {geo.reg_max} clamps {pct(current_beyond, 2)} of them"
    else:
        c = coverage[-1]
        v = c["reg_max"]
        reason = (f"even {v} leaves {pct(c['fraction_beyond'], 2)} of positive edges {where} beyond it: the "
                  f"boxes are very elongated for their level")
    return {"value": int(v), "change": v != geo.reg_max, "reason": reason}
