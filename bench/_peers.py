"""The peers of bench/recipes.py, trained on the same data and scored by the same pycocotools evaluation.

- ``fcos``: torchvision's FCOS on ResNet-18-FPN with torchvision's detection reference recipe
  (bench/vs_torchvision.run_fcos: same images per step and epochs as gfldet's run, its best of score thresholds
  0.2 and 0.05).
- ``yolo11n``: ultralytics YOLO11n from its model yaml (random initialisation, nothing downloaded), trained with
  ultralytics' own defaults (its optimiser choice, warm-up epochs, mosaic and colour augmentation, EMA, linear
  decay) at ``imgsz`` = the images' longer side and the same batch, for the same wall-clock training time as
  gfldet's ``default`` run on that data set (ultralytics' ``time`` argument: it sets the number of epochs from the
  first epoch's duration and stops at the time). Its per-epoch validation is off, but the time limit also holds its
  validation after the last epoch (a few seconds on 150 small images), which gfldet's training time leaves out:
  the row keeps ultralytics' own clock (``ultralytics_s``, from its results.csv) beside the wall time.
  ultralytics is AGPL and no dependency of gfldet: it runs only where it is importable (e.g. a side environment
  whose ``.pth`` file adds gfldet's), and this module converts the COCO JSON to its label files and its
  predictions back to COCO results; nothing of ultralytics' code is copied.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from gfldet.engine.evaluate import coco_metrics, detections_to_coco

PEERS = ("fcos", "yolo11n")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")


def yolo_dataset(paths: dict[str, str], out: Path) -> tuple[Path, list[int], dict[str, list[tuple[int, str]]]]:
    """An ultralytics data set of the COCO splits: ``out/{train,val}/images`` (links to the images) and
    ``labels/*.txt`` (``class cx cy w h``, normalised), a data yaml; returns the yaml, the category ids in class
    order and, per split, ``(image id, image path)`` of every image."""
    images: dict[str, list[tuple[int, str]]] = {}
    cat_ids: list[int] | None = None
    for split in ("train", "val"):
        coco = json.loads(Path(paths[f"{split}_ann"]).read_text())
        if cat_ids is None:
            cat_ids = sorted(c["id"] for c in coco["categories"])
        index = {c: i for i, c in enumerate(cat_ids)}
        by_image: dict[int, list[dict]] = {}
        for a in coco["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
        images[split] = []
        for im in coco["images"]:
            src = Path(paths[f"{split}_images"]) / im["file_name"]
            name = f"{im['id']:08d}{src.suffix}"
            link = out / split / "images" / name
            if not link.exists():
                os.symlink(src.resolve(), link)
            w, h = im["width"], im["height"]
            lines = [f"{index[a['category_id']]} {(a['bbox'][0] + a['bbox'][2] / 2) / w:.6f} "
                     f"{(a['bbox'][1] + a['bbox'][3] / 2) / h:.6f} {a['bbox'][2] / w:.6f} {a['bbox'][3] / h:.6f}"
                     for a in by_image.get(im["id"], []) if not a.get("iscrowd", 0)]
            (out / split / "labels" / f"{im['id']:08d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
            images[split].append((int(im["id"]), str(link)))
    names = {i: str(c) for i, c in enumerate(cat_ids or [])}
    data = out / "data.yaml"
    data.write_text(json.dumps({"path": str(out.resolve()), "train": "train/images", "val": "val/images",
                                "names": names}))  # JSON is YAML
    return data, list(cat_ids or []), images


@contextlib.contextmanager
def _working_dir(path: Path):
    """``contextlib.chdir`` for Python 3.10 too."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_yolo(paths: dict[str, str], size: tuple[int, int], seed: int, batch: int, out: Path,
             time_s: float | None = None, epochs: int = 100) -> dict[str, Any]:
    """Train YOLO11n from scratch with ultralytics' defaults for ``time_s`` seconds (or ``epochs``), predict the
    validation images and score them; raises ImportError where ultralytics is not importable."""
    from ultralytics import YOLO

    data, cat_ids, images = yolo_dataset(paths, out / "data")
    imgsz = max(size)
    kwargs = dict(data=str(data), epochs=epochs, imgsz=imgsz, batch=batch, device="cpu", workers=0, seed=seed,
                  project=str(out.resolve()), name="train", exist_ok=True, val=False, plots=False, verbose=False,
                  pretrained=False, amp=False)
    if time_s is not None:
        kwargs["time"] = time_s / 3600
    model = YOLO("yolo11n.yaml")
    with _working_dir(out):  # ultralytics writes some files into the working directory
        t0 = time.perf_counter()
        model.train(**kwargs)
        train_s = time.perf_counter() - t0
    trained = YOLO(str(out / "train" / "weights" / "last.pt"))
    t0 = time.perf_counter()
    dets = []
    for _, path in images["val"]:
        r = trained.predict(path, imgsz=imgsz, conf=0.001, iou=0.7, max_det=100, verbose=False, device="cpu")[0]
        dets.append({"boxes": r.boxes.xyxy.numpy(), "scores": r.boxes.conf.numpy(),
                     "labels": r.boxes.cls.numpy().astype(int)})
    ids = [i for i, _ in images["val"]]
    metrics = coco_metrics(paths["val_ann"], detections_to_coco(ids, dets, cat_ids), cat_ids=cat_ids)
    import ultralytics

    args_used = json.loads(json.dumps(getattr(trained, "ckpt", {}).get("train_args", {}), default=str))
    csv = [ln.split(",") for ln in (out / "train" / "results.csv").read_text().splitlines() if ln.strip()]
    clock = float(csv[-1][[c.strip() for c in csv[0]].index("time")]) if len(csv) > 1 else None
    return {"train_s": round(train_s, 1), "ultralytics_s": clock, "eval_s": round(time.perf_counter() - t0, 1),
            "epochs_run": len(csv) - 1,
            "peer_version": f"ultralytics {ultralytics.__version__}", "peer_args": args_used,
            **{k: metrics.get(k) for k in METRICS}}


def run_fcos(paths: dict[str, str], size: tuple[int, int], seed: int, batch: int, epochs: int,
             out: Path) -> dict[str, Any]:
    """torchvision FCOS R18-FPN with the reference recipe (bench/vs_torchvision.run_fcos)."""
    import torchvision
    import vs_torchvision

    args = argparse.Namespace(seed=seed, arch="gfl_resnet18_fpn", weights_backbone=None, size=min(size),
                              max_size=max(size), batch=batch, fcos_epochs=epochs, fcos_lr=0.01,
                              fcos_warmup_iters=None, no_progress=True)
    r = vs_torchvision.run_fcos(paths, args, out)
    return {"train_s": round(r["train_s"], 1), "eval_s": round(r["eval_s"], 1), "epochs_run": epochs,
            "peer_version": f"torchvision {torchvision.__version__}", **{k: r.get(k) for k in METRICS}}
