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
    GPM_STAMP_SLACK_NS,
    gpm_idle_gap_ns,
    gpm_metric_names,
    gpm_phases,
    gpm_windows,
    phase_intervals,
    summarize,
    window_mean,
    windows_inside,
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
    # Iteration 15..65 ms, decode from 33 ms.
    hw = summarize(s, [_trace(15, 33, 65)], tokens_per_iteration=[2])
    row = hw["per_iteration"][0]
    # Windows (10,20]=20 overlaps 5 ms, (20,30]=30 10, (30,40]=40 10, (40,50]=50 10, (50,60]=60 10, (60,70]=70 5.
    expect = (20 * 5 + 30 * 10 + 40 * 10 + 50 * 10 + 60 * 10 + 70 * 5) / 50
    assert row["dram_bw_util_mean_pct"] == pytest.approx(expect)
    # Decode 33..65 ms: no window lies inside it at every lag the values may have (none could be
    # fitted to a ramp), so there is no decode figure rather than one diluted by the straddling
    # windows (overlap-weighted, they would give (40 * 7 + 50 * 10 + 60 * 10 + 70 * 5) / 32).
    assert row["dram_bw_util_decode_mean_pct"] is None
    assert hw["gpm_phases"]["decode"]["dram_bw_util_pct"]["lag_s"] is None
    assert "no lag could be fitted" in hw["gpm_phases"]["decode"]["dram_bw_util_pct"]["reason"]
    assert row["sm_active_mean_pct"] == pytest.approx(50.0)
    assert row["tensor_active_mean_pct"] is None  # not sampled
    assert hw["summary"]["dram_bw_util_decode_mean_pct"]["n"] == 0
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


# ---- decode figures from whole windows only ------------------------------------------------------
NAN = float("nan")


LAG_MS = 100.0  # as seen on an H200: a GPM value describes the window ending ~100 ms before its row


def _free_running(period_ms, until_ms, value_at, offset_ms=0.0, lag_ms=LAG_MS):
    """GPM rows every ``period_ms`` from ``offset_ms``; each window's value from ``value_at(start, end)``
    of the window ``lag_ms`` earlier (the first row holds no value, like the sampler's first GPM
    sample)."""
    ts = np.arange(offset_ms, until_ms, period_ms)
    vals = [NAN] + [value_at(a - lag_ms, b - lag_ms) for a, b in zip(ts[:-1], ts[1:])]
    return ts, vals


def _busy_fraction(a, b, busy):
    """Share of [a, b] ms inside the ``busy`` intervals."""
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in busy) / (b - a)


def _short_iterations(n=20, prefill_ms=10.0, decode_ms=180.0, gap_ms=60.0, start_ms=37.0):
    """Iterations of ``prefill_ms`` + ``decode_ms`` separated by ``gap_ms`` of idle time."""
    traces, decode = [], []
    t = start_ms
    for _ in range(n):
        first, end = t + prefill_ms, t + prefill_ms + decode_ms
        traces.append(_trace(t, first, end))
        decode.append((first, end))
        t = end + gap_ms
    return traces, decode, t


def test_windows_inside_whole_only():
    start = np.array([0, 100, 200, 300]) * MS
    end = np.array([100, 200, 300, 400]) * MS
    inside = windows_inside(start, end, [(50 * MS, 320 * MS), (299_500_000, 500 * MS)])
    # (0, 100] starts before the first interval; (300, 400] ends after it and starts less than the
    # stamp slack after the second begins.
    assert inside.tolist() == [-1, 0, 0, -1]
    assert windows_inside(start, end, [(50 * MS, 320 * MS), (299 * MS, 500 * MS)]).tolist() == [-1, 0, 0, 1]
    # A window whose stamped start is within the stamp slack of its phase's start is left out.
    assert windows_inside(start[1:2], end[1:2], [(100 * MS - GPM_STAMP_SLACK_NS + 1, 250 * MS)]).tolist() == [-1]
    assert windows_inside(start[1:2], end[1:2], [(100 * MS - GPM_STAMP_SLACK_NS, 250 * MS)]).tolist() == [0]


def test_phase_intervals():
    traces = [_trace(0, 10, 100), Trace(200 * MS, 300 * MS, np.zeros(0, dtype=np.int64))]
    assert phase_intervals(traces, "decode") == [(10 * MS, 100 * MS)]
    assert phase_intervals(traces, "iteration") == [(0, 100 * MS), (200 * MS, 300 * MS)]


def test_straddling_windows_no_longer_dilute_the_decode_figure():
    """Decode reads DRAM at 20% of peak, prefill at 10%, the idle time between iterations at 0%.
    Free-running 100 ms windows straddle the idle gaps: the old overlap-weighted decode mean read
    far below 20%; now only windows wholly inside a decode phase count, each reading 20%."""
    traces, decode, until = _short_iterations(n=20, decode_ms=180.0, gap_ms=100.0)
    prefill = [(t.host_start_ns / MS, t.host_marks_ns[0] / MS) for t in traces]

    def value(a, b):
        return 20.0 * _busy_fraction(a, b, decode) + 10.0 * _busy_fraction(a, b, prefill)

    ts, dram = _free_running(100.0, until + 100, value)
    s = _samples(ts, {"dram_bw_util_pct": dram})
    hw = summarize(s, traces, tokens_per_iteration=[16] * len(traces))
    fig = hw["gpm_phases"]["decode"]["dram_bw_util_pct"]
    assert fig["available"] and fig["reason"] is None
    assert fig["lag_s"] == pytest.approx(LAG_MS / 1e3, abs=0.006)  # fitted, on a 5 ms grid
    assert fig["pct"] == pytest.approx(20.0)  # undiluted
    assert fig["windows"] >= 5 and fig["covered_s"] == pytest.approx(fig["windows"] * 0.1)
    assert fig["phase_s"] == pytest.approx(20 * 0.18) and fig["window_s"] == pytest.approx(0.1)
    # Per iteration: only whole windows inside; iterations holding none have no decode figure.
    per = [r["dram_bw_util_decode_mean_pct"] for r in hw["per_iteration"]]
    assert all(v is None or v == pytest.approx(20.0) for v in per) and any(v is not None for v in per)
    assert hw["summary"]["dram_bw_util_decode_mean_pct"]["p50"] == pytest.approx(20.0)
    # The whole-iteration figures are kept (they include prefill and the windows' idle parts).
    assert hw["summary"]["dram_bw_util_mean_pct"]["p50"] < 18.0
    # What overlap weighting of straddling windows gave (the old decode figure): diluted.
    windows = gpm_windows(s.timestamps_ns, np.asarray(dram))
    diluted = [window_mean(*windows, int(a * MS), int(b * MS)) for a, b in decode]
    assert np.median(diluted) < 17.0
    # Windows taken as stamped, without the lag: inside decode by their stamps, still diluted.
    by_stamp = [v for a, b, v in zip(*windows) if any(s * MS <= a and b <= e * MS for s, e in decode)]
    assert by_stamp and np.mean(by_stamp) < 15.0


def test_decode_phases_shorter_than_a_window_are_unavailable_with_the_reason():
    traces, decode, until = _short_iterations(n=10, decode_ms=80.0, gap_ms=50.0)
    ts, dram = _free_running(100.0, until + 100, lambda a, b: 20.0 * _busy_fraction(a, b, decode))
    hw = summarize(_samples(ts, {"dram_bw_util_pct": dram}), traces, tokens_per_iteration=[8] * 10)
    fig = hw["gpm_phases"]["decode"]["dram_bw_util_pct"]
    assert not fig["available"] and fig["pct"] is None and fig["windows"] == 0
    assert fig["reason"].startswith("decode phases of 80 ms hold no whole 100 ms GPM window")
    assert "--max-new-tokens" in fig["reason"]
    assert all(r["dram_bw_util_decode_mean_pct"] is None for r in hw["per_iteration"])
    assert hw["summary"]["dram_bw_util_decode_mean_pct"]["n"] == 0


def test_long_iterations_still_give_the_decode_figure():
    # 900 ms decode phases hold 7 or 8 whole windows each.
    traces, decode, until = _short_iterations(n=4, prefill_ms=40.0, decode_ms=900.0, gap_ms=80.0)
    ts, dram = _free_running(100.0, until + 100, lambda a, b: 3.6 * _busy_fraction(a, b, decode), offset_ms=3.0)
    hw = summarize(_samples(ts, {"dram_bw_util_pct": dram, "sm_active_pct": [NAN] + [40.0] * (len(ts) - 1)}),
                   traces, tokens_per_iteration=[64] * 4)
    fig = hw["gpm_phases"]["decode"]["dram_bw_util_pct"]
    assert fig["available"] and fig["pct"] == pytest.approx(3.6) and fig["windows"] >= 4 * 6
    assert fig["ci95_pct"] == pytest.approx(0.0, abs=1e-9)
    assert hw["gpm_phases"]["decode"]["sm_active_pct"]["pct"] == pytest.approx(40.0)
    for r in hw["per_iteration"]:
        assert r["dram_bw_util_decode_mean_pct"] == pytest.approx(3.6)
    # The whole-iteration pooled figure: windows inside iterations, prefill included (0 here).
    assert hw["gpm_phases"]["iteration"]["dram_bw_util_pct"]["available"]


def test_gpm_phases_recomputed_from_a_saved_section():
    traces, decode, until = _short_iterations(n=6, decode_ms=250.0, gap_ms=70.0)
    ts, dram = _free_running(100.0, until + 100, lambda a, b: 20.0 * _busy_fraction(a, b, decode))
    hw = summarize(_samples(ts, {"dram_bw_util_pct": dram}), traces, tokens_per_iteration=[8] * 6)
    again = gpm_phases({"samples": hw["samples"], "devices": hw["devices"]}, traces)
    assert again["decode"]["dram_bw_util_pct"] == hw["gpm_phases"]["decode"]["dram_bw_util_pct"]


def test_gpu_counters_take_the_undiluted_decode_figure():
    traces, decode, until = _short_iterations(n=20, decode_ms=190.0, gap_ms=60.0)
    ts, dram = _free_running(100.0, until + 100, lambda a, b: 20.0 * _busy_fraction(a, b, decode))
    hw = summarize(_samples(ts, {"dram_bw_util_pct": dram}), traces, tokens_per_iteration=[8] * 20)
    r = fastprof.summarize_generation(traces, batch_size=1, prompt_len=8, config={"model": "x", "max_new_tokens": 8})
    r.hardware = hw
    c = r.gpu_counters()
    assert c["dram_bw_util_pct"] == pytest.approx(20.0) and c["phase"] == "decode"
    assert c["windows"]["dram_bw_util_pct"]["windows"] >= 5
    # A result written before the figures: recomputed from its samples.
    r.hardware = {k: v for k, v in hw.items() if k != "gpm_phases"}
    assert r.gpu_counters()["dram_bw_util_pct"] == pytest.approx(20.0)
    # Decode phases too short: no figure, the reason kept.
    traces, decode, until = _short_iterations(n=12, decode_ms=90.0, gap_ms=60.0)
    ts, dram = _free_running(100.0, until + 100, lambda a, b: 20.0 * _busy_fraction(a, b, decode))
    r = fastprof.summarize_generation(traces, batch_size=1, prompt_len=8, config={"model": "x", "max_new_tokens": 8})
    r.hardware = summarize(_samples(ts, {"dram_bw_util_pct": dram}), traces, tokens_per_iteration=[8] * 12)
    c = r.gpu_counters()
    assert "dram_bw_util_pct" not in c and "no whole 100 ms GPM window" in c["windows"]["dram_bw_util_pct"]["reason"]


def test_short_iterations_back_to_back_leave_no_lag_to_fit_until_the_gpu_idles_between_them():
    """Compiled decode of 80 tokens: 257 ms decode phases, one after the other with 15 ms between
    them (a collection of a frozen heap is that quick), the counter's windows within 5% of their
    mean. Nothing tells busy from idle time, the lag
    cannot be fitted, and no window fits a phase at every lag up to 250 ms: no decode figure. With
    the idle time gpm_idle_gap_ns asks for between iterations, the lag is fitted and the phases hold
    whole windows again."""
    period = 100 * MS
    assert gpm_idle_gap_ns(257 * MS, period) == 150 * MS
    assert gpm_idle_gap_ns(400 * MS, period) == 0  # a whole window at every lag: nothing to fit

    def decode_figure(gap_ms):
        rng = np.random.default_rng(0)  # the counter reads within 5% of its mean from window to window
        traces, decode, until = _short_iterations(n=20, prefill_ms=10.0, decode_ms=257.0, gap_ms=gap_ms)
        prefill = [(t.host_start_ns / MS, t.host_marks_ns[0] / MS) for t in traces]
        ts, dram = _free_running(100.0, until + 100, lambda a, b: (17.0 * _busy_fraction(a, b, decode)
                                 + 30.0 * _busy_fraction(a, b, prefill)) * np.exp(rng.normal(0, 0.05)))
        hw = summarize(_samples(ts, {"dram_bw_util_pct": dram}), traces, tokens_per_iteration=[80] * 20)
        return hw["gpm_phases"]["decode"]["dram_bw_util_pct"]

    tight = decode_figure(15.0)
    assert not tight["available"] and "no lag could be fitted" in tight["reason"]
    idle = decode_figure(gpm_idle_gap_ns(257 * MS, period) / MS)
    assert idle["available"] and idle["pct"] == pytest.approx(17.0, rel=0.03)
    assert idle["lag_s"] == pytest.approx(LAG_MS / 1e3, abs=0.006) and idle["windows"] >= 10


def test_the_sampling_instrument_leaves_the_gpu_idle_between_short_iterations():
    from fastprof.measure.driver import _Sampling

    inst = _Sampling({"available": False, "reason": "no GPU here"}, 10, "auto")
    assert inst.gpm_period_ns is None  # no GPM-capable GPU: never waits
    inst.iteration_end(0, _trace(0, 10, 267))
    assert inst.idle_ns == 0

    inst.gpm_period_ns = 100 * MS  # as on an H200
    inst.iteration_end(0, _trace(0, 10, 267))  # a decode phase of 256 ms
    assert inst.idle_ns == 150 * MS
    t0 = time.monotonic_ns()
    inst.iteration_begin(1)
    assert time.monotonic_ns() - t0 >= 140 * MS
    # time already spent since the last iteration ended (by any measurement) counts
    inst.iteration_end(1, _trace(0, 10, 267))
    time.sleep(0.1)
    t0 = time.monotonic_ns()
    inst.iteration_begin(2)
    assert time.monotonic_ns() - t0 < 90 * MS
    long = _Sampling({"available": False, "reason": "no GPU here"}, 10, "auto")
    long.gpm_period_ns = 100 * MS
    long.iteration_end(0, _trace(0, 10, 500))
    assert long.idle_ns == 0


def test_gpm_capable_asks_torch_for_a_hopper_or_newer_nvidia_gpu(monkeypatch):
    import sys

    from fastprof import _torch

    def fake_torch(capability, hip=None, initialized=True):
        cuda = SimpleNamespace(is_available=lambda: True, is_initialized=lambda: initialized,
                               get_device_capability=lambda i: capability)
        return SimpleNamespace(cuda=cuda, version=SimpleNamespace(hip=hip, cuda="13.0"))

    monkeypatch.setitem(sys.modules, "torch", fake_torch((9, 0)))
    assert _torch.gpm_capable(0)
    monkeypatch.setitem(sys.modules, "torch", fake_torch((8, 0)))
    assert not _torch.gpm_capable(0)  # Ampere: no GPM
    monkeypatch.setitem(sys.modules, "torch", fake_torch((9, 4), hip="6.2"))
    assert not _torch.gpm_capable(0)  # ROCm torch says "cuda" too
    monkeypatch.setitem(sys.modules, "torch", fake_torch((9, 0), initialized=False))
    assert not _torch.gpm_capable(0)  # never initialises CUDA itself
    monkeypatch.delitem(sys.modules, "torch")
    assert not _torch.gpm_capable(0)
