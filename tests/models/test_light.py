"""The lightweight torchvision backbones (gfl_mobilenet_v2_fpn, gfl_mobilenet_v3_large_fpn, gfl_shufflenet_v2_x1_0_fpn,
gfl_efficientnet_b0_fpn): feature strides, torchvision's parameter names, the regimes, the light head, training,
inference with the uncertainty outputs, and the ONNX export (raw outputs and detections equal to eager)."""
import math

import pytest
import torch
import torchvision
from torch import nn

import gfldet
from gfldet.models.head import ConvGN, DWSepConvGN
from gfldet.models.tv_backbone import TV_BACKBONES
from gfldet.models.zoo import ARCHS, LIGHT_HEAD, build_model

PRESETS = [f"gfl_{name}_fpn" for name in TV_BACKBONES]


def _targets():
    return [{"boxes": torch.tensor([[10.0, 12.0, 70.0, 80.0], [40.0, 30.0, 60.0, 50.0]]), "labels": torch.tensor([0, 2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]


def test_every_preset_is_a_builder_and_an_arch():
    for arch in PRESETS:
        assert arch in ARCHS and callable(getattr(gfldet, arch))


@pytest.mark.parametrize("arch", PRESETS)
def test_features_at_strides_8_16_32_and_p3_to_p7(arch):
    m = build_model(arch, num_classes=3).eval()
    x = torch.zeros(1, 3, 160, 224)
    with torch.no_grad():
        feats = m.backbone(x)
        pyramid = m.neck(feats)
    assert [tuple(f.shape[-2:]) for f in feats] == [(20, 28), (10, 14), (5, 7)]
    assert [f.shape[1] for f in feats] == m.backbone.out_channels
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(20, 28), (10, 14), (5, 7), (3, 4), (2, 2)]  # P3-P7: strides 8-128
    assert all(p.shape[1] == LIGHT_HEAD["fpn_channels"] for p in pyramid)


@pytest.mark.parametrize("arch", PRESETS)
def test_torchvision_state_dict_loads_one_to_one(arch):
    """Every backbone tensor comes from torchvision's classifier of the same name (random weights stand in for
    ImageNet's here; tests/models/test_imagenet_weights.py loads real ones), and the features equal torchvision's."""
    name = ARCHS[arch][1]
    torch.manual_seed(0)
    ref = torchvision.models.get_model(name, weights=None).eval()
    m = build_model(arch, num_classes=3).eval()
    m.backbone.load_torchvision_weights(ref.state_dict())
    own = m.backbone.state_dict()
    ref_sd = ref.state_dict()
    prefix = "features." if hasattr(ref, "features") else ""
    assert len(own) > 50
    for k, v in own.items():
        assert torch.equal(v, ref_sd[prefix + k.removeprefix("body.")]), k
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        c5 = m.backbone(x)[-1]
        body = ref.features if hasattr(ref, "features") else nn.Sequential(*[c for n, c in ref.named_children() if n != "fc"])
        torch.testing.assert_close(c5, body(x))


def test_weights_of_another_network_are_refused():
    m = build_model("gfl_mobilenet_v2_fpn", num_classes=3)
    with pytest.raises(ValueError, match="do not fit torchvision's mobilenet_v2"):
        m.backbone.load_torchvision_weights(torchvision.models.mobilenet_v3_large().state_dict())


@pytest.mark.parametrize("arch", PRESETS)
def test_pretrained_regime_freezes_the_stem_and_stride_4_and_keeps_batchnorm_statistics(arch):
    path_free = build_model(arch, num_classes=3)  # from scratch: everything trains, ordinary BatchNorm
    assert all(p.requires_grad for p in path_free.backbone.parameters())
    m = build_model(arch, num_classes=3, frozen_stages=1, norm_eval=True)  # the pretrained regime's values
    bb = m.backbone
    for layer, stage in zip(bb.body, bb.stage_of):
        assert all(p.requires_grad == (stage > 1) for p in layer.parameters()), (arch, stage)
    m.train()
    bns = [x for x in bb.modules() if isinstance(x, nn.BatchNorm2d)]
    assert bns and not any(b.training for b in bns)
    before = [b.running_mean.clone() for b in bns]
    m([torch.rand(3, 96, 96)] * 2, _targets())
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, bns))
    path_free.train()
    assert all(b.training for b in path_free.backbone.modules() if isinstance(b, nn.BatchNorm2d))


def test_light_head_is_depthwise_separable_and_small_against_gfls():
    light = build_model("gfl_mobilenet_v2_fpn", num_classes=3)
    assert all(isinstance(c, DWSepConvGN) for c in [*light.head.cls_convs, *light.head.reg_convs])
    assert len(light.head.cls_convs) == LIGHT_HEAD["stacked_convs"]
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert n(light.neck) + n(light.head) < n(light.backbone)  # the head does not dwarf the backbone
    full = build_model("gfl_mobilenet_v2_fpn", num_classes=3, fpn_channels=256, head_channels=256, stacked_convs=4,
                       head_conv="conv")
    assert all(isinstance(c, ConvGN) for c in full.head.cls_convs)
    assert n(full.neck) + n(full.head) > 3 * n(full.backbone)  # what GFL's ResNet-sized head would be here


@pytest.mark.parametrize("arch", PRESETS)
def test_trains_and_detects_with_uncertainty(arch):
    torch.manual_seed(0)
    m = build_model(arch, num_classes=3, min_size=128, max_size=160).train()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    imgs = [torch.randint(0, 256, (3, 120, 150), dtype=torch.uint8), torch.rand(3, 100, 90)]
    for _ in range(2):
        losses = m(imgs, _targets())
        assert set(losses) == {"loss_qfl", "loss_bbox", "loss_dfl"}
        loss = sum(losses.values())
        assert math.isfinite(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.nn.init.constant_(m.head.gfl_cls.bias, -1.0)  # scores around 0.27: boxes pass the threshold
    m.eval()
    with torch.no_grad():
        dets = m(imgs)
    assert len(dets) == 2 and len(dets[0]["boxes"]) > 0
    for d in dets:
        assert {"boxes", "scores", "labels", "edge_std", "loc_conf"} <= set(d)
        assert d["edge_std"].shape == (len(d["boxes"]), 4) and bool(((d["loc_conf"] > 0) & (d["loc_conf"] <= 1)).all())


def test_run_config_takes_the_light_head_unless_set():
    from gfldet.config import ConfigError, load_config

    cfg = load_config(None, ["model.arch=gfl_shufflenet_v2_x1_0_fpn"])
    assert cfg.model.fpn_channels is None  # the architecture's, resolved when the run starts
    mc = cfg.model_config(4)
    assert (mc.backbone, mc.fpn_channels, mc.stacked_convs, mc.head_conv) == ("shufflenet_v2_x1_0", 96, 2, "dwsep")
    mc = load_config(None, ["model.arch=gfl_shufflenet_v2_x1_0_fpn", "model.head_conv=conv",
                            "model.fpn_channels=128", "model.head_channels=128"]).model_config(4)
    assert (mc.fpn_channels, mc.head_conv, mc.stacked_convs) == (128, "conv", 2)
    assert load_config(None, []).model_config(4).fpn_channels == 256  # GFL's for ResNets
    with pytest.raises(ConfigError, match="model.stage_with_dcn.*ResNet"):
        load_config(None, ["model.arch=gfl_mobilenet_v2_fpn", "model.stage_with_dcn=[false, true, true, true]"])


@pytest.mark.parametrize("arch", PRESETS)
def test_onnx_export_matches_eager(arch, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from gfldet.deploy import load
    from gfldet.engine.norm_init import init_backbone_norms
    from gfldet.export import export_onnx

    torch.manual_seed(0)
    m = build_model(arch, num_classes=3, min_size=128, max_size=160)
    # BatchNorm statistics of real activations (a random network's unit statistics let them grow layer by layer
    # until float rounding decides the ranking), scores around 0.27 and spread box distributions
    init_backbone_norms(m, [[torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8) for _ in range(4)]])
    torch.nn.init.constant_(m.head.gfl_cls.bias, -1.0)
    torch.nn.init.normal_(m.head.gfl_reg.weight, std=0.05)
    m.eval()
    path = export_onnx(m, tmp_path / "m.onnx", example_size=(256, 256))
    imgs = [torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8), torch.randint(0, 256, (3, 100, 160), dtype=torch.uint8)]
    with torch.no_grad():
        want = m(imgs)
    got = load(path)([im.numpy() for im in imgs])
    for w, g in zip(want, got):
        assert len(w["boxes"]) == len(g["boxes"]) > 10
        torch.testing.assert_close(torch.as_tensor(g["boxes"]), w["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(torch.as_tensor(g["scores"]), w["scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.as_tensor(g["edge_std"]), w["edge_std"], atol=1e-4, rtol=1e-4)


# The CLI path below is the same code for every preset; what differs is the graph NNCF quantises. Two presets carry
# the unusual graphs: ShuffleNetV2's channel shuffle (reshape / transpose between convolutions) and MobileNetV3's
# hard-swish and squeeze-excitation (EfficientNet-B0's SiLU and SE are of the same kind); every preset's graph is
# checked against eager by test_onnx_export_matches_eager. (Each of these tests takes 25-35 s on 2 cores.)
@pytest.mark.parametrize("arch", ["gfl_shufflenet_v2_x1_0_fpn", "gfl_mobilenet_v3_large_fpn"])
def test_checkpoint_export_openvino_int8_and_predict_by_the_cli(arch, tmp_path, capsys):
    """What a user runs after training: ``gfldet predict`` on the checkpoint, ``gfldet export --format openvino
    --int8`` and ``gfldet predict`` on the IR; both give boxes with their edge uncertainty."""
    import json
    import os

    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    if "ONEDNN_MAX_CPU_ISA" in os.environ:
        pytest.skip("OpenVINO does not run with ONEDNN_MAX_CPU_ISA set (tests/test_deploy.py)")
    from gfldet.cli import main
    from gfldet.data.synthetic import write_coco
    from gfldet.engine.norm_init import init_backbone_norms
    from gfldet.models.io import save_checkpoint
    from gfldet.predict import collect_images, read_image

    write_coco(tmp_path / "data", 8, 3, (128, 128), 3)
    images = tmp_path / "data" / "images"
    torch.manual_seed(0)
    m = build_model(arch, num_classes=3, min_size=128, max_size=128)
    init_backbone_norms(m, [[read_image(p) for p in collect_images([str(images)])]])
    torch.nn.init.constant_(m.head.gfl_cls.bias, 0.0)  # scores near 0.5: every backend keeps boxes at --score-thr 0.3
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, m.eval(), cat_ids=[1, 2, 3])
    ir = tmp_path / "model.xml"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(ir), "--format", "openvino", "--int8", "--calib",
                 str(images), "--example-size", "256", "256", "--no-progress"]) == 0
    for src, backend in ((ckpt, "torch"), (ir, "openvino")):
        out = tmp_path / f"pred-{backend}"
        capsys.readouterr()
        assert main(["predict", "--checkpoint", str(src), "--backend", backend, str(images), "--out", str(out),
                     "--score-thr", "0.3", "--no-draw", "--no-progress"]) == 0
        preds = json.loads((out / "predictions.json").read_text())
        assert preds and {"bbox", "score", "edge_std", "loc_conf", "category_id"} <= set(preds[0]), backend
        assert {p["category_id"] for p in preds} <= {1, 2, 3}
