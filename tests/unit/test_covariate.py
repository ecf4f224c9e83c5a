"""Covariate adjustment (CUPED) of comparisons: the host's drift measured beside each unit is taken
out, a change the compared code makes to the covariate is never adjusted away, and A/A
comparisons do not raise more false alarms than the level allows."""

import numpy as np
import pytest

from fastprof.analysis.compare import adjust, compare_metric, covariate_adjust


def units(rng, n, *, effect=1.0, covariate_effect=1.0, spread=0.3, noise=0.02):
    """n units whose value follows the machine's speed (log-normal, `spread`) times `effect`, and a
    covariate measured beside each that follows the same speed (times `covariate_effect`)."""
    speed = np.exp(spread * rng.standard_normal(n))
    y = 0.011 * speed * effect * np.exp(noise * rng.standard_normal(n))
    x = 7e-6 * speed * covariate_effect * np.exp(noise * rng.standard_normal(n))
    return y, x


def test_adjustment_finds_a_change_the_drift_hides():
    rng = np.random.default_rng(1)
    a, xa = units(rng, 5)
    b, xb = units(rng, 5, effect=1.10)
    plain = compare_metric(a, b, "itl_s", unit="process")
    row = compare_metric(a, b, "itl_s", unit="process", covariate=("torch_op_s", xa, xb))
    assert plain.verdict == "no significant change"
    assert row.adjustment["applied"] and row.adjustment["variance_reduction"] > 0.9
    assert row.verdict == "regression" and row.ratio == pytest.approx(1.10, rel=0.03)
    assert row.ci_low > 1.0
    # the unadjusted figures stay beside the adjusted ones, and the medians are the measured ones
    assert row.adjustment["unadjusted"]["ratio"] == pytest.approx(plain.ratio)
    assert row.adjustment["unadjusted"]["p_value"] == pytest.approx(plain.p_value)
    assert row.median_a == pytest.approx(plain.median_a) and row.detectable_pct < plain.detectable_pct


def test_a_change_to_the_covariate_itself_is_reported():
    """The compared code slows the host path itself (the covariate moves with the metric): the
    adjustment would take the change out, so the row says the host path itself changed and keeps
    the unadjusted regression beside it."""
    rng = np.random.default_rng(2)
    a, xa = units(rng, 8, spread=0.05)
    b, xb = units(rng, 8, spread=0.05, effect=1.3, covariate_effect=1.3)
    row = compare_metric(a, b, "itl_s", unit="process", covariate=("torch_op_s", xa, xb))
    info = row.adjustment
    assert "the host path itself differs" in info["covariate_changed"]
    assert info["covariate_ratio"] == pytest.approx(1.3, rel=0.1) and info["covariate_p"] < 0.05
    assert info["unadjusted"]["ratio"] == pytest.approx(1.3, rel=0.1) and info["unadjusted"]["p_value"] < 0.05


@pytest.mark.parametrize("xa,xb,why", [
    (np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0]), "did not vary"),
    (np.array([1.0, np.nan, 1.1]), np.array([1.0, 1.2, 1.1]), "missing"),
    (np.array([1.0, 1.1]), np.array([1.0, 1.2]), "fewer than"),
])
def test_no_adjustment_without_a_usable_covariate(xa, xb, why):
    a = np.full(xa.size, 0.01) * np.linspace(1, 1.1, xa.size)
    b = np.full(xb.size, 0.01) * np.linspace(1, 1.1, xb.size)
    _, _, info = covariate_adjust(a, xa, b, xb, name="launch_s")
    assert info["applied"] is False and why in info["reason"]


def test_aa_false_alarms_stay_at_the_level_with_adjustment():
    rng = np.random.default_rng(3)
    alarms, n = 0, 600
    for _ in range(n):
        a, xa = units(rng, 5)
        b, xb = units(rng, 5)
        row = adjust([compare_metric(a, b, "itl_s", unit="process", covariate=("torch_op_s", xa, xb))])[0]
        alarms += row.significant
    assert alarms / n <= 0.075  # alpha 0.05, with room for the sampling error of 600 draws


def test_a_covariate_that_explains_nothing_is_not_used():
    """Noise unrelated to the host path: fitting the slope would only cost a degree of freedom."""
    a = 0.01 * np.array([1.0, 1.2, 0.9, 1.1])
    b = 0.012 * np.array([1.1, 0.9, 1.2, 1.0])
    xa = np.array([1.2, 1.0, 1.0, 1.2])  # orthogonal to a's pattern within the side
    xb = np.array([1.0, 1.0, 1.2, 1.2])  # and to b's
    plain = compare_metric(a, b, "itl_s", unit="process")
    row = compare_metric(a, b, "itl_s", unit="process", covariate=("python_loop_s", xa, xb))
    info = row.adjustment
    assert info["applied"] is False and "too little to narrow" in info["reason"]
    assert row.ratio == pytest.approx(plain.ratio) and row.p_value == pytest.approx(plain.p_value)
