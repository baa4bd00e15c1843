"""The paper's ablations (GFL, Table 1 (a)-(c), and GFLV2 against GFL) re-run on the demo's synthetic data.

    python bench/ablations.py                                   # the study at the demo's recipe, seeds 0 1 2
    python bench/ablations.py --only gfl atss --seeds 0 1 2 3   # some variants / more seeds
    python bench/ablations.py --extend 6                        # seeds 0-5 for the rows still unresolved
    python bench/ablations.py --report --write-docs docs/ablations.md
    python bench/ablations.py --recipe tiny                     # the first, 144-iteration study

Each run trains one variant through the engine of ``gfldet train`` with a fixed recipe (``--recipe``) and
evaluates it with pycocotools on a validation split of the same generator. Only the representation settings of
the model (``quality``, ``box``, ``reg_max``, ``bin_width``, ``assigner``, anchors) differ between variants; a seed
fixes the initialisation and the data order, so the runs of one seed are paired.

The study is resumable: every finished run is appended to ``bench/results/ablations-<recipe>.jsonl`` (kept in the
repository) with the commit, CPU model and recipe it ran with, and the next invocation skips the runs recorded
there, so the study can be completed across sittings. A run recorded under another recipe of the same name is
refused rather than mixed in. The tables (mean +- std of AP, AP50, AP75; per-seed paired differences against GFL
with a 95% t interval; whether the paper's direction is reproduced) are printed, and ``--write-docs`` puts them
into the generated block of docs/ablations.md, with the differences drawn in ``docs/img/ablations-<recipe>.png``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _ablation_report import TABLES, by_variant, forest_plot, header, report, write_docs  # noqa: E402
from _stats import paired, verdict  # noqa: E402
from _util import cpu_model, load_average, machine_info  # noqa: E402

from gfldet.demo import demo_config, demo_data  # noqa: E402
from gfldet.engine.amp import cpu_has_native_bf16  # noqa: E402
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
    "qfl_gauss": ("QFL, Gaussian (KL-Loss: NLL with a smooth-L1 error, + GIoU)", dict(box="gaussian")),
    "qfl_gauss_nll": ("QFL, Gaussian (plain NLL + GIoU; box='gaussian' until 2026-12-01)", dict(box="gaussian_nll")),
    "n4": ("GFL, n=4", dict(reg_max=4)),
    "n8": ("GFL, n=8", dict(reg_max=8)),
    "d05": ("GFL, n=16, delta=0.5", dict(bin_width=0.5)),
    "d2": ("GFL, n=16, delta=2", dict(bin_width=2.0)),
    "retina": ("RetinaNet-style: max-IoU, 9 anchors, FL, Dirac", dict(assigner="retina", quality="none", box="dirac", **RETINA_ANCHORS)),
    "retina_gfl": ("RetinaNet-style + QFL + DFL", dict(assigner="retina", **RETINA_ANCHORS)),
    "fcos": ("FCOS-style: centre sampling, FL + centerness, Dirac", dict(assigner="fcos", quality="centerness", box="dirac")),
    "fcos_gfl": ("FCOS-style + QFL + DFL", dict(assigner="fcos")),
    "gflv2": ("GFLV2: DGQP (top-4 + mean of each edge's distribution) + QFL + DFL", dict(quality="dgqp")),
}

# A recipe fixes everything but the representation. "demo" is gfldet.demo.demo_config with the budget of a CPU
# with bf16 units (9 epochs, bfloat16 autocast) pinned, so that every machine runs the same recipe; "tiny" is the
# first study's (144 iterations of a standard-width ResNet-18, docs/ablations.md's second section).
RECIPES: dict[str, dict] = {
    "demo": dict(train_images=1500, val_images=500, size=256, epochs=9, batch_size=8, lr=0.06, amp=True, threads=2,
                 model="the demo's: gfl_resnet18_fpn, 24 base channels, trainable BN, 64-ch FPN/head, 2 stacked convs",
                 model_settings={}, train_settings={}),
    "tiny": dict(train_images=192, val_images=48, size=192, epochs=3, batch_size=4, lr=0.01, amp=False, threads=1,
                 model="gfl_resnet18_fpn, 64 base channels, frozen BN + stem/layer1, 64-ch FPN/head, 4 stacked convs",
                 model_settings=dict(base_channels=64, norm_eval=True, frozen_stages=1, stacked_convs=4),
                 train_settings=dict(norm_init_batches=4)),
}
# Which variants a recipe's study runs by default, most telling first (Table 1(c), QFL and DFL alone, GFLV2).
STUDIES = {
    "demo": ["gfl", "atss", "qfl_dirac", "none_dist", "gflv2", "ctr_dist", "iou_dist", "qfl_gauss", "n8", "qfl_gauss_nll"],
    "tiny": [v for v in VARIANTS if v not in ("gflv2", "qfl_gauss_nll")],
}


def run_config(name: str, seed: int, recipe: dict, data: dict[str, str], out: Path):
    r = recipe
    cfg = demo_config(data, out, epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"], seed=seed, device="cpu",
                      image_size=r["size"])
    cfg.train.amp = r["amp"]
    for k, v in r["model_settings"].items():
        setattr(cfg.model, k, v)
    for k, v in r["train_settings"].items():
        setattr(cfg.train, k, v)
    for k, v in VARIANTS[name][1].items():
        setattr(cfg.model, k, v)
    cfg.train.log_interval = 1000
    return cfg


def run_one(name: str, seed: int, recipe_name: str, out_root: Path, data: dict[str, str], commit: str) -> dict:
    recipe = RECIPES[recipe_name]
    out = out_root / f"{name}-s{seed}"
    if out.exists():  # an interrupted run: start it again
        shutil.rmtree(out)
    t0 = time.perf_counter()
    summary = train(run_config(name, seed, recipe, data, out), progress=False)
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in records if "eval" in r]
    losses = [r for r in records if "loss" in r]
    for f in ("last.pt", "best.pt"):
        (out / f).unlink(missing_ok=True)
    return {"recipe": recipe_name, "recipe_settings": recipe, "variant": name, "seed": seed,
            "eval": evals[-1]["eval"] if evals else None, "iterations": summary["iterations"], "wall_s": round(wall, 1),
            "final_losses": {k: v for k, v in losses[-1].items() if k.startswith("loss")} if losses else {},
            "commit": commit, "cpu": cpu_model(), "device": "cpu", "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}


def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def load_results(path: Path, recipe_name: str) -> list[dict]:
    if not path.exists():
        return []
    results = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}: line {i} is not JSON ({e}); fix or remove that line") from None
        if r.get("recipe") != recipe_name or r.get("recipe_settings") != RECIPES[recipe_name]:
            raise SystemExit(f"{path}: line {i} ({r.get('variant')} seed {r.get('seed')}) was run with recipe "
                             f"{r.get('recipe')} {r.get('recipe_settings')}, not {recipe_name} {RECIPES[recipe_name]}; "
                             "a changed recipe needs its own name and results file")
        results.append(r)
    return results


def plan(results: list[dict], variants: list[str], seeds: list[int], extend: int | None,
         rows: list | None = None) -> list[tuple[str, int]]:
    """Runs still to do: every (variant, seed) asked for, seed by seed; with ``extend``, seeds 0..``extend`` - 1 of
    every asked-for row whose verdict against its reference (``rows``: the recipe's tables, default the demo's) is
    still *unresolved* or has too few seeds, and of that row's reference (GFL, or for the tiny recipe's
    RetinaNet / FCOS rows their + QFL + DFL versions). With 3 seeds t is 4.3, so a difference 3.7 SE from 0 can
    still be unresolved; an "about equal" row stops once its interval lies within ±1 AP (:func:`_stats.verdict`).

    Extending only the rows that are still open is sequential testing: a row that resolved at 3 seeds by chance
    keeps its verdict, so the intervals' 95% holds per row at its final seed count, not for the study as a whole
    (docs/ablations.md says so in its header)."""
    done = {(r["variant"], r["seed"]) for r in results}
    want = [(n, s) for s in seeds for n in variants]
    if extend:
        ap = by_variant(results, "AP")
        open_rows = []
        for _, table_rows in (rows if rows is not None else TABLES["demo"]):
            for _, name, ref, sign in table_rows:
                if name in variants and name != ref and name in ap and ref in ap:
                    if verdict(paired(ap[name], ap[ref]), sign) in ("unresolved", "too few seeds"):
                        open_rows.append((name, ref))
        want += [(n, s) for s in range(extend) for name, ref in open_rows for n in (ref, name)]
    todo = []
    for key in want:
        if key not in done and key not in todo:
            todo.append(key)
    return todo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", choices=sorted(RECIPES), default="demo")
    p.add_argument("--results", help="results file (default: bench/results/ablations-<recipe>.jsonl)")
    p.add_argument("--out", help="run folders (default: runs/ablations-<recipe>)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="run these variants only, in this order")
    p.add_argument("--extend", type=int, metavar="N",
                   help="also run seeds 0..N-1 of the rows whose verdict against their reference is still "
                        "unresolved (and of their reference)")
    p.add_argument("--max-runs", type=int, help="stop after this many runs (the rest stay for the next sitting)")
    p.add_argument("--report", action="store_true", help="only print the tables of the recorded runs")
    p.add_argument("--write-docs", metavar="MD", help="replace the generated block of this markdown file")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    recipe = RECIPES[args.recipe]
    here = Path(__file__).resolve().parent
    res_path = Path(args.results) if args.results else here / "results" / f"ablations-{args.recipe}.jsonl"
    results = load_results(res_path, args.recipe)
    if not args.report:
        todo = plan(results, args.only or STUDIES[args.recipe], args.seeds, args.extend,
                    TABLES[args.recipe])[:args.max_runs]
        torch.set_num_threads(recipe["threads"])
        if recipe["amp"] and not cpu_has_native_bf16():
            logging.warning("this CPU has no bf16 units: the recipe's bfloat16 autocast runs emulated, several times "
                            "slower (the results are still comparable)")
        data = demo_data(train_images=recipe["train_images"], val_images=recipe["val_images"], image_size=256)
        commit = git_commit()
        print(f"{machine_info()}\ngfldet {commit}; recipe {args.recipe} {recipe}\n{len(todo)} runs to do", flush=True)
        res_path.parent.mkdir(parents=True, exist_ok=True)
        out_root = Path(args.out or f"runs/ablations-{args.recipe}")
        for i, (name, seed) in enumerate(todo):
            r = run_one(name, seed, args.recipe, out_root, data, commit)
            results.append(r)
            with open(res_path, "a") as f:
                f.write(json.dumps(r) + "\n")
            ap = r["eval"]["AP"] if r["eval"] else None
            print(f"[{i + 1}/{len(todo)}] {name} seed {seed}: AP {ap}, {r['iterations']} it, {r['wall_s']} s, "
                  f"{load_average()}", flush=True)
    rel = os.path.relpath(res_path, here.parent)
    text = report(results, TABLES[args.recipe])
    print(header(results, args.recipe, rel) + "\n\n" + text)
    if args.write_docs:
        md = Path(args.write_docs)
        figure = forest_plot(results, TABLES[args.recipe], md.parent / "img" / f"ablations-{args.recipe}.png",
                             f"Ablations at recipe {args.recipe!r}: {len(results)} runs from {rel}")
        write_docs(md, args.recipe, text, results, rel, os.path.relpath(figure, md.parent))


if __name__ == "__main__":
    main()
