"""COCO evaluation: result conversion, pycocotools metrics (perfect / empty / shifted / mislabelled predictions),
report files, the dataset-level loop (with a fake model) and its DDP sharding."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from gfldet.engine.evaluate import METRIC_KEYS, coco_metrics, detections_to_coco, evaluate, format_metrics

CAT_IDS = [3, 7, 11]  # label -> COCO category id (non-contiguous); 11 ("bird") has no ground truth
CLASSES = ["cat", "dog", "bird"]
SIZES = {1: (120, 160), 2: (200, 240), 5: (150, 150)}  # image id -> (H, W)
# (image id, category id, xyxy, iscrowd): small (< 32^2), medium and large (> 96^2) boxes
OBJECTS = [
    (1, 3, (10, 10, 30, 30), 0),       # small 20x20
    (1, 7, (50, 40, 110, 100), 0),     # medium 60x60
    (2, 3, (20, 30, 140, 150), 0),     # large 120x120
    (2, 7, (150, 10, 170, 24), 0),     # small 20x14
    (2, 7, (160, 120, 230, 190), 0),   # medium 70x70
    (2, 3, (0, 160, 40, 200), 1),      # crowd region: ignored by COCO
    (5, 7, (5, 5, 145, 145), 0),       # large 140x140
    (5, 3, (100, 100, 130, 125), 0),   # small-ish 30x25
]


def make_gt() -> dict:
    images = [{"id": i, "height": h, "width": w, "file_name": f"{i}.jpg"} for i, (h, w) in SIZES.items()]
    anns = []
    for n, (img, cat, (x1, y1, x2, y2), crowd) in enumerate(OBJECTS, start=1):
        anns.append({"id": n, "image_id": img, "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "area": float((x2 - x1) * (y2 - y1)), "iscrowd": crowd})
    cats = [{"id": c, "name": n} for c, n in zip(CAT_IDS, CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}


def gt_detections(shift: float = 0.0, image_ids=None) -> dict[int, dict[str, torch.Tensor]]:
    """Per image id: the non-crowd ground truth as model output (labels 0-based), boxes shifted by ``shift``."""
    out = {}
    for img in image_ids or SIZES:
        objs = [o for o in OBJECTS if o[0] == img and not o[3]]
        boxes = torch.tensor([o[2] for o in objs], dtype=torch.float32) + shift
        labels = torch.tensor([CAT_IDS.index(o[1]) for o in objs], dtype=torch.int64)
        out[img] = {"boxes": boxes, "scores": torch.ones(len(objs)), "labels": labels,
                    "distributions": torch.full((len(objs), 4, 8), 1 / 8)}
    return out


def results_from(dets: dict, cat_ids=CAT_IDS) -> list[dict]:
    ids = sorted(dets)
    return detections_to_coco(ids, [dets[i] for i in ids], cat_ids)


class TinyDataset:
    """Stand-in for gfldet.data.coco: (image, target) with the image id written into pixel (0, 0, 0)."""

    def __init__(self, ann_file: str, image_ids=None):
        self.ann_file = ann_file
        self.cat_ids = list(CAT_IDS)
        self.classes = list(CLASSES)
        self.ids = list(image_ids or SIZES)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        img_id = self.ids[i]
        h, w = SIZES[img_id]
        image = torch.zeros(3, h, w, dtype=torch.uint8)
        image[0, 0, 0] = img_id
        objs = [o for o in OBJECTS if o[0] == img_id]
        target = {"boxes": torch.tensor([o[2] for o in objs], dtype=torch.float32),
                  "labels": torch.tensor([CAT_IDS.index(o[1]) for o in objs]),
                  "iscrowd": torch.tensor([o[3] for o in objs]), "image_id": img_id,
                  "orig_size": torch.tensor([h, w])}
        return image, target


class FakeDetector(nn.Module):
    """Returns the stored detections of the image whose id is written in pixel (0, 0, 0)."""

    def __init__(self, dets: dict):
        super().__init__()
        self.dets = dets
        self.weight = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, images):
        assert not self.training and torch.is_inference_mode_enabled()
        self.calls += 1
        return [{k: v.clone() for k, v in self.dets[int(img[0, 0, 0])].items()} for img in images]


@pytest.fixture
def gt_file(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(make_gt()))
    return str(path)


# --------------------------------------------------------------------------- conversion
def test_detections_to_coco_xyxy_to_xywh_and_category_mapping():
    det = {"boxes": torch.tensor([[10.0, 20.0, 40.5, 60.25], [1.23456, 2.0, 3.5, 4.0]]),
           "scores": torch.tensor([0.9, 0.1234567]), "labels": torch.tensor([1, 0])}
    res = detections_to_coco([42], [det], cat_ids=[3, 7])
    assert res == [
        {"image_id": 42, "category_id": 7, "bbox": [10.0, 20.0, 30.5, 40.25], "score": pytest.approx(0.9)},
        {"image_id": 42, "category_id": 3, "bbox": [1.235, 2.0, 2.265, 2.0], "score": 0.12346},
    ]
    assert all(type(v) is float for r in res for v in r["bbox"]) and type(res[0]["image_id"]) is int
    # numpy input, no mapping, empty image, json-serialisable
    np_det = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, dtype=np.int64)}
    assert detections_to_coco([1], [np_det], [3]) == []
    assert detections_to_coco([torch.tensor(5)], [det], None)[0]["category_id"] == 1
    json.dumps(res)
    # bf16 (amp) outputs are converted
    bf = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in det.items()}
    assert detections_to_coco([42], [bf], [3, 7])[0]["bbox"] == [10.0, 20.0, 30.5, 40.25]
    with pytest.raises(ValueError, match="labels"):
        detections_to_coco([1], [det], cat_ids=[3])
    with pytest.raises(ValueError, match="image ids"):
        detections_to_coco([1, 2], [det], cat_ids=[3, 7])


# --------------------------------------------------------------------------- metrics
def test_perfect_predictions_give_ap_one(capsys, caplog):
    with caplog.at_level(logging.INFO, logger="gfldet.engine.evaluate"):
        m = coco_metrics(make_gt(), results_from(gt_detections()), class_names=CLASSES, cat_ids=CAT_IDS)
    assert set(m) == set(METRIC_KEYS) | {"per_class"}
    for k in METRIC_KEYS:
        assert m[k] == pytest.approx(1.0), k
    assert m["per_class"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0), "bird": None}
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed ...
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in caplog.text  # ... and its table logged


def test_empty_predictions_give_zero(tmp_path, gt_file):
    m = coco_metrics(gt_file, [], class_names=CLASSES, cat_ids=CAT_IDS, out_dir=tmp_path / "empty")
    assert all(m[k] == 0.0 for k in METRIC_KEYS)
    assert m["per_class"] == {"cat": 0.0, "dog": 0.0, "bird": None}
    assert os.path.isfile(tmp_path / "empty" / "pr_curve.png")


def test_shifted_boxes_give_partial_ap():
    m = coco_metrics(make_gt(), results_from(gt_detections(shift=3.0)), CLASSES, CAT_IDS)
    assert 0.0 < m["AP"] < 1.0
    assert m["AP50"] == pytest.approx(1.0)  # a 3 px shift keeps every IoU above 0.5 ...
    assert m["APs"] < m["APl"]  # ... and hurts small boxes most
    assert 0.0 < m["per_class"]["cat"] < 1.0


def test_label_to_category_mapping_is_used():
    dets = gt_detections()
    good = coco_metrics(make_gt(), results_from(dets, CAT_IDS), CLASSES, CAT_IDS)
    swapped = coco_metrics(make_gt(), results_from(dets, [7, 3, 11]), CLASSES, CAT_IDS)
    as_labels = coco_metrics(make_gt(), results_from(dets, None), CLASSES, CAT_IDS)  # 0/1 are not category ids
    assert good["AP"] == pytest.approx(1.0)
    assert swapped["AP"] == 0.0 and as_labels["AP"] == 0.0


def test_defaults_from_ground_truth_and_image_subset():
    gt = make_gt()
    # without cat_ids / names: every GT category, by id, named from the json
    m = coco_metrics(gt, results_from(gt_detections()))
    assert list(m["per_class"]) == ["cat", "dog", "bird"] and m["AP"] == pytest.approx(1.0)
    # predictions for images 1 and 2 only: AP < 1 over all images, 1 over those two
    part = results_from(gt_detections(image_ids=[1, 2]))
    assert coco_metrics(gt, part, CLASSES, CAT_IDS)["AP"] < 1.0
    m12 = coco_metrics(gt, part, CLASSES, CAT_IDS, img_ids=[1, 2])
    assert m12["AP"] == pytest.approx(1.0)
    assert m12["APl"] == pytest.approx(1.0)  # image 5's large box is out of scope
    # an area range without ground truth is undefined (None), not 0
    only_small = coco_metrics(gt, part, CLASSES, CAT_IDS, img_ids=[1])
    assert only_small["APl"] is None and only_small["APs"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="class names"):
        coco_metrics(gt, part, ["a"], CAT_IDS)


def test_report_files(tmp_path):
    from PIL import Image

    out = tmp_path / "report"
    coco_metrics(make_gt(), results_from(gt_detections(shift=2.0)), CLASSES, CAT_IDS, out_dir=out)
    with Image.open(out / "pr_curve.png") as im:
        im.verify()
    with Image.open(out / "pr_curve.png") as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    md = (out / "per_class_ap.md").read_text()
    assert md.startswith("| class |") and "| cat | 3 |" in md and "| dog | 7 |" in md and "| bird | 11 | 0 | - |" in md


def test_format_metrics():
    m = coco_metrics(make_gt(), results_from(gt_detections()), CLASSES, CAT_IDS)
    m["results"] = 7
    text = format_metrics(m)
    for k in METRIC_KEYS + ("cat", "dog", "bird", "detections"):
        assert k in text
    assert "1.000" in text and "-" in text.splitlines()[-1]


# --------------------------------------------------------------------------- evaluate
def test_evaluate_end_to_end(tmp_path, gt_file):
    model = FakeDetector(gt_detections())
    model.train()
    m = evaluate(model, TinyDataset(gt_file), batch_size=2, progress=False, out_dir=tmp_path / "eval")
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AR100"] == pytest.approx(1.0)
    assert m["results"] == sum(not o[3] for o in OBJECTS) and model.calls == 2  # 3 images in batches of 2
    assert model.training  # mode restored
    dets = json.loads((tmp_path / "eval" / "detections.json").read_text())
    assert len(dets) == m["results"] and {d["category_id"] for d in dets} == {3, 7}
    assert {"pr_curve.png", "per_class_ap.md", "detections.json"} <= set(os.listdir(tmp_path / "eval"))


def test_evaluate_amp_autocasts_and_accepts_low_precision_outputs(gt_file):
    class AmpDetector(FakeDetector):
        def forward(self, images):
            assert torch.is_autocast_enabled("cpu")
            return [{k: (v.bfloat16() if v.is_floating_point() else v) for k, v in d.items()}
                    for d in super().forward(images)]

    m = evaluate(AmpDetector(gt_detections()), TinyDataset(gt_file), progress=False, amp=True)
    assert m["AP"] == pytest.approx(1.0)  # the GT boxes are exact in bfloat16


def test_evaluate_on_a_subset_of_the_json_images(gt_file):
    m = evaluate(FakeDetector(gt_detections()), TinyDataset(gt_file, image_ids=[2, 5]), progress=False)
    assert m["AP"] == pytest.approx(1.0)
    m = evaluate(FakeDetector(gt_detections(shift=4.0)), TinyDataset(gt_file, image_ids=[2, 5]), batch_size=1,
                 progress=False)
    assert 0 < m["AP"] < 1


def test_evaluate_distributed_shards_and_gathers_to_rank0(monkeypatch, gt_file, tmp_path):
    """Two ranks simulated in turn (fast): each runs its own images, rank 0 gets both shards' results."""
    from gfldet.engine import distributed

    payloads = {}

    def fake_all_gather(out, obj):
        payloads[rank] = obj
        out[:] = [payloads.get(r) for r in range(2)]

    monkeypatch.setattr(torch.distributed, "all_gather_object", fake_all_gather)
    calls = {}
    for rank in (1, 0):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        model = FakeDetector(gt_detections())
        m = evaluate(model, TinyDataset(gt_file), batch_size=1, progress=False, out_dir=tmp_path / f"r{rank}")
        calls[rank] = model.calls
        if rank == 1:
            assert m is None and not os.path.exists(tmp_path / "r1")  # only rank 0 writes
    assert calls == {0: 2, 1: 1}  # images 0, 2 on rank 0; image 1 on rank 1: no duplicates
    assert payloads[0][0] == [1, 5] and payloads[1][0] == [2]  # (image ids, results) per rank
    assert m["AP"] == pytest.approx(1.0) and m["results"] == sum(not o[3] for o in OBJECTS)


def test_evaluate_runs_a_real_gfl(gt_file):
    """The real detector's outputs go through the whole path (random weights: only the contract is checked)."""
    import gfldet

    torch.manual_seed(0)
    model = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=32, head_channels=32, reg_max=5, min_size=None,
                                    max_size=None, class_names=CLASSES)
    m = evaluate(model, TinyDataset(gt_file), batch_size=2, progress=False)
    assert set(m) == set(METRIC_KEYS) | {"per_class", "results"} and m["results"] >= 0
    assert all(m[k] is None or 0.0 <= m[k] <= 1.0 for k in METRIC_KEYS)
    assert model.training

_DDP_SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys
    import torch.distributed as dist
    rank, world, init, test_file, gt_file, out = sys.argv[1:]
    spec = importlib.util.spec_from_file_location("_test_evaluate", test_file)
    t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t)
    dist.init_process_group("gloo", init_method=init, rank=int(rank), world_size=int(world))
    model = t.FakeDetector(t.gt_detections())
    m = t.evaluate(model, t.TinyDataset(gt_file), batch_size=1, progress=False)
    with open(out, "w") as f:
        json.dump({"metrics": m, "calls": model.calls}, f)
    dist.destroy_process_group()
""")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GFLDET_TEST_DDP"), reason="set GFLDET_TEST_DDP=1 (two processes, ~20 s)")
def test_evaluate_ddp_gloo_two_processes(tmp_path, gt_file):
    """The real thing: two gloo processes (opt-in; starting two Python processes with torch is slow)."""
    script = tmp_path / "ddp_eval.py"
    script.write_text(_DDP_SCRIPT)
    init = f"file://{tmp_path / 'pg'}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", init, os.path.abspath(__file__), gt_file,
                               str(tmp_path / f"out{r}.json")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for r in range(2)]
    logs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    out0, out1 = (json.loads((tmp_path / f"out{r}.json").read_text()) for r in range(2))
    assert out1["metrics"] is None
    assert out0["calls"] == 2 and out1["calls"] == 1  # images 0, 2 on rank 0; image 1 on rank 1
    assert out0["metrics"]["AP"] == pytest.approx(1.0)
    assert out0["metrics"]["results"] == sum(not o[3] for o in OBJECTS)
