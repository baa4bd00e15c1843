"""The synthetic data generator, the COCO writer, the demo's metrics, and a tiny end-to-end demo run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gfldet.data import EFFECTS, class_names, make_sample, make_split, write_coco
from gfldet.demo import average_precision, match_detections, run_demo


# --------------------------------------------------------------------------- synthetic data
def test_make_sample_is_deterministic():
    a = make_sample(np.random.default_rng(123), size=(96, 128))
    b = make_sample(np.random.default_rng(123), size=(96, 128))
    c = make_sample(np.random.default_rng(124), size=(96, 128))
    assert len(a) == 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_make_split_is_deterministic_and_prefix_stable():
    s1 = make_split(5, seed=7, size=(64, 64))
    s2 = make_split(3, seed=7, size=(64, 64))
    for x, y in zip(s1, s2):
        for k in ("image", "boxes", "labels", "ambiguous", "effects"):
            np.testing.assert_array_equal(x[k], y[k])


def test_samples_are_valid():
    h, w = 120, 160
    samples = make_split(30, seed=3, size=(h, w), num_classes=3)
    effects = np.concatenate([s["effects"] for s in samples])
    for s in samples:
        img, boxes, labels, amb = s["image"], s["boxes"], s["labels"], s["ambiguous"]
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
        assert boxes.dtype == np.float32 and boxes.shape == (labels.shape[0], 4)
        assert labels.dtype == np.int64 and ((labels >= 0) & (labels < 3)).all()
        assert amb.shape == (labels.shape[0], 4) and amb.dtype == bool
        assert s["effects"].shape == labels.shape
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        # a blurred object has at least one ambiguous edge (both of an axis); faded / occluded at least one
        for e, a in zip(s["effects"], amb):
            if EFFECTS[e] != "sharp":
                assert a.any()
            if EFFECTS[e] == "blur":
                assert a[0] == a[2] and a[1] == a[3]
    assert sum(len(s["boxes"]) for s in samples) >= 30
    # every effect occurs, and both sharp and ambiguous objects exist
    assert set(np.unique(effects).tolist()) == set(range(len(EFFECTS)))
    amb = np.concatenate([s["ambiguous"] for s in samples]).any(axis=1)
    assert amb.any() and (~amb).any()


def test_blur_softens_edges():
    """A blurred object's edge has a smaller intensity step than a sharp one (the effect is real)."""
    steps = {"sharp": [], "blur": []}
    for s in make_split(40, seed=11, size=(128, 128)):
        g = s["image"].astype(np.float32).mean(axis=2)
        for b, e, a in zip(s["boxes"], s["effects"], s["ambiguous"]):
            name = EFFECTS[e]
            if name not in steps or (name == "sharp" and a.any()) or (name == "blur" and not a[0]):
                continue
            x0, y0, x1, y1 = b
            if x1 - x0 < 12 or y1 - y0 < 12:
                continue
            yc = int((y0 + y1) / 2)
            xl = int(round(x0))
            if xl < 2 or xl + 2 >= 128:
                continue
            steps[name].append(abs(g[yc, xl + 1] - g[yc, xl - 2]) / max(abs(g[yc, int((x0 + x1) / 2)] - g[yc, xl - 2]), 1.0))
    assert len(steps["sharp"]) >= 5 and len(steps["blur"]) >= 3
    assert np.median(steps["blur"]) < np.median(steps["sharp"])


def test_make_sample_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        make_sample(rng, num_classes=0)
    with pytest.raises(ValueError):
        make_sample(rng, num_classes=99)
    with pytest.raises(ValueError):
        make_sample(rng, size=(8, 8))
    with pytest.raises(ValueError):
        make_sample(rng, effect_probs=(1, 0))


def test_write_coco(tmp_path):
    path = write_coco(tmp_path / "coco", n=4, seed=5, size=(64, 80), num_classes=3)
    with open(path) as f:
        data = json.load(f)
    assert {"images", "annotations", "categories"} <= set(data)
    cats = {c["id"]: c["name"] for c in data["categories"]}
    assert cats == {i + 1: n for i, n in enumerate(class_names(3))}
    img_ids = [im["id"] for im in data["images"]]
    ann_ids = [a["id"] for a in data["annotations"]]
    assert len(set(img_ids)) == len(img_ids) == 4
    assert len(set(ann_ids)) == len(ann_ids) > 0
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    for im in data["images"]:
        with Image.open(tmp_path / "coco" / im["file_name"]) as pic:
            assert pic.size == (im["width"], im["height"]) == (80, 64)
    for a in data["annotations"]:
        assert a["image_id"] in sizes and a["category_id"] in cats
        x, y, w, h = a["bbox"]
        W, H = sizes[a["image_id"]]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= W + 1e-3 and y + h <= H + 1e-3
        assert math.isclose(a["area"], w * h, rel_tol=1e-3, abs_tol=1e-2)
        assert a["iscrowd"] == 0 and len(a["ambiguous"]) == 4 and a["effect"] in EFFECTS
    # the same seed writes the same annotations
    path2 = write_coco(tmp_path / "coco2", n=4, seed=5, size=(64, 80), num_classes=3)
    with open(path2) as f:
        assert json.load(f)["annotations"] == data["annotations"]


# --------------------------------------------------------------------------- metrics
def test_match_detections_greedy_by_score_and_class():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    gl = torch.tensor([0, 1])
    det = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    dl = torch.tensor([0, 0, 0, 1])  # the third detection has the wrong class
    sc = torch.tensor([0.5, 0.9, 0.8, 0.7])
    dm, gm = match_detections(det, sc, dl, gt, gl)
    assert dm.tolist() == [-1, 0, -1, -1]  # the higher-scoring duplicate takes GT 0
    assert gm.tolist() == [1, -1]
    dm, gm = match_detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), gt, gl)
    assert gm.tolist() == [-1, -1]


def test_average_precision():
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == pytest.approx(1.0)
    assert average_precision(np.array([0.9, 0.8]), np.array([False, True]), 2) == pytest.approx(0.25)
    assert average_precision(np.array([]), np.array([], dtype=bool), 3) == 0.0
    assert math.isnan(average_precision(np.array([0.5]), np.array([False]), 0))


# --------------------------------------------------------------------------- the demo, end to end
@pytest.fixture
def one_thread():
    """The tiny model gains nothing from intra-op threads, and on a busy (shared, oversubscribed) machine
    torch's thread pool can make it many times slower; the demo itself keeps torch's default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_run_demo_tiny(tmp_path, one_thread):
    out = tmp_path / "demo"
    result = run_demo(out, steps=3, image_size=128, batch_size=2, train_images=6, val_images=4, warmup=2,
                      num_pictures=2, progress=False)
    paths = result["paths"]
    assert (out / "metrics.json").is_file() and paths["metrics"] == str(out / "metrics.json")
    assert (out / "loss_curves.png").stat().st_size > 0
    assert len(paths["detections"]) == 2
    for p in paths["detections"]:
        assert p.endswith(".png") and (out / p.split("/")[-1]).stat().st_size > 0
    # Fig. 3 pictures exist even for an untrained model (drawn from a low-threshold pass if need be)
    assert set(paths["distributions"]) <= {"blurred", "sharp"} and paths["distributions"]
    for p in paths["distributions"].values():
        with Image.open(p) as im:
            assert im.size[0] > 0
    with open(out / "metrics.json") as f:
        saved = json.load(f)
    assert saved["metrics"] == json.loads(json.dumps(result["metrics"]))
    m = saved["metrics"]
    for key in ("recall@0.5", "AP@0.5", "precision@0.5_s0.3", "recall@0.5_s0.3", "recall@0.5_sharp",
                "recall@0.5_ambiguous", "num_gt", "num_images", "edge_std_bins_sharp", "edge_std_bins_ambiguous"):
        assert key in m
    assert m["num_images"] == 4 and m["num_gt"] > 0
    assert 0.0 <= m["recall@0.5"] <= 1.0 and 0.0 <= m["AP@0.5"] <= 1.0
    for name in ("loss", "loss_qfl", "loss_bbox", "loss_dfl"):
        assert math.isfinite(saved["final_losses"][name]) and math.isfinite(saved["initial_losses"][name])
    assert saved["settings"]["steps"] == 3 and saved["timings_s"]["total"] > 0
