"""COCO's 80 category names and ids, defined in :mod:`gfldet.models.coco_classes` (the published COCO weights
the models layer loads are labelled with them); importable here too, beside the datasets."""
from ..models.coco_classes import COCO_CATEGORY_IDS, COCO_NAMES, coco_category_ids

__all__ = ["COCO_NAMES", "COCO_CATEGORY_IDS", "coco_category_ids"]
