"""The command line: `gfldet convert` (and `python -m gfldet`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

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
