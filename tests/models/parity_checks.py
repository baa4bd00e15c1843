"""The checks of gfldet against one of mmdetection's parity fixtures (../shared/fixtures), shared by the fixture
families' test files (test_parity.py: GFL R-18; test_parity_dcn.py: GFL with DCNv2), which run them all by
subclassing :class:`ParitySuite`. Each takes a model loaded with ``from_mmdet(fx["state_dict"], min_size=None,
max_size=None)`` and the loaded fixture ``fx``. The fixture's tolerances: raw outputs and detections 1e-4 absolute,
target labels identical, target boxes 1e-5, losses 1e-5 relative."""
from __future__ import annotations

import torch

from gfldet.ops.priors import valid_anchor_flags

LOSS_NAMES = (("loss_qfl", "loss_cls"), ("loss_bbox", "loss_bbox"), ("loss_dfl", "loss_dfl"))  # gfldet's, mmdetection's


def rgb(fx: dict) -> list[torch.Tensor]:
    """The images mmdetection effectively saw: its data preprocessor swapped the channels of the stored arrays (it
    expects BGR from its image loader), so the RGB image is the channel-flip of the stored one."""
    return [img.flip(0) for img in fx["images"]]


def check_preprocess(model, fx: dict) -> None:
    batch, meta = model.preprocess(rgb(fx))
    assert meta.pad_shapes == [tuple(s) for s in fx["pad_shapes"]]
    assert meta.image_sizes == [tuple(s) for s in fx["img_shapes"]]
    torch.testing.assert_close(batch, fx["batch_input"], rtol=0, atol=1e-5)


@torch.no_grad()
def check_raw_outputs(model, fx: dict, levels: int = 5) -> None:
    cls, reg = model.forward_features(fx["batch_input"])
    assert len(cls) == len(fx["cls_scores"]) == levels
    for a, b in zip(cls, fx["cls_scores"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    for a, b in zip(reg, fx["bbox_preds"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def check_anchors_and_valid_flags(model, fx: dict) -> None:
    sizes = [tuple(c.shape[-2:]) for c in fx["cls_scores"]]
    torch.testing.assert_close(torch.cat(model.anchors(sizes, torch.device("cpu"))), fx["anchors"], rtol=0, atol=0)
    flags = valid_anchor_flags(sizes, model.config.strides, fx["pad_shapes"])
    assert torch.equal(flags, torch.stack(fx["valid_flags"]))


def check_atss_targets(model, fx: dict) -> None:
    t = model.compute_targets(fx["cls_scores"], fx["gt_boxes"], fx["gt_labels"], fx["pad_shapes"])
    assert torch.equal(t.labels, fx["target_labels"])
    torch.testing.assert_close(t.label_weights, fx["target_label_weights"], rtol=0, atol=0)
    torch.testing.assert_close(t.boxes, fx["target_bbox"], rtol=0, atol=1e-5)
    torch.testing.assert_close(t.positive[..., None].expand(-1, -1, 4).float(), fx["target_bbox_weights"], rtol=0, atol=0)
    assert float(t.num_pos_avg) == fx["num_pos_avg_factor"]


def check_losses(model, fx: dict) -> None:
    cls = [c.clone().requires_grad_() for c in fx["cls_scores"]]
    reg = [r.clone().requires_grad_() for r in fx["bbox_preds"]]
    losses = model.compute_losses(cls, reg, fx["gt_boxes"], fx["gt_labels"], fx["pad_shapes"])
    for ours, theirs in LOSS_NAMES:
        torch.testing.assert_close(losses[ours].detach(), fx["losses"][theirs].float(), rtol=1e-5, atol=0)
    sum(losses.values()).backward()
    assert all(torch.isfinite(c.grad).all() for c in cls + reg)


@torch.no_grad()
def check_detections_from_outputs(model, fx: dict) -> None:
    dets = model.decode(fx["cls_scores"], fx["bbox_preds"], fx["img_shapes"])
    for ours, ref in zip(dets, fx["detections"]):
        assert ours["boxes"].shape == ref["boxes"].shape
        torch.testing.assert_close(ours["boxes"], ref["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(ours["scores"], ref["scores"], rtol=0, atol=1e-4)
        assert torch.equal(ours["labels"], ref["labels"])


@torch.no_grad()
def check_end_to_end_eval(model, fx: dict, logit_atol: float = 1e-4) -> None:
    """Images in -> detections out, through gfldet's own pre-processing.

    From images, the raw outputs are within the fixture's ``logit_atol`` of mmdetection's (check_raw_outputs; the
    convolutions round differently on different CPUs, as oneDNN picks kernels by ISA). A box edge is
    ``stride * sum_j P_j * j`` over the softmaxed logits ``z``, and ``d(edge) / d(z_j) = stride * P_j * (j - edge /
    stride)``, so a logit error of at most ``e`` moves the edge by at most ``stride * e * sum_j P_j |j - mean|`` (the
    distribution's mean absolute deviation, MAD). The box tolerance is that bound with the coarsest stride and the
    largest MAD among the detections, plus the fixture's 1e-4 px for decoding itself."""
    model.eval()
    with torch.no_grad():
        dets = model(rgb(fx))
    bins = model.config.reg_max + 1
    pos = torch.arange(bins, dtype=torch.float32)
    mad = max((d * (pos - (d * pos).sum(-1, keepdim=True)).abs()).sum(-1).max().item()
              for d in (det["distributions"] for det in dets) if d.numel())
    box_atol = max(model.config.strides) * logit_atol * mad + 1e-4
    for ours, ref in zip(dets, fx["detections"]):
        torch.testing.assert_close(ours["boxes"], ref["boxes"], rtol=0, atol=box_atol)
        torch.testing.assert_close(ours["scores"], ref["scores"], rtol=0, atol=1e-4)
        assert torch.equal(ours["labels"], ref["labels"])
        d = ours["distributions"]
        assert d.shape == (ref["boxes"].shape[0], 4, bins)
        torch.testing.assert_close(d.sum(-1), torch.ones(d.shape[:2]), rtol=0, atol=1e-5)


def check_end_to_end_train(model, fx: dict) -> None:
    """Images + targets in -> the reference's losses, through gfldet's own pre-processing."""
    model.train()
    try:
        targets = [{"boxes": b, "labels": l} for b, l in zip(fx["gt_boxes"], fx["gt_labels"])]
        losses = model(rgb(fx), targets)
    finally:
        model.eval()
    for ours, theirs in LOSS_NAMES:
        torch.testing.assert_close(losses[ours].detach(), fx["losses"][theirs].float(), rtol=1e-5, atol=0)


class ParitySuite:
    """Every check above as a test: a test module provides the ``fx`` and ``model`` fixtures and subclasses this as
    ``class TestSomething(ParitySuite)``; its own tests (the inferred config, ...) stand beside it."""

    def test_preprocess_matches(self, model, fx):
        check_preprocess(model, fx)

    def test_raw_outputs(self, model, fx):
        check_raw_outputs(model, fx)

    def test_anchors_and_valid_flags(self, model, fx):
        check_anchors_and_valid_flags(model, fx)

    def test_atss_targets(self, model, fx):
        check_atss_targets(model, fx)

    def test_losses(self, model, fx):
        check_losses(model, fx)

    def test_detections_from_outputs(self, model, fx):
        check_detections_from_outputs(model, fx)

    def test_end_to_end_eval(self, model, fx):
        check_end_to_end_eval(model, fx)

    def test_end_to_end_train(self, model, fx):
        check_end_to_end_train(model, fx)
