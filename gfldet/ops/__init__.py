"""Detector operations: box geometry, the GFL losses, the integral layer, priors and ATSS."""
from .assign import AssignResult, atss_assign
from .boxes import (box_area, box_centers, box_giou_aligned, box_iof, box_iou, box_iou_aligned, box_to_distance,
                    clip_boxes, distance_to_box)
from .integral import Integral, distribution_expectation, edge_distributions
from .losses import (distribution_focal_loss, generalized_focal_loss, giou_loss, quality_focal_loss,
                     quality_focal_loss_sparse)
from .priors import grid_anchors, valid_anchor_flags

__all__ = [
    "AssignResult", "atss_assign", "box_area", "box_centers", "box_giou_aligned", "box_iof", "box_iou",
    "box_iou_aligned", "box_to_distance", "clip_boxes", "distance_to_box", "Integral", "distribution_expectation",
    "edge_distributions", "distribution_focal_loss", "generalized_focal_loss", "giou_loss", "quality_focal_loss",
    "quality_focal_loss_sparse", "grid_anchors", "valid_anchor_flags",
]
