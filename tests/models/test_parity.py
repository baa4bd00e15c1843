"""gfldet reproduces mmdetection 3.3.0's GFL on fixed weights (../shared/fixtures), within the fixture's
tolerances: raw outputs and detections 1e-4 absolute, target labels identical, target boxes 1e-5,
losses 1e-5 relative. The checks themselves: tests/models/parity_checks.py (class ParitySuite)."""
from __future__ import annotations

import pytest

from gfldet import from_mmdet
from tests._fixture import load_fixture
from tests.models import parity_checks as checks


@pytest.fixture(scope="module")
def fx():
    return load_fixture()


@pytest.fixture(scope="module")
def model(fx):
    # The fixture's images are already at network size: no resizing.
    return from_mmdet(fx["state_dict"], min_size=None, max_size=None)


def test_config_inferred(model, fx):
    c = model.config
    assert (c.depth, c.fpn_channels, c.head_channels, c.num_classes, c.reg_max) == (18, 64, 64, 5, 16)
    assert c.stacked_convs == 4 and tuple(c.strides) == (8, 16, 32, 64, 128)


class TestGFLParity(checks.ParitySuite):
    """The shared checks (tests/models/parity_checks.py) on the GFL R-18 fixture."""
