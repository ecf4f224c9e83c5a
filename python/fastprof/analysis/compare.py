"""Comparison of two sets of measurements: the effect, its interval, a test, and a verdict.

The unit of replication
    Values inside one unit are not independent: the token gaps of one iteration share its
    caches, clocks and neighbours, and the iterations of one process share its memory layout,
    compilation and tenants. A test that counts every gap as a sample believes it has hundreds
    of samples and draws intervals far too narrow. So each comparison is over *units*, one value
    per unit:

    - ``process``: with ``fastprof run --processes N`` on both sides (N >= 2), one value per worker
      process (the median of its iterations' values). This covers run-to-run drift.
    - ``iteration``: otherwise, one value per iteration (for ``itl_s``, the iteration's median
      gap). Drift between runs is then *not* covered: two runs of the same code on a shared
      machine differ by more than their iterations suggest.
    - ``request`` for serving results (for ``itl_s``, the request's median gap).

    The pooled distribution of gaps (p50, p99 of every gap) stays in the summaries as a
    description; it is never the sample of a test.

The statistics, per metric and configuration
    - ``ratio``: exp(mean(log B) - mean(log A)), a ratio of geometric means of the units
      (20%-trimmed means when the test trims, below); ``median_a``/``median_b`` are the medians
      of the unit values.
    - ``ci_low``/``ci_high``: the (trimmed) Welch t interval for that difference of logs,
      exponentiated: an interval for the ratio at level 1 - alpha (unequal variances).
    - ``p_value``: Yuen's two-sided trimmed t-test on the logs when both sides have at least
      :data:`MIN_TRIM_UNITS` units, else Welch's t on the logs. Timings are skewed, so the test is
      on their logs; runs on a shared machine now and then land on a busy neighbour, so with
      enough units 20% of each side's extreme ones are trimmed. With fewer, trimming costs too
      much: at 5 processes a side it keeps 3, and the calibration (bench/RESULTS.md) caught a 20%
      slowdown in 78.5% of comparisons with it against 100% without, at no more false alarms.
      With 3-30 units per side a rank test cannot reach small p-values (Mann-Whitney's smallest
      two-sided p with 3 against 3 is 0.1).
    - ``p_adjusted``: Holm's step-down adjustment over every row of one comparison (all metrics
      x all configurations), so that checking many does not make a false alarm likely: the
      chance of any false alarm in the comparison stays at most alpha.
    - ``verdict``: ``regression`` or ``improvement`` when ``p_adjusted < alpha`` and the change
      is at least ``min_effect_pct``; else ``no significant change`` (or ``too little data``
      with fewer than two units on a side).
    - ``detectable_pct``: the smallest change the comparison would flag 95% of the time, from the
      spread of the units it saw (t quantiles at Holm's strictest step, alpha over the number of
      tests, plus the 95th percentile: the textbook power approximation). A comparison whose
      ``detectable_pct`` exceeds 20% has too little data for the calibrated power target, and
      ``fastprof compare`` says so.

Latencies (names ending in ``_s``) and energy are better lower; throughputs (``_tokens_per_s``,
``_per_s``) better higher. ``change_pct`` is the signed change of the ratio in percent;
``worse_pct`` is how much worse B is (positive for a regression, whatever the direction).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy import stats as _scipy_stats

UNITS = ("process", "iteration", "request")
#: Processes a side at which the calibration (bench/compare_calibration.py, bench/RESULTS.md) met
#: both targets on a CPU (at most 5% false alarms, at least 95% of 20% slowdowns caught); the
#: default of ``fastprof run --processes``.
RECOMMENDED_PROCESSES = 5
#: The slowdown the calibration's power target is set for, in percent.
TARGET_EFFECT_PCT = 20.0
#: The share of such slowdowns a comparison should catch.
TARGET_POWER = 0.95
TOO_LITTLE = "too little data"


def higher_is_better(metric: str) -> bool:
    return metric.endswith("_per_s")


@dataclass
class Row:
    config: str
    metric: str
    unit: str  # "process", "iteration" or "request"
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float
    significant: bool
    change_pct: float
    worse_pct: float
    verdict: str  # "regression", "improvement", "no significant change" or "too little data"
    se_log: float = float("nan")  # standard error of the difference of (trimmed) mean logs
    df: float = float("nan")  # its Welch-Satterthwaite degrees of freedom
    #: The smallest change (percent) this comparison would flag with probability TARGET_POWER,
    #: from the spread it saw: for this test alone from :func:`compare_metric`, over all the
    #: comparison's tests once :func:`adjust` has run; NaN where it cannot be told.
    detectable_pct: float = float("nan")


def _positive(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    return x[np.isfinite(x) & (x > 0)]


#: Share trimmed from each end of each side before the test (Yuen's trimmed t): one run that
#: landed on a busy neighbour among many does not decide the comparison.
TRIM = 0.2
#: Units a side needs before any are trimmed (below it, Welch's t on all of them).
MIN_TRIM_UNITS = 8


def _trimmed(x: np.ndarray, trim: float) -> tuple[float, float, int]:
    """(trimmed mean, the d term of Yuen's variance, effective size h) of a sorted sample."""
    n = x.size
    g = int(np.floor(trim * n))
    h = n - 2 * g
    xs = np.sort(x)
    mean = float(xs[g:n - g].mean())
    w = np.clip(xs, xs[g], xs[n - g - 1])  # winsorised
    d = float((n - 1) * w.var(ddof=1) / (h * (h - 1))) if h > 1 else float("nan")
    return mean, d, h


def _log_difference(a: np.ndarray, b: np.ndarray, trim: float | None) -> tuple[float, float, float] | None:
    """(difference of the (trimmed) mean logs B - A, its standard error, Welch's degrees of
    freedom), or None where a side has fewer than two values."""
    trim = TRIM if trim is None else trim
    la, lb = np.log(_positive(a)), np.log(_positive(b))
    if min(la.size, lb.size) < MIN_TRIM_UNITS:
        trim = 0.0
    if la.size < 2 or lb.size < 2:
        return None
    ma, da, ha = _trimmed(la, trim)
    mb, db, hb = _trimmed(lb, trim)
    se = float(np.sqrt(da + db))
    df = (da + db) ** 2 / (da ** 2 / (ha - 1) + db ** 2 / (hb - 1)) if se > 0 else float("nan")
    return mb - ma, se, float(df)


def welch_log_ratio(a: np.ndarray, b: np.ndarray, *, alpha: float = 0.05,
                    trim: float | None = None) -> tuple[float, float, float, float]:
    """(ratio, ci_low, ci_high, p) of B against A: Yuen's trimmed Welch t on the logs of the unit
    values, or plain Welch when a side has fewer than :data:`MIN_TRIM_UNITS` units (or fewer than
    1 / ``trim``: nothing to trim). NaNs where a side has fewer than two values. ``trim`` None:
    :data:`TRIM`."""
    return _ratio_test(a, b, _log_difference(a, b, trim), alpha)


def _ratio_test(a: np.ndarray, b: np.ndarray, parts: tuple[float, float, float] | None,
                alpha: float) -> tuple[float, float, float, float]:
    """(ratio, ci_low, ci_high, p) from :func:`_log_difference`'s ``parts`` for ``a`` and ``b``."""
    if parts is None:
        pa, pb = _positive(a), _positive(b)
        ratio = float(np.exp(np.median(np.log(pb)) - np.median(np.log(pa)))) if pa.size and pb.size else float("nan")
        return ratio, float("nan"), float("nan"), float("nan")
    diff, se, df = parts
    if not se > 0:
        p = 1.0 if diff == 0 else 0.0
        return float(np.exp(diff)), float(np.exp(diff)), float(np.exp(diff)), p
    q = float(_scipy_stats.t.ppf(1 - alpha / 2, df))
    p = float(2 * _scipy_stats.t.sf(abs(diff) / se, df))
    return float(np.exp(diff)), float(np.exp(diff - q * se)), float(np.exp(diff + q * se)), p


def detectable_change_pct(se_log: float, df: float, *, alpha: float = 0.05, tests: int = 1,
                          power: float = TARGET_POWER) -> float:
    """The smallest change, in percent, that a two-sided test at ``alpha`` (Bonferroni over
    ``tests``, Holm's strictest step) flags with probability ``power``, for a difference of logs
    with standard error ``se_log`` and ``df`` degrees of freedom (the usual normal-theory
    approximation, with t quantiles). NaN where the spread is unknown."""
    if not (np.isfinite(se_log) and se_log > 0 and np.isfinite(df) and df > 0):
        return float("nan")
    q = float(_scipy_stats.t.ppf(1 - alpha / (2 * max(1, tests)), df) + _scipy_stats.t.ppf(power, df))
    return float(np.expm1(q * se_log) * 100)


def compare_metric(a: np.ndarray, b: np.ndarray, metric: str, *, config: str = "", unit: str = "iteration",
                   alpha: float = 0.05, min_effect_pct: float = 0.0) -> Row:
    """One metric of one configuration: ``a`` and ``b`` hold one value per unit. The verdict
    uses the unadjusted p-value; :func:`adjust` applies Holm's correction over several rows."""
    a, b = _positive(a), _positive(b)
    parts = _log_difference(a, b, None)
    ratio, lo, hi, p = _ratio_test(a, b, parts, alpha)
    se, df = (parts[1], parts[2]) if parts is not None else (float("nan"), float("nan"))
    change = (ratio - 1) * 100 if np.isfinite(ratio) else float("nan")
    worse = -change if higher_is_better(metric) else change
    ma = float(np.median(a)) if a.size else float("nan")
    mb = float(np.median(b)) if b.size else float("nan")
    row = Row(config, metric, unit, int(a.size), int(b.size), ma, mb, ratio, lo, hi, p, p, False, change, worse,
              TOO_LITTLE, se, df, detectable_change_pct(se, df, alpha=alpha))
    return _decide(row, alpha, min_effect_pct)


def _decide(row: Row, alpha: float, min_effect_pct: float) -> Row:
    if not np.isfinite(row.p_adjusted):
        return replace(row, significant=False, verdict=TOO_LITTLE)
    significant = bool(row.p_adjusted < alpha and abs(row.change_pct) >= min_effect_pct)
    verdict = "no significant change"
    if significant:
        verdict = "regression" if row.worse_pct > 0 else "improvement"
    return replace(row, significant=significant, verdict=verdict)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaNs stay NaN and do not count as tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def adjust(rows: Sequence[Row], *, alpha: float = 0.05, min_effect_pct: float = 0.0) -> list[Row]:
    """The rows with Holm-adjusted p-values and their verdicts decided on them, and each row's
    detectable change at Holm's strictest step (alpha over the number of tests)."""
    adjusted = holm([r.p_value for r in rows])
    tests = int(np.isfinite(adjusted).sum())
    return [_decide(replace(r, p_adjusted=p, detectable_pct=detectable_change_pct(r.se_log, r.df, alpha=alpha,
                                                                                   tests=tests)),
                    alpha, min_effect_pct)
            for r, p in zip(rows, adjusted)]


def units_for(detectable_pct: float, units: int, effect_pct: float = TARGET_EFFECT_PCT) -> int | None:
    """About how many units a side would bring a detectable change of ``detectable_pct``, seen
    with ``units`` a side, down to ``effect_pct`` (the standard error shrinks as one over the
    square root of the units)."""
    if not (np.isfinite(detectable_pct) and detectable_pct > 0 and effect_pct > 0 and units > 0):
        return None
    scale = (np.log1p(detectable_pct / 100) / np.log1p(effect_pct / 100)) ** 2
    return max(units, int(np.ceil(units * scale)))


def units_needed(row: Row, effect_pct: float = TARGET_EFFECT_PCT) -> int | None:
    """:func:`units_for` of a comparison row (its smaller side)."""
    return units_for(row.detectable_pct, min(row.n_a, row.n_b), effect_pct)
