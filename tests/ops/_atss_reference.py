"""A slow, per-image re-implementation of mmdetection's ``ATSSAssigner.assign`` used as the test oracle.

It deliberately shares no code with ``gfldet.ops``: it follows the reference step by step on the image's
*valid* anchors only (as mmdetection's ATSS/GFL heads do, which assign ``flat_anchors[inside_flags]``
with ``num_level_anchors_inside``), and maps the result back onto all anchors.

Conventions of the returned tensors (those of ``gfldet.ops.assign_result.AssignResult`` for one image):
``gt_index`` (A,) int64, 0-based GT index or -1; ``ignored`` (A,) bool, invalid anchors or anchors the
reference marked -1 (ignore regions) that did not end up positive; ``num_candidates`` (M,) int64.
"""
from __future__ import annotations

import torch

INF = 100000000


def bbox_overlaps(bboxes1, bboxes2, mode="iou", eps=1e-6):
    """Pairwise IoU / IoF with mmdetection's arithmetic (clamp of the intersection, max(union, eps))."""
    area1 = (bboxes1[:, 2] - bboxes1[:, 0]) * (bboxes1[:, 3] - bboxes1[:, 1])
    area2 = (bboxes2[:, 2] - bboxes2[:, 0]) * (bboxes2[:, 3] - bboxes2[:, 1])
    lt = torch.max(bboxes1[:, None, :2], bboxes2[None, :, :2])
    rb = torch.min(bboxes1[:, None, 2:], bboxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    if mode == "iou":
        union = area1[:, None] + area2[None, :] - overlap
    else:
        union = area1[:, None].expand_as(overlap)
    union = torch.max(union, union.new_tensor([eps]))
    return overlap / union


def atss_assign_single(bboxes, num_level_bboxes, gt_bboxes, gt_bboxes_ignore=None, topk=9, ignore_iof_thr=0.5):
    """mmdetection's ATSSAssigner.assign on one image's (valid) anchors.

    Returns ``assigned_gt_inds`` (mmdet convention: 0 background, -1 ignored, i+1 GT i) and the number of
    candidates per GT.
    """
    num_gt, num_bboxes = gt_bboxes.size(0), bboxes.size(0)
    assigned_gt_inds = torch.zeros(num_bboxes, dtype=torch.long)
    if num_gt == 0 or num_bboxes == 0:
        # Returns before any ignore-region handling, as the reference does.
        return assigned_gt_inds, torch.zeros(num_gt, dtype=torch.long)

    overlaps = bbox_overlaps(bboxes, gt_bboxes)  # (A, M)

    gt_cx = (gt_bboxes[:, 0] + gt_bboxes[:, 2]) / 2.0
    gt_cy = (gt_bboxes[:, 1] + gt_bboxes[:, 3]) / 2.0
    gt_points = torch.stack((gt_cx, gt_cy), dim=1)
    bboxes_cx = (bboxes[:, 0] + bboxes[:, 2]) / 2.0
    bboxes_cy = (bboxes[:, 1] + bboxes[:, 3]) / 2.0
    bboxes_points = torch.stack((bboxes_cx, bboxes_cy), dim=1)
    distances = (bboxes_points[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()  # (A, M)

    if ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.numel() > 0:
        ignore_max = bbox_overlaps(bboxes, gt_bboxes_ignore, mode="iof").max(dim=1).values
        ignore_idxs = ignore_max > ignore_iof_thr
        distances[ignore_idxs, :] = INF
        assigned_gt_inds[ignore_idxs] = -1

    candidate_idxs = []
    start = 0
    for n in num_level_bboxes:
        end = start + n
        k = min(topk, n)
        _, idx = distances[start:end, :].topk(k, dim=0, largest=False)
        candidate_idxs.append(idx + start)
        start = end
    candidate_idxs = torch.cat(candidate_idxs, dim=0)  # (K, M)

    candidate_overlaps = overlaps[candidate_idxs, torch.arange(num_gt)]
    thr = candidate_overlaps.mean(0) + candidate_overlaps.std(0)
    is_pos = candidate_overlaps >= thr[None, :]

    # Centre strictly inside the GT (margin 0.01), one GT (column) at a time.
    cx = bboxes_cx[candidate_idxs]  # (K, M)
    cy = bboxes_cy[candidate_idxs]
    l_ = cx - gt_bboxes[:, 0]
    t_ = cy - gt_bboxes[:, 1]
    r_ = gt_bboxes[:, 2] - cx
    b_ = gt_bboxes[:, 3] - cy
    is_in_gts = torch.stack([l_, t_, r_, b_], dim=1).min(dim=1)[0] > 0.01
    is_pos = is_pos & is_in_gts

    # Highest IoU among the GTs an anchor is positive for; first GT on ties (torch.max's first maximum).
    overlaps_inf = torch.full_like(overlaps, -INF)
    gt_cols = torch.arange(num_gt)[None, :].expand_as(candidate_idxs)
    rows, cols = candidate_idxs[is_pos], gt_cols[is_pos]
    overlaps_inf[rows, cols] = overlaps[rows, cols]
    max_overlaps, argmax = overlaps_inf.max(dim=1)
    pos = max_overlaps != -INF
    assigned_gt_inds[pos] = argmax[pos] + 1
    return assigned_gt_inds, torch.full((num_gt,), candidate_idxs.shape[0], dtype=torch.long)


def reference_assign_image(anchors, num_level_anchors, gt_boxes, valid=None, gt_ignore=None, topk=9,
                           ignore_iof_thr=0.5):
    """Assign one image: run the reference on its valid anchors and map back onto all ``A`` anchors.

    Returns ``(gt_index (A,), ignored (A,), num_candidates (M,))`` in gfldet's conventions.
    """
    num_anchors = anchors.shape[0]
    if valid is None:
        valid = torch.ones(num_anchors, dtype=torch.bool)
    level_of = torch.repeat_interleave(torch.arange(len(num_level_anchors)), torch.tensor(list(num_level_anchors)))
    num_level_inside = [int(valid[level_of == lvl].sum()) for lvl in range(len(num_level_anchors))]
    inside = anchors[valid]
    assigned, num_cand = atss_assign_single(inside, num_level_inside, gt_boxes, gt_ignore, topk, ignore_iof_thr)
    gt_index = torch.full((num_anchors,), -1, dtype=torch.long)
    ignored = ~valid.clone()
    gt_index[valid] = torch.where(assigned > 0, assigned - 1, torch.full_like(assigned, -1))
    ignored[valid] = assigned < 0
    return gt_index, ignored, num_cand
