"""The GPU sampler on the fake NVML, AMD SMI and xpu-smi (no GPU needed)."""

import json
import math
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fastprof import _core
from fastprof.capture.sampler import FIELDS, Sampler, SamplerResult, cuda_visible_to_nvml
from sampler_fixtures import (  # noqa: F401  (fixtures)
    fake_amdsmi,
    fake_amdsmi_path,
    fake_nvml,
    fake_nvml_path,
    fake_xpu_smi,
)


def _run(seconds, **kw) -> SamplerResult:
    s = Sampler(**kw)
    s.start()
    time.sleep(seconds)
    return s.stop()


def test_fields_and_values_from_the_fake(fake_nvml):
    fake_nvml.set(0, "util_gpu", 77)
    fake_nvml.set(0, "power_instant_mw", 312_500)
    # Every field read every sample here; the default periods are tested below.
    r = _run(0.2, interval_ms=5, devices=["0"], backend="nvml", field_periods_ms={f: 0 for f in FIELDS})
    assert r.reason is None and r.ok
    assert FIELDS == tuple(_core.sampler_fields()) and set(r.fields) == set(FIELDS)
    assert r.timestamps_ns.dtype == np.int64 and r.power_w.dtype == np.float64
    assert r.n_samples >= 10
    assert np.all(r.gpu_util_pct == 77)
    assert np.all(r.mem_util_pct == 20)
    assert np.all(r.mem_total_bytes == 80 * 2**30)
    assert np.all(r.proc_mem_bytes == 512 * 2**20)  # this process, found by pid
    assert np.all(r.other_processes == 1)  # the fake lists one process besides this one
    assert np.all(r.power_w == 312.5) and np.all(r.power_avg_w == 240.0)
    assert np.all(r.sm_clock_mhz == 1980) and np.all(r.mem_clock_mhz == 2619)
    assert np.all(r.temperature_c == 45) and np.all(r.throttle_reasons == 4)
    assert r.devices[0]["uuid"].startswith("GPU-fa4e") and r.devices[0]["power_source"] == "instant"
    assert r.unavailable == {"0": []}
    assert r.start_ns <= r.timestamps_ns[0] and r.timestamps_ns[-1] <= r.stop_ns
    assert 0 < r.thread_cpu_ns < (r.stop_ns - r.start_ns)
    json.dumps(r.to_dict())  # JSON-ready


def test_slow_fields_are_read_on_their_own_period(fake_nvml):
    mem_calls, temp_calls = fake_nvml.calls("nvmlDeviceGetMemoryInfo"), fake_nvml.calls("nvmlDeviceGetTemperature")
    r = _run(0.5, interval_ms=2, devices=["0"], backend="nvml")
    n = r.n_samples
    assert n >= 100
    assert np.isfinite(r.power_w).all() and np.isfinite(r.throttle_reasons).all()  # every sample
    mem = np.isfinite(r.mem_used_bytes)
    temp = np.isfinite(r.temperature_c)
    assert mem[0] and temp[0]  # the first sample reads everything
    # memory every 10 ms (every 5th sample at 2 ms), temperature every 100 ms
    assert n / 5 * 0.7 <= mem.sum() <= n / 5 * 1.3 + 1
    assert 3 <= temp.sum() <= 8
    assert fake_nvml.calls("nvmlDeviceGetMemoryInfo") - mem_calls == mem.sum()
    assert fake_nvml.calls("nvmlDeviceGetTemperature") - temp_calls == temp.sum()
    # The gaps between reads of a slow field follow its period, not the sampling interval.
    gaps_ms = np.diff(r.timestamps_ns[temp]) / 1e6
    assert np.all(gaps_ms >= 95)


def test_field_periods_are_validated(fake_nvml):
    with pytest.raises(ValueError, match="unknown sampler field"):
        Sampler(interval_ms=5, devices=["0"], backend="nvml", field_periods_ms={"bogus": 1})
    s = Sampler(interval_ms=5, devices=["0"], backend="nvml", field_periods_ms={"temperature_c": 20})
    assert s.field_periods_ms["temperature_c"] == 20 and s.field_periods_ms["power_w"] == 0


def test_interval_accuracy_and_order(fake_nvml):
    r = _run(1.0, interval_ms=10, devices=["0"], backend="nvml")
    ts = r.timestamps_ns
    assert np.all(np.diff(ts) > 0)
    med = np.median(np.diff(ts)) / 1e6
    assert 8.5 <= med <= 12.0, med
    # Absolute schedule: about 100 samples in 1 s, not fewer from drift.
    assert 80 <= r.n_samples <= 105


def test_interval_validation():
    for bad in (0.5, 0, 1001, -3):
        with pytest.raises(ValueError):
            Sampler(interval_ms=bad, devices=["0"], backend="nvml")
    with pytest.raises(ValueError):
        Sampler(devices=["0"], backend="cuda")
    with pytest.raises(ValueError):  # the native layer validates too
        _core.Sampler("nvml", ["0"], 500_000, 16, 100_000_000)


def test_start_stop_many_times(fake_nvml):
    s = Sampler(interval_ms=1, devices=["0"], backend="nvml")
    for _ in range(25):
        s.start()
        assert s.running
        with pytest.raises(Exception, match="already running"):
            s.start()
        time.sleep(0.005)
        r = s.stop()
        assert not s.running and r.ok and r.n_samples >= 1
    assert fake_nvml.init_calls() == 25 and fake_nvml.shutdown_calls() == 25


def test_bounded_memory_counts_drops(fake_nvml):
    r = _run(0.3, interval_ms=1, devices=["0"], backend="nvml", max_samples=50)
    assert r.n_samples == 50
    assert r.dropped > 50
    # The newest rows are the ones kept, in order.
    assert np.all(np.diff(r.timestamps_ns) > 0)
    assert r.timestamps_ns[-1] > r.stop_ns - 50_000_000


def test_unsupported_field_is_marked_once_and_not_read_again(fake_nvml):
    fake_nvml.unsupported("nvmlDeviceGetTemperature")
    fake_nvml.unsupported("nvmlDeviceGetFieldValues")
    r = _run(0.2, interval_ms=2, devices=["0"], backend="nvml")
    assert r.ok
    assert fake_nvml.calls("nvmlDeviceGetTemperature") == 1
    assert fake_nvml.calls("nvmlDeviceGetFieldValues") == 1
    assert "temperature_c" in r.unavailable["0"] and "power_instant" in r.unavailable["0"]
    assert np.all(np.isnan(r.temperature_c))
    # Without the instantaneous field, power falls back to the averaged reading.
    assert np.all(r.power_w == 240.0)
    assert r.devices[0]["power_source"] == "average"
    # Utilisation, read every 10 ms by default, is still read all along (about 20 times in 0.2 s;
    # a loaded machine under a sanitizer reads it a little less often).
    assert fake_nvml.calls("nvmlDeviceGetUtilizationRates") >= 10


def test_energy_on_slow_cadence_does_not_delay_fast_samples(fake_nvml):
    fake_nvml.delay_us("nvmlDeviceGetTotalEnergyConsumption", 20_000)
    r = _run(1.0, interval_ms=2, devices=["0"], backend="nvml", energy_interval_ms=100)
    assert r.ok
    gaps = np.diff(r.timestamps_ns) / 1e6
    assert 1.7 <= np.median(gaps) <= 2.6, np.median(gaps)
    # A 20 ms energy read on the fast path would leave 20 ms holes every 100 ms.
    assert np.percentile(gaps, 95) < 10, np.percentile(gaps, 95)
    assert r.n_samples >= 300
    e_ts = r.energy_timestamps_ns
    assert 6 <= e_ts.size <= 14  # start, ~every 100 ms, stop
    assert np.all(np.diff(r.energy_mj) > 0)
    assert e_ts[0] - r.start_ns < 60_000_000  # read once at start
    assert r.stop_ns - e_ts[-1] < 60_000_000  # and once at stop
    assert r.energy_joules() == pytest.approx((r.energy_mj[-1] - r.energy_mj[0]) / 1000)


def test_several_devices_and_identifiers(fake_nvml):
    fake_nvml.set_device_count(3)
    ids = ["GPU-fa4e0000-0000-0000-0000-000000000002", "00000000:11:00.0", "0"]
    r = _run(0.15, interval_ms=5, devices=ids, backend="nvml")
    assert r.ok, r.reason
    assert [d["uuid"][-1] for d in r.devices] == ["2", "1", "0"]
    for i, expect in enumerate([42, 41, 40]):  # util_gpu is 40 + index
        d = r.for_device(i)
        util = d["gpu_util_pct"][np.isfinite(d["gpu_util_pct"])]  # read every 10 ms
        assert util.size >= 2 and np.all(util == expect)
        assert np.all(np.diff(d["timestamps_ns"]) > 0)
    assert set(np.unique(r.energy_device)) == {0, 1, 2}


def test_unknown_device_gives_reason(fake_nvml):
    r = _run(0.05, devices=["GPU-does-not-exist"], backend="nvml")
    assert r.n_samples == 0
    assert "nvmlDeviceGetHandleByUUID(GPU-does-not-exist) failed: Not Found" in r.reason


def test_init_failure_gives_reason(fake_nvml):
    fake_nvml.fail_init(9)
    s = Sampler(devices=["0"], backend="nvml")
    s.start()
    r = s.stop()
    assert r.n_samples == 0 and not r.ok
    assert "nvmlInit_v2 failed: Driver Not Loaded (9)" in r.reason


def test_missing_library_gives_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTPROF_NVML_LIBRARY", str(tmp_path / "no-such-libnvidia-ml.so"))
    r = _run(0.02, devices=["0"], backend="nvml")
    assert r.n_samples == 0
    assert "could not load the NVIDIA management library" in r.reason and "FASTPROF_NVML_LIBRARY" in r.reason


def test_device_lost_stops_cleanly_and_keeps_samples(fake_nvml):
    fake_nvml.lose_after(0, 20)
    s = Sampler(interval_ms=1, devices=["0"], backend="nvml", field_periods_ms={f: 0 for f in FIELDS})
    s.start()
    deadline = time.monotonic() + 5
    while s.sample_count < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    r = s.stop()
    assert r.n_samples == 20
    assert "device 0 was lost" in r.reason and "GPU is lost (15)" in r.reason


def test_exception_inside_with_block_stops_the_sampler(fake_nvml):
    s = Sampler(interval_ms=2, devices=["0"], backend="nvml")
    with pytest.raises(RuntimeError, match="boom"):
        with s:
            time.sleep(0.02)
            raise RuntimeError("boom")
    assert not s.running
    assert s.result is not None and s.result.n_samples >= 1
    assert fake_nvml.shutdown_calls() == 1


def test_interpreter_exit_stops_running_sampler(fake_nvml_path, tmp_path):
    marker = tmp_path / "calls.txt"
    code = textwrap.dedent(f"""
        import atexit, ctypes, time
        lib = ctypes.CDLL({str(fake_nvml_path)!r})
        lib.fake_nvml_shutdown_calls.restype = ctypes.c_long
        def report():  # registered before the sampler's handler, so it runs after it
            open({str(marker)!r}, "w").write(str(lib.fake_nvml_shutdown_calls()))
        atexit.register(report)
        from fastprof.capture.sampler import Sampler
        s = Sampler(interval_ms=1, devices=["0"], backend="nvml")
        s.start()
        time.sleep(0.05)
        print("exiting", flush=True)
    """)
    env = dict(os.environ, FASTPROF_NVML_LIBRARY=str(fake_nvml_path))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "exiting" in p.stdout
    assert marker.read_text() == "1"


def test_amdsmi_fake(fake_amdsmi):
    fake_amdsmi.unsupported("amdsmi_get_clock_info")
    r = _run(0.2, interval_ms=5, devices=[0, 1], backend="amdsmi")
    assert r.ok, r.reason
    assert r.backend == "amdsmi"
    d1 = r.for_device(1)
    assert np.all(d1["gpu_util_pct"] == 71) and np.all(d1["mem_util_pct"] == 31)
    assert np.all(d1["mem_used_bytes"] == 2 * 2**30) and np.all(d1["mem_total_bytes"] == 192 * 2**30)
    assert np.all(d1["power_w"] == 501) and np.all(np.isnan(d1["power_avg_w"]))
    assert np.all(d1["temperature_c"] == 56)  # the hotspot sensor
    assert np.all(np.isnan(d1["sm_clock_mhz"]))
    assert "sm_clock_mhz" in r.unavailable["1"] and "throttle_reasons" in r.unavailable["1"]
    assert fake_amdsmi.calls("amdsmi_get_clock_info") == 4  # once per clock and device, then skipped
    e = r.energy_mj[r.energy_device == 0]
    assert e.size >= 2 and np.all(np.diff(e) == pytest.approx(1000 * 15.3 / 1000, rel=1e-5))


def test_xpusmi_fake(fake_xpu_smi):
    s = Sampler(interval_ms=10, devices=[0, 1], backend="xpusmi")
    s.start()
    time.sleep(0.5)
    r = s.stop()
    assert r.ok, r.reason
    pid_text, _, argv = fake_xpu_smi.read_text().strip().partition(" ")
    assert argv.split() == ["dump", "-d", "0,1", "-m", "0,1,2,3,5,8,18", "-i", "1"]
    assert r.n_samples >= 10
    assert set(np.unique(r.device)) == {0, 1}
    assert np.all(np.diff(r.timestamps_ns) > 0)
    assert np.all(r.gpu_util_pct == 55.5) and np.all(r.power_w == 120.25) and np.all(r.sm_clock_mhz == 1600)
    assert np.all(r.mem_used_bytes == 2048 * 2**20) and np.all(r.mem_util_pct == 12.5)
    assert np.all(np.isnan(r.temperature_c))  # N/A
    assert "temperature_c" in r.unavailable["0"]
    assert r.energy_mj.size >= 10 and r.energy_mj[0] == pytest.approx(1000.5 * 1000)
    # The child was killed and reaped.
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_text), 0)


def test_xpusmi_failure_gives_reason(fake_xpu_smi, monkeypatch):
    monkeypatch.setenv("FAKE_XPU_SMI_FAIL", "1")
    s = Sampler(devices=[0], backend="xpusmi")
    s.start()
    time.sleep(0.3)
    r = s.stop()
    assert "exited with status 1" in r.reason and "Level Zero" in r.reason


def test_xpusmi_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTPROF_XPU_SMI", str(tmp_path / "xpu-smi"))
    r = _run(0.02, devices=[0], backend="xpusmi")
    assert "could not find the xpu-smi executable" in r.reason


def test_auto_picks_the_library_that_loads(fake_amdsmi, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTPROF_NVML_LIBRARY", str(tmp_path / "missing.so"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    r = _run(0.05, devices=["0"], backend="auto")
    assert r.ok and r.backend == "amdsmi"


# ---- CUDA_VISIBLE_DEVICES -> NVML ----

def test_mapping_with_pci_bus_id_order():
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert cuda_visible_to_nvml([0, 1], env) == ["0", "1"]
    env["CUDA_VISIBLE_DEVICES"] = "3,1"
    assert cuda_visible_to_nvml([0, 1], env) == ["3", "1"]
    assert cuda_visible_to_nvml(1, env) == ["1"]
    with pytest.raises(ValueError, match="not visible"):
        cuda_visible_to_nvml([2], env)


def test_mapping_with_uuids_and_mig():
    env = {"CUDA_VISIBLE_DEVICES": "GPU-8f3e2a10-1111-2222-3333-444455556666,MIG-abcd-1234,5"}
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    assert cuda_visible_to_nvml([0, 1, 2], env) == ["GPU-8f3e2a10-1111-2222-3333-444455556666", "MIG-abcd-1234", "5"]
    # Entries after an invalid one are not visible to CUDA.
    env = {"CUDA_VISIBLE_DEVICES": "2,-1,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert cuda_visible_to_nvml([0], env) == ["2"]
    with pytest.raises(ValueError):
        cuda_visible_to_nvml([1], env)


def test_mapping_uses_torch_uuid_without_pci_order(monkeypatch):
    import fastprof.capture.sampler as smod

    monkeypatch.setattr(smod, "_from_torch", lambda o: f"GPU-0000000{o}-aaaa-bbbb-cccc-ddddeeeeffff")
    assert cuda_visible_to_nvml([0, 1], {}) == ["GPU-00000000-aaaa-bbbb-cccc-ddddeeeeffff",
                                                "GPU-00000001-aaaa-bbbb-cccc-ddddeeeeffff"]
    # A UUID prefix in CUDA_VISIBLE_DEVICES is completed through torch.
    env = {"CUDA_VISIBLE_DEVICES": "GPU-00000001"}
    monkeypatch.setattr(smod, "_from_torch", lambda o: "GPU-00000001-aaaa-bbbb-cccc-ddddeeeeffff")
    assert cuda_visible_to_nvml([0], env) == ["GPU-00000001-aaaa-bbbb-cccc-ddddeeeeffff"]
    # Integers without PCI order go through torch as well, never straight to NVML's numbering.
    env = {"CUDA_VISIBLE_DEVICES": "1"}
    assert cuda_visible_to_nvml([0], env) == ["GPU-00000001-aaaa-bbbb-cccc-ddddeeeeffff"]


def test_mapping_without_torch_or_pci_order_refuses_to_guess(monkeypatch):
    import fastprof.capture.sampler as smod

    monkeypatch.setattr(smod, "_from_torch", lambda o: None)
    with pytest.raises(ValueError, match="PCI_BUS_ID"):
        cuda_visible_to_nvml([0], {})


def test_sampler_maps_ordinals_through_cuda_visible_devices(fake_nvml, monkeypatch):
    fake_nvml.set_device_count(3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    s = Sampler(devices=[0], backend="nvml", interval_ms=5)
    assert s.devices == ["2"]
    with s:
        time.sleep(0.03)
    assert s.result.devices[0]["uuid"].endswith("2")
    util = s.result.gpu_util_pct[np.isfinite(s.result.gpu_util_pct)]
    assert util.size >= 1 and np.all(util == 42)


def test_other_processes_appearing_on_the_gpu(fake_nvml):
    """The count of other compute processes follows the driver's list as it changes."""
    fake_nvml.set(0, "other_procs", 0)
    s = Sampler(interval_ms=2, devices=["0"], backend="nvml", field_periods_ms={"other_processes": 0})
    s.start()
    time.sleep(0.1)
    fake_nvml.set(0, "other_procs", 3)
    time.sleep(0.1)
    fake_nvml.set(0, "other_procs", 0)
    time.sleep(0.1)
    r = s.stop()
    fake_nvml.set(0, "other_procs", 1)
    seen = r.other_processes[np.isfinite(r.other_processes)]
    assert seen[0] == 0 and seen.max() == 3 and seen[-1] == 0
    assert set(np.unique(seen)) == {0, 3}
    from fastprof.analysis.stalls import process_events

    ev = process_events(r.timestamps_ns, r.other_processes, 2_000_000)
    assert len(ev) == 1 and ev[0]["detail"] == {"other_processes": 3, "at_start": 0}
    assert 0.08e9 <= ev[0]["end_ns"] - ev[0]["start_ns"] <= 0.2e9
