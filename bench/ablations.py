"""The paper's ablations (GFL, Table 1 (a)-(c)) re-run on the demo's synthetic data, every variant with the same budget.

    python bench/ablations.py                          # all variants, seeds 0 1 2, writes runs/ablations/
    python bench/ablations.py --seeds 0 1 --epochs 4 --size 256
    python bench/ablations.py --only gfl atss          # some variants
    python bench/ablations.py --report                 # print the tables of the runs done so far

Each run trains ``gfl_resnet18_fpn`` (64-channel FPN and head, from scratch) through the engine of
``gfldet train`` with the demo's recipe (:func:`gfldet.demo.demo_config`: SGD, warm-up, cosine decay, flips,
backbone BatchNorm statistics from training images) for the same number of epochs, then evaluates it with
pycocotools (:func:`gfldet.engine.evaluate.evaluate`, AP = COCO AP@[.5:.95]) on the demo's validation split.
Only the representation settings of the model (``quality``, ``box``, ``reg_max``, ``bin_width``, ``assigner``,
anchors) differ between variants. Results go to ``<out>/results.jsonl`` (one line per run; a rerun skips the
runs recorded there), and the tables, mean +- std of AP over the seeds, to stdout and ``<out>/tables.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import load_average, machine_info, markdown_table  # noqa: E402

from gfldet.demo import demo_config, demo_data  # noqa: E402
from gfldet.engine.train import train  # noqa: E402

RETINA_ANCHORS = dict(octave_base_scale=4.0, scales_per_octave=3, anchor_ratios=[0.5, 1.0, 2.0])  # 9 per location

# name -> (description, model settings). Unset settings are GFL's (QFL, distribution n=16 delta=1, ATSS).
VARIANTS: dict[str, tuple[str, dict]] = {
    "gfl": ("GFL: QFL + distribution (n=16, delta=1) + DFL, ATSS", {}),
    "atss": ("ATSS baseline: FL + centerness + Dirac, GIoU", dict(quality="centerness", box="dirac")),
    "none_dirac": ("FL, no quality, Dirac", dict(quality="none", box="dirac")),
    "iou_dirac": ("FL + IoU branch, Dirac", dict(quality="iou", box="dirac")),
    "qfl_dirac": ("QFL, Dirac", dict(box="dirac")),
    "none_dist": ("FL, no quality, distribution + DFL", dict(quality="none")),
    "ctr_dist": ("FL + centerness branch, distribution + DFL", dict(quality="centerness")),
    "iou_dist": ("FL + IoU branch, distribution + DFL", dict(quality="iou")),
    "qfl_gauss": ("QFL, Gaussian (NLL + GIoU)", dict(box="gaussian")),
    "n4": ("GFL, n=4", dict(reg_max=4)),
    "n8": ("GFL, n=8", dict(reg_max=8)),
    "d05": ("GFL, n=16, delta=0.5", dict(bin_width=0.5)),
    "d2": ("GFL, n=16, delta=2", dict(bin_width=2.0)),
    "retina": ("RetinaNet-style: max-IoU, 9 anchors, FL, Dirac", dict(assigner="retina", quality="none", box="dirac", **RETINA_ANCHORS)),
    "retina_gfl": ("RetinaNet-style + QFL + DFL", dict(assigner="retina", **RETINA_ANCHORS)),
    "fcos": ("FCOS-style: centre sampling, FL + centerness, Dirac", dict(assigner="fcos", quality="centerness", box="dirac")),
    "fcos_gfl": ("FCOS-style + QFL + DFL", dict(assigner="fcos")),
}

TABLES = [
    ("Table 1(a): quality representation (box: Dirac delta, ATSS assignment)",
     [("none (FL)", "none_dirac"), ("centerness branch", "atss"), ("IoU branch", "iou_dirac"), ("joint, QFL", "qfl_dirac")]),
    ("Table 1(a'): quality representation with the general distribution box (n=16, delta=1, DFL; ATSS assignment)",
     [("none (FL)", "none_dist"), ("centerness branch", "ctr_dist"), ("IoU branch", "iou_dist"), ("joint, QFL (GFL)", "gfl")]),
    ("Table 1(b): box representation (quality: QFL, ATSS assignment)",
     [("Dirac delta", "qfl_dirac"), ("Gaussian", "qfl_gauss"), ("general, n=4, delta=1", "n4"), ("general, n=8, delta=1", "n8"),
      ("general, n=16, delta=1 (GFL)", "gfl"), ("general, n=16, delta=0.5", "d05"), ("general, n=16, delta=2", "d2")]),
    ("Table 1(c): assignment, baseline vs. + QFL + DFL",
     [("RetinaNet-style (FL, Dirac)", "retina"), ("RetinaNet-style + QFL + DFL", "retina_gfl"),
      ("FCOS-style (FL + centerness, Dirac)", "fcos"), ("FCOS-style + QFL + DFL", "fcos_gfl"),
      ("ATSS (FL + centerness, Dirac)", "atss"), ("ATSS + QFL + DFL (GFL)", "gfl")]),
]


def run_one(name: str, seed: int, args, data: dict[str, str]) -> dict:
    out = Path(args.out) / f"{name}-s{seed}"
    if out.exists():  # an interrupted run: start it again
        shutil.rmtree(out)
    cfg = demo_config(data, out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, device="cpu",
                      image_size=args.size)
    # the recorded tables (docs/ablations.md) used the demo's first model: a standard-width ResNet-18 with
    # frozen BatchNorm statistics set from 4 training batches, stem and layer1 frozen, four stacked head convs
    cfg.model.base_channels, cfg.model.norm_eval, cfg.model.frozen_stages, cfg.model.stacked_convs = 64, True, 1, 4
    cfg.train.norm_init_batches = 4
    for k, v in VARIANTS[name][1].items():
        setattr(cfg.model, k, v)
    cfg.train.log_interval = 1000
    t0 = time.perf_counter()
    summary = train(cfg, progress=False)
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in records if "eval" in r]
    losses = [r for r in records if "loss" in r]
    if not args.keep:
        for f in ("last.pt", "best.pt"):
            (out / f).unlink(missing_ok=True)
    return {"variant": name, "seed": seed, "eval": evals[-1]["eval"] if evals else None, "iterations": summary["iterations"],
            "wall_s": round(wall, 1), "final_losses": {k: v for k, v in losses[-1].items() if k.startswith("loss")} if losses else {}}


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * 100
    std = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def tables(results: list[dict]) -> str:
    by: dict[str, list[dict]] = {}
    for r in results:
        if r.get("eval") and r["eval"].get("AP") is not None:
            by.setdefault(r["variant"], []).append(r)
    parts = []
    for title, rows in TABLES:
        out_rows = []
        for label, name in rows:
            rs = sorted(by.get(name, []), key=lambda r: r["seed"])
            ap = [r["eval"]["AP"] for r in rs]
            out_rows.append([label, _fmt(ap), _fmt([r["eval"]["AP50"] for r in rs]), _fmt([r["eval"]["AP75"] for r in rs]),
                             " ".join(f"{a * 100:.1f}" for a in ap) or "-", len(rs)])
        parts.append(f"**{title}**\n\n" + markdown_table(["variant", "AP", "AP50", "AP75", "AP per seed", "seeds"], out_rows))
    return "\n\n".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ablations")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="run these variants only")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the 192 training images per run")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--size", type=int, default=192, help="input size (the demo's 256-px images are resized to it)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared 2-core machine)")
    p.add_argument("--keep", action="store_true", help="keep the checkpoints of every run")
    p.add_argument("--report", action="store_true", help="only print the tables of the recorded runs")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.jsonl"
    results = [json.loads(line) for line in res_path.read_text().splitlines() if line.strip()] if res_path.exists() else []
    if not args.report:
        data = demo_data(train_images=192)  # the recorded tables' 192 training images
        done = {(r["variant"], r["seed"]) for r in results}
        todo = [(n, s) for s in args.seeds for n in (args.only or list(VARIANTS)) if (n, s) not in done]
        print(f"{machine_info()}\n{len(todo)} runs: {args.epochs} epochs x batch {args.batch_size} at {args.size} px, "
              f"lr {args.lr}, seeds {args.seeds}", flush=True)
        for i, (name, seed) in enumerate(todo):
            r = run_one(name, seed, args, data)
            r["settings"] = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "size": args.size,
                             "threads": args.threads}
            results.append(r)
            with open(res_path, "a") as f:
                f.write(json.dumps(r) + "\n")
            ap = r["eval"]["AP"] if r["eval"] else None
            print(f"[{i + 1}/{len(todo)}] {name} seed {seed}: AP {ap}, {r['iterations']} it, {r['wall_s']} s, {load_average()}",
                  flush=True)
    text = tables(results)
    (out / "tables.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
