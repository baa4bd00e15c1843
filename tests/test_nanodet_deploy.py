"""NanoDet through gfldet's exporter and torch-free runtime (issue 31, item 5): ``gfldet.ship.export_model`` writes
ONNX, OpenVINO IR and INT8 files of a NanoDet that ``gfldet.deploy.load(FILE)(images)`` runs without torch, giving the
eager model's detections. The runtime's NanoDet rules (the warp resize, the selection without ``nms_pre``, the clip to
the padded batch, the offset class NMS, the inverse warp of the boxes) are read from the file's metadata and are
held here to the eager NanoDet's own code.

The models have random weights made informative (BatchNorm statistics measured on the images, the output convs
redrawn with class biases set for about 300 candidates per batch), so that detections depend on the input.
"""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from gfldet.deploy import load, postprocess, preprocess, read_metadata
from gfldet.deploy.lowp import float_scope_onnx, to_openvino
from gfldet.deploy.preprocess import warp_bilinear
from gfldet.models.nanodet import nanodet_m, nanodet_plus_m, resize_matrix, warp_perspective_bilinear
from gfldet.ops.resize import warp_resize_matrix
from gfldet.ship import export_model

from ._no_torch import NO_TORCH_RUN

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("openvino")

SIZES = [(240, 320), (300, 200), (150, 200), (97, 413)]  # (H, W): down- and upscaled, both orientations


def _images(seed=0, sizes=SIZES):
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:  # smooth blobs plus noise: features that vary across the image
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / (7 + 5 * c) + c) * np.cos(yy / (11 + 3 * c)) for c in range(3)])
        img = 127 + 90 * base + rng.normal(0, 20, (3, h, w))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _informative(model, images, candidates=300, reg_gain=0.3):
    """Random weights whose detections depend on the input (see the module docstring); returns the model."""
    g = torch.Generator().manual_seed(1)
    c = model.spec.num_classes
    with torch.no_grad():
        batch = model.preprocess([torch.from_numpy(a) for a in images])
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.momentum = None
                mod.reset_running_stats()
        model.network.train()
        model.network(batch.images)
        model.network.eval()
        for conv in model.head.gfl_cls:
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (reg_gain / fan_in ** 0.5))
            conv.weight[:c] *= 3 / reg_gain
            conv.bias.zero_()
            conv.bias[:c] = torch.randn(c, generator=g)
        cls, _ = model.forward_features(batch.images)
        kth = torch.cat([x.flatten(2) for x in cls], 2).flatten().topk(candidates).values[-1]
        for conv in model.head.gfl_cls:
            conv.bias[:c] += torch.logit(torch.tensor(0.05)) - kth
    return model.eval()


# ------------------------------------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize("keep_ratio", [False, True])
@pytest.mark.parametrize("dst", [(320, 320), (416, 416)])
def test_numpy_warp_is_the_torch_warp_bit_for_bit(keep_ratio, dst):
    """The runtime's NumPy warp gives every pixel of gfldet.models.nanodet's warp (which is OpenCV's, tested against
    it in the parity tests): uint8 images exactly, float images exactly on the same positions and weights; the
    matrix and warped size are the eager model's."""
    for img in _images(3) + [np.random.default_rng(4).integers(0, 256, (3, 17, 411), dtype=np.uint8)]:
        h, w = img.shape[1:]
        m, size = warp_resize_matrix((w, h), dst, keep_ratio)
        mt, size_t = resize_matrix((w, h), dst, keep_ratio)
        assert size == size_t and torch.equal(torch.tensor(m, dtype=torch.float64), mt)
        ours = warp_bilinear(img, m, size)
        ref = warp_perspective_bilinear(torch.from_numpy(img).permute(1, 2, 0), mt, size).permute(2, 0, 1).numpy()
        assert ours.dtype == np.uint8 and ours.shape == (3, size[1], size[0])
        np.testing.assert_array_equal(ours, ref)
        f = img.astype(np.float32) / np.float32(255) * np.float32(255)
        ref_f = warp_perspective_bilinear(torch.from_numpy(f).permute(1, 2, 0), mt, size).permute(2, 0, 1).numpy()
        np.testing.assert_array_equal(warp_bilinear(f, m, size), ref_f)


def test_runtime_input_normalises_to_the_eager_batch():
    """The runtime's batch, normalised by the exported graph's own transform, is the eager NanoDet's batch: every
    float32 equal (BGR, the official arithmetic, the pad of unequal sizes normalised to exactly 0)."""
    for model in (nanodet_plus_m(input_size=320), nanodet_m(input_size=320)):
        meta = {"pixel_mean": model.export_settings()["pixel_mean"], **model.export_settings()}
        imgs = _images(5)
        batch, sizes, matrices, originals = preprocess(imgs, meta)
        eager = model.preprocess([torch.from_numpy(a) for a in imgs])
        assert sizes == eager.warped_sizes and originals == eager.original_sizes
        for m, mt in zip(matrices, eager.warp_matrices):
            assert torch.equal(torch.tensor(m, dtype=torch.float64), mt)
        graph_side = model.transform.pad(model.transform.normalize(torch.from_numpy(batch)))
        assert torch.equal(graph_side, eager.images)


# ------------------------------------------------------------------------------------------------ postprocessing
def _graph_outputs(model, raw, input_hw):
    """What the decoded graph outputs for a raw NanoDet output (the exporter's own parts), as NumPy."""
    c = model.spec.num_classes
    cls, box = raw[..., :c], raw[..., c:]
    per_level = model.prior_generator.grid([(math.ceil(input_hw[0] / s), math.ceil(input_hw[1] / s))
                                            for s in model.spec.strides])
    centers, strides = torch.cat(per_level)[:, :2], model.prior_generator.anchor_strides(per_level)
    out = {"boxes": model.box.decode(box, centers, strides[:, None]), "scores": model.quality.joint(cls, None).sigmoid(),
           "priors": torch.cat([centers, strides[:, None]], -1), **model.box.extras(box, strides)}
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("name", ["plus", "legacy"])
@pytest.mark.parametrize("many", [False, True])
def test_runtime_selection_and_nms_are_the_decoders(name, many):
    """From the same raw output, the runtime's NumPy selection (no nms_pre, score strictly above 0.05, clip to the
    padded batch, empty boxes kept, offset class NMS, top 100) and inverse warp give the eager decoder's detections
    box for box: the same labels and order, scores equal, boxes equal in the network frame and within 1e-4 px in the
    image. ``many``: every class logit raised past 10,000 candidates, NMS per class (the official split)."""
    model = nanodet_plus_m(input_size=320) if name == "plus" else nanodet_m(input_size=320)
    imgs = _images(6)[:3]
    batch = model.preprocess([torch.from_numpy(a) for a in imgs])
    g = torch.Generator().manual_seed(2)
    raw = torch.randn(3, sum(math.ceil(320 / s) ** 2 for s in model.spec.strides), model.spec.num_classes + 32,
                      generator=g)
    raw[..., :model.spec.num_classes] += (-2.0 if many else -6.0)
    raw[..., model.spec.num_classes:] *= 3
    with torch.no_grad():
        ref = model.decoder(raw, batch.input_hw, batch.warp_matrices, batch.original_sizes)
    meta = model.export_settings()
    got = postprocess(_graph_outputs(model, raw, batch.input_hw), batch.warped_sizes, meta,
                      [m.tolist() for m in batch.warp_matrices], batch.original_sizes)
    candidates = (raw[..., :model.spec.num_classes].sigmoid() > 0.05).sum(dim=(1, 2))
    assert bool((candidates >= 10000).all()) == many and bool((candidates < 10000).all()) != many
    for r, d in zip(ref, got):
        assert 0 < len(r["boxes"]) == len(d["boxes"])
        np.testing.assert_array_equal(d["labels"], r["labels"].numpy())
        np.testing.assert_array_equal(d["scores"], r["scores"].numpy())
        np.testing.assert_allclose(d["boxes"], r["boxes"].numpy(), rtol=0, atol=1e-4)
    net = postprocess(_graph_outputs(model, raw, batch.input_hw), batch.warped_sizes, meta)
    for r, d in zip(ref, net):
        np.testing.assert_array_equal(d["boxes"], r["input_boxes"].numpy())


# ------------------------------------------------------------------------------------------------ export
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("nanodet_export")
    calib = d / "calib"
    calib.mkdir()
    from PIL import Image

    for i, a in enumerate(_images(7, [(200, 260), (300, 240), (160, 160), (240, 320)])):
        Image.fromarray(a.transpose(1, 2, 0)).save(calib / f"{i}.png")
    plus = _informative(nanodet_plus_m(input_size=320), _images())
    legacy = _informative(nanodet_m(input_size=320), _images())
    files = {"plus.onnx": d / "plus.onnx", "plus.xml": d / "plus.xml", "plus.int8.xml": d / "plus.int8.xml",
             "legacy.onnx": d / "legacy.onnx"}
    export_model(plus, files["plus.onnx"])
    to_openvino(files["plus.onnx"], files["plus.xml"])  # what export_model does after its ONNX export
    export_model(plus, files["plus.int8.xml"], int8=True, calib=calib, progress=False)
    export_model(legacy, files["legacy.onnx"])
    return {"plus": plus, "legacy": legacy, **{k: str(v) for k, v in files.items()}}


def _compare(ref, got, box_tol=1e-3, score_tol=1e-4):
    """Detections equal to the eager ones: the same number, each eager detection matched by one of the same label
    with its box within ``box_tol`` px and its score within ``score_tol``, in the same order except where two scores
    are within ``score_tol`` (float32 noise may swap such neighbours, as in the parity tests). Returns the largest
    box and score differences."""
    worst = [0.0, 0.0]
    for r, d in zip(ref, got):
        rb, rs, rl = r["boxes"].numpy(), r["scores"].numpy(), r["labels"].numpy()
        assert len(d["boxes"]) == len(rb) > 5
        cost = np.abs(rb[:, None] - d["boxes"][None]).max(-1) + np.where(rl[:, None] == d["labels"][None], 0, np.inf)
        match = cost.argmin(1)
        assert sorted(match.tolist()) == list(range(len(rb))), "detections without a counterpart"
        np.testing.assert_allclose(d["boxes"][match], rb, rtol=0, atol=box_tol)
        np.testing.assert_allclose(d["scores"][match], rs, rtol=0, atol=score_tol)
        moved = match != np.arange(len(rb))
        assert np.all(np.abs(rs[moved] - d["scores"][moved]) <= score_tol), "order differs beyond score ties"
        worst = [max(worst[0], float(cost[np.arange(len(rb)), match].max())),
                 max(worst[1], float(np.abs(d["scores"][match] - rs).max()))]
    return worst


@pytest.mark.parametrize("name,file", [("plus", "plus.onnx"), ("plus", "plus.xml"), ("legacy", "legacy.onnx")])
def test_exported_nanodet_detects_as_the_eager_model(exported, name, file):
    """ONNX (ONNX Runtime) and OpenVINO IR files of NanoDet-Plus-m and the legacy NanoDet-m give the eager model's
    detections on four uint8 images and one float image of different sizes: same labels, boxes within 1e-3 px,
    scores within 1e-4; the file states NanoDet's rules."""
    model = exported[name]
    imgs = _images(8)
    imgs.append((_images(9, [(210, 180)])[0] / np.float32(255)).astype(np.float32))
    with torch.no_grad():
        ref = model([torch.from_numpy(a) for a in imgs])
    got = load(exported[file])(imgs)
    print(file, "max box, score difference", _compare(ref, got))
    meta = read_metadata(exported[file])
    assert (meta["resize"], meta["nms"], meta["clip"], meta["nms_pre"]) == ("warp", "offset", "batch", None)
    assert meta["keep_ratio"] == (name == "legacy") and meta["prior_offset"] == (0.5 if name == "legacy" else 0.0)


def test_exported_nanodet_runs_without_torch(exported, tmp_path):
    """The NanoDet-Plus ONNX file runs where torch, onnx and openvino cannot be imported, with the eager detections."""
    imgs = _images(10)
    np.savez(tmp_path / "images.npz", *imgs)
    run = subprocess.run([sys.executable, "-c", NO_TORCH_RUN, exported["plus.onnx"], str(tmp_path / "images.npz"),
                          str(tmp_path / "dets.npz")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(tmp_path / "dets.npz")
    with torch.no_grad():
        ref = exported["plus"]([torch.from_numpy(a) for a in imgs])
    dets = [{k: got[f"{i}_{k}"] for k in ("boxes", "scores", "labels")} for i in range(len(imgs))]
    print("no torch: max box, score difference", _compare(ref, dets))


def test_int8_nanodet_keeps_its_decode_in_float_and_detects(exported):
    """The INT8 IR (NNCF) quantises NanoDet's convolutions but nothing from its per-level output convs on (the float
    scope is found in the NanoDet graph): no FakeQuantize feeds the softmax, the integral or the sigmoid; and the
    file runs through the same runtime. (Its agreement with the float model is not asserted: random weights.)"""
    import onnx
    import openvino as ov

    assert len(float_scope_onnx(onnx.load(exported["plus.onnx"]))) > 20
    assert read_metadata(exported["plus.int8.xml"])["precision"] == "int8"
    model = ov.Core().read_model(exported["plus.int8.xml"])
    fq = [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert len(fq) > 20
    for op in fq:
        consumers = {t.get_node().get_type_name() for t in op.output(0).get_target_inputs()}
        assert not consumers & {"SoftMax", "Softmax", "MatMul", "Sigmoid", "ReduceSum"}, (op.get_friendly_name(), consumers)
    dets = load(exported["plus.int8.xml"])(_images(11))
    assert all(len(d["boxes"]) > 0 and d["labels"].max() < 80 for d in dets)
