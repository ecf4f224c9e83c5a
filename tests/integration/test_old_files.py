"""Results files written by fastprof 0.1.0 (before the package layout) still read the same."""

import json
from pathlib import Path

import pytest

from fastprof import cli
from fastprof.sweep import load

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("name, n_runs", [("sweep-0.1.0.json", 2), ("single-0.1.0.json", 1)])
def test_old_results_load_with_their_figures(name, n_runs):
    sweep = load(DATA / name)
    assert len(sweep.runs) == n_runs and all(r.status == "ok" for r in sweep.runs)
    for run in sweep.runs:
        stored = run.result.summary["itl_s"]
        # The summary kept in the file is what the file says; the raw timestamps are intact too.
        assert stored["n"] == sum(len(t.host_marks_ns) - 1 for t in run.result.traces())
        assert stored["min"] <= stored["p50"] <= stored["max"]


def test_old_results_report_and_compare(tmp_path):
    sweep = str(DATA / "sweep-0.1.0.json")
    single = str(DATA / "single-0.1.0.json")
    assert cli.main(["report", sweep]) == 0
    assert cli.main(["report", single]) == 0
    out = tmp_path / "cmp.json"
    assert cli.main(["compare", sweep, sweep, "--fail-on-regression", "5", "--json", str(out)]) == 0
    rows = [r for c in json.loads(out.read_text())["comparisons"] for r in c["rows"]]
    assert len(rows) >= 2 * 5 and all(r["ratio"] == 1.0 and not r["significant"] for r in rows)
