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
