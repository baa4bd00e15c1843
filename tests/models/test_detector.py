"""The detector's public contract: builders, training losses, inference outputs, bad input."""
from __future__ import annotations

import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

import gfldet
from gfldet import GFL, ModelConfig


def small(**kw) -> GFL:
    kw.setdefault("num_classes", 3)
    kw.setdefault("fpn_channels", 32)
    kw.setdefault("head_channels", 32)  # one channel per GroupNorm group, 1x1 P7 maps: must work
    kw.setdefault("min_size", None)
    kw.setdefault("max_size", None)
    torch.manual_seed(0)
    return gfldet.gfl_resnet18_fpn(**kw)


def _targets(*boxes_labels):
    return [{"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(l, dtype=torch.long)}
            for b, l in boxes_labels]


@pytest.mark.parametrize(
    "builder, depth, groups",
    [("gfl_resnet18_fpn", 18, 1), ("gfl_resnet50_fpn", 50, 1), ("gfl_resnet101_fpn", 101, 1), ("gfl_resnext101_32x4d_fpn", 101, 32)],
)
def test_builders(builder, depth, groups):
    m = getattr(gfldet, builder)(num_classes=7, reg_max=8, fpn_channels=64, head_channels=64)
    assert isinstance(m, GFL)
    assert (m.config.depth, m.config.groups, m.config.num_classes, m.config.reg_max) == (depth, groups, 7, 8)
    assert m.head.gfl_cls.out_channels == 7 and m.head.gfl_reg.out_channels == 4 * 9
    # no weights named: the from-scratch regime (as torchvision's builders): every stage trainable, BatchNorm
    # with batch statistics in train mode
    assert (m.config.frozen_stages, m.config.norm_eval) == (0, False)
    assert all(p.requires_grad for p in m.backbone.parameters())
    m.train()
    assert m.backbone.bn1.training and m.backbone.layer4[0].bn1.training and m.head.training
    # the reference's regime, asked for explicitly: stem and layer1 frozen; BN statistics frozen even in train mode
    r = getattr(gfldet, builder)(num_classes=7, reg_max=8, fpn_channels=64, head_channels=64, frozen_stages=1, norm_eval=True)
    assert not any(p.requires_grad for p in r.backbone.conv1.parameters())
    assert not any(p.requires_grad for p in r.backbone.layer1.parameters())
    assert all(p.requires_grad for p in r.backbone.layer4.parameters())
    r.train()
    assert not r.backbone.bn1.training and not r.backbone.layer4[0].bn1.training
    assert r.head.training


def test_backbone_weights_select_the_pretrained_regime(tmp_path):
    torch.manual_seed(0)
    sd = {k: v for k, v in torchvision.models.resnet18().state_dict().items()}  # torchvision's names, as ImageNet's
    path = tmp_path / "r18.pth"
    torch.save(sd, path)
    m = gfldet.gfl_resnet18_fpn(num_classes=2, weights_backbone=str(path))
    assert (m.config.frozen_stages, m.config.norm_eval) == (1, True)
    torch.testing.assert_close(m.backbone.layer4[0].conv1.weight, sd["layer4.0.conv1.weight"])
    assert not any(p.requires_grad for p in m.backbone.layer1.parameters())
    explicit = gfldet.gfl_resnet18_fpn(num_classes=2, weights_backbone=str(path), norm_eval=False, frozen_stages=0)
    assert (explicit.config.frozen_stages, explicit.config.norm_eval) == (0, False)  # an explicit setting wins


def test_missing_backbone_weights_are_an_error_not_a_random_backbone(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        gfldet.gfl_resnet50_fpn(num_classes=2, weights_backbone=str(tmp_path / "missing.pth"))

    def offline(url, *a, **k):  # what torch hub raises without a network (tests never download)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ValueError) as e:
        gfldet.gfl_resnet18_fpn(num_classes=2, weights_backbone="IMAGENET1K_V1")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg and "null" in msg


def test_builder_rejects_fixed_fields():
    with pytest.raises(ValueError, match="depth"):
        gfldet.gfl_resnet50_fpn(depth=18)


def test_head_init_prior():
    m = small()
    torch.testing.assert_close(m.head.gfl_cls.bias, torch.full((3,), -math.log(99.0)))


def test_train_losses_and_backward():
    m = small().train()
    imgs = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8), torch.rand(3, 120, 100)]
    targets = _targets(([[10, 12, 70, 80], [40, 30, 60, 50]], [0, 2]), ([[5, 5, 90, 110]], [1]))
    losses = m(imgs, targets)
    assert set(losses) == {"loss_qfl", "loss_bbox", "loss_dfl"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in m.head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert m.head.gfl_reg.weight.grad.abs().sum() > 0


def test_image_without_boxes_gives_zero_box_losses():
    m = small().train()
    imgs = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = m(imgs, [empty, empty])
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_dfl"].item() == 0.0
    assert torch.isfinite(losses["loss_qfl"]) and losses["loss_qfl"] > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.head.parameters() if p.grad is not None)


def test_no_positive_anywhere_is_finite():
    """A box whose centre is outside every anchor's reach (tiny, at the corner) yields no positive."""
    m = small().train()
    imgs = [torch.rand(3, 64, 64)]
    losses = m(imgs, _targets(([[0.0, 0.0, 0.5, 0.5]], [1])))
    for v in losses.values():
        assert torch.isfinite(v)
    sum(losses.values()).backward()


def test_mixed_batch_one_image_empty():
    m = small().train()
    imgs = [torch.rand(3, 64, 64), torch.rand(3, 80, 64)]
    t = _targets(([[8, 8, 50, 40]], [0]), ([], []))
    losses = m(imgs, t)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_bbox"] > 0


def test_crowded_image_trains():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200
    wh = torch.rand(300, 2, generator=g) * 40 + 4
    boxes = torch.cat([xy, xy + wh], 1)
    m = small().train()
    losses = m([torch.rand(3, 256, 256)], [{"boxes": boxes, "labels": torch.randint(0, 3, (300,), generator=g)}])
    assert all(torch.isfinite(v) for v in losses.values())


def test_iscrowd_boxes_are_ignored_not_learned():
    m = small().train()
    img = [torch.rand(3, 128, 128)]
    crowd = {"boxes": torch.tensor([[10.0, 10, 100, 100]]), "labels": torch.tensor([1]), "iscrowd": torch.tensor([1])}
    batch, meta = m.preprocess(img)
    boxes, labels, ignore = m.transform.targets([crowd], meta, m.config.num_classes, batch.device)
    assert boxes[0].shape == (0, 4) and ignore[0].shape == (1, 4)
    cls, reg = m.forward_features(batch)
    t = m.compute_targets(cls, boxes, labels, meta.pad_shapes, ignore)
    assert not t.positive.any()
    assert (t.label_weights == 0).any()  # anchors inside the crowd region carry no classification loss
    losses = m([img[0]], [crowd])
    assert losses["loss_bbox"].item() == 0.0


@pytest.mark.parametrize(
    "target, match",
    [
        ({"boxes": [[10.0, 10, 5, 20]], "labels": [0]}, r"target 0: box 0 .* degenerate"),
        ({"boxes": [[10.0, 10, 20, 10]], "labels": [0]}, r"degenerate"),
        ({"boxes": [[10.0, float("nan"), 20, 30]], "labels": [0]}, r"degenerate"),
        ({"boxes": [[1.0, 1, 20, 20]], "labels": [3]}, r"label 3 .* outside \[0, 3\)"),
        ({"boxes": [[1.0, 1, 20, 20]], "labels": [-1]}, r"label -1"),
        ({"boxes": [[1.0, 1, 20, 20]], "labels": [0, 1]}, r"1 boxes but 2 labels"),
        ({"labels": [0]}, r"'boxes'"),
    ],
)
def test_bad_targets_rejected(target, match):
    m = small().train()
    with pytest.raises(ValueError, match=match):
        m([torch.rand(3, 64, 64)], [target])


@pytest.mark.parametrize(
    "image, match",
    [
        (torch.rand(1, 64, 64), r"image 0: expected a \(3, H, W\)"),
        (torch.rand(3, 0, 64), r"image 0"),
        (torch.rand(3, 64, 64) * 255, r"\[0, 1\]"),
        (torch.randint(0, 255, (3, 8, 8), dtype=torch.int32), r"dtype"),
    ],
)
def test_bad_images_rejected(image, match):
    m = small().eval()
    with pytest.raises(ValueError, match=match):
        m([image])


def test_train_mode_needs_targets():
    m = small().train()
    with pytest.raises(ValueError, match="needs targets"):
        m([torch.rand(3, 32, 32)])
    with pytest.raises(ValueError, match="1 targets for 2 images"):
        m([torch.rand(3, 32, 32)] * 2, _targets(([[1, 1, 9, 9]], [0])))


def _confident(m: GFL) -> GFL:
    """Make an untrained model produce many detections (classifier bias near 0)."""
    with torch.no_grad():
        m.head.gfl_cls.bias.fill_(0.0)
    return m.eval()


@torch.no_grad()
def test_eval_outputs_contract():
    m = _confident(small(reg_max=7))
    dets = m([torch.rand(3, 100, 150), torch.randint(0, 256, (3, 77, 64), dtype=torch.uint8)])
    assert len(dets) == 2
    for d, (h, w) in zip(dets, [(100, 150), (77, 64)]):
        n = d["boxes"].shape[0]
        assert 0 < n <= 100
        assert d["scores"].shape == (n,) and d["labels"].shape == (n,) and d["labels"].dtype == torch.int64
        assert d["distributions"].shape == (n, 4, 8)
        torch.testing.assert_close(d["distributions"].sum(-1), torch.ones(n, 4))
        assert (d["scores"][:-1] >= d["scores"][1:]).all()
        assert (d["scores"] > 0.05).all()
        b = d["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()


@torch.no_grad()
def test_distributions_are_the_ones_decoded():
    """The returned distributions are those whose expectation gives the box edges (before clipping)."""
    m = _confident(small())
    img = torch.rand(3, 320, 320)
    d = m([img])[0]
    proj = torch.arange(m.config.reg_max + 1, dtype=torch.float32)
    expect = (d["distributions"] * proj).sum(-1)  # (D, 4) in strides
    widths = d["boxes"][:, 2] - d["boxes"][:, 0]
    # unclipped boxes: width = (left + right) * stride for some stride in {8,...,128}
    inner = (d["boxes"][:, 0] > 0) & (d["boxes"][:, 2] < 320)
    ratios = widths[inner] / (expect[inner, 0] + expect[inner, 2])
    strides = torch.tensor([8.0, 16, 32, 64, 128])
    assert inner.any()
    assert ((ratios[:, None] - strides).abs().min(dim=1).values < 1e-3).all()


@torch.no_grad()
def test_resizing_maps_boxes_back_to_the_given_image():
    base = _confident(small())
    resizing = _confident(small(min_size=128, max_size=400))
    img = torch.rand(3, 64, 96)  # resized x2 to 128x192 inside `resizing`
    up = F.interpolate(img[None] * 255, size=(128, 192), mode="bilinear", align_corners=False)[0].round() / 255
    ours = resizing([img])[0]
    ref = base([F.interpolate(img[None], size=(128, 192), mode="bilinear", align_corners=False)[0]])[0]
    assert ours["boxes"].shape == ref["boxes"].shape
    torch.testing.assert_close(ours["boxes"], ref["boxes"] / 2, rtol=0, atol=1e-3)
    torch.testing.assert_close(ours["scores"], ref["scores"], rtol=0, atol=1e-5)
    assert up.shape == (3, 128, 192)


def test_model_config_roundtrip():
    cfg = ModelConfig(depth=18, num_classes=4, strides=(8, 16, 32, 64, 128), min_size=None)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"depht": 18})


def test_configure_is_the_one_way_to_change_a_built_models_settings():
    """ModelConfig is immutable (an assignment used to be silently ignored where a part had copied the value);
    GFL.configure changes input sizes and test settings, validated, and the transform and postprocessor use them."""
    import dataclasses

    from gfldet.errors import GfldetError

    torch.manual_seed(0)
    model = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=32, head_channels=32, gn_groups=8, min_size=160,
                                    max_size=256).eval()
    torch.nn.init.constant_(model.head.gfl_cls.bias, -1.0)  # scores around 0.27: many boxes pass 0.05
    torch.nn.init.normal_(model.head.gfl_reg.weight, std=0.05)  # boxes that differ, so that NMS keeps many
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.config.strides = (16, 32, 64, 128, 256)
    img = torch.randint(0, 256, (3, 120, 200), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        many = model([img])[0]
        assert model.configure(score_thr=0.25, max_per_img=3, min_size=96, max_size=160) is model
        few = model([img])[0]
        x, meta = model.preprocess([img])
    assert meta.image_sizes == [(96, 160)] and model.transform.settings is model.config is model.postprocessor.settings
    assert len(many["boxes"]) > 3 >= len(few["boxes"]) > 0 and (few["scores"] > 0.25).all()
    with pytest.raises(GfldetError, match=r"score_thr=2.0 must be in \[0, 1\]"):
        model.configure(score_thr=2.0)
    with pytest.raises(GfldetError, match=r"\['strides'\] define the network"):
        model.configure(strides=(16, 32, 64, 128, 256))
    assert model.config.score_thr == 0.25  # a refused change leaves the model as it was
