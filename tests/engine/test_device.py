"""resolve_device: the one rule for train.device, --device and the demo's device, and its three callers; place_model: where
the commands take the CPU fast path."""
from __future__ import annotations

import pytest
import torch

import gfldet

from gfldet.engine.device import resolve_device
from gfldet.engine.distributed import init_distributed
from gfldet.errors import GfldetError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_cpu_and_auto_without_cuda(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" cpu ") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "0"])
def test_cuda_without_cuda_is_a_user_error_naming_it(no_cuda, name):
    with pytest.raises(GfldetError, match=r"^--device='cuda(:0)?' but CUDA is not available on this machine; use cpu"):
        resolve_device(name)
    with pytest.raises(GfldetError, match=r"^train\.device='cuda(:0)?' but CUDA"):
        resolve_device(name, "train.device")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "0,1", ""])
def test_unknown_name_is_a_user_error(no_cuda, name):
    with pytest.raises(GfldetError, match=rf"^--device: {name!r} is not a device gfldet runs on"):
        resolve_device(name)


def test_cuda_names_with_cuda(two_gpus):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("1") == torch.device("cuda", 1)
    with pytest.raises(GfldetError, match=r"--device='cuda:2' but this machine has 2 CUDA devices"):
        resolve_device("cuda:2")


def test_init_distributed_goes_by_the_same_rule(no_cuda):
    assert init_distributed("cpu") == torch.device("cpu")
    assert init_distributed("auto") == torch.device("cpu")
    with pytest.raises(GfldetError, match=r"^train\.device='cuda' but CUDA is not available on this machine"):
        init_distributed("cuda")


def test_demo_refuses_a_device_before_making_data(no_cuda, tmp_path):
    from gfldet.demo import run_demo

    with pytest.raises(GfldetError, match=r"^device='cuda' but CUDA is not available"):
        run_demo(tmp_path / "demo", device="cuda", cache_dir=tmp_path / "cache")
    with pytest.raises(GfldetError, match=r"^device: 'gpu' is not a device gfldet runs on"):
        run_demo(tmp_path / "demo", device="gpu", cache_dir=tmp_path / "cache")
    assert not any(tmp_path.iterdir())


def test_place_model_takes_the_cpu_fast_path_on_the_cpu_only():
    from gfldet.engine.device import place_model
    from gfldet.models.fusion import is_fused

    torch.manual_seed(0)
    model = gfldet.gfl_resnet18_fpn(num_classes=2, fpn_channels=32, head_channels=32, stacked_convs=1)
    assert not is_fused(model)
    assert place_model(model, torch.device("cpu")) is model and is_fused(model)
    meta = place_model(model, torch.device("meta"))  # any other device: moved there, plain modules
    assert not is_fused(meta) and next(meta.parameters()).device.type == "meta"
