"""Reading and checking a COCO annotation file and its image folder: the load-time checks of CocoDetection."""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from ..errors import GfldetError
from .image_files import probe_image

__all__ = ["CocoAnnotations", "DatasetError", "is_int"]

log = logging.getLogger("gfldet.data.coco")  # the dataset's warnings and summary, under the dataset's name

_EXAMPLES = 3  # how many offending entries a warning shows
_CLIP_TOL = 1e-2  # boxes sticking out by at most this many pixels (rounding) are clipped without being counted
_SAMPLE_CHECK = 32  # images probed for existence when check_images=False
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class DatasetError(GfldetError):
    """A COCO annotation file (or its image folder) that cannot be used as it is. A
    :class:`~gfldet.errors.GfldetError` (a ``ValueError``)."""


# --------------------------------------------------------------------------- small helpers
def _short(value: Any, limit: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _fmt_num(v: float) -> str:
    return f"{v:g}"


def _fmt_box(b: Sequence[float]) -> str:
    return "[" + ", ".join(_fmt_num(float(v)) for v in b) + "]"


def _examples(items: list[str], total: int) -> str:
    s = "; ".join(items[:_EXAMPLES])
    return s + ("; ..." if total > _EXAMPLES else "")


class CocoAnnotations:
    """The loading half of :class:`~gfldet.data.coco.CocoDetection`: ``_load`` reads ``self.ann_file``, checks every
    entry against ``self.image_dir`` and fills the dataset's arrays and ``summary``."""

    # ------------------------------------------------------------------ loading
    def _fail(self, msg: str) -> DatasetError:
        return DatasetError(f"{self.ann_file}: {msg}")

    def _read_json(self) -> dict[str, Any]:
        if not os.path.exists(self.ann_file):
            raise DatasetError(f"annotation file not found: {self.ann_file}")
        if not os.path.isfile(self.ann_file):
            raise DatasetError(f"annotation file is not a file: {self.ann_file}")
        try:
            with open(self.ann_file, encoding="utf-8-sig") as f:  # -sig: tolerate a BOM written by some tools
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise self._fail(f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno} (char {e.pos})") from e
        except UnicodeDecodeError as e:
            raise self._fail(f"not valid JSON: not UTF-8 text ({e.reason} at byte {e.start})") from e
        if not isinstance(data, dict):
            raise self._fail(f"top level must be a JSON object with 'images', 'annotations' and 'categories', "
                             f"got a {type(data).__name__}")
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise self._fail(f"missing top-level key '{key}' (found keys: {_short(sorted(data))})")
            if not isinstance(data[key], list):
                raise self._fail(f"'{key}' must be a list, got {type(data[key]).__name__}: {_short(data[key])}")
        return data

    def _entry_id(self, section: str, k: int, entry: Any) -> int:
        """The integer ``id`` of ``data[section][k]``; a DatasetError naming the entry when it is not an object
        with one."""
        if not isinstance(entry, dict):
            raise self._fail(f"{section}[{k}] must be an object, got {_short(entry)}")
        if "id" not in entry:
            raise self._fail(f"{section}[{k}] has no 'id': {_short(entry)}")
        value = entry["id"]
        if not is_int(value):
            raise self._fail(f"{section}[{k}]: 'id' must be an integer, got {value!r}")
        return int(value)

    def _parse_categories(self, cats: list[Any]) -> None:
        if not cats:
            raise self._fail("'categories' is empty: a detection dataset needs at least one category")
        seen: dict[int, int] = {}
        names: dict[int, str] = {}
        for k, c in enumerate(cats):
            cid = self._entry_id("categories", k, c)
            if cid in seen:
                raise self._fail(f"duplicate category id {cid} (categories[{seen[cid]}] and categories[{k}])")
            seen[cid] = k
            name = c.get("name")
            names[cid] = str(name) if name is not None else str(cid)
        self.cat_ids: list[int] = sorted(seen)
        self.cat_id_to_label: dict[int, int] = {cid: i for i, cid in enumerate(self.cat_ids)}
        self.classes: list[str] = [names[cid] for cid in self.cat_ids]
        self.num_classes: int = len(self.cat_ids)

    def _parse_images(self, images: list[Any]) -> tuple[list[int], list[str], list[tuple[int, int]]]:
        if not images:
            raise self._fail("'images' is empty: nothing to load")
        ids: list[int] = []
        names: list[str] = []
        sizes: list[tuple[int, int]] = []  # (w, h) as in the JSON
        seen: dict[int, int] = {}
        for k, im in enumerate(images):
            iid = self._entry_id("images", k, im)
            where = f"images[{k}] (id {iid})"
            for key in ("file_name", "width", "height"):
                if key not in im:
                    raise self._fail(f"{where} has no '{key}': {_short(im)}")
            fn = im["file_name"]
            if not isinstance(fn, str) or not fn:
                raise self._fail(f"{where}: 'file_name' must be a non-empty string, got {fn!r}")
            wh = []
            for key in ("width", "height"):
                v = im[key]
                if not _is_number(v) or not math.isfinite(v) or v <= 0:
                    raise self._fail(f"{where}: '{key}' must be a positive number, got {v!r}")
                wh.append(int(round(v)))
            if iid in seen:
                raise self._fail(f"duplicate image id {iid} (images[{seen[iid]}] and images[{k}])")
            seen[iid] = k
            ids.append(iid)
            names.append(fn)
            sizes.append((wh[0], wh[1]))
        return ids, names, sizes

    def _check_annotation(self, k: int, a: Any, seen: dict[int, int]) -> None:
        """Full check of ``annotations[k]`` (the slow path): raises :class:`DatasetError` on the first problem."""
        aid = self._entry_id("annotations", k, a)
        if aid in seen and seen[aid] != k:
            raise self._fail(f"duplicate annotation id {aid} (annotations[{seen[aid]}] and annotations[{k}])")
        where = f"annotations[{k}] (id {aid}, image_id {a.get('image_id')!r})"
        cid = a.get("category_id")
        if not is_int(cid) or int(cid) not in self.cat_id_to_label:
            known = ", ".join(str(c) for c in self.cat_ids[:10]) + (", ..." if len(self.cat_ids) > 10 else "")
            raise self._fail(f"{where}: unknown category_id {cid!r} (categories have ids {known})")
        b = a.get("bbox")
        if (not isinstance(b, (list, tuple)) or len(b) != 4
                or not all(_is_number(v) and math.isfinite(v) for v in b)):
            raise self._fail(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {_short(b)}")

    def _parse_annotations(self, anns: list[Any]) -> dict[str, Any]:
        # A fast loop for the common, well-formed case (COCO train has ~860k annotations); anything unusual goes
        # through _check_annotation, which raises with the details or accepts it.
        n = len(anns)
        ann_ids: list[int] = [0] * n
        img_refs: list[Any] = [None] * n
        labels: list[int] = [0] * n
        bboxes: list[Any] = [None] * n
        crowd: list[bool] = [False] * n
        seen: dict[int, int] = {}
        cat_map = self.cat_id_to_label
        num = (int, float)
        for k, a in enumerate(anns):
            try:
                aid, cid, b = a["id"], a["category_id"], a["bbox"]
                fast = (type(aid) is int and aid not in seen and type(cid) is int and cid in cat_map
                        and type(b) is list and len(b) == 4 and type(b[0]) in num and type(b[1]) in num
                        and type(b[2]) in num and type(b[3]) in num)
            except (KeyError, TypeError, IndexError):
                fast = False
            if not fast:
                self._check_annotation(k, a, seen)  # raises, or accepts an unusual but valid entry
                aid, cid, b = int(a["id"]), int(a["category_id"]), [float(v) for v in a["bbox"]]
            seen[aid] = k
            ann_ids[k] = aid
            img_refs[k] = a.get("image_id")
            labels[k] = cat_map[cid]
            bboxes[k] = b
            c = a.get("iscrowd", 0)
            crowd[k] = bool(c) if c is not None else False
        bbox = np.array(bboxes, dtype=np.float64).reshape(-1, 4)
        bad = np.flatnonzero(~np.isfinite(bbox).all(axis=1))
        if len(bad):
            self._check_annotation(int(bad[0]), anns[int(bad[0])], seen)
            raise AssertionError("unreachable: a non-finite bbox passed the check")  # pragma: no cover
        return {
            "ids": np.asarray(ann_ids, dtype=np.int64),
            "image_refs": img_refs,
            "labels": np.asarray(labels, dtype=np.int64),
            "bbox": bbox,
            "crowd": np.asarray(crowd, dtype=bool),
        }

    def _check_files(self, paths: list[str], json_sizes: list[tuple[int, int]], image_ids: list[int]
                     ) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
        """-> (keep mask, (w, h) per image, EXIF-transpose flag per image); raises on a wrong folder."""
        n = len(paths)
        keep = np.ones(n, dtype=bool)
        sizes = list(json_sizes)
        exif = np.zeros(n, dtype=bool)
        if not self.check_images:
            idx = sorted(set(np.linspace(0, n - 1, min(n, _SAMPLE_CHECK)).round().astype(int).tolist()))
            missing = [i for i in idx if not os.path.isfile(paths[i])]
            if len(idx) - len(missing) < self.min_valid_fraction * len(idx):
                raise self._fail(
                    f"only {len(idx) - len(missing)} of {len(idx)} sampled image files exist under image_dir "
                    f"{self.image_dir!r} (min_valid_fraction={self.min_valid_fraction:g}); e.g. image id "
                    f"{image_ids[missing[0]]}: {paths[missing[0]]} not found. Is image_dir the folder the "
                    f"'file_name' entries are relative to?")
            return keep, sizes, exif

        if n >= 256:
            # header parsing is mostly Python (GIL-bound); threads pay off on slow or network storage
            log.debug("checking %d image files under %s", n, self.image_dir)
            with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as ex:
                probes = list(ex.map(probe_image, paths))
        else:
            probes = [probe_image(p) for p in paths]

        missing = [i for i, p in enumerate(probes) if p[0] == "missing"]
        unreadable = [i for i, p in enumerate(probes) if p[0] == "unreadable"]
        valid = n - len(missing) - len(unreadable)
        if valid < self.min_valid_fraction * n:
            parts = [f"only {valid} of {n} image files are usable under image_dir {self.image_dir!r} "
                     f"({len(missing)} missing, {len(unreadable)} unreadable; "
                     f"min_valid_fraction={self.min_valid_fraction:g})"]
            if missing:
                i = missing[0]
                parts.append(f"e.g. image id {image_ids[i]}: {paths[i]} not found. Is image_dir the folder the "
                             f"'file_name' entries are relative to?")
            else:
                i = unreadable[0]
                parts.append(f"e.g. image id {image_ids[i]}: {paths[i]}: {probes[i][3]}")
            raise self._fail("; ".join(parts))
        keep[missing] = False
        keep[unreadable] = False
        self._counts["images_missing"] = len(missing)
        self._counts["images_unreadable"] = len(unreadable)
        if missing:
            log.warning("%s: dropped %d image(s) whose file is missing: %s", self.ann_file, len(missing),
                        _examples([f"id {image_ids[i]} {paths[i]}" for i in missing[:_EXAMPLES]], len(missing)))
        if unreadable:
            log.warning("%s: dropped %d image(s) whose file cannot be read: %s", self.ann_file, len(unreadable),
                        _examples([f"id {image_ids[i]} {paths[i]} ({probes[i][3]})" for i in unreadable[:_EXAMPLES]],
                                  len(unreadable)))

        mismatched: list[str] = []
        n_mismatch = n_exif = 0
        exif_examples: list[str] = []
        for i, (status, fsize, orientation, _) in enumerate(probes):
            if status != "ok":
                continue
            jw, jh = json_sizes[i]
            fw, fh = fsize  # type: ignore[misc]
            if (fw, fh) == (jw, jh):
                continue
            if orientation in _TRANSPOSING_ORIENTATIONS and (fh, fw) == (jw, jh):
                exif[i] = True  # annotated as displayed (EXIF-rotated): decode it that way
                n_exif += 1
                if len(exif_examples) < _EXAMPLES:
                    exif_examples.append(f"id {image_ids[i]} {paths[i]} (EXIF orientation {orientation})")
                continue
            sizes[i] = (fw, fh)
            n_mismatch += 1
            if len(mismatched) < _EXAMPLES:
                mismatched.append(f"id {image_ids[i]} {paths[i]}: JSON width x height {jw}x{jh}, file {fw}x{fh}")
        self._counts["image_size_mismatch"] = n_mismatch
        self._counts["exif_rotated"] = n_exif
        if n_mismatch:
            log.warning("%s: %d image(s) whose JSON width/height disagree with the file; using the file's size: %s",
                        self.ann_file, n_mismatch, _examples(mismatched, n_mismatch))
        if n_exif:
            log.warning("%s: %d image(s) are annotated in their EXIF-rotated orientation (JSON size = rotated "
                        "size); they are decoded rotated: %s", self.ann_file, n_exif, _examples(exif_examples, n_exif))
        return keep, sizes, exif

    def _load(self) -> None:
        self._counts: dict[str, int] = {}
        data = self._read_json()
        self._parse_categories(data["categories"])
        image_ids, file_names, json_sizes = self._parse_images(data["images"])
        anns = self._parse_annotations(data["annotations"])
        del data
        if not os.path.isdir(self.image_dir):
            what = "is not a folder" if os.path.exists(self.image_dir) else "does not exist"
            raise self._fail(f"image folder {self.image_dir!r} {what}")

        paths = [os.path.join(self.image_dir, fn) for fn in file_names]
        keep_img, sizes, exif = self._check_files(paths, json_sizes, image_ids)
        dup = len(file_names) - len(set(file_names))
        if dup:
            log.warning("%s: %d image entries share a file_name with another entry (kept)", self.ann_file, dup)

        # ---- annotations -> kept images
        id_to_idx = {iid: i for i, iid in enumerate(image_ids)}
        n_ann = len(anns["ids"])
        img_idx = np.fromiter(
            (id_to_idx.get(int(r), -1) if is_int(r) else -1 for r in anns["image_refs"]), dtype=np.int64, count=n_ann)
        unknown = img_idx < 0
        if unknown.any():
            bad = np.flatnonzero(unknown)
            log.warning("%s: dropped %d annotation(s) whose image_id is not in 'images': %s", self.ann_file, len(bad),
                        _examples([f"annotation id {int(anns['ids'][k])} image_id {anns['image_refs'][k]!r}"
                                   for k in bad[:_EXAMPLES]], len(bad)))
        of_dropped = ~unknown & ~keep_img[np.where(unknown, 0, img_idx)]
        self._counts["annotations_unknown_image"] = int(unknown.sum())
        self._counts["annotations_of_dropped_images"] = int(of_dropped.sum())
        live = ~unknown & ~of_dropped

        # ---- boxes: degenerate / outside / clipped
        xywh = anns["bbox"]
        wh_img = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)[np.where(live, img_idx, 0)]  # (w, h) per ann
        x0, y0 = xywh[:, 0], xywh[:, 1]
        x1, y1 = x0 + xywh[:, 2], y0 + xywh[:, 3]
        cx0, cx1 = np.clip(x0, 0, wh_img[:, 0]), np.clip(x1, 0, wh_img[:, 0])
        cy0, cy1 = np.clip(y0, 0, wh_img[:, 1]), np.clip(y1, 0, wh_img[:, 1])
        degenerate = live & ((xywh[:, 2] <= 0) | (xywh[:, 3] <= 0))
        outside = live & ~degenerate & ((cx1 - cx0 <= 0) | (cy1 - cy0 <= 0))
        kept = live & ~degenerate & ~outside
        moved = np.maximum.reduce([np.abs(cx0 - x0), np.abs(cx1 - x1), np.abs(cy0 - y0), np.abs(cy1 - y1)])
        clipped = kept & (moved > _CLIP_TOL)
        self._counts["annotations_degenerate"] = int(degenerate.sum())
        self._counts["annotations_outside"] = int(outside.sum())
        self._counts["boxes_clipped"] = int(clipped.sum())

        def ann_example(k: int, extra: str = "") -> str:
            return (f"annotation id {int(anns['ids'][k])} (image id {image_ids[img_idx[k]]}) bbox "
                    f"{_fmt_box(xywh[k])}{extra}")

        def img_size(k: int) -> str:
            w, h = sizes[img_idx[k]]
            return f" in a {w}x{h} image"

        if degenerate.any():
            bad = np.flatnonzero(degenerate)
            log.warning("%s: dropped %d annotation(s) with width or height <= 0: %s", self.ann_file, len(bad),
                        _examples([ann_example(k) for k in bad[:_EXAMPLES]], len(bad)))
        if outside.any():
            bad = np.flatnonzero(outside)
            log.warning("%s: dropped %d annotation(s) whose box lies entirely outside its image: %s", self.ann_file,
                        len(bad), _examples([ann_example(k, img_size(k)) for k in bad[:_EXAMPLES]], len(bad)))
        if clipped.any():
            bad = np.flatnonzero(clipped)
            log.warning("%s: clipped %d box(es) partly outside their image: %s", self.ann_file, len(bad),
                        _examples([ann_example(k, img_size(k)) for k in bad[:_EXAMPLES]], len(bad)))

        # ---- compact storage (tensors/arrays, no per-item Python objects: cheap to share with workers)
        kept_imgs = np.flatnonzero(keep_img)
        new_idx = np.full(len(image_ids), -1, dtype=np.int64)
        new_idx[kept_imgs] = np.arange(len(kept_imgs))
        ka = np.flatnonzero(kept)
        order = ka[np.argsort(new_idx[img_idx[ka]], kind="stable")]
        per_image = np.bincount(new_idx[img_idx[order]], minlength=len(kept_imgs))
        self._offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(per_image)]).astype(np.int64))
        boxes = np.stack([cx0, cy0, cx1, cy1], axis=1)[order]
        self._boxes = torch.from_numpy(boxes.astype(np.float32)).reshape(-1, 4)
        self._labels = torch.from_numpy(anns["labels"][order].copy())
        self._crowd = torch.from_numpy(anns["crowd"][order].copy())
        self._image_ids = torch.tensor([image_ids[i] for i in kept_imgs], dtype=torch.int64)
        self._sizes = torch.tensor([(sizes[i][1], sizes[i][0]) for i in kept_imgs], dtype=torch.int64).reshape(-1, 2)
        self._exif = torch.from_numpy(exif[kept_imgs].copy())
        encoded = [paths[i].encode("utf-8", "surrogateescape") for i in kept_imgs]
        self._path_buf = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        self._path_offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)

        n_crowd = int(self._crowd.sum())
        had_anns = np.zeros(len(image_ids), dtype=bool)
        had_anns[img_idx[~unknown]] = True
        had_anns = had_anns[kept_imgs]
        dropped = {k: self._counts.get(k, 0) for k in (
            "images_missing", "images_unreadable", "annotations_unknown_image", "annotations_of_dropped_images",
            "annotations_degenerate", "annotations_outside")}
        fixed = {k: self._counts.get(k, 0) for k in ("boxes_clipped", "image_size_mismatch", "exif_rotated")}
        self.summary: dict[str, Any] = {
            "ann_file": self.ann_file,
            "image_dir": self.image_dir,
            "images": len(kept_imgs),
            "annotations": len(order),
            "crowd_annotations": n_crowd,
            "categories": self.num_classes,
            "images_without_boxes": int((per_image == 0).sum()),
            # images that had annotations but lost all of them to the checks above (they now train as negatives)
            "images_all_boxes_dropped": int(((per_image == 0) & had_anns).sum()),
            "images_in_file": len(image_ids),
            "annotations_in_file": n_ann,
            "dropped": dropped,
            "fixed": fixed,
            "images_checked": self.check_images,
        }
        drop_txt = ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "none"
        fix_txt = ", ".join(f"{k} {v}" for k, v in fixed.items() if v) or "none"
        log.info("%s: %d images, %d annotations (%d crowd), %d categories, %d images without boxes; dropped: %s; "
                 "fixed: %s", self.ann_file, self.summary["images"], self.summary["annotations"], n_crowd,
                 self.num_classes, self.summary["images_without_boxes"], drop_txt, fix_txt)
