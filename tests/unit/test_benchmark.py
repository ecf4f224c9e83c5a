"""fastprof.benchmark on the host clock and through the fake GPU driver."""

import time

import pytest

import fastprof


def test_benchmark_callable_host_only():
    calls = []

    def work():
        calls.append(1)
        time.sleep(0.002)

    r = fastprof.benchmark(work, warmup=2, iterations=10, device=None)
    assert len(calls) == 12
    assert r.kind == "callable" and r.config["iterations"] == 10 and r.config["name"] == "work"
    s = r.summary["latency_s"]
    assert s["n"] == 10 and s["min"] >= 0.002 and s["p50"] < 0.05
    assert r.device_summary is None and "disabled" in r.device_timing["reason"]


def test_benchmark_with_device_events(fake_gpu):
    # Device clock: each iteration's start and end events 1.5 ms apart.
    ts = []
    for i in range(5):
        ts += [i * 10_000_000, i * 10_000_000 + 1_500_000]
    fake_gpu.script(ts)
    syncs = fake_gpu.calls("cuCtxSynchronize")
    r = fastprof.benchmark(lambda: None, warmup=0, iterations=5, device="cuda:0")
    assert r.device_timing["available"] and r.device_timing["backend"] == "cuda"
    assert r.device_summary["latency_s"]["p50"] == pytest.approx(0.0015)
    assert r.device_summary["latency_s"]["n"] == 5
    # The device is synchronised before each start and at each end.
    assert fake_gpu.calls("cuCtxSynchronize") - syncs >= 10


def test_benchmark_falls_back_to_host_when_driver_fails(fake_gpu):
    fake_gpu.fail("cuInit", 1, 100)
    r = fastprof.benchmark(lambda: None, warmup=0, iterations=3, device="cuda")
    assert r.device_summary is None
    assert "CUDA_ERROR_NO_DEVICE" in r.device_timing["reason"]
    assert r.summary["latency_s"]["n"] == 3


@pytest.mark.parametrize("kw", [{"warmup": -1}, {"iterations": 0}])
def test_benchmark_rejects_bad_counts(kw):
    with pytest.raises(ValueError):
        fastprof.benchmark(lambda: None, device=None, **kw)
