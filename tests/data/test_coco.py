"""CocoDetection on tiny COCO datasets written into tmp_path: mapping, targets, flips, image modes, the user's folder."""
import hashlib
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gfldet.data.coco import CocoDetection, collate
from gfldet.errors import GfldetError
from tests.data.coco_cases import LOGGER, base_json, by_id, pixels, warnings_of, write_images, write_json


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
    assert torch.equal(image, torch.from_numpy(pixels(40, 30, 3)).permute(2, 0, 1))  # PNG: exact pixels
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


def test_mosaic_items(tmp_path):
    ann, img_dir = _many_images(tmp_path, n=8, w=48, h=32)
    plain = CocoDetection(ann, img_dir, train=True, seed=3)
    mos = CocoDetection(ann, img_dir, train=True, seed=3, mosaic_prob=1.0)
    half = CocoDetection(ann, img_dir, train=True, seed=3, mosaic_prob=0.5)
    mixed = []
    for i in range(len(mos)):
        image, t = mos[i]
        again, t2 = mos[i]
        assert torch.equal(image, again) and torch.equal(t["boxes"], t2["boxes"])  # a function of (seed, epoch, index)
        assert image.shape == plain[i][0].shape and t["orig_size"] == (32, 48) and t["image_id"] == i + 1
        assert (t["boxes"][:, 2:] <= torch.tensor([48.0, 32.0])).all() and (t["boxes"][:, :2] >= 0).all()
        assert len(t["boxes"]) == len(t["labels"]) == len(t["iscrowd"])
        if not torch.equal(image, plain[i][0]):
            mixed.append(i)
        h_img, h_t = half[i]
        assert torch.equal(h_img, plain[i][0]) or torch.equal(h_img, image)
    assert len(mixed) == len(mos)  # every item is a mosaic
    # the item itself, with its own flip (the first draw of its stream, as without mosaic), fills the output up to
    # the meeting point (its bottom-right part); the point is drawn after the three other items
    for i in range(len(mos)):
        g = mos.generator(i)
        torch.rand((), generator=g), torch.rand((), generator=g), torch.randint(8, (3,), generator=g)
        cx, cy = (round(float(v)) for v in (0.25 + 0.5 * torch.rand(2, generator=g)) * torch.tensor([48.0, 32.0]))
        assert 12 <= cx <= 36 and 8 <= cy <= 24
        assert torch.equal(mos[i][0][:, :cy, :cx], plain[i][0][:, 32 - cy:, 48 - cx:])
    assert any(not torch.equal(half[i][0], plain[i][0]) for i in range(8))
    assert any(torch.equal(half[i][0], plain[i][0]) for i in range(8))
    with pytest.raises(GfldetError, match="mosaic_prob"):
        CocoDetection(ann, img_dir, mosaic_prob=1.5)


def test_set_epoch_and_parameters_are_validated(coco):
    ann, img_dir, _ = coco
    ds = CocoDetection(ann, img_dir)
    with pytest.raises(ValueError):
        ds.set_epoch(-1)
    with pytest.raises(ValueError):
        CocoDetection(ann, img_dir, flip_prob=1.5)
    with pytest.raises(ValueError):
        CocoDetection(ann, img_dir, min_valid_fraction=2)


# --------------------------------------------------------------------------- image modes
@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("L", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("LA", "PNG"),
                                      ("1", "PNG"), ("I;16", "PNG"), ("RGB", "BMP"), ("L", "TIFF"),
                                      ("CMYK", "JPEG")])
def test_any_image_mode_comes_out_as_rgb_uint8(tmp_path, mode, fmt):
    name = f"x.{fmt.lower()}"
    rgb = pixels(12, 9, 0)
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
    assert any("EXIF" in w and "p.jpg" in w for w in warnings_of(caplog))
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
