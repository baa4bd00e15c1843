"""NanoDet-Plus training in gfldet: the assigner's rules, the training augmentation, the auxiliary branch's detach,
and a small run that learns. Parity of the losses and gradients with the official trainer: test_nanodet_train_parity.py.
"""
from __future__ import annotations

import colorsys

import pytest
import torch

from gfldet.errors import GfldetError
from gfldet.models.nanodet import build_nanodet
from gfldet.models.nanodet.augment import NanoDetAugment, saturate
from gfldet.models.nanodet.model import NanoDet, NanoDetSpec
from gfldet.models.nanodet.preprocess import NanoDetPreprocessor
from gfldet.ops.boxes import box_iou, box_iou_aligned
from gfldet.ops.dsla import dynamic_soft_label_assign

SMALL = NanoDetSpec("0.5x", neck="ghost_pan", channels=32, strides=(8, 16, 32, 64), input_size=(96, 96),
                    keep_ratio=False, prior_offset=0.0, num_classes=3)


def scene(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (3, 96, 128) uint8 image with two filled rectangles of class colours on noise, their boxes and labels."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 60, (3, 96, 128), generator=g, dtype=torch.uint8)
    boxes, labels = [], []
    for k, colour in enumerate(((220, 40, 40), (40, 220, 40))):
        w, h = int(torch.randint(20, 50, (1,), generator=g)), int(torch.randint(20, 40, (1,), generator=g))
        x, y = int(torch.randint(0, 128 - w, (1,), generator=g)), int(torch.randint(0, 96 - h, (1,), generator=g))
        img[:, y:y + h, x:x + w] = torch.tensor(colour, dtype=torch.uint8)[:, None, None]
        boxes.append([x, y, x + w, y + h])
        labels.append(k)
    return img, torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels)


# ------------------------------------------------------------------ the assigner
def grid_points(size: int = 64, stride: int = 8) -> torch.Tensor:
    xs = torch.arange(0, size, stride, dtype=torch.float32)
    yy, xx = torch.meshgrid(xs, xs, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], -1)


def test_dsla_positives_lie_inside_a_box_and_take_the_iou_of_their_prediction():
    points = grid_points()
    gt = torch.tensor([[4.0, 4.0, 36.0, 30.0], [30.0, 20.0, 60.0, 60.0]])
    pred = torch.cat([points - 10, points + 10], 1)  # 20 px boxes around each point
    logits = torch.full((points.shape[0], 3), -3.0)
    index, ious = dynamic_soft_label_assign(logits, points, pred, gt, torch.tensor([0, 2]))
    pos = index >= 0
    assert pos.any() and set(index[pos].tolist()) == {0, 1}
    inside_any = ((points[:, None, 0] > gt[:, 0]) & (points[:, None, 0] < gt[:, 2]) & (points[:, None, 1] > gt[:, 1])
                  & (points[:, None, 1] < gt[:, 3])).any(1)
    assert inside_any[pos].all()
    assert torch.allclose(ious[pos], box_iou_aligned(pred[pos], gt[index[pos]]))
    assert (ious[~pos] == 0).all()


def test_dsla_dynamic_k_is_the_sum_of_the_top_ious():
    points = grid_points()
    gt = torch.tensor([[0.5, 0.5, 63.5, 63.5]])
    pred = gt.expand(points.shape[0], 4).clone()
    pred[:5] += torch.tensor([1.0, 1.0, -1.0, -1.0])  # five slightly worse
    index, _ = dynamic_soft_label_assign(torch.zeros(points.shape[0], 1), points, pred, gt, torch.tensor([0]))
    # all 63 points strictly inside have IoU ~1 or 0.94: the 13 largest sum to 13, so k = 13
    assert int((index == 0).sum()) == 13


def test_dsla_one_ground_truth_per_prior_and_the_empty_cases():
    points = grid_points()
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0], [1.0, 1.0, 41.0, 41.0]])  # nearly the same box twice
    pred = torch.cat([points - 20, points + 20], 1)
    index, _ = dynamic_soft_label_assign(torch.zeros(points.shape[0], 2), points, pred, gt, torch.tensor([0, 1]))
    assert index.shape == (points.shape[0],) and (index >= -1).all() and (index <= 1).all()
    none, ious = dynamic_soft_label_assign(torch.zeros(points.shape[0], 2), points, pred, gt[:0],
                                           torch.zeros(0, dtype=torch.long))
    assert (none == -1).all() and (ious == 0).all()
    outside = torch.tensor([[1.0, 1.0, 7.0, 7.0]])  # between grid points: no point strictly inside
    none, _ = dynamic_soft_label_assign(torch.zeros(points.shape[0], 2), points, pred, outside, torch.tensor([0]))
    assert (none == -1).all()


# ------------------------------------------------------------------ augmentation
def test_augment_without_randomness_is_the_val_input():
    """Every random range collapsed (no scale, stretch or move; no colour change): the training input is the val
    pipeline's input, bit for bit, and the boxes are scaled as the image."""
    img, boxes, _ = scene(0)
    aug = NanoDetAugment((96, 96), scale=(1, 1), stretch=((1, 1), (1, 1)), translate=0.0, brightness=0.0,
                         contrast=(1, 1), saturation=(1, 1))
    batch, out = aug([img], [boxes])
    val = NanoDetPreprocessor((96, 96), keep_ratio=False)([img]).images
    assert torch.equal(batch, val)
    assert torch.allclose(out[0], boxes * torch.tensor([96 / 128, 1.0, 96 / 128, 1.0]))


def test_augmented_boxes_follow_the_image():
    torch.manual_seed(3)
    img, boxes, _ = scene(1)
    aug = NanoDetAugment((96, 96), brightness=0.0, contrast=(1, 1), saturation=(1, 1))
    for _ in range(5):
        batch, out = aug([img], [boxes])
        bgr = batch[0] * torch.tensor(aug.std).view(3, 1, 1) + torch.tensor(aug.mean).view(3, 1, 1)
        red = (bgr[2] > 150) & (bgr[1] < 100)  # the class-0 rectangle (BGR: red is channel 2)
        x1, y1, x2, y2 = out[0][0].tolist()
        if (x2 - x1) < 4 or (y2 - y1) < 4:
            continue  # moved out of the input
        ys, xs = red.nonzero(as_tuple=True)
        assert abs(xs.min().item() - x1) <= 2 and abs(xs.max().item() + 1 - x2) <= 2
        assert abs(ys.min().item() - y1) <= 2 and abs(ys.max().item() + 1 - y2) <= 2


def _opencv_saturation(b: float, g: float, r: float, alpha: float) -> list[float]:
    """OpenCV's float BGR2HSV, S scaled, HSV2BGR, written out from its formulas (cv2 is not installed here)."""
    eps = 1.1920928955078125e-07
    v, vmin = max(b, g, r), min(b, g, r)
    diff = v - vmin
    s = diff / (abs(v) + eps)
    d = 60.0 / (diff + eps)
    h = (g - b) * d if v == r else (b - r) * d + 120.0 if v == g else (r - g) * d + 240.0
    h = h + 360.0 if h < 0 else h
    s *= alpha
    if s == 0:
        return [v, v, v]
    h = h / 60.0
    while h >= 6:
        h -= 6
    sector = int(h)
    f = h - sector
    tab = [v, v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))]
    sectors = [[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]]  # b, g, r per sector
    return [tab[k] for k in sectors[sector]]


def test_saturation_is_opencvs_hsv_round_trip():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(60, 3, generator=g, dtype=torch.float64) * 0.8 - 0.25  # dark, brightness-shifted: some V < 0
    assert (img.amax(1) < 0).any()
    for alpha in (0.5, 0.8, 1.0, 1.2):
        ours = saturate(img, alpha)
        for px, o in zip(img.tolist(), ours.tolist()):
            assert o == pytest.approx(_opencv_saturation(*px, alpha), abs=1e-5)
    positive = torch.rand(20, 3, generator=g, dtype=torch.float64) + 0.01  # and, for V > 0, the HSV colour model
    for px, o in zip(positive.tolist(), saturate(positive, 0.7).tolist()):
        h, s, v = colorsys.rgb_to_hsv(*px)
        assert o == pytest.approx(list(colorsys.hsv_to_rgb(h, s * 0.7, v)), abs=1e-5)


# ------------------------------------------------------------------ the model in training
def test_forward_gives_the_six_official_terms_and_refuses_what_it_cannot_train():
    torch.manual_seed(0)
    model = NanoDet(SMALL, training=True).train()
    img, boxes, labels = scene(2)
    losses = model([img, img], [{"boxes": boxes, "labels": labels}, {"boxes": boxes[:0], "labels": labels[:0]}])
    assert sorted(losses) == sorted(f"loss_{a}{t}" for a in ("", "aux_") for t in ("qfl", "bbox", "dfl"))
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(GfldetError, match="degenerate"):
        model([img], [{"boxes": torch.tensor([[5.0, 5.0, 5.0, 9.0]]), "labels": torch.tensor([0])}])
    with pytest.raises(GfldetError, match="outside"):
        model([img], [{"boxes": boxes, "labels": torch.tensor([0, 3])}])
    with pytest.raises(GfldetError, match="training=True"):
        NanoDet(SMALL).train()([img], [{"boxes": boxes, "labels": labels}])
    with pytest.raises(GfldetError, match="NanoDet-Plus"):
        build_nanodet("nanodet-m", training=True)


def test_auxiliary_branch_detaches_at_the_detach_epoch():
    """Before ``detach_epoch`` the auxiliary loss trains the backbone and neck too; from it on, only itself."""
    torch.manual_seed(0)
    model = NanoDet(SMALL, training=True).train()
    img, boxes, labels = scene(3)
    batch, out = model.augment([img], [boxes])
    for epoch, reaches in ((0, True), (SMALL.detach_epoch, False)):
        model.set_epoch(epoch)
        model.zero_grad()
        losses = model.losses(batch, out, [labels])
        sum(v for k, v in losses.items() if k.startswith("loss_aux_")).backward()
        backbone_grad = [p.grad for p in model.network.backbone.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in backbone_grad) == reaches
        assert model.network.aux_head.gfl_cls.weight.grad.abs().sum() > 0


def test_a_small_run_learns_to_detect():
    """AdamW on one fixed batch (no augmentation): the losses stay finite, fall, and the model then finds every
    object: in eval mode, each object's highest-scoring detection of its class overlaps it with IoU > 0.5."""
    torch.manual_seed(0)
    model = NanoDet(SMALL, training=True).train()
    scenes = [scene(s) for s in range(4)]
    aug = NanoDetAugment((96, 96), scale=(1, 1), stretch=((1, 1), (1, 1)), translate=0.0, brightness=0.0,
                         contrast=(1, 1), saturation=(1, 1))
    batch, boxes = aug([s[0] for s in scenes], [s[1] for s in scenes])
    labels = [s[2] for s in scenes]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    totals = []
    for _ in range(60):
        total = sum(model.losses(batch, boxes, labels).values())
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert sum(totals[-5:]) / 5 < 0.5 * max(totals), totals
    model.eval()
    with torch.no_grad():
        dets = model.decoder(model.network(batch), tuple(batch.shape[-2:]), [torch.eye(3, dtype=torch.float64)] * 4,
                             [(96, 96)] * 4)
    for d, b, lab in zip(dets, boxes, labels):
        for gt, c in zip(b, lab):
            mine = d["boxes"][d["labels"] == c]
            assert mine.shape[0] > 0 and box_iou(mine[:1], gt[None])[0, 0] > 0.5, (d, b)
