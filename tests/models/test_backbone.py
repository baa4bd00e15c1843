"""Backbone: its fast path (gfldet.models.fusion: channels_last, BatchNorm folded into fused oneDNN convolutions)
computes the same function as the plain modules; BatchNorm modes (frozen statistics / ordinary) and frozen stages."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gfldet.models.backbone import FrozenStatsBatchNorm2d, ResNetBackbone
from gfldet.models.fusion import FusedResNetBackbone, set_fusion


def _randomise_norms(net: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so that folding them is actually exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def _plain(net: ResNetBackbone, x: torch.Tensor) -> list[torch.Tensor]:
    """``net(x)`` with the plain modules, ``net`` left as it was (fused or not)."""
    fused = type(net) is FusedResNetBackbone
    set_fusion(net, False)
    try:
        return net(x)
    finally:
        set_fusion(net, fused)


@pytest.mark.parametrize("depth,groups,wpg", [(18, 1, 64), (50, 1, 64), (50, 4, 16)])
def test_fast_inference_path_equals_plain_modules(depth, groups, wpg):
    torch.manual_seed(0)
    net = set_fusion(ResNetBackbone(depth, groups, wpg).eval(), True)
    _randomise_norms(net)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        fast, plain = net(x), _plain(net, x)
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in fast), "the fused path did not run"
    assert [f.shape for f in fast] == [p.shape for p in plain]
    for f, p in zip(fast, plain):
        scale = p.abs().max().item()
        assert (f - p).abs().max().item() <= 1e-4 * scale, "fused / channels_last features differ from the plain modules"


@pytest.mark.parametrize("depth,groups,wpg", [(18, 1, 64), (50, 4, 16)])
def test_training_gradients_unchanged_by_fast_path(depth, groups, wpg):
    """In training the frozen stem and layer1 may run fused (no gradient flows there) and the trainable stages
    fold their frozen-statistics BatchNorm into the convolutions inside the graph: features and the gradients of
    every trainable parameter (convs, BatchNorm gamma / beta) equal those of the plain modules up to rounding."""
    torch.manual_seed(0)
    net = ResNetBackbone(depth, groups, wpg).train()
    _randomise_norms(net)
    x = torch.randn(2, 3, 64, 64)
    grads, feats = [], []
    for fast in (True, False):
        net.zero_grad()
        set_fusion(net, fast)
        assert (type(net) is FusedResNetBackbone) == fast
        out = net(x)
        sum(f.square().mean() for f in out).backward()
        feats.append([f.detach() for f in out])
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad})
    for f, p in zip(*feats):
        assert (f - p).abs().max().item() <= 1e-4 * p.abs().max().item()
    assert grads[0].keys() == grads[1].keys() and grads[0]
    assert any(".bn" in n for n in grads[0]), "BatchNorm gamma / beta of trainable stages must get gradients"
    for n in grads[0]:
        scale = grads[1][n].abs().max().item()
        assert (grads[0][n] - grads[1][n]).abs().max().item() <= 1e-4 * scale, n  # float rounding only


def test_folded_weights_follow_parameter_updates():
    """The folded-weight cache must notice in-place updates (optimizer steps, load_state_dict)."""
    torch.manual_seed(0)
    net = set_fusion(ResNetBackbone(18).eval(), True)
    _randomise_norms(net)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        net(x)  # fills the cache
        net.layer3[0].bn1.running_var.mul_(4.0)
        net.layer3[0].conv1.weight.mul_(0.5)
        fast, plain = net(x), _plain(net, x)
    for f, p in zip(fast, plain):
        assert (f - p).abs().max().item() <= 1e-4 * p.abs().max().item()


def test_frozen_statistics_by_default_and_ordinary_batchnorm_on_request():
    frozen = ResNetBackbone(18).train()
    assert all(isinstance(m, FrozenStatsBatchNorm2d) and not m.training for m in frozen.modules() if isinstance(m, nn.BatchNorm2d))

    torch.manual_seed(0)
    net = ResNetBackbone(18, frozen_stages=1, norm_eval=False).train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(isinstance(m, FrozenStatsBatchNorm2d) for m in bns)
    # frozen stages keep eval-mode BatchNorm (fixed statistics), the others train
    assert not net.bn1.training and not net.layer1[0].bn1.training
    assert net.layer2[0].bn1.training and net.layer4[1].bn2.training
    stem, l1, l2 = net.bn1.running_mean.clone(), net.layer1[0].bn1.running_mean.clone(), net.layer2[0].bn1.running_mean.clone()
    net(torch.rand(2, 3, 64, 64) * 3)
    assert torch.equal(net.bn1.running_mean, stem) and torch.equal(net.layer1[0].bn1.running_mean, l1)
    assert not torch.equal(net.layer2[0].bn1.running_mean, l2), "ordinary BatchNorm must update its statistics"
    net.eval()
    assert not any(m.training for m in bns)


def test_norm_eval_reaches_the_detector_from_a_run_config():
    from gfldet.config import Config

    cfg = Config()
    cfg.model.arch = "gfl_resnet18_fpn"
    cfg.model.norm_eval = False
    mcfg = cfg.model_config(num_classes=3)
    assert mcfg.norm_eval is False
    from gfldet.models.detector import GFL

    model = GFL(mcfg)
    assert not any(isinstance(m, FrozenStatsBatchNorm2d) for m in model.backbone.modules())


@pytest.mark.parametrize("depth", [18, 50])
def test_base_channels_scales_every_stage(depth):
    """base_channels=32 halves the stem and every stage's width (mmdetection's base_channels); the C3-C5 maps
    keep their strides, out_channels tells the FPN their widths, and the fast path still equals the plain one."""
    torch.manual_seed(0)
    net = set_fusion(ResNetBackbone(depth, base_channels=32).eval(), True)
    _randomise_norms(net)
    expansion = 4 if depth == 50 else 1
    assert net.conv1.out_channels == 32 and net.layer1[0].conv1.out_channels == 32
    assert net.out_channels == [64 * expansion, 128 * expansion, 256 * expansion]
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        feats, plain = net(x), _plain(net, x)
    assert [tuple(f.shape) for f in feats] == [(2, c, 96 // s, 64 // s) for c, s in zip(net.out_channels, (8, 16, 32))]
    for a, b in zip(feats, plain):
        assert (a - b).abs().max().item() <= 1e-4 * b.abs().max().item()
    standard = ResNetBackbone(depth)
    n_std, n_half = (sum(p.numel() for p in m.parameters()) for m in (standard, net))
    assert 0.2 < n_half / n_std < 0.3  # convolution weights scale with width squared


def test_base_channels_reaches_the_detector_and_its_checkpoint(tmp_path):
    from gfldet.config import Config
    from gfldet.models.io import load_model, save_checkpoint
    from gfldet.models.detector import GFL

    cfg = Config()
    cfg.model.arch = "gfl_resnet18_fpn"
    cfg.model.base_channels = 32
    cfg.model.fpn_channels = cfg.model.head_channels = 32
    model = GFL(cfg.model_config(num_classes=2)).eval()
    assert model.backbone.conv1.out_channels == 32 and model.neck.lateral_convs[0].in_channels == 64
    images = [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)]
    with torch.no_grad():
        before = model(images)[0]
    save_checkpoint(tmp_path / "m.pt", model)
    again = load_model(tmp_path / "m.pt").eval()
    assert again.backbone.base_channels == 32
    with torch.no_grad():
        after = again(images)[0]
    torch.testing.assert_close(after["boxes"], before["boxes"])


@pytest.mark.parametrize("bad", [0, -8, 1.5, True])
def test_base_channels_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="base_channels"):
        ResNetBackbone(18, base_channels=bad)
    with pytest.raises(ValueError, match="groups"):
        ResNetBackbone(101, groups=32, width_per_group=4, base_channels=32)


def test_imagenet_weights_need_the_standard_widths():
    from gfldet.models.zoo import gfl_resnet18_fpn

    with pytest.raises(ValueError, match="base_channels=64"):
        gfl_resnet18_fpn(num_classes=3, base_channels=32, weights_backbone="IMAGENET1K_V1")
    narrow = ResNetBackbone(18, base_channels=32)
    with pytest.raises(ValueError, match="base_channels=64"):
        narrow.load_torchvision_weights(ResNetBackbone(18).state_dict())
