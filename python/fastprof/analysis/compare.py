"""Comparison of results files: ratio of medians, bootstrap interval, Mann-Whitney U.

For each configuration present in the baseline A and in B (matched by their config values) and
each metric, the per-iteration values are recomputed from the raw timestamps in both files
(``itl_s`` pools every gap of every iteration), and:

- ``ratio`` = median(B) / median(A);
- ``ci_low``/``ci_high``: a percentile bootstrap interval of that ratio (A and B resampled
  independently, ``resamples`` times, seeded), at level 1 - alpha;
- ``p_value``: the two-sided Mann-Whitney U test of A against B (``scipy.stats.mannwhitneyu``).

A change is significant when ``p_value < alpha`` and the interval excludes 1. Latencies
(names ending in ``_s``) and energy are better lower; throughputs (``_tokens_per_s``) better
higher. ``change_pct`` is the signed change of the median in percent; ``worse_pct`` is how much
worse B is (positive for a regression, whatever the metric's direction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats


def higher_is_better(metric: str) -> bool:
    return metric.endswith("_tokens_per_s")


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of median(b) / median(a), resampling each independently."""
    rng = np.random.default_rng(seed)
    ma = np.median(rng.choice(a, size=(resamples, a.size), replace=True), axis=1)
    mb = np.median(rng.choice(b, size=(resamples, b.size), replace=True), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mb / ma
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass
class Row:
    config: str
    metric: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    change_pct: float
    worse_pct: float
    verdict: str  # "regression", "improvement" or "no significant change"


def compare_metric(a: np.ndarray, b: np.ndarray, metric: str, *, config: str = "", alpha: float = 0.05,
                   resamples: int = 2000, seed: int = 0) -> Row:
    ma, mb = float(np.median(a)), float(np.median(b))
    ratio = mb / ma if ma != 0 else float("nan")
    lo, hi = bootstrap_ratio(a, b, confidence=1 - alpha, resamples=resamples, seed=seed)
    if np.ptp(np.concatenate([a, b])) == 0:
        p = 1.0
    else:
        p = float(_scipy_stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    significant = bool(p < alpha and np.isfinite(lo) and (lo > 1 or hi < 1))
    change = (ratio - 1) * 100 if np.isfinite(ratio) else float("nan")
    worse = -change if higher_is_better(metric) else change
    verdict = "no significant change"
    if significant:
        verdict = "regression" if worse > 0 else "improvement"
    return Row(config, metric, int(a.size), int(b.size), ma, mb, ratio, lo, hi, p, significant, change, worse,
               verdict)
