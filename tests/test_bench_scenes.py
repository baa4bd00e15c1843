"""The cluttered-scenes generator (bench.synth.scenes): determinism, valid COCO output, its categories,
tight boxes, aspect ratios, and the cached splits."""
from __future__ import annotations

import ast
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from gfldet.data.coco import CocoDetection
from bench.synth.scenes import (CATEGORIES, KINDS, TEXTURES, split_scene, make_scene, scenes_data,
                                          write_scenes_coco)

SIZE = (96, 96)


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def split100(tmp_path_factory) -> Path:
    """A 100-image split at 96 px (written once for the tests below)."""
    folder = tmp_path_factory.mktemp("scenes") / "split"
    write_scenes_coco(folder, n=100, seed=3, size=SIZE, workers=2)
    return folder


def test_same_seed_same_files_for_any_workers(tmp_path):
    one = write_scenes_coco(tmp_path / "one", n=10, seed=5, size=(64, 80), workers=1)
    two = write_scenes_coco(tmp_path / "two", n=10, seed=5, size=(64, 80), workers=2)
    again = write_scenes_coco(tmp_path / "again", n=10, seed=5, size=(64, 80), workers=1)
    other = write_scenes_coco(tmp_path / "other", n=10, seed=6, size=(64, 80), workers=1)
    d1, d2, d3, d4 = (_digests(Path(p).parent) for p in (one, two, again, other))
    assert len(d1) == 11 and d1 == d2 == d3
    assert d4 != d1
    # a longer split starts with the shorter one
    longer = json.loads(Path(write_scenes_coco(tmp_path / "longer", n=12, seed=5, size=(64, 80))).read_text())
    shorter = json.loads(Path(one).read_text())
    assert longer["annotations"][: len(shorter["annotations"])] == shorter["annotations"]


def test_make_scene_is_deterministic():
    a = make_scene(np.random.default_rng(11), SIZE)
    b = make_scene(np.random.default_rng(11), SIZE)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError):
        make_scene(np.random.default_rng(0), (16, 16))
    with pytest.raises(ValueError):
        write_scenes_coco("unused", n=1, seed=0, workers=0)


def test_valid_coco_that_loads_without_warnings(split100, caplog):
    data = json.loads((split100 / "annotations.json").read_text())
    assert len(data["images"]) == 100
    assert {"id", "file_name", "width", "height"} <= set(data["images"][0])
    ann_ids = [a["id"] for a in data["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    for a in data["annotations"]:
        assert {"id", "image_id", "category_id", "bbox", "area", "iscrowd"} <= set(a)
        assert a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3])
    with caplog.at_level(logging.WARNING, logger="gfldet.data.coco"):
        ds = CocoDetection(split100 / "annotations.json", split100)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any(ds.summary["dropped"].values()) and not any(ds.summary["fixed"].values())
    assert ds.summary["annotations"] == len(data["annotations"]) and len(ds) == 100
    image, target = ds[0]
    assert tuple(image.shape) == (3, *SIZE)


def test_categories_are_non_contiguous_and_all_present(split100):
    data = json.loads((split100 / "annotations.json").read_text())
    ids = [c["id"] for c in data["categories"]]
    assert ids == [cid for cid, _ in CATEGORIES] and len(ids) >= 6
    assert ids != list(range(ids[0], ids[0] + len(ids)))  # not contiguous
    assert ids[0] != 0 and ids[0] != 1
    counts = {cid: 0 for cid in ids}
    for a in data["annotations"]:
        counts[a["category_id"]] += 1
    assert all(n >= 5 for n in counts.values()), counts
    assert len(data["annotations"]) >= 200  # several objects per image


def test_boxes_inside_and_aspect_ratios_span_wide_range(split100):
    data = json.loads((split100 / "annotations.json").read_text())
    w, h = SIZE[1], SIZE[0]
    b = np.array([a["bbox"] for a in data["annotations"]], dtype=np.float64)
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 0] + b[:, 2] <= w).all() and (b[:, 1] + b[:, 3] <= h).all()
    assert (b[:, 2] >= 2).all() and (b[:, 3] >= 2).all()
    ar = b[:, 2] / b[:, 3]
    assert ar.max() > 4.0 and ar.min() < 0.25
    assert (ar > 4.0).sum() >= 5 and (ar < 0.25).sum() >= 5
    # sizes: heavy on small objects, with some large ones
    s = np.sqrt(b[:, 2] * b[:, 3]) / min(SIZE)
    assert np.median(s) < 0.35 and (s > 0.4).sum() >= 5
    # some objects cut by the border, some partly hidden, some of low contrast
    anns = data["annotations"]
    assert sum(a["truncated"] for a in anns) >= 10
    assert sum(a["visible"] < 0.95 for a in anns) >= 10
    assert sum(a["low_contrast"] for a in anns) >= 10
    assert {a["texture"] for a in anns} == set(TEXTURES)


def test_boxes_are_tight_around_the_rendered_shapes():
    n_obj = 0
    for i in range(25):
        image, boxes, labels, meta = split_scene(7, i, SIZE, {})
        assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
        assert labels.dtype == np.int64 and ((labels >= 0) & (labels < len(KINDS))).all()
        assert len(meta["masks"]) == len(boxes)
        for box, (cov, x0, y0) in zip(boxes, meta["masks"]):
            n_obj += 1
            assert x0 >= 0 and y0 >= 0 and x0 + cov.shape[1] <= SIZE[1] and y0 + cov.shape[0] <= SIZE[0]
            cols = np.flatnonzero(cov.max(axis=0) > 0) + x0
            rows = np.flatnonzero(cov.max(axis=1) > 0) + y0
            # the covered pixels span exactly the pixels the box touches: the shape reaches all four box edges
            assert cols[0] == int(np.floor(box[0])) and cols[-1] == int(np.ceil(box[2])) - 1, (i, box, cols)
            assert rows[0] == int(np.floor(box[1])) and rows[-1] == int(np.ceil(box[3])) - 1, (i, box, rows)
            # boxes are on the 1/4-pixel grid of the supersampled shape
            np.testing.assert_array_equal(box * 4, np.round(box * 4))
        assert (meta["visible"] >= 0.3).all() and (meta["inside"] >= 0.35).all()
    assert n_obj >= 60


def test_scenes_data_caches_atomically(tmp_path):
    paths = scenes_data(cache_dir=tmp_path, train_images=3, val_images=2, image_size=48, seed=1)
    root = Path(paths["root"])
    assert (root / "done.json").is_file()
    assert len(json.loads(Path(paths["train_ann"]).read_text())["images"]) == 3
    assert len(json.loads(Path(paths["val_ann"]).read_text())["images"]) == 2
    before = _digests(root)
    stamp = Path(paths["train_ann"]).stat().st_mtime_ns
    assert scenes_data(cache_dir=tmp_path, train_images=3, val_images=2, image_size=48, seed=1) == paths
    assert Path(paths["train_ann"]).stat().st_mtime_ns == stamp and _digests(root) == before
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary folder left behind
    # train and val differ
    first = [_digests(Path(paths[k]) / "images")["000000.png"] for k in ("train_images", "val_images")]
    assert first[0] != first[1]


def test_data_layer_does_not_import_the_apps():
    import bench.synth.scenes as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if "demo" in m or "engine" in m or "cli" in m]
