"""GFLV2's operations: the DGQP statistics' layout, and the joint score's logit, finite and exact where the
official binary_cross_entropy on probabilities clamps, rounds or is refused (autocast)."""
import pytest
import torch
import torch.nn.functional as F

from gfldet.ops.dgqp import distribution_statistics, joint_logit, statistics_channels
from gfldet.ops.losses import quality_focal_loss_sparse


def test_statistics_layout_edge_by_edge():
    torch.manual_seed(0)
    n, reg_max, k = 2, 7, 3
    logits = torch.randn(n, 4 * (reg_max + 1), 5, 6)
    out = distribution_statistics(logits, reg_max, topk=k, add_mean=True)
    assert out.shape == (n, statistics_channels(k, True), 5, 6) == (n, 16, 5, 6)
    for edge in range(4):
        prob = logits[:, edge * (reg_max + 1):(edge + 1) * (reg_max + 1)].softmax(dim=1)
        top = prob.sort(dim=1, descending=True).values[:, :k]
        torch.testing.assert_close(out[:, edge * (k + 1):edge * (k + 1) + k], top)
        torch.testing.assert_close(out[:, edge * (k + 1) + k], top.mean(dim=1))
    assert distribution_statistics(logits, reg_max, topk=k, add_mean=False).shape[1] == 12
    with pytest.raises(ValueError, match="topk"):
        distribution_statistics(logits, reg_max, topk=reg_max + 2)
    with pytest.raises(ValueError, match="distribution channels"):
        distribution_statistics(logits[:, :-1], reg_max)


def test_joint_logit_is_the_logit_of_the_product():
    # |a|, |b| <= 15: 1 - p >= 6e-7, where a float64 reference computed from p itself is still exact to ~1e-9
    a = torch.linspace(-15, 15, 31, dtype=torch.float64)[:, None]
    b = torch.linspace(-15, 15, 31, dtype=torch.float64)[None, :]
    ref = torch.logit(a.sigmoid() * b.sigmoid())
    z = joint_logit(a.float(), b.float()).double()
    assert z.dtype == torch.float64 and z.shape == (31, 31)
    # float32 throughout: a few ulp of |z| plus the logsigmoid terms (each < 16)
    assert ((z - ref).abs() <= 1e-5 * (1 + ref.abs())).all()
    # far out, where 1 - p rounds away even in float64: a = b = 30 gives 1 - p ~ 2 e^-30, logit ~ 30 - log 2
    torch.testing.assert_close(joint_logit(torch.tensor(30.0), torch.tensor(30.0)),
                               torch.tensor(30.0 - torch.log(torch.tensor(2.0)).item()), rtol=0, atol=1e-4)


def test_joint_logit_finite_with_finite_gradients_at_the_extremes():
    a = torch.tensor([-200.0, -50.0, 0.0, 50.0, 200.0, 200.0, -200.0], requires_grad=True)
    b = torch.tensor([200.0, -50.0, 0.0, 50.0, 200.0, -200.0, -200.0], requires_grad=True)
    z = joint_logit(a, b)
    assert torch.isfinite(z).all()
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1])  # positives towards IoU 0.7 and negatives
    qfl = quality_focal_loss_sparse(z[:, None], labels, torch.full((7,), 0.7), reduction="sum")
    qfl.backward()
    assert torch.isfinite(qfl) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_qfl_on_the_joint_logit_is_the_official_bce_on_probabilities():
    """QFL(logit(p)) equals the official F.binary_cross_entropy(p, y) * |y - p|^beta away from the clamps."""
    torch.manual_seed(1)
    a, b = torch.randn(50, 4, dtype=torch.float64) * 3, torch.randn(50, 1, dtype=torch.float64) * 3
    labels, scores = torch.randint(0, 5, (50,)), torch.rand(50, dtype=torch.float64)
    ours = quality_focal_loss_sparse(joint_logit(a, b).double(), labels, scores, reduction="none")
    p = a.sigmoid() * b.sigmoid()
    target = torch.zeros_like(p)
    pos = labels < 4
    target[pos, labels[pos]] = scores[pos]
    official = F.binary_cross_entropy(p, target, reduction="none") * (target - p).abs().pow(2)
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-7)


def test_joint_logit_under_cpu_autocast():
    a, b = torch.randn(8, 3), torch.randn(8, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = joint_logit(a.bfloat16(), b.bfloat16())
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.sigmoid(), a.bfloat16().float().sigmoid() * b.bfloat16().float().sigmoid(),
                               rtol=0, atol=1e-6)
