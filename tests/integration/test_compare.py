"""fastprof compare: ratios over units, Welch intervals and tests, Holm, the CI gate."""

import json

import numpy as np
import pytest

from fastprof import cli
from fastprof.analysis.compare import compare_metric, welch_log_ratio
from fastprof.report.compare import compare_sweeps
from fastprof.results.sweep import validate
from report_fixtures import synthetic_result, synthetic_sweep


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastprof: error: "), err
    return err


def test_slower_itl_is_a_significant_regression():
    a = synthetic_sweep({1: 10.0, 4: 20.0}, seed=0)
    b = synthetic_sweep({1: 12.0, 4: 20.0}, seed=100)  # batch 1: 20% slower tokens; batch 4 unchanged
    c = compare_sweeps(a, b, metrics=["itl_s", "decode_tokens_per_s"])
    rows = {(r.config, r.metric): r for r in c.rows}
    assert all(r.unit == "iteration" and r.n_a == 12 for r in c.rows)  # one value per iteration, not per gap
    slow = rows[("bs=1", "itl_s")]
    assert slow.ratio == pytest.approx(1.2, rel=0.02)
    assert slow.ci_low > 1.1 and slow.ci_high < 1.3
    assert slow.p_adjusted < 1e-6 and slow.verdict == "regression" and slow.worse_pct == pytest.approx(20, abs=2)
    tput = rows[("bs=1", "decode_tokens_per_s")]
    assert tput.ratio == pytest.approx(1 / 1.2, rel=0.03) and tput.verdict == "regression"  # lower throughput
    assert tput.worse_pct > 0 and tput.change_pct < 0
    same = rows[("bs=4", "itl_s")]
    assert same.ci_low < 1 < same.ci_high and same.verdict == "no significant change"


def test_faster_is_an_improvement():
    row = compare_metric(np.full(50, 10.0) + np.linspace(0, 0.1, 50), np.full(50, 8.0) + np.linspace(0, 0.1, 50),
                         "ttft_s")
    assert row.verdict == "improvement" and row.worse_pct < 0
    row = compare_metric(np.linspace(100, 101, 30), np.linspace(120, 121, 30), "throughput_tokens_per_s")
    assert row.verdict == "improvement"


def test_welch_interval_brackets_the_true_ratio():
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(np.log(10), 0.05, 40), rng.lognormal(np.log(15), 0.05, 40)
    ratio, lo, hi, p = welch_log_ratio(a, b)
    assert lo < 1.5 < hi and hi - lo < 0.1 and p < 1e-10
    assert ratio == pytest.approx(1.5, rel=0.03)


def test_identical_distributions_are_not_flagged():
    a = synthetic_sweep({1: 10.0}, seed=0, jitter=0.05)
    b = synthetic_sweep({1: 10.0}, seed=7, jitter=0.05)
    c = compare_sweeps(a, b)
    assert c.rows and all(r.verdict == "no significant change" for r in c.rows if r.metric == "itl_s")


def test_cli_gate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich's width: no truncated cells
    a = synthetic_sweep({1: 10.0, 2: 11.0}, seed=0).save(tmp_path / "a.json")
    b = synthetic_sweep({1: 12.0, 2: 11.0}, seed=50).save(tmp_path / "b.json")
    assert cli.main(["compare", str(a), str(b), "--metric", "itl_s,tpot_s"]) == 0  # no gate asked
    out = " ".join(capsys.readouterr().out.split())
    assert "regression" in out and "1.2" in out
    assert cli.main(["compare", str(a), str(b), "--fail-on-regression", "5", "--json", str(tmp_path / "c.json")]) == 1
    captured = capsys.readouterr()
    assert "REGRESSION > 5%" in " ".join(captured.out.split()) and "significant regression" in captured.err
    doc = json.loads((tmp_path / "c.json").read_text())
    regress = [r for r in doc["comparisons"][0]["rows"] if r["verdict"] == "regression"]
    assert {r["config"] for r in regress} == {"bs=1"}
    assert cli.main(["compare", str(a), str(b), "--fail-on-regression", "50"]) == 0  # 20% is within 50%
    assert cli.main(["compare", str(a), str(a), "--fail-on-regression", "0"]) == 0


def test_compare_a_single_result_file_with_a_sweep(tmp_path):
    a = synthetic_result(10.0, seed=1).save(tmp_path / "one.json")  # a plain BenchmarkResult file
    b = synthetic_sweep({1: 10.5, 2: 10.0}, seed=9).save(tmp_path / "s.json")
    assert cli.main(["compare", str(a), str(b), "--metric", "itl_s"]) == 0


def test_ignore_keys_to_match(tmp_path, capsys):
    a = synthetic_sweep({1: 10.0, 2: 10.0}).save(tmp_path / "a.json")
    b = synthetic_sweep({1: 10.0, 2: 10.0}, config={"model": "other"}).save(tmp_path / "b.json")
    assert cli.main(["compare", str(a), str(b)]) == 2
    assert "no configuration" in one_error_line(capsys)
    assert cli.main(["compare", str(a), str(b), "--ignore", "model"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--metric", "itl_s,bogus_s"], "unknown metric(s) 'bogus_s'"),
    (["--alpha", "2"], "--alpha"),
    (["--fail-on-regression", "-1"], "--fail-on-regression"),
])
def test_compare_bad_options(tmp_path, capsys, extra, message):
    a = synthetic_sweep({1: 10.0}).save(tmp_path / "a.json")
    assert cli.main(["compare", str(a), str(a), *extra]) == 2
    assert message in one_error_line(capsys)


def test_compare_bad_files(tmp_path, capsys):
    a = synthetic_sweep({1: 10.0}).save(tmp_path / "a.json")
    truncated = tmp_path / "t.json"
    truncated.write_text(a.read_text()[:200])
    assert cli.main(["compare", str(a), str(truncated)]) == 2
    assert "not valid JSON" in one_error_line(capsys)
    assert cli.main(["compare", str(a)]) == 2
    assert "at least two" in one_error_line(capsys)
    foreign = tmp_path / "f.json"
    foreign.write_text(json.dumps({"results": [1, 2]}))
    assert cli.main(["compare", str(foreign), str(a)]) == 2
    assert "not a fastprof results file" in one_error_line(capsys)


def _kernels(gemm_s: float, idle_share: float) -> dict:
    """A kernel breakdown as fastprof.analysis.kernels.section writes it (2 iterations, 10 decode steps)."""
    busy = gemm_s + 0.0002
    step = busy / (1 - idle_share)
    return {"available": True, "reason": "", "backend": "cupti", "timestamp_method": "callback", "dropped": 0,
            "records": 400, "iterations": 2, "traced_timed": False, "itl_s_traced": step, "itl_s_untraced": step,
            "trace_overhead_ratio": 1.0, "decode_steps": 10, "idle_share": idle_share, "busy_s_per_step": busy,
            "step_s_median": step, "kernels_per_token": 20.0,
            # class_s: seconds per iteration; 5 decode steps per iteration.
            "class_s": {"gemm": gemm_s * 5, "elementwise": 0.0002 * 5, "attention": 0.0},
            "class_share": {"gemm": gemm_s / busy, "elementwise": 0.0002 / busy, "attention": 0.0},
            "top_prefill": [], "top_decode": [],
            "per_step": {"step_s": [step] * 6, "busy_s": [busy] * 6, "kernels": [20] * 6,
                         "class_s": {"gemm": [gemm_s] * 6}}}


def test_compare_shows_the_kernel_breakdown_of_traced_runs(tmp_path, capsys):
    a, b = synthetic_sweep({1: 8.0}), synthetic_sweep({1: 8.0}, seed=1)
    a.runs[0].result.kernels = _kernels(0.001, 0.5)
    b.runs[0].result.kernels = _kernels(0.0015, 0.25)
    pa, pb = a.save(tmp_path / "a.json"), b.save(tmp_path / "b.json")
    validate(json.loads(pa.read_text()))
    out_json = tmp_path / "cmp.json"
    assert cli.main(["compare", str(pa), str(pb), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "kernel breakdown" in out
    cells = {}
    for line in out[out.index("kernel breakdown"):].splitlines():
        parts = [c.strip() for c in line.split("\u2502")]
        if len(parts) == 6:  # | item | A | B | change | (one configuration: said above the table)
            cells[parts[1]] = parts[2:5]
    assert cells["gemm"] == ["1.000 ms", "1.500 ms", "+50.0%"]
    assert cells["idle share"][:2] == ["50.0%", "25.0%"]
    doc = json.loads(out_json.read_text())
    items = {d["item"]: d for d in doc["comparisons"][0]["kernels"]}
    assert items["gemm"]["a"] == pytest.approx(0.001) and items["gemm"]["change_pct"] == pytest.approx(50.0)
    assert items["GPU idle"]["b"] == pytest.approx(0.0017 / 0.75 - 0.0017)
    assert "attention" not in items  # a class with no time is left out


def test_compare_without_traces_has_no_kernel_breakdown(tmp_path, capsys):
    a, b = synthetic_sweep({1: 8.0}), synthetic_sweep({1: 8.0}, seed=1)
    a.runs[0].result.kernels = _kernels(0.001, 0.5)  # only one side traced
    pa, pb = a.save(tmp_path / "a.json"), b.save(tmp_path / "b.json")
    assert cli.main(["compare", str(pa), str(pb)]) == 0
    assert "kernel breakdown" not in capsys.readouterr().out


LONG_CONFIG = {"model": "/data/models/llama-3.2-1b-instruct-finetuned/checkpoints/step-000123456/hf",
               "dtype": "bfloat16", "device": "cpu", "attn_implementation": "sdpa", "quantization": "none",
               "compile": False, "warmup_iterations": 3}


def _one_config(result):
    from fastprof.results.sweep import Sweep

    sweep = Sweep(environment={}, parameters={})
    sweep.add_ok(dict(result.config), result)
    return sweep


def _printed(comparisons, width):
    import io

    from rich.console import Console

    from fastprof.report.compare import print_console

    console = Console(width=width, file=io.StringIO(), record=True)
    print_console(comparisons, console=console)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 200])
def test_one_long_configuration_is_said_once_and_the_numbers_fit(width):
    """Two results of one configuration whose key is longer than 80 characters: the key is said
    once above the table, and every metric, its ratio, interval and verdict are on screen."""
    a = _one_config(synthetic_result(10.0, seed=1, config=LONG_CONFIG))
    b = _one_config(synthetic_result(12.0, seed=2, config=LONG_CONFIG))
    c = compare_sweeps(a, b)
    assert len(c.rows[0].config) > 78
    out = _printed([c], width)
    lines = out.splitlines()
    assert "\u2026" not in out and max(len(line) for line in lines) <= width
    assert " ".join(out.split()).count(c.rows[0].config) == 1  # said once (wrapped), not in every row
    assert "configuration of every row:" in out
    for r in c.rows:
        for cell in (r.metric, f"{r.ratio:.3f}", f"{r.ci_low:.3f}-{r.ci_high:.3f}"):
            assert any(cell in line for line in lines), (cell, out)
        assert any(f" {r.metric} " in line and r.verdict in line for line in lines), (r.metric, out)
    assert any(" itl_s " in line and "regression" in line for line in lines)


def test_several_long_configurations_are_abbreviated():
    """Rows of several configurations whose labels would crowd out the numbers at 80 columns are
    named c1, c2, ... with each name's configuration above the table."""
    a = synthetic_sweep({1: 10.0, 2: 11.0}, seed=0)
    b = synthetic_sweep({1: 10.0, 2: 11.0}, seed=5)
    for sweep in (a, b):  # labels of the varying keys: make one of them long
        for run in sweep.runs:
            run.config["note"] = f"a-long-description-of-this-configuration-{run.config['batch_size']}" * 2
    c = compare_sweeps(a, b, metrics=["itl_s", "ttft_s"])
    out = _printed([c], 80)
    assert "\u2026" not in out and max(len(line) for line in out.splitlines()) <= 80
    assert "c1: " in out and "c2: " in out
    for r in c.rows:
        assert f"{r.ratio:.3f}" in out and f"{r.ci_low:.3f}-{r.ci_high:.3f}" in out


def _processes(gaps_ms, seed):
    from fastprof.results.processes import merge_processes

    return merge_processes([synthetic_result(g, seed=seed + i, config=LONG_CONFIG) for i, g in enumerate(gaps_ms)])


def test_two_processes_a_side_do_not_quote_an_absurd_detectable_change():
    """Two processes a side, one side nearly constant: the t quantiles of about one degree of
    freedom make the 95%-power change astronomically large. The note says the data cannot detect
    any change of practical size and how many processes would, with no figure above 1000%."""
    import re

    from fastprof.analysis.compare import TARGET_EFFECT_PCT, detectable_change_pct
    from fastprof.report.compare import PRACTICAL_CHANGE_PCT, notes, processes_for_target

    a = _one_config(_processes([10.0, 10.02], seed=0))
    b = _one_config(_processes([10.0, 12.5], seed=10))
    c = compare_sweeps(a, b)
    assert all(r.unit == "process" and (r.n_a, r.n_b) == (2, 2) for r in c.rows)
    worst = max(c.rows, key=lambda r: r.detectable_pct)
    assert worst.detectable_pct > 100 * PRACTICAL_CHANGE_PCT  # what the note used to quote
    (note,) = [n for n in notes(c) if "practical size" in n]
    assert f"more than {PRACTICAL_CHANGE_PCT:g}%" in note
    assert all(float(x.replace(",", "")) <= PRACTICAL_CHANGE_PCT for x in re.findall(r"([\d,.]+)%", note)), note
    need = int(re.search(r"about (\d+) processes a side would catch a 20% change", note).group(1))
    tests = len(c.rows)
    # The count is the smallest at which the detectable change of every weak row reaches the
    # target, the degrees of freedom growing with the processes.
    assert need == max(processes_for_target(r, tests=tests, alpha=c.alpha) for r in c.rows
                       if r.detectable_pct > TARGET_EFFECT_PCT)
    for r in c.rows:
        n = processes_for_target(r, tests=tests, alpha=c.alpha)
        if n is None or n <= 2:
            continue
        def det(k, r=r):
            return detectable_change_pct(r.se_log * np.sqrt(2 / k), r.df * (k - 1), alpha=c.alpha, tests=tests)
        assert det(n) <= TARGET_EFFECT_PCT < det(n - 1)
        assert n <= need
    assert 2 < need < 1000
    out = _printed([c], 80)
    assert "practical size" in " ".join(out.split()) and not re.search(r"\d{5,}%", out.replace(",", ""))


def _host(launch_s, python_s, launches=700):
    step = launch_s + python_s + 0.0002
    return {"available": True, "iterations": 2, "decode_steps": 30, "step_s": {"mean": step, "p50": step},
            "api": {"available": True, "parts_s": {"launch": launch_s, "graph_launch": 0.0, "copy": 0.0,
                                                   "memset": 0.0, "sync": 0.0002, "other_api": 0.0,
                                                   "python_framework": python_s},
                    "calls_per_step": {"launch": launches}, "launch_s": {"mean": launch_s / launches}},
            "loop": {"available": True, "parts_s": {}, "outside_forward_s": 0.001},
            "modules": {"available": True, "layers": 16, "layer_s_each": 0.0003}}


def test_compare_shows_the_host_breakdown_of_traced_runs(tmp_path, capsys):
    a, b = synthetic_sweep({1: 8.0}), synthetic_sweep({1: 8.0}, seed=1)
    a.runs[0].result.host = _host(0.004, 0.006)
    b.runs[0].result.host = _host(0.006, 0.006)
    pa, pb = a.save(tmp_path / "a.json"), b.save(tmp_path / "b.json")
    validate(json.loads(pa.read_text()))
    out_json = tmp_path / "cmp.json"
    assert cli.main(["compare", str(pa), str(pb), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "host breakdown" in out
    cells = {}
    for line in out[out.index("host breakdown"):].splitlines():
        parts = [c.strip() for c in line.split("\u2502")]
        if len(parts) == 6:
            cells[parts[1]] = parts[2:5]
    assert cells["kernel launches"] == ["4.000 ms", "6.000 ms", "+50.0%"]
    assert cells["Python and framework"][2] == "+0.0%"
    items = {d["item"]: d for d in json.loads(out_json.read_text())["comparisons"][0]["host"]}
    assert items["one launch"]["b"] == pytest.approx(0.006 / 700)
    # one side untraced: no host table
    b.runs[0].result.host = None
    pb = b.save(tmp_path / "b2.json")
    assert cli.main(["compare", str(pa), str(pb)]) == 0
    assert "host breakdown" not in capsys.readouterr().out


def _drifting_sweep(gap_ms, seed, iterations=12, spread=0.3):
    """One configuration whose iterations run at a machine speed drawn per iteration (log-normal,
    `spread`), with the host-path calibration measured beside each following the same speed."""
    from fastprof import Trace
    from fastprof.capture.environment import capture_environment
    from fastprof.results.sweep import Sweep

    rng = np.random.default_rng(seed)
    traces, rows, start = [], [], 10**12
    for _ in range(iterations):
        speed = float(np.exp(spread * rng.standard_normal()))
        gaps = gap_ms * speed * (1 + 0.01 * rng.standard_normal(16))
        marks = start + (np.cumsum(np.concatenate([[20.0], gaps])) * 1e6).astype(np.int64)
        traces.append(Trace(start, int(marks[-1] + 1e6), marks))
        rows.append({"start_ns": start, "end_ns": int(marks[-1]), "cpu": 0, "cpu_mhz": None,
                     "calibration": {"torch_op_s": 7e-6 * speed * float(np.exp(0.01 * rng.standard_normal())),
                                     "python_loop_s": 7e-4}})
        start = int(marks[-1] + 50e6)
    cfg = {"model": "synthetic", "batch_size": 1, "prompt_len": 8, "max_new_tokens": 17}
    from fastprof import summarize_generation

    r = summarize_generation(traces, batch_size=1, prompt_len=8, config=cfg)
    from fastprof.analysis.host import host_path_section

    r.host_path = host_path_section(rows)
    sweep = Sweep(environment=capture_environment(), parameters={"batch_size": [1]})
    sweep.add_ok(cfg, r)
    return sweep


def test_compare_adjusts_for_the_host_path(tmp_path, capsys):
    a, b = _drifting_sweep(10.0, seed=1), _drifting_sweep(11.0, seed=2)  # B 10% slower, 30% drift
    pa, pb = a.save(tmp_path / "a.json"), b.save(tmp_path / "b.json")
    validate(json.loads(pa.read_text()))
    out_json = tmp_path / "cmp.json"
    assert cli.main(["compare", str(pa), str(pb), "--metric", "itl_s", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "adjusted for the host path" in out and "torch_op_s" in out
    row = json.loads(out_json.read_text())["comparisons"][0]["rows"][0]
    assert row["adjustment"]["applied"] and row["adjustment"]["variance_reduction"] > 0.9
    assert row["verdict"] == "regression" and row["ratio"] == pytest.approx(1.10, rel=0.03)
    assert row["adjustment"]["unadjusted"]["p_value"] > row["p_value"]
    # without the adjustment the drift hides it
    assert cli.main(["compare", str(pa), str(pb), "--metric", "itl_s", "--covariate", "none", "--json",
                     str(out_json)]) == 0
    plain = json.loads(out_json.read_text())["comparisons"][0]["rows"][0]
    assert plain["adjustment"] is None and plain["verdict"] == "no significant change"


def _traced_processes(gaps_ms, busy_s, seed, drift=False):
    """One result merged from worker processes, process i with inter-token gaps gaps_ms[i] and a
    kernel trace whose GPU busy time per decode step is busy_s[i] (gemm plus a fixed 0.2 ms of
    elementwise kernels, GPU idle half of each step). With ``drift``, each process is
    :func:`_drifting_sweep`'s (the host path recorded beside every iteration)."""
    from fastprof.results.processes import merge_processes

    parts = []
    for i, (gap, busy) in enumerate(zip(gaps_ms, busy_s)):
        r = (_drifting_sweep(gap, seed=seed + i, iterations=6).runs[0].result if drift
             else synthetic_result(gap, seed=seed + i, iterations=6))
        r.kernels = _kernels(busy - 0.0002, 0.5)
        parts.append(r)
    return merge_processes(parts)


def test_merging_processes_keeps_each_process_kernel_figures(tmp_path):
    merged = _traced_processes([10.0, 10.5, 11.0], [0.0010, 0.0011, 0.0012], seed=0)
    per = merged.processes["per_process"]
    assert [pp["kernels"]["busy_s_per_step"] for pp in per] == pytest.approx([0.0010, 0.0011, 0.0012])
    assert per[1]["kernels"]["class_s_per_step"] == pytest.approx({"gemm": 0.0009, "elementwise": 0.0002})
    assert per[2]["kernels"]["kernels_per_token"] == 20.0 and per[2]["kernels"]["idle_share"] == 0.5
    assert merged.kernels["busy_s_per_step"] == pytest.approx(0.0010)  # the full section: the first process's
    path = merged.save(tmp_path / "m.json")
    validate(json.loads(path.read_text()))
    from fastprof.results.result import BenchmarkResult

    again = BenchmarkResult.load(path)
    assert again.processes["per_process"][2]["kernels"]["busy_s_per_step"] == pytest.approx(0.0012)
    # a process without a trace: None beside the others
    parts = [synthetic_result(10.0, seed=1, iterations=4), synthetic_result(10.0, seed=2, iterations=4)]
    parts[0].kernels = _kernels(0.001, 0.5)
    from fastprof.results.processes import merge_processes

    assert merge_processes(parts).processes["per_process"][1]["kernels"] is None
    assert "kernels" not in merge_processes(parts[1:] * 2).processes["per_process"][0]  # none traced


def test_device_metrics_detect_a_one_percent_kernel_change_on_a_noisy_host(tmp_path, capsys):
    """Five processes a side; the host runs each process's decode at a speed that varies by 30%,
    the GPU's busy time per step by 0.1%. B's kernels take 1% longer (and so, on average, its
    tokens): the device metric flags it, ITL does not, and every row is in one Holm family."""
    from fastprof.analysis.compare import holm

    rng = np.random.default_rng(3)
    n = 5
    gaps = lambda: 10.0 * np.exp(0.3 * rng.standard_normal(n))  # noqa: E731
    busy = lambda scale: 0.001 * scale * (1 + 0.001 * rng.standard_normal(n))  # noqa: E731
    a = _one_config(_traced_processes(gaps(), busy(1.0), seed=0))
    b = _one_config(_traced_processes(gaps() * 1.01, busy(1.01), seed=50))
    c = compare_sweeps(a, b)
    rows = {r.metric: r for r in c.rows}
    assert {"gpu_busy_s_per_step", "kernels_per_step", "gpu_gemm_s_per_step",
            "gpu_elementwise_s_per_step"} <= set(rows)
    assert "gpu_attention_s_per_step" not in rows  # no time in it on either side
    dev = rows["gpu_busy_s_per_step"]
    assert dev.unit == "process" and (dev.n_a, dev.n_b) == (n, n)
    assert dev.ratio == pytest.approx(1.01, abs=0.002) and dev.ci_low > 1.0
    assert dev.verdict == "regression" and dev.p_adjusted < 0.01
    assert dev.detectable_pct < 1.0  # a change well under 1% is detectable
    assert rows["gpu_gemm_s_per_step"].verdict == "regression"
    assert rows["kernels_per_step"].verdict == "no significant change"
    assert rows["itl_s"].verdict == "no significant change" and rows["itl_s"].detectable_pct > 20
    # Holm over every row, device ones included
    assert [r.p_adjusted for r in c.rows] == pytest.approx(holm([r.p_value for r in c.rows]))
    assert dev.p_adjusted > dev.p_value
    assert c.kernels_tested == [dev.config]  # the configuration whose kernel figures were tested
    # the CLI: rows printed with their units, --metric selects them, the table says they are tested
    pa, pb = a.save(tmp_path / "a.json"), b.save(tmp_path / "b.json")
    out_json = tmp_path / "cmp.json"
    assert cli.main(["compare", str(pa), str(pb), "--metric", "gpu_busy_s_per_step,itl_s",
                     "--json", str(out_json)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "gpu_busy_s_per_step" in out and " us " in out and "test them over the worker processes" in out
    doc = json.loads(out_json.read_text())["comparisons"][0]
    assert [r["metric"] for r in doc["rows"]] == ["gpu_busy_s_per_step", "itl_s"]  # in the order asked
    assert doc["rows"][0]["verdict"] == "regression" and doc["kernels_tested"]


def test_device_metrics_are_not_adjusted_for_the_host_path():
    rng = np.random.default_rng(4)
    a = _one_config(_traced_processes([10.0] * 4, 0.001 * (1 + 0.001 * rng.standard_normal(4)), seed=0, drift=True))
    b = _one_config(_traced_processes([10.0] * 4, 0.001 * (1 + 0.001 * rng.standard_normal(4)), seed=9, drift=True))
    c = compare_sweeps(a, b)
    rows = {r.metric: r for r in c.rows}
    assert rows["itl_s"].adjustment is not None  # the host path is there and taken out of ITL
    assert all(rows[m].adjustment is None for m in rows if m.endswith("_per_step"))
    assert rows["gpu_busy_s_per_step"].verdict == "no significant change"


def test_single_process_kernel_traces_stay_a_plain_table(tmp_path, capsys):
    a, b = synthetic_sweep({1: 8.0}), synthetic_sweep({1: 8.0}, seed=1)
    a.runs[0].result.kernels = _kernels(0.001, 0.5)
    b.runs[0].result.kernels = _kernels(0.0015, 0.5)
    c = compare_sweeps(a, b)
    assert c.kernels and not c.kernels_tested
    assert not any(r.metric.endswith("_per_step") for r in c.rows)
    pa, pb = a.save(tmp_path / "a.json"), b.save(tmp_path / "b.json")
    assert cli.main(["compare", str(pa), str(pb)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "kernel breakdown" in out and "no test of significance" in out and "worker processes" in out
    assert cli.main(["compare", str(pa), str(pb), "--metric", "gpu_busy_s_per_step"]) == 2
    err = one_error_line(capsys)
    assert "unknown metric(s) 'gpu_busy_s_per_step'" in err and "two worker processes" in err


def test_unknown_metric_lists_the_device_metrics(tmp_path, capsys):
    a = _one_config(_traced_processes([10.0, 10.1], [0.001, 0.0010001], seed=0))
    pa = a.save(tmp_path / "a.json")
    assert cli.main(["compare", str(pa), str(pa), "--metric", "bogus_s"]) == 2
    err = one_error_line(capsys)
    assert "gpu_busy_s_per_step" in err and "kernels_per_step" in err and "gpu_gemm_s_per_step" in err
