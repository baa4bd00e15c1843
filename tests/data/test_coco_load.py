"""CocoDetection's load-time checks (gfldet.data.coco_load): fatal problems raise DatasetError naming file, id and value; tolerable ones are fixed or dropped and logged."""
import logging
import math
import os

import numpy as np
import pytest

from gfldet.data.coco import CocoDetection, DatasetError
from tests.data.coco_cases import LOGGER, by_id, warnings_of, write_json


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
    (w,) = warnings_of(caplog)
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
    (w,) = warnings_of(caplog)
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
    warnings = warnings_of(caplog)
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
    (w,) = warnings_of(caplog)
    assert "missing" in w and "id 11" in w and "c.png" in w


def test_corrupt_image_file_is_dropped(coco, caplog):
    ann, img_dir, _ = coco
    (img_dir / "sub" / "b.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    ds = _load_with(coco, caplog, lambda d: None)
    assert ds.image_ids == [3, 11]
    assert ds.summary["dropped"]["images_unreadable"] == 1
    (w,) = warnings_of(caplog)
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
    warnings = warnings_of(caplog)
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
    assert any("50x60" in w for w in warnings_of(caplog))


def test_unchecked_missing_file_fails_clearly_at_getitem(coco):
    ann, img_dir, _ = coco
    ds = CocoDetection(ann, img_dir, check_images=False)
    (img_dir / "c.png").unlink()
    with pytest.raises(DatasetError, match=r"ann\.json.*image id 11.*c\.png.*check_images=False"):
        ds[2]
