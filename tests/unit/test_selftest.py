"""`fastprof selftest` and the spin kernel, on the host and on the fake GPU driver."""

import argparse
import ctypes
import json
import re
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

import fastprof
from fastprof import _core
from fastprof.capture import selftest
from fastprof.cli import selftest as selftest_cli
from sampler_fixtures import fake_nvml, fake_nvml_path  # noqa: F401  (fixtures)

from conftest import fake_library


def run_selftest(argv):
    parser = argparse.ArgumentParser()
    selftest_cli.add_arguments(parser)
    return selftest_cli.main(parser.parse_args(argv))


def load(path):
    return json.loads(path.read_text())


def checks_by_name(report):
    return {c["name"]: c for c in report["checks"]}


def spin_lines(report):
    return [c for c in report["checks"] if c["group"] == "spin"]


def setup_fake(fake_gpu):
    lib = fake_gpu.lib
    lib.fake_gpu_last_launch_ns.restype = ctypes.c_uint64
    lib.fake_gpu_launches.restype = ctypes.c_long
    lib.fake_gpu_live_modules.restype = ctypes.c_int
    return lib


# ---- the command: options and the host part --------------------------------------------------

def test_options_and_defaults():
    parser = argparse.ArgumentParser()
    selftest_cli.add_arguments(parser)
    args = parser.parse_args([])
    assert args.output == "fastprof-selftest.json"
    assert args.device == "auto"
    assert args.strict is False


def test_host_only_runs_host_checks_and_skips_the_gpu(tmp_path, capsys):
    out = tmp_path / "st.json"
    assert run_selftest(["--device", "cpu", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pass" in text and "skipped" in text
    assert "GPU checks skipped: host only (--device cpu)" in text
    report = load(out)
    assert report["kind"] == "selftest" and report["schema_version"] == selftest.SCHEMA_VERSION
    assert report["device"] is None and report["device_reason"] == "host only (--device cpu)"
    by = checks_by_name(report)
    host = [c for c in report["checks"] if c["group"] == "host"]
    assert len(host) == 5
    assert all(c["status"] in ("pass", "warn") for c in host)
    assert all(c["value"] is None or c["value"] > 0 for c in host)
    assert by["host clock read, native"]["data"]["reads"] == 1_000_000
    gpu = [c for c in report["checks"] if c["group"] != "host"]
    assert len(gpu) == len(selftest.GPU_LINES)
    assert all(c["status"] == "skipped" and c["value"] is None for c in gpu)
    assert report["counts"]["skipped"] == len(gpu)
    assert report["counts"]["pass"] + report["counts"]["warn"] == 5


def test_no_driver_skips_the_gpu_with_the_reason_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASTPROF_CUDA_LIBRARY", str(tmp_path / "no-such-libcuda.so"))
    out = tmp_path / "st.json"
    assert run_selftest(["--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "GPU checks skipped: no usable GPU: could not load the CUDA driver" in text
    report = load(out)
    assert report["device"] is None
    assert report["device_reason"].startswith("no usable GPU: could not load the CUDA driver")
    assert "no-such-libcuda.so" in report["device_error"]
    assert all(c["status"] == "skipped" for c in report["checks"] if c["group"] != "host")


def test_json_is_written_atomically_and_replaces_an_old_file(tmp_path):
    out = tmp_path / "sub" / "st.json"
    out.parent.mkdir()
    out.write_text("old")
    assert run_selftest(["--device", "cpu", "-o", str(out)]) == 0
    assert load(out)["kind"] == "selftest"
    assert [p.name for p in out.parent.iterdir()] == ["st.json"]  # no temporary file left


def test_bad_device_is_a_usage_error(tmp_path, capsys):
    assert run_selftest(["--device", "tpu", "-o", str(tmp_path / "x.json")]) == 2
    assert "unsupported device 'tpu'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_strict_turns_a_warning_into_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(selftest, "MARK_HOST_MAX_NS", 0)
    assert run_selftest(["--device", "cpu", "-o", str(tmp_path / "a.json")]) == 0
    assert "warn" in capsys.readouterr().out
    assert run_selftest(["--device", "cpu", "--strict", "-o", str(tmp_path / "b.json")]) == 1
    assert checks_by_name(load(tmp_path / "b.json"))["mark(), host clock only"]["status"] == "warn"


def test_measure_clock_native():
    m = _core.measure_clock(10_000)
    assert m["reads"] == 10_000
    assert 0 < m["read_cost_ns"] < 100_000
    assert m["min_step_ns"] >= 0 and 0 <= m["zero_steps"] <= 10_000
    assert m["resolution_ns"] == fastprof.clock_resolution_ns()
    with pytest.raises(ValueError):
        _core.measure_clock(1)


# ---- the spin kernel's PTX --------------------------------------------------------------------

def test_spin_ptx_is_small_well_formed_ptx():
    ptx = _core.spin_kernel_ptx()
    lines = [ln.strip() for ln in ptx.splitlines() if ln.strip() and not ln.strip().startswith("//")]
    assert lines[:3] == [".version 7.0", ".target sm_70", ".address_size 64"]
    assert ".visible .entry fastprof_spin(" in ptx and _core.SpinKernel.entry == "fastprof_spin"
    assert ".param .u64 fastprof_spin_param_0" in ptx
    assert ptx.count("%globaltimer;") == 2
    assert ptx.count("{") == ptx.count("}") == 1
    assert len(ptx) < 2000


@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])
def test_spin_ptx_assembles_with_ptxas(tmp_path, arch):
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas (CUDA toolkit) not installed")
    src = tmp_path / "spin.ptx"
    src.write_text(_core.spin_kernel_ptx())
    r = subprocess.run([ptxas, f"-arch={arch}", "-o", str(tmp_path / "spin.cubin"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "spin.cubin").stat().st_size > 0


# ---- the spin kernel on the fake driver -------------------------------------------------------

def test_spin_kernel_loads_launches_and_unloads(fake_gpu):
    lib = setup_fake(fake_gpu)
    k = _core.SpinKernel("cuda", 0)
    assert fake_gpu.calls("cuModuleLoadData") == 1 and fake_gpu.calls("cuModuleGetFunction") == 1
    assert lib.fake_gpu_live_modules() == 1
    assert not k.closed and k.device_ordinal == 0 and k.library_path == str(fake_gpu.path)
    k.launch(123_456)
    assert lib.fake_gpu_last_launch_ns() == 123_456 and lib.fake_gpu_launches() == 1
    k.launch(2**40, 0)
    assert lib.fake_gpu_last_launch_ns() == 2**40
    fake_gpu.reset()  # forget the long spin's timeline
    k.close()
    assert k.closed and lib.fake_gpu_live_modules() == 0
    k.close()  # idempotent
    with pytest.raises(fastprof.StateError, match="closed"):
        k.launch(1)


def test_recorder_events_time_a_spin_on_the_fake_timeline(fake_gpu):
    k = _core.SpinKernel()
    rec = fastprof.TokenRecorder(capacity=8, device="cuda", stream=0)
    rec.begin()
    k.launch(1_000_000)
    rec.mark()
    k.launch(300_000)
    rec.mark()
    trace = rec.end()
    assert trace.device_marks_ns[1] - trace.device_marks_ns[0] == pytest.approx(300_000, abs=2_000)
    # The synchronisation in end() waited for the queued spins.
    assert trace.host_end_ns - trace.host_start_ns >= 1_300_000
    k.close()


def test_time_launches_times_each_launch_and_drains_the_queue(fake_gpu):
    lib = setup_fake(fake_gpu)
    k = _core.SpinKernel()
    syncs = fake_gpu.calls("cuCtxSynchronize")
    t = k.time_launches(50)
    assert t.dtype == np.int64 and t.shape == (50,) and np.all(t > 0)
    assert lib.fake_gpu_launches() == 50 and lib.fake_gpu_last_launch_ns() == 0  # 0 ns spins
    assert fake_gpu.calls("cuCtxSynchronize") == syncs + 1  # once, after the launches
    assert len(k.time_launches(1)) == 1
    k.close()


def test_time_roundtrips_waits_for_the_device_each_time(fake_gpu):
    lib = setup_fake(fake_gpu)
    k = _core.SpinKernel()
    syncs = fake_gpu.calls("cuCtxSynchronize")
    t = k.time_roundtrips(20)
    assert t.dtype == np.int64 and t.shape == (20,) and np.all(t > 0)
    assert lib.fake_gpu_launches() == 20 and fake_gpu.calls("cuCtxSynchronize") == syncs + 20
    # Work queued before the first round trip is waited for inside it: a 20 ms spin shows up there.
    k.launch(20_000_000)
    t = k.time_roundtrips(3)
    assert t[0] >= 20_000_000 and t[1] < 20_000_000 and t[2] < 20_000_000
    k.close()


def test_time_launches_sees_work_queued_behind_it_only_after(fake_gpu):
    k = _core.SpinKernel()
    k.launch(20_000_000)
    # the launches return at once on the fake; the 20 ms wait falls in the synchronisation outside the timings
    t0 = time.perf_counter_ns()
    t = k.time_launches(5)
    elapsed = time.perf_counter_ns() - t0
    assert int(t.sum()) < 20_000_000 <= elapsed
    k.close()


def test_timing_needs_one_launch_and_an_open_kernel(fake_gpu):
    k = _core.SpinKernel()
    for n in (0, -3):
        with pytest.raises(ValueError, match="at least 1"):
            k.time_launches(n)
        with pytest.raises(ValueError, match="at least 1"):
            k.time_roundtrips(n)
    fake_gpu.fail("cuCtxSynchronize", 1, 700)
    with pytest.raises(fastprof.DriverError, match="cuCtxSynchronize failed"):
        k.time_roundtrips(2)
    fake_gpu.fail("cuLaunchKernel", 3, 700)
    with pytest.raises(fastprof.DriverError, match="cuLaunchKernel failed"):
        k.time_launches(5)
    k.close()
    with pytest.raises(fastprof.StateError, match="closed"):
        k.time_launches(1)
    with pytest.raises(fastprof.StateError, match="closed"):
        k.time_roundtrips(1)


def test_timing_releases_the_gil(fake_gpu):
    k = _core.SpinKernel()
    k.launch(30_000_000)  # the first round trip waits 30 ms for it
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter_ns())
            time.sleep(0.001)

    th = threading.Thread(target=tick)
    th.start()
    time.sleep(0.005)
    n0 = len(ticks)
    k.time_roundtrips(1)
    n1 = len(ticks)
    stop.set()
    th.join()
    assert n1 - n0 >= 5  # the other thread ran during the 30 ms wait
    k.close()


def test_scripted_module_load_failure_is_a_driver_error_naming_it(fake_gpu):
    lib = setup_fake(fake_gpu)
    fake_gpu.fail("cuModuleLoadData", 1, 218)
    with pytest.raises(fastprof.DriverError) as info:
        _core.SpinKernel("cuda", 0)
    e = info.value
    assert e.call == "cuModuleLoadData" and e.code == 218 and e.name == "CUDA_ERROR_INVALID_PTX"
    assert str(e) == "cuModuleLoadData failed: CUDA_ERROR_INVALID_PTX (218): a PTX JIT compilation failed"
    assert lib.fake_gpu_live_modules() == 0
    _core.SpinKernel("cuda", 0).close()  # the next load works


def test_function_lookup_failure_unloads_the_module(fake_gpu):
    lib = setup_fake(fake_gpu)
    fake_gpu.fail("cuModuleGetFunction", 1, 500)
    with pytest.raises(fastprof.DriverError, match="cuModuleGetFunction failed: CUDA_ERROR_NOT_FOUND"):
        _core.SpinKernel()
    assert fake_gpu.calls("cuModuleUnload") == 1 and lib.fake_gpu_live_modules() == 0


def test_launch_failure_names_cuLaunchKernel(fake_gpu):
    k = _core.SpinKernel()
    fake_gpu.fail("cuLaunchKernel", 2, 700)
    k.launch(10)
    with pytest.raises(fastprof.DriverError, match="cuLaunchKernel failed: CUDA_ERROR_ILLEGAL_ADDRESS"):
        k.launch(10)
    k.launch(10)
    k.close()


def test_the_fake_rejects_text_that_is_not_ptx(fake_gpu):
    """The fake's loader checks the image; the real spin PTX passes it (see above)."""
    lib = fake_gpu.lib
    lib.cuModuleLoadData.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
    _core.device_info("cuda", 0)
    lib.cuCtxSetCurrent(ctypes.c_void_p(1))
    mod = ctypes.c_void_p()
    assert lib.cuModuleLoadData(ctypes.byref(mod), b"not ptx") == 218


def test_spin_kernel_is_cuda_only(fake_gpu):
    with pytest.raises(ValueError, match="needs the CUDA driver"):
        _core.SpinKernel("hip", 0)
    with pytest.raises(ValueError, match="unknown device kind"):
        _core.SpinKernel("tpu", 0)


def test_bad_ordinal_is_a_driver_error(fake_gpu):
    with pytest.raises(fastprof.DriverError, match="cuDeviceGet failed: CUDA_ERROR_INVALID_DEVICE"):
        _core.SpinKernel("cuda", 3)


@pytest.fixture(scope="session")
def fake_gpu_no_modules_path(tmp_path_factory):
    return fake_library(tmp_path_factory, "libfakegpu_nomodules.so")


def test_missing_module_entry_points_fail_only_when_the_kernel_is_used(fake_gpu_no_modules_path, monkeypatch,
                                                                       tmp_path):
    monkeypatch.setenv("FASTPROF_CUDA_LIBRARY", str(fake_gpu_no_modules_path))
    rec = fastprof.TokenRecorder(capacity=2, device="cuda", stream=0)  # events alone still work
    rec.begin()
    rec.mark()
    assert rec.end().device_marks_ns.size == 1
    with pytest.raises(fastprof.LibraryError, match="lacks the entry point cuModuleLoadData") as info:
        _core.SpinKernel()
    assert info.value.library == str(fake_gpu_no_modules_path)
    out = tmp_path / "st.json"
    assert run_selftest(["--device", "cuda", "--sampler-seconds", "0.1", "-o", str(out)]) == 0
    spins = spin_lines(load(out))
    assert spins and all(c["status"] == "skipped" for c in spins)
    assert all("lacks the entry point cuModuleLoadData" in c["detail"] for c in spins)


# ---- the command on the fake GPU --------------------------------------------------------------

def test_selftest_gpu_path_on_the_fake(fake_gpu, fake_nvml, tmp_path, capsys, monkeypatch):
    # CUDA ordinal n is NVML index n: the fake NVML knows no real GPU's UUID, even where torch sees one.
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    lib = setup_fake(fake_gpu)
    out = tmp_path / "st.json"
    assert run_selftest(["--device", "cuda:0", "--sampler-seconds", "0.5", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Fake GPU (cuda:0)" in text
    assert re.search(r"\bpass\b", text)
    report = load(out)
    assert report["device"]["name"] == "Fake GPU" and report["device"]["kind"] == "cuda"
    assert report["device_reason"] is None
    by = checks_by_name(report)
    assert by["mark() with a timing event"]["status"] in ("pass", "warn")
    assert by["mark() with a timing event"]["value"] > 0
    res = by["event resolution (back-to-back events)"]
    assert res["data"]["events"] == 2000 and res["data"]["negative_diffs"] == 0
    sampler = by["sampler at 1 ms"]
    assert sampler["status"] in ("pass", "warn"), sampler
    assert sampler["data"]["samples"] > 50 and sampler["data"]["backend"] == "nvml"
    spins = [c for c in spin_lines(report) if c["name"].startswith("spin ") and "gap" not in c["name"]]
    assert [c["data"]["requested_ns"] for c in spins] == list(selftest.SPIN_DURATIONS_NS)
    for c in spins:
        # On the fake's timeline an event behind a spin takes the spin's end: exact, unless the
        # host fell behind the device (a loaded machine), which shows as a warning, not an error.
        assert c["status"] in ("pass", "warn")
        assert c["value"] == pytest.approx(c["data"]["requested_ns"], rel=0.05, abs=20_000)
    assert sum(c["status"] == "pass" for c in spins) >= 3
    assert lib.fake_gpu_live_modules() == 0  # the module was unloaded
    assert lib.fake_gpu_launches() > 4 * 20


def test_selftest_spin_lines_skip_when_module_load_fails(fake_gpu, tmp_path):
    fake_gpu.fail("cuModuleLoadData", 1, 222)
    out = tmp_path / "st.json"
    assert run_selftest(["--device", "cuda", "--sampler-seconds", "0.1", "-o", str(out)]) == 0
    report = load(out)
    spins = spin_lines(report)
    assert spins and all(c["status"] == "skipped" for c in spins)
    assert all("cuModuleLoadData failed: CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in c["detail"] for c in spins)
    # The event checks still ran.
    assert checks_by_name(report)["mark() with a timing event"]["status"] in ("pass", "warn")


def test_explicit_device_that_cannot_open_exits_1(fake_gpu, tmp_path, capsys):
    out = tmp_path / "st.json"
    assert run_selftest(["--device", "cuda:5", "-o", str(out)]) == 1
    assert "cuDeviceGet failed" in capsys.readouterr().err
    report = load(out)
    assert report["device"] is None and "device cuda:5 unusable" in report["device_reason"]
