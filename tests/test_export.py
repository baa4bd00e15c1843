"""ONNX export: dynamic shapes, raw outputs against PyTorch, identical final detections through the NumPy
reference post-processing, the CLI (export, predict --backend onnxruntime)."""
import json
import logging

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms as tv_batched_nms

import gfldet
from gfldet.cli import main
from gfldet.deploy import OnnxDetector, batched_nms, postprocess, preprocess, read_metadata, resize_bilinear
from gfldet.models.io import save_checkpoint
from gfldet.export import EXPORTER_LOGGERS, ExportModule, export_onnx, output_names, quiet_exporter_logs
from gfldet.models.dcn import ModulatedDeformConv2d as DeformConv
from gfldet.ops.uncertainty import edge_uncertainty

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _model():
    torch.manual_seed(0)
    m = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=32, head_channels=32, gn_groups=8)
    torch.nn.init.constant_(m.head.gfl_cls.bias, -1.0)  # scores around 0.27: many boxes pass the threshold
    torch.nn.init.normal_(m.head.gfl_reg.weight, std=0.05)
    m.configure(min_size=160, max_size=256)
    return m.eval()


@pytest.fixture(scope="module")
def model():
    return _model()


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """Both modes, exported the way ``gfldet export`` runs (root logger at INFO), keeping every log record."""
    d = tmp_path_factory.mktemp("onnx")
    root, handler = logging.getLogger(), _Records()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        paths = {mode: export_onnx(model, d / f"{mode}.onnx", mode=mode, example_size=(256, 320)) for mode in ("decoded", "raw")}
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return paths | {"records": handler.records}


def test_export_does_not_flood_the_log_with_exporter_info(exported):
    """torch.onnx's exporter logs every pass at INFO through onnxscript / onnx_ir (~270 lines per export)."""
    names = [(r.name, r.levelname) for r in exported["records"]]
    assert ("gfldet.export", "INFO") in names  # the handler did see INFO records
    noisy_info = [n for n, lvl in names if lvl in ("DEBUG", "INFO")
                  and (n.split(".")[0] in ("onnxscript", "onnx_ir") or n.startswith("torch.onnx"))]
    assert not noisy_info, f"{len(noisy_info)} exporter records, e.g. {noisy_info[:3]}"


def test_quiet_exporter_logs_restores_levels_and_respects_debug():
    child = logging.getLogger("onnxscript._gfldet_test_child")
    child.setLevel(logging.INFO)  # a descendant with a level of its own is raised too
    gl = logging.getLogger("gfldet")
    before = {n: logging.getLogger(n).level for n in EXPORTER_LOGGERS}
    old_gfldet = gl.level
    try:
        gl.setLevel(logging.INFO)
        with quiet_exporter_logs():
            assert all(not logging.getLogger(n).isEnabledFor(logging.INFO) for n in EXPORTER_LOGGERS)
            assert not child.isEnabledFor(logging.INFO)
            assert logging.getLogger(EXPORTER_LOGGERS[0]).isEnabledFor(logging.WARNING)
        assert {n: logging.getLogger(n).level for n in EXPORTER_LOGGERS} == before and child.level == logging.INFO
        gl.setLevel(logging.DEBUG)  # gfldet -v: the exporter's messages are wanted
        with quiet_exporter_logs():
            assert child.isEnabledFor(logging.INFO)
            assert {n: logging.getLogger(n).level for n in EXPORTER_LOGGERS} == before
    finally:
        gl.setLevel(old_gfldet)
        child.setLevel(logging.NOTSET)


def _images():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (3, 120, 200), dtype=torch.uint8, generator=g),
            torch.randint(0, 256, (3, 300, 170), dtype=torch.uint8, generator=g)]


def test_raw_outputs_match_pytorch_at_another_size_and_batch(model, exported):
    meta = read_metadata(exported["raw"])
    batch, sizes, _, _ = preprocess(_images(), meta)  # batch 2, 256x256 padded; traced at 1x256x320
    sess = ort.InferenceSession(str(exported["raw"]), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": batch})))
    assert list(outs) == output_names("raw", 5)
    with torch.no_grad():
        x, m = model.preprocess(_images())
        assert m.image_sizes == sizes
        cls, reg = model.forward_features(x)
    for name, ref in zip(outs, [*cls, *reg]):
        assert outs[name].shape == tuple(ref.shape), name
        np.testing.assert_allclose(outs[name], ref.numpy(), rtol=0, atol=1e-4, err_msg=name)


def test_decoded_outputs_match_pytorch(model, exported):
    meta = read_metadata(exported["decoded"])
    assert meta["mode"] == "decoded" and meta["strides"] == [8, 16, 32, 64, 128] and meta["reg_max"] == 16
    batch, sizes, _, _ = preprocess(_images(), meta)
    sess = ort.InferenceSession(str(exported["decoded"]), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": batch})))
    with torch.no_grad():
        x, m = model.preprocess(_images())
        assert m.image_sizes == sizes
        cls, reg = model.forward_features(x)
    n, a = batch.shape[0], sum(c.shape[2] * c.shape[3] for c in cls)
    assert outs["boxes"].shape == (n, a, 4) and outs["scores"].shape == (n, a, 3)
    assert outs["distributions"].shape == (n, a, 4, 17) and outs["edge_std"].shape == (n, a, 4)
    assert outs["loc_conf"].shape == (n, a) and outs["priors"].shape == (a, 3)

    def flat(ms):
        return torch.cat([m.permute(0, 2, 3, 1).reshape(n, -1, m.shape[1]) for m in ms], 1)

    np.testing.assert_allclose(outs["scores"], flat(cls).sigmoid().numpy(), rtol=0, atol=1e-5)
    probs = flat(reg).reshape(n, a, 4, 17).softmax(-1)
    np.testing.assert_allclose(outs["distributions"], probs.numpy(), rtol=0, atol=1e-5)
    # boxes: prior centre -/+ expected distance * stride, against the model's own anchors
    anchors = torch.cat(model.anchors([tuple(c.shape[-2:]) for c in cls], torch.device("cpu")))
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    np.testing.assert_allclose(outs["priors"][:, :2], centres.numpy(), rtol=0, atol=0)
    dist = (probs * torch.arange(17.0)).sum(-1) * torch.from_numpy(outs["priors"][:, 2])[None, :, None]
    ref_boxes = torch.cat([centres - dist[..., :2], centres + dist[..., 2:]], -1)
    np.testing.assert_allclose(outs["boxes"], ref_boxes.numpy(), rtol=1e-5, atol=1e-3)
    u = edge_uncertainty(probs.reshape(-1, 4, 17), torch.arange(17.0), torch.from_numpy(outs["priors"][:, 2]).repeat(n))
    for k in ("edge_std", "edge_peak", "edge_entropy", "loc_conf"):  # every summary, per prior, in the graph
        np.testing.assert_allclose(outs[k].reshape(u[k].shape), u[k].numpy(), rtol=1e-4, atol=1e-4, err_msg=k)


def test_final_detections_identical_to_pytorch(model, exported):
    imgs = _images()
    with torch.no_grad():
        ref = model(imgs)
    dets = OnnxDetector(exported["decoded"])([im.numpy() for im in imgs])
    for d, r in zip(dets, ref):
        assert d["boxes"].shape[0] == r["boxes"].shape[0] > 10
        np.testing.assert_array_equal(d["labels"], r["labels"].numpy())
        np.testing.assert_allclose(d["boxes"], r["boxes"].numpy(), rtol=0, atol=1e-3)
        np.testing.assert_allclose(d["scores"], r["scores"].numpy(), rtol=0, atol=1e-5)
        for k in ("edge_std", "edge_entropy", "edge_peak", "loc_conf", "distributions", "strides"):
            np.testing.assert_allclose(d[k], r[k].numpy(), rtol=1e-4, atol=1e-4, err_msg=k)


def test_runtime_refuses_raw_and_old_decoded_files_saying_how_to_re_export(model, exported, tmp_path):
    with pytest.raises(ValueError, match=r"'raw' export .*gfldet export --checkpoint CKPT --out raw.onnx"):
        OnnxDetector(exported["raw"])
    import onnx

    proto = onnx.load(str(exported["decoded"]))
    for p in proto.metadata_props:
        if p.key == "gfldet.format":
            p.value = "1"
    onnx.save(proto, str(tmp_path / "old.onnx"))
    with pytest.raises(ValueError, match=r"old.onnx was exported by an earlier gfldet \(format 1.*re-export"):
        OnnxDetector(tmp_path / "old.onnx")


@pytest.mark.parametrize("n", [1, 60, 300, 512, 513, 1200])
def test_numpy_nms_matches_torchvision(n):
    """Both of the NumPy NMS's paths (IoU matrix up to 512 candidates, per kept box above; per class above 1,000
    boxes) keep torchvision's boxes in torchvision's order; ``max_keep`` is the first ``max_keep`` of that."""
    g = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 60 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(n, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    ref = tv_batched_nms(boxes, scores, labels, 0.5).numpy()
    ours = batched_nms(boxes.numpy(), scores.numpy(), labels.numpy(), 0.5)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(batched_nms(boxes.numpy(), scores.numpy(), labels.numpy(), 0.5, max_keep=7), ref[:7])


@pytest.mark.parametrize("size,new", [((480, 640), (240, 320)), ((100, 137), (320, 438)), ((333, 500), (320, 481)),
                                      ((7, 9), (5, 3)), ((1, 5), (3, 7)), ((64, 64), (64, 70))])
def test_numpy_resize_matches_the_models(size, new):
    """The runtime's resize computes the model's bilinear interpolation (weights and source pixels as ATen's). The
    bound: weights one float32 rounding of the source coordinate apart (2**-24 x the input side, were torch to round
    twice) times the largest pixel step (255), twice over (both axes)."""
    x = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(sum(size)), dtype=torch.uint8)
    ref = torch.nn.functional.interpolate(x.float()[None], size=new, mode="bilinear", align_corners=False)[0].numpy()
    ours = resize_bilinear(x.numpy().astype(np.float32), new)
    assert ours.shape == ref.shape == (3, *new)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2 * 255 * max(size) * 2.0**-24 + 1e-4)


def test_runtime_preprocess_is_the_models():
    """Keep-ratio size, pixels and padding of a batch as the model's own transform makes them."""
    model = _model()
    meta = {"min_size": 160, "max_size": 256, "pixel_mean": list(model.config.pixel_mean)}
    imgs = _images()
    batch, sizes, scales, originals = preprocess([im.numpy() for im in imgs], meta)
    with torch.no_grad():
        x, m = model.preprocess(imgs)
    assert sizes == m.image_sizes and scales == m.scales and originals == m.original_sizes
    for k, (h, w) in enumerate(sizes):
        ours = (torch.from_numpy(batch[k, :, :h, :w]) - model.transform.pixel_mean) / model.transform.pixel_std
        np.testing.assert_allclose(ours.numpy(), x[k, :, :h, :w].numpy(), rtol=0, atol=2 * 255 * 300 * 2.0**-24 / 57 + 1e-5)


def test_empty_image_gives_no_detection(model, exported):
    meta = {**read_metadata(exported["decoded"]), "score_thr": 1.0}
    sess = ort.InferenceSession(str(exported["decoded"]), providers=["CPUExecutionProvider"])
    batch, sizes, scales, originals = preprocess([np.zeros((3, 64, 64), np.uint8)], meta)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": batch})))
    det = postprocess(outs, sizes, meta, scales, originals)[0]
    assert det["boxes"].shape == (0, 4) and det["edge_std"].shape == (0, 4) and det["loc_conf"].shape == (0,)


def test_export_never_overwrites(model, exported):
    before = exported["raw"].read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        export_onnx(model, exported["raw"], mode="raw")
    assert exported["raw"].read_bytes() == before
    with pytest.raises(ValueError, match="too small to trace dynamic shapes"):
        export_onnx(model, exported["raw"].with_name("x.onnx"), mode="raw", example_size=(128, 320))
    with pytest.raises(ValueError, match="unknown export mode"):
        export_onnx(model, exported["raw"].with_name("x.onnx"), mode="nms")


def test_foreign_onnx_file_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["y"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    p = tmp_path / "other.onnx"
    onnx.save_model(helper.make_model(graph), str(p))
    with pytest.raises(ValueError, match="not an ONNX file exported by gfldet"):
        OnnxDetector(p)


def test_cli_export_and_predict_with_onnxruntime(tmp_path, capsys):
    from PIL import Image

    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, _model(), cat_ids=[5, 7, 9])
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--example-size", "256", "288"]) == 0
    assert out.is_file() and read_metadata(out)["cat_ids"] == [5, 7, 9]
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 2  # exists: refused, not replaced
    assert "exists" in capsys.readouterr().err
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, im in enumerate(_images()):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(imgs / f"{i}.png")
    results = {}
    for backend, src in (("onnxruntime", out), ("torch", ckpt)):
        d = tmp_path / backend
        assert main(["predict", "--checkpoint", str(src), str(imgs), "--out", str(d), "--backend", backend,
                     "--score-thr", "0.2", "--no-draw", "--no-progress"]) == 0
        results[backend] = json.loads((d / "predictions.json").read_text())
    a, b = results["onnxruntime"], results["torch"]
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x["category_id"] == y["category_id"] and x["category_id"] in (5, 7, 9)
        np.testing.assert_allclose(x["bbox"], y["bbox"], atol=0.02)
        assert len(x["edge_std"]) == 4 and 0 < x["loc_conf"] <= 1
        np.testing.assert_allclose(x["edge_std"], y["edge_std"], atol=0.01)


def test_exact_score_ties_give_the_same_detections(tmp_path):
    """All class logits equal: every (prior, class) pair ties; both decoders break ties by prior index."""
    m = _model()
    torch.nn.init.zeros_(m.head.gfl_cls.weight)
    torch.nn.init.constant_(m.head.gfl_cls.bias, 0.0)
    m.configure(min_size=None, max_size=None, nms_pre=30, max_per_img=5)
    path = export_onnx(m, tmp_path / "ties.onnx", example_size=(256, 256))
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        ref = m([img])[0]
    got = OnnxDetector(path)([img.numpy()])[0]
    np.testing.assert_array_equal(got["labels"], ref["labels"].numpy())
    np.testing.assert_allclose(got["boxes"], ref["boxes"].numpy(), rtol=0, atol=1e-3)


def test_numpy_nms_matches_torchvision_for_high_labels_near_the_threshold():
    """torchvision shifts classes apart by label * (max + 1) in float32, which moves IoUs near the threshold
    by ~1e-4 for label 79; the reference reproduces that decision."""
    g = torch.Generator().manual_seed(5)
    for n in (50, 400, 1500):  # the shifted path (<= 1000 boxes) and the per-class path
        xy = torch.rand(n, 2, generator=g) * 1000
        wh = torch.rand(n, 2, generator=g) * 12 + 8
        boxes = torch.cat([xy, xy + wh], 1)
        # near-duplicates of the first boxes, shifted so that the IoU is close to 0.6
        boxes[n // 2:, :] = boxes[: n - n // 2] + torch.rand(n - n // 2, 1, generator=g) * 2.2
        scores = torch.rand(n, generator=g)
        labels = torch.randint(70, 80, (n,), generator=g)
        ref = tv_batched_nms(boxes, scores, labels, 0.6).numpy()
        ours = batched_nms(boxes.numpy(), scores.numpy(), labels.numpy(), 0.6)
        np.testing.assert_array_equal(ours, ref)


def test_onnx_detector_takes_float_images_like_the_model(model, exported):
    imgs = _images()
    det = OnnxDetector(exported["decoded"])
    a = det([im.numpy() for im in imgs])
    b = det([(im.float() / 255).numpy() for im in imgs])
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["boxes"], y["boxes"], atol=1e-2)
    with pytest.raises(ValueError, match=r"float images must hold values in \[0, 1\]"):
        det([imgs[0].float().numpy()])
    with pytest.raises(ValueError, match="dtype"):
        det([imgs[0].to(torch.int32).numpy()])


def test_only_the_gfl_assembly_exports():
    m = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=32, head_channels=32, quality="centerness", box="dirac")
    with pytest.raises(ValueError, match="GFL and GFLV2 detectors only"):
        ExportModule(m)


def _dcn_model():
    torch.manual_seed(0)
    m = gfldet.GFL(gfldet.ModelConfig(depth=50, base_channels=16, fpn_channels=32, head_channels=32, gn_groups=8,
                                      num_classes=3, stage_with_dcn=(False, True, True, True), min_size=160, max_size=256))
    with torch.no_grad():  # offsets of about half a pixel and a varied mask, as a trained DCN has
        for mod in m.modules():
            if isinstance(mod, DeformConv):
                mod.conv_offset.weight.normal_(0, 0.02)
                mod.conv_offset.bias.normal_(0, 0.5)
    return m.eval()


def test_deformable_convolutions_export_to_onnx_deformconv(tmp_path):
    """A DCN model exports at opset 19 (ONNX DeformConv) by default; ONNX Runtime gives PyTorch's raw outputs at
    another batch and size; an explicit older opset is refused by name."""
    model = _dcn_model()
    with pytest.raises(ValueError, match=r"deformable convolutions \(model.stage_with_dcn=\(False, True, True, True\)\).*opset >= 19"):
        export_onnx(model, tmp_path / "old.onnx", mode="raw", example_size=(256, 320), opset=18)
    path = export_onnx(model, tmp_path / "dcn.onnx", mode="raw", example_size=(256, 320))
    import onnx

    proto = onnx.load(str(path))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {19}
    assert sum(n.op_type == "DeformConv" for n in proto.graph.node) == 13  # conv2 of the 4 + 6 + 3 blocks of c3-c5
    meta = read_metadata(path)
    batch, _, _, _ = preprocess(_images(), meta)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"images": batch})
    with torch.no_grad():
        x, _ = model.preprocess(_images())
        cls, reg = model.forward_features(x)
    for got, ref in zip(outs, [*cls, *reg]):
        np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-4)
