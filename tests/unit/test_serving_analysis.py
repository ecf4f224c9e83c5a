"""Serving analysis: arrival schedules, per-request metrics, run summary, the knee of the curve."""

from types import SimpleNamespace

import numpy as np
import pytest
from fastprof.analysis import serving as sv


def test_poisson_schedule_is_seeded():
    a = sv.arrival_offsets(50, rate=10, seed=7)
    assert np.array_equal(a, sv.arrival_offsets(50, rate=10, seed=7))
    assert not np.array_equal(a, sv.arrival_offsets(50, rate=10, seed=8))
    assert a[0] == 0 and np.all(np.diff(a) >= 0)
    big = sv.arrival_offsets(20000, rate=10, seed=1)
    assert np.mean(np.diff(big)) == pytest.approx(0.1, rel=0.05)


def test_fixed_and_burst_schedules():
    assert np.allclose(sv.arrival_offsets(4, rate=2, arrival="fixed"), [0, 0.5, 1.0, 1.5])
    assert np.array_equal(sv.arrival_offsets(3, rate=0, arrival="burst"), np.zeros(3))
    with pytest.raises(ValueError, match="rate must be > 0"):
        sv.arrival_offsets(3, rate=0, arrival="poisson")
    with pytest.raises(ValueError, match="arrival must be one of"):
        sv.arrival_offsets(3, rate=1, arrival="gamma")


def rec(arrival, tokens, status="finished", scheduled=None):
    return {"request": 0, "rate": 1.0, "arrival_ns": arrival, "token_ns": tokens, "status": status,
            "scheduled_ns": scheduled}


def test_request_metrics_from_raw_times():
    m = sv.request_metrics(rec(1_000, [3_000_000, 5_000_000, 9_000_000], scheduled=1_001_000))
    assert m["queue_s"] == pytest.approx(1e-3)
    assert m["ttft_s"] == pytest.approx((3_000_000 - 1_000) / 1e9)
    assert m["itl_s"] == pytest.approx([2e-3, 4e-3])
    assert m["tpot_s"] == pytest.approx(3e-3)
    assert m["e2e_s"] == pytest.approx((9_000_000 - 1_000) / 1e9)
    running = sv.request_metrics(rec(0, [1_000_000], status="running"))
    assert running["e2e_s"] is None and running["ttft_s"] == pytest.approx(1e-3)


def test_summary_counts_every_status_and_goodput():
    reqs = [rec(0, [10_000_000, 20_000_000]), rec(0, [300_000_000, 301_000_000]),
            rec(0, [5_000_000], status="running"), rec(0, [], status="queued"),
            {**rec(0, [], status="failed"), "error": "boom"}]
    s = sv.summarize(reqs, start_ns=0, end_ns=1_000_000_000, rate=5.0, slo_ttft_s=0.1)
    assert s["counts"] == {"finished": 2, "running": 1, "queued": 1, "failed": 1, "total": 5}
    assert s["request_throughput_per_s"] == pytest.approx(2.0)
    assert s["output_token_throughput_per_s"] == pytest.approx(5.0)
    assert s["goodput_per_s"] == pytest.approx(1.0)  # the second request's TTFT is 300 ms
    assert any("failed" in w for w in s["warnings"]) and any("not finished" in w for w in s["warnings"])
    occ = s["occupancy"]
    assert max(occ["in_system"]) == 4 and occ["in_system"][-1] == 0
    assert max(occ["generating"]) == 2  # the first finishes (20 ms) before the second starts (300 ms)


def test_curve_knee_and_saturation():
    def point(rate, served, ttft99):
        return {"rate": rate, "request_throughput_per_s": served, "output_token_throughput_per_s": served * 10,
                "summary": {"ttft_s": {"p50": ttft99 / 2, "p99": ttft99}}}
    c = sv.curve([point(8, 6.0, 0.5), point(1, 1.0, 0.02), point(4, 3.9, 0.05), point(2, 2.0, 0.03)])
    assert [p["rate"] for p in c["points"]] == [1, 2, 4, 8]
    assert c["knee_rate"] == 4 and c["saturation_rate"] == 8
    assert sv.curve([point(1, 0.5, 0.02)])["knee_rate"] is None


def test_keep_up_follows_completions_not_the_window():
    s = 1_000_000_000
    # Arrivals every second, each request generating for 8 s: the server keeps up, although the
    # window (0 to 12 s) holds only 5 completions.
    kept = [rec(i * s, [i * s + k * s for k in range(1, 9)]) for i in range(5)]
    k = sv.keep_up(kept)
    assert k["arrival_rate_per_s"] == pytest.approx(1.0) and k["completion_rate_per_s"] == pytest.approx(1.0)
    assert k["served_share"] == pytest.approx(1.0)
    summary = sv.summarize(kept, start_ns=0, end_ns=12 * s, rate=1.0)
    assert summary["request_throughput_per_s"] < 0.5 and summary["served_share"] == pytest.approx(1.0)
    # Ten arrivals per second, served one per second: a tenth of the load.
    behind = [rec(i * s // 10, [i * s + s // 2, (i + 1) * s]) for i in range(6)]
    assert sv.keep_up(behind)["served_share"] == pytest.approx(0.1)
    # Requests left unfinished count against the share.
    half = kept[:3] + [rec(3 * s, [4 * s], status="running"), rec(4 * s, [], status="queued")]
    assert sv.keep_up(half)["served_share"] == pytest.approx((2 / 2) * (3 / 5) / 1.0)
    # Undefined with one request or all at once.
    assert sv.keep_up(kept[:1])["served_share"] is None
    assert sv.keep_up([rec(0, [s]), rec(0, [2 * s])])["served_share"] is None


def test_curve_knee_uses_served_share_when_present():
    def point(rate, share, throughput):
        return {"rate": rate, "request_throughput_per_s": throughput, "served_share": share,
                "summary": {"ttft_s": {"p99": 0.1}}}
    # Window throughput is far below the rate everywhere (long requests, few of them); the
    # completion-based share says the server kept up to 8 req/s.
    c = sv.curve([point(1, 0.98, 0.4), point(8, 0.93, 3.0), point(64, 0.3, 5.0)])
    assert c["knee_rate"] == 8
    assert c["points"][0]["served_share"] == 0.98


def test_collector_records_a_failed_request():
    from fastprof.measure.serving import _Collector

    col = _Collector(use_transformers_clock=False)
    col.add("r", {"request": 0, "arrival_ns": 0, "submit_ns": 0, "status": "queued", "error": None})
    out = SimpleNamespace(request_id="r", generated_tokens=[], status=SimpleNamespace(name="FAILED"),
                          error="CUDA out of memory", timestamps=None, lifespan=None)
    r = col.take(out, 10)
    assert r["status"] == "failed" and r["error"] == "CUDA out of memory" and r["done"]


T0 = 10**12


def simulate(rate, n, *, slots=5, service=1.0, tokens=16, seed=0, scheduled=True, arrival="poisson", finish=None):
    """Requests of a server with ``slots`` concurrent requests and a fixed time in service (a FIFO
    queue before it): capacity slots / service requests per second. ``finish``: the end time of
    request i instead (a batch that finishes together). Returns the run's serving section."""
    import heapq

    offsets = sv.arrival_offsets(n, rate=rate, arrival=arrival, seed=seed)
    free = [0.0] * slots
    recs = []
    for i, a in enumerate(offsets):
        start = max(a, heapq.heappop(free))
        end = finish(i) if finish else start + service
        heapq.heappush(free, end)
        toks = np.linspace(start + 0.1 * (end - start), end, tokens)
        recs.append({"request": i, "rate": rate, "arrival_ns": T0 + int(a * 1e9),
                     "scheduled_ns": T0 + int(start * 1e9) if scheduled else None,
                     "token_ns": [T0 + int(x * 1e9) for x in toks], "status": "finished"})
    end_ns = max(r["token_ns"][-1] for r in recs)
    return {**sv.summarize(recs, start_ns=T0, end_ns=end_ns, rate=rate), "requests": recs}


def test_a_burst_faster_than_a_request_is_flagged_and_never_above_100_percent():
    """48 requests at 128 req/s arrive within 0.4 s; each is 5 s in service and the batch finishes
    them together (within 0.1 s), so their completions come faster than their arrivals. The run
    holds no steady state: flagged, capped at 100%, left out of the knee, with the requests that
    would give one."""
    burst = simulate(128, 48, slots=64, service=5.0, arrival="fixed", finish=lambda i: 5.0 + 0.1 * i / 48)
    k = sv.keep_up(burst["requests"])
    assert k["arrival_span_s"] == pytest.approx(47 / 128, rel=1e-6)
    assert k["completion_rate_per_s"] > 3 * k["arrival_rate_per_s"]  # bunched: the old share said 370%
    assert k["served_share"] <= 1.0 and k["steady"] is False
    assert k["service_s"] == pytest.approx(5.0, rel=0.05)
    assert k["steady_duration_s"] == pytest.approx(sv.STEADY_LATENCIES * k["service_s"])
    assert k["steady_requests"] == int(np.ceil(k["steady_duration_s"] * 128)) + 1  # about 3 x 5 s x 128/s
    assert burst["steady"] is False and burst["served_share"] <= 1.0  # what the results file keeps
    # Arrivals spanning many latencies: a steady state, the share follows the load.
    calm = simulate(2, 60, slots=64, service=5.0)
    assert sv.keep_up(calm["requests"])["steady"] is True
    mid = simulate(16, 48, slots=64, service=5.0)  # 3 s of arrivals, 5 s in service
    c = sv.curve([calm, mid, burst])
    assert c["unsteady_rates"] == [16, 128] and c["knee_rate"] is None and c["kept_up_rate"] == 2
    assert all(p["served_share"] is None or p["served_share"] <= 1.0 for p in c["points"])
    from fastprof.report.serving import knee_text, unsteady_lines

    text = knee_text(c)
    assert "knee at" not in text and "no knee reached" in text and "16, 128 req/s" in text
    (line,) = [x for x in unsteady_lines(c) if x.startswith("rate 128 ")]
    assert "0.37 s" in line and f"{k['steady_requests']:,} requests" in line and "left out of the knee" in line
    # A burst schedule: no rate to scale, so no request count; the line says what would help.
    burst_all = simulate(8, 10, slots=64, service=1.0, arrival="burst")
    assert sv.keep_up(burst_all["requests"])["steady"] is False
    assert "--arrival poisson" in unsteady_lines(sv.curve([burst_all]))[0]


@pytest.mark.parametrize("scheduled", [True, False])
def test_a_server_at_capacity_gives_the_knee_at_the_last_rate_it_sustains(scheduled):
    """Five slots, one second in service each: 5 req/s of capacity. Offered 1, 2, 4, 8 and 16
    req/s, 200 requests each: throughput flattens at 5 req/s and latency rises from 8 req/s on,
    and the knee is 4 req/s, with the rate above it behind. Without the scheduler's times the
    time in service is still told apart from the queue."""
    runs = [simulate(rate, 200, seed=i, scheduled=scheduled) for i, rate in enumerate((1, 2, 4, 8, 16))]
    c = sv.curve(runs)
    pts = {p["rate"]: p for p in c["points"]}
    assert all(p["steady"] for p in c["points"]) and not c["unsteady_rates"]
    assert all(pts[r]["served_share"] >= sv.KNEE_SERVED_SHARE for r in (1, 2, 4))
    assert 0.5 < pts[8]["served_share"] < 0.8 and pts[16]["served_share"] < 0.4  # about 5 / 8 and 5 / 16
    assert pts[16]["request_throughput_per_s"] == pytest.approx(pts[8]["request_throughput_per_s"], rel=0.1)
    assert pts[16]["ttft_s_p99"] > 2 * pts[8]["ttft_s_p99"] > 4 * pts[2]["ttft_s_p99"]
    assert c["knee_rate"] == 4 and c["behind_rate"] == 8
    from fastprof.report.serving import knee_text

    text = knee_text(c)
    assert text.startswith("knee at 4 req/s") and "out tok/s" in text
    assert f"at 8 req/s kept up {pts[8]['served_share']:.0%}" in text


def test_the_console_flags_a_rate_without_a_steady_state():
    """The serving curve at 80 columns: the unsteady rate's share reads 'unsteady', no share is
    above 100%, a note gives the requests that would make it steady, and the knee line leaves it
    out."""
    import io
    import re

    from rich.console import Console

    from fastprof.report.serving import print_serving
    from fastprof.results.result import BenchmarkResult
    from fastprof.results.sweep import Sweep

    sweep = Sweep(environment={}, parameters={"rate": [2, 16, 128]})
    for rate, run in ((2, simulate(2, 60, slots=64, service=5.0)), (16, simulate(16, 48, slots=64, service=5.0)),
                      (128, simulate(128, 48, slots=64, service=5.0, arrival="fixed",
                                     finish=lambda i: 5.0 + 0.1 * i / 48))):
        serving = {k: v for k, v in run.items() if k not in ("summary", "warnings")}
        result = BenchmarkResult(kind="serving", config={"rate": rate}, environment={}, iterations=[],
                                 summary=run["summary"], device_summary=None, device_timing={"available": False},
                                 warnings=[], serving={**serving, "arrival": "poisson"})
        sweep.add_ok({"rate": rate}, result)
    console = Console(width=80, file=io.StringIO(), record=True)
    print_serving(sweep, console=console)
    out = console.export_text()
    flat = " ".join(out.split())
    assert out.count("unsteady") >= 2 and "…" not in out
    assert all(int(x) <= 100 for x in re.findall(r"kept up (\d+)%", flat))
    assert "rate 128 req/s has no steady state" in flat and "rate 16 req/s has no steady state" in flat
    assert "requests (--num-requests)" in flat
    assert "no knee reached" in flat and "knee at" not in flat
