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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import box_centers, box_iof, box_iou_aligned

__all__ = ["atss_assign", "AssignResult"]

# The reference marks ignored anchors with this distance; invalid anchors (outside an image's padded
# size) get +inf so that they are never preferred over ignored ones.
_IGNORE_DIST = 100000000.0


@dataclass
class AssignResult:
    """What ATSS decided for every anchor of every image.

    Attributes:
        gt_index: ``(N, A)`` int64, the index of the assigned GT within its image's GT list, or -1.
        positive: ``(N, A)`` bool, anchors assigned to a GT.
        ignored: ``(N, A)`` bool, anchors inside an ignore region or invalid for the image; they are
            neither positive nor negative (weight 0 in the classification loss).
        num_candidates: ``(G,)`` the number of candidates each GT had.
    """

    gt_index: Tensor
    positive: Tensor
    ignored: Tensor
    num_candidates: Tensor


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
    cand_chunks, cand_ok_chunks = [], []
    max_level = max(num_level_anchors)
    step = max(1, chunk_elements // max(1, 2 * max_level))
    for g0 in range(0, num_gt, step):
        g1 = min(num_gt, g0 + step)
        img = gt_img[g0:g1]
        ok_rows = None if all_valid else valid[img]  # (g, A)
        blocked = None if ignore_dist is None else ignore_dist[img]
        per_level, ok_level = [], []
        start = 0
        for n_l in num_level_anchors:
            end = start + n_l
            k = min(topk, n_l)
            if k == 0:
                start = end
                continue
            # The reference's sqrt(sum((anchor_centre - gt_centre)^2)), written without a reduction over the
            # coordinate pair (same float result: x*x == x.pow(2) and 0 + a + b == a + b), which is much faster.
            dx = anchor_pts[None, start:end, 0] - gt_pts[g0:g1, None, 0]
            dy = anchor_pts[None, start:end, 1] - gt_pts[g0:g1, None, 1]
            dist = (dx * dx).add_(dy * dy).sqrt_()  # (g, n_l)
            del dx, dy
            if blocked is not None:
                dist.masked_fill_(blocked[:, start:end], _IGNORE_DIST)
            if ok_rows is not None:
                ok = ok_rows[:, start:end]
                dist.masked_fill_(~ok, float("inf"))
            idx = dist.topk(k, dim=1, largest=False).indices  # (g, k)
            per_level.append(idx + start)
            ok_level.append(torch.ones_like(idx, dtype=torch.bool) if ok_rows is None else ok.gather(1, idx))
            start = end
        cand_chunks.append(torch.cat(per_level, dim=1))
        cand_ok_chunks.append(torch.cat(ok_level, dim=1))
    cand = torch.cat(cand_chunks)  # (G, K)
    cand_ok = torch.cat(cand_ok_chunks)  # (G, K): False where a level had fewer than k valid anchors

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
