"""COCO-format detection datasets: your own ``annotations.json`` plus a folder of images.

>>> ds = CocoDetection("data/train.json", "data/images", train=True)
>>> image, target = ds[0]   # (3, H, W) uint8 RGB; boxes (M, 4) xyxy pixels, labels (M,) 0-based, iscrowd (M,)
>>> loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, collate_fn=collate, num_workers=4)
>>> for epoch in range(epochs):
...     ds.set_epoch(epoch)      # before iterating; the flips are a function of (seed, epoch, index)
...     for images, targets in loader: ...

The file is checked when the dataset is built. Problems that make it unusable or mean the wrong files were
given raise :class:`DatasetError` (a :class:`~gfldet.errors.GfldetError`) naming the file, the entry and the bad
value. Problems a real dataset commonly has are fixed or dropped with a ``logging`` warning that counts them and
shows the first few, and are counted in :attr:`CocoDetection.summary`:

- annotations whose box has width or height <= 0, that lie entirely outside their image, or that refer to an
  image id not in ``images`` are dropped; boxes partly outside are clipped to the image;
- image files that are missing or cannot be read are dropped with their annotations;
- an image whose file size disagrees with the JSON's ``width``/``height`` uses the file's size (an image
  whose JSON size is its EXIF-rotated size is decoded EXIF-rotated, as the annotator saw it).

Category ids may be any integers; sorted by id they become labels ``0 .. C-1`` (:attr:`cat_ids` maps back).
Images without annotations are kept (negatives); ``iscrowd`` annotations are kept and flagged.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import GfldetError
from .coco_load import CocoAnnotations, DatasetError, is_int
from .image_files import decode_rgb
from .transforms import hflip, mosaic

__all__ = ["CocoDetection", "DatasetError", "collate"]

log = logging.getLogger(__name__)


def collate(batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """``DataLoader`` ``collate_fn``: ``[(image, target), ...]`` -> ``([image, ...], [target, ...])``.

    Images keep their own sizes (the detector resizes and pads them).
    """
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    return images, targets


def _mix_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed from ``(seed, epoch, index)``: neighbouring triples give unrelated streams."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & 0x7FFF_FFFF_FFFF_FFFF


# --------------------------------------------------------------------------- dataset
class CocoDetection(CocoAnnotations, torch.utils.data.Dataset):
    """A COCO-format detection dataset, checked at load time.

    Args:
        ann_file: the COCO JSON (``images``, ``annotations``, ``categories``).
        image_dir: folder that each image's ``file_name`` is relative to.
        train: apply training augmentation (random horizontal flip, and the mosaic where ``mosaic_prob`` > 0).
        flip_prob: probability of the flip when ``train``.
        mosaic_prob: probability, when ``train``, that an item is the mosaic of it and three other random items,
            each flipped on its own (:func:`gfldet.data.transforms.mosaic`; the four meet at a point drawn
            uniformly from the middle half of the image in each direction). An attribute: the training engine sets
            it per epoch (0 in the last epochs).
        seed: with the epoch (:meth:`set_epoch`) and the index, fixes every random choice.
        check_images: open every image's header at load time (existence, readability, true size) and drop the
            bad ones. ``False`` trusts the JSON (only a sample of files is checked for existence, to catch a
            wrong ``image_dir``); a file that then fails to load raises :class:`DatasetError` in ``__getitem__``.
        min_valid_fraction: fewer usable image files than this fraction of ``images`` is an error (a wrong
            ``image_dir``), not a few files to drop.

    Each item is ``(image, target)``: ``image`` a ``(3, H, W)`` uint8 RGB tensor, ``target`` a dict with
    ``boxes`` ``(M, 4)`` float32 xyxy pixels, ``labels`` ``(M,)`` int64 in ``[0, num_classes)``, ``iscrowd``
    ``(M,)`` bool, ``image_id`` (the COCO id, int) and ``orig_size`` ``(H, W)``.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        *,
        train: bool = False,
        flip_prob: float = 0.5,
        seed: int = 0,
        check_images: bool = True,
        min_valid_fraction: float = 0.5,
        mosaic_prob: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise GfldetError(f"flip_prob must be in [0, 1], got {flip_prob}")
        if not 0.0 <= float(mosaic_prob) <= 1.0:
            raise GfldetError(f"mosaic_prob must be in [0, 1], got {mosaic_prob}")
        if not 0.0 <= float(min_valid_fraction) <= 1.0:
            raise GfldetError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
        if not is_int(seed) or seed < 0:
            raise GfldetError(f"seed must be a non-negative integer, got {seed!r}")
        self.ann_file = os.fspath(ann_file)
        self.image_dir = os.fspath(image_dir)
        self.train = bool(train)
        self.flip_prob = float(flip_prob)
        self.mosaic_prob = float(mosaic_prob)
        self.seed = int(seed)
        self.epoch = 0
        self.check_images = bool(check_images)
        self.min_valid_fraction = float(min_valid_fraction)
        self._size_warned: set[int] = set()
        self._load()

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self._image_ids.shape[0])

    @property
    def image_ids(self) -> list[int]:
        """COCO image ids of the kept images, in dataset order (``image_ids[i]`` is item ``i``'s)."""
        return self._image_ids.tolist()

    def annotation_arrays(self) -> dict[str, Tensor]:
        """The checked annotations of all kept images as arrays, without decoding any image: ``sizes`` ``(I, 2)``
        int64 ``(H, W)`` from the JSON, ``image_ids`` ``(I,)``, ``offsets`` ``(I + 1,)`` (item ``i``'s boxes are
        rows ``offsets[i]:offsets[i + 1]``), ``boxes`` ``(B, 4)`` float32 xyxy pixels, ``labels`` ``(B,)`` int64
        in ``[0, num_classes)`` and ``crowd`` ``(B,)`` bool. Read-only views: clone before changing them."""
        return {"sizes": self._sizes.reshape(-1, 2), "image_ids": self._image_ids, "offsets": self._offsets,
                "boxes": self._boxes.reshape(-1, 4), "labels": self._labels, "crowd": self._crowd}

    def image_path(self, index: int) -> str:
        """Path of item ``index``'s image file."""
        s, e = int(self._path_offsets[index]), int(self._path_offsets[index + 1])
        return self._path_buf[s:e].tobytes().decode("utf-8", "surrogateescape")

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that, with ``seed`` and the item index, fixes the random augmentation.

        Call it before iterating the ``DataLoader`` each epoch. Workers get a copy of the dataset when the
        iteration starts, so with ``persistent_workers=True`` a later call does not reach them.
        """
        if not is_int(epoch) or epoch < 0:
            raise GfldetError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The ``torch.Generator`` item ``index`` draws its augmentation from this epoch (same every call)."""
        return torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, int(index)))

    def _read_image(self, index: int) -> Tensor:
        path = self.image_path(index)
        image_id = int(self._image_ids[index])
        try:
            with open(path, "rb") as f:
                data = f.read()
            return decode_rgb(data, bool(self._exif[index]))
        except Exception as e:
            hint = "" if self.check_images else " (the dataset was built with check_images=False)"
            raise DatasetError(f"{self.ann_file}: image id {image_id}: cannot load {path}: "
                               f"{type(e).__name__}: {e}{hint}") from e

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        image, target = self._item(index)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if self.train:
            g = self.generator(index)
            image, target = self._flipped(image, target, g)
            # drawn after the flip: with mosaic_prob 0 the random stream (and every item) is as without mosaic
            if self.mosaic_prob > 0 and float(torch.rand((), generator=g)) < self.mosaic_prob:
                others = torch.randint(n, (3,), generator=g).tolist()
                centre = (0.25 + 0.5 * torch.rand(2, generator=g)).tolist()
                parts = [(image, target)] + [self._flipped(*self._item(j), g) for j in others]
                image, target = mosaic(parts, (centre[0] * w, centre[1] * h))
        target = {**target, "image_id": int(self._image_ids[index]), "orig_size": (h, w)}
        return image, target

    def _flipped(self, image: Tensor, target: dict[str, Tensor], g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        if self.flip_prob > 0 and float(torch.rand((), generator=g)) < self.flip_prob:
            image, boxes = hflip(image, target["boxes"])
            return image.contiguous(), {**target, "boxes": boxes}
        return image, target

    def _item(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Item ``index`` as stored: the decoded image and its boxes, labels, crowd flags (no augmentation)."""
        image = self._read_image(index)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        s, e = int(self._offsets[index]), int(self._offsets[index + 1])
        boxes = self._boxes[s:e].clone()
        labels = self._labels[s:e].clone()
        crowd = self._crowd[s:e].clone()
        if (h, w) != tuple(self._sizes[index].tolist()):
            # only reachable with check_images=False (otherwise the file's size was read at load time)
            if index not in self._size_warned:
                self._size_warned.add(index)
                eh, ew = self._sizes[index].tolist()
                log.warning("%s: image id %d (%s) is %dx%d but the JSON says %dx%d; clipping its boxes to the file",
                            self.ann_file, int(self._image_ids[index]), self.image_path(index), w, h, ew, eh)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, labels, crowd = boxes[ok], labels[ok], crowd[ok]
        return image, {"boxes": boxes, "labels": labels, "iscrowd": crowd}

    def __repr__(self) -> str:
        s = self.summary
        dropped = {k: v for k, v in s["dropped"].items() if v}
        fixed = {k: v for k, v in s["fixed"].items() if v}
        return (f"{type(self).__name__}(ann_file={self.ann_file!r}, image_dir={self.image_dir!r}, "
                f"train={self.train}, flip_prob={self.flip_prob:g}, mosaic_prob={self.mosaic_prob:g}, seed={self.seed}, epoch={self.epoch}, "
                f"images={s['images']}, annotations={s['annotations']} ({s['crowd_annotations']} crowd), "
                f"categories={s['categories']}, images_without_boxes={s['images_without_boxes']}, "
                f"dropped={dropped}, fixed={fixed})")
