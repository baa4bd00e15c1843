import pytest
import torch

from gfldet.data.transforms import hflip, mosaic
from gfldet.ops.resize import fit_size, keep_ratio_size


def test_hflip_boxes_and_image():
    image = torch.arange(2 * 3 * 5, dtype=torch.uint8).reshape(2, 3, 5)
    boxes = torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.0, 1.0, 5.0, 3.0]])
    img_f, boxes_f = hflip(image, boxes)
    assert torch.equal(img_f, image.flip(-1))
    assert torch.equal(boxes_f, torch.tensor([[2.0, 0.0, 4.0, 2.0], [0.0, 1.0, 5.0, 3.0]]))  # x' = W - x
    assert (boxes_f[:, 2] >= boxes_f[:, 0]).all()
    img_ff, boxes_ff = hflip(img_f, boxes_f)
    assert torch.equal(img_ff, image) and torch.equal(boxes_ff, boxes)
    assert torch.equal(boxes, torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.0, 1.0, 5.0, 3.0]]))  # not mutated
    empty_img, empty = hflip(image, torch.zeros(0, 4))
    assert empty.shape == (0, 4)


# the detector's resize rule, tested here since data/transforms.py delegated to it (move to tests/ops/test_resize.py)
@pytest.mark.parametrize("h,w,min_size,max_size,expected", [
    (480, 640, 800, 1333, (800, 1067)),   # short side bound: 640 * 800 / 480 = 1066.67 -> 1067
    (100, 1000, 800, 1333, (133, 1333)),  # long side bound
    (640, 480, 800, 1333, (1067, 800)),
    (800, 1333, 800, 1333, (800, 1333)),
    (300, 400, None, 200, (150, 200)),
    (300, 400, 600, None, (600, 800)),
    (300, 400, None, None, (300, 400)),
    (1, 5000, 800, 1333, (1, 1333)),      # never 0
])
def test_keep_ratio_size(h, w, min_size, max_size, expected):
    assert keep_ratio_size(h, w, min_size, max_size) == expected


def test_keep_ratio_size_rejects_bad_input():
    with pytest.raises(ValueError):
        keep_ratio_size(0, 10, 800, 1333)
    with pytest.raises(ValueError):
        keep_ratio_size(10, 10, -1, 1333)


# --------------------------------------------------------------------------- mosaic
def _part(value: int, h: int, w: int, boxes: list[list[float]], label: int):
    image = torch.full((3, h, w), value, dtype=torch.uint8)
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return image, {"boxes": b, "labels": torch.full((len(b),), label, dtype=torch.int64),
                   "iscrowd": torch.zeros(len(b), dtype=torch.bool)}


def test_mosaic_places_four_images_around_the_point():
    H, W = 40, 60
    parts = [
        _part(10, H, W, [[50, 30, 58, 38], [0, 0, 10, 10]], 0),  # its bottom-right corner region shows
        _part(20, H, W, [[0, 30, 20, 40]], 1),                   # top-right: its bottom-left corner region
        _part(30, H, W, [[40, 0, 60, 4]], 2),                     # bottom-left: its top-right; cut to 4 of 4 rows
        _part(40, H, W, [[2, 2, 8, 8], [20, 0, 56, 40]], 3),      # bottom-right: its top-left
    ]
    image, t = mosaic(parts, (24, 16))
    assert image.shape == (3, H, W) and image.dtype == torch.uint8
    # each quadrant around (24, 16) comes from its own image
    assert (image[:, :16, :24] == 10).all() and (image[:, :16, 24:] == 20).all()
    assert (image[:, 16:, :24] == 30).all() and (image[:, 16:, 24:] == 40).all()
    # image 0 sits at (24 - 60, 16 - 40) = (-36, -24): its box (50, 30, 58, 38) -> (14, 6, 22, 14); (0, 0, 10, 10) is
    # out of sight and dropped
    expected = torch.tensor([
        [14, 6, 22, 14],
        [24, 6, 44, 16],    # image 1 at (24, -24): (0, 30, 20, 40) -> (24, 6, 44, 16)
        [4, 16, 24, 20],    # image 2 at (-36, 16): (40, 0, 60, 4) -> (4, 16, 24, 20)
        [26, 18, 32, 24],   # image 3 at (24, 16): (2, 2, 8, 8) -> (26, 18, 32, 24)
        [44, 16, 60, 40],   # (20, 0, 56, 40) -> (44, 16, 80, 56), clipped to (44, 16, 60, 40): 16 x 24 of 36 x 40
    ], dtype=torch.float32)
    assert torch.equal(t["boxes"], expected)
    assert t["labels"].tolist() == [0, 1, 2, 3, 3] and t["iscrowd"].dtype == torch.bool


def test_mosaic_drops_slivers_and_fits_large_images():
    H, W = 40, 40
    parts = [_part(1, H, W, [[0, 20, 20, 40]], 0), _part(2, H, W, [], 1), _part(3, H, W, [], 2),
             _part(4, H, W, [], 3)]
    _, t = mosaic(parts, (36, 30))  # image 0 at (-4, -10): box (0, 20, 20, 40) -> (-4, 10, 16, 30), 80% visible
    assert t["boxes"].tolist() == [[0.0, 10.0, 16.0, 30.0]]
    _, t = mosaic(parts, (4, 30))   # image 0 at (-36, -10): (-36, 10, -16, 30): out of sight
    assert t["boxes"].shape == (0, 4) and t["labels"].dtype == torch.int64
    _, t = mosaic(parts, (24, 30))  # image 0 at (-16, -10): (-16, 10, 4, 30) -> (0, 10, 4, 30): 20% visible
    assert t["boxes"].shape == (0, 4)
    _, t = mosaic(parts, (26, 30))  # (-14, 10, 6, 30) -> (0, 10, 6, 30): 30% visible, kept
    assert t["boxes"].tolist() == [[0.0, 10.0, 6.0, 30.0]]
    big = _part(5, 80, 120, [[0, 40, 60, 80]], 1)  # too large: resized by 1/3 to 27 x 40, keeping its ratio
    image, t = mosaic([parts[0], big, parts[2], parts[3]], (30, 30))
    # placed top-right of (30, 30), at (30, 3): its box (0, 13.5, 20, 27) -> (30, 16.5, 50, 30), half of it shows
    assert t["labels"].tolist() == [0, 1] and t["boxes"][1].tolist() == [30.0, 16.5, 40.0, 30.0]
    assert (image[:, 3:30, 30:] == 5).all() and (image[:, :3, 30:] == 114).all()  # uncovered: grey
    with pytest.raises(ValueError, match="outside"):
        mosaic(parts, (41, 10))
    with pytest.raises(ValueError, match="4 images"):
        mosaic(parts[:3], (10, 10))


def test_mosaic_keeps_whole_small_boxes_and_crowd_regions():
    H, W = 40, 40
    first = _part(1, H, W, [[30, 30, 31.5, 39], [0, 20, 20, 40]], 0)
    first[1]["iscrowd"][1] = True  # the second box is a crowd region: kept wherever some of it shows
    parts = [first, _part(2, H, W, [], 1), _part(3, H, W, [], 2), _part(4, H, W, [], 3)]
    _, t = mosaic(parts, (24, 40))  # image 0 at (-16, 0): the 1.5 px box whole, the crowd region 4 of 20 columns
    assert t["boxes"].tolist() == [[14.0, 30.0, 15.5, 39.0], [0.0, 20.0, 4.0, 40.0]]
    assert t["iscrowd"].tolist() == [False, True]


@pytest.mark.parametrize("h,w,expected", [(80, 120, (27, 40)), (40, 40, (40, 40)), (20, 30, (20, 30)),
                                          (100, 20, (40, 8))])
def test_fit_size_shrinks_to_fit_and_never_enlarges(h, w, expected):
    assert fit_size(h, w, 40, 40) == expected
