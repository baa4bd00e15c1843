"""Anchors of one or several shapes per location (gfldet.ops.priors)."""
from __future__ import annotations

import torch

from gfldet.ops.boxes import box_centers
from gfldet.ops.priors import grid_anchors, multi_anchors


def test_multi_anchors():
    sizes, strides = [(3, 4), (2, 2)], (8, 16)
    one = multi_anchors(sizes, strides, 8.0, 1, (1.0,))
    for x, y in zip(one, grid_anchors(sizes, strides, 8.0)):
        torch.testing.assert_close(x, y)
    nine = multi_anchors(sizes, strides, 4.0, 3, (0.5, 1.0, 2.0))
    assert [t.shape[0] for t in nine] == [3 * 4 * 9, 2 * 2 * 9]
    loc0 = nine[0][:9]  # the 9 anchors of location (0, 0), ratio-major then scale
    wh = loc0[:, 2:] - loc0[:, :2]
    torch.testing.assert_close(box_centers(loc0), torch.zeros(9, 2))
    torch.testing.assert_close((wh[:, 0] * wh[:, 1]).sqrt()[3:6], 32.0 * 2 ** (torch.arange(3.0) / 3))  # ratio 1
    torch.testing.assert_close(wh[:3, 1] / wh[:3, 0], torch.full((3,), 0.5))  # ratio h/w 0.5
    torch.testing.assert_close(box_centers(nine[0][9:18]), torch.tensor([[8.0, 0.0]]).expand(9, 2))
