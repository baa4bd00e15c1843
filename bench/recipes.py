"""The recipe benchmark (gfldet issue 28): which training settings reach the attainable AP on data nobody tuned on.

    python bench/recipes.py plan                                   # the runs of the study and which are done
    python bench/recipes.py run                                    # every recipe x data set, short budget, seed 0
    python bench/recipes.py run --recipes default cosine --datasets scenes crowd --seeds 0 1 2 --budget long
    python bench/recipes.py report --write-docs docs/recipes.md    # tables and the leave-one-data-set-out choice

A run trains one recipe (a set of training settings, :data:`RECIPES`) on one data set (:data:`DATASETS`: five
generated data sets of different character, made on first use into the data cache) through the engine of
``gfldet train`` and scores it with the same pycocotools evaluation after every epoch. Everything not named by the
recipe is gfldet's default at the commit that runs it, so the recipe ``default`` is what a user gets.

The study is resumable: every finished run is appended to ``bench/results/recipes.jsonl`` (kept in the repository)
with its resolved training settings, the commit, CPU model and load average, and the next invocation skips the
runs recorded there. A run is identified by data set, architecture, budget, recipe, seed and a digest of the
settings it resolves to: when gfldet's defaults change, ``default`` (and any recipe that leaves the changed setting
to the default) is a new run, and the older rows stay in the file as history that the report no longer mixes in.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import cpu_model, timed_evaluations  # noqa: E402

import torch  # noqa: E402

from gfldet.config import Config, ConfigError, apply_override, load_config, validate_config  # noqa: E402
from gfldet.data.folders import claim_dir  # noqa: E402
from gfldet.engine.recipe import resolve_training  # noqa: E402
from gfldet.models.zoo import is_nanodet  # noqa: E402
from synth.scenes import scenes_cache_name, scenes_data  # noqa: E402
from vs_torchvision import METRICS, shapes_cache_name, shapes_data  # noqa: E402

log = logging.getLogger("bench.recipes")
RESULTS = Path(__file__).resolve().parent / "results" / "recipes.jsonl"


# --------------------------------------------------------------------------- data sets
@dataclass(frozen=True)
class DataSet:
    """A generated data set of the study. ``tag`` names what is generated (its cache folder: generator, version,
    settings; part of every run's key, so that rows of other data are never mixed in); ``make(cache_dir)`` returns
    its cached splits' paths; ``size`` the images' ``(H, W)``, which is also the network input (min_size, max_size =
    the shorter and longer side)."""

    character: str
    size: tuple[int, int]
    tag: str
    make: Callable[[str | None], dict[str, str]]
    train_images: int = 600


def _shapes(character: str, num_classes: int, side: int) -> DataSet:
    args = (600, 150, side, 0)  # bench/vs_torchvision's splits: the demo's generator, seeds 101 and 202
    return DataSet(character, (side, side), shapes_cache_name(*args, num_classes),
                   lambda cache_dir: shapes_data(cache_dir, *args, num_classes=num_classes))


def _scenes(character: str, size: tuple[int, int], variant: str = "", **kwargs: Any) -> DataSet:
    tag = scenes_cache_name(600, 150, size, 0, variant, kwargs)
    return DataSet(character, size, tag,
                   lambda cache_dir: scenes_data(cache_dir, 600, 150, size, seed=0, variant=variant, **kwargs))


SIDE = 128  # short enough that one short-budget run of gfl_resnet18_fpn takes about 5 minutes on 2 cores
DATASETS: dict[str, DataSet] = {
    "shapes3": _shapes("the demo's generator, 3 classes told by shape and hue; blurred, faded, occluded objects",
                       3, SIDE),
    "shapes6": _shapes("the demo's generator with 6 classes (the kind of data issue 12 was judged on)", 6, SIDE),
    "scenes": _scenes("bench.synth.scenes: 8 textured kinds told by shape only, cluttered backgrounds, sticks to 1:9, "
                      "objects cut by the border", (SIDE, SIDE)),
    "photos": _scenes("scenes' objects on crops of real photographs (bench.synth.photos), no synthetic clutter",
                      (SIDE, SIDE), "photos", backdrop="photo", clutter=False),
    "crowd": _scenes("8-20 small objects per image (at most 0.2 of the side), class imbalance (frequencies 1 : 0.55 "
                     ": ... : 0.015), non-square 128 x 192 images", (SIDE, 3 * SIDE // 2), "crowd",
                     num_objects=(8, 20), min_size=6.0, max_size=0.2, large_prob=0.02,
                     class_probs=tuple(round(0.55 ** k, 6) for k in range(8))),
}


# --------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Of:
    """A setting given relative to the run: ``Of("run", 0.3)`` is 30% of the run's iterations, ``Of("epoch", 1)``
    one epoch's iterations, ``Of("lr", 2)`` twice the learning rate the defaults resolve to."""

    unit: str
    times: float


@dataclass(frozen=True)
class Recipe:
    what: str
    settings: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "default": Recipe("gfldet's defaults at the commit that ran (today: SGD, step decay at 2/3 and 11/12, warm-up "
                      "500 capped at 10% of the run)"),
    "constant": Recipe("no decay", {"train.schedule": "constant"}),
    "cosine": Recipe("cosine decay to 0", {"train.schedule": "cosine"}),
    "linear": Recipe("linear decay to 0.01 x (ultralytics' lrf)", {"train.schedule": "linear", "train.final_lr_ratio": 0.01}),
    "cosine-warm30": Recipe("cosine, warm-up 30% of the run", {"train.schedule": "cosine", "train.warmup_iters": Of("run", 0.3)}),
    "constant-warm67": Recipe("no decay, warm-up 2/3 of the run (issue 28's hand-set 300 of 450)",
                              {"train.schedule": "constant", "train.warmup_iters": Of("run", 2 / 3)}),
    "cosine-lr2x": Recipe("cosine, twice the default rate", {"train.schedule": "cosine", "train.lr": Of("lr", 2)}),
    "cosine-lr0.5x": Recipe("cosine, half the default rate", {"train.schedule": "cosine", "train.lr": Of("lr", 0.5)}),
    "adamw": Recipe("AdamW lr 0.001 weight decay 0.05, cosine to 0.05 x (NanoDet-Plus's recipe)",
                    {"train.optimizer": "adamw", "train.lr": 0.001, "train.weight_decay": 0.05,
                     "train.schedule": "cosine", "train.final_lr_ratio": 0.05}),
    "cosine-ema": Recipe("cosine, EMA of the weights (decay 0.9998, ramp 2000 updates)",
                         {"train.schedule": "cosine", "train.ema": True}),
    "cosine-mosaic": Recipe("cosine, mosaic of four images (input.mosaic 1, off for the last 10% of the epochs)",
                            {"train.schedule": "cosine", "input.mosaic": 1.0}),
    "cosine-jitter": Recipe("cosine, scale jitter: short side drawn from 0.75-1.25 x per batch",
                            {"train.schedule": "cosine", "input.multiscale": Of("jitter", 1),
                             "input.max_size": Of("long", 1.25)}),
}

# A budget: epochs over the data set's 600 training images in batches of 8 (75 iterations an epoch). "matched": the
# wall-clock training time of gfldet's default run (gfl_resnet18_fpn, short budget, same data set and seed), the time
# YOLO11n is given: train.time_budget_s fits the epochs to it (6 is the first guess), evaluated once, at the end (as
# YOLO11n, which the study trains without validation), so that evaluations take none of the time.
BUDGETS = {"short": 6, "long": 24, "matched": 6}
MATCHED_TO = ("gfl_resnet18_fpn", "short")
BATCH = 8


def _value(v: Any, *, total: int, per_epoch: int, lr: float, side: int, long: int) -> Any:
    if not isinstance(v, Of):
        return v
    if v.unit == "run":
        return int(round(v.times * total))
    if v.unit == "epoch":
        return int(round(v.times * per_epoch))
    if v.unit == "lr":
        return round(v.times * lr, 10)
    if v.unit == "jitter":  # short sides 0.75-1.25 x the data set's, multiples of 32
        return sorted({32 * round(side * f / 32) for f in (0.75, 1.0, 1.25)})
    if v.unit == "long":  # the data set's longer side times v.times
        return int(round(long * v.times))
    raise ValueError(f"unknown unit {v.unit!r}")


def run_config(dataset: str, recipe: str, arch: str, budget: str, seed: int, paths: dict[str, str] | None = None,
               out_dir: str = "runs/recipes", time_s: float | None = None) -> tuple[Config, Config]:
    """``(config, resolved config)`` of one run: the data set's paths and size, the budget, the seed, the recipe's
    settings; everything else gfldet's default. Without ``paths`` the data paths are placeholders (for digests).
    ``time_s``: the "matched" budget's seconds (:func:`matched_time`)."""
    if (budget == "matched") != (time_s is not None):
        raise ValueError(f"budget {budget!r} with time_s={time_s}: the matched budget, and only it, takes a time")
    ds, rc = DATASETS[dataset], RECIPES[recipe]
    cfg = Config()
    cfg.model.arch = arch
    p = paths or {"train_ann": "-", "train_images": "-", "val_ann": "-", "val_images": "-"}
    cfg.data.train.ann, cfg.data.train.images = p["train_ann"], p["train_images"]
    cfg.data.val.ann, cfg.data.val.images = p["val_ann"], p["val_images"]
    cfg.data.num_workers = 0
    if not is_nanodet(arch):  # a NanoDet-Plus warps every image to the input size in its name
        cfg.input.min_size, cfg.input.max_size = min(ds.size), max(ds.size)
    cfg.train.epochs, cfg.train.batch_size, cfg.train.seed = BUDGETS[budget], BATCH, seed
    cfg.train.device, cfg.out_dir = "cpu", out_dir
    if time_s is not None:
        cfg.train.time_budget_s, cfg.train.eval_interval = float(time_s), 10**6  # evaluated at the fitted end only
    per_epoch = math.ceil(ds.train_images / BATCH)
    total = per_epoch * cfg.train.epochs
    base, _ = resolve_training(cfg, per_epoch)
    sets = [f"{k}={json.dumps(_value(v, total=total, per_epoch=per_epoch, lr=base.train.lr, side=min(ds.size), long=max(ds.size)))}"
            for k, v in rc.settings.items()]
    for s in sets:  # parsed and checked as `gfldet train --set` does
        apply_override(cfg, s)
    validate_config(cfg)
    resolved, _ = resolve_training(cfg, per_epoch)
    return cfg, resolved


# Settings added to gfldet after the study began, with the value that reproduces the behaviour from before: a run
# that has them at that value keeps the digest it had, so the rows recorded before the setting existed stay current.
ADDED_OFF = {("input", "mosaic"): 0.0, ("input", "mosaic_off_epochs"): None, ("train", "time_budget_s"): None}
# The settings the digest covers: a setting added to the model, input or train section changes every digest unless
# it joins ADDED_OFF (tests/test_bench_recipes.py checks this list against the config's fields).
DIGEST_SECTIONS = ("model", "input", "train")


def settings_digest(resolved: Config, data_tag: str) -> str:
    """A digest of what a run trains with (the data set's tag; model, input, train sections), not of where its
    files are."""
    d = resolved.to_dict()
    keep = {k: dict(d[k]) for k in DIGEST_SECTIONS}
    keep["train"] = {k: v for k, v in keep["train"].items() if k not in ("device", "log_interval", "checkpoint_iters")}
    for (section, key), off in ADDED_OFF.items():
        if key in keep[section] and keep[section][key] == off:
            del keep[section][key]
    keep["data"] = data_tag
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def run_key(dataset: str, recipe: str, arch: str, budget: str, seed: int,
            rows: list[dict[str, Any]] | None = None) -> str | None:
    """The run's identity: data set, architecture, budget, recipe, seed and the digest of what it resolves to. A
    "matched" run's digest covers its seconds, read from ``rows``: None while the run it matches is missing."""
    time_s = None
    if budget == "matched":
        time_s = matched_time(dataset, seed, rows or [])
        if time_s is None:
            return None
    _, resolved = run_config(dataset, recipe, arch, budget, seed, time_s=time_s)
    return f"{dataset}|{arch}|{budget}|{recipe}|s{seed}|{settings_digest(resolved, DATASETS[dataset].tag)}"


def matched_time(dataset: str, seed: int, rows: list[dict[str, Any]]) -> float | None:
    """The seconds of the "matched" budget on ``dataset``: the training time of the default run it matches."""
    ref = default_run(dataset, MATCHED_TO[1], seed, rows, MATCHED_TO[0])
    return None if ref is None else float(ref["train_s"])


# --------------------------------------------------------------------------- running
def read_results(path: Path = RESULTS) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not a JSON line ({e}); fix or remove that line") from None
    return rows


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=False, timeout=10)
        # the results file itself is not the code that ran
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(top,exclude)bench/results"], capture_output=True, text=True, cwd=Path(__file__).parent, check=False,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def run_one(dataset: str, recipe: str, arch: str, budget: str, seed: int, cache_dir: str | None, out_root: Path,
            rows: list[dict[str, Any]], progress: bool = False) -> dict[str, Any]:
    """Train and evaluate one run (``rows``: the results so far, for the matched budget's time); returns its result
    row."""
    import os

    from gfldet.engine.train import train

    paths = DATASETS[dataset].make(cache_dir)
    out_dir = claim_dir(out_root / f"{dataset}-{arch}-{budget}-{recipe}-s{seed}")
    time_s = matched_time(dataset, seed, rows) if budget == "matched" else None
    cfg, resolved = run_config(dataset, recipe, arch, budget, seed, paths, str(out_dir), time_s)
    load0 = os.getloadavg()[0]
    with timed_evaluations() as eval_seconds:
        t0 = time.perf_counter()
        result = train(cfg, progress=progress)
        wall = time.perf_counter() - t0
    records = [json.loads(ln) for ln in (out_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    if time_s is not None:  # the length and schedule the run fitted to its time, as its config.yaml records them
        resolved = load_config(out_dir / "config.yaml")
    evals = [r for r in records if "eval" in r]
    last = result["last_eval"] or {}
    return {
        "key": run_key(dataset, recipe, arch, budget, seed, rows), "dataset": dataset, "recipe": recipe, "arch": arch,
        "budget": budget, "seed": seed, "iterations": int(result["iterations"]),
        "epochs_run": int(result["epochs_done"]), "time_matched_to_s": time_s,
        **{k: last.get(k) for k in METRICS},
        "curve": [[r["epoch"], r["eval"]["AP"]] for r in evals],
        "train_s": round(wall - sum(eval_seconds), 1), "eval_s": round(sum(eval_seconds), 1),
        "settings": {k: _jsonable(v) for k, v in RECIPES[recipe].settings.items()},
        "resolved": {"train": {k: v for k, v in resolved.to_dict()["train"].items() if k != "device"},
                     "model": {k: resolved.to_dict()["model"][k] for k in ("frozen_stages", "norm_eval")},
                     "input": resolved.to_dict()["input"]},
        "cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(), "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2), "run_dir": str(out_dir),
    }


def _jsonable(v: Any) -> Any:
    return {"of": v.unit, "times": v.times} if isinstance(v, Of) else v


def peer_key(dataset: str, peer: str, budget: str, seed: int, rows: list[dict[str, Any]]) -> str | None:
    """The key of a peer run; YOLO11n's names the gfldet ``default`` run whose training time it matches (None while
    that run is missing)."""
    if peer == "fcos":  # bench/vs_torchvision's reference recipe at the budget's epochs, on this data
        setup = {"data": DATASETS[dataset].tag, "epochs": BUDGETS[budget], "batch": BATCH, "size": DATASETS[dataset].size,
                 "lr": 0.01, "warmup": "reference"}
        return f"peer|{dataset}|fcos|{budget}|s{seed}|" + hashlib.sha256(
            json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]
    ref = default_run(dataset, budget, seed, rows)
    return None if ref is None else f"peer|{dataset}|{peer}|{budget}|s{seed}|time-of:{ref['key']}"


def default_run(dataset: str, budget: str, seed: int, rows: list[dict[str, Any]],
                arch: str = "gfl_resnet18_fpn") -> dict[str, Any] | None:
    """The row of gfldet's ``default`` recipe with today's settings on ``dataset`` (the time the peers match); the
    latest, where the run was measured again (``--rerun``)."""
    key = run_key(dataset, "default", arch, budget, seed)
    return next((r for r in reversed(rows) if r.get("key") == key), None)


def run_peer(dataset: str, peer: str, budget: str, seed: int, rows: list[dict[str, Any]], cache_dir: str | None,
             out_root: Path) -> dict[str, Any]:
    import _peers

    paths = DATASETS[dataset].make(cache_dir)
    out_dir = claim_dir(out_root / f"{dataset}-{peer}-{budget}-s{seed}")
    size = DATASETS[dataset].size
    if peer == "fcos":
        result = _peers.run_fcos(paths, size, seed, BATCH, BUDGETS[budget], out_dir)
        matched = None
    else:
        ref = default_run(dataset, budget, seed, rows)
        matched = ref["train_s"]
        result = _peers.run_yolo(paths, size, seed, BATCH, out_dir, time_s=matched)
    return {"key": peer_key(dataset, peer, budget, seed, rows), "kind": "peer", "dataset": dataset, "peer": peer,
            "budget": budget, "seed": seed, "time_matched_to_s": matched, **result, "cpu": cpu_model(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "commit": _commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "run_dir": str(out_dir)}


def applies(recipe: str, arch: str) -> bool:
    """Whether ``recipe`` can run on ``arch`` (a NanoDet-Plus refuses GFL's input settings, e.g. mosaic, jitter)."""
    try:
        run_config(next(iter(DATASETS)), recipe, arch, "short", 0)
    except ConfigError:
        return False
    return True


def length_relative(recipe: str) -> bool:
    """Whether ``recipe`` sets something relative to the run's length (a matched run's length is only known as it
    runs: such a recipe would be resolved for the first guess)."""
    return any(isinstance(v, Of) and v.unit in ("run", "epoch") for v in RECIPES[recipe].settings.values())


def plan(datasets: list[str], recipes: list[str], arch: str, budget: str, seeds: list[int]) -> list[tuple]:
    if budget == "matched":
        for r in [r for r in recipes if length_relative(r)]:
            log.warning("%s: not run at the matched budget (it sets a length relative to the run, which a time budget "
                        "fits as it runs)", r)
        recipes = [r for r in recipes if not length_relative(r)]
    recipes = [r for r in recipes if applies(r, arch)]
    return [(d, r, arch, budget, s) for s in seeds for r in recipes for d in datasets]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("plan", "run", "peers", "report"))
    ap.add_argument("--datasets", nargs="+", choices=tuple(DATASETS), default=list(DATASETS))
    ap.add_argument("--recipes", nargs="+", choices=tuple(RECIPES), default=list(RECIPES))
    ap.add_argument("--arch", default="gfl_resnet18_fpn")
    ap.add_argument("--peers", nargs="+", choices=("fcos", "yolo11n"), default=["fcos", "yolo11n"],
                    help="peers: which (yolo11n needs ultralytics importable and gfldet's default run done)")
    ap.add_argument("--budget", choices=tuple(BUDGETS), default="short")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=Path("runs/recipes"), help="run folders (checkpoints, logs)")
    ap.add_argument("--cache-dir", default=None, help="data cache (default $GFLDET_CACHE or ~/.cache/gfldet)")
    ap.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs")
    ap.add_argument("--rerun", action="store_true",
                    help="run: also the runs already done (e.g. to time them again on a quiet machine); the latest row "
                         "of a key is the one the report and the peers' time use")
    ap.add_argument("--write-docs", type=Path, default=None, help="report: write the tables into this file")
    ap.add_argument("--progress", action="store_true", help="progress bars")
    args = ap.parse_args(argv)

    if args.command == "report":
        from _recipes_report import report

        images = args.write_docs.parent / "img" if args.write_docs else None
        text = report(read_results(args.results), images)
        print(text)
        if args.write_docs:
            from _recipes_report import write_generated

            write_generated(args.write_docs, text)
        return 0

    rows = read_results(args.results)
    done = {r["key"] for r in rows}
    if args.command == "peers":
        if args.budget == "matched":
            raise SystemExit("peers: the matched budget is gfldet's own time-matched runs; the peers run at short or "
                             "long (YOLO11n's time is matched to the default run of that budget)")
        import importlib.util

        if "yolo11n" in args.peers and importlib.util.find_spec("ultralytics") is None:
            log.warning("yolo11n: ultralytics is not importable by %s; not run (docs/recipes.md: a side environment)",
                        sys.executable)
            args.peers = [p for p in args.peers if p != "yolo11n"]
        for d in args.datasets:
            for seed in args.seeds:
                for peer in args.peers:
                    key = peer_key(d, peer, args.budget, seed, rows)
                    if key is None:
                        log.warning("%s on %s: no default run of today's gfldet to match its time; run that first", peer, d)
                        continue
                    if key in done and not args.rerun:
                        continue
                    log.info("peer %s on %s (%s budget, seed %d)", peer, d, args.budget, seed)
                    row = run_peer(d, peer, args.budget, seed, rows, args.cache_dir, args.out)
                    with open(args.results, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    log.info("%s: AP %.3f, training %.0f s", key, row["AP"] or float("nan"), row["train_s"])
        return 0
    planned = []
    for p in plan(args.datasets, args.recipes, args.arch, args.budget, args.seeds):
        key = run_key(*p, rows)
        if key is None:
            log.warning("%s: no default run of today's gfldet (%s, %s budget) to match its time; run that first",
                        " ".join(map(str, p)), *MATCHED_TO)
            continue
        planned.append((p, key in done))
    todo = [p for p, have in planned if args.rerun or not have]
    if args.command == "plan":
        for p, have in planned:
            print(("done " if have else "todo ") + " ".join(map(str, p)))
        print(f"{len(todo)} to run")
        return 0
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for n, p in enumerate(todo[:args.max_runs] if args.max_runs else todo, 1):
        log.info("run %d/%d: %s", n, len(todo), " ".join(map(str, p)))
        row = run_one(*p, cache_dir=args.cache_dir, out_root=args.out, rows=rows, progress=args.progress)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("%s: AP %.3f, training %.0f s (load %.1f -> %.1f)", row["key"], row["AP"] or float("nan"), row["train_s"],
                 row["load_before"], row["load_after"])
    return 0


if __name__ == "__main__":
    # the script's own output: its progress lines, gfldet's warnings (set here, not in main(): callers and tests keep
    # their logging as it is)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("gfldet").setLevel(logging.WARNING)
    sys.exit(main())
