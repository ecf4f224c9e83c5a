"""Every command's tables read at 80 columns (rich's width when output is piped, as in CI logs):
no cell elided, no number split across lines; a wide terminal gets the whole table at once."""

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from fastprof import cli
from fastprof.report.tables import table_data
from fastprof.sweep import load

DATA = Path(__file__).resolve().parents[1] / "data"
SWEEP = str(DATA / "sweep-0.1.0.json")


def run(argv, width, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", str(width))
    assert cli.main(argv) == 0
    return capsys.readouterr().out


def assert_readable(out, width, cells):
    assert "…" not in out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    for cell in cells:
        if re.search(r"\d", cell):
            assert any(cell in line for line in lines), (cell, out)


@pytest.mark.parametrize("width", [80, 200])
def test_report_table(width, monkeypatch, capsys):
    stats = "p50,p99,cv"
    out = run(["report", SWEEP, "--stat", stats], width, monkeypatch, capsys)
    header, rows = table_data(load(SWEEP), stats=stats.split(","))
    assert_readable(out, width, [c for row in rows for c in row])
    assert "every configuration: model=" in out  # keys the same for every row, said once
    parts = len(re.findall(r"host clock \(\d/\d\)", out))
    assert (parts > 1) if width == 80 else (parts == 0 and "host clock" in out)


@pytest.mark.parametrize("width", [80, 200])
def test_compare_table(width, monkeypatch, capsys, tmp_path):
    js = tmp_path / "c.json"
    out = run(["compare", SWEEP, SWEEP, "--json", str(js)], width, monkeypatch, capsys)
    rows = [r for c in json.loads(js.read_text())["comparisons"] for r in c["rows"]]
    assert_readable(out, width, [f"{r['ratio']:.3f}" for r in rows] + [f"{r['ci_low']:.3f}-{r['ci_high']:.3f}"
                                                                         for r in rows])
    assert "interval" in out and "verdict" in out


@pytest.mark.parametrize("width", [80, 200])
def test_single_result_details(width, monkeypatch, capsys):
    out = run(["report", str(DATA / "single-0.1.0.json"), "--details"], width, monkeypatch, capsys)
    result = load(DATA / "single-0.1.0.json").runs[0].result
    cells = [f"{result.summary['itl_s']['p50'] * 1e3:,.3f}", f"{result.summary['ttft_s']['p99'] * 1e3:,.3f}"]
    assert_readable(out, width, cells)


def test_monitor_and_selftest_views_at_80_columns():
    from fastprof.capture.selftest import PASS, Check
    from fastprof.report.monitor import print_console as monitor_view
    from fastprof.report.selftest import print_table

    console = Console(width=80, file=io.StringIO(), record=True)
    doc = {"command": ["python", "x.py"], "exit_code": 0, "start_ns": 0, "end_ns": 2_500_000_000, "interval_ms": 10,
           "available": True, "reason": None,
           "summary": [{"device": "GPU-0f3a", "name": "NVIDIA H100 80GB HBM3", "samples": 12345,
                        "gpu_util_pct": {"mean": 97.25, "max": 100.0}, "power_w": {"mean": 612.34, "max": 699.87},
                        "mem_used_bytes": {"mean": 7.5e10, "max": 7.9e10}, "sm_clock_mhz": {"mean": 1980.0},
                        "temperature_c": {"max": 71.0}, "energy_j": 1530.25,
                        "dram_bw_util_pct": {"mean": 74.1, "max": 91.9}}]}
    monitor_view(doc, console)
    check = Check("spin 10.000 ms", "device", PASS, 10_000_412.0, "ns", "within 1%", "measured 10.000412 ms " * 4)

    class Dev:
        kind, ordinal, info, reason = "cuda", 0, {"name": "NVIDIA H100 80GB HBM3"}, None

    print_table([check], Dev(), console=console)
    out = console.export_text()
    assert_readable(out, 80, ["97.2 / 100.0", "612.3 / 699.9", "1,530.25", "74.1 / 91.9", "12345", "10.000 ms"])


@pytest.mark.parametrize("command", ["run", "report", "compare", "export", "env", "monitor", "selftest"])
def test_help_prose_fits_the_terminal(command, monkeypatch, capsys):
    """Each command's description is refilled to the terminal: at 80 columns no line of prose (an
    unindented line) is wider; indented tables and examples are kept as written."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    prose = [line for line in out.splitlines() if line and not line[0].isspace()]
    assert prose and max(len(line) for line in prose) <= 80, [ln for ln in prose if len(ln) > 80]


def test_compare_notes_on_the_adjustment_are_whole_at_80_columns():
    """Why a row was not adjusted for the host path is a sentence longer than 80 columns: it is
    printed whole below the adjustment table, wrapped, not cut to a table column."""
    import numpy as np

    from fastprof.analysis.compare import compare_metric
    from fastprof.report.compare import Comparison, print_console

    a = 0.01 * np.array([1.0, 1.2, 0.9, 1.1])
    b = 0.012 * np.array([1.1, 0.9, 1.2, 1.0])
    xa, xb = np.array([1.2, 1.0, 1.0, 1.2]), np.array([1.0, 1.0, 1.2, 1.2])  # explain nothing of a and b
    row = compare_metric(a, b, "itl_s", config="bs=1", unit="process", covariate=("python_loop_s", xa, xb))
    reason = row.adjustment["reason"]
    assert not row.adjustment["applied"] and len(reason) > 80 and "too little to narrow" in reason
    console = Console(width=80, file=io.StringIO(), record=True)
    print_console([Comparison("a.json", "b.json", [row], [], [])], console=console)
    out = console.export_text()
    assert_readable(out, 80, [f"{row.ratio:.3f}"])
    assert f"note: itl_s: {reason}" in " ".join(out.split())
