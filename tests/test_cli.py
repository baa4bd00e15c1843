"""The command line: `gfldet convert`, the error rule (a user's mistake: one line and exit code 2; a bug: its
traceback) and `python -m gfldet`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import gfldet
from gfldet.cli import main
from gfldet.models.mmdet import to_mmdet_state_dict


def _mmdet_file(tmp_path):
    m = gfldet.gfl_resnet18_fpn(num_classes=2, fpn_channels=32, head_channels=32, reg_max=6)
    p = tmp_path / "gfl_mmdet.pth"
    torch.save({"meta": {"CLASSES": ("cat", "dog")}, "state_dict": to_mmdet_state_dict(m)}, p)
    return m, p


def test_convert_writes_a_loadable_checkpoint(tmp_path, capsys):
    m, src = _mmdet_file(tmp_path)
    dst = tmp_path / "out" / "gfl.pt"
    assert main(["convert", str(src), str(dst)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_classes"] == 2 and summary["reg_max"] == 6 and summary["depth"] == 18
    loaded = gfldet.load_model(dst)
    assert loaded.class_names == ["cat", "dog"]
    for k, v in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_convert_never_overwrites(tmp_path, capsys):
    _, src = _mmdet_file(tmp_path)
    before = src.read_bytes()
    assert main(["convert", str(src), str(src)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    dst = tmp_path / "exists.pt"
    dst.write_bytes(b"precious")
    assert main(["convert", str(src), str(dst)]) == 2
    assert "--force" in capsys.readouterr().err
    assert dst.read_bytes() == b"precious" and src.read_bytes() == before
    assert main(["convert", str(src), str(dst), "--force"]) == 0
    assert gfldet.load_model(dst).config.num_classes == 2


def test_convert_bad_input_is_a_message_not_a_traceback(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"garbage")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "gfldet", "convert", str(bad), str(tmp_path / "o.pt")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert "broken.pth" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.pt").exists()


def test_convert_maps_coco_classes_to_coco_category_ids(tmp_path, capsys):
    from gfldet.data.coco_classes import COCO_CATEGORY_IDS, COCO_NAMES, coco_category_ids
    from gfldet.models.io import load_checkpoint

    assert len(COCO_NAMES) == len(COCO_CATEGORY_IDS) == 80 and len(set(COCO_CATEGORY_IDS)) == 80
    assert coco_category_ids(["cat", "dog"], 2) is None
    assert coco_category_ids(list(COCO_NAMES[::-1]), 80) is None  # other order: not COCO's labels
    m = gfldet.gfl_resnet18_fpn(num_classes=80, fpn_channels=32, head_channels=32, reg_max=4)
    src = tmp_path / "coco.pth"
    torch.save({"meta": {"CLASSES": COCO_NAMES}, "state_dict": to_mmdet_state_dict(m)}, src)
    assert main(["convert", str(src), str(tmp_path / "coco.pt")]) == 0
    ids = load_checkpoint(tmp_path / "coco.pt")["cat_ids"]
    assert ids == list(COCO_CATEGORY_IDS) and ids[11] == 13 and ids[-1] == 90  # label 11 (stop sign) is id 13
    _, other = _mmdet_file(tmp_path)
    assert main(["convert", str(other), str(tmp_path / "two.pt")]) == 0
    assert "cat_ids" not in load_checkpoint(tmp_path / "two.pt")


def test_convert_refuses_an_existing_destination_before_reading_the_source(tmp_path, capsys):
    """The one rule of every writer (gfldet.files.refuse_existing): checked first, so a bad SRC is not even read."""
    src = tmp_path / "broken.pth"
    src.write_bytes(b"garbage")
    dst = tmp_path / "mine.pt"
    dst.write_bytes(b"precious")
    assert main(["convert", str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gfldet convert: error: {dst} exists") and "--force" in err and "broken" not in err
    assert dst.read_bytes() == b"precious"


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gfldet {command}: error: "), err
    return lines[0]


def test_a_user_error_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert main(["config", "--set", "train.lr=-1"]) == 2
    assert "train.lr: -1.0 must be > 0" in _one_error_line(capsys.readouterr().err, "config")
    ann = tmp_path / "ann.json"
    ann.write_text('{"images": [')
    assert main(["inspect-data", str(ann), "--images", str(tmp_path)]) == 2
    assert f"{ann}: not valid JSON" in _one_error_line(capsys.readouterr().err, "inspect-data")


def test_the_device_is_checked_as_a_user_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["predict", "--checkpoint", str(tmp_path / "none.pt"), str(tmp_path), "--device", "cuda"]) == 2
    assert "--device='cuda' but CUDA is not available" in _one_error_line(capsys.readouterr().err, "predict")
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt"), "--device", "gpu"]) == 2
    assert "--device: 'gpu' is not a device" in _one_error_line(capsys.readouterr().err, "eval")


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """A ValueError that is not a GfldetError (here: raised where the command calls into gfldet; in life e.g. from
    inside torch or NumPy) is a bug: main does not turn it into a message, Python prints its traceback."""
    import gfldet.config
    from gfldet.errors import GfldetError

    def boom(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(gfldet.config, "load_config", boom)
    with pytest.raises(ValueError, match="boom") as caught:
        main(["config"])
    assert type(caught.value) is ValueError
    assert "error" not in capsys.readouterr().err
    with pytest.raises(ValueError, match="boom"):
        main(["-v", "config"])

    def user_error(*args, **kwargs):
        raise GfldetError("a bad value")

    monkeypatch.setattr(gfldet.config, "load_config", user_error)
    assert main(["config"]) == 2
    assert _one_error_line(capsys.readouterr().err, "config") == "gfldet config: error: a bad value"


def test_a_traceback_with_v_for_a_user_error_too(monkeypatch, capsys, caplog):
    import gfldet.config
    from gfldet.errors import GfldetError

    def user_error(*args, **kwargs):
        raise GfldetError("a bad value")

    monkeypatch.setattr(gfldet.config, "load_config", user_error)
    assert main(["config", "-v"]) == 2
    assert capsys.readouterr().err.strip().endswith("gfldet config: error: a bad value")
    assert any(r.exc_info and r.exc_info[0] is GfldetError for r in caplog.records)


def test_the_error_types_a_user_causes():
    from gfldet.data.coco_load import DatasetError
    from gfldet.engine.train import NonFiniteLossError
    from gfldet.errors import GfldetError
    from gfldet.models.config import ConfigError, FieldError
    from gfldet.models.pretrained import PretrainedError

    assert gfldet.GfldetError is GfldetError and "GfldetError" in gfldet.__all__
    assert issubclass(GfldetError, ValueError)
    for cls in (ConfigError, FieldError, PretrainedError, DatasetError, NonFiniteLossError):
        assert issubclass(cls, GfldetError) and issubclass(cls, ValueError), cls
        assert isinstance(cls("x") if cls is not FieldError else cls("k", 1, "why"), GfldetError), cls
    assert issubclass(NonFiniteLossError, FloatingPointError)  # as before: code that caught it that way still does
    from gfldet.cli import USER_ERRORS

    assert ValueError not in USER_ERRORS and FloatingPointError not in USER_ERRORS and GfldetError in USER_ERRORS
