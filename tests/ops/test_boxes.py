"""Tests of the box geometry: IoU / GIoU / IoF, the distance coders and clipping."""
import math

import pytest
import torch

from gfldet.ops import (box_area, box_centers, box_giou_aligned, box_iof, box_iou, box_iou_aligned, box_to_distance,
                        clip_boxes, distance_to_box)
from gfldet.ops.boxes import centerness_target

F64 = torch.float64


def _t(rows):
    return torch.tensor(rows, dtype=F64)


def _random_boxes(n, seed, scale=20.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=F64) * scale
    wh = torch.rand(n, 2, generator=g, dtype=F64) * scale + 0.5
    return torch.cat([xy, xy + wh], -1)


# --- IoU -------------------------------------------------------------------------------------------------------------

# (box a, box b, IoU, GIoU), all computed by hand
PAIRS = [
    ([0, 0, 2, 2], [0, 0, 2, 2], 1.0, 1.0),  # identical
    ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7, 1 / 7 - 2 / 9),  # overlap 1, union 7, enclosure 9
    ([0, 0, 4, 2], [2, 0, 6, 2], 4 / 12, 4 / 12),  # half overlap along x, enclosure == union
    ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16, 4 / 16),  # nested: IoU = small / big, GIoU = IoU
    ([0, 0, 1, 1], [2, 0, 3, 1], 0.0, -1 / 3),  # disjoint: union 2, enclosure 3
    ([0, 0, 1, 1], [2, 2, 3, 3], 0.0, -7 / 9),  # disjoint diagonally: union 2, enclosure 9
    ([0, 0, 1, 1], [1, 0, 2, 1], 0.0, 0.0),  # touching edges: enclosure == union
]


@pytest.mark.parametrize("a,b,iou,giou", PAIRS)
def test_iou_and_giou_hand_values(a, b, iou, giou):
    a, b = _t(a), _t(b)
    assert box_iou(a[None], b[None])[0, 0].item() == pytest.approx(iou, rel=1e-9, abs=1e-12)
    assert box_iou(b[None], a[None])[0, 0].item() == pytest.approx(iou, rel=1e-9, abs=1e-12)  # symmetric
    assert box_iou_aligned(a, b).item() == pytest.approx(iou, rel=1e-9, abs=1e-12)
    assert box_giou_aligned(a, b).item() == pytest.approx(giou, rel=1e-6, abs=1e-9)
    assert box_giou_aligned(b, a).item() == pytest.approx(giou, rel=1e-6, abs=1e-9)


def test_box_iou_is_pairwise():
    b1 = _t([[0, 0, 2, 2], [10, 10, 12, 12], [0, 0, 1, 1]])
    b2 = _t([[0, 0, 2, 2], [1, 1, 3, 3]])
    expected = _t([[1.0, 1 / 7], [0.0, 0.0], [0.25, 0.0]])
    torch.testing.assert_close(box_iou(b1, b2), expected)
    # batched (..., P, 4) x (..., Q, 4) -> (..., P, Q)
    batched = box_iou(torch.stack([b1, b1 + 1]), torch.stack([b2, b2 + 1]))
    assert batched.shape == (2, 3, 2)
    torch.testing.assert_close(batched[0], expected)
    torch.testing.assert_close(batched[1], expected)  # IoU is translation invariant


def test_aligned_iou_is_the_diagonal_of_pairwise():
    a, b = _random_boxes(9, 0), _random_boxes(9, 1)
    torch.testing.assert_close(box_iou_aligned(a, b), box_iou(a, b).diagonal())


def test_iou_identical_disjoint_random():
    a = _random_boxes(50, 2)
    torch.testing.assert_close(box_iou_aligned(a, a), torch.ones(50, dtype=F64))
    far = a + 1000.0
    torch.testing.assert_close(box_iou_aligned(a, far), torch.zeros(50, dtype=F64))
    iou = box_iou(a, _random_boxes(40, 3))
    assert ((iou >= 0) & (iou <= 1)).all()


def test_giou_bounds_and_relation_to_iou():
    a = torch.cat([_random_boxes(200, 4), _random_boxes(100, 5, scale=1000.0)])
    b = torch.cat([_random_boxes(200, 6), _random_boxes(100, 7, scale=1.0)])
    giou = box_giou_aligned(a, b)
    iou = box_iou_aligned(a, b)
    assert ((giou >= -1) & (giou <= 1)).all()
    assert (giou <= iou + 1e-12).all()
    assert (giou[iou == 0] <= 0).all()
    torch.testing.assert_close(box_giou_aligned(a, a), torch.ones(300, dtype=F64))


def test_giou_tends_to_minus_one_for_far_apart_boxes():
    a = _t([0, 0, 1, 1])
    b = _t([9999, 9999, 10000, 10000])
    assert box_giou_aligned(a, b).item() == pytest.approx(-1 + 2 / 1e8, abs=1e-12)


def test_box_iof():
    fg = _t([[0, 0, 2, 2], [1, 1, 2, 2], [0, 0, 4, 4], [20, 20, 21, 21]])
    ref = _t([[1, 1, 3, 3], [0, 0, 4, 4]])
    expected = _t([
        [1 / 4, 4 / 4],  # quarter of fg inside ref0; fg fully inside ref1
        [1.0, 1.0],  # small fg box fully inside both
        [4 / 16, 1.0],  # ref0 (2x2) covers a quarter of the 4x4 box
        [0.0, 0.0],  # disjoint
    ])
    got = box_iof(fg, ref)
    assert got.shape == (4, 2)
    torch.testing.assert_close(got, expected)
    # not symmetric: the ref box's share of its own area differs
    assert box_iof(ref[:1], fg[2:3]).item() == pytest.approx(1.0)


def test_box_area_and_centers():
    boxes = _t([[0, 0, 2, 3], [1, 2, 5, 4]])
    torch.testing.assert_close(box_area(boxes), _t([6, 8]))
    torch.testing.assert_close(box_centers(boxes), _t([[1, 1.5], [3, 3]]))


# --- distance coders -------------------------------------------------------------------------------------------------

def test_distance_box_round_trip():
    g = torch.Generator().manual_seed(8)
    points = torch.rand(3, 20, 2, generator=g, dtype=F64) * 100
    dist = torch.rand(3, 20, 4, generator=g, dtype=F64) * 30
    boxes = distance_to_box(points, dist)
    assert boxes.shape == (3, 20, 4)
    torch.testing.assert_close(boxes[..., 0], points[..., 0] - dist[..., 0])  # (l, t, r, b) order
    torch.testing.assert_close(boxes[..., 1], points[..., 1] - dist[..., 1])
    torch.testing.assert_close(boxes[..., 2], points[..., 0] + dist[..., 2])
    torch.testing.assert_close(boxes[..., 3], points[..., 1] + dist[..., 3])
    torch.testing.assert_close(box_to_distance(points, boxes), dist)
    # box -> distance -> box, for boxes that contain their point
    torch.testing.assert_close(distance_to_box(points, box_to_distance(points, boxes)), boxes)
    # below the clamp, max_dist changes nothing
    torch.testing.assert_close(box_to_distance(points, boxes, max_dist=31), dist)


def test_box_to_distance_clamps():
    points = _t([[10, 10], [10, 10]])
    boxes = _t([[12, -50, 60, 11], [0, 5, 15, 12]])  # point left of box 0 -> negative left distance
    raw = box_to_distance(points, boxes)
    torch.testing.assert_close(raw, _t([[-2, 60, 50, 1], [10, 5, 5, 2]]))
    got = box_to_distance(points, boxes, max_dist=16)
    torch.testing.assert_close(got, _t([[0, 15.9, 15.9, 1], [10, 5, 5, 2]]))
    assert (got >= 0).all() and (got <= 16 - 0.1).all()
    # the clamp keeps floor(y) + 1 a valid bin of the (max_dist + 1)-bin distribution
    assert (got.floor() + 1 <= 16).all()
    got_eps = box_to_distance(points, boxes, max_dist=8, eps=0.01)
    assert got_eps.max().item() == pytest.approx(7.99)


def test_distance_to_box_with_max_shape():
    points = _t([[5, 5], [95, 40]])
    dist = _t([[10, 10, 10, 10], [1, 1, 20, 20]])
    got = distance_to_box(points, dist, max_shape=(50, 100))  # (H, W)
    torch.testing.assert_close(got, _t([[0, 0, 15, 15], [94, 39, 100, 50]]))


# --- clipping --------------------------------------------------------------------------------------------------------

def test_clip_boxes_tuple_hw():
    boxes = _t([[-5, -5, 150, 80], [10, 20, 30, 40], [120, 60, 130, 70]])
    got = clip_boxes(boxes, (50, 100))  # H = 50, W = 100: x in [0, 100], y in [0, 50]
    torch.testing.assert_close(got, _t([[0, 0, 100, 50], [10, 20, 30, 40], [100, 50, 100, 50]]))


def test_clip_boxes_per_image_tensor():
    boxes = _t([[-5, -5, 150, 80], [10, 20, 90, 45]]).expand(2, 2, 4)  # (B, N, 4)
    hw = _t([[50, 100], [40, 30]])  # per image (H, W)
    got = clip_boxes(boxes, hw[:, None, :])
    expected = _t([
        [[0, 0, 100, 50], [10, 20, 90, 45]],
        [[0, 0, 30, 40], [10, 20, 30, 40]],
    ])
    torch.testing.assert_close(got, expected)
    # one box per image, (B, 2) limits
    torch.testing.assert_close(clip_boxes(boxes[:, 0], hw), expected[:, 0])
    # and the per-image limits agree with clipping each image by its tuple
    for i in range(2):
        torch.testing.assert_close(got[i], clip_boxes(boxes[i], tuple(hw[i].tolist())))


def test_centerness_target():
    pts = torch.tensor([[50.0, 50.0], [25.0, 50.0], [200.0, 50.0]])
    boxes = torch.tensor([[0.0, 0, 100, 100]]).expand(3, 4)
    torch.testing.assert_close(centerness_target(pts, boxes), torch.tensor([1.0, math.sqrt(25 / 75), 0.0]))
