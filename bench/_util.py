"""Shared helpers of the benchmark scripts: wall-clock timing, peak-RSS measurement, table printing.

Nothing here is part of the gfldet library; the bench scripts print their results.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "Timing",
    "time_fn",
    "time_interleaved",
    "rss_kib",
    "reset_peak_rss",
    "peak_rss_kib",
    "markdown_table",
    "machine_info",
    "cpu_model",
    "fmt_ms",
    "load_average",
    "timed_evaluations",
]


class Timing:
    """Wall-clock samples and process CPU-time samples (seconds, all threads) of one measurement.

    On a shared machine the wall clock includes time spent waiting for a core; the process CPU time
    does not (it still includes OpenMP spin-waiting), so it is the steadier of the two under contention.
    """

    def __init__(self, samples: Sequence[float], cpu_samples: Sequence[float] | None = None):
        if not samples:
            raise ValueError("no timing samples")
        self.samples = list(samples)
        self.cpu_samples = list(cpu_samples) if cpu_samples else []

    @property
    def cpu_min(self) -> float:
        return min(self.cpu_samples) if self.cpu_samples else float("nan")

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def __repr__(self) -> str:
        return (f"Timing(min={self.min * 1e3:.2f} ms, median={self.median * 1e3:.2f} ms, "
                f"cpu_min={self.cpu_min * 1e3:.2f} ms, n={len(self.samples)})")


def time_fn(
    fn: Callable[[], object],
    repeats: int = 5,
    warmup: int = 1,
    setup: Callable[[], object] | None = None,
    min_time: float = 0.0,
    max_repeats: int = 50,
) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (``time.perf_counter`` wall clock and
    ``time.process_time`` CPU time of the whole process).

    ``setup`` (untimed) runs before every call, e.g. to clear gradients. The result of ``fn`` is dropped
    after the clock stops, so freeing it is not timed either. With ``min_time`` > 0, timing goes on past
    ``repeats`` until the timed calls add up to ``min_time`` seconds (at most ``max_repeats`` calls): cheap
    calls get more samples, which makes their minimum robust on a shared machine.
    """
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    samples, cpu = [], []
    while len(samples) < repeats or (sum(samples) < min_time and len(samples) < max_repeats):
        if setup is not None:
            setup()
        c0 = time.process_time()
        t0 = time.perf_counter()
        kept = [fn()]  # the result is freed after the clock stops, not inside the timed region
        t1 = time.perf_counter()
        c1 = time.process_time()
        kept.clear()
        samples.append(t1 - t0)
        cpu.append(c1 - c0)
    return Timing(samples, cpu)


def time_interleaved(
    cells: dict[str, tuple[Callable[[], object], Callable[[], object] | None]],
    repeats: int = 5,
    warmup: int = 1,
    min_time: float = 0.0,
    max_inner: int = 10,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Time several calls in interleaved rounds, so that a burst of load from other processes hits all
    of them alike instead of spoiling the samples of whichever call happened to run then.

    ``cells`` maps a name to ``(fn, setup)``. After ``warmup`` untimed rounds, ``repeats`` rounds run every
    cell; a cell whose warm-up call was cheap runs several times per round (up to ``max_inner``) so that
    its timed calls add up to about ``min_time`` seconds. Returns a ``Timing`` per cell.
    """
    inner = {k: 1 for k in cells}
    for r in range(warmup):
        for name, (fn, setup) in cells.items():
            if setup is not None:
                setup()
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            del out
            if r == warmup - 1 and min_time > 0:
                inner[name] = max(1, min(max_inner, int(min_time / max(repeats * dt, 1e-9))))
    wall: dict[str, list[float]] = {k: [] for k in cells}
    cpu: dict[str, list[float]] = {k: [] for k in cells}
    for r in range(repeats):
        for name, (fn, setup) in cells.items():
            for _ in range(inner[name]):
                if setup is not None:
                    setup()
                c0 = time.process_time()
                t0 = time.perf_counter()
                out = fn()
                t1 = time.perf_counter()
                c1 = time.process_time()
                del out
                wall[name].append(t1 - t0)
                cpu[name].append(c1 - c0)
        if progress is not None:
            progress(f"round {r + 1}/{repeats} done")
    return {k: Timing(wall[k], cpu[k]) for k in cells}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def rss_kib() -> int:
    """Current resident set size of this process (KiB)."""
    return _status_kib("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process to its current RSS (Linux >= 4.0).

    Returns False when the kernel refuses, in which case ``peak_rss_kib`` is the lifetime peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_kib() -> int:
    """Peak resident set size (VmHWM, KiB) since the process started or since ``reset_peak_rss``."""
    return _status_kib("VmHWM")


def peak_rss_increase(fn: Callable[[], object], setup: Callable[[], object] | None = None) -> dict:
    """Peak-RSS increase of one call of ``fn``: one warm-up call first (caches, lazy initialisation, allocator
    structures), then ``setup`` again if given, the peak mark reset, and the peak after one more call minus the RSS
    just before it. Returns ``base_kib``, ``peak_kib``, ``delta_kib`` and ``reset`` (whether the reset worked)."""
    if setup:
        setup()
    out = fn()
    del out
    if setup:
        setup()
    base = rss_kib()
    ok = reset_peak_rss()
    out = fn()
    peak = peak_rss_kib()
    del out
    return {"base_kib": base, "peak_kib": peak, "delta_kib": peak - base, "reset": ok}


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """A GitHub-markdown table: the first ``left`` columns left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for j, r in enumerate(cells):
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("| " + " | ".join(parts) + " |")
        if j == 0:
            out.append("|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    return "\n".join(out)


def cpu_model() -> str:
    """``lscpu``'s "Model name" (``/proc/cpuinfo``'s "model name" where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.strip().startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> str:
    """One line: CPU model, logical cores, torch threads, torch version, UTC date."""
    cpu = cpu_model()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    line = (
        f"CPU: {cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), "
        f"Python {platform.python_version()}, {now}, {load_average()}"
    )
    try:
        busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    except OSError:
        busy = False
    if busy and torch.get_num_threads() > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        line += (
            "\nWARNING: the load average exceeds the core count. With several intra-op threads, OpenMP threads "
            "spin-wait for a descheduled sibling at every parallel region, which can inflate timings several-fold; "
            "consider OMP_WAIT_POLICY=PASSIVE or --threads 1 (see docs/benchmarks.md)."
        )
    return line


def load_average() -> str:
    """The 1/5/15-minute load averages: on a shared machine, a load above the core count means contention."""
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f}"
    except OSError:
        return "load average n/a"


@contextlib.contextmanager
def timed_evaluations():
    """Inside the block, record the wall time of every ``gfldet.engine.evaluate.evaluate`` call into the list it
    yields (the training engine looks the function up on the module at each evaluation, so replacing the module
    attribute reaches it): a run's training time is its wall time less these."""
    import gfldet.engine.evaluate as ev

    inner, seconds = ev.evaluate, []

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t0)

    ev.evaluate = timed
    try:
        yield seconds
    finally:
        ev.evaluate = inner
