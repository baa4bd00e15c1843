"""``gfldet.predict``: image ids in predictions.json (COCO ids with an annotation file, positions without)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import gfldet
from gfldet.models.io import save_checkpoint
from gfldet.predict import coco_image_ids, predict


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    m = gfldet.gfl_resnet18_fpn(num_classes=2, fpn_channels=16, head_channels=16, gn_groups=4)
    torch.nn.init.constant_(m.head.gfl_cls.bias, -1.0)  # scores around 0.27: every image gets detections
    m.configure(min_size=128, max_size=160)
    p = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(p, m.eval(), cat_ids=[3, 8])
    return p


def _dataset(root, names=("b.png", "a.png"), ids=(42, 17)):
    """Images under ``root/images`` and ``root/ann.json`` naming them ``images/<name>`` with ``ids``."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in names:
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(root / "images" / n)
    ann = {"images": [{"id": i, "file_name": f"images/{n}", "width": 80, "height": 64} for n, i in zip(names, ids)],
           "annotations": [], "categories": [{"id": 3, "name": "x"}, {"id": 8, "name": "y"}]}
    (root / "ann.json").write_text(json.dumps(ann))
    return root / "images", root / "ann.json", dict(zip(names, ids))


def _by_file(results):
    out = {}
    for r in results:
        out.setdefault(r["file_name"].replace("\\", "/").rsplit("/", 1)[-1], set()).add(r["image_id"])
    return out


def test_image_id_is_the_coco_id_with_an_annotation_file(tmp_path, checkpoint):
    images, ann, ids = _dataset(tmp_path / "data")
    kw = dict(score_thr=0.2, draw=False, progress=False)
    res = predict(checkpoint, [images], out_dir=tmp_path / "with_ann", ann=ann, **kw)
    got = _by_file(json.loads((tmp_path / "with_ann" / "predictions.json").read_text()))
    assert res["detections"] > 0 and set(got) == set(ids)
    assert got == {n: {i} for n, i in ids.items()}  # a.png -> 17, b.png -> 42, not positions 0 / 1
    # without one, image_id stays the position in the sorted inputs (a.png first)
    predict(checkpoint, [images], out_dir=tmp_path / "no_ann", **kw)
    got = _by_file(json.loads((tmp_path / "no_ann" / "predictions.json").read_text()))
    assert got == {"a.png": {0}, "b.png": {1}}


def test_unknown_file_is_refused_before_running(tmp_path):
    images, ann, _ = _dataset(tmp_path / "data")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "stray.png")
    # the checkpoint does not exist: the mismatch is reported before the model is loaded
    with pytest.raises(ValueError, match=r"stray\.png: no image with this file_name"):
        predict(tmp_path / "missing.pt", [images], out_dir=tmp_path / "out", ann=ann, draw=False, progress=False)
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_coco_image_ids_matching(tmp_path):
    images, ann, _ = _dataset(tmp_path / "data", names=("a.png", "b.png"), ids=(5, 6))
    files = sorted(images.iterdir())
    assert coco_image_ids(files, ann) == [5, 6]
    # bare file names (the usual COCO layout) match as well, the longest matching tail of the path wins
    (tmp_path / "bare.json").write_text(json.dumps({"images": [{"id": 9, "file_name": "a.png"},
                                                               {"id": 10, "file_name": "b.png"},
                                                               {"id": 11, "file_name": "other/a.png"}]}))
    assert coco_image_ids(files, tmp_path / "bare.json") == [9, 10]
    (tmp_path / "other").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "other" / "a.png")
    assert coco_image_ids([tmp_path / "other" / "a.png"], tmp_path / "bare.json") == [11]
    # two files for one image, or one file_name for two images: refused, naming them
    (tmp_path / "dup.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}]}))
    with pytest.raises(ValueError, match="names more than one image"):
        coco_image_ids(files[:1], tmp_path / "dup.json")
    (tmp_path / "one.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}]}))
    with pytest.raises(ValueError, match=r"both match file_name 'a\.png'"):
        coco_image_ids([files[0], tmp_path / "other" / "a.png"], tmp_path / "one.json")
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        coco_image_ids(files, tmp_path / "bad.json")
