"""The contracts of a detector's exchangeable parts, written down: what :class:`~gfldet.models.detector.GFL`, the
criterion, the postprocessor and the exporter call on each, with shapes and meaning. An implementation need not
inherit anything; these are structural types (``typing.Protocol``), checkable with ``isinstance`` for the presence of
the members (``runtime_checkable``), not their signatures. The implementations in gfldet: box representations in
``box_representations.py``, quality estimators in ``quality.py``, assigners in ``assigners.py``, the prior generator in
``priors.py``; ``assemble.py`` builds them by name (``BOX_PARTS``, ``QUALITY_PARTS``, ``ASSIGNER_PARTS``).

Shapes: N images, A priors of all levels, C classes, K box channels per prior, P positives (or D detections),
M_i ground-truth boxes of image i, B = n + 1 bins. Distances are ``(l, t, r, b)`` from a prior's centre.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..ops.assign_result import AssignResult
from .criterion import GFLTargets
from .priors import Priors

__all__ = ["BoxRepresentationPart", "QualityEstimatorPart", "AssignerPart", "PriorGeneratorPart"]


@runtime_checkable
class BoxRepresentationPart(Protocol):
    """How a prior's box outputs become a box, what trains them, what a detection carries besides the box."""

    channels: int  # K: box outputs per prior (GFL: 4 (n + 1))
    loss_key: str | None  # the name of its loss term in the loss dict (None: trained by GIoU alone)
    loss_weight: float
    exportable: bool  # the exported graph and gfldet.deploy decode it (docs/onnx.md's distribution contract)

    def distances(self, logits: Tensor) -> Tensor:
        """``(..., K)`` outputs -> ``(..., 4)`` distances in strides (GFL: the expectation of each edge's
        distribution, paper eq. 5)."""

    def decode(self, logits: Tensor, centers: Tensor, strides: Tensor | float | None = None) -> Tensor:
        """``(..., K)`` outputs at ``(..., 2)`` centres -> ``(..., 4)`` xyxy boxes, unclipped (distances times
        ``strides``; None: centres and boxes in strides). The one decode: training, eager test and export call it."""

    def loss(self, logits: Tensor, centers: Tensor, target_boxes: Tensor, weight: Tensor) -> Tensor | None:
        """Its own loss term from ``(P, K)`` outputs, ``(P, 2)`` centres and ``(P, 4)`` target boxes (both in
        strides) and ``(P,)`` per-positive weights; summed and divided by 4 (edges). None: no term."""

    def extras(self, logits: Tensor, strides: Tensor) -> dict[str, Tensor]:
        """What a detection carries besides its box, from ``(D, K)`` outputs and ``(D,)`` strides (GFL:
        ``distributions (D, 4, B)``, ``edge_peak``, ``edge_entropy``, ``edge_std`` (pixels) ``(D, 4)``,
        ``loc_conf (D,)``); also called with leading batch dimensions by the exporter."""


@runtime_checkable
class QualityEstimatorPart(Protocol):
    """How localisation quality enters the classification score, its training target and the test score."""

    channels: int  # outputs per prior of its head branch (0: no branch)
    branch_loss_key: str | None  # the branch's own loss term (None: no branch, or trained through another loss)
    exportable: bool  # the graph's score output, sigmoid(joint(cls, quality)), is its test score (no rescore)

    def branch(self, feat_channels: int, num_anchors: int) -> nn.Module | None:
        """The head's quality branch on the regression tower, or None."""

    def joint(self, cls: Tensor, quality: Tensor | None) -> Tensor:
        """The classification logits the losses, the score threshold and the per-level top-k read (GFL: the class
        logits, a joint class-IoU score; GFLV2: class score x DGQP quality, in log space)."""

    def box_weight(self, cls_pos: Tensor, centers: Tensor, target_boxes: Tensor, iou: Tensor) -> Tensor:
        """``(P,)`` weight of each positive in the box losses (GFL: its largest class score)."""

    def classification_loss(self, cls: Tensor, targets: GFLTargets, ious: Tensor) -> dict[str, Tensor]:
        """The weighted classification term from ``cls (N, A, C)`` joint logits and ``ious (N, A)``."""

    def branch_target(self, centers: Tensor, target_boxes: Tensor, iou: Tensor) -> Tensor | None:
        """``(P,)`` target of the branch at the positives (None: no branch)."""

    def branch_loss(self, quality_pos: Tensor, target: Tensor, targets: GFLTargets) -> dict[str, Tensor]:
        """The branch's own loss term from its ``(P,)`` logits."""

    def rescore(self, scores: Tensor, quality: Tensor | None) -> Tensor:
        """Test score of ``(k,)`` candidates (which passed the threshold on ``sigmoid(joint)``) from the branch."""


@runtime_checkable
class AssignerPart(Protocol):
    """Which priors train towards which ground truth."""

    def __call__(self, priors: Priors, valid: Tensor, gt_boxes: Sequence[Tensor],
                 gt_ignore: Sequence[Tensor | None] | None = None) -> AssignResult:
        """From the batch's :class:`Priors`, ``valid (N, A)`` bool (inside each image's padded size), per image
        ``(M_i, 4)`` xyxy ground truths and optional ignore regions: per image and prior the assigned ground truth
        (``gt_index``, -1 none), ``positive``, ``ignored`` (gfldet.ops.assign_result.AssignResult)."""


@runtime_checkable
class PriorGeneratorPart(Protocol):
    """Where the priors are, per level."""

    strides: tuple[int, ...]

    @property
    def num_anchors(self) -> int:
        """Priors per feature-map location (1 for GFL)."""

    def grid(self, featmap_sizes: Sequence[tuple[int, int]], device: torch.device | str | None = None) -> list[Tensor]:
        """Per level ``(A_l, 4)`` xyxy priors, row-major, traceable with symbolic sizes (the exporter calls it)."""

    def anchor_strides(self, per_level: Sequence[Tensor]) -> Tensor:
        """``(A,)`` float32: the stride of each prior's level."""

    def __call__(self, featmap_sizes: Sequence[tuple[int, int]], device: torch.device) -> Priors:
        """The :class:`Priors` of these feature-map sizes (may be cached)."""

    def valid(self, featmap_sizes: Sequence[tuple[int, int]], pad_shapes: Sequence[tuple[int, int]],
              device: torch.device) -> Tensor:
        """``(N, A)`` bool: priors whose location lies inside each image's padded size."""
