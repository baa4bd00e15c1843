"""Loading mmdetection GFL checkpoints of any member of the family, and refusing what is not one."""
from __future__ import annotations

import pytest
import torch

import gfldet
from gfldet.models.io import from_mmdet
from gfldet.models.mmdet import mmdet_config_from_state_dict, to_mmdet_state_dict

FAMILY = [
    dict(arch="gfl_resnet18_fpn", num_classes=5, reg_max=16, fpn_channels=64, head_channels=64),
    dict(arch="gfl_resnet18_fpn", num_classes=1, reg_max=7, fpn_channels=32, head_channels=64, stacked_convs=2),
    dict(arch="gfl_resnet50_fpn", num_classes=11, reg_max=10, fpn_channels=64, head_channels=32),
    dict(arch="gfl_resnext101_32x4d_fpn", num_classes=2, reg_max=4, fpn_channels=32, head_channels=32, stacked_convs=1),
]


def _randomise(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if "running_var" in name:
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    return model


@pytest.mark.parametrize("spec", FAMILY, ids=lambda s: f"{s['arch']}-k{s['num_classes']}-n{s['reg_max']}")
def test_family_roundtrip(tmp_path, spec):
    spec = dict(spec)
    arch = spec.pop("arch")
    # a trained detector's regime (a checkpoint is read back with the reference's frozen_stages=1, norm_eval=True)
    ours = _randomise(gfldet.build_model(arch, min_size=None, max_size=None, frozen_stages=1, norm_eval=True, **spec)).eval()
    path = tmp_path / "mmdet.pth"
    torch.save({"meta": {"CLASSES": tuple(f"c{i}" for i in range(spec["num_classes"]))},
                "state_dict": {k: v.half() for k, v in to_mmdet_state_dict(ours).items()}}, path)
    loaded = from_mmdet(path, min_size=None, max_size=None)
    assert loaded.config == ours.config
    assert loaded.class_names == [f"c{i}" for i in range(spec["num_classes"])]
    imgs = [torch.rand(3, 70, 90), torch.rand(3, 96, 64)]
    with torch.no_grad():
        ref = _randomise_half(ours)(imgs)
        out = loaded(imgs)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a["boxes"], b["boxes"])
        torch.testing.assert_close(a["scores"], b["scores"])


def _randomise_half(model):
    """The saved checkpoint was float16: compare against the model with the same rounding."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def test_state_dict_with_ddp_prefix_and_no_wrapper():
    ours = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=32, head_channels=32)
    sd = {f"module.{k}": v for k, v in to_mmdet_state_dict(ours).items()}
    assert mmdet_config_from_state_dict(sd).num_classes == 3
    assert from_mmdet(sd).config.reg_max == 16


@pytest.mark.parametrize("arch,out", [("gfl_resnet18_fpn", [64, 128, 256]), ("gfl_resnet50_fpn", [256, 512, 1024])])
def test_narrow_backbone_width_is_read_from_the_stem(arch, out):
    ours = getattr(gfldet, arch)(num_classes=3, fpn_channels=32, head_channels=32, base_channels=32)
    sd = to_mmdet_state_dict(ours)
    cfg = mmdet_config_from_state_dict(sd)
    assert cfg.base_channels == 32 and cfg.width_per_group == 64 and cfg.groups == 1
    loaded = from_mmdet(sd)
    assert loaded.backbone.out_channels == out
    for k, v in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_stem_wider_than_layer1_is_refused():
    sd = to_mmdet_state_dict(gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=32, head_channels=32, base_channels=32))
    sd["backbone.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    with pytest.raises(ValueError, match="stem_channels"):
        mmdet_config_from_state_dict(sd)


def _sd():
    return to_mmdet_state_dict(gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=32, head_channels=32))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda sd: sd.pop("bbox_head.gfl_cls.weight"), "missing"),
        (lambda sd: sd.__setitem__("bbox_head.reg_conf.0.weight", torch.zeros(1)), "GFLv2"),
        (lambda sd: sd.__setitem__("backbone.layer2.0.conv2.conv_offset.weight", torch.zeros(1)), "deformable"),
        (lambda sd: sd.__setitem__("bbox_head.extra.weight", torch.zeros(1)), "does not know"),
        (lambda sd: sd.__setitem__("bbox_head.integral.project", torch.ones(17)), "project"),
        (lambda sd: sd.__setitem__("bbox_head.cls_convs.1.conv.weight", torch.zeros(32, 16, 3, 3)), "does not fit.*size mismatch"),
    ],
)
def test_bad_state_dicts(mutate, match):
    sd = _sd()
    mutate(sd)
    with pytest.raises((ValueError, RuntimeError), match=match):
        from_mmdet(sd)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        from_mmdet(tmp_path / "nothere.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        from_mmdet(junk)
    good = tmp_path / "good.pth"
    torch.save({"state_dict": _sd()}, good)
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ValueError, match="trunc.pth"):
        from_mmdet(trunc)
    lst = tmp_path / "list.pth"
    torch.save([1, 2], lst)
    with pytest.raises(ValueError, match="expected a dict"):
        from_mmdet(lst)


class Foreign:  # an arbitrary object: reading it back needs full unpickling
    pass


def test_untrusted_pickle_refused(tmp_path):
    p = tmp_path / "foreign.pth"
    torch.save({"state_dict": _sd(), "meta": {"obj": Foreign()}}, p)
    with pytest.raises(ValueError, match="trusted=True"):
        from_mmdet(p)
