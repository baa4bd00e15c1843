"""bench/recipes.py (the recipe benchmark of issue 28): what each recipe resolves to, resumable results keyed by the
resolved settings, the leave-one-data-set-out choice, and the new data set variants (photo backdrops, class
imbalance)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import recipes  # noqa: E402
import _recipes_report as rr  # noqa: E402
from synth import photos  # noqa: E402
from synth.scenes import KINDS, make_scene  # noqa: E402

from gfldet.data.synthetic import write_coco  # noqa: E402
from gfldet.engine import recipe as engine_recipe  # noqa: E402
from gfldet.errors import GfldetError  # noqa: E402


def test_recipes_resolve_relative_to_the_run():
    # short budget: 6 epochs of 600 images in batches of 8 = 450 iterations; from scratch, gfldet's default rate is
    # 0.02 per 16 images = 0.01 for 8
    _, default = recipes.run_config("scenes", "default", "gfl_resnet18_fpn", "short", 0)
    assert (default.train.schedule, default.train.lr, default.train.warmup_iters) == ("step", 0.01, 45)
    _, warm = recipes.run_config("scenes", "cosine-warm30", "gfl_resnet18_fpn", "short", 0)
    assert (warm.train.schedule, warm.train.warmup_iters) == ("cosine", 135)
    _, hot = recipes.run_config("scenes", "cosine-lr2x", "gfl_resnet18_fpn", "short", 0)
    assert hot.train.lr == pytest.approx(0.02)
    _, jit = recipes.run_config("crowd", "cosine-jitter", "gfl_resnet18_fpn", "short", 0)
    assert (jit.input.min_size, jit.input.max_size, jit.input.multiscale) == (128, 240, [96, 128, 160])
    _, adamw = recipes.run_config("photos", "adamw", "gfl_resnet18_fpn", "long", 1)
    assert (adamw.train.optimizer, adamw.train.lr, adamw.train.epochs, adamw.train.seed) == ("adamw", 0.001, 24, 1)


def test_a_run_is_keyed_by_what_it_resolves_to(monkeypatch):
    before = {r: recipes.run_key("shapes3", r, "gfl_resnet18_fpn", "short", 0) for r in ("default", "cosine", "linear")}
    assert len(set(before.values())) == 3
    # gfldet's defaults change (here: the GFL recipe's schedule): `default` becomes a new run, recipes that set the
    # schedule themselves keep their key
    monkeypatch.setitem(engine_recipe.RECIPES, "gfl", {**engine_recipe.RECIPES["gfl"], "schedule": "cosine"})
    after = {r: recipes.run_key("shapes3", r, "gfl_resnet18_fpn", "short", 0) for r in before}
    assert after["default"] != before["default"] and after["cosine"] == before["cosine"]
    assert after["linear"] == before["linear"]
    assert recipes.run_key("shapes3", "default", "gfl_resnet18_fpn", "short", 1) != after["default"]


def test_leave_one_out_never_looks_at_the_data_set_it_judges():
    table = {("a", "d1"): [0.5], ("a", "d2"): [0.5], ("a", "d3"): [0.1],
             ("b", "d1"): [0.4], ("b", "d2"): [0.45], ("b", "d3"): [0.3],
             ("c", "d1"): [0.6]}  # c is not run on every data set: never chosen
    loo = {x["held_out"]: x for x in rr.leave_one_out(table, ["a", "b", "c"], ["d1", "d2", "d3"])}
    # without d3, a is the better recipe (relative AP (0.5/0.6 + 1) / 2 vs (0.4/0.6 + 0.9) / 2) although it is poor on d3
    assert loo["d3"]["pick"] == "a" and loo["d3"]["ratio"] == pytest.approx(0.1 / 0.3)
    assert loo["d1"]["pick"] == "b" and loo["d1"]["ratio"] == pytest.approx(0.4 / 0.6)  # d2, d3 favour b
    assert loo["d2"]["pick"] == "b"


@pytest.fixture()
def tiny_study(tmp_path, monkeypatch):
    def make(cache_dir):
        root = Path(cache_dir) / "tiny"
        if not (root / "val" / "annotations.json").is_file():
            write_coco(root / "train", 8, 1, (64, 64))
            write_coco(root / "val", 4, 2, (64, 64))
        return {"train_ann": str(root / "train" / "annotations.json"), "train_images": str(root / "train"),
                "val_ann": str(root / "val" / "annotations.json"), "val_images": str(root / "val")}

    monkeypatch.setattr(recipes, "DATASETS", {"tiny": recipes.DataSet("8 demo images", (64, 64), "tiny-v1", make, train_images=8)})
    monkeypatch.setattr(recipes, "BUDGETS", {"short": 1})
    results = tmp_path / "results.jsonl"
    args = ["--datasets", "tiny", "--recipes", "default", "cosine", "--results", str(results), "--out",
            str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    return results, args


def test_run_appends_rows_resumes_and_reports(tiny_study, tmp_path, capsys):
    results, args = tiny_study
    assert recipes.main(["run", *args]) == 0
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["recipe"] for r in rows] == ["default", "cosine"]
    r = rows[1]
    assert r["iterations"] == 1 and r["resolved"]["train"]["schedule"] == "cosine" and r["cpu"] and r["commit"]
    assert r["curve"] and r["curve"][-1][1] == r["AP"] and r["train_s"] > 0
    assert r["key"] == recipes.run_key("tiny", "cosine", "gfl_resnet18_fpn", "short", 0)
    assert recipes.main(["run", *args]) == 0  # resumed: nothing left to run
    assert len(results.read_text().splitlines()) == 2
    recipes.main(["plan", *args])
    assert "0 to run" in capsys.readouterr().out
    assert recipes.main(["peers", *args]) == 0  # FCOS; YOLO11n only where ultralytics is importable
    peers = [json.loads(x) for x in results.read_text().splitlines()][2:]
    assert peers and peers[0]["peer"] == "fcos" and peers[0]["kind"] == "peer" and peers[0]["epochs_run"] == 1
    assert 0 <= peers[0]["AP"] <= 1 and peers[0]["train_s"] > 0
    doc = tmp_path / "recipes.md"
    doc.write_text(f"# title\n{rr.BEGIN}\nOLD-BLOCK\n{rr.END}\nafter\n")
    assert recipes.main(["report", "--results", str(results), "--write-docs", str(doc)]) == 0
    text = doc.read_text()
    assert "OLD-BLOCK" not in text and text.endswith(f"{rr.END}\nafter\n") and "\n| cosine" in text
    assert "### Peers, budget `short`" in text
    assert (tmp_path / "img" / "recipes-gfl_resnet18_fpn-short.png").stat().st_size > 1000 and "](img/recipes-" in text


def test_nanodet_joins_the_study_where_a_recipe_applies(tiny_study, tmp_path):
    results, args = tiny_study
    assert not recipes.applies("cosine-mosaic", "nanodet_plus_m_320") and recipes.applies("cosine", "nanodet_plus_m_320")
    _, resolved = recipes.run_config("tiny", "default", "nanodet_plus_m_320", "short", 0)
    assert (resolved.train.optimizer, resolved.input.min_size) == ("adamw", 800)  # its own recipe and input rule
    assert recipes.main(["run", *args[:2], "--recipes", "default", "cosine-mosaic", *args[5:],
                         "--arch", "nanodet_plus_m_320"]) == 0
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert [(r["arch"], r["recipe"]) for r in rows] == [("nanodet_plus_m_320", "default")] and rows[0]["AP"] is not None


def test_report_drops_rows_of_other_settings(tiny_study):
    results, args = tiny_study
    row = {"key": "tiny|gfl_resnet18_fpn|short|default|s0|stale", "dataset": "tiny", "recipe": "default",
           "arch": "gfl_resnet18_fpn", "budget": "short", "seed": 0, "AP": 0.5}
    assert rr.current([row]) == []
    assert rr.current([{**row, "key": recipes.run_key("tiny", "default", "gfl_resnet18_fpn", "short", 0)}])


def test_a_run_measured_again_replaces_the_earlier_row(tiny_study):
    results, args = tiny_study
    key = recipes.run_key("tiny", "default", "gfl_resnet18_fpn", "short", 0)
    row = {"key": key, "dataset": "tiny", "recipe": "default", "arch": "gfl_resnet18_fpn", "budget": "short",
           "seed": 0, "AP": 0.5, "train_s": 900.0}
    again = {**row, "AP": 0.4, "train_s": 300.0}  # e.g. timed again on a quiet machine
    assert rr.current([row, again]) == [again]  # one row per key in the tables: the latest
    assert recipes.default_run("tiny", "short", 0, [row, again]) is again  # the time the peers match
    results.write_text(json.dumps(row) + "\n")
    assert recipes.main(["run", *args[:2], "--recipes", "default", *args[5:], "--rerun"]) == 0
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["key"] for r in rows] == [key, key] and rows[1]["AP"] != 0.5


def test_matched_budget_trains_another_model_for_the_default_runs_time(tiny_study, tmp_path, monkeypatch, caplog):
    results, args = tiny_study
    monkeypatch.setattr(recipes, "BUDGETS", {"short": 1, "matched": 1})
    light = [*args[:2], "--recipes", "default", *args[5:], "--arch", "gfl_mobilenet_v2_fpn", "--budget", "matched"]
    with caplog.at_level("WARNING", logger="bench.recipes"):
        assert recipes.main(["run", *light]) == 0  # nothing to match yet: said, nothing run
    assert "no default run" in caplog.text and not results.exists()
    assert recipes.main(["run", *args[:2], "--recipes", "default", *args[5:]]) == 0
    assert recipes.main(["run", *light]) == 0
    ref, row = [json.loads(x) for x in results.read_text().splitlines()]
    assert (row["arch"], row["budget"], row["time_matched_to_s"]) == ("gfl_mobilenet_v2_fpn", "matched", ref["train_s"])
    assert row["resolved"]["train"]["time_budget_s"] == ref["train_s"]
    # the row holds what the run fitted to that time (its config.yaml), not the first guess: 1 iteration an epoch here
    assert row["resolved"]["train"]["epochs"] == row["epochs_run"] == row["iterations"] >= 1
    assert recipes.plan(["tiny"], ["default", "cosine-warm30"], "gfl_mobilenet_v2_fpn", "matched", [0]) == \
        [("tiny", "default", "gfl_mobilenet_v2_fpn", "matched", 0)]  # a warm-up of 30% of an unknown length: not run
    assert row["key"] == recipes.run_key("tiny", "default", "gfl_mobilenet_v2_fpn", "matched", 0, [ref])
    # the default run timed again: the matched run is another run (its time is in its key)
    assert recipes.run_key("tiny", "default", "gfl_mobilenet_v2_fpn", "matched", 0,
                           [ref, {**ref, "train_s": ref["train_s"] + 1}]) != row["key"]
    with pytest.raises(SystemExit, match="matched budget"):
        recipes.main(["peers", *args, "--budget", "matched"])
    text = rr.report([ref, row])
    assert "### gfl_mobilenet_v2_fpn, budget `matched`" in text
    assert "gfldet gfl_mobilenet_v2_fpn, defaults, same time" in text  # a column of the short budget's peer table


def test_bad_results_line_is_named(tmp_path):
    bad = tmp_path / "r.jsonl"
    bad.write_text('{"key": 1}\nnot json\n')
    with pytest.raises(SystemExit, match=r"r.jsonl:2"):
        recipes.read_results(bad)


# --------------------------------------------------------------------------- data set variants
def test_class_probs_and_clutter():
    only = [0.0] * len(KINDS)
    only[3] = 1.0
    labels = np.concatenate([make_scene(np.random.default_rng(i), (96, 96), num_objects=(4, 6), class_probs=only)[2]
                             for i in range(5)])
    assert len(labels) > 5 and set(labels.tolist()) == {3}
    with pytest.raises(GfldetError, match="class_probs"):
        make_scene(np.random.default_rng(0), (96, 96), class_probs=(1.0, 2.0))
    with pytest.raises(GfldetError, match="backdrop"):
        make_scene(np.random.default_rng(0), (96, 96), backdrop="video")


def test_photo_backdrop_is_a_real_photograph_and_reproducible():
    a = photos.photo_backdrop(np.random.default_rng(5), 80, 120)
    b = photos.photo_backdrop(np.random.default_rng(5), 80, 120)
    assert a.shape == (80, 120, 3) and a.dtype == np.float32 and np.array_equal(a, b)
    assert 0 <= a.min() and a.max() <= 255 and a.std() > 5
    img1, boxes1, _ = make_scene(np.random.default_rng(1), (96, 96), backdrop="photo", clutter=False)
    img2, boxes2, _ = make_scene(np.random.default_rng(1), (96, 96), backdrop="photo", clutter=False)
    assert np.array_equal(img1, img2) and np.array_equal(boxes1, boxes2)
    assert not np.array_equal(img1, make_scene(np.random.default_rng(1), (96, 96))[0])


def test_missing_photo_package_is_named(monkeypatch):
    monkeypatch.setattr(photos, "PHOTOS", (("no_such_package_xyz", "a.jpg"),))
    with pytest.raises(GfldetError, match="no_such_package_xyz.*a.jpg"):
        photos.photo_files()


def test_a_new_setting_does_not_silently_drop_every_recorded_run():
    import dataclasses
    import hashlib

    from gfldet.config import Config

    cfg = Config()
    fields = sorted(f"{s}.{f.name}" for s in recipes.DIGEST_SECTIONS for f in dataclasses.fields(getattr(cfg, s)))
    assert hashlib.sha256("\n".join(fields).encode()).hexdigest()[:12] == "be91661c263f", (
        "a setting was added to or removed from the model / input / train sections: every run key of "
        "bench/results/recipes.jsonl changes with it. Add a new setting to bench/recipes.ADDED_OFF with the value "
        "that reproduces the old behaviour (the recorded runs stay current), then update this digest")
