"""Where an OpenVINO IR's time goes: OpenVINO's own per-layer counters (``PERF_COUNT``), summed by operation and
kernel, as a table.

    python bench/ov_profile.py runs/bench-deploy/demo/int8.xml --size 256     # the files bench/deploy.py makes

The graph is compiled as gfldet's runtime compiles it (:class:`gfldet.deploy.runtime.OpenVINOBackend`: the file's
precision for the float parts, latency hint), with the counters on, and runs on a random image of ``--size``
(pixels 0..255, already resized and padded as the runtime would); the counters of ``--calls`` calls after
``--warmup`` are averaged. The per-layer sum is below the wall-clock time of a call (the plugin's own dispatch
between layers is not counted). The kernel name says whether a layer ran in
int8 (``I8``/``i8``/``u8``) or float, and whether in a JIT kernel or the plugin's reference code (``ref``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import cpu_model, markdown_table  # noqa: E402


def profile(path: str, size: int, threads: int, calls: int, warmup: int) -> tuple[Counter, float, int]:
    """``(ms per call by (operation, kernel), wall-clock ms per call, layers)`` of the IR ``path``."""
    from gfldet.deploy.runtime import OpenVINOBackend

    request = OpenVINOBackend(path, threads=threads, properties={"PERF_COUNT": True}).request
    image = (np.random.default_rng(0).random((1, 3, size, size)) * 255).astype(np.float32)
    feed = {"images": image}
    for _ in range(warmup):
        request.infer(feed)
    by_kind: Counter = Counter()
    wall = 0.0
    for _ in range(calls):
        t0 = time.perf_counter()
        request.infer(feed)
        wall += time.perf_counter() - t0
        for layer in request.profiling_info:  # read after the clock stopped
            by_kind[(layer.node_type, layer.exec_type)] += layer.real_time.total_seconds() * 1e3 / calls
    return by_kind, wall * 1e3 / calls, len(request.profiling_info)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ir", help="an OpenVINO IR (.xml) of a gfldet export")
    p.add_argument("--size", type=int, default=256, help="the image side the graph runs on")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--top", type=int, default=15, help="rows of the table (the rest summed in one)")
    args = p.parse_args()
    by_kind, wall, layers = profile(args.ir, args.size, args.threads, args.calls, args.warmup)
    total = sum(by_kind.values())
    ranked = by_kind.most_common()
    rows = [[op, kernel, f"{ms:.3f}", f"{ms / total * 100:.0f}%"] for (op, kernel), ms in ranked[:args.top]]
    rest = sum(ms for _, ms in ranked[args.top:])
    if rest:
        rows.append([f"{len(ranked) - args.top} other kinds", "", f"{rest:.3f}", f"{rest / total * 100:.0f}%"])
    print(f"{args.ir} at {args.size}x{args.size}, {args.threads} threads, {args.calls} calls, CPU model {cpu_model()}: "
          f"{layers} layers; per-layer sum {total:.2f} ms, wall clock {wall:.2f} ms per call\n")
    print(markdown_table(["operation", "kernel", "ms per call", "share"], rows))


if __name__ == "__main__":
    main()
