"""The statistics of comparisons on synthetic data whose truth is known.

Token gaps are simulated as decode really produces them: inside an iteration they follow an AR(1)
series (a slow gap tends to be followed by another), and each iteration has its own level. Two
draws from the same model must not differ significantly in more than about the nominal share of
seeds; a 20% slowdown must be found almost always. The same data, with every gap counted as an
independent sample, raises false alarms far above the nominal rate: that is what the unit of
replication prevents.
"""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fastprof.analysis import stats as fstats
from fastprof.analysis.compare import adjust, compare_metric, holm, welch_log_ratio
from fastprof.capture.recorder import Trace
from fastprof.results.processes import merge_processes, process_labels
from fastprof.results.result import BenchmarkResult

MS = 1_000_000


def ar1_gaps(rng, iterations=10, gaps=31, mean_ms=10.0, phi=0.9, noise=0.03, level_sd=0.03, slow=1.0):
    """Per iteration, `gaps` token gaps (ms): an iteration level times an AR(1) series around 1."""
    out = []
    for _ in range(iterations):
        level = mean_ms * slow * np.exp(rng.normal(0, level_sd))
        e = np.zeros(gaps)
        e[0] = rng.normal(0, noise / np.sqrt(1 - phi ** 2))
        for i in range(1, gaps):
            e[i] = phi * e[i - 1] + rng.normal(0, noise)
        out.append(level * np.exp(e))
    return out


def per_iteration(gaps):
    return np.asarray([np.median(g) for g in gaps])


def test_correlated_gaps_do_not_raise_false_alarms_with_iterations_as_the_unit():
    seeds = 300
    unit_alarms = pooled_alarms = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        a, b = ar1_gaps(rng), ar1_gaps(rng)
        unit_alarms += compare_metric(per_iteration(a), per_iteration(b), "itl_s").significant
        # The mistake this design avoids: every gap an independent sample.
        pooled_alarms += scipy_stats.mannwhitneyu(np.concatenate(a), np.concatenate(b)).pvalue < 0.05
    assert unit_alarms / seeds <= 0.08, unit_alarms
    assert pooled_alarms / seeds > 0.3, pooled_alarms  # the pooled test is badly miscalibrated


def test_a_twenty_percent_slowdown_is_found():
    seeds = 200
    found = 0
    for seed in range(seeds):
        rng = np.random.default_rng(10_000 + seed)
        a, b = ar1_gaps(rng), ar1_gaps(rng, slow=1.2)
        row = compare_metric(per_iteration(a), per_iteration(b), "itl_s", min_effect_pct=5)
        found += row.verdict == "regression" and row.worse_pct > 5
    assert found / seeds >= 0.95, found


def test_welch_interval_covers_the_truth_at_about_its_level():
    covered = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        a = rng.lognormal(0.0, 0.1, 5)
        b = rng.lognormal(np.log(1.1), 0.1, 5)
        _, lo, hi, _ = welch_log_ratio(a, b)
        covered += lo <= 1.1 <= hi
    assert 0.9 <= covered / 300 <= 0.99


def test_too_few_units_are_not_tested():
    row = compare_metric(np.array([1.0]), np.array([2.0, 2.1]), "itl_s")
    assert row.verdict == "too little data" and not row.significant and np.isnan(row.p_value)


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03, np.nan]) == pytest.approx([0.03, 0.06, 0.06, np.nan], nan_ok=True)
    # Twenty metrics of the same null: some raw p-values fall below 0.05, none after Holm here.
    rng = np.random.default_rng(4)
    rows = [compare_metric(rng.lognormal(0, 0.05, 10), rng.lognormal(0, 0.05, 10), f"m{i}_s") for i in range(20)]
    raw = sum(r.significant for r in rows)
    after = adjust(rows)
    assert sum(r.significant for r in after) <= raw
    assert all(a.p_adjusted >= r.p_value for a, r in zip(after, rows))


def test_min_effect_keeps_tiny_changes_out_of_the_verdict():
    a = np.linspace(10.0, 10.01, 30)
    b = a * 1.004  # a real but 0.4% change, very significant
    assert compare_metric(a, b, "itl_s").verdict == "regression"
    assert compare_metric(a, b, "itl_s", min_effect_pct=1).verdict == "no significant change"


def test_cluster_bootstrap_interval_is_wider_for_correlated_gaps():
    rng = np.random.default_rng(3)
    gaps = ar1_gaps(rng, iterations=12, level_sd=0.05)
    values = np.concatenate(gaps)
    groups = np.repeat(np.arange(len(gaps)), [len(g) for g in gaps])
    naive = fstats.describe(values, seed=0)
    clustered = fstats.describe(values, seed=0, groups=groups)
    assert clustered["p50"] == naive["p50"]
    width = clustered["ci95_high"] - clustered["ci95_low"]
    assert width > 2 * (naive["ci95_high"] - naive["ci95_low"])
    with pytest.raises(ValueError):
        fstats.cluster_bootstrap_median(values, groups[:-1])


def _generate(gap_ms, rng, iterations=6, tokens=12, config=None):
    """Iterations of ``tokens`` tokens around ``gap_ms`` a gap (one level per iteration where it is
    a sequence)."""
    levels = np.broadcast_to(np.asarray(gap_ms, dtype=np.float64), (iterations,))
    traces, start = [], 10 ** 12
    for level in levels:
        gaps = level * np.exp(rng.normal(0, 0.02, tokens - 1))
        marks = start + (np.concatenate([[20.0], 20.0 + np.cumsum(gaps)]) * MS).astype(np.int64)
        traces.append(Trace(start, int(marks[-1] + MS), marks))
        start = int(marks[-1]) + 5 * MS
    return BenchmarkResult.from_traces("generate", traces, config={"batch_size": 1, "prompt_len": 8,
                                                                   "max_new_tokens": tokens, **(config or {})},
                                       environment={}, device_timing={"available": False, "reason": "test"})


def test_merged_processes_keep_their_iterations_and_spread():
    rng = np.random.default_rng(0)
    parts = [_generate(10.0 * f, rng) for f in (1.0, 1.05, 0.95)]  # drift between processes
    merged = merge_processes(parts, pids=[11, 12, 13])
    assert len(merged.iterations) == 18 and merged.processes["count"] == 3
    assert list(process_labels(merged)) == [0] * 6 + [1] * 6 + [2] * 6
    assert [p["pid"] for p in merged.processes["per_process"]] == [11, 12, 13]
    meds = [p["median"]["itl_s"] for p in merged.processes["per_process"]]
    assert meds[1] / meds[0] == pytest.approx(1.05, rel=0.02)
    spread = merged.processes["spread"]["itl_s"]
    assert spread["between_process_cv"] > 3 * spread["within_process_cv"]
    again = BenchmarkResult.from_dict(merged.to_dict())
    assert again.processes == merged.processes and list(process_labels(again)) == list(process_labels(merged))


def _sweep(result):
    from fastprof.results.sweep import Sweep

    s = Sweep(environment={}, parameters={})
    s.add_ok(dict(result.config), result)
    return s


def test_compare_uses_processes_as_the_unit_and_covers_drift():
    from fastprof.report.compare import compare_sweeps, notes

    rng = np.random.default_rng(5)
    drift = rng.lognormal(0, 0.05, 10)  # each process lands at its own level
    a = merge_processes([_generate(10.0 * d, rng) for d in drift[:5]])
    b = merge_processes([_generate(10.0 * d, rng) for d in drift[5:]])
    c = compare_sweeps(_sweep(a), _sweep(b), metrics=["itl_s"])
    (row,) = c.rows
    assert row.unit == "process" and (row.n_a, row.n_b) == (5, 5)
    assert row.verdict == "no significant change"
    assert not any("one process per side" in n for n in notes(c))
    # One process per side, at two drifted levels: iterations as the unit see a "change".
    one_a, one_b = _generate(10.0, rng), _generate(10.8, rng)
    c1 = compare_sweeps(_sweep(one_a), _sweep(one_b), metrics=["itl_s"])
    assert c1.rows[0].unit == "iteration" and c1.rows[0].verdict == "regression"
    assert any("run-to-run drift is not covered" in n for n in notes(c1))


def test_the_test_is_scipys_welch_below_eight_units_and_yuen_from_eight():
    """Welch's t on the logs with few units a side (trimming 20% of five keeps three and loses the
    power the calibration measured), Yuen's 20%-trimmed t from MIN_TRIM_UNITS on: each is
    scipy.stats.ttest_ind on the logs."""
    from scipy import stats

    from fastprof.analysis.compare import MIN_TRIM_UNITS

    rng = np.random.default_rng(3)
    for n, trim in ((5, 0.0), (MIN_TRIM_UNITS - 1, 0.0), (MIN_TRIM_UNITS, 0.2), (20, 0.2)):
        a, b = rng.lognormal(0.0, 0.1, n), rng.lognormal(0.05, 0.1, n)
        b[0] *= 3  # one run on a busy neighbour
        _, _, _, p = welch_log_ratio(a, b)
        ref = stats.ttest_ind(np.log(b), np.log(a), equal_var=False, trim=trim).pvalue
        assert p == pytest.approx(ref, rel=1e-9), (n, trim)


def test_the_detectable_change_is_caught_at_about_the_target_power():
    """Simulated comparisons of log-normal units with a known spread: a shift of the size that
    ``detectable_change_pct`` names is flagged about 95% of the time, a shift of half of it far
    less often."""
    from fastprof.analysis.compare import TARGET_POWER, detectable_change_pct

    rng = np.random.default_rng(11)
    sigma, n, tests, alpha = 0.08, 6, 7, 0.05
    # The standard error and degrees of freedom the test would see for this spread (equal sides).
    se, df = sigma * np.sqrt(2 / n), 2 * n - 2
    mde = detectable_change_pct(se, df, alpha=alpha, tests=tests)
    assert 10 < mde < 40
    for shift_pct, lo, hi in ((mde, TARGET_POWER - 0.06, TARGET_POWER + 0.04), (mde / 2, 0.0, 0.6)):
        hits = 0
        for _ in range(600):
            a = rng.lognormal(0.0, sigma, n)
            b = rng.lognormal(np.log1p(shift_pct / 100), sigma, n)
            hits += welch_log_ratio(a, b)[3] < alpha / tests
        assert lo <= hits / 600 <= hi, (shift_pct, hits / 600)
    assert np.isnan(detectable_change_pct(float("nan"), 5.0))
    assert np.isnan(detectable_change_pct(0.0, 5.0))


def test_a_comparison_too_small_for_the_target_says_so():
    from fastprof.analysis.compare import units_needed
    from fastprof.report.compare import compare_sweeps, notes

    rng = np.random.default_rng(8)

    def side(spread, n):
        return merge_processes([_generate(10.0 * d, rng) for d in rng.lognormal(0, spread, n)])

    wide = compare_sweeps(_sweep(side(0.25, 5)), _sweep(side(0.25, 5)), metrics=["itl_s"])
    (row,) = wide.rows
    assert row.detectable_pct > 20
    need = units_needed(row)
    assert need > 5
    (note,) = [n for n in notes(wide) if "too little data for the calibrated target" in n]
    assert "itl_s" in note and f"about {need} processes a side" in note
    narrow = compare_sweeps(_sweep(side(0.01, 5)), _sweep(side(0.01, 5)), metrics=["itl_s"])
    assert narrow.rows[0].detectable_pct < 20
    assert not any("too little data for the calibrated target" in n for n in notes(narrow))


def test_a_run_with_processes_says_what_a_comparison_of_two_could_tell_apart():
    """The console's processes block ends with the change a comparison of two such runs would
    catch 95% of the time: larger for a larger spread between processes, smaller for more
    processes, and with the processes a side needed for 20% when it is above that."""
    import re

    from fastprof.results.result import comparison_outlook, process_lines

    def outlook(cv, n):
        return comparison_outlook({"count": n, "spread": {"itl_s": {"between_process_cv": cv}}})

    def pct(text):
        return float(re.search(r"about (\d+)% or more", text).group(1))

    wide, narrow, more = outlook(0.26, 5), outlook(0.03, 5), outlook(0.26, 20)
    assert pct(wide) > 20 > pct(narrow) and pct(more) < pct(wide)
    assert "processes a side" in wide and "processes a side" not in narrow
    assert outlook(0.26, 1) is None and outlook(None, 5) is None
    lines = list(process_lines({"count": 5, "spread": {"itl_s": {"between_process_cv": 0.26,
                                                                 "within_process_cv": 0.1}}}))
    assert any("would be caught 95% of the time" in line for line in lines)


def test_pairs_take_out_what_each_process_shares():
    """Each process's speed moves both settings it measured: paired, a 5% change stands out of a
    spread of +-30% between processes; unpaired (Welch) it does not."""
    from fastprof.analysis.compare import compare_metric, paired_log_ratio, welch_log_ratio

    rng = np.random.default_rng(3)
    speed = np.exp(rng.normal(0, 0.3, 6))  # each process's machine
    a = 0.010 * speed * np.exp(rng.normal(0, 0.01, 6))
    b = 0.0105 * speed * np.exp(rng.normal(0, 0.01, 6))
    ratio, lo, hi, p = paired_log_ratio(a, b)
    assert lo < 1.05 < hi and lo > 1.0 and p < 0.01
    assert welch_log_ratio(a, b)[3] > 0.2
    row = compare_metric(a, b, "itl_s", unit="process", paired=True)
    assert row.paired and row.verdict == "regression" and row.n_a == row.n_b == 6
    assert row.detectable_pct < 5
    # the pairing is by position: shuffling one side destroys it
    assert paired_log_ratio(a, b[::-1])[3] > 0.05


def test_paired_values_must_come_in_pairs():
    from fastprof.analysis.compare import paired_log_ratio

    with pytest.raises(ValueError, match="as many of each side"):
        paired_log_ratio(np.ones(3), np.ones(4))
    assert np.isnan(paired_log_ratio(np.array([1.0]), np.array([2.0]))[3])


def test_processes_that_alternated_two_settings_pair_them_round_by_round():
    """Each process's machine flips between a fast and a slow state from one round to the next (as
    a cloud VM does), and both settings of a round mostly share it (in one round of eight the state
    changed between them). Where the settings' iterations
    alternated (config.iteration_order), each process's ratio is the median over its rounds of B
    against A of the same round: a 5% change is pinned down; from the process's two medians (the
    same data, not known to have alternated) the flips between the states blur it."""
    from fastprof.report.compare import compare_sweeps, paired_process_values

    rng = np.random.default_rng(11)
    order = {"iteration_order": {"interleaved_with": 2}}

    def pair(alternated):
        parts_a, parts_b = [], []
        for _ in range(5):
            fast = rng.random(8) < 0.5  # round by round
            flip = np.zeros(8, dtype=bool)
            flip[rng.integers(8)] = True
            state_a, state_b = np.where(fast, 11.0, 19.0), np.where(fast ^ flip, 11.0, 19.0)  # ms a token
            parts_a.append(_generate(state_a, rng, iterations=8, config=order if alternated else None))
            parts_b.append(_generate(state_b * 1.05, rng, iterations=8, config=order if alternated else None))
        pids = [100 + i for i in range(5)]
        a, b = merge_processes(parts_a, pids=pids), merge_processes(parts_b, pids=pids)
        a.config["batch_size"] = 1
        b.config["batch_size"] = 2
        return a, b

    a, b = pair(alternated=True)
    va, vb, within = paired_process_values(a, b, "itl_s")
    assert within is not None and within.size == 5
    assert np.exp(within) == pytest.approx(1.05, rel=0.03)
    rows = compare_sweeps(_sweep(a), _sweep(b), metrics=["itl_s"], ignore=["batch_size"], paired=True).rows
    (row,) = rows
    assert row.paired and row.paired_rounds and row.unit == "process"
    assert row.ratio == pytest.approx(1.05, rel=0.01) and row.ci_low > 1.02 and row.ci_high < 1.08
    assert row.verdict == "regression" and row.detectable_pct < 5
    # the medians shown stay the measured ones
    assert row.median_a == pytest.approx(np.median(va)) and row.median_b == pytest.approx(np.median(vb))

    a, b = pair(alternated=False)
    assert paired_process_values(a, b, "itl_s")[2] is None
    (plain,) = compare_sweeps(_sweep(a), _sweep(b), metrics=["itl_s"], ignore=["batch_size"], paired=True).rows
    assert plain.paired and not plain.paired_rounds
    assert plain.detectable_pct > 3 * row.detectable_pct


def test_log_ratios_belong_to_paired_units():
    with pytest.raises(ValueError, match="paired=True"):
        compare_metric(np.ones(3), np.ones(3), "itl_s", log_ratios=np.zeros(3))
    with pytest.raises(ValueError, match="one log ratio per pair"):
        compare_metric(np.ones(3), np.ones(3), "itl_s", paired=True, log_ratios=np.zeros(2))
