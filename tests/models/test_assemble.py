"""The ablation assemblies (gfldet.models.assemble) and their parts: training, decoding, custom parts."""
from __future__ import annotations

import math

import pytest
import torch

import gfldet
from gfldet import ModelConfig
from gfldet.config import Config
from gfldet.models.assemble import QUALITY_PARTS, atss_config
from gfldet.models.box_representations import DistributionBox, GaussianBox, GaussianNLLBox
from gfldet.models.head import GFLHead
from gfldet.models.quality import CenternessBranch
from gfldet.ops.boxes import box_centers, box_giou_aligned, centerness_target, distance_to_box
from gfldet.ops.losses import dfl_targets, dfl_unchecked, gaussian_kl_loss, gaussian_nll

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
    "gaussian_nll": (dict(box="gaussian_nll"), {"loss_qfl", "loss_bbox", "loss_nll"}),
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
    assert m.head.box_channels == m.box.channels and m.head.quality_channels == m.quality.channels
    assert m.head.num_anchors == m.prior_generator.num_anchors == m.config.num_anchors
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
    m.configure(score_thr=0.0)
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
    assert type(small().head) is GFLHead and small().head.gfl_quality is None


def _expected_scores_and_boxes(m, cls_logits, reg_outputs):
    """Per prior: sigmoid(cls) * sigmoid(quality) (A, C) and the decoded box (A, 4), image 0, from raw outputs."""
    cls, box, quality = m.head.split(cls_logits, reg_outputs)
    priors = m.prior_generator([tuple(c.shape[-2:]) for c in cls_logits], cls[0].device)
    scores = cls[0].sigmoid() * quality[0].sigmoid()[:, None]
    boxes = distance_to_box(box_centers(priors.anchors), m.box.distances(box[0]) * priors.strides[:, None])
    return cls[0].sigmoid(), scores, boxes


@pytest.mark.parametrize("quality", ["centerness", "iou"])
def test_decode_score_is_class_times_quality(quality):
    m = small(quality=quality, box="dirac").eval()
    with torch.no_grad():
        m.head.gfl_cls.bias.fill_(0.0)  # class scores around 0.5
        m.head.gfl_quality.bias.fill_(-3.0)  # quality around 0.047: products below score_thr = 0.05
        img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        batch, meta = m.preprocess([img])
        cls_logits, reg_outputs = m.forward_features(batch)
        dets = m.decode(cls_logits, reg_outputs, meta.image_sizes)[0]
    cls_p, expected, boxes = _expected_scores_and_boxes(m, cls_logits, reg_outputs)
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
        cls_logits, reg_outputs = m.forward_features(batch)
        d = m.decode(cls_logits, reg_outputs, meta.image_sizes)[0]
        cls, _, _ = m.head.split(cls_logits, reg_outputs)
    assert d["scores"].shape[0] > 0 and "edge_std" in d
    all_scores = cls[0].sigmoid().reshape(-1)
    for s in d["scores"]:
        assert torch.isclose(all_scores, s, rtol=0, atol=1e-7).any()


@pytest.mark.parametrize("box, part, nll", [("gaussian", GaussianBox, gaussian_kl_loss),
                                           ("gaussian_nll", GaussianNLLBox, gaussian_nll)])
def test_gaussian_boxes_loss(box, part, nll):
    """box="gaussian" is trained with KL-Loss, "gaussian_nll" with the plain NLL: the weighted sum over the four
    edges of the positives, divided by 4, of the loss of the GT distances (strides) under N(exp(x[:4]), exp(x[4:]))."""
    m = small(box=box)
    assert type(m.box) is part and m.box.channels == 8
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 8, generator=g)
    centers = torch.rand(6, 2, generator=g) * 10
    gt = torch.cat([centers - torch.rand(6, 2, generator=g) * 6, centers + torch.rand(6, 2, generator=g) * 6], 1)
    w = torch.rand(6, generator=g)
    got = m.box.loss(logits, centers, gt, w)
    target = torch.cat([centers - gt[:, :2], gt[:, 2:] - centers], 1)
    expected = (nll(logits[:, :4].exp(), logits[:, 4:], target, reduction="none") * w[:, None]).sum() / 4
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (target - logits[:, :4].exp()).abs().max() > 1  # some errors in the linear part: the two losses differ


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
        cls_logits, reg_outputs = m.forward_features(batch)
        tg = m.compute_targets(cls_logits, [t["boxes"] for t in targets], [t["labels"] for t in targets],
                               meta.pad_shapes)
        priors = m.prior_generator([tuple(c.shape[-2:]) for c in cls_logits], batch.device)
        _, box, _ = m.head.split(cls_logits, reg_outputs)
        n, a = tg.positive.nonzero(as_tuple=True)
        s = priors.strides[a][:, None]
        centers = box_centers(priors.anchors[a]) / s
        pred = distance_to_box(centers, box[n, a].exp())
        gt = tg.boxes[n, a] / s
        ctr = centerness_target(centers, gt)
        expected = 2.0 * (ctr * (1 - box_giou_aligned(pred, gt))).sum() / ctr.sum().clamp(min=1)
        again = m(imgs, targets)
    assert n.numel() > 0
    torch.testing.assert_close(again["loss_bbox"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again["loss_bbox"], losses["loss_bbox"].detach())


# ------------------------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("delta, y, left, w_left", [(0.5, 3.3, 6, 0.4), (2.0, 7.0, 3, 0.5), (1.0, 2.25, 2, 0.75)])
def test_bin_width_round_trip(delta, y, left, w_left):
    reg_max = 16
    t = dfl_targets(torch.tensor([y]), delta, reg_max)
    assert float(t) == pytest.approx(y / delta)
    # the distribution DFL is minimised by: (w_left, 1 - w_left) on bins (left, left + 1)
    probs = torch.full((reg_max + 1,), 1e-12)
    probs[left], probs[left + 1] = w_left, 1 - w_left
    logits = probs.log().double()
    loss = dfl_unchecked(logits[None], t.double())
    best = -(w_left * math.log(w_left) + (1 - w_left) * math.log(1 - w_left))
    assert float(loss) == pytest.approx(best, abs=1e-6)
    others = [dfl_unchecked(torch.roll(logits, k)[None], t.double()) for k in (-1, 1)]
    assert all(float(o) > float(loss) for o in others)
    # the integral over bins 0, delta, ..., n delta gives y back (in strides)
    d = DistributionBox(reg_max, delta).distances(logits.float().repeat(4)[None])
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
    assert (old.quality, old.box, old.bin_width, old.assigner, old.num_anchors) == ("qfl", "distribution", 1.0, "atss", 1)
    cfg = Config()
    cfg.model.quality, cfg.model.box, cfg.model.assigner = "none", "dirac", "retina"
    cfg.model.octave_base_scale, cfg.model.scales_per_octave, cfg.model.anchor_ratios = 4.0, 3, [0.5, 1.0, 2.0]
    mc = cfg.model_config(num_classes=2)
    assert mc.num_anchors == 9 and mc.anchor_ratios == (0.5, 1.0, 2.0)
    assert "anchor_ratios" in cfg.to_yaml()
    assert ModelConfig.from_dict(mc.to_dict()) == mc


def test_renamed_fields_of_old_checkpoints_and_run_configs_are_read(tmp_path):
    """loss_qfl_weight became loss_cls_weight (it weighs a plain focal loss in the ablations' assemblies): a
    checkpoint's model_config and a run config written with the old name keep their value."""
    d = ModelConfig(depth=18, num_classes=4).to_dict()
    d.pop("loss_cls_weight")
    d["loss_qfl_weight"] = 0.7
    assert ModelConfig.from_dict(d).loss_cls_weight == 0.7
    from gfldet.config import load_config
    (tmp_path / "old.yaml").write_text("model:\n  loss_qfl_weight: 0.5\n")
    assert load_config(tmp_path / "old.yaml").model.loss_cls_weight == 0.5
    assert QUALITY_PARTS["none"](ModelConfig(loss_cls_weight=0.3)).loss_weight == 0.3


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


# ------------------------------------------------------------------------------------------------ custom parts
class SquaredCenterness(CenternessBranch):
    """A new quality estimator: the test score is ``sigmoid(cls) * sigmoid(centerness)^2``."""

    def rescore(self, scores, quality):
        return scores * quality.float().sigmoid().square()


def test_a_new_quality_estimator_is_a_part_handed_to_the_detector():
    cfg = ModelConfig(num_classes=3, depth=18, fpn_channels=32, head_channels=32, min_size=None, max_size=None,
                      box="dirac")
    torch.manual_seed(0)
    m = gfldet.GFL(cfg, quality=SquaredCenterness())
    assert m.quality is m.criterion.quality is m.postprocessor.quality and m.head.gfl_quality.out_channels == 1
    imgs, targets = _batch()
    assert set(m.train()(imgs, targets)) == {"loss_cls", "loss_bbox", "loss_quality"}
    m.eval()
    with torch.no_grad():
        m.head.gfl_cls.bias.fill_(0.0)
        m.head.gfl_quality.weight.zero_()
        m.head.gfl_quality.bias.fill_(-3.0)
        d = m(imgs)[0]
    q = torch.sigmoid(torch.tensor(-3.0))
    assert d["scores"].numel() > 0 and (d["scores"] <= q * q * (1 + 1e-6)).all()
    with pytest.raises(TypeError, match="unexpected keyword argument 'qualty'"):  # a misspelt part is no silent default
        gfldet.GFL(cfg, qualty=SquaredCenterness())


def test_every_named_part_is_registered_and_keeps_its_written_contract():
    """assemble's registries name exactly ModelConfig's choices, and every part built from them has the members its
    contract (gfldet.models.parts) lists; only GFL's parts say they can be exported."""
    from gfldet.models import assemble, parts
    from gfldet.models import config as model_config
    from gfldet.export import is_gfl_assembly

    assert set(assemble.BOX_PARTS) == set(model_config.BOXES)
    assert set(assemble.QUALITY_PARTS) == set(model_config.QUALITIES)
    assert set(assemble.ASSIGNER_PARTS) == set(model_config.ASSIGNERS)
    cfg = ModelConfig(num_classes=3)
    exportable_boxes = {name for name, make in assemble.BOX_PARTS.items()
                        if isinstance(make(cfg), parts.BoxRepresentationPart) and make(cfg).exportable}
    exportable_qualities = {name for name, make in assemble.QUALITY_PARTS.items()
                            if isinstance(make(cfg), parts.QualityEstimatorPart) and make(cfg).exportable}
    assert len([m for m in assemble.BOX_PARTS.values() if isinstance(m(cfg), parts.BoxRepresentationPart)]) == 4
    assert len([m for m in assemble.QUALITY_PARTS.values() if isinstance(m(cfg), parts.QualityEstimatorPart)]) == 5
    assert exportable_boxes == {"distribution"} and exportable_qualities == {"qfl", "dgqp"}
    assert not assemble.box_part(ModelConfig(bin_width=2.0, reg_max=8)).exportable  # the contract: unit bins
    assert all(isinstance(m(cfg), parts.AssignerPart) for m in assemble.ASSIGNER_PARTS.values())
    assert isinstance(assemble.prior_part(cfg), parts.PriorGeneratorPart)
    small = dict(num_classes=3, fpn_channels=32, head_channels=32, gn_groups=8)
    assert is_gfl_assembly(gfldet.gfl_resnet18_fpn(**small))
    assert not is_gfl_assembly(gfldet.GFL(atss_config(**small, depth=18)))
