"""The quality estimators the paper compares (Table 1): joint QFL score (GFL), focal loss, centerness / IoU branch.

GFL's joint class-quality score is trained with QFL; the others are a plain classifier trained with focal loss,
and that classifier plus a centerness or IoU branch.

A quality estimator decides the classification loss, the per-positive weight of the box losses, the loss of its
own branch (``channels`` outputs per prior on the regression tower, 0 without a branch) and the test-time score.
Adding one is a new class here (or anywhere) plus an assembly (gfldet.models.assemble); the detector is unchanged.

Shapes: N images, A priors, C classes, P positives of the batch, k candidates of a level at test time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.boxes import centerness_target
from ..ops.losses import EPS32, quality_focal_loss_sparse, reduce_mean, sigmoid_focal_loss
from .criterion import GFLTargets

__all__ = ["QualityEstimator", "JointQFL", "FocalClassifier", "CenternessBranch", "IoUBranch", "batch_positives"]


def batch_positives(targets: GFLTargets) -> Tensor:
    """The positives of the batch, averaged over processes, at least 1 (mmdetection's ATSS normaliser)."""
    return reduce_mean(targets.positive.sum().to(torch.float32)).clamp(min=1.0)


class QualityEstimator:
    """The interface, and its defaults: no branch, box losses unweighted, the test score is the class score."""

    channels = 0

    def __init__(self, loss_weight: float = 1.0, branch_weight: float = 1.0):
        self.loss_weight, self.branch_weight = loss_weight, branch_weight

    @torch.no_grad()
    def box_weight(self, cls_pos: Tensor, centers: Tensor, target_boxes: Tensor, iou: Tensor) -> Tensor:
        """``(P,)`` weight of each positive in the box losses (``cls_pos (P, C)`` its class logits, ``iou (P,)``)."""
        return torch.ones_like(iou)

    def classification_loss(self, cls: Tensor, targets: GFLTargets, ious: Tensor) -> dict[str, Tensor]:
        """The weighted classification term from ``cls (N, A, C)`` logits and ``ious (N, A)`` (0 off positives)."""
        raise NotImplementedError

    def branch_target(self, centers: Tensor, target_boxes: Tensor, iou: Tensor) -> Tensor | None:
        """``(P,)`` target of the branch's output at the positives (None: no branch)."""
        return None

    def branch_loss(self, quality_pos: Tensor, target: Tensor, targets: GFLTargets) -> dict[str, Tensor]:
        """``loss_quality``: BCE of the branch's ``(P,)`` logits towards ``target``, normalised by the positives."""
        bce = F.binary_cross_entropy_with_logits(quality_pos.float(), target, reduction="sum")
        return {"loss_quality": self.branch_weight * bce / batch_positives(targets)}

    def rescore(self, scores: Tensor, quality: Tensor | None) -> Tensor:
        """Test-time score of ``k`` candidates from their ``(k,)`` class scores and branch logits (or None)."""
        return scores


class FocalClassifier(QualityEstimator):
    """A plain classifier trained with sigmoid focal loss on one-hot targets (``loss_cls``), normalised by the
    positives of the batch (mmdetection's ATSS / RetinaNet)."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, loss_weight: float = 1.0, branch_weight: float = 1.0):
        super().__init__(loss_weight, branch_weight)
        self.alpha, self.gamma = alpha, gamma

    def classification_loss(self, cls: Tensor, targets: GFLTargets, ious: Tensor) -> dict[str, Tensor]:
        num_classes = cls.shape[-1]
        flat = cls.reshape(-1, num_classes)
        onehot = F.one_hot(targets.labels.reshape(-1), num_classes + 1)[:, :num_classes].to(flat.dtype)  # bg: zeros
        fl = sigmoid_focal_loss(flat, onehot, self.alpha, self.gamma, weight=targets.label_weights.reshape(-1, 1),
                                reduction="sum")
        return {"loss_cls": self.loss_weight * fl / batch_positives(targets)}


class JointQFL(QualityEstimator):
    """GFL's joint class-quality score: QFL towards the IoU of the decoded box at the positive's class
    (``loss_qfl``), normalised by the positives (each image counting at least 1); each positive's box losses
    are weighted by its highest detached class score."""

    def __init__(self, beta: float = 2.0, loss_weight: float = 1.0):
        super().__init__(loss_weight)
        self.beta = beta

    @torch.no_grad()
    def box_weight(self, cls_pos: Tensor, centers: Tensor, target_boxes: Tensor, iou: Tensor) -> Tensor:
        return cls_pos.detach().float().sigmoid().amax(dim=1)

    def classification_loss(self, cls: Tensor, targets: GFLTargets, ious: Tensor) -> dict[str, Tensor]:
        qfl = quality_focal_loss_sparse(cls.reshape(-1, cls.shape[-1]), targets.labels.reshape(-1), ious.reshape(-1),
                                        beta=self.beta, weight=targets.label_weights.reshape(-1), reduction="sum")
        num_pos = reduce_mean(targets.num_pos_avg.to(qfl))
        return {"loss_qfl": self.loss_weight * qfl / (num_pos + EPS32)}


class CenternessBranch(FocalClassifier):
    """A focal-loss classifier and a centerness branch (FCOS / ATSS): BCE towards the centerness of the prior's
    centre in its GT, box losses weighted by that centerness, test score ``sigmoid(cls) * sigmoid(centerness)``."""

    channels = 1

    @torch.no_grad()
    def box_weight(self, cls_pos: Tensor, centers: Tensor, target_boxes: Tensor, iou: Tensor) -> Tensor:
        return centerness_target(centers, target_boxes)

    def branch_target(self, centers: Tensor, target_boxes: Tensor, iou: Tensor) -> Tensor:
        return centerness_target(centers, target_boxes)

    def rescore(self, scores: Tensor, quality: Tensor | None) -> Tensor:
        return scores * quality.float().sigmoid()


class IoUBranch(CenternessBranch):
    """A focal-loss classifier and an IoU branch: BCE towards the IoU of the decoded box with its GT, box losses
    unweighted, test score ``sigmoid(cls) * sigmoid(iou)``."""

    @torch.no_grad()
    def box_weight(self, cls_pos: Tensor, centers: Tensor, target_boxes: Tensor, iou: Tensor) -> Tensor:
        return torch.ones_like(iou)

    def branch_target(self, centers: Tensor, target_boxes: Tensor, iou: Tensor) -> Tensor:
        return iou
