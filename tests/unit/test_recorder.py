"""The recorder on the host clock, and on the fake GPU driver (device-event path)."""

import gc
import time

import numpy as np
import pytest

import fastprof
from fastprof import CapacityError, DriverError, LibraryError, StateError, TokenRecorder


def test_host_only_marks_are_ordered_and_inside_the_iteration():
    rec = TokenRecorder(capacity=16, device=None)
    assert not rec.has_device
    rec.begin()
    for _ in range(10):
        rec.mark()
        time.sleep(0.001)
    trace = rec.end()
    assert trace.n_marks == 10
    assert trace.device_marks_ns is None and trace.device_end_ns is None
    marks = trace.host_marks_ns
    assert marks.dtype == np.int64
    assert trace.host_start_ns <= marks[0]
    assert np.all(np.diff(marks) >= 1_000_000)  # the sleeps are in the gaps
    assert marks[-1] <= trace.host_end_ns
    # The recorder is reusable; a new iteration starts from zero marks.
    rec.begin()
    rec.mark()
    assert rec.end().n_marks == 1


def test_capacity_overflow_raises_and_keeps_marks():
    rec = TokenRecorder(capacity=3, device=None)
    rec.begin()
    for _ in range(3):
        rec.mark()
    with pytest.raises(CapacityError, match="capacity of 3") as info:
        rec.mark()
    assert info.value.capacity == 3
    assert rec.overflowed
    trace = rec.end()
    assert trace.n_marks == 3


def test_state_errors():
    rec = TokenRecorder(capacity=4, device=None)
    with pytest.raises(StateError, match="begin"):
        rec.mark()
    with pytest.raises(StateError):
        rec.end()
    rec.begin()
    with pytest.raises(StateError, match="twice"):
        rec.begin()
    rec.end()
    with pytest.raises(StateError):
        rec.mark_host()


def test_zero_capacity_is_rejected():
    with pytest.raises(ValueError):
        TokenRecorder(capacity=0, device=None)


def test_mark_device_without_device_is_a_noop():
    rec = TokenRecorder(capacity=2, device=None)
    rec.begin()
    rec.mark_device()
    rec.mark_host()
    trace = rec.end()
    assert trace.n_marks == 1 and rec.device_count == 0


# ---- device path through the fake driver -------------------------------------------------

def test_device_timestamps_follow_the_scripted_device_clock(fake_gpu):
    rec = TokenRecorder(capacity=8, device="cuda:0")
    assert rec.has_device and rec.device_kind == "cuda" and rec.device_ordinal == 0
    assert rec.library_path == str(fake_gpu.path)
    # start event, 4 token events, end event
    base = 10_000_000_000
    fake_gpu.script([base, base + 2_000_000, base + 3_500_000, base + 4_000_000, base + 7_250_000, base + 9_000_000])
    rec.begin()
    for _ in range(4):
        rec.mark()
    trace = rec.end()
    assert trace.device_marks_ns.tolist() == [2_000_000, 3_500_000, 4_000_000, 7_250_000]
    assert trace.device_end_ns == 9_000_000
    assert trace.n_marks == 4


def test_events_are_created_up_front_and_marks_never_synchronise(fake_gpu):
    creates_before = fake_gpu.calls("cuEventCreate")
    rec = TokenRecorder(capacity=100, device="cuda")
    assert fake_gpu.calls("cuEventCreate") - creates_before == 102  # tokens + start + end
    rec.begin()
    syncs = fake_gpu.calls("cuCtxSynchronize") + fake_gpu.calls("cuEventSynchronize")
    creates = fake_gpu.calls("cuEventCreate")
    records = fake_gpu.calls("cuEventRecord")
    for _ in range(100):
        rec.mark()
    assert fake_gpu.calls("cuCtxSynchronize") + fake_gpu.calls("cuEventSynchronize") == syncs
    assert fake_gpu.calls("cuEventCreate") == creates
    assert fake_gpu.calls("cuEventRecord") - records == 100
    rec.end()
    assert fake_gpu.calls("cuCtxSynchronize") + fake_gpu.calls("cuEventSynchronize") == syncs + 1


def test_events_are_destroyed_with_the_recorder(fake_gpu):
    live = fake_gpu.live_events()
    rec = TokenRecorder(capacity=10, device="cuda")
    assert fake_gpu.live_events() == live + 12
    del rec
    gc.collect()
    assert fake_gpu.live_events() == live


def test_driver_error_names_the_call_and_the_driver_message(fake_gpu):
    rec = TokenRecorder(capacity=8, device="cuda")
    rec.begin()
    rec.mark()
    fake_gpu.fail("cuEventRecord", 1, 700)
    with pytest.raises(DriverError) as info:
        rec.mark()
    err = info.value
    assert err.call == "cuEventRecord" and err.code == 700
    assert err.name == "CUDA_ERROR_ILLEGAL_ADDRESS"
    assert "illegal memory access" in err.description
    assert "cuEventRecord failed: CUDA_ERROR_ILLEGAL_ADDRESS (700)" in str(err)
    rec.end()


def test_init_failure_is_reported(fake_gpu):
    fake_gpu.fail("cuInit", 1, 100)
    with pytest.raises(DriverError, match="cuInit failed: CUDA_ERROR_NO_DEVICE"):
        TokenRecorder(capacity=4, device="cuda")


def test_bad_ordinal_is_reported(fake_gpu):
    with pytest.raises(DriverError, match="cuDeviceGet failed: CUDA_ERROR_INVALID_DEVICE"):
        TokenRecorder(capacity=4, device="cuda:3")


def test_device_capacity_overflow_keeps_events(fake_gpu):
    rec = TokenRecorder(capacity=2, device="cuda")
    rec.begin()
    rec.mark()
    rec.mark()
    with pytest.raises(CapacityError):
        rec.mark()
    trace = rec.end()
    assert trace.n_marks == 2 and trace.device_marks_ns.size == 2


def test_split_host_and_device_marks(fake_gpu):
    rec = TokenRecorder(capacity=4, device="cuda")
    rec.begin()
    rec.mark_device()
    rec.mark_host()
    rec.mark_device()
    trace = rec.end()
    assert trace.n_marks == 1 and trace.device_marks_ns.size == 2


def test_end_sync_failure_is_reported(fake_gpu):
    rec = TokenRecorder(capacity=4, device="cuda")
    rec.begin()
    rec.mark()
    fake_gpu.fail("cuCtxSynchronize", 1, 999)
    with pytest.raises(DriverError, match="cuCtxSynchronize failed: CUDA_ERROR_UNKNOWN"):
        rec.end()
    assert not rec.running  # the recorder can start again
    rec.begin()
    rec.end()


def test_missing_library_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTPROF_CUDA_LIBRARY", str(tmp_path / "libcuda-nope.so"))
    with pytest.raises(LibraryError, match="FASTPROF_CUDA_LIBRARY") as info:
        TokenRecorder(capacity=4, device="cuda")
    assert "libcuda-nope.so" in str(info.value)


def test_library_without_entry_points_is_reported(monkeypatch):
    import ctypes.util

    libm = ctypes.util.find_library("m") or "libm.so.6"
    monkeypatch.setenv("FASTPROF_CUDA_LIBRARY", libm)
    with pytest.raises(LibraryError, match="lacks the entry point cuInit"):
        TokenRecorder(capacity=4, device="cuda")


def test_hip_backend(fake_gpu):
    base = 5_000_000
    fake_gpu.script([base, base + 1_000, base + 3_000, base + 10_000])
    rec = TokenRecorder(capacity=4, device="cuda:0", backend="hip")
    assert rec.device_kind == "hip"
    rec.begin()
    rec.mark()
    rec.mark()
    trace = rec.end()
    assert trace.device_marks_ns.tolist() == [1_000, 3_000]
    assert trace.device_end_ns == 10_000
    fake_gpu.fail("hipEventRecord", 2, 2)  # the 1st record is the start event
    rec.begin()
    with pytest.raises(DriverError, match="hipEventRecord failed: CUDA_ERROR_OUT_OF_MEMORY"):
        rec.mark()
    rec.end()


def test_device_info(fake_gpu):
    info = fastprof._core.device_info("cuda", 0)
    assert info["name"] == "Fake GPU" and info["driver_version"] == 13000
    with pytest.raises(ValueError, match="unknown device kind"):
        fastprof._core.device_info("tpu", 0)


def test_fast_marks_are_builtins_bound_to_the_recorder():
    rec = TokenRecorder(capacity=2, device=None)
    assert type(rec.mark).__name__ == "builtin_function_or_method"
    rec.begin()
    rec.mark()
    rec.mark_host()
    with pytest.raises(CapacityError):
        rec.mark_host()
    assert rec.end().n_marks == 2


def test_a_kept_mark_function_outlives_its_recorder_safely():
    rec = TokenRecorder(capacity=2, device=None)
    mark = rec.mark
    del rec
    gc.collect()
    with pytest.raises(StateError):  # the shared native state is still alive, just not running
        mark()
