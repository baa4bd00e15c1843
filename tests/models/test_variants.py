"""Representation variants (gfldet.models.variants, gfldet.ops.assigners): training, decoding, assigners, losses."""
from __future__ import annotations

import math

import pytest
import torch

import gfldet
from gfldet import ModelConfig
from gfldet.config import Config
from gfldet.models.head import GFLHead
from gfldet.models.variants import (VariantHead, _distances, atss_config, centerness_target, dfl_targets, gaussian_nll,
                                    multi_anchors, sigmoid_focal_loss, variant_outputs, variant_targets)
from gfldet.ops.assigners import fcos_assign, fcos_regress_ranges, retina_assign
from gfldet.ops.boxes import box_centers, box_giou_aligned, distance_to_box
from gfldet.ops.losses import _dfl
from gfldet.ops.priors import grid_anchors

RETINA = dict(assigner="retina", octave_base_scale=4.0, scales_per_octave=3, anchor_ratios=(0.5, 1.0, 2.0))


def small(**kw):
    kw.setdefault("num_classes", 3)
    kw.setdefault("fpn_channels", 32)
    kw.setdefault("head_channels", 32)
    kw.setdefault("min_size", None)
    kw.setdefault("max_size", None)
    torch.manual_seed(0)
    return gfldet.gfl_resnet18_fpn(**kw)


def _batch():
    g = torch.Generator().manual_seed(1)
    imgs = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=g), torch.rand(3, 80, 96, generator=g)]
    targets = [{"boxes": torch.tensor([[10.0, 12, 70, 80], [40, 30, 60, 50]]), "labels": torch.tensor([0, 2])},
               {"boxes": torch.tensor([[5.0, 5, 90, 70]]), "labels": torch.tensor([1])}]
    return imgs, targets


VARIANTS = {
    "none": (dict(quality="none"), {"loss_cls", "loss_bbox", "loss_dfl"}),
    "centerness": (dict(quality="centerness"), {"loss_cls", "loss_bbox", "loss_dfl", "loss_quality"}),
    "iou": (dict(quality="iou"), {"loss_cls", "loss_bbox", "loss_dfl", "loss_quality"}),
    "dirac": (dict(box="dirac"), {"loss_qfl", "loss_bbox"}),
    "gaussian": (dict(box="gaussian"), {"loss_qfl", "loss_bbox", "loss_nll"}),
    "delta2": (dict(bin_width=2.0, reg_max=8), {"loss_qfl", "loss_bbox", "loss_dfl"}),
    "fcos": (dict(assigner="fcos"), {"loss_qfl", "loss_bbox", "loss_dfl"}),
    "fcos_base": (dict(assigner="fcos", quality="centerness", box="dirac"), {"loss_cls", "loss_bbox", "loss_quality"}),
    "retina": (RETINA, {"loss_qfl", "loss_bbox", "loss_dfl"}),
    "retina_base": (dict(RETINA, quality="none", box="dirac"), {"loss_cls", "loss_bbox"}),
    "atss": (dict(quality="centerness", box="dirac"), {"loss_cls", "loss_bbox", "loss_quality"}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_trains_and_decodes(name):
    kw, keys = VARIANTS[name]
    m = small(**kw)
    assert m.config.is_variant and isinstance(m.head, VariantHead)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    imgs, targets = _batch()
    m.train()
    for _ in range(2):
        losses = m(imgs, targets)
        assert set(losses) == keys
        assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values()), losses
        opt.zero_grad()
        sum(losses.values()).backward()
        grads = [p.grad for p in m.head.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        opt.step()
    # no ground truth at all: finite zeros for the box terms
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = m(imgs, empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_bbox"].detach()) == 0.0
    m.eval()
    m.config.score_thr = 0.0
    with torch.no_grad():
        dets = m(imgs)
    assert len(dets) == 2
    for d, img in zip(dets, imgs):
        n = d["boxes"].shape[0]
        assert 0 < n <= m.config.max_per_img and d["scores"].shape == (n,) and d["labels"].shape == (n,)
        assert (d["boxes"][:, 2] <= img.shape[2]).all() and (d["boxes"][:, 3] <= img.shape[1]).all()
        assert ((d["labels"] >= 0) & (d["labels"] < 3)).all()


def test_head_channels():
    m = small(**RETINA, reg_max=7)
    assert m.config.num_anchors == 9
    assert m.head.gfl_cls.out_channels == 9 * 3 and m.head.gfl_reg.out_channels == 9 * 4 * 8 and m.head.gfl_quality is None
    m = small(quality="iou", box="dirac")
    assert m.head.gfl_cls.out_channels == 3 and m.head.gfl_reg.out_channels == 4 and m.head.gfl_quality.out_channels == 1
    m = small(box="gaussian")
    assert m.head.gfl_reg.out_channels == 8
    torch.testing.assert_close(m.head.gfl_cls.bias, torch.full((3,), -math.log(99.0)))
    assert type(small().head) is GFLHead and not small().config.is_variant


def _expected_scores_and_boxes(m, cls_logits, reg_logits):
    """Per prior: sigmoid(cls) * sigmoid(quality) (A, C) and the decoded box (A, 4), image 0, from raw outputs."""
    cfg = m.config
    cls, box, quality = variant_outputs(cfg, cls_logits, reg_logits)
    sizes = [tuple(c.shape[-2:]) for c in cls_logits]
    anchors = grid_anchors(sizes, cfg.strides)
    strides = torch.cat([torch.full((a.shape[0], 1), float(s)) for a, s in zip(anchors, cfg.strides)])
    anchors = torch.cat(anchors)
    scores = cls[0].sigmoid() * quality[0].sigmoid()[:, None]
    boxes = distance_to_box(box_centers(anchors), _distances(cfg, box[0], m.integral.project) * strides)
    return cls[0].sigmoid(), scores, boxes


@pytest.mark.parametrize("quality", ["centerness", "iou"])
def test_decode_score_is_class_times_quality(quality):
    m = small(quality=quality, box="dirac").eval()
    with torch.no_grad():
        m.head.gfl_cls.bias.fill_(0.0)  # class scores around 0.5
        m.head.gfl_quality.bias.fill_(-3.0)  # quality around 0.047: products below score_thr = 0.05
        img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        batch, meta = m.preprocess([img])
        cls_logits, reg_logits = m.forward_features(batch)
        dets = m.decode(cls_logits, reg_logits, meta.image_sizes)[0]
    cls_p, expected, boxes = _expected_scores_and_boxes(m, cls_logits, reg_logits)
    assert dets["boxes"].shape[0] > 0
    # mmdetection's ATSS: the threshold applies to the class score, the product is the NMS and output score
    assert (dets["scores"] < m.config.score_thr).all()
    assert (dets["scores"] < cls_p.max() * 0.2).all()
    h, w = meta.image_sizes[0]
    clipped = torch.min(boxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=boxes.dtype))
    for b, s, lab in zip(dets["boxes"], dets["scores"], dets["labels"]):
        hit = ((clipped - b).abs() < 1e-4).all(dim=1)
        assert hit.any()
        assert torch.isclose(expected[hit, lab], s, rtol=1e-6, atol=1e-7).any()


def test_decode_score_plain_classifier():
    m = small(quality="none", box="gaussian").eval()
    with torch.no_grad():
        m.head.gfl_cls.bias.fill_(-1.0)
        batch, meta = m.preprocess([torch.full((3, 64, 64), 128, dtype=torch.uint8)])
        cls_logits, reg_logits = m.forward_features(batch)
        d = m.decode(cls_logits, reg_logits, meta.image_sizes)[0]
        cls, _, _ = variant_outputs(m.config, cls_logits, reg_logits)
    assert d["scores"].shape[0] > 0 and "edge_std" in d
    all_scores = cls[0].sigmoid().reshape(-1)
    for s in d["scores"]:
        assert torch.isclose(all_scores, s, rtol=0, atol=1e-7).any()


def test_atss_baseline_config_and_centerness_weighted_giou():
    cfg = atss_config(num_classes=3)
    assert (cfg.quality, cfg.box, cfg.assigner, cfg.num_anchors) == ("centerness", "dirac", "atss", 1)
    assert (cfg.focal_alpha, cfg.focal_gamma, cfg.loss_bbox_weight, cfg.loss_quality_weight) == (0.25, 2.0, 2.0, 1.0)
    m = small(quality="centerness", box="dirac").train()
    imgs, targets = _batch()
    losses = m(imgs, targets)
    # recompute loss_bbox: sum over positives of centerness * (1 - GIoU), over the sum of centerness targets
    batch, meta = m.preprocess(imgs)
    with torch.no_grad():
        cls_logits, reg_logits = m.forward_features(batch)
        tg, anchors, strides = variant_targets(m, cls_logits, [t["boxes"] for t in targets], [t["labels"] for t in targets],
                                               meta.pad_shapes)
        _, box, _ = variant_outputs(m.config, cls_logits, reg_logits)
        n, a = tg.positive.nonzero(as_tuple=True)
        s = strides[a][:, None]
        centers = box_centers(anchors[a]) / s
        pred = distance_to_box(centers, box[n, a].exp())
        gt = tg.boxes[n, a] / s
        ctr = centerness_target(centers, gt)
        expected = 2.0 * (ctr * (1 - box_giou_aligned(pred, gt))).sum() / ctr.sum().clamp(min=1)
        again = m(imgs, targets)
    assert n.numel() > 0
    torch.testing.assert_close(again["loss_bbox"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again["loss_bbox"], losses["loss_bbox"].detach())


def test_centerness_target():
    pts = torch.tensor([[50.0, 50.0], [25.0, 50.0], [200.0, 50.0]])
    boxes = torch.tensor([[0.0, 0, 100, 100]]).expand(3, 4)
    torch.testing.assert_close(centerness_target(pts, boxes), torch.tensor([1.0, math.sqrt(25 / 75), 0.0]))


# ------------------------------------------------------------------------------------------------ assigners
def _square(points, side):
    p = torch.tensor(points, dtype=torch.float32)
    return torch.cat([p - side / 2, p + side / 2], dim=1)


def test_fcos_centre_sampling_and_ranges():
    # one level of stride 8: locations on a grid 0..72
    xs = torch.arange(0, 80, 8.0)
    pts = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), dim=-1).reshape(-1, 2)
    anchors = _square(pts.tolist(), 64.0)
    strides = torch.full((pts.shape[0],), 8.0)
    ranges = torch.tensor([[-1.0, 64.0]]).expand(pts.shape[0], 2)
    gt = torch.tensor([[0.0, 0, 64, 64]])  # centre (32, 32): centre region 32 +- 12 -> locations 24, 32, 40
    res = fcos_assign(anchors, strides, ranges, [gt])
    pos = pts[res.positive[0]]
    expected = torch.tensor([[x, y] for y in (24.0, 32, 40) for x in (24.0, 32, 40)])
    torch.testing.assert_close(pos, expected)
    assert res.num_candidates.tolist() == [9]
    # no centre sampling: every location strictly inside the box (l, t, r, b > 0): 8..56 -> 7 x 7
    assert int(fcos_assign(anchors, strides, ranges, [gt], center_radius=0).positive.sum()) == 49
    # the largest distance of every location in the box is >= 32 (32 only at the centre): range (0, 31] takes none,
    # (0, 32] the centre only
    assert not fcos_assign(anchors, strides, torch.tensor([[0.0, 31.0]]).expand(pts.shape[0], 2), [gt]).positive.any()
    only = fcos_assign(anchors, strides, torch.tensor([[0.0, 32.0]]).expand(pts.shape[0], 2), [gt]).positive[0]
    assert pts[only].tolist() == [[32.0, 32.0]]
    # two GTs over (32, 32): the smaller one wins; an invalid location is never positive and is ignored
    small_gt = torch.tensor([[28.0, 28, 44, 44]])  # centre (36, 36), region clipped to the box -> 32, 40
    valid = torch.ones(1, pts.shape[0], dtype=torch.bool)
    k = int(((pts[:, 0] == 24) & (pts[:, 1] == 24)).nonzero())
    valid[0, k] = False
    res = fcos_assign(anchors, strides, ranges, [torch.cat([gt, small_gt])], valid)
    idx = res.gt_index[0]
    for x, y, g in [(32, 32, 1), (40, 40, 1), (32, 40, 1), (32, 24, 0), (40, 24, 0), (24, 24, -1), (16, 16, -1)]:
        j = int(((pts[:, 0] == x) & (pts[:, 1] == y)).nonzero())
        assert int(idx[j]) == g, (x, y)
    assert bool(res.ignored[0, k]) and not res.ignored[0, ~valid[0]].logical_not().any()


def test_fcos_regress_ranges():
    assert fcos_regress_ranges((64, 128, 256, 512), 5) == [(-1, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)]
    with pytest.raises(ValueError, match="4 values"):
        fcos_regress_ranges((64, 128), 5)


def test_retina_max_iou_assignment():
    anchors = torch.tensor([
        [0, 0, 10, 10],  # 0: IoU 1 with G0 -> G0
        [0, 0, 10, 20],  # 1: IoU 0.5 -> positive (>= 0.5)
        [5, 0, 15, 10],  # 2: IoU 1/3 -> negative
        [0, 0, 10, 22],  # 3: IoU 0.4545 -> ignored
        [3, 0, 13, 10],  # 4: IoU 0.538 -> G0
        [100, 100, 110, 110],  # 5: IoU 0 -> negative
        [200, 200, 210, 210],  # 6: G2's exact box (IoU 1) and G1's best (1/9): G2 assigned last wins
        [220, 220, 230, 230],  # 7: G1's best too (tie, 1/9 < 0.4): low-quality match -> G1
        [50, 50, 60, 60],  # 8: invalid -> ignored
    ], dtype=torch.float32)
    gts = torch.tensor([[0, 0, 10, 10], [200, 200, 230, 230], [200, 200, 210, 210]], dtype=torch.float32)
    valid = torch.ones(1, 9, dtype=torch.bool)
    valid[0, 8] = False
    res = retina_assign(anchors, [gts], valid)
    assert res.gt_index[0].tolist() == [0, 0, -1, -1, 0, -1, 2, 1, -1]
    assert res.ignored[0].tolist() == [False, False, False, True, False, False, False, False, True]
    # a second image without GTs: all valid anchors negative
    res = retina_assign(anchors, [gts, torch.zeros(0, 4)], torch.ones(2, 9, dtype=torch.bool))
    assert (res.gt_index[1] == -1).all() and not res.ignored[1].any()
    # min_pos_iou above G1's best IoU: no low-quality match for it (anchor 7 negative; 6 keeps G2 by IoU 1)
    res = retina_assign(anchors, [gts], valid, min_pos_iou=0.2)
    assert res.gt_index[0].tolist() == [0, 0, -1, -1, 0, -1, 2, -1, -1]


def test_retina_assign_chunks_agree():
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat(multi_anchors([(8, 8), (4, 4)], (8, 16), 4.0, 3, (0.5, 1.0, 2.0)))
    xy = torch.rand(2, 5, 2, generator=g) * 60
    wh = torch.rand(2, 5, 2, generator=g) * 40 + 4
    gts = [torch.cat([xy[i], xy[i] + wh[i]], dim=1) for i in range(2)]
    a = retina_assign(anchors, gts)
    b = retina_assign(anchors, gts, chunk_elements=37)
    assert torch.equal(a.gt_index, b.gt_index) and torch.equal(a.ignored, b.ignored)
    assert a.positive.sum(dim=1).min() > 0


def test_multi_anchors():
    sizes, strides = [(3, 4), (2, 2)], (8, 16)
    one = multi_anchors(sizes, strides, 8.0, 1, (1.0,))
    for x, y in zip(one, grid_anchors(sizes, strides, 8.0)):
        torch.testing.assert_close(x, y)
    nine = multi_anchors(sizes, strides, 4.0, 3, (0.5, 1.0, 2.0))
    assert [t.shape[0] for t in nine] == [3 * 4 * 9, 2 * 2 * 9]
    loc0 = nine[0][:9]  # the 9 anchors of location (0, 0), ratio-major then scale
    wh = loc0[:, 2:] - loc0[:, :2]
    torch.testing.assert_close(box_centers(loc0), torch.zeros(9, 2))
    torch.testing.assert_close((wh[:, 0] * wh[:, 1]).sqrt()[3:6], 32.0 * 2 ** (torch.arange(3.0) / 3))  # ratio 1
    torch.testing.assert_close(wh[:3, 1] / wh[:3, 0], torch.full((3,), 0.5))  # ratio h/w 0.5
    torch.testing.assert_close(box_centers(nine[0][9:18]), torch.tensor([[8.0, 0.0]]).expand(9, 2))


# ------------------------------------------------------------------------------------------------ losses
def test_gaussian_nll_closed_form():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(20, 4, generator=g, dtype=torch.float64, requires_grad=True)
    log_var = torch.randn(20, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(20, 4, generator=g, dtype=torch.float64) * 3
    nll = gaussian_nll(mean, log_var, y, reduction="none")
    ref = -torch.distributions.Normal(mean, torch.exp(0.5 * log_var)).log_prob(y)
    torch.testing.assert_close(nll, ref)
    # minimum: mean = y, log_var = log((y - mean)^2) for the variance
    m0 = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([math.log(0.25)], dtype=torch.float64, requires_grad=True)
    gaussian_nll(m0, v0, torch.tensor([2.0], dtype=torch.float64), reduction="sum").backward()
    torch.testing.assert_close(v0.grad, torch.zeros(1, dtype=torch.float64))  # (y - mean)^2 = 0.25 = variance
    assert float(m0.grad) < 0  # pulls the mean up towards y
    assert torch.autograd.gradcheck(lambda a, b: gaussian_nll(a, b, y, reduction="sum"), (mean, log_var))


def test_sigmoid_focal_loss():
    x = torch.tensor([[2.0, -1.0], [0.3, 0.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    p = x.sigmoid()
    expected = torch.stack([
        torch.stack([-0.25 * (1 - p[0, 0]) ** 2 * torch.log(p[0, 0]), -0.75 * p[0, 1] ** 2 * torch.log(1 - p[0, 1])]),
        -0.75 * p[1] ** 2 * torch.log(1 - p[1]),
    ])
    torch.testing.assert_close(sigmoid_focal_loss(x, t, reduction="none"), expected)
    assert float(sigmoid_focal_loss(x, t, gamma=0.0, alpha=0.5, reduction="sum")) == pytest.approx(
        0.5 * float(torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="sum")), rel=1e-6)


@pytest.mark.parametrize("delta, y, left, w_left", [(0.5, 3.3, 6, 0.4), (2.0, 7.0, 3, 0.5), (1.0, 2.25, 2, 0.75)])
def test_bin_width_round_trip(delta, y, left, w_left):
    reg_max = 16
    t = dfl_targets(torch.tensor([y]), delta, reg_max)
    assert float(t) == pytest.approx(y / delta)
    # the distribution DFL is minimised by: (w_left, 1 - w_left) on bins (left, left + 1)
    probs = torch.full((reg_max + 1,), 1e-12)
    probs[left], probs[left + 1] = w_left, 1 - w_left
    logits = probs.log().double()
    loss = _dfl(logits[None], t.double())
    best = -(w_left * math.log(w_left) + (1 - w_left) * math.log(1 - w_left))
    assert float(loss) == pytest.approx(best, abs=1e-6)
    others = [_dfl(torch.roll(logits, k)[None], t.double()) for k in (-1, 1)]
    assert all(float(o) > float(loss) for o in others)
    # the integral over bins 0, delta, ..., n delta gives y back (in strides)
    cfg = ModelConfig(bin_width=delta, reg_max=reg_max)
    d = _distances(cfg, logits.float().repeat(4)[None], torch.linspace(0, reg_max, reg_max + 1))
    torch.testing.assert_close(d, torch.full((1, 4), y), atol=1e-5, rtol=0)
    # the clamp keeps the right bin inside: y beyond n delta goes to n - 0.1
    assert float(dfl_targets(torch.tensor([1e3]), delta, reg_max)) == pytest.approx(reg_max - 0.1)


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("kw, match", [
    (dict(quality="centrness"), "quality='centrness'"),
    (dict(box="delta"), "box='delta'"),
    (dict(assigner="paa"), "assigner='paa'"),
    (dict(bin_width=0.0), "bin_width=0.0"),
    (dict(assigner="fcos", anchor_ratios=(0.5, 1.0, 2.0)), "one anchor per location"),
    (dict(retina_pos_iou=0.3, retina_neg_iou=0.4), "retina_neg_iou"),
    (dict(assigner="fcos", fcos_range_bounds=(64.0,)), "fcos_range_bounds"),
])
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**kw)


def test_old_configs_and_run_config():
    d = ModelConfig(depth=18, num_classes=4).to_dict()
    for k in ("quality", "box", "bin_width", "assigner", "anchor_ratios", "scales_per_octave"):
        d.pop(k)
    old = ModelConfig.from_dict(d)  # a checkpoint written before the variants: GFL
    assert not old.is_variant and (old.quality, old.box, old.bin_width, old.assigner, old.num_anchors) == ("qfl", "distribution", 1.0, "atss", 1)
    cfg = Config()
    cfg.model.quality, cfg.model.box, cfg.model.assigner = "none", "dirac", "retina"
    cfg.model.octave_base_scale, cfg.model.scales_per_octave, cfg.model.anchor_ratios = 4.0, 3, [0.5, 1.0, 2.0]
    mc = cfg.model_config(num_classes=2)
    assert mc.is_variant and mc.num_anchors == 9 and mc.anchor_ratios == (0.5, 1.0, 2.0)
    assert "anchor_ratios" in cfg.to_yaml()
    assert ModelConfig.from_dict(mc.to_dict()) == mc


def test_atss_yaml_config():
    from pathlib import Path

    from gfldet.config import ConfigError, load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "atss_r50_fpn_1x_coco.yaml")
    mc = cfg.model_config(num_classes=80)
    ref = atss_config(num_classes=80, min_size=800, max_size=1333)
    keys = ("quality", "box", "assigner", "num_anchors", "focal_alpha", "focal_gamma", "loss_bbox_weight", "reg_max")
    assert [getattr(mc, k) for k in keys] == [getattr(ref, k) for k in keys]
    with pytest.raises(ConfigError, match="model.box: 'gauss'"):
        load_config(None, ["model.box=gauss"])
