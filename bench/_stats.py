"""Paired statistics for the ablation study (bench/ablations.py): Student-t intervals without SciPy.

Within a seed, every variant of the study starts from the same initialisation and sees the data in the same
order, so the per-seed difference ``AP(variant) - AP(reference)`` cancels most of the seed-to-seed spread. Its
mean over the seeds gets a 95% interval from the t distribution with ``n - 1`` degrees of freedom.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["t_cdf", "t_quantile", "Paired", "paired", "verdict"]


def t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom.

    Uses the identity P(|T| <= x) = I_{x^2/(x^2+df)}(1/2, df/2) with the regularised incomplete beta function
    evaluated by its continued fraction (Lentz's method); accurate to ~1e-12 for the df used here."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if x == 0:
        return 0.5
    z = x * x / (x * x + df)
    two_sided = _betainc(0.5, df / 2.0, z)
    return 0.5 + math.copysign(0.5 * two_sided, x)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side only
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return math.exp(log_front) * (f - 1.0) / a


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1e4, 1e4
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Paired:
    """Per-seed differences (variant minus reference) and their mean's 95% t interval (``nan`` with one seed)."""

    diffs: tuple[float, ...]
    mean: float
    se: float
    low: float
    high: float

    @property
    def n(self) -> int:
        return len(self.diffs)


def paired(variant: dict[int, float], reference: dict[int, float], level: float = 0.95) -> Paired | None:
    """Paired differences over the seeds both have (``{seed: value}``); ``None`` when they share none."""
    seeds = sorted(set(variant) & set(reference))
    if not seeds:
        return None
    d = tuple(variant[s] - reference[s] for s in seeds)
    mean = statistics.fmean(d)
    if len(d) < 2:
        return Paired(d, mean, math.nan, math.nan, math.nan)
    se = statistics.stdev(d) / math.sqrt(len(d))
    half = t_quantile(0.5 + level / 2.0, len(d) - 1) * se
    return Paired(d, mean, se, mean - half, mean + half)


def verdict(p: Paired | None, paper_sign: int, margin: float = 0.01) -> str:
    """Whether the interval reproduces the paper's direction (``paper_sign`` = +1: the variant above the
    reference, -1: below, 0: the paper reports no clear difference).

    "About equal" is a claim of equivalence, which an interval containing 0 does not show by itself (a
    [-8, +7] AP interval contains 0 and shows nothing): it is *reproduced* only when the whole interval lies
    within ``±margin`` (1 AP point by default, in the AP's units), even if it excludes 0; *differs* when it excludes
    0 and reaches beyond the margin; *unresolved* otherwise."""
    if p is None or p.n < 2:
        return "too few seeds"
    if paper_sign == 0 and -margin <= p.low and p.high <= margin:
        return "reproduced"  # checked first: [+0.1, +0.4] AP excludes 0 and is still "about equal"
    if p.low > 0 or p.high < 0:
        sign = 1 if p.low > 0 else -1
        if paper_sign == 0:
            return "differs (paper: about equal)"
        return "reproduced" if sign == paper_sign else "reversed"
    return "unresolved"
