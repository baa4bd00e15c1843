"""gfldet checkpoints: round trip, atomic writes and their file mode, clear errors for corrupt or foreign files
(an ONNX export given as a checkpoint, and the reverse)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import gfldet
from gfldet.deploy import OnnxDetector, read_metadata
from gfldet.models.io import atomic_torch_save, load_checkpoint, load_model, load_weights_into, save_checkpoint

# the start of an ONNX ModelProto, as torch.onnx.export writes it: ir_version, then producer_name
ONNX_BYTES = b"\x08\x08\x12\x07pytorch\x1a\x032.6"


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


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_saved_file_mode_follows_the_umask(tmp_path):
    p = tmp_path / "best.pt"
    old = os.umask(0o022)
    try:
        save_checkpoint(p, _model())
        assert os.stat(p).st_mode & 0o777 == 0o644
        os.chmod(p, 0o600)  # an existing file's mode is replaced too
        atomic_torch_save({"a": 1}, p)
        assert os.stat(p).st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_torch_save({"a": 1}, p)
        assert os.stat(p).st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_onnx_file_given_as_a_checkpoint(tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(ONNX_BYTES)
    renamed = tmp_path / "model.bin"  # told by its content too
    renamed.write_bytes(ONNX_BYTES)
    for path in (onnx_file, renamed):
        for load in (load_checkpoint, load_model, lambda p: load_weights_into(_model(), p)):
            with pytest.raises(ValueError) as info:
                load(path)
            msg = str(info.value)
            assert msg == (f"{path} is an ONNX file (from `gfldet export`), not a gfldet checkpoint: "
                           "run it with `--backend onnxruntime`")
            assert "weights_only" not in msg
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes.pt: not a gfldet checkpoint \(not a file torch.save wrote\)"):
        load_checkpoint(text)


def test_checkpoint_given_as_an_onnx_file(tmp_path):
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, _model())
    disguised = tmp_path / "best.onnx"  # a zip: torch's format whatever the name
    disguised.write_bytes(ckpt.read_bytes())
    for path in (ckpt, disguised):
        for load in (OnnxDetector, read_metadata):
            with pytest.raises(ValueError) as info:
                load(path)
            assert str(info.value) == (f"{path} is a PyTorch checkpoint, not an exported file: run it with `--backend torch`, "
                                       f"or make one with `gfldet export --checkpoint {path} --out model.onnx`")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxDetector(tmp_path / "missing.onnx")
    pytest.importorskip("onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xff\xff\xff not protobuf")
    with pytest.raises(ValueError, match=r"garbage.onnx: not a readable ONNX file: \S"):
        read_metadata(garbage)


def test_metadata_of_a_foreign_onnx_model_is_refused_by_name():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((256, 256), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "someone_elses",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], [weight])
    model = helper.make_model(graph)
    onnx.checker.check_model(model)
    with pytest.raises(ValueError) as info:
        read_metadata(model)
    # names the graph; the proto (with its 65536 weights) is not printed into the message
    assert str(info.value) == ("the ONNX model passed in (graph 'someone_elses'): not a model exported by gfldet "
                               "(no gfldet.* metadata)")


def test_the_kind_of_a_file_is_decided_by_its_content(tmp_path):
    from gfldet.models.io import checkpoint_kind, from_mmdet

    assert (checkpoint_kind({"format": "gfldet"}), checkpoint_kind({"state_dict": {}}), checkpoint_kind([1])) == \
        ("gfldet", "mmdetection", "")
    ours = tmp_path / "ours.pt"
    save_checkpoint(ours, _model())
    with pytest.raises(ValueError, match=r"ours\.pt is a gfldet checkpoint, not an mmdetection one.*load_model"):
        from_mmdet(ours)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match=r"list\.pt: neither a gfldet checkpoint nor an mmdetection one"):
        load_weights_into(_model(), listed)
