import math

import numpy as np
import pytest

from fastprof import STAT_KEYS, describe
from fastprof.analysis.stats import stability_warnings


def test_describe_matches_numpy_and_has_every_key():
    rng = np.random.default_rng(3)
    x = rng.lognormal(mean=-5, sigma=0.3, size=500)
    s = describe(x)
    assert tuple(s) == STAT_KEYS
    assert s["n"] == 500
    assert s["mean"] == pytest.approx(np.mean(x))
    assert s["std"] == pytest.approx(np.std(x, ddof=1))
    assert s["min"] == x.min() and s["max"] == x.max()
    for p in (50, 90, 95, 99):
        assert s[f"p{p}"] == pytest.approx(np.percentile(x, p))
    assert s["cv"] == pytest.approx(np.std(x, ddof=1) / np.mean(x))
    assert s["ci95_low"] < s["p50"] < s["ci95_high"]
    # A CI of the median on 500 samples is narrow, nowhere near the min/max.
    assert s["ci95_high"] - s["ci95_low"] < (np.percentile(x, 75) - np.percentile(x, 25))


def test_bootstrap_is_seeded():
    x = np.random.default_rng(1).normal(10, 1, 50)
    assert describe(x, seed=7) == describe(x, seed=7)
    # The percentile interval's ends are order statistics, so only some seeds move them.
    assert len({(describe(x, seed=k)["ci95_low"], describe(x, seed=k)["ci95_high"]) for k in range(10)}) > 1


def test_ci_covers_true_median_most_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(100):
        s = describe(rng.exponential(1.0, 60), seed=i)
        hits += s["ci95_low"] <= math.log(2) <= s["ci95_high"]
    assert 85 <= hits <= 100


def test_edge_cases():
    empty = describe([])
    assert empty["n"] == 0 and all(empty[k] is None for k in STAT_KEYS if k != "n")
    one = describe([0.5])
    assert one["n"] == 1 and one["p50"] == 0.5 and one["std"] is None and one["ci95_low"] is None
    const = describe([2.0] * 5)
    assert const["std"] == 0 and const["ci95_low"] == const["ci95_high"] == 2.0
    assert describe([1.0, float("nan"), 3.0])["n"] == 2


def test_stability_warnings():
    assert stability_warnings("ttft_s", describe(np.linspace(1.0, 1.01, 20))) == []
    noisy = stability_warnings("ttft_s", describe(np.r_[np.ones(19), 5.0]))
    assert len(noisy) == 1 and "coefficient of variation" in noisy[0] and "ttft_s" in noisy[0]
    few = stability_warnings("ttft_s", describe([1.0, 1.0, 1.0]))
    assert len(few) == 1 and "only 3 sample" in few[0]
