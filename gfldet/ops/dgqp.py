"""GFLV2's distribution statistics and its joint score in logit form (Li et al., CVPR 2021, "Generalized Focal
Loss V2").

GFLV2's Distribution-Guided Quality Predictor (DGQP) reads the box quality off the shape of the four learned
edge distributions: a sharp distribution (a high top probability) means a well-localised edge. Its input is, per
edge, the ``k`` highest probabilities of the softmaxed distribution and (``add_mean``) their mean;
:func:`distribution_statistics` computes it. The detector's score is the joint ``p = sigmoid(cls) * quality``.

QFL on that joint probability is ``BCE(p, y) * |y - p|^beta``. The official code calls
``F.binary_cross_entropy`` on ``p``, which clamps ``log`` at -100 and which CUDA autocast refuses. Here the
joint score is carried as its logit ``z = log p - log(1 - p)`` (:func:`joint_logit`), computed from the two logits
in log space, so that QFL with logits (gfldet.ops.losses), ``sigmoid(z) = p`` and its gradients are finite
for every finite input, p at 0 and at 1 included, and the same code runs under autocast. Mathematically it is
the official loss; numerically it differs only where the official one clamps or rounds ``1 - p``. (In an ONNX
graph the exporter writes ``logaddexp`` as ``log(exp + exp)``: beyond |z| of about 88 the logit becomes +-inf there,
never NaN, and its sigmoid, the score, stays exact.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import GfldetError

__all__ = ["distribution_statistics", "joint_logit", "statistics_channels"]


def statistics_channels(topk: int, add_mean: bool) -> int:
    """Channels of :func:`distribution_statistics`: ``4 * (topk + add_mean)``."""
    return 4 * (topk + int(add_mean))


def distribution_statistics(box_logits: Tensor, reg_max: int, topk: int = 4, add_mean: bool = True) -> Tensor:
    """DGQP's input from the distribution logits of one level.

    Args:
        box_logits: ``(N, 4 * (n + 1), H, W)``, edge by edge (left, top, right, bottom), ``n = reg_max``.
        topk: the ``k`` highest bin probabilities kept per edge (``1 <= k <= n + 1``).
        add_mean: also their mean.
    Returns:
        ``(N, 4 * (k + add_mean), H, W)`` float32: per edge its ``k`` top probabilities in descending order,
        then their mean, edge after edge (the official layout).
    """
    n, c, h, w = box_logits.shape
    bins = reg_max + 1
    if c != 4 * bins:
        raise ValueError(f"expected 4 * (reg_max + 1) = {4 * bins} distribution channels, got {c}")
    if not 1 <= topk <= bins:
        raise GfldetError(f"topk must be in [1, reg_max + 1 = {bins}], got {topk}")
    prob = F.softmax(box_logits.float().reshape(n, 4, bins, h, w), dim=2)
    top = prob.topk(topk, dim=2).values
    if add_mean:
        top = torch.cat([top, top.mean(dim=2, keepdim=True)], dim=2)
    return top.reshape(n, -1, h, w)


def joint_logit(cls_logits: Tensor, quality_logits: Tensor) -> Tensor:
    """``logit(sigmoid(cls_logits) * sigmoid(quality_logits))`` in at least float32, finite and exact in log space.

    With ``a`` = class logits and ``b`` = quality logits (broadcast against each other, e.g. ``(..., C)`` and
    ``(..., 1)``): ``log p = logsigmoid(a) + logsigmoid(b)`` and ``log(1 - p) = log(sigmoid(-a) + sigmoid(a)
    sigmoid(-b)) = logaddexp(logsigmoid(-a), logsigmoid(a) + logsigmoid(-b))``; no ``1 - p`` is ever rounded.
    """
    dtype = torch.promote_types(torch.promote_types(cls_logits.dtype, quality_logits.dtype), torch.float32)
    a, b = cls_logits.to(dtype), quality_logits.to(dtype)
    with torch.autocast(device_type="cuda" if a.is_cuda else "cpu", enabled=False):
        log_sig_a = F.logsigmoid(a)
        log_p = log_sig_a + F.logsigmoid(b)
        log_not_p = torch.logaddexp(F.logsigmoid(-a), log_sig_a + F.logsigmoid(-b))
        return log_p - log_not_p
