"""Helpers of the tests that run ``gfldet train``."""
from __future__ import annotations

from gfldet.cli import main


def data_sets(data, out) -> list[str]:
    """The ``--set`` values that point a run at the ``data`` fixture's files (tests/engine/conftest.py) and at
    ``out`` (no loader workers, a metric line per iteration)."""
    tr, tri, va, vai = data
    return [f"data.train.ann={tr}", f"data.train.images={tri}", f"data.val.ann={va}", f"data.val.images={vai}",
            "data.num_workers=0", "train.log_interval=1", f"out_dir={out}"]


def train_cli(sets: list[str]) -> int:
    """``gfldet train --set A --set B ... --no-progress``; returns the exit code."""
    return main(["train", *(a for s in sets for a in ("--set", s)), "--no-progress"])
