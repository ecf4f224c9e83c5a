"""The spin kernel and `fastprof selftest` on a real GPU (marked gpu; skipped without a GPU)."""

import argparse
import json
import statistics

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastprof  # noqa: E402
from fastprof import _core
from fastprof.capture import selftest
from fastprof.cli import selftest as selftest_cli  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def spin():
    torch.cuda.init()
    k = _core.SpinKernel("cuda", torch.cuda.current_device())
    yield k
    k.close()


def _device():
    return selftest._Device("cuda", torch.cuda.current_device())


@pytest.mark.parametrize("duration_ns", [20_000, 200_000, 1_000_000, 10_000_000])
def test_spin_measured_by_the_recorder_matches_the_request(spin, duration_ns):
    """mark, spin, mark on a busy stream, less the gap of an empty spin measured alongside:
    within 1% of the requested length, or 2 us for short spins."""
    out = selftest.measure_spins(spin, _device(), [duration_ns], reps=20)[duration_ns]
    raw = statistics.median(out["spin_ns"])
    gap = statistics.median(out["empty_ns"])
    measured = raw - gap
    tol = max(0.01 * duration_ns, 2_000)
    assert abs(measured - duration_ns) <= tol, (measured, raw, gap)
    assert 0 <= gap < 20_000, gap


def test_spin_raw_time_agrees_with_torch_events(spin):
    """The same spin between two torch.cuda.Events (no correction on either side)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    stream = torch.cuda.current_stream().cuda_stream
    ref = []
    for _ in range(20):
        spin.launch(200_000, stream)  # busy: the events are timestamped when the GPU reaches them
        start.record()
        spin.launch(1_000_000, stream)
        end.record()
        torch.cuda.synchronize()
        ref.append(start.elapsed_time(end) * 1e6)
    ref_ns = statistics.median(ref)
    assert ref_ns == pytest.approx(1_000_000, rel=0.01, abs=3_000)


def test_spin_length_does_not_depend_on_the_sm_clock(spin):
    """%globaltimer is a fixed-rate ns timer: a 1 ms spin takes 1 ms by the host clock too."""
    torch.cuda.synchronize()
    spin.launch(1_000_000)
    torch.cuda.synchronize()  # warm
    n = 50
    t0 = fastprof.monotonic_ns()
    for _ in range(n):
        spin.launch(1_000_000)
    torch.cuda.synchronize()
    per = (fastprof.monotonic_ns() - t0) / n
    assert per == pytest.approx(1_000_000, rel=0.02)


def test_event_resolution_is_sub_microsecond():
    c = selftest._event_resolution_check(_device(), _core.SpinKernel("cuda", torch.cuda.current_device()))
    assert c.value is not None and c.value <= 1_000, c
    assert c.data["negative_diffs"] == 0


def test_selftest_command_on_the_gpu(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    selftest_cli.add_arguments(parser)
    out = tmp_path / "st.json"
    rc = selftest_cli.main(parser.parse_args(["--device", f"cuda:{torch.cuda.current_device()}",
                                          "--sampler-seconds", "2", "-o", str(out)]))
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["device"]["kind"] == "cuda"
    assert report["seconds"] < 60
    by = {c["name"]: c for c in report["checks"]}
    spins = [c for c in report["checks"] if c["group"] == "spin" and "gap" not in c["name"]]
    assert len(spins) == len(selftest.SPIN_DURATIONS_NS)
    assert all(c["status"] == "pass" for c in spins), [(c["name"], c["detail"]) for c in spins]
    assert by["mark() with a timing event"]["status"] == "pass"
    assert by["sampler at 1 ms"]["status"] in ("pass", "warn")  # NVML may be absent in a container
    text = capsys.readouterr().out
    assert "pass" in text
    assert np.isfinite(by["event resolution (back-to-back events)"]["value"])
