"""The ``gfldet`` command (also ``python -m gfldet``)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .errors import GfldetError

log = logging.getLogger("gfldet")


def _cmd_convert(args: argparse.Namespace) -> int:
    from .files import refuse_existing
    from .models.io import from_mmdet, save_checkpoint

    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise GfldetError(f"refusing to overwrite the source checkpoint {args.src}; choose another output path")
    refuse_existing([args.dst], args.force)  # before the source is read: the one rule of every writer
    from .data.coco_classes import coco_category_ids

    model = from_mmdet(args.src, trusted=args.trusted)
    cat_ids = coco_category_ids(model.class_names, model.config.num_classes)
    extra = {"cat_ids": cat_ids} if cat_ids else {}
    if cat_ids:
        log.info("80 COCO classes: predictions will carry COCO's category ids (1..90)")
    else:
        log.warning("no dataset category ids known for these %d classes: COCO-format results will use label + 1",
                    model.config.num_classes)
    save_checkpoint(args.dst, model, source={"kind": "mmdetection", "path": os.path.abspath(args.src)}, **extra)
    cfg = model.config
    print(json.dumps({"written": args.dst, "depth": cfg.depth, "groups": cfg.groups, "base_channels": cfg.base_channels,
                      "num_classes": cfg.num_classes,
                      "reg_max": cfg.reg_max, "fpn_channels": cfg.fpn_channels, "head_channels": cfg.head_channels,
                      "class_names": model.class_names is not None}, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, device=args.device, progress=not args.no_progress,
                      arch=args.arch)
    print(json.dumps({k: result[k] for k in ("coco", "uncertainty", "timings_s")} | {"out_dir": result["paths"]["out_dir"]}, indent=2, default=str))
    return 0


def _train_config(args: argparse.Namespace):
    """The config ``gfldet train`` runs: CONFIG + --set (+ --out, --init); with --resume, the run folder's own
    ``config.yaml`` + --set instead (CONFIG, if given, only says where the run is; what differs is named)."""
    from pathlib import Path

    from .config import load_config

    def shortcuts(cfg):
        if args.out_dir:
            cfg.out_dir = args.out_dir
        if args.init:
            cfg.model.init = args.init
        return cfg

    given = shortcuts(load_config(args.config, args.set or []))
    if not args.resume:
        return given
    if args.init:
        raise GfldetError("--init starts a new run from weights; --resume continues the run in its folder: use one")
    saved = Path(given.out_dir) / "config.yaml"
    if not saved.is_file():
        log.warning("%s not found: resuming with the config given on the command line", saved)
        return given
    cfg = shortcuts(load_config(saved, args.set or []))
    cfg.out_dir = given.out_dir  # the folder the run is in now (it may have been moved since config.yaml was written)
    if args.config:
        ignored = _differences(_file_keys(args.config), cfg.to_dict())
        if ignored:
            log.warning("resuming with the run's own %s; %s differs in %s (not used: change a setting with --set)",
                        saved, args.config, ", ".join(ignored))
    log.info("resuming with the run's own config %s", saved)
    return cfg


def _file_keys(path: str) -> dict:
    """The keys a YAML config file sets (not the defaults around them); the file was read and checked as the
    given config before."""
    from .config import read_yaml

    return read_yaml(path) or {}


def _differences(given: dict, saved: dict, prefix: str = "") -> list[str]:
    """Keys whose value in ``given`` is set (not null = automatic) and differs from ``saved``."""
    out = []
    for k, v in given.items():
        if isinstance(v, dict) and isinstance(saved.get(k), dict):
            out += _differences(v, saved[k], f"{prefix}{k}.")
        elif v is not None and saved.get(k) != v:
            out.append(f"{prefix}{k}={v!r} (run: {saved.get(k)!r})")
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from .engine.train import train

    cfg = _train_config(args)
    result = train(cfg, resume=args.resume, progress=not args.no_progress, exist_ok=args.exist_ok,
                   increment=args.increment)
    from .engine.distributed import is_main

    if is_main():
        print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_inspect_data(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data.inspect import check_out_dir, format_report, inspect_dataset, write_report

    cfg = load_config(args.config, args.set or [])
    if args.out:
        check_out_dir(args.out, force=args.force)  # before the work, not after it
    report = inspect_dataset(args.ann, args.images, cfg, max_images=args.max_images, seed=args.seed)
    print(format_report(report))
    if args.out:
        paths = write_report(report, args.out, force=args.force)
        print(f"wrote {paths['report']} and {paths['plot']}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _cmd_eval(args: argparse.Namespace) -> int:
    from .engine.evaluate import format_metrics
    from .evaluate import run_eval

    metrics = run_eval(args.checkpoint, weights=args.weights, ann=args.ann, images=args.images, out=args.out,
                       force=args.force, backend=args.backend, threads=args.threads, precision=args.precision,
                       batch_size=args.batch_size, workers=args.workers, score_thr=args.score_thr, device=args.device,
                       progress=not args.no_progress)
    print(format_metrics(metrics))
    if "written" in metrics:
        print(f"wrote {metrics['written']}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from .config import format_config, load_config

    print(format_config(load_config(args.config, args.set or [])), end="")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .engine.device import resolve_device
    from .predict import predict

    result = predict(args.checkpoint, args.inputs, weights=args.weights, out_dir=args.out, score_thr=args.score_thr,
                     device=resolve_device(args.device, "--device"),
                     draw=not args.no_draw, show_distributions=args.show_distributions, progress=not args.no_progress,
                     backend=args.backend, ann=args.ann, overwrite=args.force, threads=args.threads,
                     batch_size=args.batch_size, precision=args.precision)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .models.io import load_checkpoint, model_from_checkpoint
    from .ship import export_model

    meta = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(meta, args.checkpoint)
    if args.score_thr is not None:
        model.configure(score_thr=args.score_thr)
    h, w = args.example_size
    result = export_model(model, args.out, fmt=args.format, precision=args.precision, int8=args.int8, calib=args.calib,
                          calib_images=args.calib_images, overwrite=args.force, progress=not args.no_progress,
                          mode=args.mode, example_size=(h, w), opset=args.opset, cat_ids=meta.get("cat_ids"))
    print(json.dumps(result, indent=2))
    return 0


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default (where it has one worth showing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _version() -> str:
    from importlib import metadata

    from . import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"gfldet {__version__} (torch {torch_version}, Python {sys.version.split()[0]})"


def _model_source(parser: argparse.ArgumentParser, checkpoint_help: str | None = None) -> None:
    """--checkpoint (a gfldet checkpoint) or --weights (published weights by name, or their file)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help=checkpoint_help or "a gfldet checkpoint")
    source.add_argument("--weights", metavar="NAME_OR_PATH",
                        help="published COCO weights by name, e.g. gfl_r50_fpn_1x_coco (downloaded once into torch "
                        "hub's cache; docs/pretrained.md), or an mmdetection / GFocalV2 .pth file")


def build_parser() -> argparse.ArgumentParser:
    """The ``gfldet`` command. ``--out`` is where a command writes: a folder for train, eval, predict, inspect-data
    and demo; the file itself for export (and DST for convert)."""
    p = argparse.ArgumentParser(prog="gfldet", description="Generalized Focal Loss object detection in pure PyTorch",
                                formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, and a traceback with errors")
    common = argparse.ArgumentParser(add_help=False)  # -v also after the subcommand
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging, and a traceback with errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common], formatter_class=_Formatter)

    c = command("convert", "convert an mmdetection GFL checkpoint into a gfldet checkpoint")
    c.add_argument("src", help="mmdetection .pth file")
    c.add_argument("dst", help="gfldet checkpoint to write")
    c.add_argument("--trusted", action="store_true", help="allow full unpickling of SRC (only for files you trust)")
    c.add_argument("--force", action="store_true", help="replace DST if it exists")
    c.set_defaults(func=_cmd_convert)

    t = command("train", "train on a COCO-format dataset (torchrun --nproc_per_node=K -m gfldet train ... for DDP)")
    t.add_argument("config", nargs="?", default=None, help="YAML config (a dump of gfldet.config.Config; any subset of keys)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. --set train.lr=0.02")
    t.add_argument("--out", "--out-dir", dest="out_dir", default=None, help="run folder (shorthand for --set out_dir=...)")
    t.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from a gfldet or mmdetection checkpoint (shorthand for --set model.init=...): every tensor "
                   "whose name and shape fit is loaded, the class-dependent ones are re-initialised")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in the run folder from its last.pt, with the folder's own config.yaml (+ --set)")
    t.add_argument("--exist-ok", action="store_true", help="start over in a run folder that holds a run (its checkpoints are removed)")
    t.add_argument("--increment", action="store_true",
                   help="if the run folder holds a run, use the next free name (runs/x-1, runs/x-2, ...)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=_cmd_train)

    g = command("config", "print the resolved config (defaults filled in, --set applied) as YAML that `gfldet train` reads")
    g.add_argument("config", nargs="?", default=None, help="YAML config (none: the defaults)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    g.set_defaults(func=_cmd_config)

    i = command("inspect-data", "what a COCO-format dataset looks like to GFL at the configured input size: "
                "box sizes, GTs without ATSS positives, edges beyond reg_max, advice")
    i.add_argument("ann", help="COCO annotation JSON")
    i.add_argument("--images", required=True, help="image folder (only a sample of files is checked; none is decoded)")
    i.add_argument("--config", default=None, help="YAML config as for `gfldet train` (input sizes, model settings)")
    i.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. --set input.min_size=640")
    i.add_argument("--out", default=None, help="folder for inspect.json and sizes.png (none: print only)")
    i.add_argument("--force", action="store_true", help="replace an existing OUT/inspect.json")
    i.add_argument("--max-images", type=_positive_int, default=2000,
                   help="run the ATSS assignment on a random sample of at most this many images")
    i.add_argument("--seed", type=int, default=0, help="seed of that sample")
    i.set_defaults(func=_cmd_inspect_data)

    e = command("eval", "COCO metrics of a checkpoint on a COCO-format dataset")
    _model_source(e)
    e.add_argument("--ann", default=None, help="COCO annotation JSON (none: the validation data the checkpoint's run used)")
    e.add_argument("--images", default=None, help="image folder (with --ann)")
    e.add_argument("--out", default=None, help="folder for metrics.json, detections.json, pr_curve.png, per_class_ap.md; "
                   "or NAME.json for the metrics only")
    e.add_argument("--force", action="store_true", help="replace those files in OUT")
    e.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default="torch",
                   help="torch: a gfldet checkpoint; onnxruntime / openvino: --checkpoint is a file from `gfldet export` "
                   "(give --ann and --images)")
    e.add_argument("--threads", type=_positive_int, default=None, help="onnxruntime / openvino: intra-op threads")
    e.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None,
                   help="openvino: inference precision of the float parts (default: the file's; auto: bf16 where the CPU has it)")
    e.add_argument("--batch-size", type=_positive_int, default=2)
    e.add_argument("--workers", type=int, default=2, help="data loading processes")
    e.add_argument("--score-thr", type=float, default=None,
                   help="lowest score kept (default: the model's own test setting, 0.05 unless its run or export set "
                   "another: COCO's protocol scores low-confidence boxes too)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_eval)

    pr = command("predict", "detect objects in images or folders; COCO-results JSON and pictures out")
    _model_source(pr, "a gfldet checkpoint, or with --backend onnxruntime / openvino a file from `gfldet export`")
    pr.add_argument("inputs", nargs="+", help="image files or folders")
    pr.add_argument("--out", default="predictions", help="output folder")
    pr.add_argument("--ann", default=None, help="COCO annotation JSON the images come from: predictions.json then "
                    "carries its image ids (none: an image's position in the sorted inputs)")
    pr.add_argument("--score-thr", type=float, default=0.3,
                    help="lowest score kept: a threshold for boxes worth drawing (eval's default is the model's own)")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    pr.add_argument("--no-draw", action="store_true", help="write only the JSON")
    pr.add_argument("--force", action="store_true", help="replace predictions.json and pictures in OUT")
    pr.add_argument("--show-distributions", action="store_true", help="also draw each box's four edge distributions")
    pr.add_argument("--no-progress", action="store_true", help="no progress bars")
    pr.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default="torch",
                    help="torch: CHECKPOINT is a gfldet checkpoint; onnxruntime / openvino: a file from `gfldet export`")
    pr.add_argument("--threads", type=_positive_int, default=None, help="onnxruntime / openvino: intra-op threads")
    pr.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None,
                    help="openvino: inference precision of the float parts (default: the file's; auto: bf16 where the CPU has it)")
    pr.add_argument("--batch-size", type=_positive_int, default=1,
                    help="images per call (images are decoded ahead in threads either way); >1 pads a batch to its "
                    "largest image, which shifts border detections slightly")
    pr.set_defaults(func=_cmd_predict)

    x = command("export", "write a checkpoint as a deployable file: ONNX or OpenVINO IR, fp32, bf16 or INT8 (docs/deploy.md)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--out", required=True, help="the file to write: NAME.onnx, or NAME.xml (+ NAME.bin) for OpenVINO")
    x.add_argument("--format", choices=("onnx", "openvino"), default=None, help="default: from OUT's suffix")
    x.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="OpenVINO's inference precision for the float parts (bf16: CPUs with AVX512-BF16 or AMX)")
    x.add_argument("--int8", action="store_true", help="post-training INT8 quantisation (NNCF / ONNX Runtime), with --calib")
    x.add_argument("--calib", default=None, metavar="IMAGES_DIR", help="calibration images for --int8")
    x.add_argument("--calib-images", type=_positive_int, default=300, help="how many of them (sorted by name)")
    x.add_argument("--mode", choices=("decoded", "raw"), default="decoded",
                   help="decoded: boxes, scores, distributions of every prior before NMS; raw: per-level logits (docs/onnx.md)")
    x.add_argument("--example-size", type=int, nargs=2, default=(320, 320), metavar=("H", "W"), help="size traced with")
    x.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18; 19 for models with DCN)")
    x.add_argument("--score-thr", type=float, default=None,
                   help="lowest score kept, stored in the file as its test setting (default: the checkpoint's, 0.05 "
                   "unless its run set another)")
    x.add_argument("--force", action="store_true", help="replace OUT if it exists")
    x.add_argument("--no-progress", action="store_true", help="no progress bars")
    x.set_defaults(func=_cmd_export)

    d = command("demo", "generate data, train a small GFL on the CPU, write pictures and metrics")
    d.add_argument("--out", default="runs/demo", help="results folder (the next free runs/demo-N if it exists)")
    d.add_argument("--epochs", type=_positive_int, default=None,
                   help="training epochs over the 1500 generated images (default: 9 on a CPU with bf16 units or a GPU, "
                   "else 6; docs/demo.md)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("--seed", type=int, default=0, help="training seed (the data is the same for every seed)")
    d.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    d.add_argument("--arch", default="gfl_resnet18_fpn",
                   help="the model: the demo's narrow gfl_resnet18_fpn from scratch (default), or another builder such as "
                   "gfl_mobilenet_v2_fpn, fine-tuned from its torchvision ImageNet weights where torch hub's cache holds "
                   "them (nothing is downloaded; the log says which)")
    d.set_defaults(func=_cmd_demo)
    return p


# A mistake of the user's is one message and exit code 2; -v adds the traceback. A mistake of the user's is a
# GfldetError (a bad value or setting, a malformed file, an unsupported combination, a diverged run: gfldet.errors),
# an OSError (a missing or unreadable file, no network for a download) or a missing optional package (OPTIONAL).
# Anything else is a bug and keeps its traceback: a plain ValueError too, e.g. one raised inside torch or NumPy.
USER_ERRORS = (GfldetError, OSError)
# optional packages some commands need (import name -> what to pip install)
OPTIONAL = {"onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime", "matplotlib": "matplotlib",
            "openvino": "gfldet[deploy]", "nncf": "gfldet[deploy]"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in OPTIONAL:
            raise  # a broken installation or a bug: the traceback is what helps
        print(f"gfldet {args.command}: error: this needs the optional package {e.name.split('.')[0]!r}: "
              f"pip install {OPTIONAL[e.name.split('.')[0]]}", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        if args.verbose:
            log.exception("traceback (-v)")
        print(f"gfldet {args.command}: error: {_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gfldet {args.command}: interrupted", file=sys.stderr)
        return 130


def _message(e: BaseException) -> str:
    """The error's own text, with the file an OSError concerns and a hint for a missing optional package."""
    text = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and getattr(e, "filename", None) and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    if isinstance(e, OSError) and type(e).__name__ == "URLError":
        text = f"cannot download ({text}); without network access, place the file by hand"
    return text


if __name__ == "__main__":
    sys.exit(main())
