"""CPU latency of an exported GFL under ONNX Runtime against PyTorch eager, on the same images.

    python bench/onnx_latency.py                      # gfl_resnet50_fpn at 640x640 (random weights) and R-18 at 256
    python bench/onnx_latency.py --checkpoint runs/demo/last.pt --size 256

Each cell is the whole detector call on one image, end to end: pre-processing, network, decoding and NMS
(``model([img])`` for PyTorch; :class:`gfldet.deploy.OnnxDetector` - resize, ONNX Runtime, NumPy
post-processing - for ONNX). Both use the same number of threads; the cells are timed in interleaved rounds
(minimum and median of the rounds), and the detections of the two are checked to be the same.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import fmt_ms, load_average, machine_info, markdown_table, time_interleaved  # noqa: E402

import gfldet  # noqa: E402
from gfldet.deploy import OnnxDetector  # noqa: E402
from gfldet.export import export_onnx  # noqa: E402


def _case(name: str, model: torch.nn.Module, size: int, threads: int, repeats: int, tmp: str) -> list:
    model.eval()
    model.configure(min_size=size, max_size=size).optimize_for_cpu()  # eager as gfldet's CPU commands run it
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
    path = os.path.join(tmp, f"{name}.onnx")
    export_onnx(model, path, mode="decoded", example_size=(max(size, 256), max(size, 256)))
    onnx_det = OnnxDetector(path, threads=threads)
    with torch.inference_mode():
        ref = model([img])[0]
    got = onnx_det([img.numpy()])[0]
    same = got["boxes"].shape[0] == ref["boxes"].shape[0] and np.array_equal(got["labels"], ref["labels"].numpy()) and \
        (got["boxes"].shape[0] == 0 or np.abs(got["boxes"] - ref["boxes"].numpy()).max() < 1e-2)

    def eager():
        with torch.inference_mode():
            return model([img])

    cells = {"torch eager": (eager, None), "onnxruntime": (lambda: onnx_det([img.numpy()]), None)}
    t = time_interleaved(cells, repeats=repeats, warmup=2)
    e, o = t["torch eager"], t["onnxruntime"]
    return [name, f"{size}x{size}", int(ref["boxes"].shape[0]), "yes" if same else "NO", fmt_ms(e.min), fmt_ms(o.min),
            f"{e.min / o.min:.2f}x", fmt_ms(e.median), fmt_ms(o.median)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="a gfldet checkpoint (default: the built-in cases)")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            from gfldet.models.io import load_model

            rows.append(_case(os.path.basename(args.checkpoint), load_model(args.checkpoint), args.size, args.threads, args.repeats, tmp))
        else:
            r50 = gfldet.gfl_resnet50_fpn(num_classes=80)
            torch.nn.init.constant_(r50.head.gfl_cls.bias, -2.0)  # scores ~0.12: boxes reach NMS, as with trained weights
            rows.append(_case("gfl_resnet50_fpn (80 classes)", r50, args.size, args.threads, args.repeats, tmp))
            r18 = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=64, head_channels=64)
            torch.nn.init.constant_(r18.head.gfl_cls.bias, -2.0)
            rows.append(_case("gfl_resnet18_fpn 64-ch (demo input size)", r18, 256, args.threads, args.repeats, tmp))
    print(machine_info())
    print(f"threads: {args.threads} (torch and onnxruntime); {load_average()}")
    print(markdown_table(["model", "input", "detections", "same detections", "eager min ms", "ORT min ms",
                          "eager / ORT", "eager median ms", "ORT median ms"], rows))


if __name__ == "__main__":
    main()
