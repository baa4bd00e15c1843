import pytest
import torch

from gfldet.data.transforms import hflip
from gfldet.ops.resize import keep_ratio_size


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
