"""The losses of the paper's ablation baselines (gfldet.ops.losses): sigmoid focal loss and the Gaussian NLL."""
from __future__ import annotations

import math

import pytest
import torch

from gfldet.ops.losses import gaussian_nll, sigmoid_focal_loss


def test_gaussian_nll_closed_form():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(20, 4, generator=g, dtype=torch.float64, requires_grad=True)
    log_var = torch.randn(20, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(20, 4, generator=g, dtype=torch.float64) * 3
    nll = gaussian_nll(mean, log_var, y, reduction="none")
    ref = -torch.distributions.Normal(mean, torch.exp(0.5 * log_var)).log_prob(y)
    torch.testing.assert_close(nll, ref)
    # minimum: mean = y, log_var = log((y - mean)^2) for the variance
    m0 = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([math.log(0.25)], dtype=torch.float64, requires_grad=True)
    gaussian_nll(m0, v0, torch.tensor([2.0], dtype=torch.float64), reduction="sum").backward()
    torch.testing.assert_close(v0.grad, torch.zeros(1, dtype=torch.float64))  # (y - mean)^2 = 0.25 = variance
    assert float(m0.grad) < 0  # pulls the mean up towards y
    assert torch.autograd.gradcheck(lambda a, b: gaussian_nll(a, b, y, reduction="sum"), (mean, log_var))


def test_sigmoid_focal_loss():
    x = torch.tensor([[2.0, -1.0], [0.3, 0.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    p = x.sigmoid()
    expected = torch.stack([
        torch.stack([-0.25 * (1 - p[0, 0]) ** 2 * torch.log(p[0, 0]), -0.75 * p[0, 1] ** 2 * torch.log(1 - p[0, 1])]),
        -0.75 * p[1] ** 2 * torch.log(1 - p[1]),
    ])
    torch.testing.assert_close(sigmoid_focal_loss(x, t, reduction="none"), expected)
    assert float(sigmoid_focal_loss(x, t, gamma=0.0, alpha=0.5, reduction="sum")) == pytest.approx(
        0.5 * float(torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="sum")), rel=1e-6)
