"""The test settings' rules (gfldet.settings): one set, used by ModelConfig (GFL.configure) and by the torch-free
runtime (Detector.configure, tests/test_deploy.py)."""
from __future__ import annotations

import math

import pytest

from gfldet.errors import GfldetError
from gfldet.models.config import ModelConfig
from gfldet.settings import TEST_SETTINGS, invalid_test_settings


@pytest.mark.parametrize("key,value", [
    ("score_thr", -0.1), ("score_thr", 1.5), ("score_thr", math.nan), ("score_thr", "0.3"), ("score_thr", True),
    ("nms_pre", 0), ("nms_pre", 1.5), ("nms_pre", math.inf), ("nms_pre", None),
    ("nms_iou", 1.01), ("max_per_img", 0), ("max_per_img", 2.5),
])
def test_a_bad_value_is_named_with_its_rule_by_both_users(key, value):
    assert [(k, why) for k, _, why in invalid_test_settings({key: value})] == [
        (key, "must be in [0, 1]" if key in ("score_thr", "nms_iou") else "must be an integer >= 1")]
    with pytest.raises(GfldetError, match=f"{key}="):
        ModelConfig(**{key: value})


def test_good_values_pass_and_absent_keys_are_not_checked():
    good = {"score_thr": 0.0, "nms_pre": 1000, "nms_iou": 1.0, "max_per_img": 100.0}
    assert set(good) == set(TEST_SETTINGS) and invalid_test_settings(good) == []
    assert invalid_test_settings({}) == [] and invalid_test_settings({"min_size": -3}) == []
