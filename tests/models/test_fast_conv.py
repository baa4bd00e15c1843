"""The CPU inference fast path (gfldet.models.fast_conv) in the FPN and the head computes what the plain modules
compute, at any input size, and follows in-place weight updates; it stays out of training and tracing."""
from __future__ import annotations

import copy

import pytest
import torch

import gfldet
from gfldet.models import fast_conv

pytestmark = pytest.mark.skipif(not fast_conv.available(), reason="this torch build has no fused oneDNN convolutions")


def _plain(monkeypatch, fn):
    """Run ``fn`` with the fast path switched off everywhere (the modules' own forward)."""
    with monkeypatch.context() as m:
        m.setattr(fast_conv, "usable", lambda *a, **k: False)
        m.setattr(fast_conv, "available", lambda: False)
        return fn()


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=64, head_channels=64).eval()
    with torch.no_grad():  # non-trivial head / FPN weights and biases, so a wrong weight or a dropped bias shows
        for p in list(model.neck.parameters()) + list(model.head.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    """Element-wise agreement of two float32 computations of the same maps, within float32 rounding of values of
    this size (a wrong weight, pad or bias is off by far more); used where both sides take the same path."""
    assert [x.shape for x in a] == [y.shape for y in b]
    for x, y in zip(a, b):
        assert (x - y).abs().max().item() <= 1e-4 * max(1.0, y.abs().max().item())


def _as_accurate_as_plain(fast: list[torch.Tensor], plain: list[torch.Tensor], exact: list[torch.Tensor]) -> None:
    """The fast path is as accurate as the plain float32 modules, measured against a float64 run of the same model.

    Both float32 paths compute the same sums in other orders (other oneDNN kernels on other CPUs, fused or not),
    so each carries rounding error of the same kind: about sqrt(K) * 2^-24 times the magnitudes summed, for the
    accumulation lengths K of the ~20 convolutions in a row, amplified by the random network (GroupNorm over the
    1x1 maps of the coarsest levels amplifies it ~1000-fold). How large that is depends on the machine's kernels,
    not on gfldet, so the bound is relative to the plain path's own error on this machine, as a root mean square
    over each map (the maximum of a few amplified errors is too noisy to compare): within 4x of it, plus a floor
    of 64 float32 ulps of the map's RMS value (for maps where the plain path happens to be almost exact). Maps
    of a single location are the exception: there GroupNorm normalises two values per group, its output's
    sensitivity to rounding is 1 / |a - b|, a random and possibly huge factor, so the two paths' errors are
    compared within 32x. A wrong weight, a dropped bias or a misplaced pad gives errors of the order of the
    values themselves.
    """
    ulp = torch.finfo(torch.float32).eps

    def rms(t: torch.Tensor) -> float:
        return t.double().pow(2).mean().sqrt().item()

    assert [x.shape for x in fast] == [y.shape for y in plain] == [z.shape for z in exact]
    for level, (f, p, e) in enumerate(zip(fast, plain, exact)):
        err_fast, err_plain = rms(f.double() - e), rms(p.double() - e)
        factor = 32 if f.shape[-2:].numel() == 1 else 4
        bound = factor * err_plain + 64 * ulp * rms(e)
        assert err_fast <= bound, f"level {level}: fast path RMS error {err_fast:.3g} vs plain {err_plain:.3g} (bound {bound:.3g})"


@pytest.mark.parametrize("size", [(1, 96, 128), (2, 64, 64), (1, 160, 96)])
def test_fpn_and_head_fast_path_equal_plain_modules(monkeypatch, size):
    model = _model()
    n, h, w = size
    x = torch.randn(n, 3, h, w)
    with torch.no_grad():
        cls_fast, reg_fast = model.forward_features(x)
        cls_plain, reg_plain = _plain(monkeypatch, lambda: model.forward_features(x))
        exact = copy.deepcopy(model).double()  # float64 tensors never take the fast path
        cls_exact, reg_exact = exact.forward_features(x.double())
    _as_accurate_as_plain(cls_fast, cls_plain, cls_exact)
    _as_accurate_as_plain(reg_fast, reg_plain, reg_exact)


def test_weights_packed_per_input_shape_and_refreshed_after_updates(monkeypatch):
    model = _model()
    # sizes whose smallest level is at least 2x2: GroupNorm over a 1x1 map with two values per group amplifies
    # float rounding ~1000-fold (ill-conditioned whichever convolution algorithm runs)
    a, b = torch.randn(1, 3, 256, 320), torch.randn(1, 3, 320, 256)
    with torch.no_grad():
        model.forward_features(a)
        model.forward_features(b)  # another shape: its own packed weights, not the first shape's
        for p in model.head.parameters():
            p.mul_(1.5)  # in place, as an optimizer step or load_state_dict does
        for p in model.neck.parameters():
            p.mul_(0.5)
        fast = model.forward_features(a)
        plain = _plain(monkeypatch, lambda: model.forward_features(a))
        exact = copy.deepcopy(model).double().forward_features(a.double())
    _as_accurate_as_plain(fast[0] + fast[1], plain[0] + plain[1], exact[0] + exact[1])


def test_training_runs_the_plain_modules_in_nchw(monkeypatch):
    """Gradients flow through the FPN and head in training: no fast path there, and NCHW activations from the
    first trainable backbone block on (oneDNN's NHWC convolution backward is slower on CPU)."""
    model = _model().train()
    feats = model.backbone(torch.randn(2, 3, 64, 64))  # the frozen stem and layer1 may run fused: no gradient there
    assert all(f.is_contiguous() for f in feats)
    calls = []
    monkeypatch.setattr(fast_conv, "conv2d", lambda *a, **k: calls.append(a[0]) or pytest.fail("fast path in training"))
    outs = model.neck(feats)
    cls, reg = model.head(outs)
    assert cls[0].requires_grad and reg[0].requires_grad and not calls


def test_fast_path_not_used_under_grad_for_trainable_modules():
    model = _model()  # eval mode, but gradients enabled and parameters trainable: autograd must see the modules
    cls, reg = model.forward_features(torch.randn(1, 3, 64, 64))
    loss = sum(c.sum() for c in cls) + sum(r.sum() for r in reg)
    loss.backward()
    assert model.head.cls_convs[0].conv.weight.grad is not None
    assert model.neck.lateral_convs[0].weight.grad is not None


def test_model_built_and_changed_under_inference_mode(monkeypatch):
    """Parameters created under torch.inference_mode have no version counter: the fast path must not cache them,
    so an in-place change made under inference mode is seen by the next call."""
    with torch.inference_mode():
        model = _model().eval()
        x = torch.randn(1, 3, 256, 320)  # smallest level 2x3 (see the shape note above)
        model.forward_features(x)
        for p in model.parameters():
            p.mul_(0.9)  # in place, invisible to a version counter
        cls, reg = model.forward_features(x)
        cls_p, reg_p = _plain(monkeypatch, lambda: model.forward_features(x))
        cls_e, reg_e = copy.deepcopy(model).double().forward_features(x.double())
    _as_accurate_as_plain(cls + reg, cls_p + reg_p, cls_e + reg_e)


def test_fpn_with_gradient_on_a_coarser_input_only():
    """The FPN looks at all its inputs: a frozen FPN fed C4/C5 that need gradients must let them flow."""
    fpn = gfldet.models.backbone.FPN([4, 8, 16], 8).requires_grad_(False)
    feats = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8, requires_grad=True), torch.randn(1, 16, 4, 4, requires_grad=True)]
    sum(o.sum() for o in fpn(feats)).backward()
    assert feats[1].grad is not None and feats[1].grad.abs().sum() > 0


def test_hooks_and_padding_modes_run_the_modules_own_forward(monkeypatch):
    model = _model()
    seen = []
    handle = model.head.cls_convs[0].conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model.forward_features(torch.randn(1, 3, 64, 64))
    handle.remove()
    assert len(seen) == 5, "a forward hook must fire at every level"
    fpn = gfldet.models.backbone.FPN([4, 8, 16], 8).eval()
    fpn.fpn_convs[0].padding_mode = "reflect"
    feats = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    with torch.no_grad():
        fast = fpn(feats)
        plain = _plain(monkeypatch, lambda: fpn(feats))
    _close(fast, plain)


def test_cache_entries_go_with_their_model():
    import gc
    import weakref

    model = _model()
    with torch.no_grad():
        model.forward_features(torch.randn(1, 3, 64, 64))
    ref = weakref.ref(model.head.cls_convs[0].conv)
    assert ref() in fast_conv._CACHE
    del model
    gc.collect()
    assert ref() is None, "the fast-path cache must not keep a deleted model alive"
