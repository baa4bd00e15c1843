"""gfldet reproduces mmdetection 3.3.0's GFL with DCNv2 in c3-c5 (mmcv's ModulatedDeformConv2dPack) on fixed weights
(../shared/fixtures/mmdet_gfl_dcn_r50w16_k4.pt), within the fixture's tolerances (tests/models/parity_checks.py)."""
from __future__ import annotations

import pytest
import torch

from gfldet import from_mmdet
from gfldet.models.dcn import ModulatedDeformConv2d
from gfldet.models.mmdet import to_mmdet_state_dict
from tests._fixture import GFL_DCN_R50, load_fixture
from tests.models import parity_checks as checks


@pytest.fixture(scope="module")
def fx():
    return load_fixture(GFL_DCN_R50)


@pytest.fixture(scope="module")
def model(fx):
    return from_mmdet(fx["state_dict"], min_size=None, max_size=None)  # the fixture's images are at network size


def test_config_inferred(model, fx):
    c = model.config
    assert (c.depth, c.base_channels, c.groups, c.fpn_channels, c.head_channels, c.num_classes, c.reg_max) == (
        50, 16, 1, 64, 64, 4, 16)
    assert c.stage_with_dcn == (False, True, True, True) and c.deform_groups == 1
    dcn = [name for name, m in model.backbone.named_modules() if isinstance(m, ModulatedDeformConv2d)]
    assert dcn == [f"layer{i}.{b}.conv2" for i, n in ((2, 4), (3, 6), (4, 3)) for b in range(n)]


def test_state_dict_round_trip(model, fx):
    ours = to_mmdet_state_dict(model)
    assert set(ours) == set(fx["state_dict"])
    for k, v in fx["state_dict"].items():
        assert torch.equal(ours[k], v.float() if v.is_floating_point() else v), k


@torch.no_grad()
def test_fixture_exercises_offsets_and_mask(model, fx):
    """The fixture's offsets move the taps by pixels and its mask is far from a constant: parity is about
    deformation, not just the regular grid; without them the raw outputs differ far beyond the tolerance."""
    seen = {}
    hook = model.backbone.layer3[0].conv2.register_forward_hook(
        lambda m, args, out: seen.update(zip(("offset", "mask"), m.offset_and_mask(args[0]))))
    try:
        cls, _ = model.forward_features(fx["batch_input"])
    finally:
        hook.remove()
    assert seen["offset"].abs().max() > 1.0 and seen["mask"].std() > 0.05
    saved = {n: p.clone() for n, p in model.named_parameters() if ".conv_offset." in n}
    try:
        for n, p in model.named_parameters():
            if ".conv_offset." in n:
                p.zero_()
        plain, _ = model.forward_features(fx["batch_input"])
    finally:
        for n, p in model.named_parameters():
            if n in saved:
                p.copy_(saved[n])
    assert max((a - b).abs().max().item() for a, b in zip(plain, fx["cls_scores"])) > 1e-2
    assert max((a - b).abs().max().item() for a, b in zip(cls, fx["cls_scores"])) <= 1e-4


def test_preprocess_matches(model, fx):
    checks.check_preprocess(model, fx)


def test_raw_outputs(model, fx):
    checks.check_raw_outputs(model, fx)


def test_anchors_and_valid_flags(model, fx):
    checks.check_anchors_and_valid_flags(model, fx)


def test_atss_targets(model, fx):
    checks.check_atss_targets(model, fx)


def test_losses(model, fx):
    checks.check_losses(model, fx)


def test_detections_from_outputs(model, fx):
    checks.check_detections_from_outputs(model, fx)


def test_end_to_end_eval(model, fx):
    """Images in -> detections out. The raw outputs from images are within the fixture's 1e-4 of mmdetection's
    (test_raw_outputs; convolution rounding differs by CPU). A box edge is ``stride * sum_j P_j * j`` over the
    softmaxed logits ``z``, and ``d(edge) / d(z_j) = stride * P_j * (j - edge / stride)``, so a logit error of at most
    ``e`` moves the edge by at most ``stride * e * sum_j P_j |j - mean|`` (the distribution's mean absolute
    deviation, MAD). The tolerance is that bound with e = 1e-4, the coarsest stride and the largest MAD among the
    detections (plus the fixture's 1e-4 px for decoding itself)."""
    with torch.no_grad():
        dets = model(checks.rgb(fx))
    bins = torch.arange(model.config.reg_max + 1, dtype=torch.float32)
    mad = max((d * (bins - (d * bins).sum(-1, keepdim=True)).abs()).sum(-1).max().item()
              for d in (det["distributions"] for det in dets))
    checks.check_end_to_end_eval(model, fx, box_atol=max(model.config.strides) * 1e-4 * mad + 1e-4)


def test_end_to_end_train(model, fx):
    checks.check_end_to_end_train(model, fx)
