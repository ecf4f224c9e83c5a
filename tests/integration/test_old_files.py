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


def test_a_version_2_file_with_worker_processes_loads_validates_and_compares(tmp_path):
    """A file of the previous schema version (2), written by ``fastprof run --processes 2``,
    validates against the current schema, keeps its per-process grouping, and compares with a
    file of the current version over processes."""
    from fastprof import SCHEMA_VERSION
    from fastprof.sweep import validate

    path = DATA / "processes-v2.json"
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 2 < SCHEMA_VERSION
    validate(doc)
    result = load(path).runs[0].result
    assert result.processes["count"] == 2
    assert sorted({it["process"] for it in result.iterations}) == [0, 1]
    current = json.loads(path.read_text())
    current["schema_version"] = SCHEMA_VERSION
    validate(current)
    newer = tmp_path / "v-now.json"
    newer.write_text(json.dumps(current))
    out = tmp_path / "cmp.json"
    assert cli.main(["compare", str(path), str(newer), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["comparisons"][0]["rows"]
    assert rows and all(r["unit"] == "process" and r["n_a"] == r["n_b"] == 2 for r in rows)
    assert all(r["ratio"] == pytest.approx(1.0) for r in rows)
