"""The test settings of a detector (score threshold, candidates per level, NMS IoU, boxes per image) and their
rules, written once and importable without torch: :class:`~gfldet.models.config.ModelConfig` checks them for the
PyTorch model (changed by ``GFL.configure``), the torch-free runtime for an exported file (changed by
``Detector.configure``)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["TEST_SETTINGS", "invalid_test_settings"]

# What each does: score_thr, the lowest score kept; nms_pre, the best candidates kept per level before NMS; nms_iou,
# the IoU above which NMS drops the lower-scored box of a class; max_per_img, the boxes kept per image.
TEST_SETTINGS = ("score_thr", "nms_pre", "nms_iou", "max_per_img")


def invalid_test_settings(values: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """``(key, value, why)`` for each test setting in ``values`` that breaks its rule (keys not present are not
    checked); an empty list where all hold."""
    rules = {
        "score_thr": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
        "nms_pre": (lambda v: float(v).is_integer() and v >= 1, "must be an integer >= 1"),
        "nms_iou": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
        "max_per_img": (lambda v: float(v).is_integer() and v >= 1, "must be an integer >= 1"),
    }
    problems = []
    for key, (ok, why) in rules.items():
        if key not in values:
            continue
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            problems.append((key, value, why))
    return problems
