"""GPU performance counters (NVML GPM) in the sampler, on the fake NVML (no GPU needed)."""

import time

import numpy as np
import pytest

from fastprof.capture.sampler import FIELDS, GPM_FIELDS, Sampler, SamplerResult
from sampler_fixtures import (  # noqa: F401  (fixtures)
    FakeNvml,
    fake_amdsmi,
    fake_amdsmi_path,
    fake_nvml,
    fake_nvml_no_gpm_path,
    fake_nvml_path,
)

# nvml.h's NVML_GPM_METRIC_* ids of the six GPM fields, in field order.
METRIC_IDS = {"dram_bw_util_pct": 10, "sm_active_pct": 2, "sm_occupancy_pct": 3, "tensor_active_pct": 5,
              "tensor_hmma_active_pct": 7, "fp16_active_pct": 13}


def _run(seconds, **kw) -> SamplerResult:
    s = Sampler(**kw)
    s.start()
    time.sleep(seconds)
    return s.stop()


def _gpm_rows(r: SamplerResult, device: int = 0) -> np.ndarray:
    """Rows of `device` in which a GPM sample was taken: the first has no window yet (NaN)."""
    return np.flatnonzero(r.device == device)


def test_gpm_fields_are_sampler_fields():
    assert set(GPM_FIELDS) <= set(FIELDS) and len(GPM_FIELDS) == 6 and set(METRIC_IDS) == set(GPM_FIELDS)


def test_gpm_values_between_consecutive_samples_on_their_own_period(fake_nvml):
    fake_nvml.gpm_set(0, 10, 74.0)  # DRAM bandwidth
    fake_nvml.gpm_set(0, 5, 53.0)   # any tensor
    r = _run(1.0, interval_ms=2, devices=["0"], backend="nvml")
    assert r.ok and r.unavailable == {"0": []}
    dram = r.dram_bw_util_pct
    got = np.isfinite(dram)
    # Every GPM field is read in the same rows: every 100 ms by default, not every 2 ms sample.
    for name in GPM_FIELDS:
        assert np.array_equal(np.isfinite(r.fields[name]), got), name
    assert np.all(dram[got] == 74.0) and np.all(r.tensor_active_pct[got] == 53.0)
    for name, mid in METRIC_IDS.items():
        if mid not in (10, 5):
            assert np.all(r.fields[name][got] == mid + 0.5), name  # the fake's default: id + 0.5
    n_windows = int(got.sum())
    assert 0.7 * 1000 / 100 <= n_windows <= 1000 / 100 + 2, n_windows
    assert np.isnan(dram[0])  # the first GPM sample opens the first window
    gaps_ms = np.diff(r.timestamps_ns[got]) / 1e6
    assert np.median(gaps_ms) == pytest.approx(100, abs=5)
    # One GPM sample per read (the first included), one metrics call per window, always on two
    # consecutive samples of the device.
    assert fake_nvml.calls("nvmlGpmSampleGet") == n_windows + 1
    assert fake_nvml.gpm_metrics_calls() == n_windows
    assert fake_nvml.gpm_bad_pairs() == 0
    assert fake_nvml.gpm_last_num_metrics() == 6
    # The two sample buffers are freed at stop.
    assert fake_nvml.gpm_live_samples() == 0
    assert fake_nvml.calls("nvmlGpmSampleAlloc") == 2


def test_gpm_window_is_the_time_since_the_previous_gpm_sample(fake_nvml):
    fake_nvml.gpm_elapsed(0, 10)  # the fake reports the window's length in ms as DRAM utilisation
    r = _run(0.4, interval_ms=2, devices=["0"], backend="nvml", field_periods_ms={f: 30 for f in GPM_FIELDS})
    assert r.ok
    got = np.isfinite(r.dram_bw_util_pct)
    window_ms = r.dram_bw_util_pct[got]
    assert window_ms.size >= 8
    assert np.median(window_ms) == pytest.approx(30, abs=3)
    # Each window ends at its row and starts at the previous GPM row (the read takes microseconds).
    gaps_ms = np.diff(r.timestamps_ns[got]) / 1e6
    assert np.allclose(window_ms[1:], gaps_ms, atol=1.0)


def test_gpm_every_sample_when_asked(fake_nvml):
    r = _run(0.1, interval_ms=5, devices=["0"], backend="nvml", field_periods_ms={f: 0 for f in FIELDS})
    assert r.ok
    assert np.isnan(r.dram_bw_util_pct[0]) and np.all(np.isfinite(r.dram_bw_util_pct[1:]))


def test_gpm_unsupported_device_lists_the_fields_as_unavailable(fake_nvml):
    fake_nvml.set(0, "gpm_supported", 0)
    r = _run(0.1, interval_ms=5, devices=["0"], backend="nvml")
    assert r.ok
    assert sorted(r.unavailable["0"]) == sorted(GPM_FIELDS)
    for name in GPM_FIELDS:
        assert np.all(np.isnan(r.fields[name]))
    assert np.all(np.isfinite(r.power_w))  # the other fields are unaffected
    assert fake_nvml.calls("nvmlGpmSampleAlloc") == 0 and fake_nvml.calls("nvmlGpmSampleGet") == 0


def test_gpm_support_query_failure_is_unavailable(fake_nvml):
    fake_nvml.unsupported("nvmlGpmQueryDeviceSupport")
    r = _run(0.05, interval_ms=5, devices=["0"], backend="nvml")
    assert r.ok and sorted(r.unavailable["0"]) == sorted(GPM_FIELDS)


def test_gpm_sample_not_supported_is_marked_once(fake_nvml):
    fake_nvml.unsupported("nvmlGpmSampleGet")
    r = _run(0.15, interval_ms=2, devices=["0"], backend="nvml", field_periods_ms={f: 0 for f in GPM_FIELDS})
    assert r.ok and r.n_samples >= 20
    assert fake_nvml.calls("nvmlGpmSampleGet") == 1
    assert sorted(r.unavailable["0"]) == sorted(GPM_FIELDS)
    assert fake_nvml.gpm_live_samples() == 0


def test_one_unsupported_metric_is_dropped_from_later_requests(fake_nvml):
    fake_nvml.gpm_unsupported(0, 13)  # FP16 pipe
    r = _run(0.15, interval_ms=5, devices=["0"], backend="nvml", field_periods_ms={f: 20 for f in GPM_FIELDS})
    assert r.ok
    assert r.unavailable["0"] == ["fp16_active_pct"]
    assert np.all(np.isnan(r.fp16_active_pct))
    assert np.isfinite(r.sm_active_pct).sum() >= 3
    assert fake_nvml.gpm_last_num_metrics() == 5


def test_driver_without_gpm_entry_points(fake_nvml_no_gpm_path, monkeypatch):
    monkeypatch.setenv("FASTPROF_NVML_LIBRARY", str(fake_nvml_no_gpm_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml(fake_nvml_no_gpm_path)
    fake.reset()
    r = _run(0.1, interval_ms=5, devices=["0"], backend="nvml")
    assert r.ok, r.reason
    assert sorted(r.unavailable["0"]) == sorted(GPM_FIELDS)
    assert np.all(np.isnan(r.dram_bw_util_pct)) and np.all(np.isfinite(r.power_w))


def test_gpm_on_several_devices(fake_nvml):
    fake_nvml.set_device_count(2)
    fake_nvml.gpm_set(1, 10, 33.0)
    fake_nvml.gpm_unsupported(1, 3)
    r = _run(0.2, interval_ms=5, devices=["0", "1"], backend="nvml", field_periods_ms={f: 20 for f in GPM_FIELDS})
    assert r.ok
    d0, d1 = r.for_device(0), r.for_device(1)
    assert np.all(d0["dram_bw_util_pct"][np.isfinite(d0["dram_bw_util_pct"])] == 10.5)
    dram1 = d1["dram_bw_util_pct"][np.isfinite(d1["dram_bw_util_pct"])]
    assert dram1.size >= 3 and np.all(dram1 == 33.0)
    assert np.all(d1["sm_active_pct"][np.isfinite(d1["sm_active_pct"])] == 2 + 0.5 + 1)
    assert r.unavailable == {"0": [], "1": ["sm_occupancy_pct"]}
    assert fake_nvml.gpm_bad_pairs() == 0  # a device's window never pairs with another's sample


def test_gpm_period_is_configurable_and_validated(fake_nvml):
    s = Sampler(interval_ms=5, devices=["0"], backend="nvml", field_periods_ms={"dram_bw_util_pct": 50})
    assert s.field_periods_ms["dram_bw_util_pct"] == 50
    assert s.field_periods_ms["sm_active_pct"] == 100  # the default


def test_amdsmi_lists_gpm_fields_unavailable(fake_amdsmi):
    r = _run(0.05, interval_ms=5, devices=[0], backend="amdsmi")
    assert r.ok
    assert set(GPM_FIELDS) <= set(r.unavailable["0"])
