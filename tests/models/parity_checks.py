"""The checks of gfldet against one of mmdetection's parity fixtures (../shared/fixtures), shared by the fixture
families' test files (test_parity.py: GFL R-18; test_parity_dcn.py: GFL with DCNv2). Each takes a model loaded with
``from_mmdet(fx["state_dict"], min_size=None, max_size=None)`` and the loaded fixture ``fx``. The fixture's
tolerances: raw outputs and detections 1e-4 absolute, target labels identical, target boxes 1e-5, losses 1e-5
relative."""
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
def check_end_to_end_eval(model, fx: dict, box_atol: float) -> None:
    """Images in -> detections out, through gfldet's own pre-processing; ``box_atol``: pixels (the caller derives it
    from the raw outputs' error and the strides)."""
    model.eval()
    dets = model(rgb(fx))
    bins = model.config.reg_max + 1
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
