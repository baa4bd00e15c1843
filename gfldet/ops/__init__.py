"""Detector operations: box geometry, the GFL losses, the integral layer, priors and ATSS.

Names are imported on first use (PEP 562): ``gfldet.ops.resize`` (the keep-ratio size rule, plain Python) loads
without torch, which the torch-free runtime (:mod:`gfldet.deploy`) relies on.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the submodule that defines it
_EXPORTS = {
    "AssignResult": "assign_result", "atss_assign": "atss",
    "box_area": "boxes", "box_centers": "boxes", "box_giou_aligned": "boxes", "box_iof": "boxes", "box_iou": "boxes",
    "box_iou_aligned": "boxes", "box_to_distance": "boxes", "clip_boxes": "boxes", "distance_to_box": "boxes",
    "Integral": "integral", "distribution_expectation": "integral", "edge_distributions": "integral",
    "distribution_focal_loss": "losses", "generalized_focal_loss": "losses", "giou_loss": "losses",
    "quality_focal_loss": "losses", "quality_focal_loss_sparse": "losses",
    "grid_anchors": "priors", "valid_anchor_flags": "priors",
}

__all__ = [
    "AssignResult", "atss_assign", "box_area", "box_centers", "box_giou_aligned", "box_iof", "box_iou",
    "box_iou_aligned", "box_to_distance", "clip_boxes", "distance_to_box", "Integral", "distribution_expectation",
    "edge_distributions", "distribution_focal_loss", "generalized_focal_loss", "giou_loss", "quality_focal_loss",
    "quality_focal_loss_sparse", "grid_anchors", "valid_anchor_flags",
]  # = _EXPORTS' names (tests/test_layers.py::test_public_face checks it)

if TYPE_CHECKING:  # for type checkers and IDEs: what __getattr__ resolves at run time
    from .assign_result import AssignResult
    from .atss import atss_assign
    from .boxes import (box_area, box_centers, box_giou_aligned, box_iof, box_iou, box_iou_aligned, box_to_distance,
                        clip_boxes, distance_to_box)
    from .integral import Integral, distribution_expectation, edge_distributions
    from .losses import (distribution_focal_loss, generalized_focal_loss, giou_loss, quality_focal_loss,
                         quality_focal_loss_sparse)
    from .priors import grid_anchors, valid_anchor_flags


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
