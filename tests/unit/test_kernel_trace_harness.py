"""The harness's kernel trace: traced iterations after the timed ones, through the fake CUDA
driver and the fake CUPTI."""

import gc
import time

import pytest

import fastprof
from fastprof.results.result import BenchmarkResult, kernel_lines
from fastprof.results.sweep import validate
from kernel_trace_fixtures import (  # noqa: F401  (fixtures)
    KERNEL,
    fake_cupti,
    fake_cupti_path,
)


@pytest.fixture(autouse=True)
def _collect():
    yield
    gc.collect()


def gemm_call(fake_cupti, calls):
    """A callable whose 'GPU work' is one 100 us gemm, reported to the fake CUPTI when tracing is on."""

    def fn():
        calls.append(1)
        now = time.perf_counter_ns()
        fake_cupti.add(KERNEL, "ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_tn", now, now + 100_000)
        time.sleep(0.002)

    return fn


def test_traced_iterations_follow_the_timed_ones(fake_gpu, fake_cupti):
    fake_cupti.only_enabled(1)
    calls = []
    r = fastprof.benchmark(gemm_call(fake_cupti, calls), warmup=1, iterations=4, device="cuda:0",
                           sample_interval_ms=None, kernel_trace_iterations=3)
    assert len(calls) == 1 + 4 + 3
    k = r.kernels
    assert k["available"], k["reason"]
    assert k["iterations"] == 3 and k["records"] == 3 and k["dropped"] == 0
    assert k["timestamp_method"] == "callback" and not k["traced_timed"]
    assert k["kernels_per_token"] == 1.0
    assert k["busy_s_per_step"] == pytest.approx(100e-6, rel=0.01)
    assert k["class_share"]["gemm"] == 1.0
    assert k["top_decode"][0]["count"] == 3 and k["top_decode"][0]["class"] == "gemm"
    assert k["latency_s_traced"] > 0.002 and k["latency_s_untraced"] > 0.002
    assert r.summary["latency_s"]["n"] == 4  # the traced iterations are not among the timed ones
    assert fake_cupti.subscribed() == 0  # released after the trace


def test_default_is_two_traced_iterations_on_cuda(fake_gpu, fake_cupti):
    fake_cupti.only_enabled(1)
    calls = []
    r = fastprof.benchmark(gemm_call(fake_cupti, calls), warmup=0, iterations=3, device="cuda:0",
                           sample_interval_ms=None)
    assert len(calls) == 5 and r.kernels["iterations"] == 2 and r.kernels["records"] == 2


def test_zero_turns_it_off_and_host_only_has_none(fake_gpu, fake_cupti):
    r = fastprof.benchmark(lambda: None, warmup=0, iterations=2, device="cuda:0", sample_interval_ms=None,
                           kernel_trace_iterations=0)
    assert r.kernels is None and fake_cupti.calls("cuptiSubscribe") == 0
    r = fastprof.benchmark(lambda: None, warmup=0, iterations=2, device=None)
    assert r.kernels is None
    r = fastprof.benchmark(lambda: None, warmup=0, iterations=2, device=None, kernel_trace_iterations=2)
    assert not r.kernels["available"] and "needs a CUDA GPU" in r.kernels["reason"]


def test_trace_timed_traces_the_timed_iterations_with_a_warning(fake_gpu, fake_cupti):
    fake_cupti.only_enabled(1)
    calls = []
    r = fastprof.benchmark(gemm_call(fake_cupti, calls), warmup=0, iterations=3, device="cuda:0",
                           sample_interval_ms=None, trace_timed=True)
    assert len(calls) == 3 and r.kernels["records"] == 3 and r.kernels["traced_timed"]
    assert any("include the kernel tracer's cost" in w for w in r.warnings)


def test_another_subscriber_leaves_the_benchmark_intact(fake_gpu, fake_cupti, monkeypatch):
    monkeypatch.setenv("FAKE_CUPTI_OTHER_SUBSCRIBER", "1")
    calls = []
    r = fastprof.benchmark(gemm_call(fake_cupti, calls), warmup=0, iterations=3, device="cuda:0",
                           sample_interval_ms=None)
    assert not r.kernels["available"] and "another CUPTI subscriber" in r.kernels["reason"]
    assert len(calls) == 3  # no traced iterations were run for nothing
    assert r.summary["latency_s"]["n"] == 3


def test_kernels_section_round_trips_validates_and_prints(fake_gpu, fake_cupti, tmp_path):
    fake_cupti.only_enabled(1)
    r = fastprof.benchmark(gemm_call(fake_cupti, []), warmup=0, iterations=3, device="cuda:0",
                           sample_interval_ms=None)
    path = r.save(tmp_path / "r.json")
    import json

    doc = json.loads(path.read_text())
    validate(doc)
    back = BenchmarkResult.load(path)
    assert back.kernels["top_decode"][0]["name"].startswith("ampere_bf16_s16816gemm")
    text = str(back)
    assert "kernels" in text and "gemm 100%" in text and "1 kernels per token" in text
    lines = list(kernel_lines({"available": False, "reason": "no CUPTI library"}))
    assert lines == ["[dim]kernel trace unavailable: no CUPTI library[/dim]"]


def test_report_console_and_html_show_the_breakdown(fake_gpu, fake_cupti, tmp_path):
    import io

    from rich.console import Console

    from fastprof.report import html as report_html
    from fastprof.report.tables import print_console
    from fastprof.results.sweep import load

    fake_cupti.only_enabled(1)
    r = fastprof.benchmark(gemm_call(fake_cupti, []), warmup=0, iterations=3, device="cuda:0",
                           sample_interval_ms=None)
    path = r.save(tmp_path / "r.json")
    sweep = load(path)
    buf = io.StringIO()
    print_console(sweep, console=Console(file=buf, width=200, color_system=None))
    out = buf.getvalue()
    assert "kernel breakdown" in out and "GPU idle" in out and "gemm 100%" in out
    page = report_html.html_report(sweep)
    assert "Kernel breakdown (CUPTI trace)" in page and "top kernels, decode" in page
    assert "ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_tn" in page
    r.kernels = {"available": False, "reason": "another CUPTI subscriber holds this process"}
    sweep = load(r.save(tmp_path / "u.json"))
    assert "kernel trace unavailable: another CUPTI subscriber" in report_html.html_report(sweep)
