"""mmdetection checkpoints with DCNv2 (mmcv's ModulatedDeformConv2dPack as the bottlenecks' conv2): the stages and
deform groups are read off the tensors, the names map both ways, and the layouts gfldet lacks are refused by key."""
from __future__ import annotations

import pytest
import torch

from gfldet import GFL, ModelConfig
from gfldet.models.dcn import ModulatedDeformConv2d
from gfldet.models.io import from_mmdet
from gfldet.models.mmdet import mmdet_config_from_state_dict, to_mmdet_state_dict


def _model(**kw) -> GFL:
    torch.manual_seed(0)
    cfg = dict(depth=50, base_channels=16, fpn_channels=32, head_channels=32, gn_groups=8, num_classes=3,
               stage_with_dcn=(False, False, True, True), deform_groups=2, min_size=None, max_size=None)
    model = GFL(ModelConfig(**(cfg | kw))).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ModulatedDeformConv2d):
                m.conv_offset.weight.normal_(0, 0.01)
                m.conv_offset.bias.normal_(0, 0.3)
    return model


def test_dcn_checkpoint_round_trip():
    model = _model()
    sd = to_mmdet_state_dict(model)
    assert sd["backbone.layer3.0.conv2.conv_offset.weight"].shape == (54, 64, 3, 3)
    assert "backbone.layer3.0.conv2.weight" in sd and not any(k.startswith("backbone.layer2.") and "conv_offset" in k for k in sd)
    cfg = mmdet_config_from_state_dict(sd)
    assert cfg.stage_with_dcn == (False, False, True, True) and cfg.deform_groups == 2
    loaded = from_mmdet(sd, min_size=None, max_size=None, gn_groups=8)  # GroupNorm groups are not in the tensors
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(*(m.forward_features(x)[0] for m in (model, loaded))):
            assert torch.equal(a, b)


def test_plain_checkpoints_infer_no_dcn():
    cfg = mmdet_config_from_state_dict(to_mmdet_state_dict(_model(stage_with_dcn=(False,) * 4, deform_groups=1)))
    assert cfg.stage_with_dcn == (False,) * 4 and cfg.deform_groups == 1


def _drop(sd, prefix):
    for k in [k for k in sd if k.startswith(prefix)]:
        del sd[k]


@pytest.mark.parametrize("mutate, match", [
    (lambda sd: _drop(sd, "backbone.layer3.4.conv2.conv_offset."), r"layer3 has deformable convolutions in blocks \[0, 1, 2, 3, 5\] of 6"),
    (lambda sd: sd.__setitem__("backbone.layer3.0.conv2.conv_offset.weight", torch.zeros(36, 64, 3, 3)),
     r"differ in deform_groups / kind \[\(2, False\), \(2, True\)\]"),  # one DCNv1 block among DCNv2 ones
    (lambda sd: sd.__setitem__("backbone.layer4.1.conv2.conv_offset.weight", torch.zeros(30, 128, 3, 3)),
     r"layer4\.1\.conv2\.conv_offset\.weight has 30 outputs: neither DCNv2 \(27 per deform group"),
    (lambda sd: sd.pop("backbone.layer4.1.conv2.conv_offset.bias"), r"layer4\.1\.conv2\.conv_offset\.weight has no bias"),
    (lambda sd: sd.__setitem__("backbone.layer3.0.conv1.conv_offset.weight", torch.zeros(27, 64, 1, 1)),
     r"outside the ResNet bottlenecks' conv2.*layer3\.0\.conv1\.conv_offset"),
    (lambda sd: sd.__setitem__("backbone.layer4.0.conv2.conv_offset.weight", torch.zeros(27, 128, 3, 3)),
     r"differ in deform_groups / kind \[\(1, True\), \(2, True\)\]"),
])
def test_unsupported_dcn_layouts_are_refused(mutate, match):
    sd = to_mmdet_state_dict(_model())
    mutate(sd)
    with pytest.raises(ValueError, match=match):
        from_mmdet(sd)


def test_dcn_on_basic_blocks_is_refused():
    sd = to_mmdet_state_dict(GFL(ModelConfig(depth=18, fpn_channels=32, head_channels=32, num_classes=3)))
    for b in range(2):
        sd[f"backbone.layer4.{b}.conv2.conv_offset.weight"] = torch.zeros(27, 512, 3, 3)
        sd[f"backbone.layer4.{b}.conv2.conv_offset.bias"] = torch.zeros(27)
    with pytest.raises(ValueError, match="stage_with_dcn.*bottleneck.*ResNet-18"):
        from_mmdet(sd)


def test_dcnv1_checkpoints_load():
    """mmdetection's published GFL DCN models use dcn type 'DCN' (mmcv's DeformConv2dPack: 18 offsets per deform
    group, no mask); they are read as dcn_modulated=False and give the same outputs after a round trip."""
    model = _model(dcn_modulated=False, deform_groups=1)
    sd = to_mmdet_state_dict(model)
    assert sd["backbone.layer3.0.conv2.conv_offset.weight"].shape == (18, 64, 3, 3)
    cfg = mmdet_config_from_state_dict(sd)
    assert cfg.stage_with_dcn == (False, False, True, True) and cfg.deform_groups == 1 and cfg.dcn_modulated is False
    loaded = from_mmdet(sd, min_size=None, max_size=None, gn_groups=8)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(*(m.forward_features(x)[0] for m in (model, loaded))):
            assert torch.equal(a, b)
