"""preflight: what the config alone can tell before any data is read."""
from __future__ import annotations

import pytest

from gfldet.config import load_config
from gfldet.engine.preflight import preflight


@pytest.fixture
def files(tmp_path):
    (tmp_path / "train.json").write_text("{}")
    (tmp_path / "val.json").write_text("{}")
    (tmp_path / "images").mkdir()
    (tmp_path / "init.pt").write_bytes(b"x")
    return tmp_path


def _cfg(files, *sets):
    return load_config(None, [f"data.train.ann={files / 'train.json'}", f"data.train.images={files / 'images'}",
                              f"data.val.ann={files / 'val.json'}", f"data.val.images={files / 'images'}",
                              "train.device=cpu", *sets])


def test_preflight_passes_a_good_config(files):
    preflight(_cfg(files))
    preflight(_cfg(files, "model.weights_backbone=IMAGENET1K_V1"))
    preflight(_cfg(files, "model.weights_backbone=ResNet50_Weights.IMAGENET1K_V2"))
    preflight(_cfg(files, f"model.weights_backbone={files / 'init.pt'}", f"model.init={files / 'init.pt'}"))
    preflight(_cfg(files, "data.val.ann=", "data.val.images="))  # no validation split: nothing to check
    preflight(load_config(None, ["train.device=cpu"]))  # no data named: the trainer reports that, not preflight


@pytest.mark.parametrize("sets, exc, match", [
    (["model.arch=gfl_resnet19_fpn"], ValueError,
     r"model\.arch='gfl_resnet19_fpn' is not a known architecture; choose one of: .*gfl_resnet101_fpn, gfl_resnet18_fpn"),
    (["model.init=nowhere/ckpt.pt"], FileNotFoundError, r"model\.init='nowhere/ckpt\.pt': no such file.*null"),
    (["model.weights_backbone=weights/r50.pth"], FileNotFoundError,
     r"model\.weights_backbone='weights/r50\.pth': no such file.*IMAGENET1K_V1"),
    (["model.weights_backbone=IMAGENET9K"], ValueError,
     r"model\.weights_backbone='IMAGENET9K' is not a torchvision ImageNet weights name for gfl_resnet50_fpn.*IMAGENET1K_V1"),
    (["model.weights_backbone=ResNet18_Weights.IMAGENET1K_V1"], ValueError,
     r"model\.weights_backbone='ResNet18_Weights\.IMAGENET1K_V1' .*resnet50"),
    (["model.arch=gfl_resnext101_32x4d_fpn", "model.weights_backbone=IMAGENET1K_V1"], ValueError,
     r"model\.weights_backbone='IMAGENET1K_V1'.*no ImageNet weights for gfl_resnext101_32x4d_fpn"),
    (["data.train.ann=missing.json"], FileNotFoundError, r"data\.train\.ann='missing\.json': no such file"),
    (["data.train.images=missing_dir"], FileNotFoundError, r"data\.train\.images='missing_dir': no such folder"),
    (["data.val.ann=missing.json"], FileNotFoundError, r"data\.val\.ann='missing\.json': no such file"),
    (["data.val.images=missing_dir"], FileNotFoundError, r"data\.val\.images='missing_dir': no such folder"),
])
def test_preflight_errors_name_the_key_the_value_and_the_fix(files, sets, exc, match):
    with pytest.raises(exc, match=match):
        preflight(_cfg(files, *sets))


def test_preflight_checks_the_data_kinds(files):
    with pytest.raises(FileNotFoundError, match=r"data\.train\.ann=.*is a folder"):
        preflight(_cfg(files, f"data.train.ann={files / 'images'}"))
    with pytest.raises(FileNotFoundError, match=r"data\.val\.images=.*is a file"):
        preflight(_cfg(files, f"data.val.images={files / 'val.json'}"))


def test_preflight_checks_the_device(files, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for dev in ("cuda", "cuda:0", "0"):
        with pytest.raises(ValueError, match=r"train\.device='cuda(:0)?'.*CUDA is not available.*cpu"):
            preflight(_cfg(files, f"train.device={dev}"))
    preflight(_cfg(files, "train.device=auto"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    preflight(_cfg(files, "train.device=cuda:1"))
    with pytest.raises(ValueError, match=r"train\.device='cuda:2'.*2 CUDA devices"):
        preflight(_cfg(files, "train.device=2"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    preflight(_cfg(files, "train.device=cuda"))
    with pytest.raises(ValueError, match=r"train\.device='cuda:1'.*torchrun.*auto"):
        preflight(_cfg(files, "train.device=cuda:1"))
