"""The windowed ATSS candidate search (gfldet.ops.atss) gives exactly the assignment of the search over
whole levels: random float boxes, integer boxes and centres placed between anchors (ties, which fall back to
the whole-level search), partially valid anchors, crowd regions, GTs at the borders and beyond them."""
from __future__ import annotations

import math

import pytest
import torch

from gfldet.ops import atss as assign_mod
from gfldet.ops.atss import regular_grid, window_candidates, atss_assign
from gfldet.ops.priors import grid_anchors, valid_anchor_flags

STRIDES = (8, 16, 32, 64, 128)


def _geometry(hw):
    sizes = [(math.ceil(hw[0] / s), math.ceil(hw[1] / s)) for s in STRIDES]
    levels = grid_anchors(sizes, STRIDES)
    return sizes, torch.cat(levels), [int(a.shape[0]) for a in levels]


def _boxes(gen, n, h, w, integer=False, spill=0.0):
    side = torch.empty(n, 2).uniform_(math.log(4), math.log(min(h, w)), generator=gen).exp()
    ctr = torch.rand(n, 2, generator=gen) * torch.tensor([w * (1 + 2 * spill), h * (1 + 2 * spill)]) - torch.tensor([w * spill, h * spill])
    b = torch.cat([ctr - side / 2, ctr + side / 2], dim=1)
    if integer:
        b = b.round()
        b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2] + 1)
    return b


def _both(anchors, nla, gts, **kw):
    fast = atss_assign(anchors, nla, gts, **kw)
    saved = assign_mod._WINDOW_MIN_ANCHORS
    assign_mod._WINDOW_MIN_ANCHORS = 1 << 62  # whole-level search everywhere: the previous implementation
    try:
        slow = atss_assign(anchors, nla, gts, **kw)
    finally:
        assign_mod._WINDOW_MIN_ANCHORS = saved
    return fast, slow


def _assert_same(fast, slow):
    assert torch.equal(fast.gt_index, slow.gt_index)
    assert torch.equal(fast.positive, slow.positive)
    assert torch.equal(fast.ignored, slow.ignored)
    assert torch.equal(fast.num_candidates, slow.num_candidates)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["float", "integer", "spill"])
def test_window_equals_whole_level_search(seed, kind):
    gen = torch.Generator().manual_seed(seed)
    sizes, anchors, nla = _geometry((800, 1344))
    image_hw = [(800, 1333), (600, 1000)]
    gts = [_boxes(gen, n, h, w, integer=kind == "integer", spill=0.2 if kind == "spill" else 0.0)
           for n, (h, w) in zip((300, 50), image_hw)]
    pads = [(math.ceil(h / 32) * 32, math.ceil(w / 32) * 32) for h, w in image_hw]
    valid = valid_anchor_flags(sizes, STRIDES, pads)
    crowd = [_boxes(gen, 3, 800, 1333), None]
    _assert_same(*_both(anchors, nla, gts, valid=valid))
    _assert_same(*_both(anchors, nla, gts, valid=valid, gt_ignore=crowd))
    _assert_same(*_both(anchors, nla, gts))


def test_centres_between_anchors_and_on_anchors():
    """Centres on grid points and exactly half-way between them (many equal distances)."""
    sizes, anchors, nla = _geometry((512, 512))
    c = torch.arange(0, 512, 4, dtype=torch.float32)
    cx, cy = torch.meshgrid(c, c, indexing="xy")
    ctr = torch.stack([cx.reshape(-1), cy.reshape(-1)], 1)[::7]
    half = torch.tensor([10.0, 14.0])
    gts = [torch.cat([ctr - half, ctr + half], 1)]
    _assert_same(*_both(anchors, nla, gts))


def test_window_is_used_for_generic_boxes():
    """The window decides for almost every GT of float boxes (the fast path is actually taken)."""
    gen = torch.Generator().manual_seed(0)
    sizes, anchors, nla = _geometry((800, 1344))
    gts = _boxes(gen, 500, 800, 1333)
    pts = (anchors[:, :2] + anchors[:, 2:]) / 2
    gpts = (gts[:, :2] + gts[:, 2:]) / 2
    grid = regular_grid(pts[: nla[0]])
    assert grid is not None and grid[:2] == sizes[0] and grid[4:] == (8.0, 8.0)
    _, accept = window_candidates(pts, 0, grid, gpts, torch.zeros(500, dtype=torch.long), 9, None, None)
    assert accept.float().mean() > 0.99


def test_irregular_anchors_use_the_whole_level_search():
    gen = torch.Generator().manual_seed(1)
    sizes, anchors, nla = _geometry((512, 640))
    anchors = anchors + torch.rand(anchors.shape[0], 1, generator=gen)  # not a grid any more
    pts = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert regular_grid(pts[: nla[0]]) is None
    gts = [_boxes(gen, 40, 512, 640)]
    _assert_same(*_both(anchors, nla, gts))
