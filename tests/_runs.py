"""Helpers of the tests that run ``gfldet train``."""
from __future__ import annotations

import torch

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


def assert_same_run(full, part, iterations: int) -> tuple[dict, dict]:
    """The ``last.pt`` of a run never stopped (folder ``full``) and of one stopped and resumed (``part``) hold the same
    iteration, weights and EMA weights, bit for bit; returns both checkpoints for further checks."""
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(part / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == iterations
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for k, v in a["ema"]["state_dict"].items():
        assert torch.equal(v, b["ema"]["state_dict"][k]), k
    return a, b
