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


class TestGFLDCNParity(checks.ParitySuite):
    """The shared checks (tests/models/parity_checks.py) on the GFL-with-DCNv2 fixture."""
