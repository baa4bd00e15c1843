"""Localisation uncertainty read from the learned edge distributions.

GFL predicts each of a box's four edges (left, top, right, bottom distances from the prior's centre) as a
discrete distribution over bins. Its shape says how sure the network is about that edge: a sharp edge puts
its mass on one or two neighbouring bins, an ambiguous one (blurred, occluded, faded) spreads it out
(paper, Sec. 3.3 and Fig. 3). For each edge this module reports

* ``peak``: the largest bin probability, in (0, 1];
* ``entropy``: ``-sum p log p`` in nats, in [0, log(n + 1)];
* ``std``: the standard deviation of the edge distance under the distribution, in pixels
  (``sqrt(sum_i p_i (x_i - mu)^2)`` with ``x_i`` the bin positions, times the level's stride);

and one box-level localisation confidence, ``loc_conf``: the mean over the four edges of the mass on the two
most probable bins. DFL trains a perfectly localised edge to put all its mass on the two bins around the
true distance, so ``loc_conf`` is 1 for such an edge and falls as the mass spreads out; the top-k statistics
of the distribution are what GFLv2 (Li et al., CVPR 2021) found to track localisation quality.

Shapes: D boxes, B = n + 1 bins.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["edge_uncertainty", "UNCERTAINTY_KEYS"]

UNCERTAINTY_KEYS = ("edge_peak", "edge_entropy", "edge_std", "loc_conf")


def edge_uncertainty(probs: Tensor, bins: Tensor, scale: Tensor | float = 1.0,
                     logits: Tensor | None = None) -> dict[str, Tensor]:
    """Per-edge summaries of ``probs (D, 4, B)`` (each row sums to 1).

    Args:
        bins: ``(B,)`` the bin positions in stride units (``[0, 1, ..., n]`` for GFL).
        scale: pixels per stride unit, a scalar or ``(D,)`` (the stride of each box's level) or ``(D, 4)``.
        logits: the logits ``probs`` is the softmax of (any shape with ``D * 4 * B`` elements), where at hand: the
            entropy is then taken from them with one log per edge instead of one per bin (the same value to float
            rounding; an exported graph summarises every prior, and OpenVINO runs a per-bin log in its reference,
            unvectorised kernel).
    Returns:
        ``edge_peak (D, 4)``, ``edge_entropy (D, 4)`` nats, ``edge_std (D, 4)`` pixels, ``loc_conf (D,)``.
    """
    p = probs.float()
    x = bins.to(p)
    mean = (p * x).sum(-1, keepdim=True)
    var = (p * (x - mean).square()).sum(-1).clamp(min=0)
    scale = torch.as_tensor(scale, dtype=p.dtype, device=p.device)
    if scale.dim() == 1:
        scale = scale[:, None]
    peak = p.amax(-1)
    if logits is None:
        entropy = -(p * torch.log(p.clamp(min=torch.finfo(p.dtype).tiny))).sum(-1)
    else:  # log p_i = z_i - z_max + log p_max, so H = sum_i p_i (z_max - z_i) - log p_max, both terms >= 0
        z = logits.reshape(p.shape).to(p)
        entropy = (p * (z.amax(-1, keepdim=True) - z)).sum(-1) - torch.log(peak)
    k = min(2, p.shape[-1])
    top2 = p.topk(k, dim=-1).values.sum(-1)
    return {
        "edge_peak": peak,
        "edge_entropy": entropy.clamp(min=0),
        "edge_std": var.sqrt() * scale,
        "loc_conf": top2.mean(-1),
    }
