"""The roofline and the verdict in the reports: console, Markdown, HTML, and `fastprof report` on a file."""

import io
import json

from rich.console import Console

from fastprof import cli
from fastprof.analysis.roofline import gpu_peaks
from fastprof.report import html as report_html
from fastprof.report.tables import markdown, print_console
from fastprof.results.sweep import load, validate
from report_fixtures import synthetic_sweep

H100 = gpu_peaks({"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "multiprocessors": 132,
                  "sm_clock_max_mhz": 1980, "mem_clock_max_mhz": 2619, "memory_bus_width_bits": 5120})
LLAMA_1B = {"num_layers": 16, "hidden_size": 2048, "num_heads": 32, "num_kv_heads": 8, "head_dim": 64,
            "vocab_size": 128256, "tie_embeddings": True, "params": 1_235_814_400, "weight_bytes": 2_471_628_800.0,
            "bytes_per_element": 2.0, "kv_bytes_per_element": 2.0, "input_embedding_params": 128256 * 2048,
            "input_embedding_bytes": 128256 * 2048 * 2.0}


def _sweep():
    sweep = synthetic_sweep({1: 8.0, 8: 9.0})
    for i, run in enumerate(sweep.runs):
        kernels = {"idle_share": 0.6, "kernels_per_token": 700, "class_share": {"gemm": 0.55}} if i == 0 else None
        run.result.diagnose(model=LLAMA_1B, gpu=H100, kernels=kernels)
    return sweep


def test_console_shows_one_verdict_per_configuration():
    buf = io.StringIO()
    print_console(_sweep(), console=Console(file=buf, width=300, color_system=None))
    out = buf.getvalue()
    assert "why decode takes this long" in out
    assert "#0 (bs=1): Host-overhead-bound: the GPU is idle 60% of each step: 700 kernels per token, launch-bound" \
        in out
    assert "#1 (bs=8): Host-overhead-bound (inferred" in out


def test_markdown_has_the_verdicts():
    md = markdown(_sweep())
    assert "## Why decode takes this long" in md
    assert "- configuration 0: Host-overhead-bound: the GPU is idle 60%" in md


def test_html_has_the_roofline_chart_table_and_verdict():
    sweep = _sweep()
    page = report_html.html_report(sweep)
    assert page.count("<h3>Why decode takes this long</h3>") == 2
    assert '<p class="verdict"><b>host-overhead-bound</b>: Host-overhead-bound: the GPU is idle 60%' in page
    assert "ideal step at full bandwidth [ms]" in page and "MBU (GPU busy time)" in page
    # One roofline chart per configuration: two more images than the same report without it.
    for run in sweep.runs:
        assert report_html._roofline_chart(run) is not None
    bare = synthetic_sweep({1: 8.0, 8: 9.0})
    assert page.count("<img") == report_html.html_report(bare).count("<img") + 2
    assert "Why decode takes this long" not in report_html.html_report(bare)


def test_roofline_chart_needs_peaks():
    sweep = synthetic_sweep({1: 8.0})
    sweep.runs[0].result.diagnose(model=LLAMA_1B, gpu=gpu_peaks({}))
    assert report_html._roofline_chart(sweep.runs[0]) is None
    page = report_html.html_report(sweep)
    assert "peak memory bandwidth unknown" in page


def test_report_command_on_a_saved_file(tmp_path, capsys):
    path = _sweep().save(tmp_path / "s.json")
    doc = json.loads(path.read_text())
    validate(doc)
    assert doc["runs"][0]["result"]["verdict"]["rule"] == "gpu-idle"
    assert load(path).runs[1].result.roofline["mbu"] is not None
    out_html = tmp_path / "r.html"
    assert cli.main(["report", str(path), "--html", str(out_html)]) == 0
    assert "MBU (whole step)" in out_html.read_text() and "Why decode takes this long" in out_html.read_text()
    capsys.readouterr()
    assert cli.main(["report", str(path)]) == 0
    assert "Host-overhead-bound" in capsys.readouterr().out
