import time

import fastprof
from fastprof import _core


def test_monotonic_ns_is_perf_counter_ns_clock():
    # Interleaved reads of both clocks must be ordered: same clock, same epoch.
    for _ in range(1000):
        a = time.perf_counter_ns()
        b = fastprof.monotonic_ns()
        c = time.perf_counter_ns()
        assert a <= b <= c


def test_monotonic_ns_tracks_elapsed_time():
    t0 = fastprof.monotonic_ns()
    p0 = time.perf_counter_ns()
    time.sleep(0.05)
    dt = fastprof.monotonic_ns() - t0
    dp = time.perf_counter_ns() - p0
    assert dt >= 50_000_000
    assert abs(dt - dp) < 1_000_000


def test_clock_resolution_is_nanoseconds():
    assert 0 < _core.clock_resolution_ns() <= 1000
