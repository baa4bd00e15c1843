"""The 80 COCO detection categories: names in the order detectors label them (0..79) and their category
ids in the COCO annotation files (1..90 with gaps). Checkpoints trained on COCO (e.g. mmdetection's published
GFL weights) use this order, so their labels map to these ids in COCO-format results."""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["COCO_NAMES", "COCO_CATEGORY_IDS", "coco_category_ids"]

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)


def coco_category_ids(class_names: Sequence[str] | None, num_classes: int) -> list[int] | None:
    """COCO's category ids when a model's classes are COCO's 80 (by name, or, without names, by count), else None."""
    if num_classes != len(COCO_NAMES):
        return None
    if class_names is not None and tuple(n.strip().lower() for n in class_names) != COCO_NAMES:
        return None
    return list(COCO_CATEGORY_IDS)
