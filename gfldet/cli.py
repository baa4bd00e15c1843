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
    model = from_mmdet(args.src, trusted=args.trusted)
    save_checkpoint(args.dst, model, source={"kind": "mmdetection", "path": os.path.abspath(args.src)})
    cfg = model.config
    print(json.dumps({"written": args.dst, "depth": cfg.depth, "groups": cfg.groups, "num_classes": cfg.num_classes,
                      "reg_max": cfg.reg_max, "fpn_channels": cfg.fpn_channels, "head_channels": cfg.head_channels,
                      "class_names": model.class_names is not None}, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.out, steps=args.steps, seed=args.seed, device=args.device)
    print(json.dumps(result, indent=2, default=str))
    return 0


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

    d = sub.add_parser("demo", help="generate data, train a small GFL on the CPU, write pictures and metrics")
    d.add_argument("--out", default="runs/demo", help="results folder (default: runs/demo)")
    d.add_argument("--steps", type=int, default=300)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"gfldet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
