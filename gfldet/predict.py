"""``gfldet predict``: run a checkpoint on image files or folders; write COCO-results JSON and pictures."""
from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .data.image_files import IMAGE_EXTENSIONS, collect_images, read_image
from .deploy import BACKENDS, load
from .engine.device import place_model
from .engine.evaluate import detections_to_coco
from .errors import GfldetError
from .files import check_output_folder, write_json
from .models.coco_classes import coco_category_ids
from .models.io import load_checkpoint, load_model
from .models.pretrained import load_pretrained
from .ops.resize import keep_ratio_size, warp_resize_matrix
from .viz import draw_detections, draw_distributions

log = logging.getLogger(__name__)

__all__ = ["collect_images", "read_image", "predict", "coco_image_ids", "IMAGE_EXTENSIONS"]

def _name_key(name: str) -> str:
    parts = [q for q in name.replace("\\", "/").split("/") if q not in ("", ".")]
    return "/".join(parts)


def coco_image_ids(files: list[Path], ann: str | os.PathLike) -> list[int]:
    """The COCO image id of each of ``files``, matched by ``file_name`` in the annotation JSON ``ann``.

    A file matches the entry whose ``file_name`` (``/``-separated, usually relative to an image folder, e.g.
    ``000000397133.jpg`` or ``images/000123.png``) is the longest trailing part of the file's path. A file that
    matches no entry, an entry named twice in ``ann`` or two files matching one entry raise GfldetError naming
    them.
    """
    try:
        data = json.loads(Path(ann).read_text())
    except (OSError, ValueError) as e:
        raise GfldetError(f"{ann}: not a readable COCO annotation JSON ({e})") from e
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise GfldetError(f"{ann}: not a COCO annotation file (no 'images' list)")
    by_name: dict[str, int] = {}
    twice: set[str] = set()
    for im in images:
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str) or "id" not in im:
            raise GfldetError(f"{ann}: every entry of 'images' needs 'id' and 'file_name', got {im!r}")
        key, iid = _name_key(im["file_name"]), int(im["id"])
        if by_name.get(key, iid) != iid:
            twice.add(key)
        by_name[key] = iid
    ids: list[int] = []
    owner: dict[int, Path] = {}
    for f in files:
        parts = [q for q in Path(os.path.abspath(f)).as_posix().split("/") if q]
        tails = ("/".join(parts[-k:]) for k in range(len(parts), 0, -1))  # longest first
        key = next((t for t in tails if t in by_name), None)
        if key is None:
            raise GfldetError(f"{f}: no image with this file_name in {ann} (COCO file_name entries look like "
                              f"{sorted(by_name)[:2]}); image_id in predictions.json must come from it")
        if key in twice:
            raise GfldetError(f"{f}: file_name {key!r} names more than one image in {ann}")
        iid = by_name[key]
        if iid in owner:
            raise GfldetError(f"{owner[iid]} and {f} both match file_name {key!r} (image id {iid}) in {ann}")
        owner[iid] = f
        ids.append(iid)
    return ids



def _network_input_size(h: int, w: int, rules: dict) -> tuple[int, int]:
    """``(h', w')`` of an ``h x w`` image in the network input, by a model's input rules as an export records them
    (``gfldet.*`` metadata; a NanoDet's ``export_settings()``): ``resize: warp`` (NanoDet) warps to ``input_size``
    (:func:`warp_resize_matrix`), anything else is GFL's keep-ratio resize with ``min_size`` / ``max_size``."""
    if rules.get("resize") == "warp":
        _, (nw, nh) = warp_resize_matrix((w, h), tuple(rules["input_size"]), bool(rules.get("keep_ratio")))
        return nh, nw
    return keep_ratio_size(h, w, rules.get("min_size"), rules.get("max_size"))


def predict(
    checkpoint: str | os.PathLike | None,
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike = "predictions",
    score_thr: float = 0.3,
    device: torch.device | str = "cpu",
    draw: bool = True,
    show_distributions: bool = False,
    progress: bool = True,
    max_distribution_plots: int = 5,
    backend: str = "torch",
    ann: str | os.PathLike | None = None,
    overwrite: bool = False,
    weights: str | os.PathLike | None = None,
    threads: int | None = None,
    batch_size: int = 1,
    read_workers: int = 2,
    precision: str | None = None,
) -> dict[str, Any]:
    """Detect objects in each image; write ``predictions.json`` (COCO results, plus ``file_name`` and
    ``category`` name, and each box's localisation uncertainty: ``edge_std`` (l, t, r, b standard deviations in
    pixels), ``edge_entropy`` (nats), ``edge_peak`` and ``loc_conf``) and, with ``draw``, ``<name>_det.png`` per
    image and, with ``show_distributions``, ``<name>_dist<k>.png`` for the top boxes (the four learned edge
    distributions).

    ``image_id``: with ``ann`` (a COCO annotation JSON), the id of the image of the same ``file_name`` there
    (see :func:`coco_image_ids`; an input file it does not list raises GfldetError before anything runs), so
    that the results can be scored against ``ann``; without it, the file's position (0, 1, ...) in the sorted
    list of inputs.

    An ``out_dir`` that already holds a ``predictions.json`` is refused (before any work) unless ``overwrite``.

    ``backend``: ``"torch"`` runs a gfldet checkpoint; ``"onnxruntime"`` / ``"openvino"`` run a file written by
    ``gfldet export`` (``checkpoint`` is then its path; ``threads`` their intra-op threads, ``precision`` OpenVINO's)
    through :func:`gfldet.deploy.load` and its NumPy post-processing. ``batch_size`` images per call; the files are
    decoded ``read_workers`` threads ahead of the backend.

    ``weights`` instead of ``checkpoint``: published weights by name or an mmdetection / GFocalV2 file
    (:func:`gfldet.load_pretrained`: downloaded once, run with the test settings of their published AP).
    """
    if (checkpoint is None) == (weights is None):
        raise GfldetError("give a checkpoint or weights (published weights' name or file), not both or neither")
    if backend == "torch" and (threads or precision):
        raise GfldetError("threads and precision are for the onnxruntime / openvino backends")
    if weights is not None and backend != "torch":
        raise GfldetError(f"weights run with the torch backend, not {backend!r}")

    check_output_folder(out_dir, ("predictions.json",), overwrite)
    files = collect_images(inputs)
    image_ids = coco_image_ids(files, ann) if ann is not None else list(range(len(files)))
    if backend == "torch":
        if weights is not None:
            model = load_pretrained(weights, progress=progress)
            cat_ids = coco_category_ids(model.class_names, model.config.num_classes)
        else:
            model = load_model(checkpoint)
            cat_ids = load_checkpoint(checkpoint).get("cat_ids")
        model = place_model(model.configure(score_thr=score_thr), torch.device(device))
        names = model.class_names or [str(i) for i in range(model.config.num_classes)]
        if not cat_ids:
            log.warning("%s carries no dataset category ids: category_id in the results is label + 1",
                        checkpoint or weights)
            cat_ids = list(range(1, model.config.num_classes + 1))

        rules = model.export_settings() if hasattr(model, "export_settings") else \
            {"min_size": model.config.min_size, "max_size": model.config.max_size}

        def run(imgs: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            with torch.inference_mode():
                dets = model([img.to(device) for img in imgs])
            return [{k: v.cpu() for k, v in det.items()} for det in dets]

    elif backend in BACKENDS:
        if torch.device(device).type != "cpu":
            log.warning("--device %s is ignored by the %s backend (it runs on the CPU)", device, backend)
        detector = load(checkpoint, backend=backend, threads=threads, precision=precision).configure(score_thr=score_thr)
        names = detector.class_names
        cat_ids = detector.cat_ids
        rules = detector.meta

        def run(imgs: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            dets = detector([img.numpy() for img in imgs])
            return [{k: torch.from_numpy(v) for k, v in det.items()} for det in dets]

    else:
        raise GfldetError(f"unknown backend {backend!r}; choose 'torch' or one of {BACKENDS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, failed, picture_files = [], [], []
    t0 = time.perf_counter()
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress)
    for batch in _batches(_read_ahead(files, workers=read_workers), batch_size):
        readable = [(idx, f, img) for idx, f, img in batch if not isinstance(img, GfldetError)]
        for _, f, err in (b for b in batch if isinstance(b[2], GfldetError)):
            log.warning("%s", err)
            failed.append(str(f))
        dets = run([img for _, _, img in readable]) if readable else []
        bar.update(len(batch))
        for (idx, f, img), det in zip(readable, dets):
            coco = detections_to_coco([image_ids[idx]], [det], cat_ids, box_digits=2)
            unc = zip(det["edge_std"].tolist(), det["edge_entropy"].tolist(), det["edge_peak"].tolist(), det["loc_conf"].tolist())
            for e, lab, (std, ent, peak, conf) in zip(coco, det["labels"].tolist(), unc):
                results.append({"image_id": e["image_id"], "file_name": str(f), "category_id": e["category_id"],
                                "category": names[lab], "bbox": e["bbox"], "score": e["score"],
                                "edge_std": [round(v, 3) for v in std], "edge_entropy": [round(v, 4) for v in ent],
                                "edge_peak": [round(v, 4) for v in peak], "loc_conf": round(conf, 4)})
            stem = f"{idx:04d}_{f.stem}"
            if draw:
                p = out / f"{stem}_det.png"
                draw_detections(img, det["boxes"], det["labels"], det["scores"], class_names=names, path=p)
                picture_files.append(str(p))
            if show_distributions:
                for k in range(min(max_distribution_plots, det["boxes"].shape[0])):
                    p = out / f"{stem}_dist{k}.png"
                    std = "/".join(f"{v:.1f}" for v in det["edge_std"][k].tolist())
                    # bins -> pixels of this image: a bin is one stride of the resized network input
                    nh, nw = _network_input_size(int(img.shape[1]), int(img.shape[2]), rules)
                    px_per_bin = float(det["strides"][k]) * img.shape[2] / nw
                    draw_distributions(img, det["boxes"][k], det["distributions"][k], p, stride=px_per_bin,
                                       title=f"{names[int(det['labels'][k])]} {float(det['scores'][k]):.2f}, "
                                             f"loc_conf {float(det['loc_conf'][k]):.2f}, edge std l/t/r/b {std} px")
                    picture_files.append(str(p))
    bar.close()
    elapsed = time.perf_counter() - t0
    if len(failed) == len(files):
        raise GfldetError(f"none of the {len(files)} inputs could be read (first: {failed[0]})")
    json_path = out / "predictions.json"
    write_json(json_path, results)
    done = len(files) - len(failed)
    log.info("%d images in %.1f s: %.1f images/s (%s backend, batches of %d)", done, elapsed, done / elapsed, backend,
             batch_size)
    return {"images": len(files), "failed": failed, "detections": len(results), "json": str(json_path),
            "pictures": len(picture_files), "out_dir": str(out), "seconds": round(elapsed, 2),
            "images_per_s": round(done / elapsed, 2)}


def _read_ahead(files: list[Path], workers: int = 2) -> Iterator[tuple[int, Path, torch.Tensor | GfldetError]]:
    """``(index, file, image or the GfldetError of an unreadable file)`` in order, decoded by ``workers`` threads
    a few files ahead of the consumer (PIL decodes without the GIL), so that the backend is not kept waiting."""
    ahead = max(2, 2 * workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gfldet-read") as pool:
        pending: deque = deque()
        for idx, f in enumerate(files):
            pending.append((idx, f, pool.submit(_read_or_error, f)))
            if len(pending) > ahead:
                i, p, fut = pending.popleft()
                yield i, p, fut.result()
        while pending:
            i, p, fut = pending.popleft()
            yield i, p, fut.result()


def _read_or_error(f: Path) -> torch.Tensor | GfldetError:
    try:
        return read_image(f)
    except GfldetError as e:  # an unreadable file; anything else is a bug
        return e


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
