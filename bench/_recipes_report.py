"""Tables, the leave-one-data-set-out choice and the AP curves of bench/recipes.py's results.

Only rows whose key is the one the run would have today (same resolved settings: :func:`recipes.run_key`) are
reported; rows of older defaults stay in the results file as history. A cell is the median AP over the seeds run
(their number in brackets where more than one).
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from _util import markdown_table

BEGIN, END = "<!-- recipes:begin -->", "<!-- recipes:end -->"
TARGET = 0.9  # issue 28: the defaults reach >= 0.9 x the best recipe of the sweep on every data set


def current(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that match what the run would resolve to with today's code; of a key run more than once
    (``--rerun``), the latest."""
    from recipes import DATASETS, RECIPES, run_key

    out, keys = {}, {}
    for r in rows:
        if r.get("kind") == "peer" or r["dataset"] not in DATASETS or r["recipe"] not in RECIPES:
            continue
        p = (r["dataset"], r["recipe"], r["arch"], r["budget"], r["seed"])
        if p not in keys:
            keys[p] = run_key(*p, rows)
        if r["key"] == keys[p]:
            out[r["key"]] = r
    return list(out.values())


def cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[float]]:
    """``{(recipe, dataset): [AP of each seed]}`` of one architecture and budget."""
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        out[(r["recipe"], r["dataset"])].append(float(r["AP"]) if r["AP"] is not None else 0.0)
    return out


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def leave_one_out(table: dict[tuple[str, str], list[float]], recipes: list[str], datasets: list[str]
                  ) -> list[dict[str, Any]]:
    """For each data set: the recipe that a choice made without it picks (the best mean of AP / best AP over the
    other data sets, among recipes run on all of them), and how that recipe does on the data set left out."""
    complete = [r for r in recipes if all((r, d) in table for d in datasets)]
    best = {d: max(median(table[(r, d)]) for r in recipes if (r, d) in table) for d in datasets}
    out = []
    for held in datasets:
        others = [d for d in datasets if d != held]
        if not complete or not others:
            continue
        score = {r: statistics.fmean(median(table[(r, d)]) / best[d] if best[d] > 0 else 0.0 for d in others)
                 for r in complete}
        pick = max(complete, key=lambda r: (score[r], r))
        ap = median(table[(pick, held)])
        out.append({"held_out": held, "pick": pick, "score_on_others": score[pick], "ap": ap, "best": best[held],
                    "ratio": ap / best[held] if best[held] > 0 else float("nan")})
    return out


def _ap(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def peer_table(rows: list[dict[str, Any]], cur: list[dict[str, Any]], budget: str) -> str | None:
    """gfldet's defaults and best recipe (gfl_resnet18_fpn) against the peers on each data set (seed 0): AP and
    training seconds. ``rows``: every row (the peers'); ``cur``: :func:`current` of them."""
    from recipes import DATASETS, peer_key

    ours = [r for r in cur if (r["arch"], r["budget"], r["seed"]) == ("gfl_resnet18_fpn", budget, 0)]
    # the other architectures' default recipe trained for the default run's time (budget "matched")
    timed = [r for r in cur if (r["budget"], r["recipe"], r["seed"]) == ("matched", "default", 0)] if budget == "short" else []
    archs = sorted({r["arch"] for r in timed})
    lines = []
    for d in DATASETS:
        ref = next((r for r in ours if (r["dataset"], r["recipe"]) == (d, "default")), None)
        if ref is None:
            continue
        best = max((r for r in ours if r["dataset"] == d), key=lambda r: r["AP"] or 0)
        line = [d, f"{_ap(ref['AP'])} ({ref['train_s']:.0f} s)", f"{_ap(best['AP'])} ({best['recipe']})"]
        for peer in ("fcos", "yolo11n"):
            key = peer_key(d, peer, budget, 0, rows)
            p = next((r for r in reversed(rows) if r.get("key") == key), None)
            line.append("" if p is None else f"{_ap(p['AP'])} ({p['train_s']:.0f} s, {p['epochs_run']} ep)")
        for arch in archs:
            m = next((r for r in timed if (r["arch"], r["dataset"]) == (arch, d)), None)
            line.append("" if m is None else f"{_ap(m['AP'])} ({m['train_s']:.0f} s, {m['epochs_run']} ep)")
        lines.append(line)
    if not lines:
        return None
    return markdown_table(["data set", "gfldet defaults (training time)", "gfldet's best recipe",
                           "torchvision FCOS R18, reference recipe", "YOLO11n, ultralytics defaults, same time",
                           *(f"gfldet {a}, defaults, same time" for a in archs)], lines)


def report(rows: list[dict[str, Any]], image_dir: Path | None = None) -> str:
    """The generated block of docs/recipes.md; with ``image_dir`` (docs/img) also the AP-curve pictures, linked."""
    from recipes import DATASETS, RECIPES

    all_rows, rows = rows, current(rows)
    if not rows:
        return "No results of today's settings yet: run `python bench/recipes.py run`."
    parts = []
    groups = sorted({(r["arch"], r["budget"]) for r in rows})
    for arch, budget in groups:
        sub = [r for r in rows if (r["arch"], r["budget"]) == (arch, budget)]
        table = cells(sub)
        datasets = [d for d in DATASETS if any(k[1] == d for k in table)]
        recipes = [r for r in RECIPES if any(k[0] == r for k in table)]
        best = {d: max(median(table[(r, d)]) for r in recipes if (r, d) in table) for d in datasets}
        lines = []
        for rc in recipes:
            line = [rc]
            rel = []
            for d in datasets:
                if (rc, d) not in table:
                    line.append("")
                    continue
                v = median(table[(rc, d)])
                n = len(table[(rc, d)])
                rel.append(v / best[d] if best[d] > 0 else 0.0)
                mark = "**" if v == best[d] else ""
                line.append(f"{mark}{v:.3f}{mark}" + (f" ({n})" if n > 1 else ""))
            line.append(f"{statistics.fmean(rel):.2f}" if len(rel) == len(datasets) else "")
            lines.append(line)
        cpus = sorted({r["cpu"] for r in sub})
        commits = sorted({r["commit"] for r in sub})
        train_s = statistics.median(r["train_s"] for r in sub)
        batch = sub[0]["resolved"]["train"]["batch_size"]
        its = sorted({r["iterations"] for r in sub})
        its = f"{its[0]}" if len(its) == 1 else f"{its[0]}-{its[-1]}"
        parts.append(f"### {arch}, budget `{budget}` ({its} iterations of {batch} images)\n\nAP (COCO, 150 validation images), median over seeds (seeds in brackets when more "
                     f"than one); **bold**: the best recipe on that data set; last column: mean over the data sets of "
                     f"AP / best AP. {len(sub)} runs, median training time {train_s:.0f} s, on {', '.join(cpus)}; "
                     f"commits {', '.join(commits)}.\n")
        parts.append(markdown_table(["recipe", *datasets, "mean of AP / best"], lines))
        loo = leave_one_out(table, recipes, datasets)
        if loo:
            parts.append("\nLeave one data set out: the recipe chosen on the other data sets (best mean of AP / best "
                         "AP there), and how it does on the one left out.\n")
            parts.append(markdown_table(
                ["left out", "chosen on the others", "its mean AP / best there", "its AP here", "best AP here",
                 f"ratio (target >= {TARGET})"],
                [[x["held_out"], x["pick"], f"{x['score_on_others']:.2f}", f"{x['ap']:.3f}", f"{x['best']:.3f}",
                  f"{x['ratio']:.2f}" + ("" if x["ratio"] >= TARGET else " (below)")] for x in loo]))
        if image_dir is not None:
            picture = plot_curves(rows, image_dir / f"recipes-{arch}-{budget}.png", arch, budget)
            if picture is not None:
                parts.append(f"\n![AP after each epoch, {arch}, {budget}](img/{picture.name})")
        parts.append("")
    for budget in sorted({r["budget"] for r in rows} - {"matched"}):  # matched runs join the short budget's table
        table = peer_table(all_rows, rows, budget)
        if table:
            parts.append(f"### Peers, budget `{budget}` (seed 0)\n\nThe same images per step; FCOS for the same "
                         "epochs, YOLO11n for gfldet's default run's training time (ultralytics' `time`).\n")
            parts.extend([table, ""])
    parts.append("Recipes:\n")
    parts.extend(f"- `{name}`: {rc.what}" for name, rc in RECIPES.items())
    parts.append("\nData sets:\n")
    parts.extend(f"- `{name}` ({ds.size[0]} x {ds.size[1]} px): {ds.character}" for name, ds in DATASETS.items())
    return "\n".join(parts)


def plot_curves(cur: list[dict[str, Any]], path: Path, arch: str, budget: str) -> Path | None:
    """AP after each epoch of the current rows ``cur`` (:func:`current`), one panel per data set, one line per recipe
    (seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = [r for r in cur if (r["arch"], r["budget"], r["seed"]) == (arch, budget, 0) and r.get("curve")]
    if not sub:
        return None
    from recipes import DATASETS, RECIPES

    colours = {name: plt.get_cmap("tab20")(i % 20) for i, name in enumerate(RECIPES)}  # one colour a recipe
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in sub)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.0), squeeze=False)
    shown = {}
    for ax, d in zip(axes[0], datasets):
        for r in sorted((r for r in sub if r["dataset"] == d), key=lambda r: list(RECIPES).index(r["recipe"])):
            xs, ys = zip(*r["curve"])
            shown[r["recipe"]], = ax.plot(xs, ys, marker=".", color=colours[r["recipe"]],
                                          lw=2.5 if r["recipe"] == "default" else 1.2)
        ax.set_title(d)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("AP")
    fig.legend(list(shown.values()), list(shown), fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, 0.9, 0.93))
    fig.suptitle(f"{arch}, budget {budget}: AP after each epoch (seed 0)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_generated(path: Path, text: str) -> None:
    """Put ``text`` between the lines ``<!-- recipes:begin -->`` and ``<!-- recipes:end -->`` of ``path``."""
    doc = path.read_text()
    if BEGIN not in doc or END not in doc or doc.index(BEGIN) > doc.index(END):
        raise SystemExit(f"{path}: no generated block (a line {BEGIN} followed by a line {END})")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
