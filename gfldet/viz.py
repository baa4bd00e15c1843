"""Pictures: detections on an image, learned edge distributions (the GFL paper's Fig. 3), loss curves.

matplotlib is used with the non-interactive Agg backend on explicit ``Figure`` objects (never pyplot's
global state, never ``show``), so these functions are safe in threads, tests and headless machines.

Images may be ``(H, W, 3)`` uint8 / float arrays or ``(3, H, W)`` tensors (uint8 or float in [0, 1]).
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .errors import GfldetError

__all__ = ["draw_detections", "draw_distributions", "plot_curves", "infer_stride", "to_hwc_uint8", "EDGE_NAMES", "COLOURS"]

log = logging.getLogger(__name__)

EDGE_NAMES = ("left", "top", "right", "bottom")
#: the palette of boxes and curves, one colour per class or series (cycled)
COLOURS = ("#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#5ac8fa", "#ff9500", "#a2845e")


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_hwc_uint8(image: Any) -> np.ndarray:
    """``(H, W, 3)`` / ``(3, H, W)`` / ``(H, W)``, uint8 or float in [0, 1], array or tensor -> ``(H, W, 3)`` uint8."""
    a = _np(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3:
        raise GfldetError(f"expected an image of shape (H, W, 3) or (3, H, W), got {a.shape}")
    if a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return a


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> str:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png")
    log.debug("wrote %s", path)
    return path


def draw_detections(
    image: Any,
    boxes: Any,
    labels: Any,
    scores: Any = None,
    class_names: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    *,
    gt_boxes: Any = None,
    score_thr: float = 0.0,
    title: str | None = None,
    dpi: int = 100,
) -> Figure:
    """Draw xyxy ``boxes`` with ``labels`` (and ``scores``) on ``image``; save a PNG when ``path`` is given.

    ``gt_boxes`` (optional) are drawn as dashed white boxes underneath. Boxes with a score below
    ``score_thr`` are skipped. The image keeps its pixel size (one figure pixel per image pixel at ``dpi``).
    Returns the figure.
    """
    img = to_hwc_uint8(image)
    h, w = img.shape[:2]
    boxes = _np(boxes).reshape(-1, 4).astype(np.float64)
    labels = _np(labels).reshape(-1).astype(np.int64)
    scores_a = None if scores is None else _np(scores).reshape(-1).astype(np.float64)
    if labels.shape[0] != boxes.shape[0] or (scores_a is not None and scores_a.shape[0] != boxes.shape[0]):
        raise ValueError(f"{boxes.shape[0]} boxes, {labels.shape[0]} labels, "
                         f"{None if scores_a is None else scores_a.shape[0]} scores")
    scale = max(1.0, 480.0 / max(h, w))  # small images are enlarged so that the text stays legible
    fig = Figure(figsize=(w * scale / dpi, h * scale / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, interpolation="nearest" if scale > 1 else "antialiased")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    if gt_boxes is not None:
        for b in _np(gt_boxes).reshape(-1, 4):
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="white", lw=1.0, ls="--"))
    order = np.argsort(-scores_a) if scores_a is not None else np.arange(boxes.shape[0])
    for i in order[::-1]:  # highest score drawn last (on top)
        if scores_a is not None and scores_a[i] < score_thr:
            continue
        x0, y0, x1, y1 = boxes[i]
        c = COLOURS[int(labels[i]) % len(COLOURS)]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=c, lw=1.6))
        name = class_names[labels[i]] if class_names is not None and 0 <= labels[i] < len(class_names) else str(labels[i])
        text = name if scores_a is None else f"{name} {scores_a[i]:.2f}"
        ax.text(x0, max(y0 - 1, 0), text, color="white", fontsize=7, va="bottom" if y0 > 10 else "top",
                bbox=dict(facecolor=c, alpha=0.75, pad=1, edgecolor="none"))
    if title:
        ax.text(3, 3, title, color="white", fontsize=8, va="top", bbox=dict(facecolor="black", alpha=0.6, pad=2, edgecolor="none"))
    if path is not None:
        _save(fig, path, dpi)
    return fig


def infer_stride(box: Any, distributions: Any, strides: Sequence[int] = (8, 16, 32, 64, 128)) -> float | None:
    """The pyramid stride a detection most likely came from.

    A detection's width is ``(E[left] + E[right]) * stride`` and its height ``(E[top] + E[bottom]) * stride``
    (expectations in bins); the stride of ``strides`` closest (in log scale) to the ratio is returned.
    Clipping at the image border shrinks the box, so this can be off for clipped boxes. ``None`` when
    the expectations are ~0.
    """
    b = _np(box).reshape(4).astype(np.float64)
    d = _np(distributions).reshape(4, -1).astype(np.float64)
    e = d @ np.arange(d.shape[1])
    span = e[0] + e[2] + e[1] + e[3]
    if span < 1e-6:
        return None
    ratio = ((b[2] - b[0]) + (b[3] - b[1])) / span
    if ratio <= 0:
        return None
    return float(min(strides, key=lambda s: abs(math.log(s) - math.log(ratio))))


def draw_distributions(
    image: Any,
    box: Any,
    distributions: Any,
    path: str | os.PathLike,
    title: str | None = None,
    *,
    stride: float | None = None,
    gt_box: Any = None,
    ambiguous: Sequence[bool] | None = None,
    margin: float = 0.5,
    dpi: int = 110,
) -> Figure:
    """The GFL paper's Fig. 3: an image crop with a detected box, beside its four learned edge distributions.

    Args:
        image: the whole image; it is cropped around ``box`` with ``margin`` times the box size on each side.
        box: ``(4,)`` xyxy detection in image pixels.
        distributions: ``(4, n + 1)`` probabilities over bins ``0..n`` for (left, top, right, bottom), the
            ``distributions`` a GFL model returns per detection.
        path: PNG to write.
        stride: pixels per bin: the detection's pyramid stride (see :func:`infer_stride`), times the image's
            resize factor when the image is not the network input. When given, the x axes, the expectation
            ``E`` and the standard deviation ``std`` are in pixels (bin ``i`` is ``i * stride`` pixels from
            the anchor point) and, with ``gt_box``, the ground-truth distance of each edge is marked; without
            it they are all in bins.
        gt_box: optional ``(4,)`` xyxy ground truth, drawn dashed on the crop.
        ambiguous: optional four bools, shown in the panel titles (e.g. the synthetic data's edge flags).
    The four panels are laid out left, top (first row), right, bottom (second row), the l/t/r/b order of
    ``distributions``, and each title names its edge. Each panel shows the probabilities as bars, the
    expectation (the predicted distance) as a solid line and the target as a dashed one, over the range of
    bins that hold the mass; the title gives the expectation and the standard deviation (the spread that
    GFL expects to be larger for ambiguous edges) in the unit of the x axis.
    """
    img = to_hwc_uint8(image)
    h, w = img.shape[:2]
    b = _np(box).reshape(4).astype(np.float64)
    dist = _np(distributions).astype(np.float64)
    if dist.ndim != 2 or dist.shape[0] != 4:
        raise ValueError(f"distributions must be (4, n + 1), got {dist.shape}")
    n_bins = dist.shape[1]
    bins = np.arange(n_bins, dtype=np.float64)
    expect = dist @ bins
    std = np.sqrt(np.clip(dist @ bins**2 - expect**2, 0, None))
    gt = None if gt_box is None else _np(gt_box).reshape(4).astype(np.float64)

    bw, bh = max(b[2] - b[0], 1.0), max(b[3] - b[1], 1.0)
    ref = b if gt is None else np.concatenate([np.minimum(b[:2], gt[:2]), np.maximum(b[2:], gt[2:])])
    cx0 = int(max(0, math.floor(ref[0] - margin * bw)))
    cy0 = int(max(0, math.floor(ref[1] - margin * bh)))
    cx1 = int(min(w, math.ceil(ref[2] + margin * bw)))
    cy1 = int(min(h, math.ceil(ref[3] + margin * bh)))
    if cx1 <= cx0 or cy1 <= cy0:
        cx0, cy0, cx1, cy1 = 0, 0, w, h
    crop = img[cy0:cy1, cx0:cx1]

    fig = Figure(figsize=(9.0, 4.2), dpi=dpi)
    gs = fig.add_gridspec(2, 3, width_ratios=(1.25, 1, 1), wspace=0.35, hspace=0.55, left=0.03, right=0.98, top=0.86, bottom=0.12)
    ax_img = fig.add_subplot(gs[:, 0])
    ax_img.imshow(crop, extent=(cx0, cx1, cy1, cy0), interpolation="nearest")
    ax_img.set_xlim(cx0, cx1)
    ax_img.set_ylim(cy1, cy0)
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    if gt is not None:
        ax_img.add_patch(Rectangle((gt[0], gt[1]), gt[2] - gt[0], gt[3] - gt[1], fill=False, ec="white", lw=1.2, ls="--"))
    ax_img.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="#ff3b30", lw=1.8))
    # the anchor point the distances are measured from (known once the stride is)
    anchor = None
    if stride:
        anchor = np.array([b[0] + expect[0] * stride, b[1] + expect[1] * stride])
        ax_img.plot([anchor[0]], [anchor[1]], marker="+", color="#ffcc00", ms=9, mew=2)
    targets = None
    if gt is not None and anchor is not None:
        targets = np.array([anchor[0] - gt[0], anchor[1] - gt[1], gt[2] - anchor[0], gt[3] - anchor[1]]) / stride

    positions = [(0, 1), (0, 2), (1, 1), (1, 2)]  # left, top / right, bottom: reading order = l, t, r, b
    ymax = float(dist.max()) * 1.15 if dist.size else 1.0
    # all panels show the same bin range: the bins holding the mass (and the targets), plus 2 on each side
    mass = np.nonzero((dist > 0.01).any(axis=0))[0]
    lo_bin, hi_bin = (int(mass.min()), int(mass.max())) if mass.size else (0, n_bins - 1)
    if targets is not None:
        lo_bin = min(lo_bin, int(math.floor(np.clip(targets, 0, n_bins - 1).min())))
        hi_bin = max(hi_bin, int(math.ceil(np.clip(targets, 0, n_bins - 1).max())))
    lo_bin, hi_bin = max(0, lo_bin - 2), min(n_bins - 1, hi_bin + 2)
    unit = float(stride) if stride else 1.0
    unit_name = "px" if stride else "bins"
    for e, (r, c) in enumerate(positions):
        ax = fig.add_subplot(gs[r, c])
        xs = bins * unit
        width = 0.8 * unit
        ax.bar(xs, dist[e], width=width, color=COLOURS[e + 1], alpha=0.85)
        ax.axvline(expect[e] * unit, color="black", lw=1.2)
        if targets is not None:
            ax.axvline(targets[e] * unit, color="#ff3b30", lw=1.2, ls="--")
        ax.set_ylim(0, max(ymax, 1e-3))
        ax.set_xlim((lo_bin - 0.6) * unit, (hi_bin + 0.6) * unit)
        if not stride:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("distance (px)" if stride else "bin", fontsize=7)
        ax.tick_params(labelsize=6)
        flag = ""
        if ambiguous is not None:
            flag = " [ambiguous]" if bool(ambiguous[e]) else " [sharp]"
        ax.set_title(f"{EDGE_NAMES[e]}{flag}\nE={expect[e] * unit:.2f} std={std[e] * unit:.2f} {unit_name}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    legend = "red box: detection"
    if gt is not None:
        legend += ", white dashed: ground truth"
    if stride:
        legend += ", +: anchor point (distances are measured from it)"
    legend += "; bars: learned edge distribution, black line: its expectation (the prediction)"
    if targets is not None:
        legend += ", red dashed: ground truth"
    fig.text(0.01, 0.015, legend, fontsize=6.5, color="#444444")
    _save(fig, path, dpi)
    return fig


def plot_curves(history: Mapping[str, Sequence[float]], path: str | os.PathLike, *, smooth: int = 10,
                title: str | None = "training losses", dpi: int = 100, xlabel: str = "step", ylabel: str = "loss",
                x: Sequence[float] | None = None, markers: int = 30) -> Figure:
    """Training curves: one line per key of ``history`` (e.g. ``loss_qfl``, ``loss_bbox``, ``loss_dfl``,
    ``loss``, ``lr``), the raw values faint and a running mean over ``smooth`` points on top. Keys named
    ``lr`` (or starting with ``lr``) go on a second y axis.

    ``x``: the x value of each point (e.g. the epoch of each evaluation), shared by all series; by default
    1, 2, 3, ... ``xlabel`` and ``ylabel`` name the axes (``"step"`` and ``"loss"`` by default). Series of at
    most ``markers`` points are drawn with a marker on each point, so that a single point (one evaluation)
    is visible. Returns the figure.
    """
    xs_all = None if x is None else np.asarray(list(x), dtype=np.float64)
    fig = Figure(figsize=(7.0, 4.0), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    ax2 = None
    for i, (name, values) in enumerate(history.items()):
        v = np.asarray(list(values), dtype=np.float64)
        if v.size == 0:
            continue
        if xs_all is None:
            steps = np.arange(1, v.size + 1)
        elif xs_all.size == v.size:
            steps = xs_all
        else:
            raise ValueError(f"plot_curves: {name!r} has {v.size} values but x has {xs_all.size}")
        mark = dict(marker="o", ms=4) if v.size <= markers else {}
        if name.startswith("lr"):
            ax2 = ax2 or ax.twinx()
            ax2.plot(steps, v, color="grey", lw=1.0, ls=":", label=name, **mark)
            ax2.set_ylabel("learning rate", fontsize=8)
            ax2.tick_params(labelsize=7)
            continue
        c = COLOURS[i % len(COLOURS)]
        k = max(1, min(smooth, v.size))
        if k > 1:  # with k == 1 the running mean is the raw series itself
            ax.plot(steps, v, color=c, alpha=0.25, lw=0.8)
        finite = np.where(np.isfinite(v), v, np.nan)
        run = np.array([np.nanmean(finite[max(0, j - k + 1): j + 1]) if np.isfinite(finite[max(0, j - k + 1): j + 1]).any()
                        else np.nan for j in range(v.size)])
        ax.plot(steps, run, color=c, lw=1.6, label=name, **mark)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if xs_all is not None and xs_all.size and np.all(np.isfinite(xs_all)) and np.all(xs_all == np.round(xs_all)):
        ticks = np.unique(xs_all)  # whole numbers, e.g. epochs: no tick at 1.5
        if ticks.size <= 12:
            ax.set_xticks(ticks, [str(int(t)) for t in ticks])
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if ax2 is not None:
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    if handles:
        ax.legend(handles, names, fontsize=7, loc="upper right")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi)
    return fig
