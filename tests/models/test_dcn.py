"""Modulated deformable convolution (gfldet.models.dcn) and the ResNet backbone with DCN: mmcv's offset / mask
layout, ResNeXt groups, gradients, ImageNet initialisation, frozen stages, config rules, the CPU fast path, and one
training step of a DCN detector."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from gfldet import GFL, ModelConfig
from gfldet.config import ConfigError, load_config
from gfldet.models.backbone import ResNetBackbone
from gfldet.models.config import FieldError
from gfldet.models.dcn import ModulatedDeformConv2d
from gfldet.models.fusion import set_fusion

C345 = (False, True, True, True)


def _random_offsets(module: torch.nn.Module, std: float, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, ModulatedDeformConv2d):
                m.conv_offset.weight.copy_(torch.randn(m.conv_offset.weight.shape, generator=g) * std)
                m.conv_offset.bias.copy_(torch.randn(m.conv_offset.bias.shape, generator=g) * std * 10)


@pytest.mark.parametrize("groups", [1, 2])
def test_offset_layout_is_mmcvs_and_groups_follow_the_weight(groups):
    """conv_offset's output is (o1, o2, mask logits); offsets = cat(o1, o2) hold (dy, dx) per tap. Shifting every tap
    one pixel right (dx = 1) with mask logits 0 (mask 0.5) is half the plain (grouped) convolution whose window starts
    at the output's own column (zero padding: two columns on the right, none on the left)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=groups, bias=False)
    dcn = ModulatedDeformConv2d.from_conv(conv)
    assert dcn.weight is conv.weight and dcn.conv_offset.out_channels == 27
    with torch.no_grad():
        dx = torch.zeros(27)
        dx[1:18:2] = 1.0  # channels 1, 3, ..., 17 of cat(o1, o2): the dx of each of the 9 taps
        dcn.conv_offset.bias.copy_(dx)
    x = torch.randn(2, 4, 7, 9)
    ref = F.conv2d(F.pad(x, (0, 2, 1, 1)), conv.weight, groups=groups)
    torch.testing.assert_close(dcn(x), 0.5 * ref, rtol=0, atol=1e-5)
    assert (dcn(x) - 0.5 * conv(x)).abs().max() > 0.1  # the shift matters


def test_dcnv1_layout_is_mmcvs_deform_conv2d_pack():
    """DCNv1 (mmcv's DeformConv2dPack): conv_offset's 18 outputs are the (dy, dx) of each tap, no mask. A fresh one
    is the plain convolution; shifting every tap one pixel right is the plain convolution of the shifted window."""
    from gfldet.models.dcn import DeformConv2d, deformable_conv

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    dcn = deformable_conv(conv, modulated=False)
    assert type(dcn) is DeformConv2d and dcn.conv_offset.out_channels == 18 and dcn.weight is conv.weight
    x = torch.randn(2, 4, 7, 9)
    torch.testing.assert_close(dcn(x), conv(x), rtol=0, atol=1e-5)
    with torch.no_grad():
        dx = torch.zeros(18)
        dx[1::2] = 1.0
        dcn.conv_offset.bias.copy_(dx)
    torch.testing.assert_close(dcn(x), F.conv2d(F.pad(x, (0, 2, 1, 1)), conv.weight), rtol=0, atol=1e-5)


def test_gradcheck_float64():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(4, 4, 3, stride=1, padding=1, groups=2, deform_groups=2, bias=True).double()
    _random_offsets(dcn, std=0.1)  # fractional offsets (away from the kinks of bilinear sampling) and a varied mask
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    offset, mask = dcn.offset_and_mask(x)
    assert 0.1 < offset.abs().max() < 3 and mask.std() > 0.02
    names = [n for n, _ in dcn.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in dcn.parameters()]
    fn = lambda x, *ps: functional_call(dcn, dict(zip(names, ps)), (x,))  # noqa: E731
    # fast mode: checks random projections of the Jacobian (the full one takes minutes for ~2000 parameters)
    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5, fast_mode=True)


def test_backbone_swaps_conv2_of_the_chosen_stages_only():
    bb = ResNetBackbone(50, base_channels=16, stage_with_dcn=(False, False, True, True), deform_groups=2)
    dcn = {n for n, m in bb.named_modules() if isinstance(m, ModulatedDeformConv2d)}
    assert dcn == {f"layer{i}.{b}.conv2" for i, n in ((3, 6), (4, 3)) for b in range(n)}
    assert bb.layer3[0].conv2.stride == (2, 2) and bb.layer3[0].conv2.conv_offset.stride == (2, 2)
    assert bb.layer3[0].conv2.conv_offset.out_channels == 54
    sd = bb.state_dict()
    assert "layer3.0.conv2.weight" in sd and "layer3.0.conv2.conv_offset.bias" in sd and "layer3.0.conv2.bias" not in sd
    assert not any("conv_offset" in k for k in sd if k.startswith(("layer1.", "layer2.")))
    assert all(float(v.abs().sum()) == 0 for k, v in sd.items() if "conv_offset" in k)
    x = torch.randn(1, 3, 64, 64)
    assert [f.shape[1] for f in bb(x)] == bb.out_channels


def test_resnext_dcn_keeps_groups():
    bb = ResNetBackbone(50, groups=32, width_per_group=4, stage_with_dcn=(False, False, False, True))
    conv2 = bb.layer4[0].conv2
    assert conv2.groups == 32 and conv2.weight.shape == (1024, 32, 3, 3)
    assert conv2.conv_offset.weight.shape == (27, 1024, 3, 3)


def test_basic_blocks_refuse_dcn():
    with pytest.raises(ValueError, match="bottleneck.*ResNet-18 has basic blocks"):
        ResNetBackbone(18, stage_with_dcn=C345)
    with pytest.raises(FieldError, match="stage_with_dcn.*ResNet-34"):
        ModelConfig(depth=34, stage_with_dcn=C345)


@pytest.mark.parametrize("kw, key", [
    (dict(stage_with_dcn=(True, False)), "stage_with_dcn"),
    (dict(stage_with_dcn=(1, 0, 0, 0)), "stage_with_dcn"),
    (dict(stage_with_dcn=C345, deform_groups=0), "deform_groups"),
    (dict(stage_with_dcn=C345, deform_groups=3, base_channels=16), "deform_groups"),
])
def test_config_rules(kw, key):
    with pytest.raises(FieldError) as e:
        ModelConfig(**kw)
    assert e.value.key == key
    assert ModelConfig(stage_with_dcn=C345, deform_groups=4).deform_groups == 4


def test_run_config_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["model.stage_with_dcn=[false, false, true, true]", "model.deform_groups=2"])
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    back = load_config(p)
    assert back == cfg and back.model_config(num_classes=3).stage_with_dcn == (False, False, True, True)
    with pytest.raises(ConfigError, match="model.stage_with_dcn.*ResNet-18"):
        load_config(None, ["model.arch=gfl_resnet18_fpn", "model.stage_with_dcn=[false, true, true, true]"])


def test_imagenet_weights_leave_offsets_at_zero_and_stay_strict_otherwise():
    plain = ResNetBackbone(50, frozen_stages=0)
    sd = dict(plain.state_dict()) | {"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    dcn = ResNetBackbone(50, stage_with_dcn=C345)
    dcn.load_torchvision_weights(sd)
    assert torch.equal(dcn.layer3[2].conv2.weight, plain.layer3[2].conv2.weight)
    assert float(dcn.layer3[2].conv2.conv_offset.weight.detach().abs().sum()) == 0
    del sd["layer3.2.conv2.weight"]
    with pytest.raises(ValueError, match="missing.*layer3.2.conv2.weight"):
        dcn.load_torchvision_weights(sd)


def test_frozen_stages_freeze_conv_offset():
    bb = ResNetBackbone(50, base_channels=16, frozen_stages=2, stage_with_dcn=C345)
    assert not any(p.requires_grad for p in bb.layer2[0].conv2.conv_offset.parameters())
    assert all(p.requires_grad for p in bb.layer3[0].conv2.conv_offset.parameters())


def _dcn_model(**kw) -> GFL:
    torch.manual_seed(0)
    cfg = dict(depth=50, base_channels=16, fpn_channels=32, head_channels=32, gn_groups=8, num_classes=3,
               stage_with_dcn=C345, min_size=None, max_size=None, frozen_stages=1, norm_eval=True)
    model = GFL(ModelConfig(**(cfg | kw)))
    _random_offsets(model, std=0.01)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that a wrongly folded bn2 shows
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0), m.bias.uniform_(-0.2, 0.2)
    return model


def _features(model: GFL, x: torch.Tensor, fused: bool) -> list[torch.Tensor]:
    set_fusion(model, fused)
    try:
        return model.backbone(x)
    finally:
        set_fusion(model, True)


@pytest.mark.parametrize("training", [False, True])
def test_fused_backbone_agrees_with_plain(training):
    """The CPU fast path runs DCN blocks as they are and folds the others: the same maps, in eval and in training
    with frozen BatchNorm statistics (norm_eval)."""
    model = _dcn_model().train(training)
    x = torch.randn(2, 3, 96, 128)
    with torch.set_grad_enabled(training):
        fused, plain = _features(model, x, True), _features(model, x, False)
    for a, b in zip(fused, plain):
        assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())
    if training:
        sum(f.sum() for f in fused).backward()
        assert model.backbone.layer2[1].conv2.conv_offset.weight.grad.abs().sum() > 0


def test_one_training_step_trains_the_offsets():
    model = _dcn_model()
    with torch.no_grad():  # the offsets start at zero, as a real model's do
        for m in model.modules():
            if isinstance(m, ModulatedDeformConv2d):
                m.conv_offset.weight.zero_(), m.conv_offset.bias.zero_()
    model.train()
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 96, 128), generator=g, dtype=torch.uint8) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 20.0, 120.0, 90.0]]), "labels": torch.tensor([0, 2])}
               for _ in range(2)]
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("layer2.0.conv2", "layer4.2.conv2"):
        off = model.backbone.get_submodule(name).conv_offset
        assert off.weight.grad is not None and off.weight.grad.abs().sum() > 0 and off.bias.grad.abs().sum() > 0
