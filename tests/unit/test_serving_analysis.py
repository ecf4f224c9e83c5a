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
