"""The ablation study's statistics, resumable runner and gradient replay (bench/ablations.py, bench/grad_replay.py):
the numbers docs/ablations.md is made of."""
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import ablations  # noqa: E402
from _ablation_report import forest_plot, header, report, write_docs  # noqa: E402
from _stats import paired, t_cdf, t_quantile, verdict  # noqa: E402


@pytest.mark.parametrize("df,q", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281), (30, 2.0423)])
def test_t_quantiles_are_the_tabulated_ones(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_cdf(t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-9)
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-4)


def test_paired_interval_and_verdicts():
    p = paired({0: 0.50, 1: 0.52, 2: 0.51, 3: 0.9}, {0: 0.48, 1: 0.495, 2: 0.49})  # seed 3 has no reference: unpaired
    assert p.diffs == pytest.approx((0.02, 0.025, 0.02)) and p.mean == pytest.approx(0.065 / 3)
    half = 4.3027 * statistics.stdev(p.diffs) / math.sqrt(3)
    assert (p.low, p.high) == (pytest.approx(p.mean - half, abs=1e-6), pytest.approx(p.mean + half, abs=1e-6))
    assert p.low > 0
    assert verdict(p, +1) == "reproduced" and verdict(p, -1) == "reversed" and verdict(p, 0).startswith("differs")
    assert verdict(paired({0: 0.5, 1: 0.4}, {0: 0.45, 1: 0.45}), -1) == "unresolved"
    assert verdict(paired({0: 0.5}, {0: 0.4}), -1) == "too few seeds" and paired({0: 1.0}, {1: 1.0}) is None


def test_about_equal_needs_a_narrow_interval():
    """The paper's "about equal" rows (n = 8 vs 16) are reproduced only by an interval inside ±1 AP, not by any
    interval that happens to contain 0."""
    ref = {0: 0.60, 1: 0.60, 2: 0.60}
    narrow = paired({0: 0.602, 1: 0.599, 2: 0.601}, ref)
    assert -0.01 < narrow.low < 0 < narrow.high < 0.01 and verdict(narrow, 0) == "reproduced"
    wide = paired({0: 0.609, 1: 0.562, 2: 0.621}, ref)  # contains 0, reaches far beyond ±1 AP
    assert wide.low < 0 < wide.high and verdict(wide, 0) == "unresolved"
    assert verdict(narrow, 0, margin=0.001) == "unresolved"  # the margin is the caller's to set
    small = paired({0: 0.602, 1: 0.603, 2: 0.6025}, ref)  # excludes 0, yet well inside ±1 AP
    assert small.low > 0 and small.high < 0.01 and verdict(small, 0) == "reproduced"
    big = paired({0: 0.63, 1: 0.64, 2: 0.635}, ref)
    assert verdict(big, 0) == "differs (paper: about equal)"


def _run(variant, seed, ap):
    return {"recipe": "demo", "recipe_settings": ablations.RECIPES["demo"], "variant": variant, "seed": seed,
            "eval": {"AP": ap, "AP50": ap + 0.2, "AP75": ap + 0.05}, "wall_s": 480.0, "cpu": "cpu", "commit": "abc",
            "date": "2026-11-30"}


def test_runner_resumes_extends_and_refuses_another_recipe(tmp_path):
    done = [_run("gfl", 0, 0.60), _run("atss", 0, 0.55), _run("gfl", 1, 0.61), _run("atss", 1, 0.60),
            _run("n8", 0, 0.60), _run("n8", 1, 0.61)]
    assert ablations.plan(done, ["gfl", "atss", "n8"], [0, 1, 2], None) == [("gfl", 2), ("atss", 2), ("n8", 2)]
    # atss: -0.05, -0.01 -> interval over 0 -> more seeds (and GFL's); n8: 0.0, 0.0 -> inside ±1 AP, equal -> none
    extra = ablations.plan(done, ["gfl", "atss", "n8"], [0, 1], 4)
    assert extra == [("gfl", 2), ("atss", 2), ("gfl", 3), ("atss", 3)]
    # 3 seeds, -1.3 -3.1 -3.7: mean -2.7 is 3.7 SE from 0, but t(2) = 4.3 leaves the interval over 0 -> more seeds
    diffs = (-0.013, -0.031, -0.037)
    three = [_run("gfl", s, 0.60) for s in range(3)] + [_run("atss", s, 0.60 + d) for s, d in enumerate(diffs)]
    p = paired({s: 0.60 + d for s, d in enumerate(diffs)}, {s: 0.60 for s in range(3)})
    assert abs(p.mean) > 2 * p.se and p.low < 0 < p.high
    assert ablations.plan(three, ["gfl", "atss"], [0, 1, 2], 4) == [("gfl", 3), ("atss", 3)]
    # no open row: no reference seeds are added either
    resolved = [_run("gfl", s, 0.60) for s in range(3)] + [_run("atss", s, 0.50 + s * 0.001) for s in range(3)]
    assert ablations.plan(resolved, ["gfl", "atss"], [0, 1, 2], 6) == []
    # the tiny recipe pairs RetinaNet with RetinaNet + QFL + DFL, not with GFL: that reference is extended
    retina = [_run(n, s, ap) for s in range(2) for n, ap in (("gfl", 0.6), ("retina_gfl", 0.5), ("retina", 0.5 + s * 0.01))]
    assert ablations.plan(retina, ["retina"], [0, 1], 3, ablations.TABLES["tiny"]) == [("retina_gfl", 2), ("retina", 2)]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in done))
    assert len(ablations.load_results(path, "demo")) == 6
    other = dict(_run("gfl", 2, 0.6), recipe_settings=dict(ablations.RECIPES["demo"], epochs=5))
    path.write_text(path.read_text() + json.dumps(other) + "\n")
    with pytest.raises(SystemExit, match=r"line 7 \(gfl seed 2\) was run with recipe demo .*epochs.: 5"):
        ablations.load_results(path, "demo")


def test_docs_block_is_regenerated_in_place(tmp_path):
    runs = [_run("gfl", 0, 0.60), _run("atss", 0, 0.55), _run("gfl", 1, 0.62), _run("atss", 1, 0.56)]
    text = report(runs, ablations.TABLES["demo"])
    row = next(line for line in text.splitlines() if line.startswith("| ATSS (FL"))
    assert "55.5 ± 0.7" in row and "-5.0 -6.0" in row and "unresolved" in row  # 2 seeds: t(1) = 12.7 is wide
    doc = tmp_path / "a.md"
    doc.write_text("intro\n<!-- ablations:demo:begin -->\nold\n<!-- ablations:demo:end -->\nafter\n")
    write_docs(doc, "demo", text, runs, "bench/results/x.jsonl", "img/a.png")
    new = doc.read_text()
    assert new.startswith("intro\n") and new.endswith("after\n") and "old" not in new and "(4 runs)" in new
    assert "](img/a.png)" in new
    runs.append(dict(_run("gfl", 2, 0.61), commit="def"))
    assert "gfl abc (0 1), def (2); atss abc (0 1)" in header(runs, "demo", "x")  # which code each pair came from
    assert "| 0 1 2 |" in report(runs, ablations.TABLES["demo"]).replace("  ", " ")  # the seeds, named
    with pytest.raises(SystemExit, match="no generated block for recipe 'tiny'"):
        write_docs(doc, "tiny", text, runs, "x")


def test_forest_plot_draws_every_compared_row(tmp_path):
    import matplotlib.image

    runs = [_run("gfl", 0, 0.60), _run("atss", 0, 0.55), _run("gfl", 1, 0.62), _run("atss", 1, 0.56),
            _run("n8", 0, 0.61)]
    tables = ablations.TABLES["demo"]
    path = forest_plot(runs, tables, tmp_path / "img" / "f.png", "t")
    rows = sum(1 + sum(name != ref for _, name, ref, _ in table_rows) for _, table_rows in tables)
    height, width, _ = matplotlib.image.imread(path).shape
    # one line per table and per compared row (matplotlib rounds the pixel size either way)
    assert width == 880 and abs(height - (0.32 * rows + 1.2) * 110) <= 1


def test_grad_replay_summary_finds_the_spike(tmp_path):
    import matplotlib.image

    import grad_replay

    norms = [2.0, 3.0, 1.0, 500.0, 1.5, 40.0, 2.5]
    recs = [{"iter": i + 1, "grad_norm": g, "loss_bbox": 1.0 + i / 10} for i, g in enumerate(norms)]
    row = grad_replay.summary("x seed 1", recs)
    # max 500 at iteration 4, median 2.5, two iterations above 25, loss_bbox averaged over the (at most) last 50
    assert row == ["x seed 1", 7, "500.0", 4, "2.50", 2, f"{statistics.mean(1.0 + i / 10 for i in range(7)):.3f}"]
    path = tmp_path / "img" / "g.png"
    grad_replay.plot({"x seed 1": recs}, path, "t")
    assert matplotlib.image.imread(path).shape[:2] == (572, 880)
