"""Free device memory at every token mark (the recorder, on the fake CUDA driver), the allocator
events made from it (one per gap in which memory was taken), and the placement rule of
fastprof.analysis.stalls.explain (an event explains a gap only when it lies inside it)."""

import ctypes
import time

import numpy as np
import pytest

import fastprof
from fastprof import StateError, TokenRecorder
from fastprof.analysis import stalls as S
from fastprof.capture.stalls import SEGMENT_BYTES, StallRecorder

MiB = 1 << 20
ms = 1_000_000


def _memory_controls(fake):
    lib = fake.lib
    lib.fake_gpu_take.argtypes = [ctypes.c_int64]
    lib.fake_gpu_set_free.argtypes = [ctypes.c_int64]
    lib.fake_gpu_script_free_drop.argtypes = [ctypes.c_int64, ctypes.c_long]
    return lib


def test_free_memory_is_read_at_every_host_mark(fake_gpu):
    lib = _memory_controls(fake_gpu)
    rec = TokenRecorder(capacity=16, device="cuda", stream=0, track_device_memory=True)
    assert rec.tracking_device_memory and rec.device_memory_reason is None
    calls = fake_gpu.calls("cuMemGetInfo_v2")
    rec.begin()
    for k in range(6):
        if k == 3:
            lib.fake_gpu_take(256 * MiB)  # what a cudaMalloc in the gap ending at token 3 does
        rec.mark()
    rec.mark_device()  # no host mark: no read
    rec.mark_host()
    t = rec.end()
    assert fake_gpu.calls("cuMemGetInfo_v2") - calls == 1 + 7  # begin() and each host mark
    assert t.device_free_bytes.dtype == np.int64 and t.device_free_bytes.size == t.n_marks == 7
    assert t.device_free_start_bytes == 64 << 30
    assert (t.device_free_start_bytes - t.device_free_bytes).tolist() == [0, 0, 0, 256 * MiB, 256 * MiB,
                                                                          256 * MiB, 256 * MiB]
    # Off again: the next iteration neither reads nor returns free memory.
    assert rec.track_device_memory(False) is False and not rec.tracking_device_memory
    calls = fake_gpu.calls("cuMemGetInfo_v2")
    rec.begin()
    rec.mark()
    t = rec.end()
    assert t.device_free_bytes is None and t.device_free_start_bytes is None
    assert fake_gpu.calls("cuMemGetInfo_v2") == calls


def test_scripted_drop_and_off_by_default(fake_gpu):
    lib = _memory_controls(fake_gpu)
    rec = TokenRecorder(capacity=8, device="cuda", stream=0)
    assert not rec.tracking_device_memory
    rec.begin()
    rec.mark()
    assert rec.end().device_free_bytes is None
    assert fake_gpu.calls("cuMemGetInfo_v2") == 0
    assert rec.track_device_memory() is True
    lib.fake_gpu_script_free_drop(4 * MiB, 1 + 5)  # begin's read, then the 5th mark's
    rec.begin()
    for _ in range(8):
        rec.mark()
    t = rec.end()
    drops = -np.diff(np.concatenate([[t.device_free_start_bytes], t.device_free_bytes]))
    assert np.flatnonzero(drops).tolist() == [4] and drops[4] == 4 * MiB


def test_a_failed_read_is_kept_as_minus_one_and_the_marks_go_on(fake_gpu):
    fake_gpu.fail("cuMemGetInfo_v2", 3, 700)  # begin, mark 0, then mark 1 fails
    rec = TokenRecorder(capacity=4, device="cuda", stream=0, track_device_memory=True)
    rec.begin()
    for _ in range(3):
        rec.mark()
    t = rec.end()
    assert t.device_free_bytes.tolist()[1] == -1 and min(t.device_free_bytes.tolist()[::2]) > 0
    assert rec.device_memory_error == 700 and t.n_marks == 3
    rec.begin()
    rec.end()
    assert rec.device_memory_error == 0


def test_tracking_changes_only_between_iterations(fake_gpu):
    rec = TokenRecorder(capacity=4, device="cuda", stream=0)
    rec.begin()
    with pytest.raises(StateError, match="during an iteration"):
        rec.track_device_memory(True)
    rec.end()


def test_unavailable_says_why(fake_gpu, fake_gpu_no_meminfo_path, monkeypatch):
    host = TokenRecorder(capacity=4, device=None)
    assert host.track_device_memory(True) is False and "no device" in host.device_memory_reason
    host.begin()
    host.mark()
    assert host.end().device_free_bytes is None
    hip = TokenRecorder(capacity=4, device="cuda", backend="hip", stream=0, track_device_memory=True)
    assert not hip.tracking_device_memory and "CUDA driver only" in hip.device_memory_reason
    monkeypatch.setenv("FASTPROF_CUDA_LIBRARY", str(fake_gpu_no_meminfo_path))
    old = TokenRecorder(capacity=4, device="cuda", stream=0, track_device_memory=True)
    assert not old.tracking_device_memory and "lacks the entry point cuMemGetInfo_v2" in old.device_memory_reason
    old.begin()
    old.mark()
    assert old.end().device_free_bytes is None


@pytest.fixture(scope="session")
def fake_gpu_no_meminfo_path(tmp_path_factory):
    from conftest import fake_library

    return fake_library(tmp_path_factory, "libfakegpu_nomodules.so")  # built without cuMemGetInfo_v2 too


def _decode(rec, steps, actions, lib, gap_s=0.003):
    """One iteration of a synthetic decode: a `gap_s` step per token; `actions[k]` runs in the gap
    ending at token k: ("alloc", bytes, seconds) takes device memory and lasts that long,
    ("sleep", seconds) only sleeps."""
    rec.begin()
    for k in range(steps):
        time.sleep(gap_s)
        act = actions.get(k)
        if act and act[0] == "alloc":
            lib.fake_gpu_take(act[1])
            time.sleep(act[2])
        elif act and act[0] == "sleep":
            time.sleep(act[1])
        rec.mark()
    return rec.end()


def test_the_allocator_names_only_the_gap_in_which_memory_was_taken(fake_gpu):
    """Memory taken at one known step per iteration: exactly one allocator event per iteration,
    spanning that gap and no more; that slow token names the allocator and no other does; a
    plain sleep elsewhere in the same iteration stays unexplained."""
    lib = _memory_controls(fake_gpu)
    rec = TokenRecorder(capacity=64, device="cuda", stream=0)
    stalls = StallRecorder(token_recorder=rec)
    stalls.start()
    assert rec.tracking_device_memory
    traces = []
    for it in range(3):
        lib.fake_gpu_set_free(64 << 30)  # the allocator's cache emptied between iterations
        stalls.iteration_begin()
        actions = {10: ("alloc", 256 * MiB, 0.02), 20: ("sleep", 0.02),
                   # Growth below one segment (a driver's rounding, another process's small buffer) is no event.
                   14: ("alloc", SEGMENT_BYTES - 1, 0.0)}
        traces.append(_decode(rec, 30, actions, lib))
        stalls.iteration_end(traces[-1] if it != 1 else None)  # without the trace: read from the recorder
    events = stalls.stop()
    assert not rec.tracking_device_memory  # turned off with the stall recorder
    src = stalls.sources["allocator"]
    assert src["available"] and src["per_token"] and not src.get("coarse")
    alloc = [e for e in events if e["kind"] == "allocator"]
    assert len(alloc) == 3
    for it, (t, e) in enumerate(zip(traces, alloc)):
        marks = t.host_marks_ns
        assert (e["start_ns"], e["end_ns"]) == (int(marks[9]), int(marks[10]))  # exactly gap 10
        assert e["detail"]["bytes"] == 256 * MiB and e["detail"]["token"] == 10 and e["detail"]["iteration"] == it
    # The allocator's events alone (the scheduler watch may see this busy machine's CPU waits too).
    out = S.section([t.host_marks_ns for t in traces], alloc, stalls.sources)
    slow = {(t["iteration"], t["token"]): t for t in out["slow_tokens"]}
    for it in range(3):
        assert [c["kind"] for c in slow[(it, 10)]["causes"]] == ["allocator"], slow[(it, 10)]
        # Never more than the token's own excess: the allocation's duration is not known.
        assert slow[(it, 10)]["causes"][0]["overlap_s"] <= slow[(it, 10)]["excess_s"] + 1e-12
        assert slow[(it, 20)]["causes"] == [], slow[(it, 20)]
    assert [k for k, t in slow.items() if any(c["kind"] == "allocator" for c in t["causes"])] == [
        (0, 10), (1, 10), (2, 10)]
    assert out["summary"]["allocator"]["count"] == 3
    assert out["unexplained_excess_s"] >= 3 * 0.015


def test_without_per_token_memory_the_allocator_is_coarse(monkeypatch):
    """torch's counters alone (scripted here: growth in one iteration) are a per-iteration figure:
    the source says it is coarse, lays no event over the tokens, and explain() never uses it."""
    # Read at start(), then at each iteration's begin and end.
    seq = iter([{"segments": 4, "retries": 0, "ooms": 0}] * 4 + [{"segments": 9, "retries": 1, "ooms": 0}])
    stalls = StallRecorder(cuda_device="cuda:0")
    monkeypatch.setattr(stalls, "_memory_stats", lambda: next(seq))
    stalls.start()
    for _ in range(2):
        stalls.iteration_begin()
        stalls.iteration_end()
    events = stalls.stop()
    src = stalls.sources["allocator"]
    assert src["available"] and src["coarse"] and not src["per_token"]
    assert "per iteration only" in src["reason"] and "no token recorder" in src["reason"]
    assert not [e for e in events if e["kind"] == "allocator"]
    per = src["per_iteration"]
    assert (per["iterations_with_growth"], per["new_segments"], per["alloc_retries"]) == (1, 5, 1)
    assert per["iterations"] == [{"iteration": 1, "new_segments": 5, "alloc_retries": 1, "ooms": 0}]
    # Even an allocator event inside a slow gap is not used when the source is coarse.
    marks = np.cumsum([0] + [10 * ms] * 10 + [30 * ms] + [10 * ms] * 5)
    inside = {"kind": "allocator", "start_ns": int(marks[10]), "end_ns": int(marks[11]), "span": "gap", "detail": {}}
    out = S.section([marks], [inside], stalls.sources)
    assert out["slow_tokens"][0]["causes"] == [] and out["placement"]["coarse"] == ["allocator"]
    assert S.explain([marks], [inside])["slow_tokens"][0]["causes"][0]["kind"] == "allocator"


def test_an_iteration_spanning_event_is_never_the_cause_of_one_token():
    marks = np.cumsum([0] + [10 * ms] * 10 + [30 * ms] + [10 * ms] * 5)  # token 11 is 20 ms late
    lo, hi = int(marks[10]), int(marks[11])
    span = [{"kind": k, "start_ns": int(marks[0]) - ms, "end_ns": int(marks[-1]) + ms, "detail": {}}
            for k in ("allocator", "gc", "recompile", "gpu_process")]
    out = S.explain([marks], span)
    (tok,) = out["slow_tokens"]
    assert tok["token"] == 11 and tok["causes"] == []
    assert out["unexplained_excess_s"] == pytest.approx(0.02)
    # Inside the gap within the tolerance (50 us): counts; 1 ms outside it: does not.
    near = {"kind": "gc", "start_ns": lo - 40_000, "end_ns": hi - 5 * ms, "detail": {}}
    far = {"kind": "recompile", "start_ns": lo - ms, "end_ns": lo + 10 * ms, "detail": {}}
    assert [c["kind"] for c in S.explain([marks], [near, far])["slow_tokens"][0]["causes"]] == ["gc"]
    # A sampled source with a 10 ms period may be placed within 10 ms of the gap, no further.
    short = {"kind": "gpu_throttle", "start_ns": lo - 8 * ms, "end_ns": lo + 12 * ms, "resolution_ns": 10 * ms}
    long = {**short, "start_ns": lo - 40 * ms}
    assert [c["kind"] for c in S.explain([marks], [short])["slow_tokens"][0]["causes"]] == ["gpu_throttle"]
    assert S.explain([marks], [long])["slow_tokens"][0]["causes"] == []
    # cpu_wait: a wait is a block ending inside its read interval; only what every placement
    # shares with the gap counts.
    wide = {"kind": "cpu_wait", "start_ns": lo + 5 * ms, "end_ns": hi + 20 * ms,
            "detail": {"run_queue_wait_s": 0.045}}  # ends at lo+5 (shares 5 ms) to hi+20 (shares 25 ms)
    (c,) = S.explain([marks], [wide])["slow_tokens"][0]["causes"]
    assert c["kind"] == "cpu_wait" and c["overlap_s"] == pytest.approx(0.005)
    before = {"kind": "cpu_wait", "start_ns": lo - 6 * ms, "end_ns": lo - 5 * ms,
              "detail": {"run_queue_wait_s": 0.004}}  # credited before the gap: never inside it
    assert S.explain([marks], [before])["slow_tokens"][0]["causes"] == []
    near_mark = {"kind": "cpu_wait", "start_ns": hi - 3_500_000, "end_ns": hi + 500_000,
                 "detail": {"run_queue_wait_s": 0.003}}  # every placement inside the gap within 1 ms
    (c,) = S.explain([marks], [near_mark])["slow_tokens"][0]["causes"]
    assert c["overlap_s"] == pytest.approx(0.003)


def test_sampled_events_carry_their_resolution():
    ts = np.arange(4) * 10_000_000
    (ev,) = S.throttle_events(ts, np.array([0, 4, 4, 0], dtype=float), 10_000_000)
    assert ev["resolution_ns"] == 10_000_000 and S.tolerance_ns(ev) == 10_000_000
    assert S.tolerance_ns({"kind": "gc"}) == S.DEFAULT_TOLERANCE_NS
    assert S.tolerance_ns({"kind": "cpu_wait"}) == 1_000_000
    assert fastprof.__name__ == "fastprof"
