"""GFLV2 through ONNX: the joint score (class score x DGQP quality) takes the place of GFL's class score in both
export modes: the one NumPy post-processing (gfldet.deploy) gives the eager model's detections from the decoded
file, and the raw file's score maps are the eager joint score's logits."""
import numpy as np
import pytest
import torch

import gfldet
from gfldet.deploy import OnnxDetector, preprocess, read_metadata
from gfldet.export import export_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _model():
    torch.manual_seed(0)
    m = gfldet.gflv2_resnet50_fpn(num_classes=3, base_channels=16, fpn_channels=32, head_channels=32, gn_groups=8)
    torch.nn.init.constant_(m.head.gfl_cls.bias, -0.5)
    torch.nn.init.normal_(m.head.gfl_reg.weight, std=0.05)
    torch.nn.init.normal_(m.head.gfl_quality[2].weight, std=0.5)  # a quality that varies across locations
    m.configure(min_size=160, max_size=256)
    return m.eval()


def test_gflv2_exports_with_the_eager_detections(tmp_path, mode="decoded"):
    model = _model()
    g = torch.Generator().manual_seed(1)
    imgs = [torch.randint(0, 256, (3, 200, 240), generator=g, dtype=torch.uint8),
            torch.randint(0, 256, (3, 170, 210), generator=g, dtype=torch.uint8)]
    with torch.no_grad():
        ref = model(imgs)
    path = export_onnx(model, tmp_path / f"{mode}.onnx", mode=mode, example_size=(256, 256))
    dets = OnnxDetector(path)([im.numpy() for im in imgs])
    for d, r in zip(dets, ref):
        assert d["boxes"].shape[0] == r["boxes"].shape[0] > 10
        # the joint score differs across candidates, so these scores are not GFL's sigmoid(class logits)
        assert len(np.unique(np.round(d["scores"], 4))) > 5
        np.testing.assert_array_equal(d["labels"], r["labels"].numpy())
        np.testing.assert_allclose(d["boxes"], r["boxes"].numpy(), rtol=0, atol=1e-3)
        np.testing.assert_allclose(d["scores"], r["scores"].numpy(), rtol=0, atol=1e-5)


def test_gflv2_raw_export_gives_the_joint_score_logits(tmp_path):
    import onnxruntime as ort

    model = _model()
    g = torch.Generator().manual_seed(2)
    imgs = [torch.randint(0, 256, (3, 200, 240), generator=g, dtype=torch.uint8)]
    path = export_onnx(model, tmp_path / "raw.onnx", mode="raw", example_size=(256, 256))
    batch, _, _, _ = preprocess([im.numpy() for im in imgs], read_metadata(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": batch})))
    with torch.no_grad():
        x, _ = model.preprocess(imgs)
        cls, reg = model.forward_features(x)
        n = model.head.box_channels
        joint = [model.quality.joint(c, r[:, n:]) for c, r in zip(cls, reg)]
    for lvl, (j, r) in enumerate(zip(joint, reg)):
        np.testing.assert_allclose(outs[f"cls_p{lvl + 3}"], j.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(outs[f"reg_p{lvl + 3}"], r[:, :n].numpy(), rtol=0, atol=1e-4)
