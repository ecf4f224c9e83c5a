"""GPU performance counters (NVML GPM) attributed to iterations and their decode phase."""

import time
from types import SimpleNamespace

import numpy as np
import pytest

import fastprof
from fastprof import Trace
from fastprof.analysis.hardware import (
    GPM_METRICS,
    HARDWARE_METRICS,
    gpm_metric_names,
    gpm_windows,
    summarize,
    window_mean,
)
from fastprof.capture.sampler import GPM_FIELDS
from sampler_fixtures import fake_nvml, fake_nvml_path  # noqa: F401

MS = 1_000_000


def _samples(ts_ms, gpm: dict[str, list[float]], device=None, n_devices=1):
    n = len(ts_ms)
    fields = {"power_w": np.full(n, 100.0)}
    fields.update({k: np.asarray(v, dtype=float) for k, v in gpm.items()})
    to_dict = {"fields": {k: v.tolist() for k, v in fields.items()},
               "energy": {"timestamps_ns": [], "device": [], "energy_mj": []}}
    return SimpleNamespace(
        timestamps_ns=(np.asarray(ts_ms, dtype=float) * MS).astype(np.int64),
        device=np.zeros(n, dtype=np.int32) if device is None else np.asarray(device, dtype=np.int32), fields=fields,
        energy_timestamps_ns=np.zeros(0, dtype=np.int64), energy_device=np.zeros(0, dtype=np.int32),
        energy_mj=np.zeros(0), devices=[{"identifier": str(i)} for i in range(n_devices)],
        unavailable={str(i): [] for i in range(n_devices)}, dropped=0, missed_slots=0, read_errors=0, reason=None,
        backend="nvml", library="x", interval_ms=5.0, start_ns=0, stop_ns=0, thread_cpu_ns=0,
        energy_thread_cpu_ns=0, n_samples=n, to_dict=lambda: to_dict, energy_joules=lambda: float("nan"))


def _trace(start_ms, first_ms, end_ms):
    return Trace(int(start_ms * MS), int(end_ms * MS), (np.array([first_ms, end_ms - 1]) * MS).astype(np.int64))


def test_metric_names():
    assert gpm_metric_names("dram_bw_util_pct") == ("dram_bw_util_mean_pct", "dram_bw_util_decode_mean_pct")
    assert len(GPM_METRICS) == 2 * len(GPM_FIELDS) and set(GPM_METRICS) <= set(HARDWARE_METRICS)


def test_windows_start_at_the_previous_gpm_row():
    nan = float("nan")
    ts = np.array([0, 5, 10, 20, 25, 40]) * MS
    v = np.array([nan, nan, nan, 30.0, nan, 50.0])
    start, end, vals = gpm_windows(ts, v)
    assert end.tolist() == [20 * MS, 40 * MS] and vals.tolist() == [30.0, 50.0]
    assert start.tolist() == [0, 20 * MS]  # the first window as long as the median one (20 ms)
    one_s, one_e, _ = gpm_windows(ts[:4], v[:4])
    assert one_s.tolist() == [0] and one_e.tolist() == [20 * MS]


def test_window_mean_weights_by_overlap():
    start = np.array([0, 20, 40]) * MS
    end = np.array([20, 40, 60]) * MS
    vals = np.array([10.0, 40.0, 70.0])
    assert window_mean(start, end, vals, 30 * MS, 50 * MS) == pytest.approx((10 * 40 + 10 * 70) / 20)
    assert window_mean(start, end, vals, 0, 60 * MS) == pytest.approx(40.0)
    assert window_mean(start, end, vals, 70 * MS, 80 * MS) is None
    assert window_mean(start, end, vals, 10 * MS, 10 * MS) is None


def test_per_iteration_and_decode_means():
    # GPM rows every 10 ms from 0 to 100 ms; window k ends at 10k ms with value 10k.
    ts = np.arange(0, 101, 10)
    dram = [float("nan")] + [float(t) for t in ts[1:]]
    s = _samples(ts, {"dram_bw_util_pct": dram, "sm_active_pct": [float("nan")] + [50.0] * 10})
    # Iteration 15..65 ms, decode from 35 ms.
    hw = summarize(s, [_trace(15, 35, 65)], tokens_per_iteration=[2])
    row = hw["per_iteration"][0]
    # Windows (10,20]=20 overlaps 5 ms, (20,30]=30 10, (30,40]=40 10, (40,50]=50 10, (50,60]=60 10, (60,70]=70 5.
    expect = (20 * 5 + 30 * 10 + 40 * 10 + 50 * 10 + 60 * 10 + 70 * 5) / 50
    assert row["dram_bw_util_mean_pct"] == pytest.approx(expect)
    expect_decode = (40 * 5 + 50 * 10 + 60 * 10 + 70 * 5) / 30
    assert row["dram_bw_util_decode_mean_pct"] == pytest.approx(expect_decode)
    assert row["sm_active_mean_pct"] == pytest.approx(50.0)
    assert row["tensor_active_mean_pct"] is None  # not sampled
    assert hw["summary"]["dram_bw_util_decode_mean_pct"]["p50"] == pytest.approx(expect_decode)
    assert hw["summary"]["tensor_active_mean_pct"]["n"] == 0


def test_several_devices_take_the_highest():
    ts = [0, 0, 10, 10, 20, 20]
    s = _samples(ts, {"dram_bw_util_pct": [float("nan"), float("nan"), 20.0, 60.0, 20.0, 60.0]},
                 device=[0, 1, 0, 1, 0, 1], n_devices=2)
    row = summarize(s, [_trace(0, 5, 20)], tokens_per_iteration=[1])["per_iteration"][0]
    assert row["dram_bw_util_mean_pct"] == pytest.approx(60.0)


def test_benchmark_attributes_gpm_from_the_fake(fake_gpu, fake_nvml, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    fake_nvml.gpm_set(0, 10, 74.0)
    fake_nvml.gpm_set(0, 5, 53.0)
    r = fastprof.benchmark(lambda: time.sleep(0.25), warmup=0, iterations=3, device="cuda:0", sample_interval_ms=5)
    hw = r.hardware
    assert hw["available"] and hw["unavailable"] == {"0": []}
    for row in hw["per_iteration"]:
        assert row["dram_bw_util_mean_pct"] == pytest.approx(74.0)
        assert row["tensor_active_mean_pct"] == pytest.approx(53.0)
    assert hw["summary"]["dram_bw_util_mean_pct"]["p50"] == pytest.approx(74.0)
    assert "dram_bw_util" in str(r)  # the console's GPU table
    assert any(v is not None for v in hw["samples"]["dram_bw_util_pct"])
