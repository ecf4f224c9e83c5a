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


def welch_log_ratio(a: np.ndarray, b: np.ndarray, *, alpha: float = 0.05,
                    trim: float | None = None) -> tuple[float, float, float, float]:
    """(ratio, ci_low, ci_high, p) of B against A: Yuen's trimmed Welch t on the logs of the unit
    values, or plain Welch when a side has fewer than :data:`MIN_TRIM_UNITS` units (or fewer than
    1 / ``trim``: nothing to trim). NaNs where a side has fewer than two values. ``trim`` None:
    :data:`TRIM`."""
    trim = TRIM if trim is None else trim
    la, lb = np.log(_positive(a)), np.log(_positive(b))
    if min(la.size, lb.size) < MIN_TRIM_UNITS:
        trim = 0.0
    if la.size < 2 or lb.size < 2:
        ratio = float(np.exp(np.median(lb) - np.median(la))) if la.size and lb.size else float("nan")
        return ratio, float("nan"), float("nan"), float("nan")
    ma, da, ha = _trimmed(la, trim)
    mb, db, hb = _trimmed(lb, trim)
    diff = mb - ma
    se = float(np.sqrt(da + db))
    if not se > 0:
        p = 1.0 if diff == 0 else 0.0
        return float(np.exp(diff)), float(np.exp(diff)), float(np.exp(diff)), p
    df = (da + db) ** 2 / (da ** 2 / (ha - 1) + db ** 2 / (hb - 1))
    q = float(_scipy_stats.t.ppf(1 - alpha / 2, df))
    p = float(2 * _scipy_stats.t.sf(abs(diff) / se, df))
    return float(np.exp(diff)), float(np.exp(diff - q * se)), float(np.exp(diff + q * se)), p


def compare_metric(a: np.ndarray, b: np.ndarray, metric: str, *, config: str = "", unit: str = "iteration",
                   alpha: float = 0.05, min_effect_pct: float = 0.0) -> Row:
    """One metric of one configuration: ``a`` and ``b`` hold one value per unit. The verdict
    uses the unadjusted p-value; :func:`adjust` applies Holm's correction over several rows."""
    a, b = _positive(a), _positive(b)
    ratio, lo, hi, p = welch_log_ratio(a, b, alpha=alpha)
    change = (ratio - 1) * 100 if np.isfinite(ratio) else float("nan")
    worse = -change if higher_is_better(metric) else change
    ma = float(np.median(a)) if a.size else float("nan")
    mb = float(np.median(b)) if b.size else float("nan")
    row = Row(config, metric, unit, int(a.size), int(b.size), ma, mb, ratio, lo, hi, p, p, False, change, worse,
              TOO_LITTLE)
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
    """The rows with Holm-adjusted p-values and their verdicts decided on them."""
    adjusted = holm([r.p_value for r in rows])
    return [_decide(replace(r, p_adjusted=p), alpha, min_effect_pct) for r, p in zip(rows, adjusted)]
