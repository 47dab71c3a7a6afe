"""Benchmark spreads: verdicts only where the interval allows, fit uncertainty that is honest."""
from __future__ import annotations

import math

import pytest

from sparsebench.reporting import spread


def test_bootstrap_interval_holds_the_median_and_is_reproducible():
    values = [1.02, 0.98, 1.05, 1.01, 0.99, 1.10, 1.00]
    s = spread.bootstrap(values)
    assert s.median == pytest.approx(1.01)
    assert s.minimum <= s.low <= s.median <= s.high <= s.maximum
    assert (s.minimum, s.maximum, s.n) == (0.98, 1.10, 7)
    assert spread.bootstrap(values) == s  # fixed seed: the same numbers, the same interval


@pytest.mark.parametrize("values, target, verdict", [
    ([1.00, 1.01, 1.02, 1.01, 1.00], 1.05, "met"),
    ([1.20, 1.21, 1.19, 1.22, 1.20], 1.05, "missed"),
    ([0.95, 1.15, 1.00, 1.12, 1.05], 1.05, "undecided"),  # the noisy bench of issue 16
])
def test_verdict_follows_the_interval_not_the_median(values, target, verdict):
    s = spread.bootstrap(values)
    assert spread.verdict(s.low, s.high, target).startswith(verdict)


def test_one_value_has_no_spread_and_no_verdict():
    s = spread.bootstrap([1.0])
    assert spread.verdict(s.low, s.high, 1.05).startswith("undecided")


def test_loglog_fit_recovers_a_power_law_and_its_noise():
    widths = [1, 2, 4, 8, 16, 32]
    exact = spread.loglog_fit(widths, [3 * w ** 1.5 for w in widths])
    assert exact.slope == pytest.approx(1.5) and exact.se == pytest.approx(0, abs=1e-12)
    noisy = spread.loglog_fit(widths, [3 * w ** 1.5 * f for w, f in
                                       zip(widths, (1.1, 0.9, 1.05, 0.95, 1.1, 0.92))])
    assert abs(noisy.slope - 1.5) < noisy.half_width < 0.2
    assert "± " in str(noisy) and "6 points" in str(noisy)
    two = spread.loglog_fit([1, 2], [1, 4])
    assert two.slope == pytest.approx(2) and math.isnan(two.se) and "no error estimate" in str(two)
    assert spread.loglog_fit([1], [1]) is None and spread.loglog_fit([2, 2], [1, 3]) is None
