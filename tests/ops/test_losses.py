"""Tests of the GFL losses (QFL, DFL, GFL, GIoU) against the paper's equations (Li et al., NeurIPS 2020)."""
import math

import pytest
import torch

from gfldet.ops import (distribution_expectation, distribution_focal_loss, generalized_focal_loss,
                        quality_focal_loss, quality_focal_loss_sparse)

from tests.ops.loss_cases import F64, dense_target, sparse_case


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _qfl_eq2(logit: float, y: float, beta: float) -> float:
    """Paper eq. (2): -|y - sigma|^beta ((1 - y) log(1 - sigma) + y log(sigma))."""
    s = _sigmoid(logit)
    return -abs(y - s) ** beta * ((1 - y) * math.log(1 - s) + y * math.log(s))




# ----------------------------------------------------------------------------------------------------------------------
# Quality Focal Loss
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("logit,y,beta", [
    (0.0, 1.0, 2.0), (0.0, 0.0, 2.0), (1.5, 0.3, 2.0), (-2.0, 0.8, 2.0), (3.0, 0.0, 2.0), (-0.7, 0.55, 1.0),
    (2.2, 0.9, 0.5), (-4.0, 1.0, 3.0),
])
def test_qfl_matches_paper_eq2(logit, y, beta):
    got = quality_focal_loss(torch.tensor([logit], dtype=F64), torch.tensor([y], dtype=F64), beta=beta,
                             reduction="none")
    assert got.item() == pytest.approx(_qfl_eq2(logit, y, beta), rel=1e-10, abs=1e-14)


def test_qfl_hand_value():
    # sigma(0) = 0.5, y = 1: |1 - 0.5|^2 * -log(0.5) = 0.25 * ln 2
    got = quality_focal_loss(torch.tensor([0.0]), torch.tensor([1.0]), reduction="sum")
    assert got.item() == pytest.approx(0.25 * math.log(2.0), rel=1e-6)


@pytest.mark.parametrize("y", [0.05, 0.3, 0.5, 0.77, 0.95])
def test_qfl_is_zero_at_sigma_equal_y(y):
    logit = torch.tensor([math.log(y / (1 - y))], dtype=F64)
    loss = quality_focal_loss(logit, torch.tensor([y], dtype=F64), reduction="none")
    assert abs(loss.item()) < 1e-12
    # ... and strictly positive anywhere else
    for dx in (-0.5, 0.5):
        assert quality_focal_loss(logit + dx, torch.tensor([y], dtype=F64)).item() > 1e-6


@pytest.mark.parametrize("y", [0.0, 0.1, 0.42, 0.5, 0.9, 1.0])
def test_qfl_minimum_over_sigma_is_at_y(y):
    logits = torch.linspace(-12, 12, 24001, dtype=F64)
    loss = quality_focal_loss(logits, torch.full_like(logits, y), reduction="none")
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    sigma_at_min = logits[loss.argmin()].sigmoid().item()
    assert sigma_at_min == pytest.approx(y, abs=1e-3)


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
def test_qfl_sparse_equals_dense(beta):
    logits, labels, scores = sparse_case()
    C = logits.shape[1]
    dense = quality_focal_loss(logits, dense_target(labels, scores, C), beta=beta, reduction="none")
    sparse = quality_focal_loss_sparse(logits, labels, scores, beta=beta, reduction="none")
    assert sparse.shape == (logits.shape[0], C)
    torch.testing.assert_close(sparse, dense, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_qfl_sparse_equals_dense_with_weight(reduction):
    logits, labels, scores = sparse_case(seed=1)
    P, C = logits.shape
    target = dense_target(labels, scores, C)
    w_row = torch.rand(P, dtype=F64, generator=torch.Generator().manual_seed(2)) + 0.1
    w_full = torch.rand(P, C, dtype=F64, generator=torch.Generator().manual_seed(3))
    # per-row (P,) weight in sparse form == (P, 1) weight in dense form
    torch.testing.assert_close(
        quality_focal_loss_sparse(logits, labels, scores, weight=w_row, reduction=reduction),
        quality_focal_loss(logits, target, weight=w_row[:, None], reduction=reduction), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        quality_focal_loss_sparse(logits, labels, scores, weight=w_full, reduction=reduction),
        quality_focal_loss(logits, target, weight=w_full, reduction=reduction), rtol=1e-12, atol=1e-14)


def test_qfl_sparse_gradient_equals_dense():
    logits, labels, scores = sparse_case(seed=4)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    quality_focal_loss_sparse(a, labels, scores, reduction="sum").backward()
    quality_focal_loss(b, dense_target(labels, scores, logits.shape[1]), reduction="sum").backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-14)


def test_qfl_sparse_ignores_scores_of_negatives():
    logits, labels, scores = sparse_case(seed=5)
    neg = labels == logits.shape[1]
    other = scores.clone()
    other[neg] = 0.987
    torch.testing.assert_close(quality_focal_loss_sparse(logits, labels, scores, reduction="none"),
                               quality_focal_loss_sparse(logits, labels, other, reduction="none"))


def test_qfl_sparse_all_negative_rows():
    logits = torch.randn(4, 3, dtype=F64)
    labels = torch.full((4,), 3)
    got = quality_focal_loss_sparse(logits, labels, torch.rand(4, dtype=F64), reduction="none")
    torch.testing.assert_close(got, quality_focal_loss(logits, torch.zeros_like(logits), reduction="none"))


@pytest.mark.parametrize("fn", ["dense", "sparse"])
def test_qfl_reductions_consistent(fn):
    logits, labels, scores = sparse_case(seed=6)
    weight = torch.rand(logits.shape, dtype=F64)
    if fn == "dense":
        target = dense_target(labels, scores, logits.shape[1])
        call = lambda **kw: quality_focal_loss(logits, target, **kw)  # noqa: E731
    else:
        call = lambda **kw: quality_focal_loss_sparse(logits, labels, scores, **kw)  # noqa: E731
    none = call(reduction="none")
    assert none.shape == logits.shape
    torch.testing.assert_close(call(reduction="sum"), none.sum())
    torch.testing.assert_close(call(reduction="mean"), none.mean())
    torch.testing.assert_close(call(), none.mean())  # default reduction is mean
    torch.testing.assert_close(call(reduction="none", weight=weight), none * weight)
    torch.testing.assert_close(call(reduction="sum", weight=weight), (none * weight).sum())
    torch.testing.assert_close(call(reduction="mean", weight=weight), (none * weight).mean())
    with pytest.raises(ValueError):
        call(reduction="avg")


@pytest.mark.parametrize("shape_l,shape_t", [((3, 4), (3, 5)), ((3, 4), (4, 3)), ((2, 3, 4), (3, 4)), ((5,), (5, 1))])
def test_qfl_mismatched_shapes_raise(shape_l, shape_t):
    with pytest.raises(ValueError):
        quality_focal_loss(torch.zeros(shape_l), torch.zeros(shape_t))


@pytest.mark.parametrize("logits,labels,scores", [
    (torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.zeros(4)),  # logits not 2-D
    (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), torch.zeros(4)),  # labels wrong length
    (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(3)),  # scores wrong length
    (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long), torch.zeros(4)),  # labels not 1-D
])
def test_qfl_sparse_mismatched_shapes_raise(logits, labels, scores):
    with pytest.raises(ValueError):
        quality_focal_loss_sparse(logits, labels, scores)


# ----------------------------------------------------------------------------------------------------------------------
# Distribution Focal Loss
# ----------------------------------------------------------------------------------------------------------------------

DFL_LOGITS = [0.3, -1.2, 2.0, 0.7, -0.4]  # n = 4


@pytest.mark.parametrize("y", [0.0, 0.25, 1.3, 2.0, 2.999, 3.5, 4.0])
def test_dfl_closed_form(y):
    n = len(DFL_LOGITS) - 1
    z = sum(math.exp(v) for v in DFL_LOGITS)
    log_s = [v - math.log(z) for v in DFL_LOGITS]
    i = min(math.floor(y), n - 1)
    expected = -((i + 1 - y) * log_s[i] + (y - i) * log_s[i + 1])
    got = distribution_focal_loss(torch.tensor(DFL_LOGITS, dtype=F64), torch.tensor(y, dtype=F64),
                                  reduction="none")
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_dfl_integer_and_end_targets_use_one_bin():
    logits = torch.tensor([DFL_LOGITS], dtype=F64)
    log_s = logits.log_softmax(-1)[0]
    for k in range(len(DFL_LOGITS)):  # includes y = n exactly
        got = distribution_focal_loss(logits, torch.tensor([float(k)], dtype=F64), reduction="none")
        assert got.item() == pytest.approx(-log_s[k].item(), rel=1e-12)


def _two_bin_optimum(y: float, n: int, eps: float = 1e-13) -> torch.Tensor:
    """Logits whose softmax puts (y_{i+1} - y, y - y_i) on bins (i, i+1) and ~eps elsewhere."""
    i = min(math.floor(y), n - 1)
    p = torch.full((n + 1,), eps, dtype=F64)
    p[i] = i + 1 - y
    p[i + 1] = y - i
    p = p / p.sum()
    return p.log()


@pytest.mark.parametrize("y", [0.3, 1.5, 2.75, 6.9, 7.6])
def test_dfl_minimum_and_zero_gradient(y):
    n = 8
    i = math.floor(y)
    wl, wr = i + 1 - y, y - i
    entropy = -(wl * math.log(wl) + wr * math.log(wr))
    opt = _two_bin_optimum(y, n).requires_grad_()
    target = torch.tensor(y, dtype=F64)
    loss = distribution_focal_loss(opt, target)
    assert loss.item() == pytest.approx(entropy, abs=1e-9)
    loss.backward()
    assert opt.grad.abs().max().item() < 1e-9
    # moving mass between the two bins, or onto another bin, makes the loss larger
    other = 0 if i > 0 else n
    for k, delta in [(i, 0.1), (i, -0.1), (i + 1, 0.1), (i + 1, -0.1), (other, 30.0)]:
        perturbed = opt.detach().clone()
        perturbed[k] += delta
        assert distribution_focal_loss(perturbed, target).item() > loss.item() + 1e-5
    # ... and so does any random perturbation
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        perturbed = opt.detach() + 0.05 * torch.randn(n + 1, generator=g, dtype=F64)
        assert distribution_focal_loss(perturbed, target).item() > loss.item()
    # its expectation is exactly y (paper, Sec. 3.3)
    e = distribution_expectation(opt.detach().repeat(4), torch.arange(n + 1, dtype=F64))
    torch.testing.assert_close(e, torch.full((4,), y, dtype=F64), rtol=0, atol=1e-9)


@pytest.mark.parametrize("y", [0.3, 2.75, 7.0])
def test_dfl_optimisation_recovers_target(y):
    n = 7
    logits = torch.randn(n + 1, dtype=F64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    target = torch.tensor(y, dtype=F64)
    opt = torch.optim.LBFGS([logits], lr=1, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = distribution_focal_loss(logits, target)
        loss.backward()
        return loss

    opt.step(closure)
    p = logits.detach().softmax(-1)
    i = min(math.floor(y), n - 1)
    expected = torch.zeros(n + 1, dtype=F64)
    expected[i], expected[i + 1] = i + 1 - y, y - i
    torch.testing.assert_close(p, expected, rtol=0, atol=1e-3)
    e = distribution_expectation(logits.detach().repeat(4), torch.arange(n + 1, dtype=F64))
    torch.testing.assert_close(e, torch.full((4,), y, dtype=F64), rtol=0, atol=1e-3)


@pytest.mark.parametrize("bad", [-0.1, -1e-3, 4.1, 4.0001, 100.0])
def test_dfl_targets_outside_range_raise(bad):
    logits = torch.zeros(3, 5)  # n = 4
    target = torch.tensor([1.0, bad, 2.0])
    with pytest.raises(ValueError):
        distribution_focal_loss(logits, target)


def test_dfl_nan_target_raises_value_error():
    with pytest.raises(ValueError):
        distribution_focal_loss(torch.zeros(2, 5), torch.tensor([1.0, float("nan")]))


def test_dfl_shape_checks():
    with pytest.raises(ValueError):
        distribution_focal_loss(torch.zeros(3, 5), torch.zeros(4))
    with pytest.raises(ValueError):
        distribution_focal_loss(torch.zeros(3, 1), torch.zeros(3))  # a single bin
    out = distribution_focal_loss(torch.zeros(2, 3, 4, 9), torch.rand(2, 3, 4) * 8, reduction="none")
    assert out.shape == (2, 3, 4)


def test_dfl_reductions_and_weight():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(6, 4, 17, generator=g, dtype=F64)
    target = torch.rand(6, 4, generator=g, dtype=F64) * 16
    weight = torch.rand(6, 4, generator=g, dtype=F64)
    none = distribution_focal_loss(logits, target, reduction="none")
    torch.testing.assert_close(distribution_focal_loss(logits, target, reduction="sum"), none.sum())
    torch.testing.assert_close(distribution_focal_loss(logits, target), none.mean())
    torch.testing.assert_close(distribution_focal_loss(logits, target, weight=weight, reduction="sum"),
                               (none * weight).sum())


# ----------------------------------------------------------------------------------------------------------------------
# Generalized Focal Loss special cases (eqs. 9-11)
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [2.0, 1.0, 0.0])
def test_gfl_reduces_to_focal_loss(gamma):
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(50, generator=g, dtype=F64) * 3
    y = (torch.rand(50, generator=g) > 0.5).to(F64)
    sigma = logits.sigmoid()
    p_t = torch.where(y == 1, sigma, 1 - sigma)
    focal = -(1 - p_t) ** gamma * p_t.log()  # eq. (1)
    got = generalized_focal_loss(1 - sigma, sigma, 0.0, 1.0, y, beta=gamma, reduction="none")
    torch.testing.assert_close(got, focal, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
def test_gfl_reduces_to_qfl(beta):
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(40, generator=g, dtype=F64) * 3
    y = torch.rand(40, generator=g, dtype=F64)
    y[:2] = torch.tensor([0.0, 1.0], dtype=F64)
    sigma = logits.sigmoid()
    got = generalized_focal_loss(1 - sigma, sigma, 0.0, 1.0, y, beta=beta, reduction="none")
    torch.testing.assert_close(got, quality_focal_loss(logits, y, beta=beta, reduction="none"), rtol=1e-10,
                               atol=1e-12)


def test_gfl_reduces_to_dfl():
    n = 8
    g = torch.Generator().manual_seed(10)
    logits = torch.randn(30, n + 1, generator=g, dtype=F64) * 2
    y = torch.rand(30, generator=g, dtype=F64) * n
    y[0] = 3.0  # an integer target
    y = y.clamp(max=n - 1e-6)  # floor(y) + 1 must be a bin
    s = logits.softmax(-1)
    y_l = y.floor()
    y_r = y_l + 1
    p_l = s.gather(-1, y_l.long()[:, None])[:, 0]
    p_r = s.gather(-1, y_r.long()[:, None])[:, 0]
    got = generalized_focal_loss(p_l, p_r, y_l, y_r, y, beta=0.0, reduction="none")
    torch.testing.assert_close(got, distribution_focal_loss(logits, y, reduction="none"), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# float64 gradchecks
# ----------------------------------------------------------------------------------------------------------------------
