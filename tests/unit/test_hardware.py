"""GPU samples attributed to iterations and phases, and the driver's sampler integration."""

from types import SimpleNamespace

import numpy as np
import pytest

import fastprof
from fastprof import Trace
from fastprof.analysis.hardware import attribute, summarize
from sampler_fixtures import fake_nvml, fake_nvml_path  # noqa: F401

MS = 1_000_000


def trace(start_ms, first_ms, end_ms, n=3):
    marks = np.linspace(first_ms, end_ms - 1, n) * MS
    return Trace(int(start_ms * MS), int(end_ms * MS), marks.astype(np.int64))


def fake_samples(ts_ms, power_w, energy_ts_ms=(), energy_mj=(), throttle=0.0, util=50.0):
    n = len(ts_ms)
    fields = {
        "gpu_util_pct": np.full(n, util), "mem_used_bytes": np.arange(n, dtype=float) * 1e6,
        "power_w": np.asarray(power_w, dtype=float), "temperature_c": np.full(n, 60.0),
        "throttle_reasons": np.full(n, throttle),
    }
    to_dict = {"fields": {k: v.tolist() for k, v in fields.items()},
               "energy": {"timestamps_ns": [], "device": [], "energy_mj": []}}
    return SimpleNamespace(
        timestamps_ns=(np.asarray(ts_ms) * MS).astype(np.int64), device=np.zeros(n, dtype=np.int32), fields=fields,
        energy_timestamps_ns=(np.asarray(energy_ts_ms) * MS).astype(np.int64),
        energy_device=np.zeros(len(energy_ts_ms), dtype=np.int32), energy_mj=np.asarray(energy_mj, dtype=float),
        devices=[{"identifier": "0", "name": "Fake"}], unavailable={"0": []}, dropped=0, missed_slots=0,
        read_errors=0, reason=None, backend="nvml", library="x", interval_ms=1.0, start_ns=0, stop_ns=0,
        thread_cpu_ns=0, energy_thread_cpu_ns=0, n_samples=n, to_dict=lambda: to_dict,
        energy_joules=lambda: float("nan"),
    )


def test_attribute_iteration_and_phase():
    traces = [trace(10, 15, 30), trace(40, 42, 50)]
    it, phase = attribute(np.array([5, 10, 14, 15, 29, 35, 41, 45, 50, 60]) * MS, traces)
    assert it.tolist() == [-1, 0, 0, 0, 0, -1, 1, 1, 1, -1]
    assert phase.tolist() == [0, 1, 1, 2, 2, 0, 1, 2, 2, 0]


def test_energy_from_power_samples():
    # 1 W throughout; iteration 10..30 ms -> 20 mJ = 0.02 J, 3 tokens.
    s = fake_samples(np.arange(0, 40), np.full(40, 1.0), energy_ts_ms=[0, 25, 40], energy_mj=[0, 99, 999])
    hw = summarize(s, [trace(10, 15, 30)], tokens_per_iteration=[3])
    row = hw["per_iteration"][0]
    assert row["energy_method"] == "power_integral"
    assert row["energy_j"] == pytest.approx(0.020)
    assert row["energy_per_token_j"] == pytest.approx(0.020 / 3)
    assert row["samples"] == 21 and row["gpu_util_mean_pct"] == 50.0 and row["temperature_max_c"] == 60.0
    assert row["memory_peak_bytes"] == 30e6 and row["power_mean_w"] == pytest.approx(1.0)
    assert hw["samples"]["phase"][10] == "prefill" and hw["samples"]["phase"][20] == "decode"
    assert hw["summary"]["energy_j"]["p50"] == pytest.approx(0.020)
    assert not hw["warnings"]


def test_energy_falls_back_to_the_counter():
    # Power samples only every 50 ms (none inside the iteration); counter at 1 mJ per ms.
    s = fake_samples([0, 50], [1.0, 1.0], energy_ts_ms=[0, 25, 40], energy_mj=[0, 25, 40])
    row = summarize(s, [trace(10, 15, 30)], tokens_per_iteration=[4])["per_iteration"][0]
    assert row["energy_method"] == "energy_counter"
    assert row["energy_j"] == pytest.approx(0.020)


def test_throttling_is_a_warning():
    s = fake_samples(np.arange(0, 40), np.full(40, 1.0), throttle=float(0x4 | 0x80))
    hw = summarize(s, [trace(10, 15, 30)], tokens_per_iteration=[1])
    assert hw["per_iteration"][0]["throttled"]
    assert any("throttled" in w for w in hw["warnings"]) and any("thermal" in w for w in hw["warnings"])
    idle = fake_samples(np.arange(0, 40), np.full(40, 1.0), throttle=1.0)  # GpuIdle is not throttling
    assert not summarize(idle, [trace(10, 15, 30)], tokens_per_iteration=[1])["per_iteration"][0]["throttled"]


@pytest.fixture
def nvml_index_order(monkeypatch):
    """CUDA ordinal n is NVML index n: the fake NVML knows no real GPU's UUID, even where torch sees one."""
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def test_benchmark_samples_the_gpu_over_all_iterations(fake_gpu, fake_nvml, nvml_index_order):  # noqa: F811
    import time

    fake_nvml.set(0, "power_instant_mw", 150_000)
    fake_nvml.set(0, "util_gpu", 87)
    inits = fake_nvml.init_calls()
    r = fastprof.benchmark(lambda: time.sleep(0.03), warmup=0, iterations=4, device="cuda:0", sample_interval_ms=2)
    assert fake_nvml.init_calls() - inits == 1  # one sampler for the whole measurement
    hw = r.hardware
    assert hw["available"] and hw["backend"] == "nvml"
    assert len(hw["per_iteration"]) == 4
    for row in hw["per_iteration"]:
        assert row["samples"] >= 5
        assert row["power_mean_w"] == pytest.approx(150.0)
        assert row["gpu_util_max_pct"] == 87
    its = hw["samples"]["iteration"]
    assert set(its) <= {-1, 0, 1, 2, 3} and {0, 1, 2, 3} <= set(its)
    assert "GPU" in str(r)
    back = fastprof.BenchmarkResult.from_dict(r.to_dict())
    assert back.hardware["summary"]["power_mean_w"]["p50"] == pytest.approx(150.0)


def test_sampler_failure_does_not_stop_the_benchmark(fake_gpu, fake_nvml, nvml_index_order):  # noqa: F811
    fake_nvml.fail_init(999)
    r = fastprof.benchmark(lambda: None, warmup=0, iterations=3, device="cuda:0", sample_interval_ms=2)
    assert r.summary["latency_s"]["n"] == 3
    assert not r.hardware["available"] and r.hardware["reason"]


def test_no_gpu_no_sampler():
    r = fastprof.benchmark(lambda: None, warmup=0, iterations=2, device=None)
    assert r.hardware == {"available": False, "reason": "no GPU sampled: device timing disabled (device=None)"}


def test_generate_samples_have_prefill_and_decode(tiny_llama, fake_gpu, fake_nvml, nvml_index_order):  # noqa: F811
    from fastprof.capture.hf import random_inputs

    r = fastprof.benchmark_generate(tiny_llama, random_inputs(256, 1, 64), max_new_tokens=16, warmup=0,
                                    iterations=2, device="cuda:0", sample_interval_ms=1)
    hw = r.hardware
    assert hw["available"]
    assert "decode" in hw["samples"]["phase"]
    assert all(row["energy_per_token_j"] is None or row["energy_per_token_j"] > 0 for row in hw["per_iteration"])
