"""Reports of a results file: the console table, CSV, Markdown, HTML, the schema and bad input."""

import base64
import csv
import json
import os
import re

import pytest

from fastprof import cli, report
from fastprof.report import html as report_html
from fastprof.results.sweep import Sweep, load, schema, validate
from report_fixtures import gpu_sweep, gpu_sweep_doc, synthetic_result, synthetic_sweep  # noqa: F401
from sampler_fixtures import fake_nvml_path  # noqa: F401


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastprof: error: "), err
    return err


def test_sweep_round_trip_and_schema(gpu_sweep, tmp_path):  # noqa: F811
    path = gpu_sweep.save(tmp_path / "s.json")
    doc = json.loads(path.read_text())
    import jsonschema

    jsonschema.Draft202012Validator(schema()).validate(doc)
    assert doc["kind"] == "sweep" and "environment" not in doc["runs"][0]["result"]
    back = load(path)
    assert [r.status for r in back.runs] == ["ok"] * 4 + ["failed"]
    assert back.runs[4].error == {"type": "RuntimeError", "message": "CUDA out of memory. Tried to allocate 2.00 GiB"}
    # The environment lives once at the top; each run's result gets it back.
    assert back.runs[0].result.environment == doc["environment"]
    assert back.runs[2].result.summary["itl_s"]["n"] == 3 * 7
    assert back.varying_keys == ["batch_size", "prompt_len"]


def test_schema_rejects_broken_documents(gpu_sweep):  # noqa: F811
    from fastprof.results.sweep import ResultsFileError

    doc = gpu_sweep.to_dict()
    bad = json.loads(json.dumps(doc))
    bad["runs"][0]["status"] = "maybe"
    with pytest.raises(ResultsFileError, match="runs/0"):
        validate(bad)
    bad = json.loads(json.dumps(doc))
    bad["runs"][1]["result"]["iterations"][0]["host"]["marks_ns"][0] = "x"
    with pytest.raises(ResultsFileError, match="does not match the fastprof results schema"):
        validate(bad)
    bad = json.loads(json.dumps(doc))
    del bad["runs"][4]["error"]
    with pytest.raises(ResultsFileError):
        validate(bad)


def test_single_result_file_is_a_sweep_of_one(tmp_path):
    r = synthetic_result(10.0)
    path = r.save(tmp_path / "one.json")
    validate(json.loads(path.read_text()))
    s = load(path)
    assert len(s.runs) == 1 and s.runs[0].ok and s.runs[0].config["batch_size"] == 1
    assert s.runs[0].result.summary["itl_s"]["p50"] == pytest.approx(0.010, rel=0.05)


def test_console_report(gpu_sweep, tmp_path, capsys):  # noqa: F811
    path = gpu_sweep.save(tmp_path / "s.json")
    assert cli.main(["report", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "batch_size" in out and "prompt_len" in out and "failed" in out
    assert "CUDA out of memory" in out  # the failure's reason is listed among the warnings
    assert out.count(" ok ") >= 4


def test_report_metric_and_stat_selection(tmp_path, capsys):
    path = synthetic_sweep({1: 10.0, 4: 20.0}).save(tmp_path / "s.json")
    assert cli.main(["report", str(path), "--metric", "itl_s", "--stat", "p50,p99,cv"]) == 0
    out = capsys.readouterr().out
    header = " ".join(out.split())  # headers take one word a line
    assert "p99" in header and "[ms]" in header and "itl" in header and "cv" in header and "ttft" not in out
    rows = [line for line in out.splitlines() if "│ ok" in line]
    p50s = [float(row.split("│")[4]) for row in rows]
    assert len(rows) == 2 and p50s[0] == pytest.approx(10.0, rel=0.03) and p50s[1] == pytest.approx(20.0, rel=0.03)


def test_csv_has_every_statistic(gpu_sweep, tmp_path):  # noqa: F811
    out = tmp_path / "r.csv"
    report.write_csv(gpu_sweep, str(out))
    rows = list(csv.DictReader(out.open()))
    ok = [r for r in rows if r["status"] == "ok"]
    host = [r for r in ok if r["clock"] == "host"]
    assert len(host) == 4 * 7  # 4 configurations x 7 metrics
    assert {r["clock"] for r in ok} == {"host", "device", "gpu"}
    itl = [r for r in host if r["metric"] == "itl_s" and r["batch_size"] == "2" and r["prompt_len"] == "16"]
    assert len(itl) == 1
    run = gpu_sweep.runs[3]
    assert float(itl[0]["p50"]) == pytest.approx(run.result.summary["itl_s"]["p50"])
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "out of memory" in failed[0]["error"] and failed[0]["metric"] == ""


def test_to_dataframe(gpu_sweep):  # noqa: F811
    pd = pytest.importorskip("pandas")
    df = gpu_sweep.to_dataframe()
    assert isinstance(df, pd.DataFrame)
    assert len(df) == len(list(gpu_sweep.rows()))
    for col in ("run", "batch_size", "prompt_len", "status", "clock", "metric", "p50", "ci95_low"):
        assert col in df.columns
    sel = df[(df.metric == "itl_s") & (df.clock == "host") & (df.batch_size == 1) & (df.prompt_len == 8)]
    assert len(sel) == 1 and sel.p50.iloc[0] == pytest.approx(gpu_sweep.runs[0].result.summary["itl_s"]["p50"])
    single = gpu_sweep.runs[0].result.to_dataframe()
    assert set(single.clock) == {"host", "device", "gpu"} and "run" not in single.columns
    assert (single[single.clock == "host"].metric.tolist() == list(gpu_sweep.runs[0].result.summary))


def test_markdown(gpu_sweep, tmp_path):  # noqa: F811
    out = tmp_path / "r.md"
    report.write_markdown(gpu_sweep, str(out), source="s.json")
    text = out.read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 5  # header, separator, 5 configurations
    assert table[0].startswith("| # | batch_size | prompt_len | status |")
    assert "## Warnings" in text and "out of memory" in text


def _images(html_text):
    return re.findall(r'<img alt="chart" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', html_text)


def test_html_is_one_self_contained_file(gpu_sweep, tmp_path):  # noqa: F811
    out = tmp_path / "r.html"
    report.write_html(gpu_sweep, str(out), source="s.json")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # Nothing fetched: no scripts, no stylesheets or images from elsewhere.
    assert "<script" not in text and "<link" not in text
    assert not re.search(r'(src|href)="(?!data:)', text)
    assert "http://" not in text and "https://" not in text
    images = _images(text)
    # Per configuration: token latency, ITL histogram + CDF, GPU timeline, host time per decode
    # step (4 x 4); sweep: against batch size and against prompt length (2).
    assert len(images) == 4 * 4 + 2
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count("<h2>Configuration ") == 5
    assert "CUDA out of memory" in text
    assert "against batch_size" in text and "against prompt_len" in text
    assert gpu_sweep.environment["hostname"] in text
    for w in report.all_warnings(gpu_sweep):
        assert w.replace("'", "&#x27;").replace('"', "&quot;") in text or w in text


def test_html_without_gpu_samples_says_why(tmp_path):
    sweep = synthetic_sweep({1: 10.0})
    text = report.html_report(sweep)
    assert len(_images(text)) == 2  # token latency, ITL: no GPU chart, no sweep chart for one value
    assert "GPU samples unavailable" not in text or "reason" in text


def test_gpu_timeline_is_drawn_from_samples(gpu_sweep):  # noqa: F811
    run = gpu_sweep.runs[0]
    assert report_html._gpu_timeline_chart(run) is not None
    run.result.hardware = {"available": False, "reason": "no GPU sampled: test"}
    assert report_html._gpu_timeline_chart(run) is None
    assert "no GPU sampled: test" in report.html_report(Sweep(environment={}, runs=[run]))


def test_html_statistics_use_the_consoles_units():
    """The HTML statistics table shows each figure in the console's unit: the peak memory in GiB
    (3,894,280,192 bytes is 3.627 GiB), times in ms, energy per token in mJ, never raw SI values."""
    from fastprof.report.tables import stat_text
    from fastprof.results.units import display_unit

    sweep = synthetic_sweep({1: 10.0})
    result = sweep.runs[0].result
    peak = 3_894_280_192.0

    def stat(v):
        return {"n": 12, "p50": v, "mean": v, "p90": v, "p99": v, "max": v, "cv": 0.0}

    result.hardware = {"available": True, "backend": "nvml", "interval_ms": 10.0, "devices": [],
                       "summary": {"memory_peak_bytes": stat(peak), "energy_per_token_j": stat(0.0425)}}
    text = report.html_report(sweep)
    assert "3,894,280,192" not in text and "3894280192" not in text
    assert "memory_peak_bytes [GiB]" in text and ">3.627<" in text
    assert "energy_per_token_j [mJ]" in text and ">42.500<" in text
    itl = result.summary["itl_s"]["p50"]
    assert "itl_s [ms]" in text and f">{itl * 1e3:,.3f}<" in text
    # One formatting for both: the console's report table cells come from the same function.
    assert stat_text(peak, display_unit("memory_peak_bytes", peak)) == "3.627"
    assert stat_text(1234.56, display_unit("decode_tokens_per_s", 1234.56)) == "1,234.6"


@pytest.mark.parametrize("energy, unit, cell", [(1.09943, "J", "1.10"), (0.0425, "mJ", "42.50")])
def test_console_gpu_table_shows_the_htmls_units(energy, unit, cell):
    """The console's GPU table gives every figure the unit the HTML report gives it: energy per
    token in J or mJ by its median (1.099 J, not "1,099.43" without a unit), memory in GiB."""
    import io

    from rich.console import Console

    sweep = synthetic_sweep({1: 10.0})
    result = sweep.runs[0].result

    def stat(v):
        return {"n": 12, "p50": v, "min": v, "max": v, "mean": v, "p90": v, "p99": v, "cv": 0.0}

    result.hardware = {"available": True, "backend": "nvml", "interval_ms": 10.0, "devices": [],
                       "summary": {"memory_peak_bytes": stat(3_894_280_192.0), "energy_per_token_j": stat(energy),
                                   "power_mean_w": stat(650.0), "temperature_max_c": stat(39.0)}}
    console = Console(width=80, file=io.StringIO(), record=True)
    console.print(result.hardware_table())
    rows = {line.split("\u2502")[1].strip(): line.split("\u2502")[2].strip()
            for line in console.export_text().splitlines() if line.count("\u2502") == 5}
    assert rows[f"energy_per_token [{unit}]"] == cell
    assert rows["memory_peak [GiB]"] == "3.63" and rows["power_mean [W]"] == "650.00"
    assert rows["temperature_max [C]"] == "39.00"
    assert f"energy_per_token_j [{unit}]" in report.html_report(sweep)


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("", "is empty"),
    ('{"schema_version": 1, "kind": "sweep", "runs": [', "truncated"),
    ('{"name": "something else"}', "not a fastprof results file"),
    ("[1, 2, 3]", "not a fastprof results file"),
    ('{"schema_version": 1, "kind": "sweep", "created": "x", "environment": {}, "runs": [{"config": {}}]}',
     "does not match the fastprof results schema"),
])
def test_report_bad_files(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["report", str(path)]) == 2
    assert message in one_error_line(capsys)


def test_report_refuses_a_newer_schema(tmp_path, capsys):
    doc = synthetic_sweep({1: 10.0}).to_dict()
    doc["schema_version"] = 99
    path = tmp_path / "future.json"
    path.write_text(json.dumps(doc))
    assert cli.main(["report", str(path)]) == 2
    err = one_error_line(capsys)
    assert "schema version 99" in err and "newer" in err and "upgrade fastprof" in err


def test_report_unknown_metric(tmp_path, capsys):
    path = synthetic_sweep({1: 10.0}).save(tmp_path / "s.json")
    assert cli.main(["report", str(path), "--metric", "itl_s,speed"]) == 2
    err = one_error_line(capsys)
    assert "'speed'" in err and "itl_s" in err
    assert cli.main(["report", str(path), "--stat", "p42"]) == 2
    one_error_line(capsys)


def test_report_outputs_are_atomic(tmp_path, monkeypatch):
    """An interrupted write leaves the previous report and no partial file."""
    path = synthetic_sweep({1: 10.0}).save(tmp_path / "s.json")
    html = tmp_path / "r.html"
    html.write_text("previous report")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    assert cli.main(["report", str(path), "--html", str(html)]) == 130
    assert html.read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "s.json"]
    monkeypatch.undo()
    assert cli.main(["report", str(path), "--html", str(html), "--csv", str(tmp_path / "r.csv")]) == 0
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_incomplete_sweep_is_flagged(tmp_path, capsys):
    sweep = synthetic_sweep({1: 10.0})
    sweep.complete = False
    path = sweep.save(tmp_path / "s.json")
    assert cli.main(["report", str(path)]) == 0
    assert "did not finish" in capsys.readouterr().out
