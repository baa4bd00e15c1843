"""The picture of gfldet inspect-data: histograms of box size (with the anchor sizes) and aspect ratio."""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..models.config import ModelConfig
from . import inspect_stats as stats

__all__ = ["plot_sizes"]

log = logging.getLogger("gfldet.data.inspect")  # logged as the inspect-data report

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
        sh = stats.hist(np.sqrt(w[ok] * h[ok]), stats.SQRT_AREA_EDGES)
        ah = stats.hist(h[ok] / w[ok], stats.ASPECT_EDGES)
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
    ax1.axvline(stats.DEGENERATE_PX, color="grey", lw=0.8, ls=":")
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
