"""A tiny COCO dataset for the data tests: three images (one without boxes), non-contiguous category ids."""
import copy
import json
import logging

import numpy as np
from PIL import Image

LOGGER = "gfldet.data.coco"

# image id -> (file name, width, height); id 7 has no annotations
IMAGES = {3: ("a.png", 40, 30), 7: ("sub/b.jpg", 32, 24), 11: ("c.png", 20, 16)}
CATEGORIES = [{"id": 90, "name": "zebra"}, {"id": 1, "name": "person"}, {"id": 5, "name": "car"}]


def pixels(w, h, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_images(root, images=IMAGES):
    for iid, (name, w, h) in images.items():
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels(w, h, iid)).save(path)


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


def by_id(ds):
    return {ds[i][1]["image_id"]: ds[i] for i in range(len(ds))}


def warnings_of(caplog):
    """The WARNING messages the dataset logged."""
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
