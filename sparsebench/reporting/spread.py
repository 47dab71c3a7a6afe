"""How sure a benchmark number is: spreads of repeated ratios and of fitted slopes.

A ratio measured once on a shared machine moves by ±15 % from run to run, so a single value
against a target says little. The benchmarks therefore measure each ratio once per repeat
(both sides of it close in time), and report

* the median over repeats with a bootstrap 95 % confidence interval of that median
  (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13: percentile
  interval) and the min-max over repeats, and
* for a log-log fit (the width-scaling slopes), the least-squares slope with its standard
  error and a Student-t 95 % interval;

and call a target **met** only when the whole interval lies on its side, **missed** when the
whole interval lies beyond it, and **undecided** otherwise.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Two-sided 95 % quantiles of Student's t by degrees of freedom (beyond the table: normal).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(dof: int) -> float:
    """The 97.5 % quantile of Student's t (the nearest tabulated dof at or below ``dof``)."""
    if dof < 1:
        return math.inf
    return _T975[max(k for k in _T975 if k <= dof)] if dof <= 30 else 1.96


@dataclass(frozen=True)
class Spread:
    """A repeated measurement: median, its bootstrap 95 % interval, and min-max."""

    median: float
    low: float           # bootstrap 95 % interval of the median
    high: float
    minimum: float
    maximum: float
    n: int

    def __str__(self) -> str:
        return (f"{self.median:.3f} [95% CI {self.low:.3f}-{self.high:.3f}; "
                f"min-max {self.minimum:.3f}-{self.maximum:.3f}; n={self.n}]")


def bootstrap(values: Sequence[float], resamples: int = 4000, seed: int = 0) -> Spread:
    """Median of ``values`` with its percentile-bootstrap 95 % interval (fixed seed: the same
    numbers give the same interval)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        raise ValueError("no finite values")
    if len(x) == 1:
        v = float(x[0])
        return Spread(v, -math.inf, math.inf, v, v, 1)  # one value: no spread known
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, len(x), size=(resamples, len(x)))], axis=1)
    low, high = np.quantile(medians, [0.025, 0.975])
    return Spread(float(np.median(x)), float(low), float(high), float(x.min()), float(x.max()),
                  len(x))


def verdict(low: float, high: float, target: float) -> str:
    """``met`` when the interval is at or below ``target`` (an upper bound), ``missed`` when
    it is above, ``undecided`` when it straddles it."""
    if high <= target:
        return "met"
    if low > target:
        return "missed"
    return "undecided (the spread straddles the target)"


@dataclass(frozen=True)
class Fit:
    """A least-squares slope with its standard error and 95 % interval."""

    slope: float
    se: float            # nan with only two points (a line through two points has no error)
    n: int

    @property
    def half_width(self) -> float:
        return t975(self.n - 2) * self.se

    def __str__(self) -> str:
        if not math.isfinite(self.se):
            return f"{self.slope:.2f} (2 points, no error estimate)"
        return f"{self.slope:.2f} ± {self.half_width:.2f} (95%, {self.n} points)"


def loglog_fit(xs: Sequence[float], ys: Sequence[float]) -> Fit | None:
    """Slope of log(y) against log(x) over the pairs with positive values, or None (fewer
    than two points, or all x equal)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys)
           if x and y and x > 0 and y > 0]
    n = len(pts)
    if n < 2:
        return None
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if not sxx:
        return None
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    if n == 2:
        return Fit(slope, math.nan, n)
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in pts) / (n - 2)
    return Fit(slope, math.sqrt(residual / sxx), n)
