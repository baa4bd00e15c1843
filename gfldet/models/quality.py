"""Quality estimators: the joint QFL score (GFL), GFLV2's distribution-guided joint score, and the ones the GFL
paper compares in Table 1: focal loss, centerness / IoU branch.

GFL's joint class-quality score is trained with QFL; GFLV2's joint score is the class score times the quality
its DGQP reads off the edge distributions, trained with QFL; the others are a plain classifier trained with focal
loss, and that classifier plus a centerness or IoU branch.

A quality estimator decides the head's quality branch (``channels`` outputs per prior, 0 without one; built by
``branch``), the classification input (``joint``), the classification loss, the per-positive weight of the box
losses, the loss of its branch and the test-time score.
Adding one is a new class here (or anywhere) plus an assembly (gfldet.models.assemble); the detector is unchanged.

Shapes: N images, A priors, C classes, P positives of the batch, k candidates of a level at test time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from torch import nn

from ..errors import GfldetError
from ..ops.boxes import centerness_target
from ..ops.dgqp import joint_logit
from ..ops.losses import EPS32, quality_focal_loss_sparse, reduce_mean, sigmoid_focal_loss
from .branches import DGQP, ConvBranch
from .criterion import GFLTargets, batch_positives

__all__ = ["QualityEstimator", "JointQFL", "JointDGQP", "FocalClassifier", "CenternessBranch", "IoUBranch",
           "batch_positives"]


class QualityEstimator:
    """The interface, and its defaults: no branch, box losses unweighted, the test score is the class score (the
    whole contract: :class:`gfldet.models.parts.QualityEstimatorPart`)."""

    channels = 0
    exportable = False  # the graph outputs sigmoid(joint) as the score: right only where rescore changes nothing
    branch_loss_key: str | None = "loss_quality"  # the branch's own loss term (None: trained through another)

    def __init__(self, loss_weight: float = 1.0, branch_weight: float = 1.0):
        self.loss_weight, self.branch_weight = loss_weight, branch_weight

    def branch(self, feat_channels: int, num_anchors: int) -> nn.Module | None:
        """The head's quality branch (gfldet.models.branches): a 3x3 convolution on the regression tower with
        ``channels`` outputs per anchor, or None without a branch."""
        return ConvBranch(feat_channels, num_anchors * self.channels) if self.channels else None

    def joint(self, cls: Tensor, quality: Tensor | None) -> Tensor:
        """The classification logits the losses and the test-time score read: the class logits themselves
        (``quality``, broadcastable against ``cls`` with a class dimension of 1, is used by :meth:`rescore`)."""
        return cls

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
        """Test-time score of ``k`` candidates from their ``(k,)`` class scores (``sigmoid`` of :meth:`joint`, which
        the score threshold and top-k read) and branch logits (or None)."""
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

    exportable = True  # its test score is sigmoid(joint) (GFLV2's joint score too)

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


class JointDGQP(JointQFL):
    """GFLV2: the joint score ``sigmoid(cls) * sigmoid(q)`` with ``q`` the logit of the DGQP branch
    (gfldet.models.branches.DGQP), trained with QFL on that probability (``loss_qfl``); box losses weighted by
    the highest detached joint score; the test score is the joint score.

    The joint score is carried as its logit (gfldet.ops.dgqp.joint_logit), so QFL, the box weights (``sigmoid``
    of it is the joint probability itself) and the test-time score use GFL's code. The branch has no loss of
    its own: QFL trains it, and through it the distributions.

    Departures from the official GFocalV2 (a fork of mmdetection 2.6), where gfldet follows mmdetection 3.3's GFL
    head, as the parity fixture ``mmdet_gflv2_r18_c64_k6.pt`` (3.3's GFL head with the official DGQP forward) does:

    * the classifier has ``num_classes`` outputs; the official one has ``num_classes + 1`` (mmdetection 2.x's
      ``use_sigmoid=False`` adds a background column, trained towards 0, ignored at test time, and included in
      the max that weights the box losses). Official checkpoints load with that column dropped
      (gfldet.models.mmdet.drop_background_column);
    * the box losses are normalised by the sum of their weights clamped at >= 1 (3.3); 2.6 does not clamp, which
      matters early in training, when the joint scores (about 0.01 x 0.5) of fewer than ~200 positives sum below 1;
    * at test time the score threshold comes first, then the top ``nms_pre`` (location, class) pairs per level
      (3.3's ``filter_scores_and_topk``); 2.6 keeps the top ``nms_pre`` locations by their best joint score, then
      thresholds. Published AP measured with 2.6 may differ slightly.
    """

    channels = 1
    branch_loss_key = None

    def __init__(self, beta: float = 2.0, loss_weight: float = 1.0, reg_max: int = 16, topk: int = 4,
                 branch_channels: int = 64, add_mean: bool = True):
        super().__init__(beta, loss_weight)
        self.reg_max, self.topk, self.branch_channels, self.add_mean = reg_max, topk, branch_channels, add_mean

    def branch(self, feat_channels: int, num_anchors: int) -> nn.Module:
        if num_anchors != 1:
            raise GfldetError(f"GFLV2's DGQP reads one distribution per location; got {num_anchors} anchors per location")
        return DGQP(self.reg_max, self.topk, self.branch_channels, self.add_mean)

    def joint(self, cls: Tensor, quality: Tensor | None) -> Tensor:
        return joint_logit(cls, quality)


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
