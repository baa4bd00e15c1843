"""Parity with mmdetection 3.3.0 beyond the shared fixture: four more members of the GFL family (ResNet-18/50,
ResNeXt-101 32x4d; 1 to 7 classes; reg_max 4 to 16; 1 to 3 images of different sizes per batch; an image without
boxes; a crowded batch with 400 and 150 boxes). tests/fixtures/mmdet_cases.pt holds what mmdetection computed
(written by bench/mmdet_parity.py); the weights are regenerated here from each case's seed."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests._seeded import random_gts, seeded_init_

import gfldet

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mmdet_cases.pt"
DATA = torch.load(FIXTURE, weights_only=True)
SAME_TORCH = DATA["versions"]["torch"] == torch.__version__


def _inputs(case):
    g = torch.Generator().manual_seed(case["seed"])
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in case["sizes"]]
    gts, labels = [], []
    for i, ((h, w), n) in enumerate(zip(case["sizes"], case["gts"])):
        b, lab = random_gts(n, h, w, case["cfg"]["num_classes"], seed=case["seed"] * 100 + i)
        gts.append(b)
        labels.append(lab)
    return images, gts, labels


@pytest.fixture(scope="module", params=DATA["cases"], ids=lambda c: c["name"])
def case(request):
    c = request.param
    model = gfldet.build_model(c["arch"], min_size=None, max_size=None, **c["cfg"])
    return c, seeded_init_(model, c["seed"]).eval(), *_inputs(c)


@pytest.mark.skipif(not SAME_TORCH, reason=f"seeded weights need torch {DATA['versions']['torch']}")
@torch.no_grad()
def test_raw_outputs(case):
    c, model, images, _, _ = case
    batch, meta = model.preprocess(images)
    assert meta.pad_shapes == [tuple(p) for p in c["pad_shapes"]]
    assert abs(float(batch.double().sum()) - c["batch_input_sum"]) <= 1e-6 * abs(c["batch_input_sum"]) + 1e-3
    cls, reg = model.forward_features(batch)
    for a, b in zip(cls, c["cls_scores"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    for a, b in zip(reg, c["bbox_preds"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_targets(case):
    c, model, _, gts, labels = case
    t = model.compute_targets(c["cls_scores"], gts, labels, c["pad_shapes"])
    assert torch.equal(t.labels, c["target_labels"])
    torch.testing.assert_close(t.label_weights, c["target_label_weights"], rtol=0, atol=0)
    torch.testing.assert_close(t.boxes, c["target_bbox"], rtol=0, atol=1e-5)
    assert float(t.num_pos_avg) == c["num_pos_avg_factor"]


def test_losses(case):
    c, model, _, gts, labels = case
    losses = model.compute_losses(c["cls_scores"], c["bbox_preds"], gts, labels, c["pad_shapes"])
    for ours, theirs in (("loss_qfl", "loss_cls"), ("loss_bbox", "loss_bbox"), ("loss_dfl", "loss_dfl")):
        torch.testing.assert_close(losses[ours].detach(), c["losses"][theirs].float(), rtol=1e-5, atol=0)


def test_detections(case):
    c, model, _, _, _ = case
    dets = model.decode(c["cls_scores"], c["bbox_preds"], [tuple(s) for s in c["sizes"]])
    for ours, ref in zip(dets, c["detections"]):
        assert ours["boxes"].shape == ref["boxes"].shape
        torch.testing.assert_close(ours["boxes"], ref["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(ours["scores"], ref["scores"], rtol=0, atol=1e-4)
        assert torch.equal(ours["labels"], ref["labels"])
