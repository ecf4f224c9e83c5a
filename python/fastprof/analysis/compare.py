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

Covariate adjustment (CUPED)
    On a shared machine the host's speed drifts between iterations and processes, and that drift
    dominates the spread of host-bound decode. fastprof measures the host path beside every
    iteration (:mod:`fastprof.capture.hostpath`: a torch operation's dispatch and launch, a driver
    launch, a Python loop), independently of the code under test. :func:`covariate_adjust` takes
    its share out of each unit's log value, with the slope fitted within each side (the
    pre-experiment covariate adjustment of large experimentation platforms), and the adjusted
    difference is tested as in the analysis of covariance (pooled residual variance on n - 3
    degrees of freedom, the slope's uncertainty included); the unadjusted ratio, interval and
    p-value stay in the row beside them.
    When the covariate itself differs between the two sides, the compared code may be what moved
    it: the row says so (``adjustment["covariate_changed"]``), and the unadjusted result stands
    beside the adjusted one.

Latencies (names ending in ``_s``) and energy are better lower; throughputs (``_tokens_per_s``,
``_per_s``) better higher, and so are the speculative step metrics ``tokens_per_step`` and
``acceptance_rate``. ``change_pct`` is the signed change of the ratio in percent;
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


#: Metrics other than rates where more is better: the step metrics of speculative decoding
#: (:mod:`fastprof.analysis.speculative`).
HIGHER_IS_BETTER = ("tokens_per_step", "acceptance_rate")


def higher_is_better(metric: str) -> bool:
    return metric.endswith("_per_s") or metric in HIGHER_IS_BETTER


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
    #: The covariate adjustment (:func:`covariate_adjust`) when one was asked for: the covariate,
    #: whether it was applied (else why not), the variance it removed, and the unadjusted ratio,
    #: interval and p-value beside the adjusted ones in the fields above. None without one.
    adjustment: dict | None = None
    #: True when the units were paired (two configurations of one run, the same worker process on
    #: both sides): the test is then on each pair's log ratio (:func:`paired_log_ratio`).
    paired: bool = False
    #: True when each pair's log ratio came from inside the process, as the median over the rounds
    #: of its alternating iterations of B's iteration against A's (``log_ratios`` of
    #: :func:`compare_metric`), rather than from the process's two medians.
    paired_rounds: bool = False


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


def _paired_log_difference(a: np.ndarray, b: np.ndarray, trim: float | None,
                           log_ratios: np.ndarray | None = None) -> tuple[float, float, float] | None:
    """(the (trimmed) mean of the pairs' log ratios B/A, its standard error, degrees of freedom) for
    ``a`` and ``b`` aligned pair by pair (pairs with a non-positive or non-finite value dropped), or
    None below two pairs. Yuen's trimmed mean from :data:`MIN_TRIM_UNITS` pairs, else the plain
    one-sample t. ``log_ratios``: each pair's log ratio, measured otherwise than as ``b / a``."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"paired values need as many of each side, got {a.size} and {b.size}")
    if log_ratios is not None:
        d = np.asarray(log_ratios, dtype=np.float64).ravel()
        if d.size != a.size:
            raise ValueError(f"one log ratio per pair needed, got {d.size} for {a.size} pairs")
        d = d[np.isfinite(d)]
    else:
        keep = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        d = np.log(b[keep]) - np.log(a[keep])
    if d.size < 2:
        return None
    trim = (TRIM if trim is None else trim) if d.size >= MIN_TRIM_UNITS else 0.0
    mean, var, h = _trimmed(d, trim)
    return mean, float(np.sqrt(var)), float(h - 1)


def paired_log_ratio(a: np.ndarray, b: np.ndarray, *, alpha: float = 0.05,
                     trim: float | None = None) -> tuple[float, float, float, float]:
    """(ratio, ci_low, ci_high, p) of B against A, unit by unit: ``a[i]`` and ``b[i]`` were measured
    by the same worker process, next to each other in time, so what the machine did to that process
    cancels in their ratio. A t test on the log ratios (Yuen's trimmed mean from
    :data:`MIN_TRIM_UNITS` pairs); NaNs below two pairs."""
    return _ratio_test(a, b, _paired_log_difference(a, b, trim), alpha)


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


#: Below this many units a side, a covariate's slope cannot be told from noise: no adjustment.
MIN_COVARIATE_UNITS = 3
#: A covariate whose two sides differ at this level (Welch's t on its logs) may be moved by the
#: compared code itself: the comparison says so beside the adjusted result.
COVARIATE_SHIFT_ALPHA = 0.05


def covariate_adjust(a: np.ndarray, xa: np.ndarray, b: np.ndarray, xb: np.ndarray, *, name: str = "covariate"
                     ) -> tuple[np.ndarray, np.ndarray, dict]:
    """CUPED on logs: each unit's log value minus theta times its covariate's log distance from
    the pooled mean, theta the slope of log value on log covariate within each side (pooled), so
    that the machine's speed, measured beside each unit and independent of the code under test,
    is taken out of the comparison. Returns the adjusted ``a``, ``b`` and what was done; the
    values come back unchanged, with the reason, when the covariate is missing, flat or shorter than
    :data:`MIN_COVARIATE_UNITS` a side. When the covariate itself differs between the sides
    (Welch's t on its logs at :data:`COVARIATE_SHIFT_ALPHA`), ``covariate_changed`` says so: the
    compared code may be what moved it, and the comparison must say it rather than adjust it away
    unseen. (Refusing to adjust then is no remedy: on a drifting machine the covariate differs
    exactly when one side ran in a slow spell, and the unadjusted test then raised a false alarm
    nine times in ten.)"""
    info: dict = {"covariate": name, "applied": False}
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    xa, xb = np.asarray(xa, dtype=np.float64), np.asarray(xb, dtype=np.float64)
    if xa.shape != a.shape or xb.shape != b.shape:
        info["reason"] = f"{name} is not recorded for every unit"
        return a, b, info
    ok_a = np.isfinite(xa) & (xa > 0) & np.isfinite(a) & (a > 0)
    ok_b = np.isfinite(xb) & (xb > 0) & np.isfinite(b) & (b > 0)
    if ok_a.sum() < MIN_COVARIATE_UNITS or ok_b.sum() < MIN_COVARIATE_UNITS or not (ok_a.all() and ok_b.all()):
        info["reason"] = f"{name} is missing for some units, or fewer than {MIN_COVARIATE_UNITS} units a side"
        return a, b, info
    la, lb, lxa, lxb = np.log(a), np.log(b), np.log(xa), np.log(xb)
    shift = _log_difference(xa, xb, None)
    if shift is not None:
        _, _, _, p_shift = _ratio_test(xa, xb, shift, COVARIATE_SHIFT_ALPHA)
        info["covariate_ratio"] = float(np.exp(shift[0]))
        info["covariate_p"] = p_shift
        if np.isfinite(p_shift) and p_shift < COVARIATE_SHIFT_ALPHA:
            # Either the machine was slower for one side (what the adjustment is for) or the
            # compared code slows the host path itself (which the adjustment would hide). The
            # data cannot tell them apart, so the change is reported, never dropped silently.
            info["covariate_changed"] = (
                f"the host path itself differs between the runs ({name} x{np.exp(shift[0]):.3f}, p {p_shift:.2g}): "
                "either the machine ran slower for one side, which the adjustment takes out, or the compared "
                "code slows the host path, which it would hide: see the unadjusted result")
    cx = np.concatenate([lxa - lxa.mean(), lxb - lxb.mean()])
    cy = np.concatenate([la - la.mean(), lb - lb.mean()])
    if not np.sum(cx * cx) > 0:
        info["reason"] = f"{name} did not vary"
        return a, b, info
    sxx = float(np.sum(cx * cx))
    theta = float(np.sum(cx * cy) / sxx)
    centre = float(np.concatenate([lxa, lxb]).mean())
    adj_a, adj_b = la - theta * (lxa - centre), lb - theta * (lxb - centre)
    before = float(np.sum(cy * cy))
    after = float(np.sum((cy - theta * cx) ** 2))
    # The test of the adjusted difference is the analysis of covariance's: one pooled residual
    # variance on n - 3 degrees of freedom (two means and the slope were fitted), and the slope's
    # own uncertainty in the standard error. Welch's t on the adjusted values would ignore that the
    # slope was fitted to shrink them, and raised 11% false alarms at 5 units a side.
    n_a, n_b = la.size, lb.size
    df = n_a + n_b - 3
    dx = float(lxb.mean() - lxa.mean())
    diff = float(lb.mean() - la.mean()) - theta * dx
    se = float(np.sqrt(after / df * (1 / n_a + 1 / n_b + dx * dx / sxx))) if df > 0 else float("nan")
    info.update(applied=True, theta=theta, variance_reduction=(1 - after / before) if before > 0 else 0.0,
                parts=(diff, se, float(df)))
    return np.exp(adj_a), np.exp(adj_b), info


def compare_metric(a: np.ndarray, b: np.ndarray, metric: str, *, config: str = "", unit: str = "iteration",
                   alpha: float = 0.05, min_effect_pct: float = 0.0,
                   covariate: tuple[str, np.ndarray, np.ndarray] | None = None, paired: bool = False,
                   log_ratios: np.ndarray | None = None) -> Row:
    """One metric of one configuration: ``a`` and ``b`` hold one value per unit. The verdict
    uses the unadjusted p-value; :func:`adjust` applies Holm's correction over several rows.
    ``covariate``: (name, its value per unit of ``a``, per unit of ``b``), a measurement of the
    machine taken beside each unit: when :func:`covariate_adjust` applies it, the row's ratio,
    interval, test and verdict are those of the adjusted values, and ``adjustment`` keeps the
    unadjusted ones beside them. ``paired``: ``a[i]`` and ``b[i]`` belong together (the same worker
    process measured both, see :func:`paired_log_ratio`); the pairing takes the machine's drift out
    itself, so no covariate is used. ``log_ratios`` (with ``paired``): each pair's log ratio B/A
    measured inside the unit, finer than ``b[i] / a[i]`` (a worker process's median over the rounds
    of its alternating iterations, :func:`fastprof.report.compare.paired_process_values`); the test
    is on them, and the medians shown stay those of ``a`` and ``b``."""
    if log_ratios is not None and not paired:
        raise ValueError("log_ratios are the log ratios of paired units: pass paired=True")
    if covariate is not None and not paired:
        name, xa, xb = covariate
        plain = compare_metric(a, b, metric, config=config, unit=unit, alpha=alpha, min_effect_pct=min_effect_pct)
        adj_a, adj_b, info = covariate_adjust(a, xa, b, xb, name=name)
        info["unadjusted"] = {"ratio": plain.ratio, "ci_low": plain.ci_low, "ci_high": plain.ci_high,
                              "p_value": plain.p_value, "detectable_pct": plain.detectable_pct}
        if not info["applied"]:
            return replace(plain, adjustment=info)
        parts = info.pop("parts")
        # The adjustment spends a degree of freedom on the slope: with few units and a covariate
        # that explains little, it widens the interval. Use it only where it narrows it; the
        # choice rests on the spreads alone, which under normal theory are independent of the
        # difference tested, so it does not favour a significant result.
        if np.isfinite(plain.se_log) and plain.df > 0 and parts[2] > 0:
            width_plain = float(_scipy_stats.t.ppf(1 - alpha / 2, plain.df)) * plain.se_log
            width_adj = float(_scipy_stats.t.ppf(1 - alpha / 2, parts[2])) * parts[1]
            if not width_adj < width_plain:
                info.update(applied=False, reason=(
                    f"{name} explained {info['variance_reduction']:.0%} of the spread, too little to narrow the "
                    "interval after fitting its slope: not adjusted"))
                return replace(plain, adjustment=info)
        ratio, lo, hi, p = _ratio_test(adj_a, adj_b, parts, alpha)
        change = (ratio - 1) * 100
        # the medians stay those of the measured values; the adjusted ones are a model's
        row = replace(plain, ratio=ratio, ci_low=lo, ci_high=hi, p_value=p, p_adjusted=p, change_pct=change,
                      worse_pct=-change if higher_is_better(metric) else change, se_log=parts[1], df=parts[2],
                      detectable_pct=detectable_change_pct(parts[1], parts[2], alpha=alpha), adjustment=info)
        return _decide(row, alpha, min_effect_pct)
    parts = (_paired_log_difference(a, b, None, log_ratios) if paired
             else _log_difference(_positive(a), _positive(b), None))
    a, b = _positive(a), _positive(b)
    ratio, lo, hi, p = _ratio_test(a, b, parts, alpha)
    se, df = (parts[1], parts[2]) if parts is not None else (float("nan"), float("nan"))
    change = (ratio - 1) * 100 if np.isfinite(ratio) else float("nan")
    worse = -change if higher_is_better(metric) else change
    ma = float(np.median(a)) if a.size else float("nan")
    mb = float(np.median(b)) if b.size else float("nan")
    row = Row(config, metric, unit, int(a.size), int(b.size), ma, mb, ratio, lo, hi, p, p, False, change, worse,
              TOO_LITTLE, se, df, detectable_change_pct(se, df, alpha=alpha), paired=paired,
              paired_rounds=log_ratios is not None)
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
