"""Named statistics of a sample, through numpy and scipy.stats.

Every summarised metric carries the same keys, in this order: ``n, mean, std, min, p50, p90,
p95, p99, max, cv, ci95_low, ci95_high``. ``std`` is the sample standard deviation (ddof=1),
``cv`` the coefficient of variation (std / mean), and ``ci95_*`` a seeded percentile-bootstrap
95% confidence interval of the median.
"""

from __future__ import annotations

import inspect
import math
from typing import Iterable

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


def describe(values: Iterable[float], *, seed: int = 0, confidence: float = 0.95) -> dict[str, float | int | None]:
    """Statistics of ``values`` under the keys of :data:`STAT_KEYS`.

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
        if np.ptp(x) > 0:
            res = _scipy_stats.bootstrap(
                (x,), np.median, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                method="percentile", vectorized=True, **{_RNG_ARG: np.random.default_rng(seed)},
            )
            out["ci95_low"] = float(res.confidence_interval.low)
            out["ci95_high"] = float(res.confidence_interval.high)
        else:
            out["ci95_low"] = out["ci95_high"] = p50
    return out


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
