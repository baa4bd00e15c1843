"""The ``gfldet`` command (also ``python -m gfldet``)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

log = logging.getLogger("gfldet")


def _cmd_convert(args: argparse.Namespace) -> int:
    from .engine.checkpoint import save_checkpoint
    from .models.mmdet import from_mmdet

    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise ValueError(f"refusing to overwrite the source checkpoint {args.src}; choose another output path")
    if os.path.exists(args.dst) and not args.force:
        raise ValueError(f"{args.dst} exists; pass --force to replace it")
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

    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, device=args.device, progress=not args.no_progress)
    print(json.dumps({k: result[k] for k in ("coco", "uncertainty", "timings_s")} | {"out_dir": result["paths"]["out_dir"]}, indent=2, default=str))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine.train import train

    cfg = load_config(args.config, args.set or [])
    if args.out_dir:
        cfg.out_dir = args.out_dir
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
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
    from .data.coco import CocoDetection
    from .engine.checkpoint import load_model
    from .engine.evaluate import evaluate, format_metrics

    overrides = {"score_thr": args.score_thr} if args.score_thr is not None else {}
    model = load_model(args.checkpoint, **overrides)
    dataset = CocoDetection(args.ann, args.images, train=False)
    if model.class_names is not None and list(model.class_names) != list(dataset.classes):
        raise ValueError(f"{args.ann}: categories {dataset.classes} differ from the model's {model.class_names}")
    device = _device(args.device)
    out_dir = os.path.dirname(os.path.abspath(args.out)) if args.out else None
    metrics = evaluate(model.to(device), dataset, batch_size=args.batch_size, device=device, num_workers=args.workers,
                       progress=not args.no_progress, out_dir=out_dir)
    print(format_metrics(metrics))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({k: v for k, v in metrics.items() if k != "results"}, f, indent=2)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    result = predict(args.checkpoint, args.inputs, out_dir=args.out, score_thr=args.score_thr, device=_device(args.device),
                     draw=not args.no_draw, show_distributions=args.show_distributions, progress=not args.no_progress,
                     backend=args.backend)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .engine.checkpoint import load_checkpoint, load_model
    from .export import export_onnx

    model = load_model(args.checkpoint)
    meta = load_checkpoint(args.checkpoint)
    if args.score_thr is not None:
        model.config.score_thr = args.score_thr
    h, w = args.example_size
    path = export_onnx(model, args.out, mode=args.mode, example_size=(h, w), opset=args.opset,
                       cat_ids=meta.get("cat_ids"), overwrite=args.force)
    print(json.dumps({"written": str(path), "mode": args.mode, "bytes": os.path.getsize(path)}, indent=2))
    return 0


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gfldet", description="Generalized Focal Loss object detection in pure PyTorch")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert an mmdetection GFL checkpoint into a gfldet checkpoint")
    c.add_argument("src", help="mmdetection .pth file")
    c.add_argument("dst", help="gfldet checkpoint to write")
    c.add_argument("--trusted", action="store_true", help="allow full unpickling of SRC (only for files you trust)")
    c.add_argument("--force", action="store_true", help="replace DST if it exists")
    c.set_defaults(func=_cmd_convert)

    t = sub.add_parser("train", help="train on a COCO-format dataset (torchrun --nproc_per_node=K -m gfldet train ... for DDP)")
    t.add_argument("config", nargs="?", default=None, help="YAML config (a dump of gfldet.config.Config; any subset of keys)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. --set train.lr=0.02")
    t.add_argument("--out-dir", default=None, help="shorthand for --set out_dir=...")
    t.add_argument("--resume", action="store_true", help="continue the run in out_dir from its last.pt")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)

    i = sub.add_parser("inspect-data", help="what a COCO-format dataset looks like to GFL at the configured input size: "
                       "box sizes, GTs without ATSS positives, edges beyond reg_max, advice")
    i.add_argument("ann", help="COCO annotation JSON")
    i.add_argument("--images", required=True, help="image folder (only a sample of files is checked; none is decoded)")
    i.add_argument("--config", default=None, help="YAML config as for `gfldet train` (input sizes, model settings)")
    i.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. --set input.min_size=640")
    i.add_argument("--out", default=None, help="folder for inspect.json and sizes.png (default: print only)")
    i.add_argument("--force", action="store_true", help="replace an existing OUT/inspect.json")
    i.add_argument("--max-images", type=_positive_int, default=2000,
                   help="run the ATSS assignment on a random sample of at most this many images (default 2000)")
    i.add_argument("--seed", type=int, default=0, help="seed of that sample")
    i.set_defaults(func=_cmd_inspect_data)

    e = sub.add_parser("eval", help="COCO metrics of a checkpoint on a COCO-format dataset")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--ann", required=True, help="COCO annotation JSON")
    e.add_argument("--images", required=True, help="image folder")
    e.add_argument("--out", default=None, help="write the metrics here (JSON); pictures go beside it")
    e.add_argument("--batch-size", type=int, default=2)
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--score-thr", type=float, default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_cmd_eval)

    pr = sub.add_parser("predict", help="detect objects in images or folders; COCO-results JSON and pictures out")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("inputs", nargs="+", help="image files or folders")
    pr.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    pr.add_argument("--score-thr", type=float, default=0.3, help="minimum score kept (default 0.3)")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--no-draw", action="store_true", help="write only the JSON")
    pr.add_argument("--show-distributions", action="store_true", help="also draw each box's four edge distributions")
    pr.add_argument("--no-progress", action="store_true")
    pr.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                    help="torch: CHECKPOINT is a gfldet checkpoint; onnxruntime: CHECKPOINT is a file from `gfldet export`")
    pr.set_defaults(func=_cmd_predict)

    x = sub.add_parser("export", help="write a checkpoint as a self-contained ONNX file (dynamic batch and image size)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--out", required=True, help="ONNX file to write")
    x.add_argument("--mode", choices=("decoded", "raw"), default="decoded",
                   help="decoded: boxes, scores, distributions of every prior before NMS; raw: per-level logits (docs/onnx.md)")
    x.add_argument("--example-size", type=int, nargs=2, default=(320, 320), metavar=("H", "W"), help="size traced with")
    x.add_argument("--opset", type=int, default=18)
    x.add_argument("--score-thr", type=float, default=None, help="score threshold stored for the reference post-processing")
    x.add_argument("--force", action="store_true", help="replace OUT if it exists")
    x.set_defaults(func=_cmd_export)

    d = sub.add_parser("demo", help="generate data, train a small GFL on the CPU, write pictures and metrics")
    d.add_argument("--out", default="runs/demo", help="results folder (default: runs/demo)")
    d.add_argument("--epochs", type=int, default=5, help="training epochs over the 1500 generated images (default 5)")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        print(f"gfldet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
