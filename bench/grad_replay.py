"""Replay the first iterations of ablation runs with one record per iteration: gradient norm and loss terms.

    python bench/grad_replay.py qfl_gauss_nll:1 qfl_gauss:1 gfl:1 --iters 300 --plot docs/img/gaussian-grad-norm.png

A run is ``VARIANT:SEED`` of bench/ablations.py at its recipe (``--recipe``; same data, model, threads, learning
rate schedule, initialisation and data order), stopped after ``--iters`` iterations and not evaluated. On the same
machine and torch a replay follows the recorded run's trajectory; with another thread count or CPU the sums run in
another order and a chaotic early phase can take another path. The gradient norm is the one ``train.grad_clip``
sees (of all parameters, before clipping; the step itself is clipped at the recipe's 35).

Prints per run the largest gradient norm and where it came, the median, how many iterations exceeded 10 x the
median, and the box loss (``loss_bbox``, 2 x (1 - GIoU) averaged over the positives with their quality weights)
of the last 50 iterations; ``--plot`` draws the gradient norms (log scale) and the box loss per iteration.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import machine_info, markdown_table  # noqa: E402
from ablations import RECIPES, VARIANTS, run_config  # noqa: E402

from gfldet.demo import demo_data  # noqa: E402
from gfldet.engine.train import train  # noqa: E402


def replay(name: str, seed: int, recipe: dict, data: dict[str, str], iters: int, tmp: Path) -> list[dict]:
    cfg = run_config(name, seed, recipe, data, tmp / f"{name}-s{seed}")
    cfg.train.log_interval = 1
    cfg.train.max_iters = iters
    cfg.data.val.ann = cfg.data.val.images = ""  # training only
    train(cfg, progress=False)
    records = [json.loads(line) for line in (tmp / f"{name}-s{seed}" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "grad_norm" in r]


def summary(label: str, recs: list[dict]) -> list:
    gn = [r["grad_norm"] for r in recs]
    top = max(range(len(gn)), key=gn.__getitem__)
    med = statistics.median(gn)
    tail = [r["loss_bbox"] for r in recs[-50:]]
    return [label, len(recs), f"{gn[top]:.1f}", recs[top]["iter"], f"{med:.2f}", sum(g > 10 * med for g in gn),
            f"{statistics.mean(tail):.3f}"]


def plot(runs: dict[str, list[dict]], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 5.2), dpi=110)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    for label, recs in runs.items():
        it = [r["iter"] for r in recs]
        ax1.plot(it, [r["grad_norm"] for r in recs], lw=1.0, label=label)
        ax2.plot(it, [r["loss_bbox"] for r in recs], lw=1.0, label=label)
    ax1.set_yscale("log")
    ax1.set_ylabel("gradient norm (before clipping)", fontsize=8)
    ax1.axhline(35.0, color="grey", ls=":", lw=1.0)
    ax1.text(1, 35.0, " clipped above 35", fontsize=7, color="grey", va="bottom")
    ax2.set_ylabel("loss_bbox = 2 (1 - GIoU)", fontsize=8)
    ax2.set_xlabel("iteration", fontsize=8)
    ax1.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    ax1.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="VARIANT:SEED")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="demo")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--plot", help="write the per-iteration curves to this PNG")
    args = p.parse_args()
    wanted = []
    for spec in args.runs:
        name, _, seed = spec.partition(":")
        if name not in VARIANTS or not seed.isdigit():
            raise SystemExit(f"{spec!r}: expected VARIANT:SEED with VARIANT one of {', '.join(VARIANTS)}")
        wanted.append((name, int(seed)))
    recipe = RECIPES[args.recipe]
    torch.set_num_threads(recipe["threads"])
    data = demo_data(train_images=recipe["train_images"], val_images=recipe["val_images"], image_size=256)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, seed in wanted:
            runs[f"{name} seed {seed}"] = replay(name, seed, recipe, data, args.iters, Path(tmp))
    print(machine_info())
    print(f"recipe {args.recipe}, first {args.iters} iterations, {recipe['threads']} torch threads\n")
    print(markdown_table(["run", "iterations", "max grad norm", "at iteration", "median", "> 10 x median",
                          "box loss, last 50"], [summary(k, v) for k, v in runs.items()]))
    if args.plot:
        plot(runs, Path(args.plot), f"first {args.iters} iterations of the ablation runs (recipe {args.recipe})")
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
