"""What a practitioner does with run folders: a run stopped by max_iters is evaluated, --resume reads the run's own
config, finished runs and changed models are refused with a message, --exist-ok / --increment, and a failed start
leaves nothing behind; all through the command line, with exit code 2 and no traceback for a mistake."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

import gfldet
from gfldet.cli import main
from gfldet.data.synthetic import write_coco


def _config(data, tmp_path, **extra) -> Path:
    """A config file as a user writes it (2 iterations per epoch)."""
    tr, tri, va, vai = data
    cfg = {"data": {"train": {"ann": tr, "images": tri}, "val": {"ann": va, "images": vai}, "num_workers": 0},
           "model": {"arch": "gfl_resnet18_fpn", "fpn_channels": 32, "head_channels": 32},
           "input": {"min_size": 96, "max_size": 96},
           "train": {"epochs": 1, "batch_size": 2, "log_interval": 1}}
    for key, value in extra.items():
        section, name = key.split(".")
        cfg[section][name] = value
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(*argv) -> int:
    return main(["train", *map(str, argv), "--no-progress"])


def _evals(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval" in r]


def test_a_run_stopped_by_max_iters_is_evaluated_and_resumes_from_its_own_config(data, tmp_path, capsys):
    cfg, run = _config(data, tmp_path), tmp_path / "run"
    assert _train(cfg, "--out", run, "--set", "train.max_iters=1") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["iterations"] == 1 and res["stopped_early"]
    evals = _evals(run)
    assert len(evals) == 1 and evals[0]["iter"] == 1 and evals[0]["stopped_early"]
    assert (run / "best.pt").is_file()
    assert gfldet.load_checkpoint(run / "best.pt")["iteration"] == 1

    # resuming as stopped does nothing: the message says how to continue
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 2
    assert "train.max_iters=null" in capsys.readouterr().err
    # no config file given: the run's own config.yaml is used (data, model, epochs)
    assert main(["train", "--resume", "--out", str(run), "--set", "train.max_iters=null", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["iterations"] == 2 and res["epochs_done"] == 1
    evals = _evals(run)
    assert [(e["iter"], e.get("stopped_early", False)) for e in evals] == [(1, True), (2, False)]
    assert gfldet.load_checkpoint(run / "last.pt")["iteration"] == 2

    # a finished run: nothing to resume, and the message says how to train longer
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is finished" in err and "train.epochs" in err and "Traceback" not in err


def test_resume_refuses_other_model_settings_before_reading_data(data, tmp_path, capsys, monkeypatch):
    cfg, run = _config(data, tmp_path), tmp_path / "run"
    assert _train(cfg, "--out", run, "--set", "train.max_iters=1") == 0
    capsys.readouterr()

    import gfldet.data.coco as coco

    def no_data(*a, **k):
        raise AssertionError("a data set was read")

    monkeypatch.setattr(coco, "CocoDetection", no_data)
    assert _train("--resume", "--out", run, "--set", "model.fpn_channels=64", "--set", "train.max_iters=null") == 2
    err = capsys.readouterr().err
    assert "model.fpn_channels: 32 in the run, 64 now" in err and "--init" in err


def test_exist_ok_starts_over_and_increment_takes_the_next_free_name(data, tmp_path, capsys):
    cfg, run = _config(data, tmp_path), tmp_path / "exp"
    assert _train(cfg, "--out", run, "--set", "train.max_iters=1") == 0
    capsys.readouterr()
    assert _train(cfg, "--out", run) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--exist-ok" in err and "--increment" in err

    assert _train(cfg, "--out", run, "--increment", "--set", "train.max_iters=1") == 0
    assert json.loads(capsys.readouterr().out)["out_dir"] == str(tmp_path / "exp-1")
    assert (tmp_path / "exp-1" / "last.pt").is_file()
    assert _train(cfg, "--out", run, "--increment", "--set", "train.max_iters=1") == 0
    assert json.loads(capsys.readouterr().out)["out_dir"] == str(tmp_path / "exp-2")

    assert _train(cfg, "--out", run, "--exist-ok") == 0  # the whole epoch this time, in the same folder
    assert json.loads(capsys.readouterr().out)["iterations"] == 2
    assert gfldet.load_checkpoint(run / "last.pt")["iteration"] == 2
    assert [e["iter"] for e in _evals(run)] == [2]  # the old run's log is gone, not mixed in


@pytest.mark.parametrize("setting, words", [
    ("model.arch=gfl_resnet19_fpn", ["model.arch", "gfl_resnet19_fpn", "gfl_resnet18_fpn"]),
    ("model.init=nowhere/model.pt", ["model.init", "nowhere/model.pt"]),
    ("model.weights_backbone=nowhere/r18.pth", ["nowhere/r18.pth"]),
])
def test_config_mistakes_are_found_before_any_data_and_leave_no_folder(data, tmp_path, capsys, monkeypatch, setting, words):
    import gfldet.data.coco as coco

    def no_data(*a, **k):
        raise AssertionError("a data set was read")

    monkeypatch.setattr(coco, "CocoDetection", no_data)
    run = tmp_path / "never"
    assert _train(_config(data, tmp_path), "--out", run, "--set", setting) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not run.exists()


def test_offline_imagenet_weights_are_a_message_before_any_data(data, tmp_path, capsys, monkeypatch):
    import urllib.error

    import gfldet.data.coco as coco
    import torch

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def no_data(*a, **k):
        raise AssertionError("a data set was read")

    monkeypatch.setattr(coco, "CocoDetection", no_data)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # an empty cache: nothing there to load
    assert _train(_config(data, tmp_path), "--out", tmp_path / "r", "--set", "model.weights_backbone=IMAGENET1K_V1") == 2
    err = capsys.readouterr().err
    assert "resnet18-f37072fd.pth" in err and "checkpoints" in err and "Traceback" not in err


def test_eval_uses_the_runs_validation_data_and_writes_into_an_out_folder(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(_config(data, tmp_path), "--out", run, "--set", "train.max_iters=1") == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "per_class"} and (out / "pr_curve.png").is_file()
    before = (out / "metrics.json").read_bytes()
    # nothing is replaced without --force, and the refusal comes before the evaluation
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--out", str(out), "--workers", "0", "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err and (out / "metrics.json").read_bytes() == before
    a_file = tmp_path / "taken.txt"
    a_file.write_text("mine")
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--out", str(a_file), "--no-progress"]) == 2
    assert "not a folder" in capsys.readouterr().err and a_file.read_text() == "mine"
    # --out NAME.json: the metrics alone, in that file (the contract scripts use for exported files too)
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "m.json"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["AP"] is not None
    before = (tmp_path / "m.json").read_bytes()
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "m.json"), "--no-progress"]) == 2
    assert "m.json exists (pass --force" in capsys.readouterr().err and (tmp_path / "m.json").read_bytes() == before


def test_checkpoints_are_readable_by_the_group_like_every_other_file(data, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        assert _train(_config(data, tmp_path), "--out", run, "--set", "train.max_iters=1") == 0
    finally:
        os.umask(old)
    for name in ("last.pt", "best.pt", "config.yaml"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


def test_version_help_defaults_verbose_after_the_command_and_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"gfldet {gfldet.__version__}")
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "(default: 0.3)" in capsys.readouterr().out
    assert main(["config", "-v", "--set", "train.lr=1e-3", "--set", "out_dir=2024"]) == 0
    text = capsys.readouterr().out
    saved = tmp_path / "resolved.yaml"
    saved.write_text(text)
    from gfldet.config import load_config

    cfg = load_config(saved)
    assert cfg.train.lr == 1e-3 and cfg.out_dir == "2024"


def test_fine_tune_a_three_class_run_on_two_classes_with_other_ids(data, tmp_path, capsys, caplog):
    import logging

    import torch

    src = tmp_path / "three"
    assert _train(_config(data, tmp_path), "--out", src, "--set", "train.max_iters=1") == 0
    capsys.readouterr()
    two = tmp_path / "two"  # a user's own data: two categories with ids 5 and 9
    ann = write_coco(two, n=2, seed=3, size=(96, 96), num_classes=2)
    coco = json.loads(Path(ann).read_text())
    remap = {c["id"]: new for c, new in zip(sorted(coco["categories"], key=lambda c: c["id"]), (5, 9))}
    for c in coco["categories"]:
        c["id"] = remap[c["id"]]
    for a in coco["annotations"]:
        a["category_id"] = remap[a["category_id"]]
    Path(ann).write_text(json.dumps(coco))
    cfg = _config(data, tmp_path, **{"data.train": {"ann": ann, "images": str(two)}, "data.val": {"ann": "", "images": ""}})
    run = tmp_path / "tuned"
    with caplog.at_level(logging.INFO, logger="gfldet"):
        # lr 1e-30: the one step moves no weight by a float32 ulp, so the model is exactly what was loaded
        assert _train(cfg, "--out", run, "--init", src / "best.pt", "--set", "train.max_iters=1", "--set", "train.lr=1e-30") == 0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded "))
    assert "head.gfl_cls.weight" in line and "head.gfl_cls.bias" in line
    before = gfldet.load_checkpoint(src / "best.pt")["state_dict"]
    after = gfldet.load_checkpoint(run / "last.pt")
    assert after["cat_ids"] == [5, 9] and after["model_config"]["num_classes"] == 2
    moved = [k for k, v in after["state_dict"].items() if not k.startswith("head.gfl_cls.")
             and not torch.equal(v, before[k])]
    assert moved == []
    assert after["state_dict"]["head.gfl_cls.weight"].shape[0] == 2
    # the strict mode stays available and names what does not fit
    assert _train(cfg, "--out", tmp_path / "strict", "--init", src / "best.pt", "--set", "model.init_strict=true") == 2
    assert "head.gfl_cls.weight" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()


def test_a_checkpoint_and_an_onnx_file_swapped_are_messages(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(_config(data, tmp_path), "--out", run, "--set", "train.max_iters=1") == 0
    capsys.readouterr()
    _, _, _, vai = data
    images = str(Path(vai) / "images")
    assert main(["predict", "--checkpoint", str(run / "best.pt"), images, "--backend", "onnxruntime",
                 "--out", str(tmp_path / "p1"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "PyTorch checkpoint" in err and "--backend torch" in err
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x09\x12\x07pytorch")  # how an ONNX protobuf starts (ir_version, producer_name)
    for argv in (["predict", "--checkpoint", str(onnx), images, "--out", str(tmp_path / "p2")],
                 ["eval", "--checkpoint", str(onnx)], ["export", "--checkpoint", str(onnx), "--out", str(tmp_path / "x.onnx")]):
        assert main(argv + ["--no-progress"] * (argv[0] != "export")) == 2
        err = capsys.readouterr().err
        assert "ONNX file" in err and "weights_only" not in err, (argv, err)


def test_predict_never_replaces_earlier_predictions_without_force(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(_config(data, tmp_path), "--out", run, "--set", "train.max_iters=1") == 0
    _, _, va, vai = data
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(run / "best.pt"), str(Path(vai) / "images"), "--out", str(out),
            "--no-draw", "--no-progress", "--ann", va]
    assert main(argv) == 0
    ids = {r["image_id"] for r in json.loads((out / "predictions.json").read_text())}
    assert ids <= {im["id"] for im in json.loads(Path(va).read_text())["images"]}
    (out / "predictions.json").write_text("[]")
    capsys.readouterr()
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err and (out / "predictions.json").read_text() == "[]"
    assert main(argv + ["--force"]) == 0


def test_resume_without_validation_updates_best_and_needs_neither_init_nor_the_old_folder(data, tmp_path, capsys):
    tr, tri, _, _ = data
    src = tmp_path / "src"
    assert _train(_config(data, tmp_path), "--out", src, "--set", "train.max_iters=1") == 0
    init = tmp_path / "start.pt"
    init.write_bytes((src / "best.pt").read_bytes())
    cfg = _config(data, tmp_path, **{"data.val": {"ann": "", "images": ""}})
    run = tmp_path / "run"
    assert _train(cfg, "--out", run, "--init", init, "--set", "train.max_iters=1") == 0
    init.unlink()  # the weights it started from are gone: last.pt has everything a resume needs
    moved = tmp_path / "moved"
    run.rename(moved)  # and the run folder was moved; its config.yaml still names the old place
    capsys.readouterr()
    assert _train("--resume", "--out", moved, "--set", "train.max_iters=null") == 0
    assert json.loads(capsys.readouterr().out)["out_dir"] == str(moved)
    assert not run.exists()
    # without validation best.pt is the final model, also after a resume
    assert gfldet.load_checkpoint(moved / "best.pt")["iteration"] == gfldet.load_checkpoint(moved / "last.pt")["iteration"] == 2


def test_exist_ok_also_removes_the_old_evaluation_files(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(_config(data, tmp_path), "--out", run, "--set", "train.max_iters=1") == 0
    assert (run / "pr_curve.png").is_file() and (run / "detections.json").is_file()
    cfg = _config(data, tmp_path, **{"data.val": {"ann": "", "images": ""}})
    assert _train(cfg, "--out", run, "--exist-ok", "--set", "train.max_iters=1") == 0
    assert not (run / "pr_curve.png").exists() and not (run / "detections.json").exists()
    assert _train(cfg, "--out", run, "--exist-ok", "--increment") == 2
    assert "choose one" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["train", "--set", "out_dir="], ["out_dir is empty"]),
    (["predict", "--checkpoint", "x.pt", ".", "--device", "gpu"], ["--device", "'gpu'", "cuda:N"]),
    (["eval", "--checkpoint", "x.pt", "--device", "0,1"], ["--device", "torchrun"]),
])
def test_more_mistakes_are_messages(tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and "Traceback" not in err, err


def test_a_missing_optional_package_is_named_and_a_broken_import_is_not_hidden(monkeypatch, capsys):
    import gfldet.cli as cli

    def needs(name):
        def command(args):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return command

    monkeypatch.setattr(cli, "_cmd_config", needs("onnxruntime.capi"))
    assert main(["config"]) == 2
    assert "pip install onnxruntime" in capsys.readouterr().err
    monkeypatch.setattr(cli, "_cmd_config", needs("gfldet.nothing"))  # gfldet's own: a bug, shown as one
    with pytest.raises(ModuleNotFoundError):
        main(["config"])
