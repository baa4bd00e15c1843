"""NanoDet-Plus-m on the CPU side by side in one run: eager PyTorch, OpenVINO fp32 and OpenVINO INT8 (gfldet's exporter
and torch-free runtime) per-image latency at 320 and 416 px, with parameters, GFLOPs and the published COCO AP; and a
column per size for ultralytics YOLO11n, filled only where ``ultralytics`` is importable (it is no dependency of
gfldet and is not installed by it).

    python bench/nanodet_latency.py                        # 320 and 416, 5 rounds
    python bench/nanodet_latency.py --sizes 320 --repeats 3

Latency: one 640x480 uint8 image to final detections (the warp, the network, decoding and NMS; the runtime's NumPy
pre- and post-processing for the exported files), min and median of interleaved rounds (bench/_util.time_interleaved).
Random weights (the network's latency does not depend on them; the class biases are lowered by 4, so that with
PyTorch's default initialisation no candidate passes the 0.05 threshold: the timings hold no NMS, which trained
weights add for their ~100 candidates); INT8 is calibrated on 8 synthetic images. GFLOPs: multiply-adds x 2 of the network (backbone, neck,
head) for one square image of the input size (torch.utils.flop_counter). YOLO11n: ``YOLO("yolo11n.yaml")`` (random
weights, nothing downloaded), eager, and its own OpenVINO exports (fp32, and INT8 calibrated on the same 8 synthetic
images through a local data set file; reported as not run where an export fails). Published AP: NanoDet's README (COCO val2017, mAP
0.5:0.95: 27.0 at 320, 30.4 at 416) and ultralytics' docs (YOLO11n 39.5 at 640; not published at 320/416).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import fmt_ms, machine_info, markdown_table, time_interleaved  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gfldet import deploy  # noqa: E402
from gfldet.deploy.lowp import to_openvino  # noqa: E402
from gfldet.models.nanodet import nanodet_plus_m  # noqa: E402
from gfldet.ship import export_model  # noqa: E402

NANODET_AP = {320: 27.0, 416: 30.4}
YOLO11N_AP = "39.5 (640 px)"


def gflops(fn, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(x)
    return counter.get_total_flops() / 1e9


def synthetic_image(seed: int, h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / (9 + 4 * c) + c) * np.cos(yy / (13 + 2 * c)) for c in range(3)])
    return np.clip(127 + 90 * base + rng.normal(0, 20, (3, h, w)), 0, 255).astype(np.uint8)


def nanodet_cells(size: int, work: Path, image: np.ndarray, calib: Path) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = nanodet_plus_m(input_size=size).eval()
    with torch.no_grad():
        for conv in model.head.gfl_cls:
            conv.bias[:80] -= 4.0
    x = torch.zeros(1, 3, size, size)
    info = {"params (M)": sum(p.numel() for p in model.parameters()) / 1e6,
            "GFLOPs": gflops(model.network, x), "COCO AP": NANODET_AP.get(size, "-")}
    onnx_file, xml, int8 = work / f"nd{size}.onnx", work / f"nd{size}.xml", work / f"nd{size}.int8.xml"
    export_model(model, onnx_file, overwrite=True)
    to_openvino(onnx_file, xml, overwrite=True)
    to_openvino(onnx_file, int8, calib=calib, calib_images=8, progress=False, overwrite=True)  # export_model's INT8
    fp32_det, int8_det = deploy.load(xml), deploy.load(int8)
    timg = torch.from_numpy(image)

    def eager():
        with torch.inference_mode():
            return model([timg])

    cells = {f"nd{size} eager": (eager, None), f"nd{size} ov fp32": (lambda: fp32_det([image]), None),
             f"nd{size} ov int8": (lambda: int8_det([image]), None)}
    return cells, info


def yolo_calibration(work: Path, calib: Path) -> Path:
    """A local data set yaml for ultralytics' INT8 calibration (the same 8 synthetic images as NanoDet's; images
    without labels): its default, coco8.yaml, is a download."""
    root = work / "yolo_calib"
    (root / "images" / "val").mkdir(parents=True)
    for f in sorted(calib.glob("*.png")):
        shutil.copy(f, root / "images" / "val" / f.name)
    yaml_file = root / "calib.yaml"
    yaml_file.write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames:\n  0: object\n")
    return yaml_file


def yolo_cells(size: int, work: Path, image: np.ndarray, calib: Path) -> tuple[dict, dict]:
    """YOLO11n (random weights) eager and its own OpenVINO exports; empty where ultralytics is not importable."""
    try:
        from ultralytics import YOLO
    except ImportError:
        return {}, {}
    model = YOLO("yolo11n.yaml")
    net = model.model.eval()
    info = {"params (M)": sum(p.numel() for p in net.parameters()) / 1e6,
            "GFLOPs": gflops(net, torch.zeros(1, 3, size, size)), "COCO AP": YOLO11N_AP}
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0)[..., ::-1])  # ultralytics reads BGR HWC arrays
    cells = {f"yolo{size} eager": (lambda: model.predict(hwc, imgsz=size, verbose=False), None)}
    data = yolo_calibration(work / f"yolo{size}", calib)
    for key, kwargs in (("ov fp32", {}), ("ov int8", {"int8": True, "data": str(data)})):
        try:
            # ultralytics writes the export beside the model, here the working directory: one folder per export
            folder = work / f"yolo{size}" / key.replace(" ", "_")
            folder.mkdir(parents=True)
            with contextlib.chdir(folder):
                path = Path(YOLO("yolo11n.yaml").export(format="openvino", imgsz=size, **kwargs)).resolve()
            exported = YOLO(str(path), task="detect")
            cells[f"yolo{size} {key}"] = (lambda m=exported: m.predict(hwc, imgsz=size, verbose=False), None)
        except Exception as e:  # noqa: BLE001 - an optional peer: report, do not fail the NanoDet table
            info[f"{key} not run"] = f"{type(e).__name__}: {str(e).splitlines()[0][:60]}"
    return cells, info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 416])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    image = synthetic_image(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        calib = work / "calib"
        calib.mkdir()
        from PIL import Image

        for i in range(8):
            Image.fromarray(synthetic_image(100 + i).transpose(1, 2, 0)).save(calib / f"{i}.png")
        cells, infos, columns = {}, {}, []
        for size in args.sizes:
            c, info = nanodet_cells(size, work, image, calib)
            cells.update(c)
            infos[f"nd{size}"] = info
            columns.append((f"NanoDet-Plus-m {size}", f"nd{size}"))
        have_yolo = False
        for size in args.sizes:
            c, info = yolo_cells(size, work, image, calib)
            have_yolo = have_yolo or bool(c)
            cells.update(c)
            infos[f"yolo{size}"] = info
            columns.append((f"YOLO11n {size} (ultralytics)", f"yolo{size}"))
        timings = time_interleaved(cells, repeats=args.repeats, warmup=1)
    rows = []
    for metric in ("params (M)", "GFLOPs", "COCO AP"):
        rows.append([metric] + [_fmt(infos[k].get(metric, "not run")) for _, k in columns])
    for label, key in (("eager PyTorch (ms, min / median)", "eager"), ("OpenVINO fp32 (ms)", "ov fp32"),
                       ("OpenVINO INT8 (ms)", "ov int8")):
        row = [label]
        for _, k in columns:
            t = timings.get(f"{k} {key}")
            row.append(f"{fmt_ms(t.min)} / {fmt_ms(t.median)}" if t else infos[k].get(f"{key} not run", "not run"))
        rows.append(row)
    print(machine_info())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; one 640x480 image to detections")
    if not have_yolo:
        print("YOLO11n columns: not run (ultralytics is not importable here)")
    print(markdown_table(["", *(c for c, _ in columns)], rows))


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    main()
