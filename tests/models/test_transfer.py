"""Fine-tuning transfer: ``load_weights_into`` copies what fits, keeps the model's own init for the rest, says so,
and refuses a checkpoint of another architecture."""
from __future__ import annotations

import logging
import math

import pytest
import torch

import gfldet
from gfldet.models.io import load_model, load_weights_into, save_checkpoint
from gfldet.models.mmdet import to_mmdet_state_dict

CLS = ("head.gfl_cls.weight", "head.gfl_cls.bias")


def _build(num_classes: int, seed: int, builder=gfldet.gfl_resnet18_fpn, width: int = 32):
    torch.manual_seed(seed)
    return builder(num_classes=num_classes, fpn_channels=width, head_channels=width, gn_groups=8, reg_max=5,
                   min_size=None, max_size=None)


def _trained(num_classes: int = 3):
    """A model whose every weight differs from any fresh model's: as if trained."""
    m = _build(num_classes, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for t in m.state_dict().values():
            if t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape, generator=g))
    return m


def _check_transfer(model, fresh, file_sd, report):
    assert set(report["reinitialised"]) == set(CLS) and report["ignored"] == []
    assert report["reinitialised"]["head.gfl_cls.weight"] == "file (3, 32, 3, 3), model (2, 32, 3, 3)"
    assert len(report["loaded"]) == len(model.state_dict()) - 2
    for name, t in model.state_dict().items():
        if name in CLS:
            assert torch.equal(t, fresh[name]), name  # exactly the construction init, same seed
        else:
            assert torch.equal(t, file_sd[name]), name
    assert torch.allclose(model.head.gfl_cls.bias, torch.full((2,), -math.log(0.99 / 0.01)))
    assert abs(model.head.gfl_cls.weight.std().item() - 0.01) < 0.002


def test_finetune_3_classes_into_2(tmp_path, caplog):
    src = _trained()
    path = tmp_path / "coco3.pt"
    save_checkpoint(path, src)
    fresh = {k: v.clone() for k, v in _build(2, seed=0).state_dict().items()}
    model = _build(2, seed=0)
    with caplog.at_level(logging.INFO, logger="gfldet.models.transfer"):
        report = load_weights_into(model, path)
    _check_transfer(model, fresh, src.state_dict(), report)
    lines = [r.getMessage() for r in caplog.records if r.name == "gfldet.models.transfer"]
    assert len(lines) == 1
    assert str(path) in lines[0] and "gfldet checkpoint" in lines[0]
    assert "head.gfl_cls.weight (file (3, 32, 3, 3), model (2, 32, 3, 3))" in lines[0]
    assert "head.gfl_cls.bias (file (3,), model (2,))" in lines[0]


def test_finetune_from_an_mmdetection_checkpoint(tmp_path):
    src = _trained()
    path = tmp_path / "gfl_coco.pth"
    torch.save({"state_dict": to_mmdet_state_dict(src), "meta": {"mmdet_version": "2.28.2"}}, path)
    fresh = {k: v.clone() for k, v in _build(2, seed=0).state_dict().items()}
    model = _build(2, seed=0)
    report = load_weights_into(model, path)
    _check_transfer(model, fresh, src.state_dict(), report)


def test_strict_mismatch_is_one_readable_paragraph(tmp_path):
    path = tmp_path / "coco3.pt"
    save_checkpoint(path, _trained())
    with pytest.raises(ValueError) as info:
        load_weights_into(_build(2, seed=0), path, strict=True)
    msg = str(info.value)
    assert "\n" not in msg and "Error(s) in loading" not in msg
    assert str(path) in msg and "2 differ in shape" in msg
    assert "head.gfl_cls.weight (file (3, 32, 3, 3), model (2, 32, 3, 3))" in msg
    # load_model's strict load says the same
    obj = torch.load(path, weights_only=True)
    obj["state_dict"]["head.gfl_reg.bias"] = torch.zeros(7)
    del obj["state_dict"]["head.scales.0.scale"]
    torch.save(obj, path)
    with pytest.raises(ValueError) as info:
        load_model(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: weights do not fit the model") and "\n" not in msg
    assert "head.gfl_reg.bias (file (7,), model (24,))" in msg and "missing from the file: head.scales.0.scale" in msg


def test_same_architecture_strict_and_report(tmp_path):
    src = _trained(2)
    path = tmp_path / "two.pt"
    save_checkpoint(path, src)
    model = _build(2, seed=0)
    report = load_weights_into(model, path, strict=True)
    assert report["reinitialised"] == {} and report["ignored"] == [] and len(report["loaded"]) == len(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))


@pytest.mark.parametrize("other", ["width", "depth"])
def test_another_architecture_is_refused(tmp_path, other):
    path = tmp_path / "r18.pt"
    save_checkpoint(path, _trained())
    if other == "width":
        model = _build(2, seed=0, width=64)
    else:
        model = _build(2, seed=0, builder=gfldet.gfl_resnet50_fpn)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="r18.pt: the checkpoint does not look like this model's architecture") as info:
        load_weights_into(model, path)
    assert ("fpn_channels 32 in the file, 64 in the model" if other == "width" else "depth 18 in the file, 50 in the model") in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


def test_a_bare_mmdetection_state_dict_fine_tunes_as_gfldet_convert_reads_it(tmp_path):
    """mmdetection files without the {"state_dict": ...} wrapper: `gfldet convert` takes them, so does model.init."""
    torch.manual_seed(0)
    src = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=32, head_channels=32)
    path = tmp_path / "bare.pth"
    torch.save(to_mmdet_state_dict(src), path)
    dst = gfldet.gfl_resnet18_fpn(num_classes=2, fpn_channels=32, head_channels=32)
    report = load_weights_into(dst, path)
    assert set(report["reinitialised"]) == {"head.gfl_cls.weight", "head.gfl_cls.bias"}
    assert torch.equal(dst.state_dict()["head.gfl_reg.weight"], src.state_dict()["head.gfl_reg.weight"])


def test_the_builders_weights_argument_stays_strict(tmp_path):
    """``gfl_resnet18_fpn(weights=...)`` loads the model it names; fine-tuning onto other classes is model.init's."""
    m = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=32, head_channels=32)
    gfldet.save_checkpoint(tmp_path / "three.pt", m)
    with pytest.raises(ValueError, match="gfl_cls"):
        gfldet.gfl_resnet18_fpn(num_classes=2, fpn_channels=32, head_channels=32, weights=tmp_path / "three.pt")
