"""CocoDetection on tiny COCO datasets written into tmp_path: mapping, targets, flips, load-time checks."""
import copy
import hashlib
import json
import logging
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gfldet.data.coco import CocoDetection, DatasetError, collate

LOGGER = "gfldet.data.coco"

# image id -> (file name, width, height); id 7 has no annotations
IMAGES = {3: ("a.png", 40, 30), 7: ("sub/b.jpg", 32, 24), 11: ("c.png", 20, 16)}
CATEGORIES = [{"id": 90, "name": "zebra"}, {"id": 1, "name": "person"}, {"id": 5, "name": "car"}]


def _pixels(w, h, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_images(root, images=IMAGES):
    for iid, (name, w, h) in images.items():
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_pixels(w, h, iid)).save(path)


def base_json(images=IMAGES):
    return {
        "images": [{"id": iid, "file_name": name, "width": w, "height": h} for iid, (name, w, h) in images.items()],
        "annotations": [
            {"id": 100, "image_id": 3, "category_id": 90, "bbox": [1.0, 2.0, 10.0, 5.0], "iscrowd": 0},
            {"id": 101, "image_id": 3, "category_id": 1, "bbox": [20, 10, 15, 12], "iscrowd": 0},
            {"id": 102, "image_id": 11, "category_id": 5, "bbox": [0.5, 0.5, 4.0, 4.0], "iscrowd": 1},
            {"id": 103, "image_id": 11, "category_id": 1, "bbox": [8.0, 3.0, 6.0, 9.0]},  # no iscrowd key
        ],
        "categories": copy.deepcopy(CATEGORIES),
    }


def write_json(root, data, name="ann.json"):
    path = root / name
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def coco(tmp_path):
    """(ann_file, image_dir, data) of a valid dataset; tests edit ``data`` and rewrite the file."""
    write_images(tmp_path)
    data = base_json()
    return write_json(tmp_path, data), tmp_path / "images", data


def by_id(ds):
    return {ds[i][1]["image_id"]: ds[i] for i in range(len(ds))}


# --------------------------------------------------------------------------- contents
def test_categories_map_to_contiguous_labels_and_back(coco):
    ann, img_dir, data = coco
    ds = CocoDetection(ann, img_dir)
    assert ds.num_classes == 3
    assert ds.cat_ids == [1, 5, 90]
    assert ds.classes == ["person", "car", "zebra"]
    assert ds.cat_id_to_label == {1: 0, 5: 1, 90: 2}
    items = by_id(ds)
    for a in data["annotations"]:
        _, t = items[a["image_id"]]
        x, y, w, h = a["bbox"]
        row = [i for i, b in enumerate(t["boxes"].tolist()) if b == pytest.approx([x, y, x + w, y + h])]
        assert len(row) == 1
        label = int(t["labels"][row[0]])
        assert ds.cat_ids[label] == a["category_id"]
        assert ds.classes[label] == {1: "person", 5: "car", 90: "zebra"}[a["category_id"]]


def test_targets_xyxy_types_and_sizes(coco):
    ann, img_dir, _ = coco
    ds = CocoDetection(ann, img_dir)
    assert len(ds) == 3 and ds.image_ids == [3, 7, 11]
    image, t = by_id(ds)[3]
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8
    assert torch.equal(image, torch.from_numpy(_pixels(40, 30, 3)).permute(2, 0, 1))  # PNG: exact pixels
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64 and t["iscrowd"].dtype == torch.bool
    assert t["boxes"].tolist() == [[1.0, 2.0, 11.0, 7.0], [20.0, 10.0, 35.0, 22.0]]  # [x, y, x + w, y + h]
    assert t["labels"].tolist() == [2, 0]
    assert t["image_id"] == 3 and isinstance(t["image_id"], int)
    assert t["orig_size"] == (30, 40)
    assert ds[-1][1]["image_id"] == 11
    with pytest.raises(IndexError):
        ds[3]


def test_image_without_annotations_is_kept_with_empty_targets(coco):
    ann, img_dir, _ = coco
    ds = CocoDetection(ann, img_dir)
    image, t = by_id(ds)[7]
    assert image.shape == (3, 24, 32)  # the JPEG in a sub-folder
    assert t["boxes"].shape == (0, 4) and t["boxes"].dtype == torch.float32
    assert t["labels"].shape == (0,) and t["labels"].dtype == torch.int64
    assert t["iscrowd"].shape == (0,) and t["iscrowd"].dtype == torch.bool
    assert ds.summary["images_without_boxes"] == 1


def test_iscrowd_is_kept_and_flagged(coco):
    ann, img_dir, _ = coco
    ds = CocoDetection(ann, img_dir)
    t = by_id(ds)[11][1]
    assert t["iscrowd"].tolist() == [True, False]
    assert t["boxes"].tolist()[0] == [0.5, 0.5, 4.5, 4.5]
    assert ds.summary["crowd_annotations"] == 1 and ds.summary["annotations"] == 4


def test_collate_summary_and_repr(coco, caplog):
    ann, img_dir, _ = coco
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ds = CocoDetection(ann, img_dir)
    infos = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
    assert len(infos) == 1 and "\n" not in infos[0].getMessage()
    msg = infos[0].getMessage()
    assert "3 images" in msg and "4 annotations" in msg and "3 categories" in msg and "1 images without boxes" in msg
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert ds.summary["images"] == 3 and ds.summary["categories"] == 3
    assert all(v == 0 for v in ds.summary["dropped"].values())
    r = repr(ds)
    assert "images=3" in r and "annotations=4" in r and "ann.json" in r
    images, targets = collate([ds[0], ds[1]])
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 2
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    images, targets = next(iter(loader))
    assert [t["image_id"] for t in targets] == [3, 7]


# --------------------------------------------------------------------------- flips
def _many_images(tmp_path, n=8, w=24, h=16):
    images = {i + 1: (f"{i}.png", w, h) for i in range(n)}
    write_images(tmp_path, images)
    data = base_json(images)
    data["annotations"] = [{"id": i, "image_id": i + 1, "category_id": 1, "bbox": [2.0, 3.0, 5.0 + i, 4.0]}
                           for i in range(n)]
    return write_json(tmp_path, data), tmp_path / "images"


def _flipped(ds, i):
    x0 = ds[i][1]["boxes"][0, 0].item()
    return x0 != 2.0


def test_flip_is_deterministic_in_seed_epoch_index(tmp_path):
    ann, img_dir = _many_images(tmp_path)
    a = CocoDetection(ann, img_dir, train=True, seed=1)
    b = CocoDetection(ann, img_dir, train=True, seed=1)
    pattern = {}
    for epoch in (0, 1, 2):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in reversed(range(len(a))):  # order of calls does not matter
            ia, ta = a[i]
            ib, tb = b[i]
            assert torch.equal(ia, ib) and torch.equal(ta["boxes"], tb["boxes"])
            assert torch.equal(a[i][0], ia)  # repeat call: same result
        pattern[epoch] = [_flipped(a, i) for i in range(len(a))]
    assert any(pattern[0]) and not all(pattern[0])
    assert pattern[0] != pattern[1] or pattern[1] != pattern[2]  # epochs differ
    a.set_epoch(0)
    assert [_flipped(a, i) for i in range(len(a))] == pattern[0]
    c = CocoDetection(ann, img_dir, train=True, seed=2)
    assert [_flipped(c, i) for i in range(len(c))] != pattern[0]  # the seed changes the draws
    # worker processes draw the same flips as the main process
    a.set_epoch(1)
    loader = torch.utils.data.DataLoader(a, batch_size=3, num_workers=2, collate_fn=collate)
    got = [t["boxes"] for _, targets in loader for t in targets]
    assert all(torch.equal(g, a[i][1]["boxes"]) for i, g in enumerate(got))
    assert [bool(g[0, 0] != 2.0) for g in got] == pattern[1]


def test_flip_mirrors_image_and_boxes(tmp_path):
    ann, img_dir = _many_images(tmp_path, n=2)
    plain = CocoDetection(ann, img_dir, train=False)
    flip = CocoDetection(ann, img_dir, train=True, flip_prob=1.0)
    for i in range(2):
        img, t = plain[i]
        img_f, t_f = flip[i]
        w = img.shape[-1]
        assert torch.equal(img_f, img.flip(-1))
        b, bf = t["boxes"], t_f["boxes"]
        assert torch.equal(bf[:, 0], w - b[:, 2]) and torch.equal(bf[:, 2], w - b[:, 0])  # x' = W - x
        assert torch.equal(bf[:, 1::2], b[:, 1::2])
        assert torch.equal(t_f["labels"], t["labels"]) and t_f["orig_size"] == t["orig_size"]


def test_no_flip_when_not_training_or_prob_zero(tmp_path):
    ann, img_dir = _many_images(tmp_path)
    for ds in (CocoDetection(ann, img_dir, train=False, flip_prob=1.0),
               CocoDetection(ann, img_dir, train=True, flip_prob=0.0)):
        for epoch in range(3):
            ds.set_epoch(epoch)
            assert not any(_flipped(ds, i) for i in range(len(ds)))


def test_set_epoch_and_parameters_are_validated(coco):
    ann, img_dir, _ = coco
    ds = CocoDetection(ann, img_dir)
    with pytest.raises(ValueError):
        ds.set_epoch(-1)
    with pytest.raises(ValueError):
        CocoDetection(ann, img_dir, flip_prob=1.5)
    with pytest.raises(ValueError):
        CocoDetection(ann, img_dir, min_valid_fraction=2)


# --------------------------------------------------------------------------- fatal problems
def _set(path, value):
    def edit(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _delete(path):
    def edit(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


def _append(key, entry):
    return lambda d: d[key].append(entry)


FATAL = {
    "missing images key": (_delete(["images"]), ["'images'"]),
    "missing annotations key": (_delete(["annotations"]), ["'annotations'"]),
    "missing categories key": (_delete(["categories"]), ["'categories'"]),
    "images not a list": (_set(["images"], {"id": 1}), ["'images'", "dict"]),
    "annotations not a list": (_set(["annotations"], "x"), ["'annotations'", "str"]),
    "categories not a list": (_set(["categories"], None), ["'categories'", "NoneType"]),
    "image without id": (_delete(["images", 1, "id"]), ["images[1]", "'id'"]),
    "image without file_name": (_delete(["images", 1, "file_name"]), ["images[1]", "id 7", "'file_name'"]),
    "image without width": (_delete(["images", 2, "width"]), ["id 11", "'width'"]),
    "image without height": (_delete(["images", 0, "height"]), ["id 3", "'height'"]),
    "image with bad width": (_set(["images", 0, "width"], -40), ["id 3", "'width'", "-40"]),
    "duplicate image id": (_set(["images", 2, "id"], 3), ["duplicate image id 3", "images[0]", "images[2]"]),
    "duplicate annotation id": (_set(["annotations", 3, "id"], 101), ["duplicate annotation id 101"]),
    "duplicate category id": (_set(["categories", 2, "id"], 90), ["duplicate category id 90"]),
    "unknown category id": (_set(["annotations", 1, "category_id"], 77), ["id 101", "category_id 77"]),
    "annotation without category": (_delete(["annotations", 1, "category_id"]), ["id 101", "category_id None"]),
    "bbox with 3 numbers": (_set(["annotations", 0, "bbox"], [1, 2, 3]), ["id 100", "[1, 2, 3]"]),
    "bbox with a string": (_set(["annotations", 2, "bbox"], [1, 2, "7", 4]), ["id 102", "'7'"]),
    "bbox with NaN": (_set(["annotations", 3, "bbox"], [1, 2, math.nan, 4]), ["id 103", "nan"]),
    "bbox with Infinity": (_set(["annotations", 3, "bbox"], [1, 2, 3, math.inf]), ["id 103", "inf"]),
    "bbox missing": (_delete(["annotations", 0, "bbox"]), ["id 100", "None"]),
    "annotation without id": (_delete(["annotations", 2, "id"]), ["annotations[2]", "'id'"]),
    "annotation not an object": (_append("annotations", [1, 2]), ["annotations[4]"]),
}


@pytest.mark.parametrize("case", sorted(FATAL))
def test_fatal_json_problems_raise_dataset_error(coco, case):
    ann, img_dir, data = coco
    edit, expected = FATAL[case]
    edit(data)
    write_json(ann.parent, data)
    with pytest.raises(DatasetError) as exc:
        CocoDetection(ann, img_dir)
    msg = str(exc.value)
    assert "ann.json" in msg
    for part in expected:
        assert part in msg, (part, msg)
    assert isinstance(exc.value, ValueError)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match="nope.json"):
        CocoDetection(tmp_path / "nope.json", tmp_path)


def test_invalid_json_reports_position(coco):
    ann, img_dir, _ = coco
    ann.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DatasetError, match=r"ann\.json.*line 2, column 12"):
        CocoDetection(ann, img_dir)


def test_missing_image_folder(coco):
    ann, img_dir, _ = coco
    with pytest.raises(DatasetError, match=r"ann\.json.*no_such_dir.*does not exist"):
        CocoDetection(ann, img_dir.parent / "no_such_dir")


@pytest.mark.parametrize("check_images", [True, False])
def test_wrong_image_folder_is_fatal(coco, check_images):
    ann, img_dir, _ = coco
    wrong = img_dir / "sub"  # exists, but only b.jpg's parent; the others are not there
    with pytest.raises(DatasetError) as exc:
        CocoDetection(ann, wrong, check_images=check_images)
    msg = str(exc.value)
    assert "ann.json" in msg and "image_dir" in msg
    assert os.path.join(str(wrong), "a.png") in msg  # an example missing path
    assert "image id 3" in msg


def test_min_valid_fraction_threshold(coco):
    ann, img_dir, _ = coco
    (img_dir / "a.png").unlink()
    (img_dir / "c.png").unlink()  # 1 of 3 left
    with pytest.raises(DatasetError, match="only 1 of 3"):
        CocoDetection(ann, img_dir)
    ds = CocoDetection(ann, img_dir, min_valid_fraction=0.3)
    assert ds.image_ids == [7]


# --------------------------------------------------------------------------- tolerable problems
def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def _load_with(coco, caplog, edit, **kwargs):
    ann, img_dir, data = coco
    edit(data)
    write_json(ann.parent, data)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        return CocoDetection(ann, img_dir, **kwargs)


def test_degenerate_boxes_are_dropped(coco, caplog):
    def edit(d):
        d["annotations"] += [
            {"id": 200, "image_id": 3, "category_id": 1, "bbox": [5, 5, 0, 4]},
            {"id": 201, "image_id": 3, "category_id": 1, "bbox": [5, 5, 3, -2]},
        ]
    ds = _load_with(coco, caplog, edit)
    assert ds.summary["dropped"]["annotations_degenerate"] == 2
    assert ds.summary["annotations"] == 4
    (w,) = _warnings(caplog)
    assert "2 annotation(s) with width or height <= 0" in w and "id 200" in w and "[5, 5, 0, 4]" in w
    assert len(by_id(ds)[3][1]["boxes"]) == 2
    assert ds.summary["images_all_boxes_dropped"] == 0


def test_image_that_loses_all_its_boxes_is_counted(coco, caplog):
    def edit(d):
        d["annotations"] = [a for a in d["annotations"] if a["image_id"] != 3]
        d["annotations"].append({"id": 200, "image_id": 3, "category_id": 1, "bbox": [5, 5, 0, 4]})
    ds = _load_with(coco, caplog, edit)
    assert ds.summary["images_all_boxes_dropped"] == 1 and ds.summary["images_without_boxes"] == 2
    assert by_id(ds)[3][1]["boxes"].shape == (0, 4)


def test_unknown_image_id_is_dropped(coco, caplog):
    edit = _append("annotations", {"id": 300, "image_id": 999, "category_id": 5, "bbox": [1, 1, 2, 2]})
    ds = _load_with(coco, caplog, edit)
    assert ds.summary["dropped"]["annotations_unknown_image"] == 1
    (w,) = _warnings(caplog)
    assert "image_id is not in 'images'" in w and "annotation id 300" in w and "999" in w
    assert ds.summary["annotations"] == 4


def test_boxes_partly_outside_are_clipped_and_entirely_outside_dropped(coco, caplog):
    def edit(d):
        d["annotations"] += [
            {"id": 400, "image_id": 3, "category_id": 1, "bbox": [-4, 25, 10, 10]},   # partly out (40x30 image)
            {"id": 401, "image_id": 3, "category_id": 1, "bbox": [45, 2, 5, 5]},     # right of the image
            {"id": 402, "image_id": 3, "category_id": 1, "bbox": [3, -9, 5, 9]},     # ends exactly at y = 0
            {"id": 403, "image_id": 3, "category_id": 1, "bbox": [0, 0, 40.001, 30]},  # rounding: not counted
        ]
    ds = _load_with(coco, caplog, edit)
    assert ds.summary["fixed"]["boxes_clipped"] == 1
    assert ds.summary["dropped"]["annotations_outside"] == 2
    warnings = _warnings(caplog)
    assert len(warnings) == 2
    outside = next(w for w in warnings if "entirely outside" in w)
    assert "id 401" in outside and "id 402" in outside and "40x30" in outside
    clipped = next(w for w in warnings if "clipped" in w)
    assert "id 400" in clipped and "[-4, 25, 10, 10]" in clipped
    boxes = by_id(ds)[3][1]["boxes"].tolist()
    assert [0.0, 25.0, 6.0, 30.0] in boxes and [0.0, 0.0, 40.0, 30.0] in boxes and len(boxes) == 4


def test_missing_image_file_is_dropped_with_its_annotations(coco, caplog):
    ann, img_dir, _ = coco
    (img_dir / "c.png").unlink()
    ds = _load_with(coco, caplog, lambda d: None)
    assert ds.image_ids == [3, 7]
    assert ds.summary["dropped"]["images_missing"] == 1
    assert ds.summary["dropped"]["annotations_of_dropped_images"] == 2
    (w,) = _warnings(caplog)
    assert "missing" in w and "id 11" in w and "c.png" in w


def test_corrupt_image_file_is_dropped(coco, caplog):
    ann, img_dir, _ = coco
    (img_dir / "sub" / "b.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    ds = _load_with(coco, caplog, lambda d: None)
    assert ds.image_ids == [3, 11]
    assert ds.summary["dropped"]["images_unreadable"] == 1
    (w,) = _warnings(caplog)
    assert "cannot be read" in w and "b.jpg" in w and "id 7" in w


def test_empty_image_file_is_dropped(coco, caplog):
    ann, img_dir, _ = coco
    (img_dir / "a.png").write_bytes(b"")
    ds = _load_with(coco, caplog, lambda d: None)
    assert ds.image_ids == [7, 11] and ds.summary["dropped"]["images_unreadable"] == 1


def test_json_size_disagreeing_with_file_uses_file_size(coco, caplog):
    def edit(d):
        d["images"][0].update(width=50, height=60)  # a.png is 40x30
        d["annotations"].append({"id": 500, "image_id": 3, "category_id": 1, "bbox": [30, 20, 15, 30]})
    ds = _load_with(coco, caplog, edit)
    assert ds.summary["fixed"]["image_size_mismatch"] == 1
    warnings = _warnings(caplog)
    size_warning = next(w for w in warnings if "disagree" in w)
    assert "id 3" in size_warning and "50x60" in size_warning and "40x30" in size_warning
    image, t = by_id(ds)[3]
    assert t["orig_size"] == (30, 40) and image.shape == (3, 30, 40)
    assert [30.0, 20.0, 40.0, 30.0] in t["boxes"].tolist()  # clipped to the file's size
    assert ds.summary["fixed"]["boxes_clipped"] == 1


def test_size_mismatch_without_image_check_is_handled_at_load_time(coco, caplog):
    def edit(d):
        d["images"][0].update(width=50, height=60)
        d["annotations"].append({"id": 500, "image_id": 3, "category_id": 1, "bbox": [30, 20, 15, 30]})
        d["annotations"].append({"id": 501, "image_id": 3, "category_id": 1, "bbox": [44, 1, 5, 5]})
    ds = _load_with(coco, caplog, edit, check_images=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        image, t = by_id(ds)[3]
    assert t["orig_size"] == (30, 40)
    assert [30.0, 20.0, 40.0, 30.0] in t["boxes"].tolist()
    assert len(t["boxes"]) == 3 and len(t["labels"]) == 3 and len(t["iscrowd"]) == 3  # id 501 is off the image
    assert any("50x60" in w for w in _warnings(caplog))


def test_unchecked_missing_file_fails_clearly_at_getitem(coco):
    ann, img_dir, _ = coco
    ds = CocoDetection(ann, img_dir, check_images=False)
    (img_dir / "c.png").unlink()
    with pytest.raises(DatasetError, match=r"ann\.json.*image id 11.*c\.png.*check_images=False"):
        ds[2]


# --------------------------------------------------------------------------- image modes
@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("L", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("LA", "PNG"),
                                      ("1", "PNG"), ("I;16", "PNG"), ("RGB", "BMP"), ("L", "TIFF"),
                                      ("CMYK", "JPEG")])
def test_any_image_mode_comes_out_as_rgb_uint8(tmp_path, mode, fmt):
    name = f"x.{fmt.lower()}"
    rgb = _pixels(12, 9, 0)
    im = Image.fromarray(rgb)
    if mode == "I;16":
        im = Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)
    else:
        im = im.convert(mode)
    (tmp_path / "images").mkdir()
    im.save(tmp_path / "images" / name, fmt)
    data = base_json({1: (name, 12, 9)})
    data["annotations"] = []
    ann = write_json(tmp_path, data)
    image, t = CocoDetection(ann, tmp_path / "images")[0]
    assert image.shape == (3, 9, 12) and image.dtype == torch.uint8 and t["orig_size"] == (9, 12)
    if mode == "L" and fmt == "PNG":
        expected = np.asarray(Image.fromarray(rgb).convert("L"))
        assert all(torch.equal(image[c], torch.from_numpy(expected.copy())) for c in range(3))
    if mode == "RGBA":
        assert torch.equal(image, torch.from_numpy(rgb).permute(2, 0, 1))  # alpha dropped, colour kept
    if mode == "I;16":
        assert torch.equal(image[0], torch.from_numpy(rgb[:, :, 0]))  # 16-bit scaled down, not clipped


def test_exif_rotated_jpeg_annotated_as_displayed(tmp_path, caplog):
    """A phone photo stored 40x20 with EXIF orientation 6 (displayed 20x40) whose JSON gives the displayed size."""
    (tmp_path / "images").mkdir()
    raw = np.zeros((20, 40, 3), dtype=np.uint8)
    raw[:, :20] = 255  # left half white in storage
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw).save(tmp_path / "images" / "p.jpg", exif=exif, quality=95)
    data = base_json({1: ("p.jpg", 20, 40)})
    data["annotations"] = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 25, 10, 10]}]
    ann = write_json(tmp_path, data)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = CocoDetection(ann, tmp_path / "images")
    image, t = ds[0]
    assert ds.summary["fixed"]["exif_rotated"] == 1 and ds.summary["fixed"]["image_size_mismatch"] == 0
    assert any("EXIF" in w and "p.jpg" in w for w in _warnings(caplog))
    assert image.shape == (3, 40, 20) and t["orig_size"] == (40, 20)
    assert t["boxes"].tolist() == [[2.0, 25.0, 12.0, 35.0]]
    # orientation 6 rotates storage 90 degrees clockwise: the white left half ends up on top
    assert image[:, :15].float().mean() > 200 and image[:, 25:].float().mean() < 50


# --------------------------------------------------------------------------- the user's folder is untouched
def _snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for f in filenames + dirnames:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            digest = None
            if os.path.isfile(p):
                with open(p, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            out[p] = (st.st_mtime_ns, st.st_size, st.st_mode, digest)
    return out


def test_user_folder_is_not_modified(coco):
    ann, img_dir, data = coco
    (img_dir / "sub" / "bad.jpg").write_bytes(b"\x00" * 100)
    data["images"].append({"id": 50, "file_name": "sub/bad.jpg", "width": 4, "height": 4})
    data["annotations"].append({"id": 600, "image_id": 3, "category_id": 1, "bbox": [-5, -5, 10, 10]})
    write_json(ann.parent, data)
    before = _snapshot(ann.parent)
    for check in (True, False):
        ds = CocoDetection(ann, img_dir, train=True, flip_prob=1.0, check_images=check)
        for i in range(len(ds)):
            if ds.image_path(i).endswith("bad.jpg"):
                continue
            ds[i]
    assert _snapshot(ann.parent) == before
