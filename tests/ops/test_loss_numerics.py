"""Numerics of the GFL losses: gradchecks, finiteness at extreme inputs, float32 under bf16 autocast, chunked QFL."""
import pytest
import torch
from torch.autograd import gradcheck

from gfldet.ops import (distribution_focal_loss, generalized_focal_loss, giou_loss, quality_focal_loss,
                        quality_focal_loss_sparse)

from tests.ops.loss_cases import F64, dense_target, sparse_case


def _check_float64(fn, *inputs):
    out = fn(*inputs)
    assert out.dtype == F64, "float64 inputs must be computed in float64 (else float64 gradcheck is meaningless)"
    assert gradcheck(fn, inputs)


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_gradcheck_qfl(reduction):
    g = torch.Generator().manual_seed(11)
    logits = (torch.randn(3, 5, generator=g, dtype=F64) * 2).requires_grad_()
    target = torch.rand(3, 5, generator=g, dtype=F64)
    target[0, :2] = torch.tensor([0.0, 1.0], dtype=F64)
    weight = torch.rand(3, 5, generator=g, dtype=F64)
    _check_float64(lambda x: quality_focal_loss(x, target, weight=weight, reduction=reduction), logits)


def test_gradcheck_qfl_sparse():
    logits, labels, scores = sparse_case(seed=12, P=6, C=4)
    weight = torch.rand(6, dtype=F64)
    _check_float64(lambda x: quality_focal_loss_sparse(x, labels, scores, weight=weight, reduction="none"),
                   logits.requires_grad_())


def test_gradcheck_dfl():
    g = torch.Generator().manual_seed(13)
    logits = (torch.randn(4, 9, generator=g, dtype=F64) * 2).requires_grad_()
    target = torch.tensor([0.0, 2.3, 7.5, 8.0], dtype=F64)
    _check_float64(lambda x: distribution_focal_loss(x, target, reduction="none"), logits)


def test_gradcheck_giou_loss():
    g = torch.Generator().manual_seed(14)
    xy = torch.rand(6, 2, generator=g, dtype=F64) * 10
    wh = torch.rand(6, 2, generator=g, dtype=F64) * 5 + 1
    target = torch.cat([xy, xy + wh], -1)
    pred = target + torch.randn(6, 4, generator=g, dtype=F64) * 0.7
    pred[0] = target[0] + torch.tensor([20.0, 20.0, 20.0, 20.0], dtype=F64)  # disjoint pair
    _check_float64(lambda p, t: giou_loss(p, t, reduction="none"), pred.requires_grad_(), target.requires_grad_())


# ----------------------------------------------------------------------------------------------------------------------
# Numerical robustness: extreme logits and boxes
# ----------------------------------------------------------------------------------------------------------------------

EXTREME_LOGITS = [-100.0, -60.0, -17.0, -1.0, 0.0, 1.0, 17.0, 60.0, 100.0]
EXTREME_TARGETS = [0.0, 1e-6, 0.5, 1.0 - 1e-6, 1.0]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_qfl_finite_at_extreme_logits(dtype):
    lg, tg = torch.meshgrid(torch.tensor(EXTREME_LOGITS, dtype=dtype), torch.tensor(EXTREME_TARGETS, dtype=dtype),
                            indexing="ij")
    logits = lg.reshape(-1, 1).clone().requires_grad_()
    loss = quality_focal_loss(logits, tg.reshape(-1, 1), reduction="none")
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_qfl_sparse_finite_at_extreme_logits(dtype):
    C = len(EXTREME_LOGITS)
    logits = torch.tensor(EXTREME_LOGITS, dtype=dtype).repeat(2 * len(EXTREME_TARGETS) + 1, 1)
    # every row puts a positive at one of the extreme logits, with each extreme score; last row negative
    labels = torch.tensor([0, C - 1] * len(EXTREME_TARGETS) + [C])
    scores = torch.tensor([t for t in EXTREME_TARGETS for _ in range(2)] + [0.0], dtype=dtype)
    logits.requires_grad_()
    loss = quality_focal_loss_sparse(logits, labels, scores, reduction="none")
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_dfl_finite_at_extreme_logits(dtype):
    n = 8
    g = torch.Generator().manual_seed(15)
    logits = (torch.randint(0, 3, (6, n + 1), generator=g).to(dtype) - 1) * 100.0  # entries in {-100, 0, 100}
    logits[0] = 100.0
    logits[1] = -100.0
    logits[2, 0], logits[2, 1:] = 100.0, -100.0
    logits.requires_grad_()
    target = torch.tensor([0.0, 8.0, 8.0, 0.0, 3.5, 7.99], dtype=dtype)
    loss = distribution_focal_loss(logits, target, reduction="none")
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_giou_loss_finite_on_extreme_boxes(dtype):
    pred = torch.tensor([
        [0.0, 0.0, 1e4, 1e4],  # huge box around a tiny one
        [5e3, 5e3, 5e3 + 1e-2, 5e3 + 1e-2],  # tiny box inside a huge one
        [0.0, 0.0, 1.0, 1.0],  # far apart
        [3.0, 3.0, 3.0, 3.0],  # zero-area box (a point) at the target's corner
        [0.0, 0.0, 1e4, 1e-3],  # extreme aspect ratio
        [10.0, 20.0, 30.0, 40.0],  # identical
    ], dtype=dtype)
    target = torch.tensor([
        [5e3, 5e3, 5e3 + 1e-2, 5e3 + 1e-2],
        [0.0, 0.0, 1e4, 1e4],
        [9999.0, 9999.0, 1e4, 1e4],
        [3.0, 3.0, 7.0, 7.0],
        [0.0, 0.0, 1e-3, 1e4],
        [10.0, 20.0, 30.0, 40.0],
    ], dtype=dtype)
    pred.requires_grad_()
    target.requires_grad_()
    loss = giou_loss(pred, target, reduction="none")
    assert torch.isfinite(loss).all()
    assert ((loss >= -1e-6) & (loss <= 2 + 1e-6)).all()
    assert loss[5].item() == pytest.approx(0.0, abs=1e-6)
    assert loss[2].item() == pytest.approx(2.0, abs=1e-6)  # far apart: GIoU -> -1
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all() and torch.isfinite(target.grad).all()


def test_giou_loss_values_and_checks():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]], dtype=F64)
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]], dtype=F64)
    expected = torch.tensor([1 - (1 / 7 - 2 / 9), 1 + 1 / 3], dtype=F64)
    torch.testing.assert_close(giou_loss(pred, target, reduction="none"), expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(giou_loss(pred, target), expected.mean(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError):
        giou_loss(pred, target[:1])
    with pytest.raises(ValueError):
        giou_loss(pred[:, :3], target[:, :3])


# ----------------------------------------------------------------------------------------------------------------------
# autocast
# ----------------------------------------------------------------------------------------------------------------------

def _autocast_cases():
    g = torch.Generator().manual_seed(16)
    bf = torch.bfloat16
    logits = (torch.randn(8, 5, generator=g) * 4).to(bf)
    target = torch.rand(8, 5, generator=g).to(bf)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 5, 2])
    scores = torch.rand(8, generator=g).to(bf)
    reg = torch.randn(8, 4, 9, generator=g).to(bf)
    dist_t = (torch.rand(8, 4, generator=g) * 8).to(bf)
    xy = torch.rand(8, 2, generator=g) * 50
    boxes_t = torch.cat([xy, xy + 5 + torch.rand(8, 2, generator=g) * 20], -1)
    boxes_p = (boxes_t + torch.randn(8, 4, generator=g)).to(bf)
    boxes_t = boxes_t.to(bf)
    sig = logits.sigmoid()
    return {
        "qfl": lambda r: quality_focal_loss(logits, target, reduction=r),
        "qfl_sparse": lambda r: quality_focal_loss_sparse(logits, labels, scores, reduction=r),
        "dfl": lambda r: distribution_focal_loss(reg, dist_t, reduction=r),
        "gfl": lambda r: generalized_focal_loss(1 - sig, sig, 0.0, 1.0, target, reduction=r),
        "giou": lambda r: giou_loss(boxes_p, boxes_t, reduction=r),
    }


@pytest.mark.parametrize("name", ["qfl", "qfl_sparse", "dfl", "gfl", "giou"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_losses_are_float32_under_bf16_autocast(name, reduction):
    fn = _autocast_cases()[name]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(reduction)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_qfl_sparse_reduced_path_in_chunks_equals_dense(monkeypatch, chunk):
    """The training path (sum / mean, per-row weight) works in chunks of rows and keeps no dense temporaries;
    a chunk boundary inside the rows (7 elements = 1 row of 5 classes per chunk) must not change anything."""
    import gfldet.ops.losses as L

    monkeypatch.setattr(L, "QFL_CHUNK", chunk)
    logits, labels, scores = sparse_case(seed=5, P=23, C=5)
    w = torch.rand(23, dtype=F64, generator=torch.Generator().manual_seed(6))
    w[3] = 0.0  # an ignored anchor
    for reduction in ("sum", "mean"):
        a = logits.clone().requires_grad_()
        b = logits.clone().requires_grad_()
        got = quality_focal_loss_sparse(a, labels, scores, weight=w, reduction=reduction)
        want = quality_focal_loss(b, dense_target(labels, scores, 5), weight=w[:, None], reduction=reduction)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
        got.backward()
        want.backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-14)
    x = logits.clone().requires_grad_()
    assert gradcheck(lambda t: quality_focal_loss_sparse(t, labels, scores, weight=w, reduction="sum"), (x,))


def test_qfl_sparse_reduced_path_float32_extremes_and_no_positive():
    logits = torch.tensor([[-100.0, 100.0, 0.0], [30.0, -30.0, 5.0]], requires_grad=True)
    labels = torch.tensor([3, 3])  # no positive anywhere
    loss = quality_focal_loss_sparse(logits, labels, torch.zeros(2), reduction="sum")
    loss.backward()
    ref = quality_focal_loss(logits.detach(), torch.zeros(2, 3), reduction="sum")
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)


def test_qfl_sparse_weight_gradient_and_broadcast_weight():
    """A per-row weight that needs a gradient gets the dense one; a broadcastable (1,) weight still works."""
    logits, labels, scores = sparse_case(seed=7, P=7, C=4)
    w = (torch.rand(7, dtype=F64, generator=torch.Generator().manual_seed(8)) + 0.1).requires_grad_()
    x = logits.clone().requires_grad_()
    assert gradcheck(lambda t, u: quality_focal_loss_sparse(t, labels, scores, weight=u, reduction="mean"), (x, w))
    one = torch.tensor([0.5], dtype=F64)
    torch.testing.assert_close(quality_focal_loss_sparse(logits, labels, scores, weight=one, reduction="sum"),
                               0.5 * quality_focal_loss_sparse(logits, labels, scores, reduction="sum"))
