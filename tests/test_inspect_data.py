"""`gfldet inspect-data` / gfldet.data.inspect on small COCO files of known geometry (no image is decoded)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gfldet.cli import main
from gfldet.config import load_config
from gfldet.data.coco import DatasetError
from gfldet.data.inspect import (REG_MAX_CHOICES, format_report, inspect_dataset, plot_sizes, summary_line,
                                 train_warnings)


@pytest.fixture(autouse=True)
def one_thread():
    """The assignment works on small tensors that gain little from intra-op threads, and on a busy (shared,
    oversubscribed) machine torch's thread pool makes it several times slower (as tests/test_demo.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# 640x480 images with the input size set to 480x640: the resize is the identity, pixels are network pixels
IDENTITY = ["input.min_size=480", "input.max_size=640"]


def write_coco(root, boxes, *, size=(640, 480), categories=None, n_images=None, name="ann.json"):
    """``boxes``: per image a list of ``(x, y, w, h)`` or ``(x, y, w, h, category_id)``; image files are empty
    (only their existence is checked)."""
    w, h = size
    n_images = len(boxes) if n_images is None else n_images
    images_dir = root / "images"
    images_dir.mkdir(exist_ok=True)
    images, anns = [], []
    for i in range(n_images):
        images.append({"id": 1000 + i, "file_name": f"{i:05d}.jpg", "width": w, "height": h})
        (images_dir / f"{i:05d}.jpg").touch()
        for b in (boxes[i] if i < len(boxes) else []):
            cid = b[4] if len(b) > 4 else 1
            anns.append({"id": len(anns) + 1, "image_id": 1000 + i, "category_id": cid, "bbox": list(b[:4]),
                         "iscrowd": 0})
    cats = categories or [{"id": 1, "name": "thing"}]
    path = root / name
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path, images_dir


def test_tiny_and_thin_boxes_get_no_atss_positive(tmp_path):
    normal = (100, 100, 64, 64)
    tiny = (9, 9, 3, 3)  # no anchor centre (multiples of 8 px) strictly inside: cannot be positive at any level
    thin = (201, 100, 1.5, 200)  # 1.5 px wide between two anchor columns: also degenerate (a side < 2 px)
    ann, images = write_coco(tmp_path, [[normal, tiny], [thin, (300, 200, 120, 90)]])
    r = inspect_dataset(ann, images, load_config(None, IDENTITY))
    a = r["assignment"]
    assert a["ground_truths"] == 4 and a["images"] == 2 and not a["sampled"]
    assert a["without_positive"] == 2
    assert math.isclose(a["fraction_without_positive"], 0.5)
    assert sorted(e.split("box ")[1] for e in a["examples"]) == ["1.5x200.0 px", "3.0x3.0 px"]
    assert r["sizes"]["degenerate"] == 1
    assert r["recommendations"]["input_size"]["change"]  # half of the GTs unlearnable at this size
    w = train_warnings(r)
    assert any("no ATSS positive" in s for s in w)
    json.dumps(r)  # serialisable


def test_edges_beyond_small_reg_max_and_recommended_reg_max_covers_them(tmp_path):
    big = (20, 20, 600, 440)
    ann, images = write_coco(tmp_path, [[big], [(50, 60, 24, 24)]])  # the small one: edges <= 3 strides at P3
    r = inspect_dataset(ann, images, load_config(None, IDENTITY + ["model.reg_max=4"]))
    reg = r["reg_max"]
    assert reg["reg_max"] == 4 and reg["edges_beyond"] > 0
    assert reg["gts_with_edge_beyond"] == 1 and math.isclose(reg["fraction_gts_with_edge_beyond"], 0.5)
    assert 0 < reg["fraction_edges_beyond"] <= 1
    rec = r["recommendations"]["reg_max"]
    assert rec["change"] and rec["value"] in REG_MAX_CHOICES
    # the recommended value represents every edge of this data set; the next smaller choice would not be needed
    assert reg["edge_bins"]["p100"] < rec["value"] - 0.1
    assert any("beyond reg_max=4" in s for s in train_warnings(r))
    # at the default reg_max (16) nothing is clamped and there is no such warning
    r16 = inspect_dataset(ann, images, load_config(None, IDENTITY))
    assert r16["reg_max"]["edges_beyond"] == 0
    assert not any("reg_max" in s for s in train_warnings(r16))


def test_long_thin_box_needs_a_larger_reg_max(tmp_path):
    # 24 x 460 px: its size puts it on a fine level, where its long edges are many strides away
    ann, images = write_coco(tmp_path, [[(300, 10, 24, 460)]])
    r = inspect_dataset(ann, images, load_config(None, IDENTITY))
    reg, rec = r["reg_max"], r["recommendations"]["reg_max"]
    assert r["assignment"]["without_positive"] == 0
    assert reg["edge_bins"]["p100"] > 8
    assert rec["value"] > 8 and reg["edge_bins"]["p100"] < rec["value"] - 0.1
    smaller = [c for c in reg["coverage"] if c["reg_max"] < rec["value"]]
    assert all(c["fraction_beyond"] > 0.005 for c in smaller)


def test_instances_per_class_with_noncontiguous_category_ids(tmp_path):
    cats = [{"id": 90, "name": "zebra"}, {"id": 3, "name": "car"}, {"id": 17, "name": "cat"}]
    boxes = [[(10, 10, 50, 50, 90), (100, 100, 40, 40, 3), (200, 200, 60, 30, 90)], [(5, 5, 80, 80, 90)], []]
    ann, images = write_coco(tmp_path, boxes, categories=cats)
    r = inspect_dataset(ann, images, load_config(None, IDENTITY))
    by_id = {c["id"]: c for c in r["classes"]}
    assert [c["id"] for c in r["classes"]] == [3, 17, 90]  # sorted by id: labels 0..C-1
    assert (by_id[90]["name"], by_id[90]["instances"]) == ("zebra", 3)
    assert (by_id[3]["name"], by_id[3]["instances"]) == ("car", 1)
    assert by_id[17]["instances"] == 0
    d = r["dataset"]
    assert (d["images"], d["annotations"], d["images_without_annotations"], d["categories"]) == (3, 4, 1, 3)
    w = train_warnings(r)
    assert any("fewer than 10 instances" in s and "cat (id 17): 0" in s for s in w)
    assert not any("have no annotations" in s for s in w)  # 1 of 3 is below 50%
    text = format_report(r)
    assert "zebra" in text and "id    90" in text


def test_box_sizes_levels_and_resize(tmp_path):
    # 1000x500 image, input 400x800: scale min(400/500, 800/1000) = 0.8
    boxes = [[(0, 0, 80, 80), (100, 100, 320, 320), (500, 200, 20, 80)]]
    ann, images = write_coco(tmp_path, boxes, size=(1000, 500))
    r = inspect_dataset(ann, images, load_config(None, ["input.min_size=400", "input.max_size=800"]))
    s = r["sizes"]
    assert math.isclose(s["image_scale"]["p50"], 0.8)
    assert math.isclose(s["sqrt_area_px"]["p100"], 256.0, rel_tol=1e-5)  # 320 * 0.8
    assert math.isclose(s["sqrt_area_px"]["p0"], 32.0, rel_tol=1e-5)  # sqrt(16 * 64)
    assert math.isclose(s["aspect_ratio_h_over_w"]["p100"], 4.0, rel_tol=1e-5)
    nearest = {lv["level"]: lv["nearest_boxes"] for lv in r["levels"]}
    # 64 px -> P3 (anchor 64), 256 px -> P5 (anchor 256), 32 px -> P3
    assert nearest == {"P3": 2, "P4": 0, "P5": 1, "P6": 0, "P7": 0}
    assert [lv["anchor_size"] for lv in r["levels"]] == [64, 128, 256, 512, 1024]
    assert sum(s["sqrt_area_hist"]["counts"]) == 3 and sum(s["aspect_hist"]["counts"]) == 3


def test_recommended_input_size_grows_when_objects_are_tiny(tmp_path):
    small_cfg = load_config(None, ["input.min_size=320", "input.max_size=533"])
    rng = np.random.default_rng(0)

    def boxes(side):
        return [[(float(x), float(y), side, side) for x, y in rng.uniform(20, 400, (4, 2))] for _ in range(6)]

    normal_dir, tiny_dir = tmp_path / "normal", tmp_path / "tiny"
    normal_dir.mkdir()
    tiny_dir.mkdir()
    ann_n, im_n = write_coco(normal_dir, boxes(90.0))
    ann_t, im_t = write_coco(tiny_dir, boxes(7.0))
    rn = inspect_dataset(ann_n, im_n, small_cfg)["recommendations"]["input_size"]
    rep_t = inspect_dataset(ann_t, im_t, small_cfg)
    rt = rep_t["recommendations"]["input_size"]
    assert not rn["change"] and (rn["min_size"], rn["max_size"]) == (320, 533) and "at the current 320x533" in rn["reason"]
    assert rt["change"] and rt["min_size"] > 320 and rt["max_size"] > 533
    tried = {c["min_size"]: c for c in rt["candidates"]}
    assert tried[320]["median_px"] < 16
    assert tried[rt["min_size"]]["median_px"] >= 16
    assert any("tiny boxes" in s for s in train_warnings(rep_t))


def test_sampling_is_reported_and_counts_use_all_images(tmp_path):
    boxes = [[(10.0 * i % 500, 40, 50, 60)] for i in range(30)]
    ann, images = write_coco(tmp_path, boxes, n_images=40)
    r = inspect_dataset(ann, images, load_config(None, IDENTITY), max_images=10)
    a = r["assignment"]
    assert a["sampled"] and a["images"] == 10 and a["images_total"] == 40
    assert r["dataset"]["annotations"] == 30 and r["sizes"]["boxes"] == 30
    assert a["ground_truths"] <= 10
    assert "sample" in format_report(r) and "sample" in summary_line(r)
    with pytest.raises(ValueError, match="max_images"):
        inspect_dataset(ann, images, load_config(None, IDENTITY), max_images=0)


def test_mostly_empty_images_warn(tmp_path):
    ann, images = write_coco(tmp_path, [[(10, 10, 100, 100)] * 1], n_images=4)
    r = inspect_dataset(ann, images, load_config(None, IDENTITY))
    assert r["dataset"]["images_without_annotations"] == 3
    assert any("have no annotations" in s for s in train_warnings(r))


def test_plot_sizes_from_boxes_and_report(tmp_path):
    ann, images = write_coco(tmp_path, [[(10, 10, 100, 50), (200, 200, 30, 90)]])
    r = inspect_dataset(ann, images, load_config(None, IDENTITY))
    p1 = plot_sizes(r, tmp_path / "a" / "sizes.png")
    p2 = plot_sizes(np.array([[0, 0, 10, 20], [5, 5, 300, 100]], dtype=np.float32), tmp_path / "b.png")
    for p in (p1, p2):
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_prints_report_and_writes_files(tmp_path, capsys):
    ann, images = write_coco(tmp_path, [[(100, 100, 64, 64)], [(10, 10, 300, 200)]])
    out = tmp_path / "report"
    argv = ["inspect-data", str(ann), "--images", str(images), "--out", str(out)] + [
        x for kv in IDENTITY for x in ("--set", kv)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "GT boxes without a positive: 0 of 2" in text and "recommendations:" in text and "data: 2 images" in text
    saved = json.loads((out / "inspect.json").read_text())
    assert saved["input"] == {"min_size": 480, "max_size": 640, "size_divisor": 32, "multiscale": None}
    assert (out / "sizes.png").read_bytes()[:4] == b"\x89PNG"
    before = (out / "inspect.json").read_bytes()
    assert main(argv) == 2  # refuses to replace the report
    err = capsys.readouterr().err
    assert "already holds inspect.json" in err and "--force" in err
    assert (out / "inspect.json").read_bytes() == before
    assert main(argv + ["--force"]) == 0
    # a config key that does not exist is a message
    assert main(["inspect-data", str(ann), "--images", str(images), "--set", "input.nope=1"]) == 2
    assert "input.nope" in capsys.readouterr().err


def test_cli_malformed_annotation_file_names_the_file(tmp_path, capsys):
    _, images = write_coco(tmp_path, [[(1, 1, 5, 5)]])
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [}')
    assert main(["inspect-data", str(bad), "--images", str(images)]) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err and "not valid JSON" in err
    # a bad entry names the file, the annotation and the value (CocoDetection's checks)
    data = json.loads((tmp_path / "ann.json").read_text())
    data["annotations"][0]["bbox"] = [1, 2, "x", 4]
    bad.write_text(json.dumps(data))
    assert main(["inspect-data", str(bad), "--images", str(images)]) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err and "annotations[0] (id 1" in err and "'x'" in err
    with pytest.raises(DatasetError, match="image folder"):
        inspect_dataset(tmp_path / "ann.json", tmp_path / "nowhere")
    assert main(["inspect-data", str(tmp_path / "missing.json"), "--images", str(images)]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_ten_thousand_annotations(tmp_path):
    """Scale: 10k annotations over 2000 images through the whole report (its time is not asserted)."""
    rng = np.random.default_rng(1)
    n_img, n_ann = 2000, 10_000
    img_of = np.sort(rng.integers(0, n_img, n_ann))
    side = np.exp(rng.uniform(np.log(6), np.log(400), n_ann))
    ar = np.exp(rng.normal(0, 0.5, n_ann))
    bw, bh = np.minimum(side / np.sqrt(ar), 630), np.minimum(side * np.sqrt(ar), 470)
    x, y = rng.uniform(0, 640 - bw), rng.uniform(0, 480 - bh)
    boxes = [[] for _ in range(n_img)]
    for k in range(n_ann):
        boxes[img_of[k]].append((round(x[k], 2), round(y[k], 2), round(bw[k], 2), round(bh[k], 2), int(1 + k % 5)))
    cats = [{"id": i, "name": f"c{i}"} for i in range(1, 6)]
    ann, images = write_coco(tmp_path, boxes, categories=cats)
    r = inspect_dataset(ann, images, load_config(None, []))
    assert r["dataset"]["annotations"] == n_ann and r["dataset"]["images"] == n_img
    assert r["assignment"]["ground_truths"] == n_ann and not r["assignment"]["sampled"]
    assert sum(c["instances"] for c in r["classes"]) == n_ann
    assert sum(lv["nearest_boxes"] for lv in r["levels"]) == n_ann
    assert 0 <= r["assignment"]["fraction_without_positive"] < 0.2
    assert r["reg_max"]["positive_edges"] == 4 * r["assignment"]["positives"]
    json.dumps(r)


@pytest.mark.parametrize("arch", ["gfl_mobilenet_v2_fpn", "gfl_shufflenet_v2_x1_0_fpn"])
def test_cli_inspects_for_a_light_preset(tmp_path, capsys, arch):
    ann, images = write_coco(tmp_path, [[(100, 100, 64, 64)], [(10, 10, 300, 200), (300, 300, 4, 4)]])
    argv = ["inspect-data", str(ann), "--images", str(images), "--set", f"model.arch={arch}"] + [
        x for kv in IDENTITY for x in ("--set", kv)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "GT boxes without a positive: 1 of 3" in text and "recommendations:" in text


def test_the_runs_strides_and_assigner_are_the_reports(tmp_path):
    """The report assigns with the run's own prior generator and assigner (not the class defaults): strides from
    16, a size divisor of 64, FCOS's assigner; its positives are those the criterion's assigner makes."""
    from gfldet.models.assemble import assigner_part, prior_part

    boxes = [[(100, 100, 64, 64), (300, 200, 150, 120), (20, 300, 12, 12)], [(10, 10, 300, 200), (400, 50, 30, 90)]]
    ann, images = write_coco(tmp_path, boxes)
    sets = IDENTITY + ["model.strides=[16,32,64,128,256]", "model.size_divisor=64", "model.assigner=fcos"]
    cfg = load_config(None, sets)
    r = inspect_dataset(ann, images, cfg)
    assert r["model"]["strides"] == [16, 32, 64, 128, 256] and r["input"]["size_divisor"] == 64
    assert [lv["stride"] for lv in r["levels"]] == [16, 32, 64, 128, 256]
    assert r["assignment"]["assigner"] == "fcos" and "FCOS positives" in format_report(r)
    # the same count from the model's own parts on the same anchors (640x480 padded to 640x512 by 64)
    mc = cfg.model_config(num_classes=1)
    fm = [(math.ceil(512 / s), math.ceil(640 / s)) for s in mc.strides]
    priors = prior_part(mc)(fm, torch.device("cpu"))
    valid = prior_part(mc).valid(fm, [(512, 640)] * 2, torch.device("cpu"))
    gts = [torch.tensor([[x, y, x + w, y + h] for x, y, w, h in b], dtype=torch.float32) for b in boxes]
    res = assigner_part(mc)(priors, valid, gts, None)
    assert r["assignment"]["positives"] == int(res.positive.sum())
    atss = inspect_dataset(ann, images, load_config(None, sets[:-1]))
    assert atss["assignment"]["assigner"] == "atss" and atss["assignment"]["positives"] != r["assignment"]["positives"]
