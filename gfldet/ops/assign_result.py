"""The result every assigner returns (gfldet.ops.atss, gfldet.ops.fcos_retina; the parts in gfldet.models.assigners)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["AssignResult"]


@dataclass
class AssignResult:
    """What an assigner decided for every anchor of every image (ATSS, FCOS-style and max-IoU all return it).

    Attributes:
        gt_index: ``(N, A)`` int64, the index of the assigned GT within its image's GT list, or -1.
        positive: ``(N, A)`` bool, anchors assigned to a GT.
        ignored: ``(N, A)`` bool, anchors inside an ignore region or invalid for the image; they are
            neither positive nor negative (weight 0 in the classification loss).
        num_candidates: ``(G,)`` the number of candidates each GT had (ATSS; the others' own count per GT).
    """

    gt_index: Tensor
    positive: Tensor
    ignored: Tensor
    num_candidates: Tensor
