import pytest
import torch

from gfldet.data.transforms import choose_scale, clip_boxes_to_image, coco_xywh_to_xyxy, hflip, resize_keep_ratio_size


def test_coco_xywh_to_xyxy():
    out = coco_xywh_to_xyxy(torch.tensor([[10.0, 20.0, 30.0, 5.0], [0.5, 0.0, 1.0, 2.0]]))
    assert torch.equal(out, torch.tensor([[10.0, 20.0, 40.0, 25.0], [0.5, 0.0, 1.5, 2.0]]))
    ints = coco_xywh_to_xyxy([[1, 2, 3, 4]])  # lists / ints -> float32
    assert ints.dtype == torch.float32 and ints.tolist() == [[1.0, 2.0, 4.0, 6.0]]
    assert coco_xywh_to_xyxy(torch.zeros(0, 4)).shape == (0, 4)
    with pytest.raises(ValueError, match="shape"):
        coco_xywh_to_xyxy(torch.zeros(2, 3))


def test_clip_boxes_to_image():
    boxes = torch.tensor([[-5.0, -1.0, 50.0, 20.0], [10.0, 10.0, 20.0, 20.0]])
    out = clip_boxes_to_image(boxes, (15, 40))  # (H, W)
    assert torch.equal(out, torch.tensor([[0.0, 0.0, 40.0, 15.0], [10.0, 10.0, 20.0, 15.0]]))
    assert boxes[0, 0] == -5.0  # input untouched


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
def test_resize_keep_ratio_size(h, w, min_size, max_size, expected):
    assert resize_keep_ratio_size(h, w, min_size, max_size) == expected


def test_resize_keep_ratio_size_rejects_bad_input():
    with pytest.raises(ValueError):
        resize_keep_ratio_size(0, 10, 800, 1333)
    with pytest.raises(ValueError):
        resize_keep_ratio_size(10, 10, -1, 1333)


def test_choose_scale():
    sizes = [480, 512, 544, 576, 608]
    a = [choose_scale(torch.Generator().manual_seed(3), sizes) for _ in range(3)]
    assert len(set(a)) == 1  # same generator state, same choice
    g = torch.Generator().manual_seed(0)
    draws = [choose_scale(g, sizes) for _ in range(200)]
    assert set(draws) == set(sizes)
    assert choose_scale(None, 800) == 800
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert choose_scale(g, (640,)) == 640
    assert torch.equal(g.get_state(), state)  # a single choice draws nothing
    with pytest.raises(ValueError):
        choose_scale(g, [])
