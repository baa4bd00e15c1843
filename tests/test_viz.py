"""The drawing functions write non-empty PNGs that PIL reads back, of about the expected size."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gfldet.viz import draw_detections, draw_distributions, infer_stride, plot_curves, to_hwc_uint8


def _image(h=96, w=128):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _read(path):
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return im.size  # (W, H)


def test_draw_detections_png(tmp_path):
    img = _image()
    boxes = np.array([[10, 10, 50, 60], [60, 20, 120, 90]], dtype=np.float32)
    p = tmp_path / "dets.png"
    fig = draw_detections(img, boxes, np.array([0, 2]), np.array([0.9, 0.4]), class_names=["a", "b", "c"], path=p,
                          gt_boxes=boxes + 2)
    assert fig is not None
    w, h = _read(p)
    # small images are enlarged for legibility, keeping the aspect ratio
    assert w >= 128 and h >= 96
    assert abs(w / h - 128 / 96) < 0.05


def test_draw_detections_accepts_tensors_and_empty(tmp_path):
    img = torch.rand(3, 64, 80)
    p = tmp_path / "empty.png"
    draw_detections(img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0), path=p)
    w, h = _read(p)
    assert abs(w / h - 80 / 64) < 0.05


def test_draw_detections_checks_lengths():
    with pytest.raises(ValueError):
        draw_detections(_image(), np.zeros((2, 4)), np.zeros(3, dtype=int))


def test_draw_distributions_png(tmp_path):
    img = _image(160, 160)
    logits = torch.randn(4, 17)
    dist = logits.softmax(-1)
    p = tmp_path / "dist.png"
    draw_distributions(img, [40, 50, 100, 120], dist, p, title="test", stride=8, gt_box=[42, 48, 98, 121],
                       ambiguous=[True, False, False, True])
    w, h = _read(p)
    assert 700 <= w <= 1200 and 300 <= h <= 600  # 9 x 4.2 inches at 110 dpi
    p2 = tmp_path / "dist_bins.png"
    draw_distributions(img, np.array([0, 0, 20, 20]), dist.numpy(), p2)  # box at the border, no stride
    assert _read(p2)[0] > 0


def test_draw_distributions_checks_shape(tmp_path):
    with pytest.raises(ValueError):
        draw_distributions(_image(), [0, 0, 10, 10], np.ones((3, 17)) / 17, tmp_path / "x.png")


def test_plot_curves_png(tmp_path):
    history = {"loss": [3.0, 2.5, 2.0, float("nan"), 1.5], "loss_qfl": [1.0, 0.9, 0.8, 0.7, 0.6], "lr": [0.001, 0.01, 0.01, 0.01, 0.005]}
    p = tmp_path / "curves.png"
    plot_curves(history, p)
    w, h = _read(p)
    assert (w, h) == (700, 400)


def _colour_pixels_in_axes(fig, ax, colour, tol=40):
    """Pixels of ``colour`` (hex) inside ``ax``'s plotting area, leaving out its legend."""
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    h = img.shape[0]
    want = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    near = np.abs(img - want).sum(-1) <= tol
    keep = np.zeros_like(near)
    a = ax.get_window_extent()
    keep[int(h - a.y1) + 1:int(h - a.y0) - 1, int(a.x0) + 1:int(a.x1) - 1] = True
    if ax.get_legend() is not None:
        lg = ax.get_legend().get_window_extent()
        keep[int(h - lg.y1) - 1:int(h - lg.y0) + 2, int(lg.x0) - 1:int(lg.x1) + 2] = False
    return int((near & keep).sum())


def test_plot_curves_one_point_is_visible(tmp_path):
    """One evaluation: a line through one point draws nothing; the point must show (as a marker)."""
    from gfldet.viz import COLOURS

    fig = plot_curves({"AP": [0.31], "AP50": [0.52]}, tmp_path / "one.png", smooth=1)
    ax = fig.axes[0]
    assert _colour_pixels_in_axes(fig, ax, COLOURS[0]) >= 10
    assert _colour_pixels_in_axes(fig, ax, COLOURS[1]) >= 10
    assert _read(tmp_path / "one.png") == (700, 400)
    # a long series keeps plain lines (markers would clutter it) and is visible as well
    fig = plot_curves({"loss": list(np.linspace(3, 1, 200))}, tmp_path / "long.png")
    assert all(line.get_marker() in (None, "None", "") for line in fig.axes[0].lines)
    assert _colour_pixels_in_axes(fig, fig.axes[0], COLOURS[0]) >= 10


def test_plot_curves_axis_labels_and_x_values(tmp_path):
    fig = plot_curves({"AP": [0.1, 0.2, float("nan")], "AP50": [0.3, 0.4, 0.5]}, tmp_path / "ap.png", smooth=1,
                      xlabel="epoch", ylabel="AP", x=[4, 8, 12], title="validation AP")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "AP")
    for line in ax.lines:
        np.testing.assert_array_equal(line.get_xdata(), [4, 8, 12])
    assert ax.get_xlim()[0] < 4 and ax.get_xlim()[1] > 12
    # the defaults still describe training losses
    ax = plot_curves({"loss": [2.0, 1.0]}, tmp_path / "loss.png").axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("step", "loss")
    with pytest.raises(ValueError, match="x has 2"):
        plot_curves({"AP": [0.1, 0.2, 0.3]}, tmp_path / "bad.png", x=[1, 2])


def _two_spikes(n_bins=17):
    """Edge e puts half its mass on bin a_e and half on a_e + 2: E = a_e + 1 bins, std = 1 bin."""
    a = [2, 4, 6, 8]  # left, top, right, bottom
    dist = np.zeros((4, n_bins))
    for e, v in enumerate(a):
        dist[e, v] = dist[e, v + 2] = 0.5
    return dist, [v + 1 for v in a]


def _panels(fig):
    """The four distribution panels in reading order (rows top to bottom, then left to right)."""
    panels = fig.axes[1:]  # fig.axes[0] is the image crop
    assert len(panels) == 4
    return sorted(panels, key=lambda ax: (-round(ax.get_position().y0, 3), ax.get_position().x0))


def test_draw_distributions_panels_in_ltrb_order_and_pixels(tmp_path):
    import re

    dist, expect_bins = _two_spikes()
    stride = 12.5  # pixels per bin (e.g. stride 16 on an image shown at 0.78 x the network input)
    fig = draw_distributions(_image(200, 200), [60, 60, 140, 150], dist, tmp_path / "d.png", stride=stride)
    panels = _panels(fig)
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["left", "top", "right", "bottom"]
    for ax, e_bins in zip(panels, expect_bins):
        m = re.search(r"E=([\d.]+) std=([\d.]+) px", ax.get_title())
        assert m, ax.get_title()
        assert float(m.group(1)) == pytest.approx(e_bins * stride, abs=0.01)
        assert float(m.group(2)) == pytest.approx(1.0 * stride, abs=0.01)  # std_px = std_bins * stride
        # the x axis is in pixels too: the expectation line sits at E px, the bars at multiples of the stride
        assert "px" in ax.get_xlabel()
        assert any(np.allclose(line.get_xdata(), e_bins * stride) for line in ax.lines)
        xs = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches if p.get_height() > 0)
        np.testing.assert_allclose(xs, [(e_bins - 1) * stride, (e_bins + 1) * stride])
    # without a stride everything stays in bins
    panels = _panels(draw_distributions(_image(200, 200), [60, 60, 140, 150], dist, tmp_path / "b.png"))
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["left", "top", "right", "bottom"]
    for ax, e_bins in zip(panels, expect_bins):
        assert re.search(rf"E={e_bins:.2f} std=1.00 bins", ax.get_title()), ax.get_title()


def test_infer_stride():
    # expectations 2 + 3 bins wide and 1 + 1 high at stride 16 -> an 80 x 32 box
    dist = torch.zeros(4, 17)
    for e, v in enumerate([2, 1, 3, 1]):
        dist[e, v] = 1.0
    assert infer_stride([100, 100, 180, 132], dist) == 16
    assert infer_stride([0, 0, 1, 1], torch.zeros(4, 17).index_fill_(1, torch.tensor([0]), 1.0)) is None


def test_to_hwc_uint8():
    assert to_hwc_uint8(torch.zeros(3, 5, 7)).shape == (5, 7, 3)
    assert to_hwc_uint8(np.ones((5, 7, 3), np.float32)).max() == 255
    assert to_hwc_uint8(np.zeros((5, 7), np.uint8)).shape == (5, 7, 3)
