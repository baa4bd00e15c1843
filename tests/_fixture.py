"""Locating mmdetection's parity fixture (../shared/fixtures beside the repository)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FIXTURE = Path(
    os.environ.get("GFLDET_FIXTURE", Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "mmdet_gfl_r18_c64_k5.pt")
)


def load_fixture() -> dict:
    if not FIXTURE.is_file():
        if os.environ.get("CI") or os.environ.get("GFLDET_REQUIRE_FIXTURES"):  # CI must not skip parity
            raise FileNotFoundError(f"parity fixture required but missing: {FIXTURE}")
        pytest.skip(f"parity fixture not found at {FIXTURE} (set GFLDET_FIXTURE)")
    return torch.load(FIXTURE, weights_only=False)  # trusted local test file
