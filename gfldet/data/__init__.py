"""Data: COCO-format datasets with load-time checks, a deterministic synthetic detection dataset (with sharp and
ambiguous edges) and its COCO writer."""
from .coco import CocoDetection, DatasetError, collate
from .synthetic import EDGES, EFFECTS, SHAPES, class_names, make_sample, make_split, write_coco

__all__ = ["CocoDetection", "DatasetError", "collate", "EDGES", "EFFECTS", "SHAPES", "class_names", "make_sample", "make_split", "write_coco"]
