"""What both synthetic generators share: colours, occlusion bookkeeping and writing a split as COCO files."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..files import write_json

__all__ = ["hsv_to_rgb", "overlap_window", "write_generated_coco"]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- small image helpers
def overlap_window(a_shape: tuple[int, ...], ax: int, ay: int, b_shape: tuple[int, ...], bx: int, by: int):
    """Where two image patches placed at (``ax``, ``ay``) and (``bx``, ``by``) overlap: ``(a slices, b slices)``
    indexing the common window in each patch, or None when they do not overlap (occlusion bookkeeping of both
    generators)."""
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + a_shape[1], bx + b_shape[1]), min(ay + a_shape[0], by + b_shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    return ((slice(y0 - ay, y1 - ay), slice(x0 - ax, x1 - ax)), (slice(y0 - by, y1 - by), slice(x0 - bx, x1 - bx)))


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """Hue in degrees, saturation and value in [0, 1] -> RGB floats in [0, 255]."""
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = v - c
    return np.array([r + m, g + m, b + m], dtype=np.float32) * 255.0


def write_generated_coco(folder: str, n: int, workers: int, write_images: Callable[[str, Sequence[int]], list],
                         info: dict[str, Any], categories: list[dict[str, Any]], noun: str = "images") -> str:
    """Write a generated split of ``n`` images as ``folder/images/*.png`` and ``folder/annotations.json``.

    ``write_images(img_dir, indices)`` draws and saves the images ``indices`` and returns per image
    ``(i, height, width, objects)``; image ``i`` gets id ``i + 1`` and ``file_name`` ``images/{i:06d}.png``, and
    the objects (COCO annotation fields) get ids in order. ``workers > 1`` runs chunks of 8 images in that many
    threads: they overlap what releases the GIL (numpy's array arithmetic, Pillow's drawing and PNG encoder);
    processes would need an importable __main__ (spawn) or a fork of a process
    that may hold torch's OpenMP threads. The files are the same for any ``workers``. Returns the json's path.
    """
    img_dir = os.path.join(folder, "images")
    os.makedirs(img_dir, exist_ok=True)
    chunks = [range(a, min(n, a + 8)) for a in range(0, n, 8)]
    if workers == 1:
        parts = [write_images(img_dir, c) for c in chunks]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda c: write_images(img_dir, c), chunks))
    images, annotations = [], []
    for part in parts:
        for i, h, w, objects in part:
            images.append({"id": i + 1, "file_name": f"images/{i:06d}.png", "height": h, "width": w})
            for obj in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **obj})
    data = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    path = os.path.join(folder, "annotations.json")
    write_json(path, data)
    log.info("wrote %d %s, %d boxes to %s", len(images), noun, len(annotations), folder)
    return path
