"""Soak test of the native sampler against the fake NVML.

The sampler runs at its fastest interval (1 ms) with a small ring buffer, so the ring wraps in
every run, and is started and stopped over and over, on the same object and on new ones. The fake
NVML's utilisation reading returns the number of reads so far (sequence mode), which makes every
sample identifiable:

- no sample is lost or duplicated across a wrap: the kept rows are the newest reads, consecutive;
- drops are counted exactly: kept + dropped == reads made during the run;
- stop always returns, promptly;
- memory stays flat: the process's resident set does not grow from the first rounds to the last.

It runs for FASTPROF_SOAK_SECONDS (default 4; `FASTPROF_SOAK_SECONDS=60 pytest
tests/unit/test_sampler_soak.py` is the minute-long soak, which tools/sanitize.sh also runs).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import pytest

from fastprof.sampler import Sampler
from sampler_fixtures import fake_nvml, fake_nvml_path  # noqa: F401  (fixtures)

SOAK_SECONDS = float(os.environ.get("FASTPROF_SOAK_SECONDS", "4"))
RING = 64  # rows kept: 64 ms at 1 ms, so every run of 10 ms or more wraps
STOP_BOUND_S = 0.5
# Utilisation is read every 10 ms by default; here in every row, so each row carries its read number.
EVERY_ROW = {"gpu_util_pct": 0, "mem_util_pct": 0}


def _sampler() -> Sampler:
    return Sampler(interval_ms=1, devices=["0"], backend="nvml", max_samples=RING, energy_interval_ms=1,
                   field_periods_ms=EVERY_ROW)


def _rss_bytes() -> int:
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("no /proc/self/status to read the resident set from")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    pytest.skip("VmRSS not in /proc/self/status")


def _check_run(r, reads: int, what: str) -> None:
    assert r.ok, f"{what}: {r.reason}"
    assert r.n_samples == min(RING, reads), f"{what}: kept {r.n_samples} of {reads} reads"
    # Exact drop count: every read made during the run is either kept or counted as dropped.
    assert r.n_samples + r.dropped == reads, f"{what}: kept {r.n_samples} + dropped {r.dropped} != {reads} reads"
    seq = r.gpu_util_pct.astype(np.int64)
    # No loss, no duplicate across the wrap: the kept rows are the newest reads, consecutive, in order.
    assert np.all(np.diff(seq) == 1), f"{what}: kept reads are not consecutive: {seq.tolist()}"
    assert np.all(np.diff(r.timestamps_ns) > 0), what


def test_sampler_soak_start_stop_wrap(fake_nvml):
    fake_nvml.util_sequence(True)
    rng = random.Random(1234)
    shared = _sampler()
    rss_after_warmup = None
    rounds = wrapped = 0
    worst_stop = 0.0
    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline or rounds < 20:
        # Alternate the long-lived sampler with fresh ones (their rings are allocated and freed).
        s = shared if rounds % 2 else _sampler()
        before = fake_nvml.util_reads()
        s.start()
        time.sleep(rng.choice((0.0, 0.002, 0.03, 0.08, 0.2)))
        t0 = time.perf_counter()
        r = s.stop()
        worst_stop = max(worst_stop, time.perf_counter() - t0)
        reads = fake_nvml.util_reads() - before
        _check_run(r, reads, f"round {rounds}")
        if reads:
            assert int(r.gpu_util_pct[-1]) == before + reads, f"round {rounds}: the newest read is not the last row"
        wrapped += r.dropped > 0
        rounds += 1
        if rounds == 20:
            rss_after_warmup = _rss_bytes()
    rss_end = _rss_bytes()
    assert worst_stop < STOP_BOUND_S, f"stop took {worst_stop:.3f} s"
    assert wrapped >= rounds // 4, f"the ring wrapped in only {wrapped} of {rounds} runs"
    # Flat memory: a leak of one ring (64 rows x 18 fields x 8 bytes ~ 10 KiB) per round would show
    # within a few hundred rounds; allow the allocator some slack.
    # Under a sanitizer the resident set grows by design: ThreadSanitizer keeps a context for every
    # thread that ever ran (each start() makes one) and AddressSanitizer holds freed memory in its
    # quarantine (256 MB by default) to catch use after free. The plain run keeps the check.
    growth = rss_end - rss_after_warmup
    if not os.environ.get("FASTPROF_SANITIZER"):
        assert growth < 4 * 1024 * 1024, f"resident set grew by {growth / 2**20:.1f} MiB over {rounds} rounds"
    assert fake_nvml.init_calls() == fake_nvml.shutdown_calls() == rounds


def test_sequence_check_catches_a_lost_sample(fake_nvml):
    """The checks above fail on a run whose rows skip a read (so they can detect loss)."""
    fake_nvml.util_sequence(True)
    s = _sampler()
    before = fake_nvml.util_reads()
    s.start()
    time.sleep(0.02)
    r = s.stop()
    reads = fake_nvml.util_reads() - before
    _check_run(r, reads, "intact")
    r.gpu_util_pct[len(r.gpu_util_pct) // 2] += 1  # a duplicated/lost read looks like this
    with pytest.raises(AssertionError, match="not consecutive"):
        _check_run(r, reads, "tampered")
    with pytest.raises(AssertionError, match="kept"):
        _check_run(r, reads + 1, "miscounted")
