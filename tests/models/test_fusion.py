"""The CPU fast path (gfldet.models.fusion over gfldet.ops.fast_conv) is taken by GFL.optimize_for_cpu(), computes what the
plain modules compute at any input size, follows in-place weight updates, and leaves the plain modules to
training, gradients, tracing and hooks; the swap leaves parameters and state_dict as they are."""
from __future__ import annotations

import copy
import gc
import io
import weakref

import pytest
import torch

import gfldet
from gfldet.models.backbone import FPN, ResNetBackbone
from gfldet.errors import GfldetError
from gfldet.models.fusion import FusedConvGN, FusedFPN, FusedResNetBackbone, is_fused, set_fusion
from gfldet.models.head import ConvGN
from gfldet.ops import fast_conv

pytestmark = pytest.mark.skipif(not fast_conv.available(), reason="this torch build has no fused oneDNN convolutions")


def _plain(model, fn):
    """Run ``fn`` with the plain modules everywhere in ``model`` (their own forward), then fuse them again."""
    set_fusion(model, False)
    try:
        return fn()
    finally:
        set_fusion(model, True)


def _spy(monkeypatch) -> list[int]:
    """The ids of the convolutions fast_conv.conv2d is called with from now on."""
    calls: list[int] = []
    real = fast_conv.conv2d
    monkeypatch.setattr(fast_conv, "conv2d", lambda conv, *a, **k: calls.append(id(conv)) or real(conv, *a, **k))
    return calls


def _convs(module: torch.nn.Module) -> set[int]:
    return {id(m) for m in module.modules() if isinstance(m, torch.nn.Conv2d)}


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=64, head_channels=64).optimize_for_cpu().eval()
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
        # Or within the rounding any float32 path of this random network carries: ulp x sqrt(accumulation length)
        # (~50-150 for 3x3 convs over 64-256 channels) x the ~1000-10000-fold amplification of its normalisations
        # = up to a few 1e-2 of the map's RMS. Which path lands where depends on the kernels: measured on an AMD
        # EPYC, the worst map of the plain path is 6e-3 of its RMS with the default kernels (the fused path 3e-4),
        # while with ATEN_CPU_CAPABILITY=default the plain path is 4e-6 and the fused one 4e-3, and with
        # ONEDNN_MAX_CPU_ISA=SSE41 6e-3 and 1e-2: the ratio of the two errors says nothing there, the size does.
        # A wrong weight, bias or pad is off by the order of the RMS itself.
        bound = max(factor * err_plain + 64 * ulp * rms(e), 5e-2 * rms(e))
        assert err_fast <= bound, f"level {level}: fast path RMS error {err_fast:.3g} vs plain {err_plain:.3g} (bound {bound:.3g})"


def _fpn_and_head_three_ways(model, x: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
    """The FPN and head on the same backbone features (the backbone's own fast path is compared in
    tests/models/test_backbone.py): fused, plain, and in float64 (no packed convolutions)."""
    feats = model.backbone(x)
    fast = model.head(model.neck(feats))
    plain = _plain(model, lambda: model.head(model.neck(feats)))
    exact = copy.deepcopy(model).double()
    exact = exact.head(exact.neck([f.double() for f in feats]))
    return fast[0] + fast[1], plain[0] + plain[1], exact[0] + exact[1]


@pytest.mark.parametrize("size", [(1, 96, 128), (2, 64, 64), (1, 160, 96)])
def test_fpn_and_head_fast_path_equal_plain_modules(size):
    model = _model()
    with torch.no_grad():
        _as_accurate_as_plain(*_fpn_and_head_three_ways(model, torch.randn(*size[:1], 3, *size[1:])))


def test_weights_packed_per_input_shape_and_refreshed_after_updates():
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
        _as_accurate_as_plain(*_fpn_and_head_three_ways(model, a))


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


def test_model_built_and_changed_under_inference_mode():
    """Parameters created under torch.inference_mode have no version counter: the fast path must not cache them,
    so an in-place change made under inference mode is seen by the next call."""
    with torch.inference_mode():
        model = _model().eval()
        x = torch.randn(1, 3, 256, 320)  # smallest level 2x3 (see the shape note above)
        model.forward_features(x)
        for p in model.parameters():
            p.mul_(0.9)  # in place, invisible to a version counter
        cls, reg = model.forward_features(x)
        cls_p, reg_p = _plain(model, lambda: model.forward_features(x))
        cls_e, reg_e = copy.deepcopy(model).double().forward_features(x.double())
    _as_accurate_as_plain(cls + reg, cls_p + reg_p, cls_e + reg_e)


def test_fpn_with_gradient_on_a_coarser_input_only():
    """The FPN looks at all its inputs: a frozen FPN fed C4/C5 that need gradients must let them flow."""
    fpn = set_fusion(FPN([4, 8, 16], 8).requires_grad_(False), True)
    feats = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8, requires_grad=True), torch.randn(1, 16, 4, 4, requires_grad=True)]
    sum(o.sum() for o in fpn(feats)).backward()
    assert feats[1].grad is not None and feats[1].grad.abs().sum() > 0


def test_hooks_and_padding_modes_run_the_modules_own_forward(monkeypatch):
    model = _model()
    seen = []
    hooked = [model.head.cls_convs[0].conv, model.neck.fpn_convs[1], model.backbone.layer3[0].conv2, model.backbone.layer2]
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(m)) for m in hooked]
    calls = _spy(monkeypatch)
    with torch.no_grad():
        model.forward_features(torch.randn(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert [seen.count(m) for m in hooked] == [5, 1, 1, 1], "a forward hook must fire wherever its module runs"
    assert not set(calls) & (_convs(model.head.cls_convs[0]) | _convs(model.neck) | _convs(model.backbone.layer3[0]))
    assert id(model.backbone.layer4[0].conv1) in calls, "modules without hooks stay fused"
    fpn = set_fusion(FPN([4, 8, 16], 8).eval(), True)
    fpn.fpn_convs[0].padding_mode = "reflect"
    feats = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    with torch.no_grad():
        fast = fpn(feats)
        plain = _plain(fpn, lambda: fpn(feats))
    _close(fast, plain)


def test_cache_entries_go_with_their_model(monkeypatch):
    model = _model()
    calls = _spy(monkeypatch)
    with torch.no_grad():
        model.forward_features(torch.randn(1, 3, 64, 64))
    ref = weakref.ref(model.head.cls_convs[0].conv)
    assert id(ref()) in calls  # its folded and packed weights are cached
    del model, calls
    gc.collect()
    assert ref() is None, "the fast-path cache must not keep a deleted model alive"


def test_the_fast_path_is_taken_explicitly_and_kept_across_train_and_eval(monkeypatch):
    torch.manual_seed(0)
    model = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=64, head_channels=64)
    for step in (model.eval, model.train, model.eval):  # a model built in Python runs the plain modules: no swap
        step()
        assert type(model.backbone) is ResNetBackbone and type(model.neck) is FPN and not is_fused(model)
    calls = _spy(monkeypatch)
    with torch.no_grad():
        model([torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)])
    assert calls == [], "without optimize_for_cpu() no fused convolution runs"
    assert model.optimize_for_cpu() is model
    assert type(model.backbone) is FusedResNetBackbone and type(model.neck) is FusedFPN
    assert all(type(m) is FusedConvGN for m in list(model.head.cls_convs) + list(model.head.reg_convs))
    with torch.no_grad():
        model([torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)])
    assert set(calls) == _convs(model.backbone) | _convs(model.neck) | _convs(model.head.cls_convs) | _convs(
        model.head.reg_convs), "on CPU every backbone, FPN and tower convolution runs fused"
    model.train()  # train() / eval() keep the classes: each fused forward decides per call
    assert type(model.backbone) is FusedResNetBackbone and type(model.neck) is FusedFPN
    assert model.optimize_for_cpu(False) is model and not is_fused(model)
    assert all(type(m) is ConvGN for m in model.head.modules() if isinstance(m, ConvGN))
    with pytest.raises(GfldetError, match="set_fusion takes"):
        set_fusion(model, "inference")


def test_fused_backbone_runs_its_plain_forward_off_the_cpu(monkeypatch):
    """On another device the fused backbone neither forces channels_last nor calls the CPU kernels (checked on
    the meta device, which any machine has)."""
    model = _model()
    calls = _spy(monkeypatch)
    x = torch.randn(1, 3, 64, 64, device="meta")
    with torch.no_grad():
        feats = model.to("meta").backbone(x)
    assert calls == [] and all(f.device.type == "meta" and f.is_contiguous() for f in feats)


def test_fusion_leaves_parameters_and_state_dict_as_they_are():
    torch.manual_seed(0)
    model = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=64, head_channels=64)
    before = copy.deepcopy(model.state_dict())
    params = list(model.named_parameters())
    for step in (model.eval, model.train, model.eval):
        step()
        after = model.state_dict()
        assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
        assert [(n, id(p)) for n, p in model.named_parameters()] == [(n, id(p)) for n, p in params]
    buf = io.BytesIO()
    torch.save(model, buf)  # a whole-module pickle of a fused model loads and computes the same
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _close(list(again.forward_features(x)[0]), list(model.forward_features(x)[0]))


def test_gradients_in_eval_mode_go_through_the_plain_modules(monkeypatch):
    """eval() and then a forward with gradients (e.g. an input-gradient attribution): the FPN and head run their
    own forward, the backbone's blocks fold BatchNorm inside the autograd graph, and the gradients are as accurate
    as those of the plain modules (measured against float64, as above)."""
    model = _model()
    x = torch.randn(1, 3, 256, 320)  # smallest level 2x3 (see the shape note above)

    def grads(net, inp):
        inp = inp.clone().requires_grad_(True)
        net.zero_grad()
        cls, reg = net.forward_features(inp)
        (sum(c.square().sum() for c in cls) + sum(r.square().sum() for r in reg)).backward()
        return [inp.grad] + [p.grad for p in net.parameters() if p.grad is not None]

    calls = _spy(monkeypatch)
    fast = [g.clone() for g in grads(model, x)]
    assert not calls, "no fused (non-differentiable) convolution when a gradient must flow"
    plain = [g.clone() for g in _plain(model, lambda: grads(model, x))]
    exact = grads(copy.deepcopy(model).double(), x.double())
    assert len(fast) == len(plain) == len(exact) > 10
    _as_accurate_as_plain(fast, plain, exact)


class _Features(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.model.forward_features(x)


def test_tracing_sees_the_plain_modules(monkeypatch):
    """torch.jit.trace (what the ONNX exporter's tracing mode runs) of an eval-mode model records the plain
    modules: ordinary convolutions, no oneDNN fused operators, NCHW."""
    model = _model()
    x = torch.randn(1, 3, 64, 64)
    calls = _spy(monkeypatch)
    with torch.no_grad():
        traced = torch.jit.trace(_Features(model), x, check_trace=False)
        expected = _plain(model, lambda: model.forward_features(x))
    assert not calls
    graph = str(traced.inlined_graph)
    assert "mkldnn" not in graph and "aten::_convolution" in graph
    with torch.no_grad():
        cls, reg = traced(x)
    _close(list(cls) + list(reg), list(expected[0]) + list(expected[1]))
