"""Data: a deterministic synthetic detection dataset (with sharp and ambiguous edges) and its COCO writer."""
from .synthetic import EDGES, EFFECTS, SHAPES, class_names, make_sample, make_split, write_coco

__all__ = ["EDGES", "EFFECTS", "SHAPES", "class_names", "make_sample", "make_split", "write_coco"]
