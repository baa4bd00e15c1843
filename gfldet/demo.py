"""``gfldet demo``: learn to detect on generated data in minutes on a CPU, through the same tools a user runs.

:func:`run_demo` does, in order:

1. makes a synthetic COCO-format dataset in a cache folder on first use (``$GFLDET_CACHE`` or
   ``~/.cache/gfldet``; :func:`demo_data`): three shape classes at several scales, crowded scenes, and objects
   whose edges are sharp next to objects whose edges are blurred, faded or occluded (:mod:`gfldet.data.synthetic`);
2. trains a small GFL from random initialisation with :func:`gfldet.engine.train.train` (the engine of
   ``gfldet train``: SGD, warm-up, cosine decay, flips): ``gfl_resnet18_fpn`` narrowed for a CPU (a ResNet-18
   with 24 base channels and ordinary BatchNorm, a 64-channel FPN and a head with two stacked convolutions per
   branch; see :func:`demo_config`); nothing is downloaded;
3. evaluates the final model with pycocotools (:func:`gfldet.engine.evaluate.evaluate`);
4. writes pictures: detections on validation images, and the paper's Fig. 3 (a box beside its four learned
   edge distributions) for a blurred and for a sharp object; and measures whether the learned uncertainty
   tracks the real localisation error (:mod:`gfldet.analysis`).

The results folder gets ``metrics.json`` (COCO metrics, the uncertainty report, timings, settings), the run's
``config.yaml``, ``last.pt``, ``best.pt``, ``metrics.jsonl``, ``loss_curves.png``, ``pr_curve.png``,
``per_class_ap.md``, ``detections_*.png`` and ``distributions_*.png``. An existing run is never overwritten:
the next free ``<out>-1``, ``<out>-2``, ... is used instead (an existing folder, even empty, is never reused). ``docs/demo.md`` has measured figures.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .analysis import edge_records, uncertainty_report
from .config import Config
from .data.folders import cached_splits, claim_dir, generation_workers
from .data.synthetic import EFFECTS, write_coco
from .engine.amp import cpu_has_native_bf16
from .engine.device import place_model, resolve_device
from .engine.train import train
from .errors import GfldetError
from .files import write_json
from .models.io import load_model
from .models.zoo import ARCHS, check_arch, imagenet_cache_path, is_nanodet, torchvision_weights
from .ops.boxes import box_iou
from .viz import draw_detections, draw_distributions

__all__ = ["run_demo", "demo_data", "demo_config", "demo_epochs", "load_split", "detect", "DEMO_DATA_VERSION"]

log = logging.getLogger(__name__)

DEMO_DATA_VERSION = 1  # bump when gfldet.data.synthetic changes what a seed generates
NUM_CLASSES = 3


# --------------------------------------------------------------------------- data
def demo_data(cache_dir: str | os.PathLike | None = None, train_images: int = 1500, val_images: int = 48,
              image_size: int = 256, seed: int = 0) -> dict[str, str]:
    """The demo's COCO-format train and validation splits, generated on first use and reused afterwards.

    Returns ``{"train_ann", "train_images", "val_ann", "val_images", "root"}``. The folder name encodes the
    settings and :data:`DEMO_DATA_VERSION`; it is generated beside its final place and renamed into it, so an
    interrupted generation never leaves a half-written dataset behind (:func:`gfldet.data.folders.cached_splits`).
    """
    name = f"demo-v{DEMO_DATA_VERSION}-{train_images}x{val_images}-{image_size}px-c{NUM_CLASSES}-s{seed}"

    def generate(folder: Path) -> dict[str, Any]:
        size, workers = (image_size, image_size), generation_workers()
        write_coco(folder / "train", train_images, seed, size, NUM_CLASSES, workers=workers)
        write_coco(folder / "val", val_images, seed + 1_000_003, size, NUM_CLASSES, workers=workers)
        return {"version": DEMO_DATA_VERSION, "train_images": train_images, "val_images": val_images,
                "image_size": image_size, "seed": seed}

    return cached_splits(name, generate, cache_dir, what="demo dataset")


def load_split(ann_file: str | os.PathLike, image_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """A synthetic COCO split read back with its per-object ``ambiguous`` and ``effect`` fields: per image
    ``image (H, W, 3)`` uint8, ``boxes (M, 4)`` xyxy, ``labels`` 0-based, ``ambiguous (M, 4)``, ``effects``."""
    data = json.loads(Path(ann_file).read_text())
    cat_index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    out = []
    for im in data["images"]:
        anns = by_image.get(im["id"], [])
        with Image.open(Path(image_dir) / im["file_name"]) as f:
            image = np.array(f.convert("RGB"))
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], np.float32).reshape(-1, 4)
        out.append({"id": im["id"], "image": image, "boxes": boxes,
                    "labels": np.array([cat_index[a["category_id"]] for a in anns], np.int64),
                    "ambiguous": np.array([a.get("ambiguous", [False] * 4) for a in anns], bool).reshape(-1, 4),
                    "effects": np.array([EFFECTS.index(a.get("effect", "sharp")) for a in anns], np.int64)})
    return out


def demo_epochs(device: str = "cpu") -> int:
    """The demo's budget on this machine: 9 epochs where training runs in reduced precision at full speed (a CPU
    with bf16 units, AVX512-BF16 or AMX, or a CUDA GPU: about 2x faster steps), else 6 in float32. Both fit the
    10-minute demo on a 2-core CPU of their kind (docs/demo.md)."""
    return 9 if device.startswith("cuda") or (device in ("cpu", "auto") and cpu_has_native_bf16()) else 6


# the demo's own model: a narrow ResNet-18 trained from scratch with the settings of demo_config
DEMO_ARCH = "gfl_resnet18_fpn"


def cached_imagenet_weights(arch: str, name: str = "IMAGENET1K_V1") -> str | None:
    """``name`` where torch hub's cache holds ``arch``'s torchvision ImageNet file (nothing is downloaded), else
    None; the log says which and, where absent, where to place the file."""
    tv_name = ARCHS[arch][1]
    if not tv_name:
        log.info("demo: torchvision has no ImageNet weights for %s; training from scratch", arch)
        return None
    weights = torchvision_weights(arch, name, tv_name)
    path = imagenet_cache_path(weights)
    folder, fname = os.path.split(path)
    if os.path.isfile(path):
        log.info("demo: %s starts from the ImageNet weights %s (%s)", arch, weights, path)
        return name
    log.warning("demo: %s not found in %s, so %s trains from scratch (the demo downloads nothing); place torchvision's "
                "%s there (%s) to fine-tune from ImageNet", fname, folder, arch, fname, weights.url)
    return None


def demo_config(data: dict[str, str], out_dir: str | os.PathLike, epochs: int = 5, batch_size: int = 8,
                lr: float | None = 0.06, seed: int = 0, device: str = "cpu", image_size: int = 256,
                arch: str = DEMO_ARCH, weights_backbone: str | None = None) -> Config:
    """The demo's training configuration (a :class:`gfldet.config.Config`, as ``gfldet train`` takes).

    Chosen for AP per second of a 2-core CPU, from scratch (docs/demo.md has the runs behind it). On this data
    a standard ResNet-18 with frozen BatchNorm over 192 images overfits (after 48 epochs: train AP 0.86,
    validation 0.35), so the demo draws 1500 images and sees each five times, in batches of 8 (18% less time
    per image than 4 on this CPU; the learning rate scaled with the batch), with a network narrow enough to make
    those iterations cheap: ResNet-18 at 24 base channels (a seventh of the standard one's convolution work),
    ordinary trainable BatchNorm and no frozen stages (the reference's frozen statistics and frozen stem suit
    ImageNet-initialised backbones, not random ones), and a GFL head with two stacked convolutions per branch
    instead of four (the head costs as much as this backbone otherwise). NHWC weights (``train.channels_last``,
    oneDNN's own layout) and, where the hardware has it, reduced precision (``train.amp``: bfloat16 on a CPU with
    bf16 units, float16 on CUDA; :func:`demo_epochs` spends the time saved on more epochs).
    """
    cfg = Config()
    cfg.out_dir = os.fspath(out_dir)
    cfg.model.arch = arch
    if arch == DEMO_ARCH:
        cfg.model.base_channels = 24
        cfg.model.norm_eval = False
        cfg.model.frozen_stages = 0
        cfg.model.fpn_channels = 64
        cfg.model.head_channels = 64
        cfg.model.stacked_convs = 2
    # another arch (``gfldet demo --arch``): its own neck/head sizes and the regime of its weights
    cfg.model.weights_backbone = weights_backbone
    cfg.data.train.ann, cfg.data.train.images = data["train_ann"], data["train_images"]
    cfg.data.val.ann, cfg.data.val.images = data["val_ann"], data["val_images"]
    cfg.data.num_workers = 0  # 2 cores: loading PNGs in the main process is cheaper than worker processes
    cfg.input.min_size = cfg.input.max_size = image_size
    t = cfg.train
    t.epochs, t.batch_size, t.lr, t.seed, t.device = epochs, batch_size, lr, seed, device
    t.schedule, t.warmup_iters, t.warmup_ratio = "cosine", 50, 0.1
    if weights_backbone is None:
        t.grad_clip = 35.0  # from scratch, an early large gradient is clipped rather than diverging
    t.channels_last = True
    t.amp = device.startswith("cuda") or (device in ("cpu", "auto") and cpu_has_native_bf16())
    t.eval_interval = epochs  # evaluate once, at the end
    t.log_interval = 10
    return cfg


def _describe_model(cfg: Config) -> str:
    m = cfg.model
    start = f"from ImageNet weights {m.weights_backbone}" if m.weights_backbone else "from scratch"
    if m.arch != DEMO_ARCH:
        return f"{m.arch}, {start}"
    return (f"{m.arch}(base_channels={m.base_channels}, norm_eval={m.norm_eval}, frozen_stages={m.frozen_stages}, "
            f"fpn_channels={m.fpn_channels}, head_channels={m.head_channels}, stacked_convs={m.stacked_convs}), {start}")


def _pick_example(samples, dets, want_blur: bool, iou_thr: float = 0.5):
    """The detection to draw for a blurred (``want_blur``) or a fully sharp ground truth.

    Preference, in order: a detection of the right class with IoU >= ``iou_thr`` over one without; a
    "clean" example (blurred on all four edges, or sharp on all four, and at least 4 px inside the image)
    over others; then the higher score (matched) or IoU (unmatched). Returns ``(sample index, gt index,
    detection index)`` or ``None``."""
    blur, sharp = EFFECTS.index("blur"), EFFECTS.index("sharp")
    best, best_key = None, None
    for si, (s, d) in enumerate(zip(samples, dets)):
        if d["boxes"].shape[0] == 0:
            continue
        h, w = s["image"].shape[:2]
        gt_boxes = torch.from_numpy(s["boxes"]).float()
        iou = box_iou(d["boxes"].float(), gt_boxes)  # (D, M)
        for j in range(gt_boxes.shape[0]):
            effect, amb = int(s["effects"][j]), s["ambiguous"][j]
            if want_blur and effect != blur:
                continue
            if not want_blur and (effect != sharp or bool(amb.any())):
                continue
            b = s["boxes"][j]
            inside = bool(b[0] >= 4 and b[1] >= 4 and b[2] <= w - 4 and b[3] <= h - 4)
            clean = int(inside and (bool(amb.all()) if want_blur else True))
            ok = (d["labels"] == int(s["labels"][j])) & (iou[:, j] >= iou_thr)
            if ok.any():
                di = int(torch.where(ok, d["scores"], torch.full_like(d["scores"], -1)).argmax())
                key = (1, clean, float(d["scores"][di]))
            else:
                di = int(iou[:, j].argmax())
                key = (0, clean, float(iou[di, j]))
            if best_key is None or key > best_key:
                best, best_key = (si, j, di), key
    return best


# --------------------------------------------------------------------------- the demo
@torch.no_grad()
def detect(model: torch.nn.Module, samples: list[dict[str, Any]], device: torch.device, batch_size: int = 8,
           score_thr: float | None = None) -> list[dict[str, torch.Tensor]]:
    """The model's detections (eval mode) on generated ``samples``, in batches; ``score_thr`` overrides the model's
    for this call only."""
    model.eval()
    old = model.config.score_thr
    if score_thr is not None:
        model.configure(score_thr=score_thr)
    try:
        out: list[dict[str, torch.Tensor]] = []
        for i in range(0, len(samples), batch_size):
            imgs = [torch.from_numpy(np.ascontiguousarray(s["image"])).permute(2, 0, 1).to(device) for s in samples[i:i + batch_size]]
            out.extend({k: v.cpu() for k, v in d.items()} for d in model(imgs))
    finally:
        model.configure(score_thr=old)
    return out


def run_demo(
    out_dir: str | os.PathLike = "runs/demo",
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    *,
    cache_dir: str | os.PathLike | None = None,
    train_images: int = 1500,
    val_images: int = 48,
    image_size: int = 256,
    batch_size: int = 8,
    lr: float | None = None,
    num_pictures: int = 4,
    progress: bool = True,
    arch: str = DEMO_ARCH,
) -> dict[str, Any]:
    """Generate (or reuse) the demo data, train a small GFL from scratch, evaluate it, draw pictures.

    Returns what ``metrics.json`` holds: ``coco`` (AP, AP50, AP75, APs, APm, APl, AR100 and per class),
    ``uncertainty`` (:func:`gfldet.analysis.uncertainty_report` on the validation split), ``final_losses``,
    ``timings_s``, ``settings`` and ``paths``. ``epochs`` None: :func:`demo_epochs` (9 with bf16 units, else 6).
    ``arch`` another builder (e.g. ``gfl_mobilenet_v2_fpn``): trained from its torchvision ImageNet weights where
    torch hub's cache holds them (:func:`cached_imagenet_weights`), from scratch otherwise. ``lr`` None: 0.06 for
    the demo's ResNet-18, the regime's rate for another arch.
    """
    dev = resolve_device(device, "device")  # an unknown device, or CUDA without CUDA, before any data is made
    if epochs is None:
        epochs = demo_epochs(device)
    check_arch(arch)
    if is_nanodet(arch):
        raise GfldetError(f"the demo trains a GFL detector (--arch: a GFL builder); train {arch} with `gfldet train "
                          f"--set model.arch={arch}` on the demo's data or yours (docs/nanodet.md)")
    weights_backbone = None if arch == DEMO_ARCH else cached_imagenet_weights(arch)
    if lr is None and arch == DEMO_ARCH:
        lr = 0.06

    if epochs < 1 or batch_size < 1 or image_size < 64 or train_images < batch_size or val_images < 1:
        raise GfldetError(f"need epochs >= 1, batch_size >= 1, image_size >= 64, train_images >= batch_size, "
                          f"val_images >= 1; got {epochs}, {batch_size}, {image_size}, {train_images}, {val_images}")
    t0 = time.perf_counter()
    data = demo_data(cache_dir, train_images, val_images, image_size, seed=0)  # one dataset, whatever the run seed
    t_data = time.perf_counter()
    out = claim_dir(Path(out_dir))
    if out != Path(out_dir):
        log.info("%s already holds a run; writing to %s", out_dir, out)
    cfg = demo_config(data, out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, image_size=image_size,
                      arch=arch, weights_backbone=weights_backbone)
    log.info("demo: %d epochs, %s", epochs, "reduced precision (train.amp)" if cfg.train.amp else "float32")
    summary = train(cfg, progress=progress)
    t_train = time.perf_counter()

    # the engine evaluated the final model with pycocotools (pr_curve.png, per_class_ap.md): its record
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in records if "eval" in r]
    if not evals:
        raise RuntimeError(f"{out / 'metrics.jsonl'} holds no evaluation of the trained model")
    coco = {**evals[-1]["eval"], "per_class": evals[-1].get("per_class")}
    t_eval = time.perf_counter()
    model = place_model(load_model(out / "last.pt"), dev)

    samples = load_split(data["val_ann"], data["val_images"])
    dets = detect(model, samples, dev)
    report = uncertainty_report(edge_records(dets, samples))
    names = model.class_names or [str(i) for i in range(NUM_CLASSES)]
    paths: dict[str, Any] = {"detections": [], "distributions": {}}
    for i in range(min(num_pictures, len(samples))):
        s, d = samples[i], dets[i]
        p = out / f"detections_{i:02d}.png"
        draw_detections(s["image"], d["boxes"], d["labels"], d["scores"], class_names=names, path=p,
                        gt_boxes=s["boxes"], score_thr=0.3, title=f"val {i}: detections >= 0.3 (ground truth dashed)")
        paths["detections"].append(str(p))
    low = None
    for kind, want_blur in (("blurred", True), ("sharp", False)):
        pick, pdets = _pick_example(samples, dets, want_blur), dets
        if pick is None:  # nothing near such an object: look again without a score threshold
            low = low if low is not None else detect(model, samples, dev, score_thr=0.0)
            pick, pdets = _pick_example(samples, low, want_blur), low
        if pick is None:
            log.warning("no %s object in the validation split to draw distributions for", kind)
            continue
        si, gj, di = pick
        s, d = samples[si], pdets[si]
        iou = float(box_iou(d["boxes"][di:di + 1].float(), torch.from_numpy(s["boxes"][gj:gj + 1]))[0, 0])
        std = ", ".join(f"{v:.1f}" for v in d["edge_std"][di].tolist())
        title = (f"{kind} object ({names[int(s['labels'][gj])]}, {EFFECTS[int(s['effects'][gj])]}): "
                 f"score {float(d['scores'][di]):.2f}, IoU {iou:.2f}, edge std l/t/r/b {std} px")
        p = out / f"distributions_{kind}.png"
        draw_distributions(s["image"], d["boxes"][di], d["distributions"][di], p, title=title,
                           stride=float(d["strides"][di]), gt_box=s["boxes"][gj], ambiguous=s["ambiguous"][gj].tolist())
        paths["distributions"][kind] = str(p)
    t_end = time.perf_counter()

    losses = [r for r in records if "loss" in r]
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
    result = {
        "coco": {k: coco.get(k) for k in keys} | {"per_class": coco.get("per_class")},
        "uncertainty": report,
        "final_losses": {k: v for k, v in losses[-1].items() if k.startswith("loss")} if losses else {},
        "timings_s": {"data": round(t_data - t0, 1), "train": round(t_train - t_data, 1), "pictures_and_analysis": round(t_end - t_eval, 1), "total": round(t_end - t0, 1)},
        "settings": {"epochs": epochs, "iterations": summary["iterations"], "seed": seed, "device": str(dev),
                     "image_size": image_size, "batch_size": batch_size, "lr": lr, "arch": arch,
                     "weights_backbone": weights_backbone, "train_images": train_images,
                     "val_images": val_images, "torch_threads": torch.get_num_threads(), "data": data["root"],
                     "model": _describe_model(cfg), "amp": cfg.train.amp, "channels_last": cfg.train.channels_last},
        "paths": {**paths, "out_dir": str(out), "metrics": str(out / "metrics.json"),
                  "loss_curves": str(out / "loss_curves.png"), "pr_curve": str(out / "pr_curve.png")},
    }
    write_json(out / "metrics.json", result, indent=2)
    log.info("demo done in %.0fs: AP %.3f AP50 %.3f; results in %s", t_end - t0, coco.get("AP") or 0, coco.get("AP50") or 0, out)
    return result
