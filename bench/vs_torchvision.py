"""gfldet against torchvision's FCOS on the same synthetic scenes: both ResNet-18-FPN trained from scratch (the
default), or both on torchvision's ImageNet MobileNetV2 (``--arch gfl_mobilenet_v2_fpn --weights-backbone
IMAGENET1K_V1``).

    python bench/vs_torchvision.py                                    # 600 train / 150 val images, 192 px, 6 epochs
    python bench/vs_torchvision.py --epochs 12 --only gfldet          # another budget, one model
    python bench/vs_torchvision.py --train-images 16 --val-images 8 --epochs 1   # smoke run
    python bench/vs_torchvision.py --arch gfl_mobilenet_v2_fpn --weights-backbone IMAGENET1K_V1   # fine-tuned pair
    python bench/vs_torchvision.py --epochs 6 --fcos-epochs 8         # FCOS given more epochs (equal wall-clock time)

Data: the cluttered scenes of ``synth.scenes`` (8 shape classes with non-contiguous category ids,
textured objects on cluttered backgrounds, heavy on small objects, elongated sticks, occlusion, truncation, low
contrast), generated into the cache on first use (``scenes_data``: ``$GFLDET_CACHE`` or ``~/.cache/gfldet``, or
``--cache-dir``) and read by both models through ``gfldet.data.coco.CocoDetection``.

The two runs, one after the other in this process with torch's default threads, on the CPU:

1. **gfldet**: ``gfldet.config.Config()`` with only the architecture (``--arch``: ``gfl_resnet18_fpn`` or
   ``gfl_mobilenet_v2_fpn``), the backbone weights (``--weights-backbone``: none by default, i.e. training from
   scratch as gfldet does by default; ``IMAGENET1K_V1`` fine-tunes from torchvision's ImageNet weights, read from
   torch hub's cache, ``$TORCH_HOME/hub/checkpoints``), the data, the input size, epochs, batch size, seed, output
   folder, ``data.num_workers=0`` and ``train.device="cpu"`` set; every other setting is gfldet's default (for
   ImageNet weights that is gfldet's pretrained regime: ``frozen_stages=1``, BatchNorm on its running statistics,
   and the light neck / head of the small backbones). Trained and evaluated by ``gfldet.engine.train.train``; its
   AP is the evaluation after the last epoch (it evaluates every ``train.eval_interval`` epochs; all evaluations
   are timed and subtracted from its training time, which still includes its per-epoch checkpoints and plots).
2. **FCOS**: ``torchvision.models.detection.FCOS`` built as torchvision builds its detectors, on the backbone that
   matches ``--arch``, with ``FCOS(backbone, num_classes, min_size=size, max_size=size)`` and torchvision's other
   defaults (inference score threshold 0.2, NMS 0.6, 100 detections, its anchor generator of one anchor of size
   8, 16, 32, 64, 128 per level, which needs five levels at strides 8-128).

   * ``gfl_resnet18_fpn``: as ``fcos_resnet50_fpn`` builds its backbone, on a ResNet-18:
     ``resnet18(weights=W, norm_layer=FrozenBatchNorm2d if W else nn.BatchNorm2d)``, trainable layers 3 with
     weights, else all 5 (``_validate_trainable_layers``' rule), an FPN on layers 2-4 with
     ``LastLevelP6P7(256, 256)`` (``_resnet_fpn_extractor``). Without weights (the default) that is ordinary
     BatchNorm, nothing frozen.
   * ``gfl_mobilenet_v2_fpn``: as ``fasterrcnn_mobilenet_v3_large_fpn`` builds its backbone (torchvision has no
     MobileNetV2 detector; its MobileNet builders all go through ``_mobilenet_extractor``):
     ``mobilenet_v2(weights=W, norm_layer=FrozenBatchNorm2d if W else nn.BatchNorm2d)`` with W the same
     ``MobileNet_V2_Weights`` member as gfldet's (loaded by torchvision's own ``weights.get_state_dict``, i.e.
     from torch hub's cache when the file is there), then ``_mobilenet_extractor(backbone, fpn=True,
     trainable_layers=3 if W else 6, returned_layers=[2, 3, 5], extra_blocks=LastLevelP6P7(256, 256))``.
     ``_mobilenet_extractor`` cuts ``features`` at its "stage indices", layer 0 plus every block with stride 2 plus
     the last layer: for MobileNetV2 ``features[0, 2, 4, 7, 14, 18]``, whose outputs are at strides 2, 4, 8, 16,
     32, 32 (channels 32, 24, 32, 64, 160, 1280). ``returned_layers`` indexes that list, and its default
     ``[4, 5]`` (the last two) gives two maps, both at stride 32 (160 and 1280 channels): with P6/P7 only four
     levels, which FCOS's five-level anchor generator rejects, and no stride-8 or -16 map for small objects. The
     last three stages, ``[3, 4, 5]``, would be strides 16 / 32 / 32 just as badly. ``[2, 3, 5]`` is the choice
     that gives the FPN strides 8 / 16 / 32 (then P6 / P7 from P5 at 64 / 128, as in ``fcos_resnet50_fpn``) and
     keeps the whole ``features`` including the 1280-channel last convolution (as torchvision's MobileNet
     detectors and gfldet's ``TorchvisionBackbone`` do; ``[2, 3, 4]`` would cut the network after
     ``features[14]``). The API only returns the outputs of the stage-index layers, so C3 and C4 are the outputs
     of the first stride-8 and stride-16 blocks (``features[4]``, 32 channels; ``features[7]``, 64 channels),
     not of the last ones at those strides (``features[6]`` and ``features[13]``, 32 and 96 channels) that gfldet
     takes. ``trainable_layers=3`` (torchvision's default with weights for its MobileNet detectors) freezes
     ``features[0:7]`` (everything up to stride 8; gfldet's regime freezes only the stem and stride-4 layers,
     ``features[0:4]``); FrozenBatchNorm2d everywhere in the backbone with weights, as torchvision's builders.
     Without weights: BatchNorm2d and ``trainable_layers=6``, nothing frozen.

   Trained with torchvision's detection reference recipe (references/detection/train.py and engine.py): SGD
   momentum 0.9, weight decay 1e-4, lr ``--fcos-lr`` (0.01, their FCOS command), a linear warm-up from 0.001x over
   min(1000, iterations per epoch - 1) iterations of the first epoch, MultiStepLR x0.1 at epochs 16 and 22 of 26,
   scaled to FCOS's epoch count (``--fcos-epochs``, by default ``--epochs``; give it another count to equalise
   the two runs' wall-clock training time); batch ``--batch``, horizontal flips with probability 0.5. Same images,
   same batches in the same order and the same flips as gfldet's run (the same sampler and dataset seeds).

Both are evaluated by the same function, ``gfldet.engine.evaluate.evaluate`` (pycocotools through
``coco_metrics``, against the val annotation file, batch ``--batch``), FCOS's labels mapped back to the real
category ids. Printed: a table (params, iterations, train and eval seconds, AP / AP50 / AP75 / APs / APm / APl) and
the ratios gfldet / FCOS, the train-time ratio on a line of its own with each run's epochs and seconds (and the
``--fcos-epochs`` that would about equalise the times); the same goes to ``--out``/results.json with the machine
(lscpu model name) and versions.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import cpu_model, load_average, markdown_table, timed_evaluations  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402

import gfldet.engine.evaluate as gfl_eval  # noqa: E402
from gfldet.data.coco import CocoDetection, collate  # noqa: E402
from gfldet.data.folders import cached_splits, claim_dir as _claim_dir, generation_workers  # noqa: E402
from gfldet.data.synthetic import write_coco  # noqa: E402
from synth.scenes import scenes_data  # noqa: E402


METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
# torchvision's reference FCOS schedule: 26 epochs, lr x0.1 at epochs 16 and 22
REF_EPOCHS, REF_MILESTONES = 26, (16, 22)
# --arch -> torchvision's backbone network of the FCOS peer
FCOS_BACKBONES = {"gfl_resnet18_fpn": "resnet18", "gfl_mobilenet_v2_fpn": "mobilenet_v2"}
# _mobilenet_extractor's returned_layers for MobileNetV2 (indices into its stage indices features[0, 2, 4, 7, 14,
# 18]): features[4], [7], [18] at strides 8, 16, 32 (see the module docstring)
MOBILENET_RETURNED_LAYERS = [2, 3, 5]


def backbone_weights(arch: str, name: str | None) -> Any:
    """The torchvision weights enum member ``name`` (e.g. ``IMAGENET1K_V1``) of ``arch``'s backbone, or None."""
    if name is None:
        return None
    from torchvision.models import get_model_weights

    enum = get_model_weights(FCOS_BACKBONES[arch])
    try:
        return enum[name]
    except KeyError:
        raise ValueError(f"{name!r} is not one of {enum.__name__}'s {[w.name for w in enum]}") from None


def model_names(args: argparse.Namespace) -> tuple[str, str]:
    """The table's names of the gfldet run and the FCOS run."""
    tag = " (ImageNet)" if args.weights_backbone else ""
    return f"gfldet {args.arch}{tag}", f"torchvision FCOS {FCOS_BACKBONES[args.arch]}_fpn{tag}"


def shapes_cache_name(train_images: int, val_images: int, image_size: int, seed: int, num_classes: int = 6) -> str:
    """The cache folder of :func:`shapes_data`'s splits (what they are generated from)."""
    return f"shapes{num_classes}-{train_images}x{val_images}-{image_size}px-s{seed}"


def shapes_data(cache_dir: str | None, train_images: int, val_images: int, image_size: int, seed: int,
                num_classes: int = 6) -> dict[str, str]:
    """The demo's generator (``gfldet.data.synthetic``) with ``num_classes`` shape classes, objects sharp, blurred,
    faded or occluded: the kind of data set issue 12 was judged on (600 / 150 images of 192 px, 6 classes), which
    gfldet's defaults were not tuned on. Train and val come from the seeds ``seed + 101`` and ``seed + 202``."""
    name = shapes_cache_name(train_images, val_images, image_size, seed, num_classes)

    def generate(folder: Path) -> dict[str, Any]:
        size, workers = (image_size, image_size), generation_workers()
        write_coco(folder / "train", train_images, seed + 101, size, num_classes=num_classes, workers=workers)
        write_coco(folder / "val", val_images, seed + 202, size, num_classes=num_classes, workers=workers)
        return {"train_images": train_images, "val_images": val_images, "image_size": image_size, "seed": seed,
                "num_classes": num_classes}

    return cached_splits(name, generate, cache_dir, what="shapes data set")


def _n_params(model: nn.Module) -> int:
    """Parameters, counting a FrozenBatchNorm2d's scale and shift (buffers there) as the BatchNorm2d parameters
    they are, so that a backbone with frozen norms counts as the same network with ordinary ones."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    frozen = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, FrozenBatchNorm2d))
    return sum(p.numel() for p in model.parameters()) + frozen


# --------------------------------------------------------------------------- gfldet
def run_gfldet(data: dict[str, str], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from gfldet.config import Config
    from gfldet.engine.train import train
    from gfldet.models.io import load_model

    cfg = Config()
    cfg.model.arch = args.arch
    cfg.model.weights_backbone = args.weights_backbone
    cfg.data.train.ann, cfg.data.train.images = data["train_ann"], data["train_images"]
    cfg.data.val.ann, cfg.data.val.images = data["val_ann"], data["val_images"]
    cfg.data.num_workers = 0
    cfg.input.min_size = cfg.input.max_size = args.size
    cfg.train.epochs, cfg.train.batch_size, cfg.train.seed = args.epochs, args.batch, args.seed
    cfg.train.device = "cpu"
    cfg.out_dir = str(_claim_dir(out / "gfldet"))

    with timed_evaluations() as eval_seconds:
        t0 = time.perf_counter()
        result = train(cfg, progress=not args.no_progress)
        total = time.perf_counter() - t0
    metrics = result["last_eval"] or {}
    n_all = _n_params(load_model(Path(cfg.out_dir) / "last.pt"))
    return {
        "model": model_names(args)[0],
        "arch": args.arch,
        "weights_backbone": args.weights_backbone,
        "epochs": args.epochs,
        "params": n_all,
        "iterations": int(result["iterations"]),
        "train_s": total - sum(eval_seconds),
        "eval_s": eval_seconds[-1] if eval_seconds else float("nan"),
        "evaluations": len(eval_seconds),
        "all_evals_s": sum(eval_seconds),
        **{k: metrics.get(k) for k in METRICS},
        "run_dir": cfg.out_dir,
        # the run's resolved config (the automatic settings gfldet chose for this regime, from scratch or
        # pretrained, filled in)
        "config": yaml.safe_load((Path(cfg.out_dir) / "config.yaml").read_text()),
    }


# --------------------------------------------------------------------------- torchvision FCOS
def build_fcos(num_classes: int, size: int, arch: str = "gfl_resnet18_fpn", weights: Any = None,
               max_size: int | None = None) -> nn.Module:
    """FCOS on ``arch``'s backbone, built as torchvision builds its detectors (see the module docstring).

    ``gfl_resnet18_fpn``: ResNet-18-FPN configured as ``torchvision.models.detection.fcos_resnet50_fpn`` configures
    it (without weights: ordinary BatchNorm, nothing frozen; with: FrozenBatchNorm2d, 3 trainable layers; FPN on
    layers 2-4 plus P6/P7 from P5). ``gfl_mobilenet_v2_fpn``: MobileNetV2 through ``_mobilenet_extractor`` as
    torchvision's MobileNet detectors (with weights: FrozenBatchNorm2d, 3 trainable layers; without: BatchNorm2d,
    all 6), the FPN on the stride-8, -16 and -32 outputs (``MOBILENET_RETURNED_LAYERS``) plus P6/P7 from P5.
    ``weights``: a torchvision weights enum member of the backbone (:func:`backbone_weights`) or None.

    ``num_classes`` follows torchvision's documented convention, "including the background": pass the number of
    real classes + 1 and give labels 1..C (FCOS's sigmoid classifier never makes channel 0 a positive)."""
    from torchvision.models import mobilenet_v2, resnet18
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    norm_layer = FrozenBatchNorm2d if weights is not None else nn.BatchNorm2d
    if arch == "gfl_resnet18_fpn":
        backbone = resnet18(weights=weights, norm_layer=norm_layer)
        backbone = _resnet_fpn_extractor(backbone, 3 if weights is not None else 5, returned_layers=[2, 3, 4],
                                         extra_blocks=LastLevelP6P7(256, 256))
    elif arch == "gfl_mobilenet_v2_fpn":
        backbone = mobilenet_v2(weights=weights, norm_layer=norm_layer)
        backbone = _mobilenet_extractor(backbone, True, 3 if weights is not None else 6,
                                        returned_layers=MOBILENET_RETURNED_LAYERS,
                                        extra_blocks=LastLevelP6P7(256, 256))
    else:
        raise ValueError(f"no FCOS peer for arch {arch!r}; one of {sorted(FCOS_BACKBONES)}")
    return FCOS(backbone, num_classes, min_size=size, max_size=size if max_size is None else max_size)


class FCOSForEval(nn.Module):
    """FCOS behind gfldet's detector interface for ``gfldet.engine.evaluate.evaluate``: uint8 images in, labels
    0..C-1 out (FCOS's label ``l`` is class ``l - 1``; the never-trained background channel 0 is dropped)."""

    def __init__(self, fcos: nn.Module) -> None:
        super().__init__()
        self.fcos = fcos

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        dets = self.fcos([im.float().div(255) for im in images])
        out = []
        for d in dets:
            keep = d["labels"] > 0
            out.append({"boxes": d["boxes"][keep], "scores": d["scores"][keep], "labels": d["labels"][keep] - 1})
        return out


def run_fcos(data: dict[str, str], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from torch.utils.data import DataLoader, DistributedSampler
    from tqdm.auto import tqdm

    torch.manual_seed(args.seed)
    train_set = CocoDetection(data["train_ann"], data["train_images"], train=True, flip_prob=0.5, seed=args.seed)
    val_set = CocoDetection(data["val_ann"], data["val_images"], train=False)
    weights = backbone_weights(args.arch, args.weights_backbone)
    # min_size = max_size = --size here; bench/recipes.py's non-square data sets give a max_size of their own
    model = build_fcos(train_set.num_classes + 1, args.size, args.arch, weights, getattr(args, "max_size", None))
    model.train()
    epochs = args.fcos_epochs

    # the same order as gfldet's engine: a one-replica DistributedSampler seeded with the run's seed, set_epoch per
    # epoch, cut into batches in order (the last one partial); CocoDetection's flips depend on (seed, epoch, index)
    sampler = DistributedSampler(train_set, num_replicas=1, rank=0, shuffle=True, seed=args.seed, drop_last=False)
    iters_per_epoch = max(1, math.ceil(len(sampler) / args.batch))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.fcos_lr, momentum=0.9, weight_decay=1e-4)
    # the reference's MultiStepLR milestones (16, 22 of 26 epochs) scaled to this run's epochs
    milestones = [max(1, round(epochs * m / REF_EPOCHS)) for m in REF_MILESTONES]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    # the reference: min(1000, iterations per epoch - 1); --fcos-warmup-iters sets another length (issue 12's
    # reporter gave FCOS 300)
    warmup_iters = min(1000, iters_per_epoch - 1) if args.fcos_warmup_iters is None else args.fcos_warmup_iters

    # the reference: LinearLR from 1/1000, stepped per iteration (within epoch 0 at its default length)
    warmup = (torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / 1000, total_iters=warmup_iters)
              if warmup_iters > 0 else None)
    it = 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        order = list(sampler)
        batches = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]
        loader = DataLoader(train_set, batch_sampler=batches, collate_fn=collate, num_workers=0)
        bar = tqdm(loader, total=len(batches), desc=f"fcos epoch {epoch + 1}/{epochs}", dynamic_ncols=True,
                   disable=args.no_progress)
        for images, targets in bar:
            images = [im.float().div_(255) for im in images]
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"FCOS: non-finite loss at epoch {epoch + 1}, iteration {it + 1}: "
                                         + ", ".join(f"{k} = {v.item()}" for k, v in losses.items()))
            lr = optimizer.param_groups[0]["lr"]  # the rate of this step
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if warmup is not None and it < warmup_iters:
                warmup.step()
            it += 1
            terms = {k.replace("bbox_", ""): f"{v.item():.3f}" for k, v in losses.items()}
            bar.set_postfix(loss=f"{loss.item():.3f}", **terms, lr=f"{lr:.2e}")
        bar.close()
        scheduler.step()
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    metrics = gfl_eval.evaluate(FCOSForEval(model), val_set, batch_size=args.batch, device="cpu", num_workers=0,
                                progress=not args.no_progress, out_dir=str(_claim_dir(out / "fcos")))
    eval_s = time.perf_counter() - t0
    # torchvision's FCOS keeps detections scoring >= 0.2 by default, gfldet >= 0.05 (the paper's test setting); a
    # lower threshold can only add detections and raise COCO AP, so FCOS is also evaluated at 0.05 (FCOS's row
    # and the ratios use the better of the two)
    default_thresh = model.score_thresh
    model.score_thresh = 0.05
    low = gfl_eval.evaluate(FCOSForEval(model), val_set, batch_size=args.batch, device="cpu", num_workers=0,
                            progress=not args.no_progress, out_dir=str(_claim_dir(out / "fcos-thr0.05")))
    model.score_thresh = default_thresh
    at_default = {k: metrics.get(k) for k in METRICS}
    at_low = {k: low.get(k) for k in METRICS}
    best = at_low if (at_low["AP"] or 0) > (at_default["AP"] or 0) else at_default
    n_all = _n_params(model)
    return {
        "model": model_names(args)[1],
        "arch": FCOS_BACKBONES[args.arch] + "_fpn",
        "weights_backbone": str(weights) if weights is not None else None,
        "epochs": epochs,
        "params": n_all,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "iterations": it,
        "train_s": train_s,
        "eval_s": eval_s,
        "evaluations": 2,
        "all_evals_s": eval_s,
        **best,
        "score_thresh_used": 0.05 if best is at_low else default_thresh,
        "metrics_at_default_score_thresh": at_default,
        "metrics_at_score_thresh_0.05": at_low,
        "settings": {"lr": args.fcos_lr, "momentum": 0.9, "weight_decay": 1e-4, "warmup_iters": warmup_iters,
                     "warmup_factor": 1e-3, "milestones": milestones, "gamma": 0.1,
                     "num_classes": train_set.num_classes + 1, "epochs": epochs,
                     "backbone_norm": "FrozenBatchNorm2d" if weights is not None else "BatchNorm2d",
                     "trainable_backbone_layers": (3 if weights is not None
                                                   else 5 if args.arch == "gfl_resnet18_fpn" else 6),
                     "returned_layers": ([2, 3, 4] if args.arch == "gfl_resnet18_fpn"
                                         else MOBILENET_RETURNED_LAYERS),
                     "score_thresh": model.score_thresh, "nms_thresh": model.nms_thresh,
                     "detections_per_img": model.detections_per_img, "flip_prob": 0.5},
    }


# --------------------------------------------------------------------------- report
def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _ratio(a: Any, b: Any) -> float | None:
    """``a / b``, or ``None`` when either is missing or NaN or ``b`` is 0."""
    if a is None or b is None or math.isnan(float(a)) or math.isnan(float(b)) or float(b) == 0:
        return None
    return float(a) / float(b)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-images", type=int, default=600)
    ap.add_argument("--val-images", type=int, default=150)
    ap.add_argument("--size", type=int, default=192, help="image side; also both models' min_size = max_size")
    ap.add_argument("--arch", choices=tuple(FCOS_BACKBONES), default="gfl_resnet18_fpn",
                    help="gfldet's builder; FCOS gets the same torchvision backbone network")
    ap.add_argument("--weights-backbone", default=None, metavar="NAME",
                    help="torchvision ImageNet weights of the backbone for both models, e.g. IMAGENET1K_V1 (read "
                         "from $TORCH_HOME/hub/checkpoints, else downloaded); default: none, both from scratch")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--fcos-epochs", type=int, default=None,
                    help="FCOS's epochs (default: --epochs); another count equalises the wall-clock training time")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="data order, flips and initialisation of both runs")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the generated scenes")
    ap.add_argument("--data", choices=("scenes", "shapes6"), default="scenes",
                    help="scenes: synth.scenes; shapes6: the demo's generator with 6 classes")
    ap.add_argument("--fcos-lr", type=float, default=0.01, help="the reference's FCOS command")
    ap.add_argument("--fcos-warmup-iters", type=int, default=None,
                    help="FCOS warm-up length (default: the reference's min(1000, iterations per epoch - 1))")
    ap.add_argument("--out", default="runs/vs_torchvision")
    ap.add_argument("--cache-dir", default=None, help="data cache (default $GFLDET_CACHE or ~/.cache/gfldet)")
    ap.add_argument("--only", choices=("gfldet", "fcos", "both"), default="both")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("-v", "--verbose", action="store_true", help="log gfldet's INFO messages")
    args = ap.parse_args(argv)
    if args.fcos_epochs is None:
        args.fcos_epochs = args.epochs
    if args.epochs < 1 or args.fcos_epochs < 1:
        ap.error("--epochs and --fcos-epochs must be >= 1")
    try:  # a bad weights name fails here, not after gfldet's run
        backbone_weights(args.arch, args.weights_backbone)
    except ValueError as e:
        ap.error(f"--weights-backbone: {e}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__, "python": platform.python_version()}
    try:
        import torchvision

        machine["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - a dependency of gfldet
        pass
    print(f"CPU: {machine['cpu']}, {machine['logical_cores']} logical cores, torch {machine['torch']} "
          f"({machine['torch_threads']} threads), torchvision {machine.get('torchvision', '?')}, {load_average()}")

    t0 = time.perf_counter()
    make = scenes_data if args.data == "scenes" else shapes_data
    data = make(args.cache_dir, train_images=args.train_images, val_images=args.val_images,
                image_size=args.size, seed=args.data_seed)
    data_s = time.perf_counter() - t0
    print(f"data: {data['root']} ({data_s:.1f} s)")

    runs: dict[str, dict[str, Any]] = {}
    if args.only in ("gfldet", "both"):
        runs["gfldet"] = run_gfldet(data, args, out)
    if args.only in ("fcos", "both"):
        try:
            runs["fcos"] = run_fcos(data, args, out)
        except FloatingPointError as e:  # a diverged run is a result of the recipe, not a failure of the bench
            print(f"FCOS diverged: {e}")
            runs["fcos"] = {"model": model_names(args)[1] + " (diverged)", "diverged": str(e), "params": 0,
                            "iterations": 0, "train_s": float("nan"), "eval_s": float("nan"),
                            **{k: 0.0 for k in METRICS}}

    headers = ["model", "params (M)", "iterations", "train s", "eval s", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    rows = [[r["model"] + (f" (score >= {r['score_thresh_used']:g})" if "score_thresh_used" in r else ""),
             f"{r['params'] / 1e6:.2f}", r["iterations"], f"{r['train_s']:.0f}", f"{r['eval_s']:.1f}",
             *(_f(r[k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))] for r in runs.values()]
    print()
    print(markdown_table(headers, rows))
    ratios: dict[str, float | None] = {}
    if len(runs) == 2:
        g, f = runs["gfldet"], runs["fcos"]
        ratios = {"AP": _ratio(g["AP"], f["AP"]), "AP50": _ratio(g["AP50"], f["AP50"]),
                  "train_s": _ratio(g["train_s"], f["train_s"]), "eval_s": _ratio(g["eval_s"], f["eval_s"])}
        print(f"\ngfldet / FCOS: AP {_f(ratios['AP'], 2)}x, AP50 {_f(ratios['AP50'], 2)}x, "
              f"train time {_f(ratios['train_s'], 2)}x, eval time {_f(ratios['eval_s'], 2)}x")
        # FCOS's epochs that would take gfldet's training time at FCOS's measured seconds per epoch
        equal = (max(1, round(args.fcos_epochs * ratios["train_s"])) if ratios["train_s"] is not None else None)
        ratios["fcos_epochs_for_equal_train_s"] = equal
        print(f"train seconds gfldet / FCOS: {_f(ratios['train_s'], 2)}x (gfldet {args.epochs} epoch(s) "
              f"{g['train_s']:.1f} s, FCOS {args.fcos_epochs} epoch(s) {f['train_s']:.1f} s; equal times would need "
              f"about --fcos-epochs {_f(equal)})")
    print(f"({load_average()} after the runs)")

    results = {
        "machine": machine,
        "args": vars(args),
        "data": {**data, "seconds": data_s},
        "runs": runs,
        "ratios_gfldet_over_fcos": ratios,
        "notes": ("train_s excludes evaluation (gfldet: all its periodic evaluations subtracted; it still includes "
                  "gfldet's per-epoch checkpoints and plots); eval_s is the final evaluation on the val split; "
                  "FCOS milestones are the reference's 16/22 of 26 epochs scaled to --fcos-epochs (default "
                  "--epochs); ratios_gfldet_over_fcos.fcos_epochs_for_equal_train_s is --fcos-epochs times the "
                  "train_s ratio, rounded, at least 1"),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
