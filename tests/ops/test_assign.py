"""Tests of ``gfldet.ops.atss.atss_assign`` against a slow per-image re-implementation of mmdetection's
``ATSSAssigner`` (``tests/ops/_atss_reference.py``), run on each image's valid anchors only.

Boxes are random floats (never grid aligned) so that no two anchors are at exactly the same distance from
a GT centre: the choice among tied anchors is not specified by the reference.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from gfldet.ops.atss import atss_assign
from gfldet.ops.priors import grid_anchors, valid_anchor_flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _atss_reference import bbox_overlaps, reference_assign_image  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
STRIDES = (8, 16, 32, 64, 128)


# --------------------------------------------------------------------------------------------- helpers
def make_geometry(batch_hw, strides=STRIDES):
    """Anchors of a batch padded to ``batch_hw``: feature maps ``ceil(H / s) x ceil(W / s)``."""
    featmap_sizes = [(math.ceil(batch_hw[0] / s), math.ceil(batch_hw[1] / s)) for s in strides]
    levels = grid_anchors(featmap_sizes, strides)
    return featmap_sizes, torch.cat(levels), [int(lv.shape[0]) for lv in levels]


def level_of(num_level_anchors):
    return torch.repeat_interleave(torch.arange(len(num_level_anchors)), torch.tensor(num_level_anchors))


def random_boxes(gen, n, h, w, min_side=2.0, max_side=None):
    """``n`` random float xyxy boxes inside an ``h x w`` image, sides log-uniform in [min_side, max_side]."""
    if n == 0:
        return torch.zeros(0, 4)
    max_side = float(min(h, w)) if max_side is None else max_side
    side = torch.empty(n, 2).uniform_(math.log(min_side), math.log(max_side), generator=gen).exp()
    ctr = torch.rand(n, 2, generator=gen) * torch.tensor([float(w), float(h)])
    boxes = torch.cat([ctr - side / 2, ctr + side / 2], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    keep = ((boxes[:, 2] - boxes[:, 0]) > 1.0) & ((boxes[:, 3] - boxes[:, 1]) > 1.0)
    return boxes[keep]


def reference(anchors, num_level_anchors, gt_boxes, valid=None, gt_ignore=None, **kw):
    """Per-image reference for a whole batch: lists of (gt_index, ignored, num_candidates)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.std of a single candidate warns (degrees of freedom <= 0)
        for i, gts in enumerate(gt_boxes):
            v = None if valid is None else valid[i]
            ign = None if gt_ignore is None else gt_ignore[i]
            out.append(reference_assign_image(anchors, num_level_anchors, gts, v, ign, **kw))
    return out


def check_result_consistency(res, num_images, num_anchors):
    assert res.gt_index.shape == (num_images, num_anchors)
    assert res.gt_index.dtype == torch.long
    assert torch.equal(res.positive, res.gt_index >= 0)
    assert not (res.positive & res.ignored).any(), "an anchor is both positive and ignored"


def assert_matches_reference(anchors, num_level_anchors, gt_boxes, res, valid=None, gt_ignore=None, **kw):
    num_images = len(gt_boxes)
    check_result_consistency(res, num_images, anchors.shape[0])
    ref = reference(anchors, num_level_anchors, gt_boxes, valid, gt_ignore, **kw)
    for i, (gt_index, ignored, _num_cand) in enumerate(ref):
        diff = (gt_index != res.gt_index[i]).nonzero().flatten()
        assert diff.numel() == 0, (
            f"image {i}: gt_index differs at anchors {diff[:10].tolist()}: "
            f"expected {gt_index[diff[:10]].tolist()}, got {res.gt_index[i][diff[:10]].tolist()}"
        )
        diff = (ignored != res.ignored[i]).nonzero().flatten()
        assert diff.numel() == 0, (
            f"image {i}: ignored differs at anchors {diff[:10].tolist()}: "
            f"expected {ignored[diff[:10]].tolist()}, got {res.ignored[i][diff[:10]].tolist()}"
        )
    expected_cand = torch.cat([r[2] for r in ref])
    assert torch.equal(res.num_candidates.cpu().long(), expected_cand), (res.num_candidates, expected_cand)
    return ref


# ------------------------------------------------------------------------- 1. random batches vs reference
BATCH_HW = (320, 352)
PAD_SHAPES = [(320, 352), (200, 344), (288, 160)]


@pytest.mark.parametrize("seed", range(8))
def test_matches_reference_on_random_batches(seed):
    gen = torch.Generator().manual_seed(seed)
    featmap_sizes, anchors, nla = make_geometry(BATCH_HW)
    # Different pad shapes inside one batch, in a seed-dependent order, so each image has invalid anchors.
    pads = [PAD_SHAPES[j] for j in torch.randperm(3, generator=gen).tolist()][: 2 + seed % 2]
    valid = valid_anchor_flags(featmap_sizes, STRIDES, pads)
    assert not valid.all()
    gt_boxes = [random_boxes(gen, int(torch.randint(0, 31, (1,), generator=gen)), h, w) for h, w in pads]
    res = atss_assign(anchors, nla, gt_boxes, valid)
    assert_matches_reference(anchors, nla, gt_boxes, res, valid)
    if sum(len(b) for b in gt_boxes) > 0:
        assert res.positive.any()
    # Invalid anchors are never positive and always ignored.
    assert res.ignored[~valid].all()
    assert not res.positive[~valid].any()


@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_with_many_gts_small_chunks_and_crowd_boxes(seed):
    """Many GTs (overlapping, duplicates included), random ignore regions, and a chunk size that splits the
    GTs into many chunks."""
    gen = torch.Generator().manual_seed(100 + seed)
    featmap_sizes, anchors, nla = make_geometry(BATCH_HW)
    valid = valid_anchor_flags(featmap_sizes, STRIDES, PAD_SHAPES)
    gt_boxes, gt_ignore = [], []
    for h, w in PAD_SHAPES:
        b = random_boxes(gen, 100, h, w)
        gt_boxes.append(torch.cat([b, b[:5]]))  # exact duplicates: the first copy must win
        gt_ignore.append(random_boxes(gen, 2, h, w, min_side=40.0))
    gt_ignore[seed % 3] = None
    res = atss_assign(anchors, nla, gt_boxes, valid, gt_ignore=gt_ignore, chunk_elements=60_000)
    assert_matches_reference(anchors, nla, gt_boxes, res, valid, gt_ignore)
    for i, b in enumerate(gt_boxes):
        n = len(b) - 5
        assert not ((res.gt_index[i] >= n) & res.positive[i]).any(), "a duplicate GT took an anchor from its first copy"


def test_duplicate_gt_goes_to_first_index():
    _, anchors, nla = make_geometry(BATCH_HW)
    box = torch.tensor([[100.3, 80.7, 171.9, 140.2]])
    other = torch.tensor([[10.6, 200.1, 60.4, 290.8]])
    res = atss_assign(anchors, nla, [torch.cat([other, box, box])])
    assert (res.gt_index[0] == 1).sum() > 0
    assert (res.gt_index[0] == 2).sum() == 0
    alone = atss_assign(anchors, nla, [torch.cat([other, box])])
    assert torch.equal(res.gt_index, alone.gt_index)


# --------------------------------------------------------------------------------------- 2. images without GT
def test_image_without_gts_is_all_background():
    gen = torch.Generator().manual_seed(7)
    featmap_sizes, anchors, nla = make_geometry(BATCH_HW)
    pads = [(320, 352), (200, 344), (288, 160)]
    valid = valid_anchor_flags(featmap_sizes, STRIDES, pads)
    gt_boxes = [random_boxes(gen, 20, 320, 352), torch.zeros(0, 4), random_boxes(gen, 10, 288, 160)]
    res = atss_assign(anchors, nla, gt_boxes, valid)
    assert res.positive[0].any() and res.positive[2].any()
    assert (res.gt_index[1] == -1).all()
    assert torch.equal(res.ignored[1], ~valid[1])  # only the invalid anchors are ignored
    assert res.num_candidates.shape == (30,)
    assert_matches_reference(anchors, nla, gt_boxes, res, valid)

    # A batch with no GT at all.
    res = atss_assign(anchors, nla, [torch.zeros(0, 4), torch.zeros(0, 4)], valid[:2])
    assert (res.gt_index == -1).all() and not res.positive.any()
    assert torch.equal(res.ignored, ~valid[:2])
    assert res.num_candidates.numel() == 0


# ------------------------------------------------------------------------ 3. levels with fewer than k anchors
def test_levels_with_fewer_than_topk_valid_anchors():
    """A 100x120 image in a 320x352 batch has 4 valid anchors at stride 64 and 1 at stride 128; an 8x8 image
    has a single valid anchor per level. Each level contributes min(9, valid anchors) candidates."""
    gen = torch.Generator().manual_seed(3)
    featmap_sizes, anchors, nla = make_geometry(BATCH_HW)
    pads = [(100, 120), (320, 352), (8, 8)]
    valid = valid_anchor_flags(featmap_sizes, STRIDES, pads)
    lvl = level_of(nla)
    per_level_valid = [[int(valid[i][lvl == l].sum()) for l in range(len(nla))] for i in range(3)]
    assert per_level_valid[0] == [13 * 15, 7 * 8, 4 * 4, 2 * 2, 1]
    assert per_level_valid[1] == [40 * 44, 20 * 22, 10 * 11, 5 * 6, 3 * 3]
    assert per_level_valid[2] == [1, 1, 1, 1, 1]
    gt_boxes = [
        torch.cat([random_boxes(gen, 6, 100, 120), torch.tensor([[1.7, 2.3, 97.1, 118.9]])]),
        random_boxes(gen, 8, 320, 352),
        torch.tensor([[1.3, 2.1, 6.7, 7.2]]),
    ]
    res = atss_assign(anchors, nla, gt_boxes, valid)
    expected = [9 + 9 + 9 + 4 + 1] * len(gt_boxes[0]) + [9 * 5] * len(gt_boxes[1]) + [5]
    assert res.num_candidates.tolist() == expected
    assert_matches_reference(anchors, nla, gt_boxes, res, valid)
    # The 8x8 image's only candidates are the 5 anchors centred at (0, 0), outside its GT: no positive.
    assert not res.positive[2].any()


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_with_arbitrary_valid_masks(seed):
    """Sparse random valid masks: levels with 0, 1 or a few valid anchors, and an image without any."""
    gen = torch.Generator().manual_seed(200 + seed)
    _, anchors, nla = make_geometry(BATCH_HW)
    num_anchors = anchors.shape[0]
    lvl = level_of(nla)
    p = [0.5, 0.02, 0.004, 0.0][seed]
    valid = torch.stack(
        [
            torch.rand(num_anchors, generator=gen) < p,
            torch.rand(num_anchors, generator=gen) < 0.9,
            (torch.rand(num_anchors, generator=gen) < 0.3) & (lvl != 4) & (lvl != 1),  # empty levels
        ]
    )
    gt_boxes = [random_boxes(gen, int(torch.randint(1, 20, (1,), generator=gen)), *BATCH_HW) for _ in range(3)]
    res = atss_assign(anchors, nla, gt_boxes, valid)
    assert_matches_reference(anchors, nla, gt_boxes, res, valid)
    assert not res.positive[~valid].any()


def test_single_candidate_gives_no_positive():
    """One level with one anchor: the std of a single IoU is NaN in the reference, so nothing is positive."""
    anchors = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    gts = [torch.tensor([[1.5, 1.5, 19.5, 19.5]])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = atss_assign(anchors, [1], gts)
    assert res.gt_index.tolist() == [[-1]]
    assert res.num_candidates.tolist() == [1]
    assert_matches_reference(anchors, [1], gts, res)


# ------------------------------------------------------------------------------------- 4. ignore regions
def test_crowd_box_excludes_and_ignores_anchors():
    """GT 0 lies inside a crowd box: every anchor whose centre could make it positive has IoF > 0.5 with the
    crowd box, so with the crowd box it has no positive and its former positives are ignored. GT 1, outside
    the crowd box, keeps its positives."""
    featmap_sizes, anchors, nla = make_geometry(BATCH_HW)
    valid = valid_anchor_flags(featmap_sizes, STRIDES, [(320, 352)])
    crowd = torch.tensor([[10.3, 10.7, 200.1, 300.9]])
    gts = [torch.tensor([[80.2, 120.6, 121.9, 165.3], [250.4, 60.2, 330.8, 200.5]])]

    plain = atss_assign(anchors, nla, gts, valid)
    with_crowd = atss_assign(anchors, nla, gts, valid, gt_ignore=[crowd])
    assert_matches_reference(anchors, nla, gts, with_crowd, valid, [crowd])

    hit = bbox_overlaps(anchors, crowd, mode="iof")[:, 0] > 0.5
    lvl = level_of(nla)
    # Every level keeps at least topk non-ignored valid anchors: ignored anchors are never candidates here.
    assert all(int((~hit & valid[0] & (lvl == l)).sum()) >= 9 for l in range(len(nla)))

    former = plain.gt_index[0] == 0
    assert former.sum() > 0
    assert hit[former].all()
    assert (with_crowd.gt_index[0] == 0).sum() == 0
    assert with_crowd.ignored[0][former].all()
    assert torch.equal(with_crowd.ignored[0], hit | ~valid[0])
    assert not (with_crowd.positive[0] & hit).any()
    assert (with_crowd.gt_index[0] == 1).sum() > 0

    # ignore_iof_thr <= 0 disables ignore regions (mmdetection's default for ATSS is -1).
    off = atss_assign(anchors, nla, gts, valid, gt_ignore=[crowd], ignore_iof_thr=-1)
    assert torch.equal(off.gt_index, plain.gt_index) and torch.equal(off.ignored, plain.ignored)
    # None and empty ignore tensors are no-ops.
    for ign in (None, torch.zeros(0, 4)):
        res = atss_assign(anchors, nla, gts, valid, gt_ignore=[ign])
        assert torch.equal(res.gt_index, plain.gt_index) and torch.equal(res.ignored, plain.ignored)


def test_ignored_anchor_that_is_still_a_candidate_can_be_positive():
    """Level 0 has 4 anchors, all candidates (k = 4) even when one is in an ignore region (distance 1e8).
    That anchor has the best IoU and its centre is inside the GT: the reference makes it positive, which
    overrides the ignore mark. Level 1 has enough anchors that ignored ones are never candidates."""
    level0 = torch.tensor([[0.0, 0.0, 20.0, 20.0], [30.0, 0.0, 50.0, 20.0], [0.0, 30.0, 20.0, 50.0], [30.0, 30.0, 50.0, 50.0]])
    xs = torch.arange(6, dtype=torch.float32) * 9.0 + 1.1
    yy, xx = torch.meshgrid(xs, xs, indexing="ij")
    c = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    level1 = torch.cat([c - 3.0, c + 3.0], 1)
    anchors = torch.cat([level0, level1])
    nla = [4, 36]
    gts = [torch.tensor([[1.3, 1.7, 19.1, 18.6]])]
    crowd = [torch.tensor([[-5.0, -5.0, 15.0, 25.0]])]  # IoF 0.75 with anchor 0

    res = atss_assign(anchors, nla, gts, gt_ignore=crowd)
    assert_matches_reference(anchors, nla, gts, res, None, crowd)
    assert res.gt_index[0, 0].item() == 0
    assert not res.ignored[0, 0]
    hit = bbox_overlaps(anchors, crowd[0], mode="iof")[:, 0] > 0.5
    assert hit[0] and hit[4:].sum() > 0
    # Level-1 anchors in the ignore region are ignored and never positive.
    assert res.ignored[0, 4:][hit[4:]].all()
    assert not res.positive[0, 4:][hit[4:]].any()


def test_ignore_regions_of_an_image_without_gts_are_ignored():
    """Deliberate departure from mmdetection: its ATSSAssigner returns before the ignore step when an image has
    no GT (everything background there), while gfldet ignores anchors inside crowd regions in every image, so a
    crowd-only image never teaches "background" on the crowd. (mmdetection's GFL config never enables ignore
    regions at all, so parity is unaffected.)"""
    featmap_sizes, anchors, nla = make_geometry(BATCH_HW)
    valid = valid_anchor_flags(featmap_sizes, STRIDES, [(320, 352), (320, 352)])
    gts = [torch.tensor([[50.3, 60.7, 150.2, 170.9]]), torch.zeros(0, 4)]
    ign = [None, torch.tensor([[100.5, 100.5, 300.5, 300.5]])]
    res = atss_assign(anchors, nla, gts, valid, gt_ignore=ign)
    ref_gt_index, ref_ignored, _ = reference(anchors, nla, gts, valid, ign)[1]
    assert (ref_gt_index == -1).all() and not ref_ignored.any()
    assert (res.gt_index[1] == -1).all()
    hit = bbox_overlaps(anchors, ign[1], mode="iof")[:, 0] > 0.5
    assert hit.any() and torch.equal(res.ignored[1], hit | ~valid[1])


# ---------------------------------------------------------------------------------- 5. crowded, big images
_CROWDED_SCRIPT = textwrap.dedent(
    """
    import json, math, resource, sys, time
    import torch
    from gfldet.ops.atss import atss_assign
    from gfldet.ops.priors import grid_anchors, valid_anchor_flags

    out = sys.argv[1]
    strides = (8, 16, 32, 64, 128)
    fs = [(math.ceil(800 / s), math.ceil(1344 / s)) for s in strides]
    levels = grid_anchors(fs, strides)
    anchors = torch.cat(levels)
    nla = [int(l.shape[0]) for l in levels]
    valid = valid_anchor_flags(fs, strides, [(800, 1344), (800, 1344)])
    gen = torch.Generator().manual_seed(1234)
    gts = []
    for _ in range(2):
        side = torch.empty(1000, 2).uniform_(math.log(2.0), math.log(400.0), generator=gen).exp()
        ctr = torch.rand(1000, 2, generator=gen) * torch.tensor([1333.0, 800.0])
        b = torch.cat([ctr - side / 2, ctr + side / 2], 1)
        b[:, 0::2] = b[:, 0::2].clamp(0, 1333)
        b[:, 1::2] = b[:, 1::2].clamp(0, 800)
        gts.append(b)
    atss_assign(anchors[:40], [40], [gts[0][:2]])  # warm-up of lazily initialised kernels
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    t0 = time.perf_counter()
    res = atss_assign(anchors, nla, gts, valid)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    torch.save(dict(anchors=anchors, nla=nla, valid=valid, gts=gts, gt_index=res.gt_index,
                    ignored=res.ignored, num_candidates=res.num_candidates), out)
    print(json.dumps(dict(seconds=seconds, peak_increase=after - before, rss_before=before)))
    """
)


@pytest.mark.slow
def test_crowded_images_memory_time_and_reference(tmp_path):
    out = tmp_path / "crowded.pt"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run(
        [sys.executable, "-c", _CROWDED_SCRIPT, str(out)], env=env, cwd=str(REPO_ROOT),
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"crowded 2 x 1000 GTs, 800x1344: {stats['seconds']:.2f} s, peak RSS increase "
          f"{stats['peak_increase'] / 2**20:.1f} MiB")
    assert stats["peak_increase"] < 2 * 2**30, stats

    data = torch.load(out)
    anchors, nla, valid, gts = data["anchors"], data["nla"], data["valid"], data["gts"]
    gt_index = data["gt_index"]
    assert gt_index.shape == (2, anchors.shape[0])
    assert data["num_candidates"].tolist() == [45] * 2000
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    for i in range(2):
        pos = gt_index[i] >= 0
        assert pos.sum() > 1000
        g = gts[i][gt_index[i][pos]]
        c = centres[pos]
        margin = torch.stack([c[:, 0] - g[:, 0], c[:, 1] - g[:, 1], g[:, 2] - c[:, 0], g[:, 3] - c[:, 1]], 1)
        assert (margin.amin(1) > 0.01).all(), "a positive anchor's centre is outside its GT"
    # Exact agreement with the reference on the first image (the reference is slow: seconds per image).
    ((ref_index, ref_ignored, ref_cand),) = reference(anchors, nla, gts[:1], valid[:1])
    assert torch.equal(ref_index, gt_index[0]), f"{(ref_index != gt_index[0]).sum()} anchors differ"
    assert torch.equal(ref_ignored, data["ignored"][0])
    assert torch.equal(ref_cand, data["num_candidates"][:1000])


# ----------------------------------------------------------------------------------------- 6. invariance
@pytest.mark.parametrize("seed", range(2))
def test_result_of_an_image_does_not_depend_on_the_batch(seed):
    gen = torch.Generator().manual_seed(300 + seed)
    featmap_sizes, anchors, nla = make_geometry(BATCH_HW)
    pads = [(288, 160), (320, 352), (200, 344), (288, 160)]
    valid = valid_anchor_flags(featmap_sizes, STRIDES, pads)
    gt_boxes = [random_boxes(gen, int(torch.randint(0, 40, (1,), generator=gen)), h, w) for h, w in pads]
    gt_boxes[0] = random_boxes(gen, 25, *pads[0])
    gt_ignore = [random_boxes(gen, 1, h, w, min_side=30.0) for h, w in pads]

    full = atss_assign(anchors, nla, gt_boxes, valid, gt_ignore=gt_ignore)
    assert full.positive[0].any()
    for order in ([0], [3, 0], [2, 1, 0], [0, 3, 2, 1]):
        sub = atss_assign(
            anchors, nla, [gt_boxes[j] for j in order], valid[order], gt_ignore=[gt_ignore[j] for j in order]
        )
        for pos, j in enumerate(order):
            assert torch.equal(sub.gt_index[pos], full.gt_index[j]), (order, j)
            assert torch.equal(sub.ignored[pos], full.ignored[j]), (order, j)
    # Nor on how the GTs are chunked.
    for chunk in (1, 50_000, 1 << 30):
        res = atss_assign(anchors, nla, gt_boxes, valid, gt_ignore=gt_ignore, chunk_elements=chunk)
        assert torch.equal(res.gt_index, full.gt_index) and torch.equal(res.ignored, full.ignored), chunk
        assert torch.equal(res.num_candidates, full.num_candidates)
    assert_matches_reference(anchors, nla, gt_boxes, full, valid, gt_ignore)
