"""Does the learned uncertainty mean something? Detections against ground truth, edge by edge.

:func:`edge_records` matches detections to ground-truth boxes (IoU >= 0.5, same class, greedily by score as
COCO does) and lists, for every edge of every matched box, its predicted uncertainty (``edge_std`` in pixels,
``edge_entropy``, ``edge_peak``) beside its real localisation error (``|predicted - true|`` in pixels) and,
where the data says so, whether the edge is ambiguous (blurred, faded, occluded). :func:`uncertainty_report`
summarises them: Spearman rank correlations of uncertainty with error, mean uncertainty and error of sharp and
ambiguous edges, and how well ``edge_std`` alone separates ambiguous from sharp edges (ROC AUC).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .ops.boxes import box_iou

__all__ = ["match_detections", "edge_records", "uncertainty_report", "spearman", "roc_auc"]


def match_detections(det_boxes: Tensor, det_scores: Tensor, det_labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                     iou_thr: float = 0.5) -> tuple[Tensor, Tensor]:
    """Greedy matching by decreasing score (as COCO): each detection takes the unmatched ground truth of its
    class with the highest IoU >= ``iou_thr``. Returns per detection the matched GT index or -1 ``(D,)`` and per
    GT the matched detection index or -1 ``(M,)``."""
    d, m = det_boxes.shape[0], gt_boxes.shape[0]
    det_match = torch.full((d,), -1, dtype=torch.long)
    gt_match = torch.full((m,), -1, dtype=torch.long)
    if d == 0 or m == 0:
        return det_match, gt_match
    iou = box_iou(det_boxes.float().cpu(), gt_boxes.float().cpu())
    iou[det_labels.cpu()[:, None] != gt_labels.cpu()[None, :]] = -1.0
    for i in torch.argsort(det_scores.cpu(), descending=True, stable=True).tolist():
        row = iou[i].clone()
        row[gt_match >= 0] = -1.0
        j = int(row.argmax())
        if row[j] >= iou_thr:
            det_match[i] = j
            gt_match[j] = i
    return det_match, gt_match


def edge_records(dets: Sequence[dict[str, Any]], gts: Sequence[dict[str, Any]], iou_thr: float = 0.5) -> dict[str, np.ndarray]:
    """Per edge of every matched ground truth (4 rows per box, order l, t, r, b): ``std`` (px), ``entropy``,
    ``peak``, ``err`` (|edge error| px), ``size`` (the true box's width for l/r, height for t/b), ``ambiguous`` (bool; False where ``gts`` carry no flags), and per box:
    ``box_iou``, ``loc_conf``, ``score``.

    ``dets``: per image the model's output dict; ``gts``: per image ``boxes (M, 4)``, ``labels (M,)`` and
    optionally ``ambiguous (M, 4)``.
    """
    cols: dict[str, list] = {k: [] for k in ("std", "entropy", "peak", "err", "size", "ambiguous", "box_iou", "loc_conf", "score")}
    for d, g in zip(dets, gts):
        gt_boxes = torch.as_tensor(np.asarray(g["boxes"]), dtype=torch.float32).reshape(-1, 4)
        gt_labels = torch.as_tensor(np.asarray(g["labels"])).long().reshape(-1)
        boxes = torch.as_tensor(np.asarray(d["boxes"])).float().reshape(-1, 4)
        scores = torch.as_tensor(np.asarray(d["scores"])).float()
        labels = torch.as_tensor(np.asarray(d["labels"])).long()
        _, gt_match = match_detections(boxes, scores, labels, gt_boxes, gt_labels, iou_thr)
        amb = np.asarray(g.get("ambiguous", np.zeros((gt_boxes.shape[0], 4), bool)), dtype=bool).reshape(-1, 4)
        for j, di in enumerate(gt_match.tolist()):
            if di < 0:
                continue
            err = (boxes[di] - gt_boxes[j]).abs().numpy()
            cols["std"].append(np.asarray(d["edge_std"][di], np.float64))
            cols["entropy"].append(np.asarray(d["edge_entropy"][di], np.float64))
            cols["peak"].append(np.asarray(d["edge_peak"][di], np.float64))
            cols["err"].append(err.astype(np.float64))
            gw, gh = float(gt_boxes[j, 2] - gt_boxes[j, 0]), float(gt_boxes[j, 3] - gt_boxes[j, 1])
            cols["size"].append(np.array([gw, gh, gw, gh], np.float64))  # the extent along each edge's axis
            cols["ambiguous"].append(amb[j])
            cols["box_iou"].append(float(box_iou(boxes[di:di + 1], gt_boxes[j:j + 1])[0, 0]))
            cols["loc_conf"].append(float(np.asarray(d["loc_conf"][di])))
            cols["score"].append(float(scores[di]))
    out = {}
    for k in ("std", "entropy", "peak", "err", "size", "ambiguous"):
        out[k] = np.concatenate(cols[k]) if cols[k] else np.zeros(0, bool if k == "ambiguous" else np.float64)
    for k in ("box_iou", "loc_conf", "score"):
        out[k] = np.asarray(cols[k], np.float64)
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation (Pearson correlation of average ranks); None with fewer than 3 pairs, a
    non-finite value or a constant input."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 3 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else None


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a random positive scores higher than a random negative (ties count one half)."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    r = _ranks(scores)
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def uncertainty_report(rec: dict[str, np.ndarray]) -> dict[str, Any]:
    """Summary numbers of :func:`edge_records` (None where undefined)."""
    amb = rec["ambiguous"]

    def mean(x: np.ndarray) -> float | None:
        return float(np.mean(x)) if x.size else None

    def median(x: np.ndarray) -> float | None:
        return float(np.median(x)) if x.size else None

    return {
        "matched_boxes": int(rec["box_iou"].size),
        "edges": int(rec["err"].size),
        "ambiguous_edges": int(amb.sum()),
        "spearman_std_vs_err": spearman(rec["std"], rec["err"]),
        "spearman_entropy_vs_err": spearman(rec["entropy"], rec["err"]),
        # pixels grow with the object: relative to the box's extent, size drops out of the relation
        "spearman_rel_std_vs_rel_err": spearman(rec["std"] / np.maximum(rec["size"], 1e-6), rec["err"] / np.maximum(rec["size"], 1e-6)),
        "spearman_std_vs_err_sharp": spearman(rec["std"][~amb], rec["err"][~amb]),
        "spearman_std_vs_err_ambiguous": spearman(rec["std"][amb], rec["err"][amb]),
        "spearman_loc_conf_vs_iou": spearman(rec["loc_conf"], rec["box_iou"]),
        "spearman_score_vs_iou": spearman(rec["score"], rec["box_iou"]),
        "mean_std_px_sharp": mean(rec["std"][~amb]),
        "mean_std_px_ambiguous": mean(rec["std"][amb]),
        "mean_err_px_sharp": mean(rec["err"][~amb]),
        "mean_err_px_ambiguous": mean(rec["err"][amb]),
        "median_err_px_sharp": median(rec["err"][~amb]),
        "median_err_px_ambiguous": median(rec["err"][amb]),
        "auc_std_ambiguous_vs_sharp": roc_auc(rec["std"], amb),
    }
