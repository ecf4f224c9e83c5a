"""Named statistics of a sample, through numpy and scipy.stats.

Every summarised metric carries the same keys, in this order: ``n, mean, std, min, p50, p90,
p95, p99, max, cv, ci95_low, ci95_high``. ``std`` is the sample standard deviation (ddof=1),
``cv`` the coefficient of variation (std / mean), and ``ci95_*`` a seeded percentile-bootstrap
95% confidence interval of the median. Token gaps (``itl_s``) are correlated within an iteration:
their interval resamples whole iterations (:func:`cluster_bootstrap_median`), never single gaps.
"""

from __future__ import annotations

import inspect
import math
from typing import Iterable, Sequence

import numpy as np
from scipy import stats as _scipy_stats

STAT_KEYS = ("n", "mean", "std", "min", "p50", "p90", "p95", "p99", "max", "cv", "ci95_low", "ci95_high")

#: Below this coefficient of variation a result is considered stable.
CV_WARN_THRESHOLD = 0.10
#: Fewer samples than this make percentiles and confidence intervals unreliable.
MIN_SAMPLES = 10
#: Bootstrap resamples for the confidence interval of the median.
BOOTSTRAP_RESAMPLES = 2000

# scipy >= 1.15 names the generator `rng`; older releases `random_state`.
_RNG_ARG = "rng" if "rng" in inspect.signature(_scipy_stats.bootstrap).parameters else "random_state"


def describe(values: Iterable[float], *, seed: int = 0, confidence: float = 0.95,
             groups: Sequence[int] | np.ndarray | None = None) -> dict[str, float | int | None]:
    """Statistics of ``values`` under the keys of :data:`STAT_KEYS`.

    ``ci95_low``/``ci95_high`` bracket the median: a percentile bootstrap that resamples single
    values, or, with ``groups`` (one label per value, e.g. the iteration of each token gap), whole
    groups (a cluster bootstrap), for values that are correlated within a group.

    Values that cannot be computed (the std of one sample, a bootstrap on fewer than two
    distinct values) are ``None``; an empty sample gives ``n = 0`` and ``None`` elsewhere.
    """
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    out: dict[str, float | int | None] = dict.fromkeys(STAT_KEYS)
    out["n"] = int(x.size)
    if x.size == 0:
        return out
    mean = float(np.mean(x))
    p50, p90, p95, p99 = (float(v) for v in np.percentile(x, [50, 90, 95, 99]))
    out.update(mean=mean, min=float(np.min(x)), max=float(np.max(x)), p50=p50, p90=p90, p95=p95, p99=p99)
    if x.size >= 2:
        std = float(np.std(x, ddof=1))
        out["std"] = std
        out["cv"] = std / abs(mean) if mean != 0 else None
        if np.ptp(x) > 0 and groups is not None:
            out["ci95_low"], out["ci95_high"] = cluster_bootstrap_median(
                np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel(),
                np.asarray(groups).ravel(), seed=seed, confidence=confidence)
        elif np.ptp(x) > 0:
            res = _scipy_stats.bootstrap(
                (x,), np.median, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                method="percentile", vectorized=True, **{_RNG_ARG: np.random.default_rng(seed)},
            )
            out["ci95_low"] = float(res.confidence_interval.low)
            out["ci95_high"] = float(res.confidence_interval.high)
        else:
            out["ci95_low"] = out["ci95_high"] = p50
    return out


def cluster_bootstrap_median(values: np.ndarray, groups: np.ndarray, *, seed: int = 0, confidence: float = 0.95,
                             resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float | None, float | None]:
    """Percentile interval of the pooled median when whole groups are resampled with replacement
    (values of one group travel together). None, None with fewer than two groups."""
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    if values.shape != groups.shape:
        raise ValueError(f"groups must label every value: {groups.shape} labels for {values.shape} values")
    keep = np.isfinite(values)
    values, groups = values[keep], groups[keep]
    labels, inverse = np.unique(groups, return_inverse=True)
    if labels.size < 2:
        return None, None
    order = np.argsort(inverse, kind="stable")
    members = np.split(values[order], np.cumsum(np.bincount(inverse))[:-1])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, labels.size, size=(resamples, labels.size))
    medians = np.fromiter((np.median(np.concatenate([members[j] for j in row])) for row in picks),
                          dtype=np.float64, count=resamples)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(medians, [tail, 100 - tail])
    return float(lo), float(hi)


def stability_warnings(name: str, s: dict, *, threshold: float = CV_WARN_THRESHOLD,
                       min_samples: int = MIN_SAMPLES) -> list[str]:
    """Warnings for a summarised metric: too few samples, or a high coefficient of variation."""
    warnings = []
    n = s.get("n") or 0
    if n < min_samples:
        warnings.append(f"{name}: only {n} sample(s); percentiles and confidence intervals need at least "
                        f"{min_samples} (raise --iterations)")
    cv = s.get("cv")
    if cv is not None and not math.isnan(cv) and cv > threshold:
        warnings.append(f"{name}: coefficient of variation {cv:.1%} exceeds {threshold:.0%}; the machine or the "
                        f"workload is noisy, so compare medians and confidence intervals, not means")
    return warnings
