"""The CPU fast path (``GFL.optimize_for_cpu()``, what gfldet's commands take on the CPU) against the plain modules,
side by side in one run: eager inference (uint8 image to detections) and one training step, per model.

    python bench/cpu_fast_path.py                    # gfl_resnet18_fpn and gfl_resnet50_fpn at 640 px
    python bench/cpu_fast_path.py --size 512 --archs gfl_resnet50_fpn --repeats 9

Each model is built with random weights for 80 classes and timed in interleaved rounds (bench/_util.time_interleaved:
min and median per call); the plain and the fast path run the same instance (set_fusion swaps the classes between
calls), so the weights and inputs are the same. Training: 2 images with 20 random boxes each, forward + backward,
no optimiser step. The CPU model and torch version head the table.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import fmt_ms, machine_info, markdown_table, time_interleaved  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gfldet.models.fusion import set_fusion  # noqa: E402
from gfldet.models.zoo import build_model  # noqa: E402
from tests._seeded import random_gts  # noqa: E402


def cells_for(arch: str, size: int) -> tuple[dict, list]:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=80, min_size=size, max_size=size)
    img = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    images = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(2)]
    targets = []
    for i in range(2):
        boxes, labels = random_gts(20, size, size, 80, seed=i)
        targets.append({"boxes": boxes, "labels": labels})

    def infer(fused: bool):
        def run():
            set_fusion(model, fused)
            model.eval()
            with torch.inference_mode():
                return model([img])
        return run

    def train_step(fused: bool):
        def run():
            set_fusion(model, fused)
            model.train()
            model.zero_grad(set_to_none=True)
            loss = sum(model(images, targets).values())
            loss.backward()
            return float(loss.detach())
        return run

    cells = {f"{arch} infer plain": (infer(False), None), f"{arch} infer fast": (infer(True), None),
             f"{arch} train plain": (train_step(False), None), f"{arch} train fast": (train_step(True), None)}
    return cells, [(arch, "inference 1 image"), (arch, "training step 2 images")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["gfl_resnet18_fpn", "gfl_resnet50_fpn"])
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_info())
    rows = []
    for arch in args.archs:
        cells, _ = cells_for(arch, args.size)
        t = time_interleaved(cells, repeats=args.repeats, warmup=1)
        for kind, label in (("infer", "inference, 1 image"), ("train", "training step, 2 images")):
            plain, fast = t[f"{arch} {kind} plain"], t[f"{arch} {kind} fast"]
            rows.append([arch, label, fmt_ms(plain.min), fmt_ms(fast.min), f"{plain.min / fast.min:.2f}",
                         fmt_ms(plain.median), fmt_ms(fast.median), f"{plain.median / fast.median:.2f}"])
    print(f"\n{args.size}x{args.size} px, ms per call; ratio = plain / fast (> 1: the fast path is faster)\n")
    print(markdown_table(["model", "call", "plain min", "fast min", "ratio", "plain median", "fast median",
                          "ratio (median)"], rows, left=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
