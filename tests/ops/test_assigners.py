"""The FCOS-style and RetinaNet-style assigners (gfldet.ops.fcos_retina)."""
from __future__ import annotations

import math

import pytest
import torch

from gfldet.ops.fcos_retina import fcos_assign, fcos_regress_ranges, retina_assign
from gfldet.ops.priors import multi_anchors


def _square(points, side):
    p = torch.tensor(points, dtype=torch.float32)
    return torch.cat([p - side / 2, p + side / 2], dim=1)


def test_fcos_centre_sampling_and_ranges():
    # one level of stride 8: locations on a grid 0..72
    xs = torch.arange(0, 80, 8.0)
    pts = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), dim=-1).reshape(-1, 2)
    anchors = _square(pts.tolist(), 64.0)
    strides = torch.full((pts.shape[0],), 8.0)
    ranges = torch.tensor([[-1.0, 64.0]]).expand(pts.shape[0], 2)
    gt = torch.tensor([[0.0, 0, 64, 64]])  # centre (32, 32): centre region 32 +- 12 -> locations 24, 32, 40
    res = fcos_assign(anchors, strides, ranges, [gt])
    pos = pts[res.positive[0]]
    expected = torch.tensor([[x, y] for y in (24.0, 32, 40) for x in (24.0, 32, 40)])
    torch.testing.assert_close(pos, expected)
    assert res.num_candidates.tolist() == [9]
    # no centre sampling: every location strictly inside the box (l, t, r, b > 0): 8..56 -> 7 x 7
    assert int(fcos_assign(anchors, strides, ranges, [gt], center_radius=0).positive.sum()) == 49
    # the largest distance of every location in the box is >= 32 (32 only at the centre): range (0, 31] takes none,
    # (0, 32] the centre only
    assert not fcos_assign(anchors, strides, torch.tensor([[0.0, 31.0]]).expand(pts.shape[0], 2), [gt]).positive.any()
    only = fcos_assign(anchors, strides, torch.tensor([[0.0, 32.0]]).expand(pts.shape[0], 2), [gt]).positive[0]
    assert pts[only].tolist() == [[32.0, 32.0]]
    # two GTs over (32, 32): the smaller one wins; an invalid location is never positive and is ignored
    small_gt = torch.tensor([[28.0, 28, 44, 44]])  # centre (36, 36), region clipped to the box -> 32, 40
    valid = torch.ones(1, pts.shape[0], dtype=torch.bool)
    k = int(((pts[:, 0] == 24) & (pts[:, 1] == 24)).nonzero())
    valid[0, k] = False
    res = fcos_assign(anchors, strides, ranges, [torch.cat([gt, small_gt])], valid)
    idx = res.gt_index[0]
    for x, y, g in [(32, 32, 1), (40, 40, 1), (32, 40, 1), (32, 24, 0), (40, 24, 0), (24, 24, -1), (16, 16, -1)]:
        j = int(((pts[:, 0] == x) & (pts[:, 1] == y)).nonzero())
        assert int(idx[j]) == g, (x, y)
    assert bool(res.ignored[0, k]) and not res.ignored[0, ~valid[0]].logical_not().any()


def test_fcos_regress_ranges():
    assert fcos_regress_ranges((64, 128, 256, 512), 5) == [(-1, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)]
    with pytest.raises(ValueError, match="4 values"):
        fcos_regress_ranges((64, 128), 5)


def test_retina_max_iou_assignment():
    anchors = torch.tensor([
        [0, 0, 10, 10],  # 0: IoU 1 with G0 -> G0
        [0, 0, 10, 20],  # 1: IoU 0.5 -> positive (>= 0.5)
        [5, 0, 15, 10],  # 2: IoU 1/3 -> negative
        [0, 0, 10, 22],  # 3: IoU 0.4545 -> ignored
        [3, 0, 13, 10],  # 4: IoU 0.538 -> G0
        [100, 100, 110, 110],  # 5: IoU 0 -> negative
        [200, 200, 210, 210],  # 6: G2's exact box (IoU 1) and G1's best (1/9): G2 assigned last wins
        [220, 220, 230, 230],  # 7: G1's best too (tie, 1/9 < 0.4): low-quality match -> G1
        [50, 50, 60, 60],  # 8: invalid -> ignored
    ], dtype=torch.float32)
    gts = torch.tensor([[0, 0, 10, 10], [200, 200, 230, 230], [200, 200, 210, 210]], dtype=torch.float32)
    valid = torch.ones(1, 9, dtype=torch.bool)
    valid[0, 8] = False
    res = retina_assign(anchors, [gts], valid)
    assert res.gt_index[0].tolist() == [0, 0, -1, -1, 0, -1, 2, 1, -1]
    assert res.ignored[0].tolist() == [False, False, False, True, False, False, False, False, True]
    # a second image without GTs: all valid anchors negative
    res = retina_assign(anchors, [gts, torch.zeros(0, 4)], torch.ones(2, 9, dtype=torch.bool))
    assert (res.gt_index[1] == -1).all() and not res.ignored[1].any()
    # min_pos_iou above G1's best IoU: no low-quality match for it (anchor 7 negative; 6 keeps G2 by IoU 1)
    res = retina_assign(anchors, [gts], valid, min_pos_iou=0.2)
    assert res.gt_index[0].tolist() == [0, 0, -1, -1, 0, -1, 2, -1, -1]


def test_retina_assign_chunks_agree():
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat(multi_anchors([(8, 8), (4, 4)], (8, 16), 4.0, 3, (0.5, 1.0, 2.0)))
    xy = torch.rand(2, 5, 2, generator=g) * 60
    wh = torch.rand(2, 5, 2, generator=g) * 40 + 4
    gts = [torch.cat([xy[i], xy[i] + wh[i]], dim=1) for i in range(2)]
    a = retina_assign(anchors, gts)
    b = retina_assign(anchors, gts, chunk_elements=37)
    assert torch.equal(a.gt_index, b.gt_index) and torch.equal(a.ignored, b.ignored)
    assert a.positive.sum(dim=1).min() > 0
