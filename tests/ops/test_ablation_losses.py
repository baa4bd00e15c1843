"""The losses of the paper's ablation baselines (gfldet.ops.losses): sigmoid focal loss, the Gaussian NLL and KL-Loss."""
from __future__ import annotations

import math

import pytest
import torch

from gfldet.ops.losses import gaussian_kl_loss, gaussian_nll, sigmoid_focal_loss


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


def test_gaussian_kl_loss_is_the_nll_near_the_target_and_linear_beyond():
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(50, 4, generator=g, dtype=torch.float64, requires_grad=True)
    log_var = torch.randn(50, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = mean.detach() + torch.randn(50, 4, generator=g, dtype=torch.float64) * 2  # errors on both sides of 1
    d = (y - mean).abs()
    kl = gaussian_kl_loss(mean, log_var, y, reduction="none")
    near = d < 1
    assert near.any() and (~near).any()
    torch.testing.assert_close(kl[near], gaussian_nll(mean, log_var, y, reduction="none")[near])
    # beyond beta: 0.5 log(2 pi) + 0.5 log_var + (|d| - 0.5) exp(-log_var) (He et al. 2019, eq. 10)
    far = 0.5 * math.log(2 * math.pi) + 0.5 * log_var + (d - 0.5) * torch.exp(-log_var)
    torch.testing.assert_close(kl[~near], far[~near])
    assert torch.autograd.gradcheck(lambda a, b: gaussian_kl_loss(a, b, y, reduction="sum"), (mean, log_var))
    # the pull on the mean is bounded by 1 / var however far the target, where the NLL's grows with the error
    m = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    lv = torch.zeros(3, dtype=torch.float64)
    far_targets = torch.tensor([2.0, 20.0, 200.0], dtype=torch.float64)
    gaussian_kl_loss(m, lv, far_targets, reduction="sum").backward()
    torch.testing.assert_close(m.grad, torch.full((3,), -1.0, dtype=torch.float64))
    # continuous at |d| = beta, for another beta too
    at = gaussian_kl_loss(torch.zeros(2), torch.zeros(2), torch.tensor([0.5 - 1e-6, 0.5 + 1e-6]), reduction="none", beta=0.5)
    assert float((at[1] - at[0]).abs()) < 1e-5
    with pytest.raises(ValueError, match="beta"):
        gaussian_kl_loss(m, lv, far_targets, beta=0.0)


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
