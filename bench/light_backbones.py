"""The light presets side by side: parameters, GFLOPs and CPU latency (eager PyTorch, OpenVINO INT8) per image.

    python bench/light_backbones.py                        # 320 px, every light preset and gfl_resnet18_fpn / 50
    python bench/light_backbones.py --size 416 --archs gfl_mobilenet_v2_fpn gfl_shufflenet_v2_x1_0_fpn

Each model is built with its builder's defaults for 3 classes (the light presets with their 96-channel FPN and
two depthwise-separable tower layers per branch; the ResNets with GFL's 256-channel FPN and four 3x3 tower layers)
and random weights (latency does not depend on them; INT8 is calibrated on 16 of the demo generator's images, so
that its ranges are those of real activations). GFLOPs: multiply-adds x 2 of the network for one square image of
``--size`` px (torch.utils.flop_counter: convolutions and matrix products; BatchNorm, activations, decode and NMS
not counted), split into backbone and neck + head. Latency: the whole detector call on one image through its public
entry point (resize, network, decode, NMS: ``model([img])`` eager; ``gfldet.deploy.load(FILE)([img])`` for the
OpenVINO INT8 IR made by gfldet's exporter), the cells timed in interleaved rounds (bench/_util.time_interleaved),
min and median per image. The table goes to stdout and ``--out``/results.json, with the CPU model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import cpu_model, fmt_ms, markdown_table, time_interleaved  # noqa: E402

from gfldet.data.synthetic import write_coco  # noqa: E402
from gfldet.deploy import load  # noqa: E402
from gfldet.models.zoo import build_model  # noqa: E402
from gfldet.predict import collect_images, read_image  # noqa: E402
from gfldet.ship import export_model  # noqa: E402

ARCHS = ["gfl_mobilenet_v2_fpn", "gfl_mobilenet_v3_large_fpn", "gfl_shufflenet_v2_x1_0_fpn", "gfl_efficientnet_b0_fpn",
         "gfl_resnet18_fpn", "gfl_resnet50_fpn"]


def gflops(module: torch.nn.Module, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() / 1e9


def measure(arch: str, size: int, images: list[torch.Tensor], calib: str, work: Path, args) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3, min_size=size, max_size=size).optimize_for_cpu().eval()
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    x = torch.zeros(1, 3, size, size)
    feats = model.backbone(x)
    row = {"arch": arch, "params_M": n(model) / 1e6, "backbone_params_M": n(model.backbone) / 1e6,
           "backbone_gflops": gflops(model.backbone, x), "gflops": gflops(model.forward_features, x)}
    row["head_gflops"] = row["gflops"] - row["backbone_gflops"]
    del feats
    cells = {}

    def eager(img=images[0]):
        with torch.inference_mode():
            return model([img])
    cells["eager fp32"] = (lambda: [eager(im) for im in images[:args.block]], None)
    if not args.no_openvino:
        path = work / f"{arch}-int8.xml"
        export_model(model, path, int8=True, calib=calib, calib_images=16, overwrite=True, progress=False,
                     example_size=(max(size, 256), max(size, 256)))
        det = load(str(path), backend="openvino", threads=torch.get_num_threads())
        cells["OpenVINO INT8"] = (lambda: [det([im.numpy()]) for im in images[:args.block]], None)
    timings = time_interleaved(cells, repeats=args.repeats, warmup=1)
    for k, t in timings.items():
        row[f"{k} min_ms"] = t.min / args.block * 1e3
        row[f"{k} median_ms"] = t.median / args.block * 1e3
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--archs", nargs="+", default=ARCHS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--block", type=int, default=4, help="images per timed call")
    ap.add_argument("--no-openvino", action="store_true")
    ap.add_argument("--out", default="runs/bench_light")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_coco(work / "data", 16, 7, (args.size, args.size), 3)
        calib = str(work / "data" / "images")
        images = [read_image(p) for p in collect_images([calib])[: args.block]]
        rows = [measure(a, args.size, images, calib, work, args) for a in args.archs]
    headers = ["model", "params (M)", "backbone (M)", "GFLOPs", "backbone GFLOPs", "neck+head GFLOPs",
               "eager ms (min / median)", "OpenVINO INT8 ms (min / median)", "INT8 speed-up"]
    table = []
    for r in rows:
        ov = r.get("OpenVINO INT8 min_ms")
        table.append([r["arch"], f"{r['params_M']:.2f}", f"{r['backbone_params_M']:.2f}", f"{r['gflops']:.2f}",
                      f"{r['backbone_gflops']:.2f}", f"{r['head_gflops']:.2f}",
                      f"{fmt_ms(r['eager fp32 min_ms'] / 1e3)} / {fmt_ms(r['eager fp32 median_ms'] / 1e3)}",
                      "-" if ov is None else f"{fmt_ms(ov / 1e3)} / {fmt_ms(r['OpenVINO INT8 median_ms'] / 1e3)}",
                      "-" if ov is None else f"{r['eager fp32 min_ms'] / ov:.1f}x"])
    cpu = cpu_model()
    print(f"{args.size} px, 1 image per call, {torch.get_num_threads()} threads, CPU: {cpu}, torch {torch.__version__}")
    print(markdown_table(headers, table))
    (out / "results.json").write_text(json.dumps({"cpu": cpu, "size": args.size, "threads": torch.get_num_threads(),
                                                  "torch": torch.__version__, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
