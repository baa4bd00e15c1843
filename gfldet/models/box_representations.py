"""The box representations the paper compares (Table 1): general distribution (GFL), Dirac delta, Gaussian.

Each knows its output channels per prior, how its outputs decode to edge distances, its loss term
and the extras it adds to a detection.

Distances are ``(l, t, r, b)`` in strides of the prior's level. Shapes: P positives (or D detections),
K box channels per prior, B = n + 1 bins.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..ops.boxes import box_to_distance, distance_to_box
from ..ops.integral import Integral, edge_distributions
from ..ops.losses import EPS32, dfl_targets, dfl_unchecked, gaussian_kl_loss, gaussian_nll
from ..ops.uncertainty import edge_uncertainty

__all__ = ["BoxRepresentation", "DistributionBox", "DiracBox", "GaussianBox", "GaussianNLLBox", "MAX_LOG_DIST", "LOGVAR_RANGE"]

# exp() of a scaled output larger than this (1e4 strides) is clamped: the distance is already absurd and the
# clamp keeps float32 finite.
MAX_LOG_DIST = math.log(1e4)
# The Gaussian's log-variance is clamped to a sane range (sigma from 0.007 to 150 strides).
LOGVAR_RANGE = (-10.0, 10.0)


class BoxRepresentation(nn.Module):
    """What every box representation shares: decoding its outputs into boxes, the one rule that training (the GIoU
    term), the eager postprocess and the exported graph all call. A representation defines ``distances``; the whole
    contract is :class:`gfldet.models.parts.BoxRepresentationPart`."""

    exportable = False  # whether the exported graph's outputs (docs/onnx.md) describe it

    def distances(self, logits: Tensor) -> Tensor:  # pragma: no cover - each representation defines it
        raise NotImplementedError

    def decode(self, logits: Tensor, centers: Tensor, strides: Tensor | float | None = None) -> Tensor:
        """``(..., K)`` outputs at ``(..., 2)`` prior centres -> ``(..., 4)`` xyxy boxes, unclipped: centre -/+ the
        expected distances times ``strides`` (the level's stride, a number or a tensor that broadcasts against the
        distances; None: centres and boxes in strides)."""
        d = self.distances(logits)
        return distance_to_box(centers, d if strides is None else d * strides)


class DistributionBox(BoxRepresentation):
    """GFL's general distribution: each edge is a discrete distribution over the bins ``0, delta, ..., n delta``
    (strides), its distance the expectation (paper eq. 5), trained with DFL (eq. 6); ``4 (n + 1)`` channels.
    Detections carry the ``distributions (D, 4, B)`` and their uncertainty summaries (gfldet.ops.uncertainty)."""

    loss_key = "loss_dfl"

    def __init__(self, reg_max: int = 16, bin_width: float = 1.0, loss_weight: float = 0.25):
        super().__init__()
        self.integral = Integral(reg_max)
        self.reg_max, self.bin_width, self.loss_weight = reg_max, float(bin_width), loss_weight
        self.channels = 4 * (reg_max + 1)
        self.exportable = self.bin_width == 1.0  # the export contract: bins 0, 1, ..., n strides

    @property
    def bins(self) -> Tensor:
        """``(B,)`` the bin positions in strides."""
        return self.integral.project * self.bin_width

    def distances(self, logits: Tensor) -> Tensor:
        """``(..., 4B)`` logits -> ``(..., 4)`` expected distances in strides."""
        return self.integral(logits) * self.bin_width

    def loss(self, logits: Tensor, centers: Tensor, target_boxes: Tensor, weight: Tensor) -> Tensor:
        """DFL of ``(P, 4B)`` logits towards the target boxes (strides) seen from ``(P, 2)`` centres, weighted per
        positive by ``weight (P,)``, summed and divided by 4 (edges), as the reference."""
        return self.weighted_dfl_sum(logits, box_to_distance(centers, target_boxes), weight) / (4.0 + EPS32)

    def weighted_dfl_sum(self, logits: Tensor, distances: Tensor, weight: Tensor) -> Tensor:
        """The sum over positives and edges of DFL of ``(P, 4B)`` logits towards ``(P, 4)`` target distances in
        strides (clamped to the bins, as the reference), each positive weighted by ``weight (P,)``: the part every
        detector's DFL term shares (GFL divides it by 4 edges, NanoDet-Plus by 4 times its weight sum)."""
        t = dfl_targets(distances, self.bin_width, self.reg_max)  # (P, 4)
        dfl = dfl_unchecked(logits.reshape(-1, self.reg_max + 1), t.reshape(-1))  # (4P,)
        return (dfl * weight[:, None].expand(-1, 4).reshape(-1)).sum()

    def extras(self, logits: Tensor, strides: Tensor) -> dict[str, Tensor]:
        """``distributions (D, 4, B)``, ``edge_peak``, ``edge_entropy``, ``edge_std`` (pixels), ``loc_conf``."""
        probs = edge_distributions(logits, self.reg_max)
        return {"distributions": probs, **edge_uncertainty(probs, self.bins, strides, logits=logits)}


class DiracBox(BoxRepresentation):
    """Four distances regressed directly (``exp`` of the scaled output, in strides), GIoU only; 4 channels."""

    loss_key: str | None = None
    channels = 4

    def __init__(self, loss_weight: float = 0.0):
        super().__init__()
        self.loss_weight = loss_weight

    def distances(self, logits: Tensor) -> Tensor:
        return logits[..., :4].clamp(max=MAX_LOG_DIST).exp()

    def loss(self, logits: Tensor, centers: Tensor, target_boxes: Tensor, weight: Tensor) -> Tensor | None:
        return None

    def extras(self, logits: Tensor, strides: Tensor) -> dict[str, Tensor]:
        return {}


class GaussianBox(DiracBox):
    """A mean (as Dirac) and a log-variance per edge, trained with KL-Loss (He et al. 2019): the Gaussian negative
    log-likelihood of the GT distance with a smooth-L1 error, linear beyond 1 stride
    (gfldet.ops.losses.gaussian_kl_loss); 8 channels. Detections carry ``edge_std (D, 4)`` pixels from the variance.

    The GFL paper's Gaussian row cites Gaussian YOLOv3 and KL-Loss for the representation but publishes no code for
    it; gfldet follows KL-Loss, whose linear tail keeps a far-off box from spiking the gradient.
    :class:`GaussianNLLBox` is the same box with the plain squared-error NLL."""

    loss_key = "loss_nll"
    channels = 8
    nll = staticmethod(gaussian_kl_loss)

    def __init__(self, loss_weight: float = 0.25):
        super().__init__(loss_weight)

    def loss(self, logits: Tensor, centers: Tensor, target_boxes: Tensor, weight: Tensor) -> Tensor:
        """The NLL of the GT distances, weighted per positive, summed and divided by 4 (edges) as DFL."""
        log_var = logits[:, 4:].clamp(*LOGVAR_RANGE)
        nll = self.nll(self.distances(logits), log_var, box_to_distance(centers, target_boxes), reduction="none")
        return (nll * weight[:, None]).sum() / (4.0 + EPS32)

    def extras(self, logits: Tensor, strides: Tensor) -> dict[str, Tensor]:
        return {"edge_std": torch.exp(0.5 * logits[:, 4:].clamp(*LOGVAR_RANGE)) * strides[:, None]}


class GaussianNLLBox(GaussianBox):
    """:class:`GaussianBox` trained with the plain Gaussian NLL, ``0.5 log_var + 0.5 (y - mean)^2 / var``
    (``box="gaussian_nll"``; gfldet's first Gaussian box, docs/ablations.md). Its pull grows with the squared error: in the
    ablation study at the demo's recipe one seed of three diverged in its first epoch (docs/ablations.md)."""

    nll = staticmethod(gaussian_nll)
