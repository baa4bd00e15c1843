"""A second deterministic synthetic detection data set: cluttered scenes of textured, non-box-like objects.

Unlike :mod:`gfldet.data.synthetic` (plain shapes told apart by a class-tinted colour, on a smooth background,
with amodal boxes and edge effects), these scenes are built to be hard in other ways:

- eight object kinds whose class is told by *shape only* (colours and textures are drawn independently of the
  class, except the checkered patch): ``ring`` (annulus), ``plus`` (plus sign), ``star`` (4-7 points),
  ``stick`` (thin bar, long side 4-9 times the short one), ``chevron``, ``checker`` (checkered patch),
  ``holed_blob`` (irregular blob with 1-3 holes), ``crescent``;
- **non-contiguous category ids** (:data:`CATEGORIES`: 3, 7, 11, 20, 21, 40, 45, 63);
- objects filled with solid colour, stripes, smooth noise or a gradient, on a cluttered background: a noisy
  colour field with a texture (stripes, grid or fine noise), random line segments and distractor blobs that
  belong to no class (smooth, without holes);
- object sizes log-uniform from a few pixels, heavy on small objects, plus some large ones; box aspect ratios
  from about 1:9 to 9:1 (sticks; the other kinds up to 1:5 and 5:1); free or partial rotation depending on the kind;
- partial occlusion between objects (later objects hide earlier ones), objects cut by the image border, and
  some low-contrast objects (colour pulled towards the local background).

Boxes are the *tight* box of the object's rendered shape inside the image (after clipping by the border) at
1/4-pixel resolution: the shape is drawn 4x supersampled and the box is the extent of its covered sub-pixels.
Occlusion does not shrink a box (a partly hidden object keeps the box of its whole in-image shape). Objects are
placed so that annotations stay fair: never where less than ``min_inside`` of the shape would lie inside the
image, nor where it would leave an earlier object between 3% and ``min_visible`` visible; an object hidden
(almost) entirely by later ones is dropped, as is one that the thin lines drawn last would hide below
``min_visible``.

Every image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, i, _SALT])`` only, so a split is
reproducible and :func:`write_scenes_coco` writes the same bytes for any number of worker threads.

>>> path = write_scenes_coco("data/scenes/train", n=600, seed=0, size=(192, 192), workers=2)
>>> paths = scenes_data()   # cached train / val splits: {"train_ann", "train_images", "val_ann", "val_images", "root"}
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gfldet.data.folders import cached_splits, generation_workers
from gfldet.data.synthetic_common import hsv_to_rgb, overlap_window, write_generated_coco
from gfldet.errors import GfldetError

from . import scene_draw as art
from .photos import photo_backdrop, photo_files

__all__ = [
    "CATEGORIES",
    "KINDS",
    "TEXTURES",
    "SCENES_DATA_VERSION",
    "make_scene",
    "split_scene",
    "write_scenes_coco",
    "scenes_data",
    "scenes_cache_name",
]

log = logging.getLogger(__name__)

#: ``(category id, name)`` of the object kinds, in label order (label ``i`` is ``CATEGORIES[i]``).
CATEGORIES: tuple[tuple[int, str], ...] = (
    (3, "ring"),
    (7, "plus"),
    (11, "star"),
    (20, "stick"),
    (21, "chevron"),
    (40, "checker"),
    (45, "holed_blob"),
    (63, "crescent"),
)
KINDS: tuple[str, ...] = tuple(name for _, name in CATEGORIES)
#: object fills (``checker`` is the checkered patch's own and is used by no other kind)
TEXTURES: tuple[str, ...] = ("solid", "stripes", "noise", "gradient", "checker")
# bump when what a seed generates changes. v1 (3-11 objects of >= 7 px, 1-5 distractors, 4-14 segments) and v2
# (2-8 objects of >= 10 px, less clutter) were too hard for the benchmark's budget (600 images x 6 epochs from
# scratch): gfldet reached 0.018 / 0.028 AP and torchvision's FCOS 0.013 on v1, too close to 0 to compare.
# v3: 1-6 objects of >= 14 px, 20% large, 0-2 distractors, 1-5 segments, 5% low contrast.
SCENES_DATA_VERSION = 3

_SALT = 0x5CE7E5  # keeps these streams apart from gfldet.data.synthetic's for the same seed


def make_scene(
    rng: np.random.Generator,
    size: tuple[int, int] = (192, 192),
    *,
    num_objects: tuple[int, int] = (1, 6),
    min_size: float = 14.0,
    max_size: float = 0.45,
    large_prob: float = 0.2,
    border_prob: float = 0.15,
    crowd_prob: float = 0.35,
    max_iou: float = 0.45,
    low_contrast_prob: float = 0.05,
    min_visible: float = 0.3,
    min_inside: float = 0.35,
    noise: tuple[float, float] = (2.0, 5.0),
    class_probs: tuple[float, ...] | None = None,
    backdrop: str = "synthetic",
    clutter: bool = True,
    with_meta: bool = False,
):
    """Draw one cluttered scene.

    Args:
        rng: the only source of randomness.
        size: ``(H, W)``, each at least 32.
        num_objects: inclusive range of objects tried per image (some are dropped, see below).
        min_size: smallest object size (square root of its local box area), pixels; each kind also has its own.
        max_size: largest size of the log-uniform draw, a fraction of the shorter image side.
        large_prob: probability of a large object (0.35 to 0.7 of the image side); otherwise log-uniform.
        border_prob: probability that an object is placed across the image border.
        crowd_prob: probability that an object is placed next to an earlier one (partial occlusion).
        max_iou: the largest IoU a new object's box may have with an earlier one's.
        low_contrast_prob: probability that an object's colours are pulled close to the local background.
        min_visible: no object is left with less of its in-image shape unoccluded (hidden ones are dropped).
        min_inside: no object is placed with less of its shape inside the image.
        noise: range of the per-pixel Gaussian noise's standard deviation (0-255 scale).
        class_probs: probability of each kind (label order; normalised); None: uniform (class imbalance when not).
        backdrop: ``"synthetic"`` (a textured colour field) or ``"photo"`` (a crop of a real photograph:
            :func:`bench.synth.photos.photo_backdrop`).
        clutter: draw the distractor blobs and line segments (the photo backdrop has clutter of its own).
        with_meta: also return per-object metadata.

    Returns:
        ``image`` ``(H, W, 3)`` uint8, ``boxes`` ``(M, 4)`` float32 xyxy (tight, inside the image, multiples of
        1/4 pixel), ``labels`` ``(M,)`` int64 indexing :data:`CATEGORIES`; with ``with_meta`` also a dict with
        ``masks`` (per object ``(coverage (h, w) float32 in [0, 1], x0, y0)``: the shape's per-pixel coverage on
        the image grid, inside the image, with its top-left pixel), ``visible`` ``(M,)`` float32 (unoccluded
        fraction of the in-image shape), ``inside`` ``(M,)`` float32 (fraction of the shape inside the image),
        ``truncated`` ``(M,)`` bool (cut by the border), ``low_contrast`` ``(M,)`` bool, ``textures`` ``(M,)``
        int64 indexing :data:`TEXTURES`.
    """
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise GfldetError(f"image size must be at least 32x32, got {size}")
    if not 0 < num_objects[0] <= num_objects[1]:
        raise GfldetError(f"num_objects must be (min, max) with 0 < min <= max, got {num_objects}")
    if backdrop not in ("synthetic", "photo"):
        raise GfldetError(f"backdrop must be 'synthetic' or 'photo', got {backdrop!r}")
    probs = None
    if class_probs is not None:
        probs = np.asarray(class_probs, dtype=np.float64)
        if probs.shape != (len(KINDS),) or (probs < 0).any() or probs.sum() <= 0:
            raise GfldetError(f"class_probs must be {len(KINDS)} non-negative weights, got {class_probs}")
        probs = probs / probs.sum()
    side = min(h, w)
    img = art.background(rng, h, w) if backdrop == "synthetic" else photo_backdrop(rng, h, w)

    # clutter that belongs to no class: distractor blobs, then line segments
    for _ in range(int(rng.integers(0, 3)) if clutter else 0):
        cov, ox, oy = art.distractor(rng, h, w, side)
        bg = img[min(max(oy, 0), h - 1), min(max(ox, 0), w - 1)]
        colour = art.contrasting(rng, bg)
        cov = cov * rng.uniform(0.5, 1.0)
        ch, cw = cov.shape
        fill = colour[None, None] + 40.0 * (art.smooth_noise(rng, ch, cw, 3, 1) - 0.5) if rng.random() < 0.5 else colour
        art.blend(img, cov, ox, oy, fill)
    for _ in range(int(rng.integers(1, 6)) if clutter else 0):
        cov, ox, oy = art.segment(rng, h, w, 0.8 * side)
        colour = hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.8), rng.uniform(0.05, 1.0))
        art.blend(img, cov * rng.uniform(0.4, 1.0), ox, oy, colour)

    boxes: list[np.ndarray] = []  # tight in-image boxes of the objects drawn so far
    labels: list[int] = []
    masks: list[tuple[np.ndarray, int, int]] = []  # in-image coverage crops
    inside: list[float] = []
    truncated: list[bool] = []
    low: list[bool] = []
    textures: list[int] = []
    left_visible: list[np.ndarray] = []  # per object: the fraction of each pixel of its crop that later objects leave
    layers: list[tuple[int, np.ndarray, int, int]] = []  # (hides objects with index below, coverage, x0, y0)

    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        label = int(rng.integers(len(KINDS))) if probs is None else int(rng.choice(len(KINDS), p=probs))
        kind = KINDS[label]
        lw, lh = art.object_size(rng, kind, side, min_size, large_prob, max_size)
        polys = art.shape_polygons(rng, kind, lw, lh)
        theta = art.rotation(rng, kind)
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[c, s], [-s, c]])  # row vectors: p @ rot = (x c - y s, x s + y c)
        polys = [(p @ rot, f) for p, f in polys]
        allpts = np.concatenate([p for p, f in polys if f])
        ex0, ey0 = allpts.min(axis=0)
        ex1, ey1 = allpts.max(axis=0)
        placed = None
        for _try in range(20):
            r = rng.random()
            if boxes and r < crowd_prob:  # next to an earlier object: its centre near that object's edge
                ref = boxes[int(rng.integers(len(boxes)))]
                cx = rng.uniform(ref[0], ref[2]) + rng.choice([-0.5, 0.5]) * (ex1 - ex0) * rng.uniform(0.5, 1.2)
                cy = rng.uniform(ref[1], ref[3]) + rng.choice([-0.5, 0.5]) * (ey1 - ey0) * rng.uniform(0.0, 1.2)
            elif r < crowd_prob + border_prob:  # across a border
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                e = int(rng.integers(4))
                if e == 0:
                    cx = rng.uniform(-0.25, 0.25) * (ex1 - ex0)
                elif e == 1:
                    cy = rng.uniform(-0.25, 0.25) * (ey1 - ey0)
                elif e == 2:
                    cx = w + rng.uniform(-0.25, 0.25) * (ex1 - ex0)
                else:
                    cy = h + rng.uniform(-0.25, 0.25) * (ey1 - ey0)
            else:  # inside the image
                lo_x, hi_x = 1 - ex0, w - 1 - ex1
                lo_y, hi_y = 1 - ey0, h - 1 - ey1
                cx = rng.uniform(lo_x, hi_x) if hi_x > lo_x else w / 2
                cy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else h / 2
            approx = np.array([max(cx + ex0, 0), max(cy + ey0, 0), min(cx + ex1, w), min(cy + ey1, h)], np.float32)
            if approx[2] - approx[0] < 2 or approx[3] - approx[1] < 2:
                continue
            if boxes and art.box_iou(approx, np.stack(boxes)).max() > max_iou:
                continue
            placed = art.place(polys, (cx, cy), (ex0, ey0, ex1, ey1), (h, w), masks, left_visible, min_visible, min_inside)
            if placed is not None:
                break
        if placed is None:  # nowhere to put it without hiding (most of) another object or leaving the image
            continue
        cx, cy = placed["centre"]
        box, cov, ix0, iy0 = placed["box"], placed["coverage"], placed["x0"], placed["y0"]
        iy1, ix1 = iy0 + cov.shape[0], ix0 + cov.shape[1]

        # colours and texture
        region_bg = img[iy0:iy1, ix0:ix1].reshape(-1, 3).mean(axis=0)
        colour = art.contrasting(rng, region_bg)
        texture = TEXTURES.index("checker") if kind == "checker" else int(rng.choice(4, p=[0.4, 0.2, 0.25, 0.15]))
        ys, xs = np.mgrid[iy0:iy1, ix0:ix1].astype(np.float32) + 0.5
        fill = art.texture_fill(rng, TEXTURES[texture], colour, xs, ys, (cx, cy, theta), math.sqrt(lw * lh))
        is_low = bool(rng.random() < low_contrast_prob)
        if is_low:  # pull the colours towards the background
            k = rng.uniform(0.15, 0.3)
            fill = region_bg[None, None] + k * (fill - region_bg[None, None])
        art.blend(img, cov, ix0, iy0, fill)
        for j, kept in placed["occludes"]:  # what the new object leaves visible of earlier ones
            left_visible[j] = kept
        layers.append((len(boxes), cov, ix0, iy0))

        boxes.append(box)
        labels.append(label)
        masks.append((cov, ix0, iy0))
        left_visible.append(np.ones_like(cov))
        inside.append(placed["inside"])
        truncated.append(placed["inside"] < 1.0)
        low.append(is_low)
        textures.append(texture)

    # a few thin lines over everything
    for _ in range(int(rng.integers(0, 4)) if clutter else 0):
        cov, ox, oy = art.segment(rng, h, w, 0.6 * side)
        art.blend(img, cov, ox, oy, hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.8), rng.uniform(0.05, 1.0)))
        layers.append((len(boxes), cov, ox, oy))

    # visibility: what later drawings leave of each object's in-image shape
    visible: list[float] = []
    for i, (m, mx, my) in enumerate(masks):
        keep_frac = np.ones_like(m)
        for hides_below, cov, lx, ly in layers:
            if hides_below <= i:
                continue
            window = overlap_window(m.shape, mx, my, cov.shape, lx, ly)
            if window is not None:
                keep_frac[window[0]] *= 1 - cov[window[1]]
        visible.append(float((m * keep_frac).sum() / max(float(m.sum()), 1e-6)))
    idx = [i for i in range(len(masks)) if visible[i] >= min_visible and inside[i] >= min_inside
           and boxes[i][2] - boxes[i][0] >= 2 and boxes[i][3] - boxes[i][1] >= 2]
    if len(idx) < len(masks):
        log.debug("dropped %d mostly hidden or mostly outside objects", len(masks) - len(idx))

    img += np.float32(rng.uniform(*noise)) * rng.standard_normal(img.shape, dtype=np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    boxes_a = np.stack([boxes[i] for i in idx]).astype(np.float32) if idx else np.zeros((0, 4), np.float32)
    labels_a = np.array([labels[i] for i in idx], dtype=np.int64)
    if not with_meta:
        return image, boxes_a, labels_a
    meta = {
        "masks": [masks[i] for i in idx],
        "visible": np.array([visible[i] for i in idx], dtype=np.float32),
        "inside": np.array([inside[i] for i in idx], dtype=np.float32),
        "truncated": np.array([truncated[i] for i in idx], dtype=bool),
        "low_contrast": np.array([low[i] for i in idx], dtype=bool),
        "textures": np.array([textures[i] for i in idx], dtype=np.int64),
    }
    return image, boxes_a, labels_a, meta


def split_scene(seed: int, i: int, size: tuple[int, int], kwargs: dict[str, Any]) -> tuple:
    """Image ``i`` of the split ``seed``: its own generator, so that it depends on ``(seed, i)`` only."""
    return make_scene(np.random.default_rng([int(seed), int(i), _SALT]), size, with_meta=True, **kwargs)


def _write_scenes(img_dir: str, indices: range, seed: int, size: tuple[int, int],
                  kwargs: dict[str, Any]) -> list[tuple[int, int, int, list[dict[str, Any]]]]:
    out = []
    for i in indices:
        image, boxes, labels, meta = split_scene(seed, i, size, kwargs)
        Image.fromarray(image).save(os.path.join(img_dir, f"{i:06d}.png"), compress_level=1)
        objects = []
        for k, (b, lab) in enumerate(zip(boxes.tolist(), labels.tolist())):
            x0, y0, x1, y1 = b  # multiples of 1/4: exact in float32 and in JSON
            objects.append({"category_id": CATEGORIES[lab][0], "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                            "truncated": bool(meta["truncated"][k]), "visible": round(float(meta["visible"][k]), 3),
                            "low_contrast": bool(meta["low_contrast"][k]),
                            "texture": TEXTURES[int(meta["textures"][k])]})
        out.append((int(i), int(image.shape[0]), int(image.shape[1]), objects))
    return out


def write_scenes_coco(folder: str | os.PathLike, n: int, seed: int, size: tuple[int, int] = (192, 192),
                      workers: int = 1, **kwargs: Any) -> str:
    """Write ``n`` scenes as a COCO detection data set: ``folder/images/*.png`` and ``folder/annotations.json``.

    Image ``i`` (id ``i + 1``) depends on ``(seed, i)`` only; the files are the same for any ``workers`` (threads).
    Categories are :data:`CATEGORIES` (non-contiguous ids); ``bbox`` is ``[x, y, w, h]`` and ``area`` the box's
    area. Annotations also carry the non-standard fields ``truncated``, ``visible``, ``low_contrast`` and
    ``texture``. ``kwargs`` go to :func:`make_scene`. Returns the path of ``annotations.json``.
    """
    if n < 0:
        raise GfldetError(f"n must be >= 0, got {n}")
    if workers < 1:
        raise GfldetError(f"workers must be >= 1, got {workers}")
    folder = os.fspath(folder)
    size = (int(size[0]), int(size[1]))
    return write_generated_coco(
        folder, n, workers, lambda img_dir, c: _write_scenes(img_dir, c, seed, size, kwargs),
        info={"description": f"gfldet synthetic scenes (seed {seed}, {n} images)", "version": str(SCENES_DATA_VERSION)},
        categories=[{"id": cid, "name": name, "supercategory": "scene_object"} for cid, name in CATEGORIES], noun="scenes")


# --------------------------------------------------------------------------- cached splits
def scenes_cache_name(train_images: int, val_images: int, hw: tuple[int, int], seed: int, variant: str = "",
                      scene_kwargs: dict[str, Any] | None = None) -> str:
    """The cache folder name of :func:`scenes_data`'s splits: every setting that changes what is generated."""
    size_tag = f"{hw[0]}px" if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}px"
    tag = ""
    if variant or scene_kwargs:
        digest = hashlib.sha256(json.dumps(scene_kwargs or {}, sort_keys=True).encode()).hexdigest()[:8]
        tag = f"-{variant or 'custom'}-{digest}"
    return f"scenes{tag}-v{SCENES_DATA_VERSION}-{train_images}x{val_images}-{size_tag}-s{seed}"


def scenes_data(cache_dir: str | os.PathLike | None = None, train_images: int = 600, val_images: int = 150,
                image_size: int | tuple[int, int] = 192, seed: int = 0, variant: str = "",
                **scene_kwargs: Any) -> dict[str, str]:
    """Train and validation splits of scenes, generated on first use into the cache and reused afterwards.

    ``image_size`` is a side or ``(H, W)``; ``scene_kwargs`` go to :func:`make_scene` (a named ``variant`` of the
    scenes, e.g. ``class_probs``, ``backdrop="photo"``). Returns ``{"train_ann", "train_images", "val_ann",
    "val_images", "root"}``. The folder name encodes the settings (the variant's name and a digest of its
    keyword arguments) and :data:`SCENES_DATA_VERSION`; generation is atomic
    (:func:`gfldet.data.folders.cached_splits`).
    """
    hw = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    name = scenes_cache_name(train_images, val_images, hw, seed, variant, scene_kwargs)

    def generate(folder: Path) -> dict[str, Any]:
        workers = generation_workers()
        write_scenes_coco(folder / "train", train_images, seed, hw, workers=workers, **scene_kwargs)
        write_scenes_coco(folder / "val", val_images, seed + 1_000_003, hw, workers=workers, **scene_kwargs)
        done = {"version": SCENES_DATA_VERSION, "train_images": train_images, "val_images": val_images,
                "image_size": image_size if isinstance(image_size, int) else list(hw), "seed": seed}
        if variant or scene_kwargs:
            done.update(variant=variant, scene_kwargs=scene_kwargs)
        if scene_kwargs.get("backdrop") == "photo":
            done["photos"] = photo_files()
        return done

    return cached_splits(name, generate, cache_dir, what="scenes data set")
