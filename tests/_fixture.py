"""Locating mmdetection's parity fixtures (../shared/fixtures beside the repository, or $GFLDET_FIXTURES)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(os.environ.get("GFLDET_FIXTURES", Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"))
GFL_R18 = "mmdet_gfl_r18_c64_k5.pt"  # GFL, ResNet-18, 64 channels, 5 classes
GFL_DCN_R50 = "mmdet_gfl_dcn_r50w16_k4.pt"  # GFL, narrow ResNet-50 with DCNv2 in c3-c5, 4 classes
GFLV2_R18 = "mmdet_gflv2_r18_c64_k6.pt"  # GFLV2 (DGQP), ResNet-18, 64 channels, 6 classes


def load_fixture(name: str = GFL_R18) -> dict:
    """The fixture file ``name``; skips where the fixtures are missing, except under CI (parity must not skip)."""
    path = FIXTURES / name
    if not path.is_file():
        if os.environ.get("CI") or os.environ.get("GFLDET_REQUIRE_FIXTURES"):
            raise FileNotFoundError(f"parity fixture required but missing: {path}")
        pytest.skip(f"parity fixture not found at {path} (set GFLDET_FIXTURES to its folder)")
    return torch.load(path, weights_only=False)  # trusted local test file
