"""Tests of the integral representation (paper eq. 5): expectation of the edge distributions."""
import pytest
import torch
from torch.autograd import gradcheck

from gfldet.ops import Integral, distribution_expectation, edge_distributions

F64 = torch.float64


def _one_hot_logits(bins, n, big=1e4):
    """(4 * (n + 1),) logits whose softmax is a one-hot at ``bins[j]`` for edge j."""
    logits = torch.zeros(4, n + 1, dtype=F64)
    for j, k in enumerate(bins):
        logits[j, k] = big
    return logits.reshape(-1)


@pytest.mark.parametrize("n", [1, 7, 16])
def test_expectation_of_one_hot_is_its_bin(n):
    integral = Integral(n)
    for k in range(n + 1):
        out = integral(_one_hot_logits([k] * 4, n).float())
        torch.testing.assert_close(out, torch.full((4,), float(k)))
    # a different bin per edge, in (l, t, r, b) order: each edge reads its own (n + 1) logits
    bins = [0, n, n // 2, 1]
    torch.testing.assert_close(integral(_one_hot_logits(bins, n).float()), torch.tensor(bins, dtype=torch.float32))


@pytest.mark.parametrize("n", [1, 4, 16])
def test_expectation_of_uniform_is_half_n(n):
    out = Integral(n)(torch.full((3, 4 * (n + 1)), 2.5))
    torch.testing.assert_close(out, torch.full((3, 4), n / 2))


@pytest.mark.parametrize("n,lead", [(16, (2, 3)), (7, (5,)), (3, ()), (16, (2, 1, 6))])
def test_shapes(n, lead):
    logits = torch.randn(*lead, 4 * (n + 1))
    out = Integral(n)(logits)
    assert out.shape == (*lead, 4)
    probs = edge_distributions(logits, n)
    assert probs.shape == (*lead, 4, n + 1)
    torch.testing.assert_close(probs.sum(-1), torch.ones(*lead, 4))


def test_expectation_matches_definition_and_range():
    n = 16
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 4 * (n + 1), generator=g, dtype=F64) * 30  # includes very peaked distributions
    project = torch.arange(n + 1, dtype=F64)
    out = distribution_expectation(logits, project)
    expected = (logits.reshape(10, 4, n + 1).softmax(-1) * project).sum(-1)
    torch.testing.assert_close(out, expected)
    assert ((out >= 0) & (out <= n)).all()
    integral = Integral(n)
    torch.testing.assert_close(integral.project, torch.arange(n + 1, dtype=torch.float32))
    torch.testing.assert_close(integral(logits.float()), out.float())


def test_integral_rejects_fewer_than_one_bin_step():
    with pytest.raises(ValueError):
        Integral(0)
    with pytest.raises(ValueError):
        Integral(-3)


def test_gradcheck_distribution_expectation():
    n = 5
    logits = (torch.randn(3, 4 * (n + 1), generator=torch.Generator().manual_seed(1), dtype=F64) * 2)
    logits.requires_grad_()
    project = torch.arange(n + 1, dtype=F64)
    assert distribution_expectation(logits, project).dtype == F64
    assert gradcheck(lambda x: distribution_expectation(x, project), (logits,))


def test_half_precision_logits_are_upcast():
    n = 16
    logits = (torch.randn(2, 4 * (n + 1), generator=torch.Generator().manual_seed(2)) * 5).to(torch.bfloat16)
    out = Integral(n)(logits)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, Integral(n)(logits.float()))


def test_expectation_stays_float32_under_bf16_autocast():
    n = 16
    logits = torch.randn(200, 4 * (n + 1), generator=torch.Generator().manual_seed(3)) * 3
    ref = Integral(n)(logits)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = Integral(n)(logits)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
