"""gfldet's GFLV2 (quality="dgqp") reproduces mmdetection 3.3's GFL head with the official DGQP forward on fixed
weights (../shared/fixtures/mmdet_gflv2_r18_c64_k6.pt), within the fixture's tolerances: raw outputs and
detections 1e-4 absolute, target labels identical, target boxes 1e-5, losses 1e-5 relative.

The fixture's ``cls_scores`` hold logit(joint score): mmdetection's head takes the sigmoid of what it returns.
"""
from __future__ import annotations

import pytest
import torch

from gfldet import from_mmdet
from gfldet.models.quality import JointDGQP
from gfldet.models.mmdet import to_mmdet_state_dict
from tests._fixture import GFLV2_R18, load_fixture


@pytest.fixture(scope="module")
def fx():
    return load_fixture(GFLV2_R18)


@pytest.fixture(scope="module")
def model(fx):
    return from_mmdet(fx["state_dict"], min_size=None, max_size=None)  # the images are at network size


def _rgb(fx):  # mmdetection's preprocessor swapped the stored images' channels (see the fixture's README)
    return [img.flip(0) for img in fx["images"]]


def test_config_inferred(model, fx):
    c, v2 = model.config, fx["config"]["gflv2"]
    assert (c.depth, c.fpn_channels, c.head_channels, c.num_classes, c.reg_max) == (18, 64, 64, 6, 16)
    assert (c.quality, c.reg_topk, c.reg_channels, c.add_mean) == ("dgqp", v2["reg_topk"], v2["reg_channels"], v2["add_mean"])
    assert isinstance(model.quality, JointDGQP) and model.head.gfl_quality[0].in_channels == 20


@torch.no_grad()
def test_raw_outputs(model, fx):
    """The box logits, and the joint score: sigmoid(class logits) x DGQP quality."""
    cls, reg = model.forward_features(fx["batch_input"])
    joint = [model.quality.joint(c, r[:, -1:]) for c, r in zip(cls, reg)]  # the head's last channel: DGQP's logit
    for ours, theirs in zip(joint, fx["cls_scores"]):
        torch.testing.assert_close(ours.sigmoid(), theirs.sigmoid(), rtol=0, atol=1e-4)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    for ours, theirs in zip(reg, fx["bbox_preds"]):
        torch.testing.assert_close(ours[:, :-1], theirs, rtol=0, atol=1e-4)


def test_atss_targets(model, fx):
    t = model.compute_targets(fx["cls_scores"], fx["gt_boxes"], fx["gt_labels"], fx["pad_shapes"])
    assert torch.equal(t.labels, fx["target_labels"])
    torch.testing.assert_close(t.boxes, fx["target_bbox"], rtol=0, atol=1e-5)
    assert float(t.num_pos_avg) == fx["num_pos_avg_factor"]


def _check_losses(losses, fx):
    for ours, theirs in (("loss_qfl", "loss_cls"), ("loss_bbox", "loss_bbox"), ("loss_dfl", "loss_dfl")):
        torch.testing.assert_close(losses[ours].detach(), fx["losses"][theirs].float(), rtol=1e-5, atol=0)
    assert set(losses) == {"loss_qfl", "loss_bbox", "loss_dfl"}  # DGQP has no loss of its own


def test_losses_and_gradients(model, fx):
    """QFL on the joint score, box losses weighted by the highest detached joint score; the classification loss
    also trains the DGQP branch and, through its input, the distributions."""
    model.train()
    try:
        cls, reg = model.forward_features(fx["batch_input"])
        losses = model.compute_losses(cls, reg, fx["gt_boxes"], fx["gt_labels"], fx["pad_shapes"])
        _check_losses(losses, fx)
        model.zero_grad()
        losses["loss_qfl"].backward()
    finally:
        model.eval()
    dgqp = model.head.gfl_quality
    assert dgqp[0].weight.grad.abs().sum() > 0 and dgqp[2].weight.grad.abs().sum() > 0
    assert model.head.gfl_reg.weight.grad.abs().sum() > 0  # the quality input is not detached


def test_end_to_end_train(model, fx):
    model.train()
    try:
        targets = [{"boxes": b, "labels": l} for b, l in zip(fx["gt_boxes"], fx["gt_labels"])]
        _check_losses(model(_rgb(fx), targets), fx)
    finally:
        model.eval()


@torch.no_grad()
def test_end_to_end_eval(model, fx):
    model.eval()
    for ours, ref in zip(model(_rgb(fx)), fx["detections"]):
        # as in test_parity.py: raw outputs within 1e-4 become box edges (expectation x stride, up to 128 px)
        # within ~6e-4 px; 2e-3 px bounds it
        torch.testing.assert_close(ours["boxes"], ref["boxes"], rtol=0, atol=2e-3)
        torch.testing.assert_close(ours["scores"], ref["scores"], rtol=0, atol=1e-4)
        assert torch.equal(ours["labels"], ref["labels"])


def _with_background_column(fx, num_classes):
    """The fixture's weights as GFocalV2 saves them: gfl_cls with num_classes + 1 outputs (mmdetection 2.x's
    use_sigmoid=False adds a background column), the real columns being the fixture's 6 repeated."""
    sd = {k: v.float() for k, v in fx["state_dict"].items()}
    w, b = sd["bbox_head.gfl_cls.weight"], sd["bbox_head.gfl_cls.bias"]
    reps = -(-num_classes // w.shape[0])
    sd["bbox_head.gfl_cls.weight"] = torch.cat([w.repeat(reps, 1, 1, 1)[:num_classes], torch.full_like(w[:1], 5.0)])
    sd["bbox_head.gfl_cls.bias"] = torch.cat([b.repeat(reps)[:num_classes], torch.full_like(b[:1], 5.0)])
    return sd


@pytest.mark.parametrize("num_classes, meta", [(80, {}), (20, {"CLASSES": [f"c{i}" for i in range(20)]})])
def test_official_checkpoint_layout(fx, num_classes, meta):
    """The background column is dropped where the file is GFocalV2's: 81 outputs without class names (the
    official COCO files), or one output more than its meta's class names; the real columns load unchanged."""
    sd = _with_background_column(fx, num_classes)
    m = from_mmdet({"state_dict": sd, "meta": meta}, min_size=None, max_size=None)
    assert m.config.num_classes == num_classes and m.head.gfl_cls.out_channels == num_classes
    torch.testing.assert_close(m.head.gfl_cls.weight, sd["bbox_head.gfl_cls.weight"][:num_classes])
    assert m.class_names == (meta.get("CLASSES") or None)


def test_a_real_81st_class_is_kept(fx):
    """81 outputs with 81 class names in the meta: all are classes (no background column)."""
    sd = _with_background_column(fx, 80)
    m = from_mmdet({"state_dict": sd, "meta": {"CLASSES": [f"c{i}" for i in range(81)]}}, min_size=None, max_size=None)
    assert m.config.num_classes == 81


def test_builder_and_fine_tuning_read_official_files(fx, tmp_path):
    """gflv2_resnet18-like builds with weights= (and model.init fine-tuning, which reads the same way) take a
    GFocalV2 file with its background column: the column is dropped, nothing is re-initialised."""
    from gfldet.models.zoo import build_model

    path = tmp_path / "gfocal.pth"
    sd = _with_background_column(fx, 80)
    torch.save({"state_dict": sd, "meta": {}}, path)
    m = build_model("gfl_resnet18_fpn", num_classes=80, quality="dgqp", fpn_channels=64, head_channels=64,
                    weights=str(path))
    torch.testing.assert_close(m.head.gfl_cls.weight, sd["bbox_head.gfl_cls.weight"][:80])
    torch.testing.assert_close(m.head.gfl_quality[0].weight, sd["bbox_head.reg_conf.0.weight"])


def test_round_trip_to_mmdet_names(model, fx):
    back = to_mmdet_state_dict(model)
    assert {"bbox_head.reg_conf.0.weight", "bbox_head.reg_conf.2.bias"} <= set(back)
    for k, v in fx["state_dict"].items():
        if v.is_floating_point():  # (BatchNorm's num_batches_tracked counters are not weights)
            torch.testing.assert_close(back[k], v.float(), rtol=0, atol=0)
