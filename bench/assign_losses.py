"""Time and peak memory of ATSS assignment + GFL losses versus the number of ground-truth boxes.

Setting: a batch of 2 images of 800x1333 (network input padded to 800x1344), GFL R-50-FPN geometry
(strides 8..128, feature maps ceil(800/s) x ceil(1344/s), 22,400 anchors per image, 80 classes,
reg_max 16). The head outputs are synthetic: random class logits (2, 80, H_l, W_l) and distribution
logits (2, 68, H_l, W_l) with requires_grad; the model (``gfl_resnet50_fpn(num_classes=80)``) is used
only for its methods, the backbone never runs.

Measured per number of GTs per image:
  (a) ``model.compute_targets``      ATSS assignment + target tensors (no autograd)
  (a') ``model.criterion`` on precomputed targets: the loss terms alone (QFL / GIoU / DFL forward)
  (b) ``model.compute_losses``       (a) + (a'), building the autograd graph
  (c) (b) + ``backward()`` of the summed losses

Timings: all (GT count, measurement) cells are timed in interleaved rounds: ``--warmup`` untimed rounds,
then ``--repeats`` timed rounds in which every cell runs once (a cheap cell several times, to about
``--min-time`` seconds in all); min and median of the wall clock and min of the process CPU time (both
threads, including OpenMP spin-waiting). On a shared machine the minimum is the figure to compare;
medians carry the contention.
Peak memory: each (configuration, measurement) in a fresh subprocess; after one warm-up call the
kernel's peak-RSS mark is reset (/proc/self/clear_refs) and the reported figure is VmHWM minus the RSS
just before the measured call (inputs, model and anchor cache already resident). glibc is told to
serve every allocation >= 64 KiB with mmap (MALLOC_MMAP_THRESHOLD_) so that freed tensors leave the
RSS and the warm-up does not pre-fault memory the measured call reuses.

Run:  cd /work/main && PYTHONPATH=. /work/venv/bin/python bench/assign_losses.py [--repeats 5] [--gts 10,100,1000]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import torch

from _util import fmt_ms, load_average, machine_info, markdown_table, peak_rss_increase, time_interleaved

IMAGE_HW = (800, 1333)
NUM_IMAGES = 2
NUM_CLASSES = 80
MODES = ("targets", "loss_terms", "losses_fwd", "losses_fwd_bwd")
LABELS = {
    "targets": "(a) compute_targets",
    "loss_terms": "(a') loss terms only, fwd",
    "losses_fwd": "(b) compute_losses fwd",
    "losses_fwd_bwd": "(c) compute_losses fwd+bwd",
}


def build(num_gt: int, seed: int = 0, model=None):
    """Model, synthetic head outputs and random valid GT boxes for ``num_gt`` boxes per image."""
    from gfldet.models.zoo import gfl_resnet50_fpn

    torch.manual_seed(seed)
    if model is None:
        model = gfl_resnet50_fpn(num_classes=NUM_CLASSES)
    cfg = model.config
    h, w = IMAGE_HW
    d = cfg.size_divisor
    pad = (math.ceil(h / d) * d, math.ceil(w / d) * d)  # (800, 1344)
    sizes = [(math.ceil(pad[0] / s), math.ceil(pad[1] / s)) for s in cfg.strides]
    nb = 4 * (cfg.reg_max + 1)
    cls = [torch.randn(NUM_IMAGES, NUM_CLASSES, hh, ww, requires_grad=True) for hh, ww in sizes]
    reg = [torch.randn(NUM_IMAGES, nb, hh, ww, requires_grad=True) for hh, ww in sizes]
    g = torch.Generator().manual_seed(seed + 1)
    boxes, labels = [], []
    for _ in range(NUM_IMAGES):
        # Log-uniform sides in [8, 512] px so that every pyramid level gets GTs; centres uniform.
        bw = torch.exp(torch.empty(num_gt).uniform_(math.log(8), math.log(512), generator=g))
        bh = torch.exp(torch.empty(num_gt).uniform_(math.log(8), math.log(512), generator=g))
        cx = torch.rand(num_gt, generator=g) * w
        cy = torch.rand(num_gt, generator=g) * h
        x1 = (cx - bw / 2).clamp(0, w - 2)
        y1 = (cy - bh / 2).clamp(0, h - 2)
        x2 = torch.maximum((cx + bw / 2).clamp(max=w), x1 + 1)
        y2 = torch.maximum((cy + bh / 2).clamp(max=h), y1 + 1)
        boxes.append(torch.stack([x1, y1, x2, y2], dim=1))
        labels.append(torch.randint(0, NUM_CLASSES, (num_gt,), generator=g))
    pad_shapes = [pad] * NUM_IMAGES
    return model, cls, reg, boxes, labels, pad_shapes, sizes


def make_call(mode: str, model, cls, reg, boxes, labels, pad_shapes):
    params = cls + reg

    def clear_grads():
        for p in params:
            p.grad = None

    if mode == "targets":
        return (lambda: model.compute_targets(cls, boxes, labels, pad_shapes)), None
    if mode == "loss_terms":
        # the criterion on precomputed targets: what compute_losses adds on top of compute_targets.
        targets = model.compute_targets(cls, boxes, labels, pad_shapes)
        priors = model.prior_generator([tuple(c.shape[-2:]) for c in cls], cls[0].device)
        return (lambda: model.criterion(*model.head.split(cls, reg), priors, targets)), None
    if mode == "losses_fwd":
        return (lambda: model.compute_losses(cls, reg, boxes, labels, pad_shapes)), None
    if mode == "losses_fwd_bwd":
        def fwd_bwd():
            losses = model.compute_losses(cls, reg, boxes, labels, pad_shapes)
            total = sum(losses.values())
            total.backward()
            return total.detach()

        return fwd_bwd, clear_grads
    raise ValueError(mode)


def mem_child(mode: str, num_gt: int, threads: int) -> None:
    """Runs in a fresh interpreter: print JSON with the peak-RSS increase of one call of ``mode``."""
    torch.set_num_threads(threads)
    model, cls, reg, boxes, labels, pad_shapes, _ = build(num_gt)
    fn, setup = make_call(mode, model, cls, reg, boxes, labels, pad_shapes)
    print(json.dumps({"mode": mode, "gts": num_gt, **peak_rss_increase(fn, setup)}))


def measure_memory(mode: str, num_gt: int, threads: int) -> dict:
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # also disables glibc's dynamic threshold
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), env.get("PYTHONPATH", "")] if p)
    cmd = [sys.executable, os.path.abspath(__file__), "--_mem-child", f"{mode}:{num_gt}", "--threads", str(threads)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory child {mode}:{num_gt} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def profile_ops(num_gt: int, rows: int) -> None:
    """torch.profiler self-CPU table of one forward+backward at ``num_gt`` GTs per image."""
    from torch.profiler import ProfilerActivity, profile

    model, cls, reg, boxes, labels, pad_shapes, _ = build(num_gt)
    for mode in ("targets", "losses_fwd_bwd"):
        fn, setup = make_call(mode, model, cls, reg, boxes, labels, pad_shapes)
        if setup:
            setup()
        fn()  # warm-up
        if setup:
            setup()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        print(f"\n### torch.profiler, {mode}, {num_gt} GTs/image (one call, self CPU time)\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gts", default="10,100,1000", help="comma-separated GT boxes per image")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (each measurement once or more per round)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls before the timed ones")
    ap.add_argument("--min-time", type=float, default=2.0,
                    help="a cheap measurement runs several times per round, to about this many seconds in all")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--profile", type=int, default=0, metavar="ROWS",
                    help="also print a torch.profiler op table (ROWS rows) at the largest GT count")
    ap.add_argument("--_mem-child", dest="mem_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.mem_child:
        mode, g = args.mem_child.split(":")
        mem_child(mode, int(g), args.threads)
        return

    torch.set_num_threads(args.threads)
    gts = [int(x) for x in args.gts.split(",") if x.strip()]
    print(machine_info())
    print(f"batch {NUM_IMAGES} x {IMAGE_HW[0]}x{IMAGE_HW[1]} (padded 800x1344), {NUM_CLASSES} classes, "
          f"warm-up {args.warmup} round(s), {args.repeats} timed rounds, interleaved; cheap calls repeated within a "
          f"round to ~{args.min_time:g} s\n")

    # All configurations are built first and timed in interleaved rounds (every cell once per round), so
    # that load from other processes on a shared machine spreads over all cells alike.
    model = None
    cells, extra = {}, {}
    for g in gts:
        model, cls, reg, boxes, labels, pad_shapes, sizes = build(g, model=model)
        extra["sizes"] = sizes
        extra["anchors"] = sum(a * b for a, b in sizes)
        # Positives actually assigned (a sanity figure, and what the box losses scale with).
        extra[g] = int(model.compute_targets(cls, boxes, labels, pad_shapes).positive.sum())
        for mode in MODES:
            cells[f"{g}:{mode}"] = make_call(mode, model, cls, reg, boxes, labels, pad_shapes)
    timed = time_interleaved(cells, repeats=args.repeats, warmup=args.warmup, min_time=args.min_time,
                             progress=lambda msg: print(f"  timing: {msg} ({load_average()})", flush=True))
    times = {(g, mode): timed[f"{g}:{mode}"] for g in gts for mode in MODES}
    for (g, mode), tm in times.items():
        print(f"  {g:5d} GTs/img  {mode:15s} {tm}", flush=True)
    del cells, timed

    mems: dict[tuple[int, str], dict] = {}
    if not args.no_memory:
        for g in gts:
            for mode in MODES:
                mems[g, mode] = measure_memory(mode, g, args.threads)
                print(f"  {g:5d} GTs/img  {mode:15s} peak +{mems[g, mode]['delta_kib'] / 1024:.1f} MiB", flush=True)

    print(f"\nfeature maps {extra['sizes']}, {extra['anchors']} anchors/image; {load_average()} at the end")
    heads = ["GTs/img", "measurement", "positives (batch)", "wall min ms", "wall median ms", "CPU min ms"]
    if mems:
        heads.append("peak RSS increase MiB")
    rows = []
    for g in gts:
        for m in MODES:
            tm = times[g, m]
            row = [g, LABELS[m], extra[g], fmt_ms(tm.min), fmt_ms(tm.median), fmt_ms(tm.cpu_min)]
            if mems:
                row.append(f"{mems[g, m]['delta_kib'] / 1024:.1f}")
            rows.append(row)
    print("\nTime per call (wall clock; CPU = process CPU time of both threads) and peak memory (increase of the "
          "peak RSS over the RSS before the call, fresh subprocess per cell, after one warm-up call)\n")
    print(markdown_table(heads, rows, left=2))

    if len(gts) > 1:
        # Growth: marginal cost per added GT between consecutive GT counts, on the minima (the least
        # contended samples). A constant marginal cost across rows means linear growth; a fixed cost
        # shows up as a time ratio well below the GT ratio.
        heads = ["GTs/img", "measurement", "x GTs", "x wall min", "wall us per added GT", "CPU us per added GT"]
        if mems:
            heads.append("KiB per added GT")
        rows = []
        for g0, g1 in zip(gts, gts[1:]):
            dg = NUM_IMAGES * (g1 - g0)
            for m in MODES:
                a, b = times[g0, m], times[g1, m]
                row = [f"{g0} -> {g1}", LABELS[m], f"{g1 / g0:.1f}", f"{b.min / a.min:.2f}",
                       f"{(b.min - a.min) / dg * 1e6:.0f}", f"{(b.cpu_min - a.cpu_min) / dg * 1e6:.0f}"]
                if mems:
                    row.append(f"{(mems[g1, m]['delta_kib'] - mems[g0, m]['delta_kib']) / dg:.1f}")
                rows.append(row)
        print("\nGrowth with #GT (from the minima; 'per added GT' counts the GTs of the whole batch, "
              "i.e. 2 x GTs/img)\n")
        print(markdown_table(heads, rows, left=2))

    if args.profile:
        profile_ops(max(gts), args.profile)


if __name__ == "__main__":
    main()
