"""The host breakdown on a real GPU (marked gpu; skipped without one): CUDA API records from
CUPTI, launches matched to kernels, a known host delay in the right part, graph launches, and
the host path's calibration."""

import threading
import time

import numpy as np
import pytest

from fastprof.analysis import host as H
from fastprof.capture import hostpath
from fastprof.capture.kernel_trace import KernelTracer

pytestmark = pytest.mark.gpu


def busy_wait(ns: int) -> None:
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


def test_launches_per_step_equal_kernels_per_step_in_eager_decode(torch_cuda):
    from fastprof import benchmark_generate
    from fastprof.capture import hf

    model = hf.build_default_model(dtype=torch_cuda.bfloat16, device="cuda")
    inputs = hf.random_inputs(int(model.config.vocab_size), 1, 32, device="cuda", seed=0)
    result = benchmark_generate(model, inputs, max_new_tokens=16, warmup=2, iterations=3, kernel_trace_iterations=2)
    host, kernels = result.host, result.kernels
    assert host["available"] and host["api"]["available"], host
    api = host["api"]
    launches = api["calls_per_step"]["launch"] + api["calls_per_step"]["graph_launch"]
    assert launches == pytest.approx(kernels["kernels_per_token"], rel=0.02)
    assert api["matched"] >= 0.98 * api["launches"]
    assert sum(api["parts_s"].values()) == pytest.approx(host["step_s"]["mean"], rel=1e-6)
    assert api["parts_s"]["python_framework"] > 0 and api["parts_s"]["launch"] > 0
    assert host["modules"]["available"] and host["modules"]["layers"] == 8
    assert "kernel launches" in result.verdict["text"] or result.verdict["verdict"] != "host-overhead-bound"
    cal = result.host_path["summary"]
    assert 0 < cal["launch_s"]["p50"] < 1e-3 and cal["roundtrip_s"]["p50"] > cal["launch_s"]["p50"]
    assert "torch_op_s" in cal


def test_a_known_host_delay_lands_in_python_and_framework_within_01_ms(torch_cuda):
    torch = torch_cuda
    x = torch.zeros(1024, device="cuda")
    for _ in range(10):
        x.add_(1)
    torch.cuda.synchronize()
    delay_ns = 2_000_000

    def steps(n: int, delay: int) -> tuple[int, np.ndarray]:
        marks = []
        start = time.monotonic_ns()
        for _ in range(n):
            x.add_(1)
            busy_wait(delay)
            x.add_(1)
            torch.cuda.synchronize()
            marks.append(time.monotonic_ns())
        return start, np.asarray(marks, dtype=np.int64)

    tracer = KernelTracer(api=True)
    assert tracer.start(), tracer.reason
    plain = steps(21, 0)
    delayed = steps(21, delay_ns)
    torch.cuda.synchronize()
    trace = tracer.stop()
    cands = (threading.get_native_id(), threading.get_ident())
    a = H.section([plain], api=trace.api, kernels=trace, thread_candidates=cands)["api"]
    b = H.section([delayed], api=trace.api, kernels=trace, thread_candidates=cands)["api"]
    assert a["calls_per_step"]["launch"] == pytest.approx(2) and b["calls_per_step"]["launch"] == pytest.approx(2)
    assert a["calls_per_step"]["sync"] >= 1
    added = b["parts_s"]["python_framework"] - a["parts_s"]["python_framework"]
    assert added == pytest.approx(delay_ns / 1e9, abs=1e-4)
    for part in ("launch", "sync"):
        assert abs(b["parts_s"][part] - a["parts_s"][part]) < 1e-4


def test_graph_launch_replaces_its_kernels(torch_cuda):
    torch = torch_cuda
    x = torch.zeros(1024, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            x.add_(1)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(10):
            x.add_(1)
    torch.cuda.synchronize()
    tracer = KernelTracer(api=True)
    assert tracer.start(), tracer.reason
    start, marks = time.monotonic_ns(), []
    for _ in range(6):
        graph.replay()
        torch.cuda.synchronize()
        marks.append(time.monotonic_ns())
    trace = tracer.stop()
    sec = H.section([(start, np.asarray(marks, dtype=np.int64))], api=trace.api, kernels=trace,
                    thread_candidates=(threading.get_native_id(), threading.get_ident()))
    api = sec["api"]
    assert api["calls_per_step"]["graph_launch"] == pytest.approx(1)
    assert api["kernels_per_graph_launch"] == pytest.approx(10)
    assert "each replacing about 10 kernel launches" in H.summary_line(sec)


def test_calibration_on_the_gpu(torch_cuda):
    torch_cuda.zeros(1, device="cuda")
    cal = hostpath.calibrate(device_ordinal=torch_cuda.cuda.current_device())
    assert "reasons" not in cal, cal
    assert 0 < cal["launch_s"] < 1e-3 and cal["launch_s"] < cal["roundtrip_s"] < 1e-2
    assert 0 < cal["torch_op_s"] < 1e-3 and cal["python_loop_s"] > 0
