"""How sure a table's comparison is: confidence intervals, tests against a column's best, the
seeds a difference needs, ranks across a sweep and the probability that one method beats another.

Each number comes from a well-kept library, not from hand-written formulas:

- a cell's 95 % confidence interval of the mean is Student's t-interval
  (``scipy.stats.t.interval`` with the standard error of the mean);
- within a *column* (one data set × model × sparsity × budget), every method is tested against
  the column's best mean with Welch's two-sided t-test (``scipy.stats.ttest_ind``,
  ``equal_var=False``), and the column's p-values are corrected for the number of comparisons
  with Holm's step-down method (:func:`holm`, which gives statsmodels' numbers). A method is
  *tied with the best* when the corrected p-value is at least ``ALPHA``; the best is tied with
  itself. Picking the best by its mean and then testing against it is a selection, but Holm over
  the column's k − 1 comparisons keeps the family-wise rate of a false "below the best" near
  ``ALPHA`` (tests/test_report_statistics.py simulates it);
- the seeds needed to tell a method tied with the best from it at 80 % power are those of a
  two-sided two-sample t-test at ``ALPHA`` / m for the column's m comparisons (Holm's first,
  strictest step, so that the number suffices for the corrected test) whose effect size is the
  observed difference over the pooled standard deviation
  (``statsmodels.stats.power.TTestIndPower``), per method;
- across a sweep's columns, each method's average rank (1 = best) with Friedman's test
  (``scipy.stats.friedmanchisquare``) and Nemenyi's post-hoc test for the critical-difference
  figure (``scikit_posthocs``);
- the probability of improvement P(X > Y) + ½ P(X = Y) of rliable (Agarwal et al. 2021),
  per column from the Mann–Whitney U statistic (``scipy.stats.mannwhitneyu``: U / (n·m)), then
  averaged over the columns both methods have. rliable itself is not a dependency: it brings
  jax/arch along for this one formula.

No test is possible where a cell has fewer than 2 runs, or where both cells have no spread at
all (every seed the same number): the p-value is then missing, the cell is *not tied* and not
*below* either (``tied_with_best`` is missing), and a table never bolds it. A column whose best
cell cannot be tested bolds nothing, and neither does a column of one cell.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

ALPHA = 0.05
CONFIDENCE = 0.95
POWER = 0.8
MAX_SEEDS = 100   # beyond this a difference is too small to settle by seeds: shown as ">100"


def mean_interval(values) -> tuple[float, float]:
    """The 95 % t-interval of the mean of ``values`` (missing below 2 values)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    mean, sem = values.mean(), stats.sem(values)
    if sem == 0:
        return float(mean), float(mean)
    low, high = stats.t.interval(CONFIDENCE, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """One cell of a column against the column's best."""

    is_best: bool
    p_vs_best: float            # Holm-corrected; missing for the best and where no test
    tied_with_best: bool | None  # None: no test possible
    seeds_needed: float         # per method, 80 % power at ALPHA; missing where not computed


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down correction along the last axis; missing p-values (no test) are not
    counted as comparisons and stay missing. The numbers of
    ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]`` (the tests check it),
    written out because that function calls ``gc.collect()`` on every call (0.17 s each here:
    minutes for a simulation, seconds for a large table)."""
    p = np.asarray(p, dtype=float)
    tested = ~np.isnan(p)
    m = tested.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(tested, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    scaled = np.where(np.isnan(ranked), np.nan, ranked * (m - np.arange(p.shape[-1])))
    stepped = np.fmax.accumulate(np.nan_to_num(scaled, nan=-np.inf), axis=-1)
    stepped = np.where(np.isnan(scaled), np.nan, np.minimum(stepped, 1.0))
    out = np.empty_like(p)
    np.put_along_axis(out, order, stepped, axis=-1)
    return out


def column_tests(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns of equal n at once (the simulations' form of :func:`against_best`):
    ``values`` (columns, methods, runs) -> (index of each column's best, Holm-corrected p of
    each method against it, missing for the best)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    best = values.mean(axis=2).argmax(axis=1)
    top = values[np.arange(len(values)), best][:, None, :]
    raw = stats.ttest_ind(top, values, axis=2, equal_var=False).pvalue
    raw[np.arange(len(values)), best] = np.nan
    return best, holm(raw)


def against_best(samples: list) -> list[Comparison]:
    """Every cell of one column (a list of arrays of run values) against the column's best mean:
    Welch's t-test, Holm-corrected over the column's comparisons (module docstring)."""
    from scipy import stats

    samples = [np.asarray(s, dtype=float) for s in samples]
    means = [s.mean() if len(s) else -math.inf for s in samples]
    if not samples or max(means) == -math.inf:
        return [Comparison(False, math.nan, None, math.nan) for _ in samples]
    best = int(np.argmax(means))
    top = samples[best]
    raw = np.full(len(samples), np.nan)
    for i, s in enumerate(samples):
        # No spread in either cell (every seed the same number): no noise to test against.
        if i != best and len(s) >= 2 and len(top) >= 2 and (np.ptp(s) > 0 or np.ptp(top) > 0):
            raw[i] = stats.ttest_ind(top, s, equal_var=False).pvalue
    corrected = holm(raw)
    tests = int((~np.isnan(corrected)).sum())
    best_testable = tests > 0  # a lone cell is not bold either
    out = []
    for i, s in enumerate(samples):
        if i == best:
            out.append(Comparison(True, math.nan, True if best_testable else None, math.nan))
        elif not np.isnan(corrected[i]):
            is_tied = tied(corrected[i])  # seeds are worth knowing only where no difference
            out.append(Comparison(False, float(corrected[i]), is_tied,   # was found
                                  seeds_needed(top, s, ALPHA / tests) if is_tied else math.nan))
        else:
            out.append(Comparison(False, math.nan, None, math.nan))
    return out


def tied(p_corrected: float) -> bool:
    """Not significantly below the best: the corrected p-value is at least ALPHA."""
    return bool(p_corrected >= ALPHA)


def seeds_needed(a, b, alpha: float = ALPHA) -> float:
    """Seeds per method for a two-sided t-test at ``alpha`` to find the difference of the means of
    ``a`` and ``b`` with 80 % power, at their pooled spread; ``inf`` for no difference."""
    from statsmodels.stats.power import TTestIndPower
    from statsmodels.tools import sm_exceptions  # noqa: F401 (its import sets warning filters)

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    spread = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    difference = abs(a.mean() - b.mean())
    if spread == 0:
        return 2.0 if difference else math.inf
    effect = difference / spread
    if effect == 0:
        return math.inf
    with warnings.catch_warnings():  # the solver warns where it fails: handled below
        warnings.simplefilter("ignore")
        try:
            n = float(np.ravel(TTestIndPower().solve_power(
                effect_size=effect, alpha=alpha, power=POWER, ratio=1.0,
                alternative="two-sided"))[0])
        except (ValueError, RuntimeError):
            n = math.nan
    if not math.isfinite(n):  # it fails at the extremes: huge effects need 2, tiny ones more
        return 2.0 if effect >= 1 else math.inf  # than MAX_SEEDS
    return max(2.0, float(math.ceil(n)))


def seeds_text(needed: float, n: int) -> str:
    """``n≥7`` where ``n`` seeds are too few for 80 % power, ``>100`` beyond MAX_SEEDS, else ""."""
    if needed is None or pd.isna(needed) or needed <= n:
        return ""
    return f">{MAX_SEEDS}" if needed > MAX_SEEDS else f"n≥{int(needed)}"


# ---------------------------------------------------------------------------------------------
# across columns

@dataclass
class Ranks:
    """Average ranks over complete blocks (columns holding every method kept)."""

    average: pd.Series          # method -> average rank (1 = best), best first
    blocks: int
    left_out: list[str]         # methods missing from too many columns to rank
    friedman_p: float           # missing below 3 methods or 2 blocks
    friedman_stat: float
    nemenyi: pd.DataFrame | None  # pairwise p-values (scikit-posthocs), where Friedman ran


def rank_methods(means: pd.DataFrame) -> Ranks | None:
    """``means``: one row per column (block), one column per method, the cell means (missing
    where a column lacks the method). Methods absent from more than half of the blocks are
    left out; then blocks lacking any kept method are. None when fewer than 2 methods or 1
    block remain."""
    from scipy import stats

    means = means.dropna(axis=0, how="all")
    if means.empty:
        return None
    present = means.notna().mean()
    keep = [m for m in means.columns if present[m] > 0.5]
    left_out = [m for m in means.columns if m not in keep]
    blocks = means[keep].dropna(axis=0, how="any")
    if len(keep) < 2 or len(blocks) < 1:
        return None
    ranks = blocks.rank(axis=1, ascending=False, method="average")
    average = ranks.mean().sort_values()
    p = stat = math.nan
    nemenyi = None
    # Every column a tie of all methods: nothing to rank, no test (scipy divides by zero).
    untied = (blocks.nunique(axis=1) > 1).any()
    if len(keep) >= 3 and len(blocks) >= 2 and untied:
        result = stats.friedmanchisquare(*[blocks[m].to_numpy() for m in keep])
        stat, p = float(result.statistic), float(result.pvalue)
        import scikit_posthocs as sp

        with warnings.catch_warnings():  # ties in some columns: its variance terms warn
            warnings.simplefilter("ignore", RuntimeWarning)
            nemenyi = sp.posthoc_nemenyi_friedman(blocks.reset_index(drop=True))
    return Ranks(average, len(blocks), left_out, p, stat, nemenyi)


def probability_of_improvement(samples: dict) -> pd.DataFrame:
    """``samples``: {column key: {method: run values}}. The matrix P(row beats column): per
    column U / (n·m) of the Mann–Whitney test (P(X > Y) + ½ P(X = Y)), averaged over the
    columns both methods have (missing where they share none)."""
    from scipy import stats

    methods = sorted({m for column in samples.values() for m in column})
    totals = pd.DataFrame(0.0, index=methods, columns=methods)
    counts = pd.DataFrame(0, index=methods, columns=methods)
    for column in samples.values():
        for a, x in column.items():
            for b, y in column.items():
                if a == b or not len(x) or not len(y):
                    continue
                u = stats.mannwhitneyu(x, y, alternative="two-sided").statistic
                totals.loc[a, b] += u / (len(x) * len(y))
                counts.loc[a, b] += 1
    out = totals / counts.where(counts > 0)
    for m in methods:
        out.loc[m, m] = math.nan
    return out
