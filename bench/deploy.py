"""CPU deployment, side by side in one run: PyTorch eager against ONNX Runtime and OpenVINO, fp32 / bf16 / INT8.

    python bench/deploy.py                                  # the demo's model (256 px) and gfl_resnet50_fpn (640 px)
    python bench/deploy.py --models demo --val-images 500   # AP on more validation images

Every cell is the whole detector call on one image through its public entry point, end to end: resize,
network, decode and NMS (``model([img])`` for eager, ``gfldet.deploy.load(FILE)([img])`` for the exported files).
The cells run in interleaved rounds with the same number of threads: per round and cell, one untimed call (which
wakes that runtime's thread pool after the others ran: one process holds them all) and then a timed block of
``--block`` images; the time per image of a block is reported (minimum and median over the rounds). Files
are made with ``gfldet export``'s code (:func:`gfldet.ship.export_model`); INT8 is calibrated on the demo's
training images. For the demo's model: COCO AP on the demo's validation split. Each cell also runs alone in a
fresh process (``alone``: one runtime, as deployed; no other runtime's threads around), which gives its peak
memory - the peak RSS of loading it and running 3 images, less that process's RSS before loading (torch, NumPy
and the runtimes imported) - and its time per image over ``--isolated-calls`` calls; these processes run in
``--alone-rounds`` rounds of every cell in turn, and a cell's alone speed-up is paired with eager's time in the same
round (median and worst round reported). gfl_resnet50_fpn has random weights (its AP means nothing; latency only).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import Timing, cpu_model, fmt_ms, load_average, machine_info, markdown_table, peak_rss_kib, rss_kib, time_interleaved  # noqa: E402

import gfldet  # noqa: E402
from gfldet.data.coco import CocoDetection  # noqa: E402
from gfldet.demo import demo_data  # noqa: E402
from gfldet.deploy import load, postprocess, preprocess  # noqa: E402
from gfldet.deploy.runtime import openvino_capabilities  # noqa: E402
from gfldet.engine.evaluate import evaluate  # noqa: E402
from gfldet.models.io import load_model  # noqa: E402
from gfldet.predict import collect_images, read_image  # noqa: E402
from gfldet.ship import export_model  # noqa: E402

DEMO_CKPT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "demo_model_fp16.pt"
# (name, file, backend, export settings); "eager" is the PyTorch model itself
CELLS = [
    ("eager fp32", None, "torch", None),
    ("ONNX Runtime fp32", "fp32.onnx", "onnxruntime", {}),
    ("ONNX Runtime INT8", "int8.onnx", "onnxruntime", {"int8": True}),
    ("OpenVINO fp32", "fp32.xml", "openvino", {}),
    ("OpenVINO bf16", "bf16.xml", "openvino", {"precision": "bf16"}),
    ("OpenVINO INT8", "int8.xml", "openvino", {"int8": True}),
]


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        return "unknown"
    have = [name for name, flag in [("AVX2", "avx2"), ("AVX-512", "avx512f"), ("VNNI", "avx512_vnni"),
                                    ("AVX-VNNI", "avx_vnni"), ("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_tile")]
            if flag in flags]
    return ", ".join(have) or "none of AVX2 / AVX-512 / VNNI / AMX"


def make_model(name: str, size: int) -> torch.nn.Module:
    if name == "demo":
        model = load_model(DEMO_CKPT)
    else:
        torch.manual_seed(0)
        model = gfldet.gfl_resnet50_fpn(num_classes=80)
    model.configure(min_size=size, max_size=size).optimize_for_cpu()  # eager as gfldet's CPU commands run it
    return model.eval()


def run_cell(model, path: str | None, backend: str, threads: int):
    if backend == "torch":
        def call(img):
            with torch.inference_mode():
                return model([img])
        return call
    det = load(path, backend=backend, threads=threads)
    return lambda img: det([img])


def child(args) -> None:
    """--child: one cell alone in a fresh process: the peak RSS increase of loading it and running 3 images, then
    the time per image over ``--isolated-calls`` calls (after 3 more untimed), printed as JSON."""
    torch.set_num_threads(args.threads)
    model_name, size, path, backend = args.child
    size = int(size)
    before = rss_kib()
    model = make_model(model_name, size) if backend == "torch" else None
    call = run_cell(model, None if path == "-" else path, backend, args.threads)
    images = bench_images(demo_data(val_images=args.val_images), size)
    for img in images[:3]:
        call(img)
    peak = (peak_rss_kib() - before) / 1024
    for img in images[3:6]:
        call(img)
    samples = []
    for k in range(args.isolated_calls):
        t0 = time.perf_counter()
        call(images[k % len(images)])
        samples.append(time.perf_counter() - t0)
    print(json.dumps({"peak_mib": peak, "min_s": min(samples), "median_s": statistics.median(samples)}))


def alone_rounds(name: str, size: int, cells: list[tuple], args) -> dict[str, dict[str, float]]:
    """Each cell alone in a fresh process (:func:`child`), as it runs deployed, in ``--alone-rounds`` rounds of every
    cell in turn. A cell's speed-up is paired within a round (eager's median time in that round / the cell's), so
    that a slow spell of the machine, which lasts longer than one process, hits both sides of a ratio; reported:
    the median over rounds of the cell's median time and of its paired speed-up, and the worst round's speed-up."""
    per_round: list[dict[str, dict[str, float]]] = []
    for _ in range(args.alone_rounds):
        got = {}
        for label, path, backend in cells:
            proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--val-images",
                                   str(args.val_images), "--isolated-calls", str(args.isolated_calls), "--child", name,
                                   str(size), path or "-", backend], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{label}: the isolated run failed:\n{proc.stderr[-2000:]}")
            got[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        per_round.append(got)
    out = {}
    for label, _, _ in cells:
        ratios = [r["eager fp32"]["median_s"] / r[label]["median_s"] for r in per_round]
        out[label] = {"median_s": statistics.median(r[label]["median_s"] for r in per_round),
                      "peak_mib": max(r[label]["peak_mib"] for r in per_round),
                      "speedup": statistics.median(ratios), "speedup_min": min(ratios)}
    return out


def breakdown(det, images: list, calls: int) -> dict[str, float]:
    """Where an exported cell's time goes: median ms per image of the runtime's three steps, run one after another
    as ``det(images)`` runs them (NumPy resize and pad; the graph on the backend; NumPy selection, NMS and mapping
    back to the image)."""
    t = {"pre": [], "graph": [], "post": []}
    for k in range(calls):
        img = images[k % len(images)]
        t0 = time.perf_counter()
        batch, sizes, scales, originals = preprocess([img], det.meta)
        t1 = time.perf_counter()
        outputs = det.backend.run(batch)
        t2 = time.perf_counter()
        postprocess(outputs, sizes, det.meta, scales, originals)
        t3 = time.perf_counter()
        t["pre"].append(t1 - t0)
        t["graph"].append(t2 - t1)
        t["post"].append(t3 - t2)
    return {k: statistics.median(v) * 1e3 for k, v in t.items()}


def bench_images(data: dict, size: int) -> list[torch.Tensor]:
    """16 validation images of the demo's generator (256 px), up-sampled for a larger input as a camera frame would be."""
    images = [read_image(p) for p in collect_images([data["val_images"] + "/images"])[:16]]
    if size != 256:
        images = [torch.nn.functional.interpolate(i[None].float(), size=(size, size), mode="bilinear")[0].round().byte()
                  for i in images]
    return images


def bench_model(name: str, size: int, args, out: Path, data: dict) -> list[list]:
    model = make_model(name, size)
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    bf16 = "BF16" in openvino_capabilities()
    calib = data["train_images"] + "/images"
    cells = []
    for label, fname, backend, settings in CELLS:
        if settings is not None and settings.get("precision") == "bf16" and not bf16:
            print(f"{label}: skipped, this CPU has no bf16 units (OpenVINO reports {openvino_capabilities()})")
            continue
        path = None
        if fname:
            path = str(d / fname)
            if not Path(path).exists() or args.force:
                kw = dict(settings)
                if kw.pop("int8", False):
                    # R-50's random weights make its AP meaningless: a few calibration images set its ranges
                    kw.update(int8=True, calib=calib, calib_images=args.calib_images if name == "demo" else 32)
                export_model(model, path, overwrite=True, progress=False, example_size=(size, size), **kw)
        cells.append((label, path, backend))
    images = bench_images(data, size)
    calls = {label: run_cell(model, path, backend, args.threads) for label, path, backend in cells}
    state = {"k": 0}

    def block(fn):  # the timed part: `--block` images one after another, as a deployed runtime runs them
        def run():
            for _ in range(args.block):
                fn(images[state["k"] % len(images)])
                state["k"] += 1
        return run

    def warm(fn):  # untimed, before each block: one call that wakes this runtime's threads after the others ran
        return lambda: fn(images[state["k"] % len(images)])

    blocks = time_interleaved({label: (block(fn), warm(fn)) for label, fn in calls.items()}, repeats=args.rounds,
                              warmup=1)
    timings = {label: Timing([x / args.block for x in t.samples]) for label, t in blocks.items()}
    eager = timings["eager fp32"]
    isolated = alone_rounds(name, size, cells, args)
    rows = []
    ap_ref = None
    for label, path, backend in cells:
        alone = isolated[label]
        peak = alone["peak_mib"]
        size_mib = sum(Path(p).stat().st_size for p in ([path, str(Path(path).with_suffix(".bin"))] if path and
                       path.endswith(".xml") else [path] if path else [])) / 2**20
        ap = {}
        if name == "demo":
            module = model if backend == "torch" else load(path, backend=backend, threads=args.threads).as_module()
            ds = CocoDetection(data["val_ann"], data["val_images"], train=False)
            m = evaluate(module, ds, progress=False)
            ap = {k: m[k] for k in ("AP", "AP50", "AP75")}
            ap_ref = ap["AP"] if ap_ref is None else ap_ref
        t = timings[label]
        rows.append([label, f"{size_mib:.1f}" if path else "-", fmt_ms(t.min), fmt_ms(t.median),
                     f"{eager.min / t.min:.2f}x", f"{eager.median / t.median:.2f}x",
                     fmt_ms(alone["median_s"]), f"{alone['speedup']:.2f}x", f"{alone['speedup_min']:.2f}x", f"{peak:.0f}",
                     *([f"{ap['AP'] * 100:.1f}", f"{ap['AP50'] * 100:.1f}", f"{ap['AP75'] * 100:.1f}",
                        f"{(ap['AP'] - ap_ref) * 100:+.1f}"] if ap else ["-"] * 4)])
        print(f"{name} {label}: {t!r}, {load_average()}", flush=True)
    split = []
    for label, path, backend in cells:  # in-process, each cell on its own (no interleaving), after the rounds
        if path:
            b = breakdown(load(path, backend=backend, threads=args.threads), images, args.isolated_calls)
            total = sum(b.values())
            split.append([label, f"{b['pre']:.2f}", f"{b['graph']:.2f}", f"{b['post']:.2f}", f"{total:.2f}",
                          f"{(b['pre'] + b['post']) / total * 100:.0f}%"])
    print(f"\n**{name}: where an exported call's time goes** (median ms per image over {args.isolated_calls} calls)\n")
    print(markdown_table(["backend", "pre (resize, pad)", "graph", "post (select, NMS, map back)", "sum",
                          "pre + post share"], split), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=("demo", "r50"), default=["demo", "r50"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    p.add_argument("--calib-images", type=int, default=300, help="INT8 calibration images (the demo's training images)")
    p.add_argument("--val-images", type=int, default=48, help="validation images of the demo's generator for AP")
    p.add_argument("--out", default="runs/bench-deploy", help="where the exported files go (reused unless --force)")
    p.add_argument("--force", action="store_true", help="export the files again")
    p.add_argument("--block", type=int, default=4, help="images per timed block (the time per image is reported)")
    p.add_argument("--isolated-calls", type=int, default=40, help="timed calls of each cell alone in its own process")
    p.add_argument("--alone-rounds", type=int, default=5,
                   help="rounds of every cell alone in its own process (speed-ups paired within a round)")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(args.threads)
    data = demo_data(val_images=args.val_images)
    out = Path(args.out)
    print(f"{machine_info()}\nCPU model: {cpu_model()}; instruction sets: {cpu_flags()}; OpenVINO CPU capabilities: "
          f"{openvino_capabilities()}", flush=True)
    headers = ["backend", "file MiB", "min ms", "median ms", "speed-up (min)", "speed-up (median)", "alone: median ms",
               "alone: speed-up (median)", "alone: speed-up (worst round)", "peak MiB", "AP", "AP50", "AP75", "ΔAP"]
    for name in args.models:
        size = 256 if name == "demo" else 640
        rows = bench_model(name, size, args, out, data)
        title = (f"demo model (gfl_resnet18_fpn, 24 base channels) at {size}x{size}, AP on {args.val_images} validation images"
                 if name == "demo" else f"gfl_resnet50_fpn (random weights, 80 classes) at {size}x{size}")
        print(f"\n**{title}**, {args.threads} threads, {args.rounds} interleaved rounds of {args.block} images\n")
        print(markdown_table(headers, rows), flush=True)


if __name__ == "__main__":
    main()
