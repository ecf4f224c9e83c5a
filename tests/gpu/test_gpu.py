"""Real-GPU checks of the recorder and the driver (marked gpu; skipped without a GPU)."""

import statistics

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastprof  # noqa: E402

pytestmark = pytest.mark.gpu


def _calibrate_sleep_cycles(target_s=1e-3):
    """torch.cuda._sleep cycles that spin for about target_s."""
    cycles = 1_000_000
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        torch.cuda._sleep(cycles)  # warm
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        torch.cuda.synchronize()
        cycles = int(cycles * target_s / (start.elapsed_time(end) * 1e-3))
    return cycles


def test_recorder_events_agree_with_torch_events_on_a_1ms_spin():
    torch.cuda.init()
    cycles = _calibrate_sleep_cycles()
    rec = fastprof.TokenRecorder(capacity=4, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ours_ms, ref_ms = [], []
    for _ in range(50):
        rec.begin()
        # Keep the GPU busy first, so every event below is timestamped when the GPU reaches it
        # rather than when the host submits it: both clocks then see the spin alone.
        torch.cuda._sleep(cycles // 2)
        start.record()
        rec.mark()
        torch.cuda._sleep(cycles)
        rec.mark()
        end.record()
        trace = rec.end()
        ours_ms.append((trace.device_marks_ns[1] - trace.device_marks_ns[0]) * 1e-6)
        ref_ms.append(start.elapsed_time(end))
    ours, ref = statistics.median(ours_ms), statistics.median(ref_ms)
    assert 0.8 < ref < 1.3, ref  # calibrated to about 1 ms
    assert ours == pytest.approx(ref, rel=0.01)


def test_benchmark_device_latency_matches_torch_events():
    """benchmark() times the call with events around it; the reference does the same with
    torch.cuda.Event (launch cost of the call included in both)."""
    cycles = _calibrate_sleep_cycles()

    def spin():
        torch.cuda._sleep(cycles)

    r = fastprof.benchmark(spin, warmup=3, iterations=30)
    assert r.device_timing["available"], r.device_timing
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ref = []
    for _ in range(30):
        torch.cuda.synchronize()
        start.record()
        spin()
        end.record()
        torch.cuda.synchronize()
        ref.append(start.elapsed_time(end) * 1e-3)
    assert r.device_summary["latency_s"]["p50"] == pytest.approx(statistics.median(ref), rel=0.02)
    # The host clock includes the synchronisation, so it can only be longer.
    assert r.summary["latency_s"]["p50"] >= r.device_summary["latency_s"]["p50"]


def test_driver_errors_on_a_real_gpu_name_the_call():
    with pytest.raises(fastprof.DriverError, match="cuDeviceGet failed: CUDA_ERROR_INVALID_DEVICE"):
        fastprof.TokenRecorder(capacity=2, device=f"cuda:{torch.cuda.device_count() + 3}")


def test_generate_ttft_and_itl_agree_with_torch_event_reference(monkeypatch):
    """Same run, independent reference through torch.cuda.Event: one event just before generate
    starts, one per token next to fastprof's device mark (a second logits processor), and one per
    token where fastprof reads the host clock (when the streamer receives the token)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    import fastprof.capture.hf
    from fastprof.capture.hf import build_default_model, random_inputs

    model = build_default_model(dtype=torch.bfloat16, device="cuda")
    inputs = random_inputs(model.config.vocab_size, 1, 128, device="cuda")
    starts, dev_ref, host_ref = [], [], []

    def event():
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    class RefEvents(LogitsProcessor):
        def __call__(self, input_ids, scores):
            dev_ref[-1].append(event())
            return scores

    real_generate = model.generate

    def generate_with_start(**kw):
        starts.append(event())
        dev_ref.append([])
        host_ref.append([])
        return real_generate(**kw)

    real_hooks = fastprof.capture.hf.make_hooks

    def hooks(rec):
        streamer, processor = real_hooks(rec)
        put = streamer.put

        def put_with_event(value):
            host_ref[-1].append(event())
            put(value)

        streamer.put = put_with_event
        return streamer, processor

    monkeypatch.setattr(fastprof.capture.hf, "make_hooks", hooks)
    model.generate = generate_with_start
    warmup, iterations, n = 3, 10, 64
    # No traced iterations after the timed ones: every generate call here is a warm-up or a timed one.
    r = fastprof.benchmark_generate(model, inputs, max_new_tokens=n, warmup=warmup, iterations=iterations,
                                    generate_kwargs={"logits_processor": LogitsProcessorList([RefEvents()])},
                                    kernel_trace_iterations=0)
    assert r.device_timing["available"], r.device_timing
    torch.cuda.synchronize()
    s, dev, host = starts[warmup:], dev_ref[warmup:], [h[1:] for h in host_ref[warmup:]]  # h[0]: the prompt
    assert len(s) == iterations and all(len(d) == n for d in dev) and all(len(h) == n for h in host)
    for clock, ref in (("device", dev), ("host", host)):
        ref_ttft = [st.elapsed_time(ev[0]) * 1e-3 for st, ev in zip(s, ref)]
        ref_itl = [ev[i].elapsed_time(ev[i + 1]) * 1e-3 for ev in ref for i in range(n - 1)]
        ttft = r.metric("ttft_s", clock=clock)["p50"]
        itl = r.metric("itl_s", clock=clock)["p50"]
        assert ttft == pytest.approx(float(np.median(ref_ttft)), rel=0.02), clock
        assert itl == pytest.approx(float(np.median(ref_itl)), rel=0.02), clock
    assert r.environment["gpus"] and r.environment["gpus"][0]["name"]
