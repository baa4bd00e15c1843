"""The losses of Generalized Focal Loss (Li et al., NeurIPS 2020) and of its ablations, as pure functions.

Every function computes in at least float32 (half inputs are upcast, so it is safe under autocast;
float64 stays float64), accepts an
optional element-wise ``weight`` and a ``reduction`` in ``"none" | "sum" | "mean"``.
Equation numbers refer to the paper.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ..errors import GfldetError
from .boxes import box_giou_aligned

__all__ = [
    "quality_focal_loss",
    "quality_focal_loss_sparse",
    "distribution_focal_loss",
    "generalized_focal_loss",
    "giou_loss",
    "reduce_loss",
    "upcast",
    "dfl_unchecked",
    "dfl_targets",
    "sigmoid_focal_loss",
    "gaussian_kl_loss",
    "gaussian_nll",
    "reduce_mean",
    "EPS32",
]

# The reference divides a loss sum by (avg_factor + float32 eps).
EPS32 = float(torch.finfo(torch.float32).eps)

_REDUCTIONS = ("none", "sum", "mean")


def upcast(x: Tensor) -> Tensor:
    """Half / bfloat16 -> float32 (losses are computed in at least float32, also under autocast);
    float32 and float64 stay as they are, so float64 gradchecks work."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def reduce_mean(x: Tensor) -> Tensor:
    """Average a tensor over the processes of the default group (identity when not distributed): loss normalisers."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x.div_(dist.get_world_size()))
    return x


def reduce_loss(loss: Tensor, weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Apply an optional element-wise ``weight`` (broadcast against ``loss``) and a reduction."""
    if reduction not in _REDUCTIONS:
        raise GfldetError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if weight is not None:
        loss = loss * weight
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def quality_focal_loss(
    logits: Tensor,
    targets: Tensor,
    beta: float = 2.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Quality Focal Loss, paper eq. (2), computed from logits.

    ``QFL(sigma) = -|y - sigma|^beta * ((1 - y) log(1 - sigma) + y log(sigma))``

    Args:
        logits: ``(..., C)`` classification logits (any shape).
        targets: same shape, soft labels in ``[0, 1]``: 0 for negatives, the IoU of the predicted box
            with its ground truth at a positive's class.
        beta: the modulating exponent (2 in the paper).
    Returns:
        The element-wise loss ``(..., C)`` for ``reduction="none"``, else a scalar.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    logits = upcast(logits)
    targets = targets.to(logits.dtype)
    sigma = logits.sigmoid()
    # The modulating factor is not detached, as in the reference implementation.
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * (targets - sigma).abs().pow(beta)
    return reduce_loss(loss, weight, reduction)


def quality_focal_loss_sparse(
    logits: Tensor,
    labels: Tensor,
    scores: Tensor,
    beta: float = 2.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """QFL with a sparse target: one class label and one quality score per row.

    Equal to ``quality_focal_loss(logits, one_hot(labels) * scores)`` element for element, without
    building the dense target. This is the form the reference implementation computes.

    Args:
        logits: ``(P, C)`` logits.
        labels: ``(P,)`` int64, the class of a positive in ``[0, C)``; any other value (e.g. ``C``) is
            a negative.
        scores: ``(P,)`` the quality target (IoU) of each positive; ignored at negatives.
        weight: optional ``(P,)`` per-row weight (or ``(P, C)``).
    Returns:
        ``(P, C)`` for ``reduction="none"``, else a scalar.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1] or scores.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (P, C), labels (P,), scores (P,); got {tuple(logits.shape)}, "
            f"{tuple(labels.shape)}, {tuple(scores.shape)}"
        )
    if reduction not in _REDUCTIONS:
        raise GfldetError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    num_classes = logits.shape[1]
    pos = ((labels >= 0) & (labels < num_classes)).nonzero().squeeze(1)
    if reduction != "none" and (weight is None or (weight.shape == labels.shape and not weight.requires_grad)):
        # the training case: a scalar without the dense (P, C) temporaries (docs/speed.md, peak memory); its
        # backward gives no gradient to the weight, so a weight that needs one takes the dense path
        return _qfl_sparse_reduced(upcast(logits), labels, scores, pos, beta, weight, reduction)
    logits = upcast(logits)
    sigma = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * sigma.pow(beta)
    if pos.numel() > 0:
        pos_labels = labels[pos].long()
        loss = loss.index_put((pos, pos_labels), _positive_qfl(logits, pos, pos_labels, scores, beta))
    if weight is not None and weight.dim() == 1:
        weight = weight[:, None]
    return reduce_loss(loss, weight, reduction)


def _positive_qfl(logits: Tensor, pos: Tensor, pos_labels: Tensor, scores: Tensor, beta: float) -> Tensor:
    """QFL at the positives' own class, whose target is their quality score: ``(P_pos,)``."""
    pos_logits = logits[pos, pos_labels]
    pos_scores = scores[pos].to(logits.dtype)
    return F.binary_cross_entropy_with_logits(pos_logits, pos_scores, reduction="none") * (
        pos_scores - pos_logits.sigmoid()
    ).abs().pow(beta)


QFL_CHUNK = 1 << 20  # elements of (P, C) per chunk in _NegativeQFLSum


def _negative_qfl(x: Tensor, beta: float, derivative: bool) -> Tensor:
    """QFL at target 0, ``BCE(x, 0) * sigmoid(x)^beta = softplus(x) * sigma^beta``, or (``derivative``) its
    derivative ``sigma^beta * (sigma + beta * softplus(x) * (1 - sigma))``. softplus is computed as
    ``max(x, 0) + log1p(exp(-|x|))``, the stable form of BCE with logits."""
    sigma = x.sigmoid()
    sp = x.clamp(min=0).add_(torch.log1p(torch.exp(-x.abs())))
    mod = sigma.pow(beta)
    if not derivative:
        return sp.mul_(mod)
    return mod.mul_(sp.mul_(1 - sigma).mul_(beta).add_(sigma))


class _NegativeQFLSum(torch.autograd.Function):
    """``sum_{i,c} w_i * QFL(x_ic, 0) * [ (i, c) is not a positive ]`` in chunks of rows, saving only the logits:
    memory of one (P, C) gradient instead of the several (P, C) temporaries autograd would keep."""

    @staticmethod
    def forward(ctx, x: Tensor, row_weight: Tensor | None, pos: Tensor, pos_labels: Tensor, beta: float) -> Tensor:
        ctx.save_for_backward(x, row_weight, pos, pos_labels)
        ctx.beta = beta
        total = x.new_zeros((), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
        for _, _, loss in _negative_chunks(x, row_weight, pos, pos_labels, beta, derivative=False):
            total += loss.sum(dtype=total.dtype)
        return total.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, row_weight, pos, pos_labels = ctx.saved_tensors
        grad = torch.empty_like(x)
        for start, stop, g in _negative_chunks(x, row_weight, pos, pos_labels, ctx.beta, derivative=True):
            grad[start:stop] = g * grad_out
        return grad, None, None, None, None


def _negative_chunks(x, row_weight, pos, pos_labels, beta, derivative):
    """Yields ``(start, stop, rows)``: the weighted negative QFL (or its derivative) of rows start:stop, zero at the
    positives."""
    rows = max(1, QFL_CHUNK // max(1, x.shape[1]))
    for start in range(0, x.shape[0], rows):
        stop = min(start + rows, x.shape[0])
        out = _negative_qfl(x[start:stop], beta, derivative=derivative)
        if row_weight is not None:
            out = out * row_weight[start:stop, None]
        inside = (pos >= start) & (pos < stop)
        if inside.any():  # positives get their own term (quality target), not the negative one
            out[pos[inside] - start, pos_labels[inside]] = 0
        yield start, stop, out


def _qfl_sparse_reduced(logits, labels, scores, pos, beta, weight, reduction):
    """quality_focal_loss_sparse for reduction "sum" / "mean" and an optional per-row weight."""
    row_weight = None if weight is None else weight.to(logits.dtype)
    pos_labels = labels[pos].long()
    total = _NegativeQFLSum.apply(logits, row_weight, pos, pos_labels, beta)
    if pos.numel() > 0:
        pos_loss = _positive_qfl(logits, pos, pos_labels, scores, beta)
        if row_weight is not None:
            pos_loss = pos_loss * row_weight[pos]
        total = total + pos_loss.sum()
    return total / logits.numel() if reduction == "mean" else total


def distribution_focal_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Distribution Focal Loss, paper eq. (6), with unit bins ``y_i = i``.

    ``DFL(S_i, S_{i+1}) = -((y_{i+1} - y) log S_i + (y - y_i) log S_{i+1})`` where ``S = softmax(logits)``,
    ``y_i = floor(y)`` and ``y_{i+1} = y_i + 1``. Its minimum puts ``(y_{i+1} - y, y - y_i)`` on the two
    bins, where the expectation of the distribution is exactly ``y``.

    Args:
        logits: ``(..., n + 1)`` distribution logits over the bins ``0..n``.
        target: ``(...)`` continuous targets in ``[0, n]`` (``y = n`` is allowed: all mass on bin n).
    Returns:
        ``(...)`` for ``reduction="none"``, else a scalar.
    """
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be target {tuple(target.shape)} + (n+1,)")
    n = logits.shape[-1] - 1
    if n < 1:
        raise ValueError(f"need at least 2 bins, got logits with last dim {logits.shape[-1]}")
    logits = upcast(logits)
    target = target.to(logits.dtype)
    if target.numel() and not torch.jit.is_tracing():
        lo, hi = float(target.min()), float(target.max())
        if not (lo >= 0 and hi <= n) or not bool(torch.isfinite(target).all()):  # NaN fails every comparison
            raise GfldetError(f"DFL targets must lie in [0, {n}], got values in [{lo:g}, {hi:g}]")
    return reduce_loss(dfl_unchecked(logits, target), weight, reduction)


def dfl_unchecked(logits: Tensor, target: Tensor) -> Tensor:
    """DFL without input checks (targets assumed in ``[0, n]``)."""
    n = logits.shape[-1] - 1
    left = target.floor().clamp(max=n - 1).long()  # y = n uses bins (n-1, n) with weights (0, 1)
    right = left + 1
    w_left = right.to(target.dtype) - target
    w_right = target - left.to(target.dtype)
    logp = F.log_softmax(upcast(logits), dim=-1)
    nll_left = -logp.gather(-1, left.unsqueeze(-1)).squeeze(-1)
    nll_right = -logp.gather(-1, right.unsqueeze(-1)).squeeze(-1)
    return nll_left * w_left + nll_right * w_right


def dfl_targets(distances: Tensor, bin_width: float, reg_max: int) -> Tensor:
    """DFL targets in bins for distances in strides, with bins at ``0, delta, ..., n delta`` strides: ``y / delta``,
    clamped to ``[0, n - 0.1]`` as the reference clamps (so that the right bin ``floor + 1`` exists)."""
    return (distances / bin_width).clamp(min=0, max=reg_max - 0.1)


def generalized_focal_loss(
    p_left: Tensor,
    p_right: Tensor,
    y_left: Tensor | float,
    y_right: Tensor | float,
    y: Tensor,
    beta: float = 2.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
    eps: float = 1e-12,
) -> Tensor:
    """Generalized Focal Loss, paper eq. (7), in probability form.

    ``GFL(p_l, p_r) = -|y - (y_l p_l + y_r p_r)|^beta * ((y_r - y) log p_l + (y - y_l) log p_r)``

    with ``y_l <= y <= y_r`` and ``p_l + p_r = 1``. Its special cases:
    Focal Loss (eq. 9: ``y_l=0, y_r=1, y in {0,1}, p_r=sigma, p_l=1-sigma``), QFL (eq. 10: the same with
    ``y in [0,1]``) and DFL (eq. 11: ``beta=0``, ``p_l=S_i, p_r=S_{i+1}``). Probabilities are clamped to
    ``[eps, 1]`` inside the logarithms so that the loss stays finite at 0 and 1.
    """
    p_left = upcast(p_left)
    p_right = upcast(p_right).to(p_left.dtype)
    y, y_left, y_right = (torch.as_tensor(v, device=p_left.device).to(p_left.dtype) for v in (y, y_left, y_right))
    estimate = y_left * p_left + y_right * p_right
    ce = (y_right - y) * p_left.clamp(min=eps).log() + (y - y_left) * p_right.clamp(min=eps).log()
    loss = -(y - estimate).abs().pow(beta) * ce
    return reduce_loss(loss, weight, reduction)


def giou_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    eps: float = 1e-6,
) -> Tensor:
    """GIoU loss ``1 - GIoU(pred, target)`` for aligned ``(..., 4)`` xyxy boxes -> ``(...)``.

    ``eps`` 1e-6 is the reference's: GFL's config uses mmdetection's ``GIoULoss`` class, whose default is 1e-6 (its
    functional ``giou_loss`` defaults to 1e-7, which GFL never uses). It matters for boxes of area below ``eps``:
    GFL's boxes are in strides, so a collapsed early prediction is one."""
    if pred.shape != target.shape or pred.shape[-1:] != (4,):
        raise ValueError(f"expected two (..., 4) box tensors of one shape, got {tuple(pred.shape)}, {tuple(target.shape)}")
    pred = upcast(pred)
    loss = 1.0 - box_giou_aligned(pred, target.to(pred.dtype), eps=eps)
    return reduce_loss(loss, weight, reduction)


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017; GFL's eq. 1), ``-alpha_t (1 - p_t)^gamma log(p_t)``, from logits.

    Args:
        logits, targets: ``(..., C)``; targets in ``{0, 1}`` (one-hot rows, all zero for background).
        weight: optional, broadcast against the loss (e.g. ``(P, 1)`` per-row weights).
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    logits = upcast(logits)
    targets = targets.to(logits.dtype)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return reduce_loss(alpha_t * (1 - p_t).pow(gamma) * ce, weight, reduction)


def gaussian_nll(mean: Tensor, log_var: Tensor, target: Tensor, weight: Tensor | None = None,
                 reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of ``target`` under ``N(mean, exp(log_var))``:
    ``0.5 log(2 pi) + 0.5 log_var + 0.5 (target - mean)^2 exp(-log_var)``, element-wise."""
    mean, log_var = upcast(mean), upcast(log_var)
    target = target.to(mean.dtype)
    loss = 0.5 * math.log(2 * math.pi) + 0.5 * log_var + 0.5 * (target - mean).square() * torch.exp(-log_var)
    return reduce_loss(loss, weight, reduction)


def gaussian_kl_loss(mean: Tensor, log_var: Tensor, target: Tensor, weight: Tensor | None = None,
                     reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """KL-Loss (He et al., CVPR 2019, eq. 9 and 10): the Gaussian NLL with its squared error replaced by a smooth-L1
    one, ``0.5 log(2 pi) + 0.5 log_var + smooth_l1(target - mean; beta) exp(-log_var)``, element-wise, where
    ``smooth_l1(d) = d^2 / (2 beta)`` for ``|d| < beta`` and ``|d| - beta / 2`` beyond (KL-Loss uses beta = 1).

    Within ``beta`` of the target it is :func:`gaussian_nll`. Beyond, the error grows linearly, so a far-off mean
    pulls on the mean and the log-variance in proportion to ``|d|`` instead of ``d^2``: the plain NLL's quadratic
    pull from one badly placed box can spike the gradient by several orders of magnitude early in training from
    scratch (docs/ablations.md, the Gaussian row)."""
    if beta <= 0:
        raise GfldetError(f"beta must be > 0, got {beta}")
    mean, log_var = upcast(mean), upcast(log_var)
    d = (target.to(mean.dtype) - mean).abs()
    err = torch.where(d < beta, 0.5 * d.square() / beta, d - 0.5 * beta)
    loss = 0.5 * math.log(2 * math.pi) + 0.5 * log_var + err * torch.exp(-log_var)
    return reduce_loss(loss, weight, reduction)
