"""gfldet checkpoints: round trip, atomic writes, clear errors for corrupt or foreign files."""
from __future__ import annotations

import os

import pytest
import torch

import gfldet
from gfldet.engine.checkpoint import atomic_torch_save, load_checkpoint, load_model, save_checkpoint


def _model():
    torch.manual_seed(0)
    m = gfldet.gfl_resnet18_fpn(num_classes=2, fpn_channels=32, head_channels=32, reg_max=5, min_size=None, max_size=None,
                                class_names=["cat", "dog"])
    with torch.no_grad():
        m.head.gfl_cls.bias.fill_(0.0)
    return m.eval()


def test_roundtrip(tmp_path):
    m = _model()
    p = tmp_path / "m.pt"
    save_checkpoint(p, m, epoch=3)
    obj = load_checkpoint(p)
    assert obj["epoch"] == 3 and obj["class_names"] == ["cat", "dog"]
    m2 = load_model(p)
    assert m2.config == m.config and m2.class_names == ["cat", "dog"]
    img = [torch.rand(3, 64, 80)]
    with torch.no_grad():
        a, b = m(img)[0], m2(img)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    assert load_model(p, score_thr=0.9).config.score_thr == 0.9
    # the builders accept a checkpoint path as `weights`
    m3 = gfldet.gfl_resnet18_fpn(num_classes=2, fpn_channels=32, head_channels=32, reg_max=5, weights=p)
    assert torch.equal(m3.head.gfl_cls.bias, m.head.gfl_cls.bias)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, _model())
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(ValueError, match="trunc.pt.*corrupt"):
        load_checkpoint(trunc)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(ValueError, match="foreign.pt: not a gfldet checkpoint"):
        load_checkpoint(foreign)
    mm = tmp_path / "mm.pth"
    torch.save({"state_dict": {}}, mm)
    with pytest.raises(ValueError, match="from_mmdet"):
        load_checkpoint(mm)
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(wrong, _model())
    obj = torch.load(wrong, weights_only=True)
    obj["model_config"]["num_classes"] = 5
    torch.save(obj, wrong)
    with pytest.raises(ValueError, match="wrong.pt: 2 class names given for num_classes=5"):
        load_model(wrong)
    obj["class_names"] = None
    torch.save(obj, wrong)
    with pytest.raises(ValueError, match="wrong.pt: .*(weights do not fit|class names)"):
        load_model(wrong)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "last.pt"
    atomic_torch_save({"a": 1}, p)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"a": Boom()}, p)
    assert torch.load(p, weights_only=True) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
