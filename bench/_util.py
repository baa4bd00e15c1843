"""Shared helpers of the benchmark scripts: wall-clock timing, peak-RSS measurement, table printing.

Nothing here is part of the gfldet library; the bench scripts print their results.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "Timing",
    "time_fn",
    "rss_kib",
    "reset_peak_rss",
    "peak_rss_kib",
    "markdown_table",
    "machine_info",
    "fmt_ms",
    "load_average",
]


class Timing:
    """Wall-clock samples (seconds) of one measurement."""

    def __init__(self, samples: Sequence[float]):
        if not samples:
            raise ValueError("no timing samples")
        self.samples = list(samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def __repr__(self) -> str:
        return f"Timing(min={self.min * 1e3:.2f} ms, median={self.median * 1e3:.2f} ms, n={len(self.samples)})"


def time_fn(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, setup: Callable[[], object] | None = None) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed with ``time.perf_counter``.

    ``setup`` (untimed) runs before every call, e.g. to clear gradients. The result of ``fn`` is dropped
    after the clock stops, so freeing it is not timed either.
    """
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    samples = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        out = fn()
        t1 = time.perf_counter()
        del out
        samples.append(t1 - t0)
    return Timing(samples)


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


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table with right-aligned cells except the first column."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for j, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        out.append("| " + " | ".join(parts) + " |")
        if j == 0:
            out.append("|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|")
    return "\n".join(out)


def machine_info() -> str:
    """One line: CPU model, logical cores, torch threads, torch version, UTC date."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"CPU: {cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads), Python {platform.python_version()}, {now}, {load_average()}"
    )


def load_average() -> str:
    """The 1/5/15-minute load averages: on a shared machine, a load above the core count means contention."""
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f}"
    except OSError:
        return "load average n/a"
