"""ATSS: Adaptive Training Sample Selection (Zhang et al., CVPR 2020), vectorised over a batch.

For each ground-truth box (GT) and each pyramid level, the ``k`` anchors whose centres are nearest to the
GT centre are candidates. The IoU threshold of a GT is the mean plus the (unbiased) standard deviation of
its candidates' IoUs; a candidate is positive when its IoU reaches that threshold and its centre lies
strictly inside the GT (margin 0.01). An anchor positive for several GTs takes the one of highest IoU
(the first such GT on ties).

The ground truths of all images are processed together as one list of ``G`` boxes, each tagged with its
image, and in chunks of GTs, so that memory stays bounded: the only ``anchors x GTs`` quantity is the
centre-distance matrix of one chunk and one level. IoUs are computed only for the ``L * k`` candidates of
each GT, never for all anchors.

Shapes: N images, A anchors (all levels), L levels, G ground truths of the whole batch, K = L * k candidates.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .assign_result import AssignResult
from .boxes import box_centers, box_iof, box_iou_aligned

__all__ = ["atss_assign", "regular_grid", "window_candidates"]

# The reference marks ignored anchors with this distance; invalid anchors (outside an image's padded
# size) get +inf so that they are never preferred over ignored ones.
_IGNORE_DIST = 100000000.0


# Windowed candidate search (docs/speed.md): on a level whose anchor centres form a regular grid and that has
# more than this many anchors, a GT's k nearest anchors are first looked for in a small window of the grid
# around its centre; the result is used only where it provably equals the search over the whole level.
_WINDOW_MIN_ANCHORS = 1024


@torch.no_grad()
def atss_assign(
    anchors: Tensor,
    num_level_anchors: Sequence[int],
    gt_boxes: Sequence[Tensor],
    valid: Tensor | None = None,
    gt_ignore: Sequence[Tensor | None] | None = None,
    topk: int = 9,
    ignore_iof_thr: float = 0.5,
    chunk_elements: int = 1 << 23,
) -> AssignResult:
    """Assign anchors to ground truths with ATSS.

    Args:
        anchors: ``(A, 4)`` xyxy anchors of all levels, concatenated level by level, shared by the batch.
        num_level_anchors: anchors per level, summing to ``A``.
        gt_boxes: per image a ``(M_i, 4)`` xyxy tensor (``M_i`` may be 0).
        valid: optional ``(N, A)`` bool, anchors that exist for each image; invalid ones are never
            candidates and come back as ``ignored``.
        gt_ignore: optional per image ``(K_i, 4)`` ignore regions (e.g. COCO ``iscrowd`` boxes); anchors
            whose intersection-over-anchor-area with one exceeds ``ignore_iof_thr`` are not candidates
            and are ignored unless they still end up positive (as the reference does).
        topk: candidates per level and GT (9 in ATSS/GFL).
        chunk_elements: bound on the size of one anchors-by-GTs distance block.
    """
    num_images = len(gt_boxes)
    num_anchors = anchors.shape[0]
    device = anchors.device
    if sum(num_level_anchors) != num_anchors:
        raise ValueError(f"num_level_anchors {list(num_level_anchors)} does not sum to {num_anchors} anchors")
    if valid is None:
        valid = torch.ones(num_images, num_anchors, dtype=torch.bool, device=device)

    gt_index = torch.full((num_images, num_anchors), -1, dtype=torch.long, device=device)
    ignored = ~valid
    counts = [int(b.shape[0]) for b in gt_boxes]
    num_gt = sum(counts)

    # Anchors in ignore regions: excluded from candidates (distance set high) and ignored.
    ignore_dist = None
    if gt_ignore is not None and ignore_iof_thr > 0:
        for i, ign in enumerate(gt_ignore):
            if ign is not None and ign.numel() > 0:
                iof = box_iof(anchors, ign.to(anchors)).amax(dim=1)  # (A,)
                hit = iof > ignore_iof_thr
                if hit.any():
                    if ignore_dist is None:
                        ignore_dist = torch.zeros(num_images, num_anchors, dtype=torch.bool, device=device)
                    ignore_dist[i] |= hit
        if ignore_dist is not None:
            ignored = ignored | ignore_dist

    if num_gt == 0 or num_anchors == 0:
        return AssignResult(gt_index, gt_index >= 0, ignored, torch.zeros(0, dtype=torch.long, device=device))

    gts = torch.cat([b.to(anchors) for b in gt_boxes])  # (G, 4)
    gt_img = torch.repeat_interleave(torch.arange(num_images, device=device), torch.tensor(counts, device=device))
    gt_offset = torch.tensor([0] + counts[:-1], device=device).cumsum(0)  # (N,)

    anchor_pts = box_centers(anchors)  # (A, 2)
    gt_pts = box_centers(gts)  # (G, 2)

    all_valid = bool(valid.all())
    # 1. Candidates: per level, the k anchors nearest to each GT centre.  cand: (G, K) anchor indices.
    cand = torch.empty(num_gt, 0, dtype=torch.long, device=device)
    cand_ok = torch.empty(num_gt, 0, dtype=torch.bool, device=device)
    per_level, ok_level = [], []
    start = 0
    for n_l in num_level_anchors:
        end = start + n_l
        k = min(topk, n_l)
        if k == 0:
            start = end
            continue
        idx = torch.empty(num_gt, k, dtype=torch.long, device=device)
        ok = torch.ones(num_gt, k, dtype=torch.bool, device=device)
        rest = None  # GTs whose candidates still need the search over the whole level
        grid = regular_grid(anchor_pts[start:end]) if n_l > _WINDOW_MIN_ANCHORS else None
        if grid is not None:
            w_idx, accept = window_candidates(
                anchor_pts, start, grid, gt_pts, gt_img, k, None if all_valid else valid, ignore_dist
            )
            idx[accept] = w_idx[accept]
            rest = (~accept).nonzero().squeeze(1)
        if rest is None or rest.numel() > 0:
            rows = torch.arange(num_gt, device=device) if rest is None else rest
            f_idx, f_ok = _full_candidates(
                anchor_pts, start, end, k, gt_pts, rows, gt_img, None if all_valid else valid, ignore_dist, chunk_elements
            )
            idx[rows] = f_idx
            ok[rows] = f_ok
        per_level.append(idx + start)
        ok_level.append(ok)
        start = end
    if per_level:
        cand = torch.cat(per_level, dim=1)  # (G, K)
        cand_ok = torch.cat(ok_level, dim=1)  # (G, K): False where a level had fewer than k valid anchors

    # 2. Adaptive threshold: mean + unbiased std of the candidates' IoUs.
    cand_boxes = anchors[cand]  # (G, K, 4)
    ious = box_iou_aligned(cand_boxes, gts[:, None, :].expand_as(cand_boxes))  # (G, K)
    okf = cand_ok.to(ious.dtype)
    n_cand = cand_ok.sum(dim=1)  # (G,)
    mean = (ious * okf).sum(dim=1) / n_cand.to(ious.dtype)
    # The reference's torch.std accumulates in float64 (Welford); a float64 two-pass gives the same float32.
    ious64 = ious.double()
    dev = (ious64 - (ious64 * okf.double()).sum(dim=1, keepdim=True) / n_cand[:, None].double()) * okf.double()
    std = (dev.pow(2).sum(dim=1) / (n_cand.double() - 1)).sqrt().to(ious.dtype)
    thr = mean + std
    is_pos = cand_ok & (ious >= thr[:, None])

    # 3. The candidate's centre must lie inside the GT.
    cpts = anchor_pts[cand]  # (G, K, 2)
    inside = torch.stack(
        [
            cpts[..., 0] - gts[:, None, 0],
            cpts[..., 1] - gts[:, None, 1],
            gts[:, None, 2] - cpts[..., 0],
            gts[:, None, 3] - cpts[..., 1],
        ],
        dim=-1,
    ).amin(dim=-1) > 0.01
    is_pos &= inside

    # 4. Resolve anchors positive for several GTs: highest IoU, then lowest GT index.
    pos_g, pos_k = is_pos.nonzero(as_tuple=True)
    if pos_g.numel() > 0:
        key = gt_img[pos_g] * num_anchors + cand[pos_g, pos_k]  # flat (image, anchor)
        val = ious[pos_g, pos_k]
        best = torch.full((num_images * num_anchors,), -1.0, dtype=val.dtype, device=device)
        best = best.scatter_reduce(0, key, val, reduce="amax")
        winner = val == best[key]
        first = torch.full((num_images * num_anchors,), num_gt, dtype=torch.long, device=device)
        first = first.scatter_reduce(0, key[winner], pos_g[winner], reduce="amin")
        hit = first < num_gt
        flat = gt_index.view(-1)
        flat[hit] = first[hit] - gt_offset[gt_img[first[hit]]]
        ignored = ignored & ~(gt_index >= 0)
    return AssignResult(gt_index, gt_index >= 0, ignored, n_cand)


def _level_distances(anchor_pts: Tensor, index: Tensor, gt_pts: Tensor) -> Tensor:
    """Centre distances ``(g, n)`` between GTs ``(g, 2)`` and anchors ``anchor_pts[index]`` (``index`` ``(n,)`` or
    ``(g, n)``). The reference's ``sqrt(sum((anchor_centre - gt_centre)^2))``, written without a reduction over
    the coordinate pair (same float result: x*x == x.pow(2) and 0 + a + b == a + b), which is much faster; every
    element is computed by the same correctly rounded operations wherever it is computed, so the windowed and
    the whole-level searches see identical distances."""
    ax, ay = anchor_pts[index, 0], anchor_pts[index, 1]
    if index.dim() == 1:
        ax, ay = ax[None], ay[None]
    dx = ax - gt_pts[:, None, 0]
    dy = ay - gt_pts[:, None, 1]
    return (dx * dx).add_(dy * dy).sqrt_()


def _full_candidates(
    anchor_pts: Tensor,
    start: int,
    end: int,
    k: int,
    gt_pts: Tensor,
    rows: Tensor,
    gt_img: Tensor,
    valid: Tensor | None,
    ignore_dist: Tensor | None,
    chunk_elements: int,
) -> tuple[Tensor, Tensor]:
    """The ``k`` anchors of level ``[start, end)`` nearest to the centres of GTs ``rows``, searched over the whole
    level (GTs in chunks bounding the ``g x n_l`` distance block). Returns level-relative indices ``(r, k)`` and
    whether each is a valid anchor."""
    n_l = end - start
    level = torch.arange(start, end, device=anchor_pts.device)
    step = max(1, chunk_elements // max(1, 2 * n_l))
    out_idx, out_ok = [], []
    for r0 in range(0, rows.numel(), step):
        g = rows[r0 : r0 + step]
        dist = _level_distances(anchor_pts, level, gt_pts[g])  # (g, n_l)
        if ignore_dist is not None:
            dist.masked_fill_(ignore_dist[gt_img[g], start:end], _IGNORE_DIST)
        ok = None
        if valid is not None:
            ok = valid[gt_img[g], start:end]
            dist.masked_fill_(~ok, float("inf"))
        idx = dist.topk(k, dim=1, largest=False).indices  # (g, k)
        out_idx.append(idx)
        out_ok.append(torch.ones_like(idx, dtype=torch.bool) if ok is None else ok.gather(1, idx))
    return torch.cat(out_idx), torch.cat(out_ok)


def regular_grid(pts: Tensor) -> tuple[int, int, float, float, float, float] | None:
    """``(h, w, x0, y0, sx, sy)`` when the anchor centres ``pts`` ``(n, 2)`` are exactly the row-major grid
    ``(x0 + j * sx, y0 + i * sy)``, ``i < h``, ``j < w`` (one anchor per location, as gfldet's priors); else None."""
    n = pts.shape[0]
    if n < 4:
        return None
    ys = pts[:, 1]
    w = int((ys == ys[0]).sum())
    if w < 2 or n % w or n // w < 2:
        return None
    h = n // w
    x0, y0 = float(pts[0, 0]), float(pts[0, 1])
    sx, sy = float(pts[1, 0]) - x0, float(pts[w, 1]) - y0
    if not (sx > 0 and sy > 0):
        return None
    xs = x0 + torch.arange(w, device=pts.device, dtype=pts.dtype) * sx
    yv = y0 + torch.arange(h, device=pts.device, dtype=pts.dtype) * sy
    grid = torch.stack(torch.meshgrid(yv, xs, indexing="ij")[::-1], dim=-1).reshape(n, 2)
    return (h, w, x0, y0, sx, sy) if torch.equal(grid, pts) else None


def window_candidates(
    anchor_pts: Tensor,
    start: int,
    grid: tuple[int, int, float, float, float, float],
    gt_pts: Tensor,
    gt_img: Tensor,
    k: int,
    valid: Tensor | None,
    ignore_dist: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest anchors of each GT looked for among the anchors of a window of the level's grid around
    the GT centre. Returns level-relative indices ``(G, k)`` and ``accept`` ``(G,)``: True where the result is
    exactly what the search over the whole level gives (``topk`` of the whole row), i.e. where
      * the k smallest window distances are finite, below the ignore marker and pairwise distinct, and the
        (k+1)-th is strictly larger, so that the set and its ascending order do not depend on tie-breaking;
      * the k-th is smaller than a lower bound on the distance of every anchor outside the window.
    Elsewhere the caller falls back to the whole-level search (e.g. centres placed symmetrically between
    anchors, whose equal distances ``topk`` orders by its own rules).
    """
    h, w, x0, y0, sx, sy = grid
    device = anchor_pts.device
    r = int(math.ceil(math.sqrt(k) / 2)) + 1
    ww, wh = min(2 * r + 1, w), min(2 * r + 1, h)
    gx, gy = gt_pts[:, 0], gt_pts[:, 1]
    jc = torch.round((gx - x0) / sx).clamp(0, w - 1).long()
    ic = torch.round((gy - y0) / sy).clamp(0, h - 1).long()
    j0 = (jc - r).clamp(0, w - ww)
    i0 = (ic - r).clamp(0, h - wh)
    cols = j0[:, None] + torch.arange(ww, device=device)  # (G, ww)
    rows = i0[:, None] + torch.arange(wh, device=device)  # (G, wh)
    local = (rows[:, :, None] * w + cols[:, None, :]).reshape(gt_pts.shape[0], -1)  # (G, wh*ww), level-relative
    dist = _level_distances(anchor_pts, local + start, gt_pts)
    if ignore_dist is not None:
        dist.masked_fill_(ignore_dist[gt_img[:, None], local + start], _IGNORE_DIST)
    if valid is not None:
        dist.masked_fill_(~valid[gt_img[:, None], local + start], float("inf"))
    if dist.shape[1] <= k:
        return local[:, :k], torch.zeros(gt_pts.shape[0], dtype=torch.bool, device=device)
    vals, pos = dist.topk(k + 1, dim=1, largest=False)  # ascending
    # Lower bound on the distance of anchors outside the window: the gap to the nearest column / row beyond it.
    inf = torch.full_like(gx, float("inf"))
    left = torch.where(j0 > 0, gx - (x0 + (j0 - 1).to(gx.dtype) * sx), inf)
    right = torch.where(j0 + ww < w, (x0 + (j0 + ww).to(gx.dtype) * sx) - gx, inf)
    top = torch.where(i0 > 0, gy - (y0 + (i0 - 1).to(gy.dtype) * sy), inf)
    bottom = torch.where(i0 + wh < h, (y0 + (i0 + wh).to(gy.dtype) * sy) - gy, inf)
    bound = torch.stack([left, right, top, bottom], dim=1).amin(dim=1)
    kth = vals[:, k - 1]
    accept = (
        (kth < _IGNORE_DIST)
        & (vals[:, k] > kth)
        & (kth < bound * (1.0 - 1e-5))  # margin for the rounding of the bound and of the distances
    )
    if k > 1:
        accept &= (vals[:, 1:k] > vals[:, : k - 1]).all(dim=1)
    return local.gather(1, pos[:, :k]), accept
