"""The synthetic data generator, the COCO writer, the demo's metrics, and a tiny end-to-end demo run."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gfldet.data import EFFECTS, class_names, make_sample, make_split, write_coco
from gfldet.demo import demo_data, load_split, run_demo


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
    # image i is make_split's sample i
    for im, s in zip(data["images"], make_split(4, seed=5, size=(64, 80), num_classes=3)):
        with Image.open(tmp_path / "coco" / im["file_name"]) as pic:
            assert np.array_equal(np.asarray(pic.convert("RGB")), s["image"])


def test_demo_config_is_the_documented_recipe(tmp_path):
    """docs/demo.md and the README state this recipe and the AP it reaches; a change here must re-measure them."""
    from gfldet.demo import demo_config

    data = {"train_ann": "a.json", "train_images": "a", "val_ann": "b.json", "val_images": "b"}
    cfg = demo_config(data, tmp_path / "run")
    m, t = cfg.model, cfg.train
    assert (m.arch, m.base_channels, m.norm_eval, m.frozen_stages) == ("gfl_resnet18_fpn", 24, False, 0)
    assert (m.fpn_channels, m.head_channels, m.stacked_convs) == (64, 64, 2)
    assert (t.epochs, t.batch_size, t.lr, t.schedule, t.warmup_iters, t.grad_clip, t.norm_init_batches) == (5, 8, 0.06, "cosine", 50, 35.0, 0)
    assert cfg.input.min_size == cfg.input.max_size == 256
    from gfldet.demo import demo_epochs
    from gfldet.engine.amp import cpu_has_native_bf16

    native = cpu_has_native_bf16()
    assert t.channels_last and t.amp == native and demo_epochs("cpu") == (9 if native else 6)
    mc = cfg.model_config(num_classes=3)
    assert mc.base_channels == 24 and mc.stacked_convs == 2


def test_write_coco_with_workers_writes_the_same_files(tmp_path):
    one = write_coco(tmp_path / "one", n=11, seed=2, size=(48, 48), num_classes=3)
    three = write_coco(tmp_path / "three", n=11, seed=2, size=(48, 48), num_classes=3, workers=3)
    assert Path(one).read_bytes() == Path(three).read_bytes()
    for i in range(11):
        assert (tmp_path / "one" / "images" / f"{i:06d}.png").read_bytes() == (tmp_path / "three" / "images" / f"{i:06d}.png").read_bytes()
    with pytest.raises(ValueError, match="workers"):
        write_coco(tmp_path / "bad", n=2, seed=0, workers=0)


# --------------------------------------------------------------------------- the demo, end to end
@pytest.fixture
def one_thread():
    """The tiny model gains nothing from intra-op threads, and on a busy (shared, oversubscribed) machine
    torch's thread pool can make it many times slower; the demo itself keeps torch's default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_demo_data_is_cached_and_complete(tmp_path):
    a = demo_data(tmp_path, train_images=3, val_images=2, image_size=64)
    stamp = {p: p.stat().st_mtime_ns for p in Path(a["root"]).rglob("*") if p.is_file()}
    b = demo_data(tmp_path, train_images=3, val_images=2, image_size=64)
    assert a == b
    assert {p: p.stat().st_mtime_ns for p in Path(a["root"]).rglob("*") if p.is_file()} == stamp  # reused, not rewritten
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    split = load_split(a["val_ann"], a["val_images"])
    assert len(split) == 2 and all(s["image"].shape == (64, 64, 3) for s in split)
    assert all(s["ambiguous"].shape == (len(s["boxes"]), 4) for s in split)
    c = demo_data(tmp_path, train_images=4, val_images=2, image_size=64)  # other settings: another folder
    assert c["root"] != a["root"]


def test_run_demo_tiny(tmp_path, one_thread):
    out = tmp_path / "demo"
    result = run_demo(out, epochs=1, image_size=128, batch_size=2, train_images=4, val_images=3, num_pictures=2,
                      cache_dir=tmp_path / "cache", progress=False)
    paths = result["paths"]
    assert paths["out_dir"] == str(out) and (out / "metrics.json").is_file()
    for name in ("last.pt", "config.yaml", "metrics.jsonl", "loss_curves.png", "pr_curve.png", "per_class_ap.md"):
        assert (out / name).stat().st_size > 0, name
    assert len(paths["detections"]) == 2 and all(Path(p).stat().st_size > 0 for p in paths["detections"])
    # Fig. 3 pictures exist even for an untrained model (drawn from a low-threshold pass if need be)
    assert paths["distributions"] and set(paths["distributions"]) <= {"blurred", "sharp"}
    for p in paths["distributions"].values():
        with Image.open(p) as im:
            assert im.size[0] > 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["coco"] == json.loads(json.dumps(result["coco"]))
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert key in saved["coco"] and (saved["coco"][key] is None or 0.0 <= saved["coco"][key] <= 1.0)
    assert set(saved["uncertainty"]) >= {"spearman_std_vs_err", "mean_std_px_sharp", "mean_std_px_ambiguous"}
    for name in ("loss", "loss_qfl", "loss_bbox", "loss_dfl"):
        assert math.isfinite(saved["final_losses"][name])
    assert saved["settings"]["iterations"] == 2 and saved["timings_s"]["total"] > 0
    # a second run never overwrites the first
    again = run_demo(out, epochs=1, image_size=128, batch_size=2, train_images=4, val_images=3, num_pictures=0,
                     cache_dir=tmp_path / "cache", progress=False)
    assert again["paths"]["out_dir"] == f"{out}-1"
    assert json.loads((out / "metrics.json").read_text()) == saved


def test_demo_folders_are_claimed_atomically(tmp_path):
    from gfldet.data.folders import claim_dir

    a, b = claim_dir(tmp_path / "demo"), claim_dir(tmp_path / "demo")
    assert (a, b) == (tmp_path / "demo", Path(f"{tmp_path / 'demo'}-1"))  # even an empty claimed folder is taken
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert claim_dir(tmp_path / "mine") == Path(f"{tmp_path / 'mine'}-1")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_damaged_demo_cache_is_regenerated_and_kept_aside(tmp_path):
    a = demo_data(tmp_path, train_images=2, val_images=2, image_size=64)
    root = Path(a["root"])
    (root / "done.json").unlink()
    Path(a["val_ann"]).unlink()
    b = demo_data(tmp_path, train_images=2, val_images=2, image_size=64)
    assert b == a and Path(b["val_ann"]).is_file() and (root / "done.json").is_file()
    aside = [p for p in tmp_path.iterdir() if ".incomplete" in p.name]
    assert len(aside) == 1 and (aside[0] / "train" / "annotations.json").is_file()  # set aside, not deleted
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
