"""The CUPTI kernel tracer on a real GPU (marked gpu; skipped without a GPU).

Tests that involve torch.profiler run in a child process: once torch.profiler (kineto) has set
up CUPTI in a process it may keep the one CUPTI subscription, and the other tests need it free.
"""

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastprof import _core  # noqa: E402
from fastprof.analysis import kernels as K  # noqa: E402
from fastprof.capture.kernel_trace import KernelTracer  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def spin():
    torch.cuda.init()
    k = _core.SpinKernel("cuda", torch.cuda.current_device())
    yield k
    k.close()


def test_spin_kernel_appears_with_its_duration_within_1us(spin):
    stream = torch.cuda.current_stream().cuda_stream
    durations = [20_000, 200_000, 1_000_000]
    spin.launch(1000, stream)  # module loaded and warm
    torch.cuda.synchronize()
    tracer = KernelTracer()
    assert tracer.start(), tracer.reason
    t0 = time.perf_counter_ns()
    for d in durations:
        for _ in range(10):
            spin.launch(d, stream)
    torch.cuda.synchronize()
    t1 = time.perf_counter_ns()
    trace = tracer.stop()
    assert trace.available and trace.dropped == 0, trace.reason
    assert trace.timestamp_method in ("callback", "offset")
    names = trace.name
    spins = names == "fastprof_spin"
    assert int(spins.sum()) == 10 * len(durations), list(set(names))
    dur = trace.duration_ns[spins]
    for i, d in enumerate(durations):
        got = np.median(dur[i * 10:(i + 1) * 10])
        assert abs(got - d) <= 1_000, (d, got)
    # on fastprof's clock: inside the host window that launched and waited for them
    assert trace.start_ns[spins].min() >= t0 and trace.end_ns[spins].max() <= t1
    # back to back on one stream, in order, not overlapping
    s, e = trace.start_ns[spins], trace.end_ns[spins]
    assert np.all(s[1:] >= e[:-1])


def test_cuda_graph_kernels_carry_their_graph_id():
    x = torch.zeros(1024, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            x.add_(1)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        x.add_(1)
        x.mul_(2)
    torch.cuda.synchronize()
    with KernelTracer() as tracer:
        for _ in range(5):
            g.replay()
        torch.cuda.synchronize()
    trace = tracer.trace
    assert trace.available, trace.reason
    kern = trace.kind == 0
    assert int(kern.sum()) >= 10
    assert np.all(trace.graph_id[kern] != 0)


def _small_model():
    from fastprof.capture.hf import build_default_model

    return build_default_model(dtype=torch.bfloat16, device="cuda", hidden_size=512, intermediate_size=1024,
                               num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, vocab_size=4096)


def test_busy_time_per_step_never_exceeds_the_device_itl():
    import fastprof
    from fastprof.capture.hf import random_inputs

    model = _small_model()
    inputs = random_inputs(4096, 1, 32, device="cuda", seed=0)
    r = fastprof.benchmark_generate(model, inputs, max_new_tokens=32, warmup=2, iterations=3, sample_interval_ms=None,
                                    kernel_trace_iterations=2)
    k = r.kernels
    assert k["available"], k["reason"]
    assert k["iterations"] == 2 and k["dropped"] == 0 and k["decode_steps"] == 2 * 31
    per = k["per_step"]
    # the steps of the chart are the device ITLs of the last traced iteration
    steps, busy = np.array(per["step_s"]), np.array(per["busy_s"])
    assert np.all(busy <= steps + 1e-9)
    assert np.all(busy[1:] > 0)
    assert k["kernels_per_token"] >= 10
    assert 0 <= k["idle_share"] <= 1
    assert k["itl_s_traced"] >= 0.9 * k["itl_s_untraced"]
    assert k["class_share"]["gemm"] > 0
    assert r.verdict is not None


AGREEMENT = textwrap.dedent("""
    import json, numpy as np, torch
    from fastprof.analysis import kernels as K
    from fastprof.capture.hf import build_default_model, random_inputs
    from fastprof.capture.kernel_trace import KernelTracer, KernelTrace
    from torch.profiler import ProfilerActivity, profile
    model = build_default_model(dtype=torch.bfloat16, device="cuda", hidden_size=512, intermediate_size=1024,
                                num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, vocab_size=4096)
    inputs = random_inputs(4096, 1, 32, device="cuda", seed=0)
    kw = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0)
    def run():
        with torch.inference_mode():
            model.generate(**inputs, **kw)
        torch.cuda.synchronize()
    for _ in range(3):
        run()
    def summary(trace):
        cls = K.record_classes(trace)
        dur = trace.duration_ns.astype(float)
        total = float(dur.sum())
        return {"total_ns": total, "n": len(trace),
                "share": {c: float(dur[cls == c].sum()) / total for c in K.CLASSES}}
    with KernelTracer() as tracer:
        run()
    ours = summary(tracer.trace)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
    recs = []
    for e in prof.events():
        if str(e.device_type).endswith("CUDA"):
            name = e.name
            kind = "memcpy" if name.startswith("Memcpy") else "memset" if name.startswith("Memset") else "kernel"
            recs.append((kind, name, int(e.time_range.start * 1000), int(e.time_range.end * 1000)))
    theirs = summary(KernelTrace.from_records(recs))
    print(json.dumps({"ours": ours, "theirs": theirs, "reason": tracer.trace.reason}))
""")


def test_totals_and_class_split_agree_with_torch_profiler():
    p = subprocess.run([sys.executable, "-c", AGREEMENT], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    ours, theirs = out["ours"], out["theirs"]
    assert ours["n"] > 0, out["reason"]
    assert abs(ours["total_ns"] - theirs["total_ns"]) <= 0.02 * theirs["total_ns"], out
    for c in K.CLASSES:
        assert abs(ours["share"][c] - theirs["share"][c]) <= 0.02, (c, out)


OTHER_SUBSCRIBER = textwrap.dedent("""
    import json, torch
    from fastprof.capture.kernel_trace import KernelTracer
    from torch.profiler import ProfilerActivity, profile
    x = torch.ones(1024, device="cuda")
    with profile(activities=[ProfilerActivity.CUDA]):
        x.add_(1)
        tracer = KernelTracer()
        ok = tracer.start()
        x.add_(1)
        torch.cuda.synchronize()
        trace = tracer.stop()
    print(json.dumps({"started": ok, "reason": tracer.reason, "available": trace.available}))
""")


def test_torch_profiler_holding_cupti_is_reported_not_raised():
    p = subprocess.run([sys.executable, "-c", OTHER_SUBSCRIBER], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["started"] is False and out["available"] is False, out
    assert "subscriber" in out["reason"] or "profiler" in out["reason"], out
