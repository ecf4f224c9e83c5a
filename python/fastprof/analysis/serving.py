"""Serving under load: from raw per-request timestamps to latency, throughput and the serving curve.

Pure functions, no transformers and no clock reads. A request record (one entry of a result's
``serving.requests``) holds, on fastprof's clock (CLOCK_MONOTONIC ns):

- ``arrival_ns``: when the request arrived (its scheduled arrival time; submission follows at once);
- ``scheduled_ns``: when the scheduler first took it (left the queue), or None when unknown;
- ``token_ns``: the time of every generated token;
- ``status``: ``"finished"``, ``"running"`` (still generating when the measurement window closed),
  ``"queued"`` (arrived but not started when the window closed) or ``"failed"`` (with ``error``).

From them, per request: ``queue_s`` (scheduled minus arrival), ``ttft_s`` (first token minus
arrival), the ITL gaps (between consecutive tokens), ``e2e_s`` (last token minus arrival, finished
requests only) and ``tpot_s`` (mean gap after the first token). Per run: request and output-token
throughput over the window, goodput against optional TTFT/ITL limits, and the batch occupancy over
time (requests in the system and requests being generated). Across rates: the serving curve and
its knee.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from fastprof.analysis import stats as _stats

ARRIVALS = ("poisson", "burst", "fixed")
STATUSES = ("finished", "running", "queued", "failed")

#: Per-request metrics summarised by :func:`summarize` (``itl_s``: every gap of every request).
REQUEST_METRICS = ("queue_s", "ttft_s", "itl_s", "tpot_s", "e2e_s")

#: The knee of the serving curve: the highest offered rate still served at this share of its load
#: (completion rate over arrival rate, see :func:`keep_up`).
KNEE_SERVED_SHARE = 0.9
#: A run holds a steady state when its arrivals span at least this many request latencies (the
#: median time a request spends in service). Below it the requests are in the batch together and
#: finish together: 48 requests offered at 128 req/s arrived within 0.4 s, each took 5 s, and their
#: completions, bunched, came at 136% of the arrival rate. Such a rate says nothing about what the
#: server sustains; it is flagged and left out of the knee.
STEADY_LATENCIES = 3.0
#: Saturation: the first rate whose p99 TTFT exceeds this multiple of the lowest rate's p99 TTFT.
SATURATION_TTFT_FACTOR = 10.0


def arrival_offsets(n: int, *, rate: float, arrival: str = "poisson", seed: int = 0) -> np.ndarray:
    """Arrival times of ``n`` requests, in seconds after the start of the schedule.

    ``poisson``: exponential gaps of mean 1/rate from a seeded generator (the same seed gives
    the same times), the first request at 0; ``fixed``: one every 1/rate seconds; ``burst``:
    all at 0 (``rate`` is ignored)."""
    if n < 0:
        raise ValueError(f"the number of requests must be >= 0, got {n}")
    if arrival not in ARRIVALS:
        raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    if arrival == "burst":
        return np.zeros(n)
    if not rate > 0:
        raise ValueError(f"rate must be > 0 requests per second, got {rate}")
    if arrival == "fixed":
        return np.arange(n, dtype=np.float64) / rate
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    if n:
        gaps[0] = 0.0
    return np.cumsum(gaps)


def request_metrics(rec: dict[str, Any]) -> dict[str, Any]:
    """``queue_s``, ``ttft_s``, ``e2e_s``, ``tpot_s`` (None where they do not apply) and ``itl_s``
    (the list of gaps) of one request record, from its raw timestamps."""
    arrival = int(rec["arrival_ns"])
    tokens = np.asarray(rec.get("token_ns") or [], dtype=np.int64)
    scheduled = rec.get("scheduled_ns")
    out: dict[str, Any] = {"queue_s": None, "ttft_s": None, "e2e_s": None, "tpot_s": None, "itl_s": []}
    if scheduled is not None:
        out["queue_s"] = (int(scheduled) - arrival) / 1e9
    if tokens.size:
        out["ttft_s"] = (int(tokens[0]) - arrival) / 1e9
        gaps = np.diff(tokens) / 1e9
        out["itl_s"] = gaps.tolist()
        if gaps.size:
            out["tpot_s"] = float(gaps.mean())
        if rec.get("status") == "finished":
            out["e2e_s"] = (int(tokens[-1]) - arrival) / 1e9
    return out


def with_metrics(rec: dict[str, Any]) -> dict[str, Any]:
    """The record with its derived ``queue_s``, ``ttft_s`` and ``e2e_s`` filled in."""
    m = request_metrics(rec)
    return {**rec, "queue_s": m["queue_s"], "ttft_s": m["ttft_s"], "e2e_s": m["e2e_s"]}


def meets_slo(rec: dict[str, Any], *, slo_ttft_s: float | None, slo_itl_s: float | None) -> bool:
    """Whether a finished request met both limits: TTFT at most ``slo_ttft_s`` and every ITL gap at
    most ``slo_itl_s`` (None: no limit). Unfinished and failed requests never do."""
    if rec.get("status") != "finished":
        return False
    m = request_metrics(rec)
    if slo_ttft_s is not None and (m["ttft_s"] is None or m["ttft_s"] > slo_ttft_s):
        return False
    if slo_itl_s is not None and m["itl_s"] and max(m["itl_s"]) > slo_itl_s:
        return False
    return True


def occupancy(requests: Sequence[dict[str, Any]], *, start_ns: int, end_ns: int) -> dict[str, list[float]]:
    """The batch occupancy over the window, as step functions at every change: ``t_s`` (seconds
    after ``start_ns``), ``in_system`` (arrived, not yet done) and ``generating`` (first token out,
    not yet done). A request still running at the end counts until ``end_ns``."""
    events: list[tuple[int, int, int]] = []  # (time, d_in_system, d_generating)
    for rec in requests:
        if rec.get("status") == "failed" and not rec.get("token_ns"):
            continue
        a = int(rec["arrival_ns"])
        toks = rec.get("token_ns") or []
        done = int(toks[-1]) if toks and rec.get("status") == "finished" else end_ns
        events.append((a, 1, 0))
        events.append((done, -1, 0))
        if toks:
            events.append((int(toks[0]), 0, 1))
            events.append((done, 0, -1))
    events.sort()
    t, in_sys, gen = [0.0], [0], [0]
    cur_in = cur_gen = 0
    for when, d_in, d_gen in events:
        cur_in += d_in
        cur_gen += d_gen
        x = (when - start_ns) / 1e9
        if t and t[-1] == x:
            in_sys[-1], gen[-1] = cur_in, cur_gen
        else:
            t.append(x)
            in_sys.append(cur_in)
            gen.append(cur_gen)
    return {"t_s": t, "in_system": in_sys, "generating": gen}


def _time_weighted_mean(t: Sequence[float], v: Sequence[float], end: float) -> float | None:
    if len(t) < 1 or end <= 0:
        return None
    edges = np.append(np.asarray(t, dtype=np.float64), end)
    widths = np.clip(np.diff(edges), 0, None)
    return float(np.sum(widths * np.asarray(v, dtype=np.float64)) / end) if widths.sum() > 0 else None


def _rate_over_span(times_ns: Sequence[int]) -> float | None:
    """Events per second between the first and the last of ``times_ns``: (n - 1) / span."""
    if len(times_ns) < 2:
        return None
    span = (max(times_ns) - min(times_ns)) / 1e9
    return (len(times_ns) - 1) / span if span > 0 else None


def service_s(requests: Sequence[dict[str, Any]]) -> float | None:
    """The median time a finished request spent in service: from when the scheduler took it to its
    last token, without its wait in the queue (a server behind its load queues more and more, and
    that wait is the sign of falling behind, not of a longer pipeline). Where the scheduler's time is
    unknown: first to last token plus the run's least TTFT (a prefill that did not wait). None
    without a finished request."""
    done = [r for r in requests if r.get("status") == "finished" and r.get("token_ns")]
    if not done:
        return None
    ttfts = [int(r["token_ns"][0]) - int(r["arrival_ns"]) for r in done]
    least = max(min(ttfts), 0)
    spans = []
    for r in done:
        last, sched = int(r["token_ns"][-1]), r.get("scheduled_ns")
        if sched is not None and int(r["arrival_ns"]) <= int(sched) <= last:
            spans.append(last - int(sched))
        else:
            spans.append(last - int(r["token_ns"][0]) + least)
    return float(np.median(spans)) / 1e9


def keep_up(requests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whether the server kept up with its load, free of the window's edges.

    ``arrival_rate_per_s``: the realised arrival rate, (n - 1) / (last arrival - first arrival)
    (a Poisson schedule's realised rate differs from the offered one); ``completion_rate_per_s``:
    the same over the finished requests' completion times; ``served_share``: their ratio, at most
    1, or None where either is undefined (fewer than two requests, or all arriving at once).

    Throughput over the whole window (``request_throughput_per_s``) cannot answer this with few
    requests: the window also holds the first request's wait for tokens and the last one's
    generation, so a server that keeps up easily still looks behind. Completions, by contrast,
    follow arrivals one for one while the server keeps up and fall to its capacity once it does
    not, whatever the number of requests. Requests that did not finish count against the share:
    the completion rate is scaled by finished / measured.

    That holds in a steady state only: ``steady`` is whether the arrivals span
    (``arrival_span_s``) at least :data:`STEADY_LATENCIES` times the median time in service
    (``service_s``, :func:`service_s`). Without one, completions come bunched and their rate can
    exceed the arrivals'; the share is then capped at 1 (completions cannot outrun the arrivals
    for long: an excess is the batch emptying at once) and the caller leaves the rate out of the
    knee. ``steady_requests``: about how many requests at this arrival rate would span enough
    (None for a burst, whose arrivals span nothing), ``steady_duration_s``: the arrival time that
    would (``--duration``)."""
    arrivals = [int(r["arrival_ns"]) for r in requests if r.get("status") != "failed"]
    done = [int(r["token_ns"][-1]) for r in requests if r.get("status") == "finished" and r.get("token_ns")]
    a, c = _rate_over_span(arrivals), _rate_over_span(done)
    if c is not None and arrivals:
        c *= len(done) / len(arrivals)
    share = min(c / a, 1.0) if a and c is not None else None
    span = (max(arrivals) - min(arrivals)) / 1e9 if arrivals else None
    service = service_s(requests)
    steady = need_n = need_s = None
    if span is not None and service is not None and len(arrivals) >= 2:
        need_s = STEADY_LATENCIES * service
        steady = span >= need_s
        if a:
            need_n = int(np.ceil(need_s * a)) + 1
    return {"arrival_rate_per_s": a, "completion_rate_per_s": c, "served_share": share, "arrival_span_s": span,
            "service_s": service, "steady": steady, "steady_requests": need_n, "steady_duration_s": need_s}


def keep_up_of(point: dict[str, Any]) -> dict[str, Any]:
    """:func:`keep_up` of a run's serving section: recomputed from its requests where it has them
    (so files written before ``steady`` existed are judged alike), else the figures it stores."""
    if point.get("requests"):
        return keep_up(point["requests"])
    keys = ("arrival_rate_per_s", "completion_rate_per_s", "served_share", "arrival_span_s", "service_s", "steady",
            "steady_requests", "steady_duration_s")
    return {k: point.get(k) for k in keys}


def summarize(requests: Sequence[dict[str, Any]], *, start_ns: int, end_ns: int, rate: float | None,
              slo_ttft_s: float | None = None, slo_itl_s: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Per-run figures of the measured requests in the window ``[start_ns, end_ns]``.

    Returns ``counts`` (per status and total), ``summary`` (statistics of every metric of
    :data:`REQUEST_METRICS` over the requests, ``itl_s`` over every gap), ``window_s``,
    ``request_throughput_per_s`` (finished requests per second of window),
    ``output_token_throughput_per_s`` (every token generated inside the window, per second),
    ``goodput_per_s`` and ``goodput_share`` (requests meeting the limits), the occupancy step
    functions and their time-weighted means, and ``warnings``."""
    window_s = max((end_ns - start_ns) / 1e9, 0.0)
    counts = {s: 0 for s in STATUSES}
    values: dict[str, list[float]] = {m: [] for m in REQUEST_METRICS}
    tokens_in_window = 0
    good = 0
    for rec in requests:
        counts[rec.get("status", "failed")] = counts.get(rec.get("status", "failed"), 0) + 1
        m = request_metrics(rec)
        for name in ("queue_s", "ttft_s", "tpot_s", "e2e_s"):
            if m[name] is not None:
                values[name].append(m[name])
        values["itl_s"].extend(m["itl_s"])
        toks = np.asarray(rec.get("token_ns") or [], dtype=np.int64)
        tokens_in_window += int(np.count_nonzero((toks >= start_ns) & (toks <= end_ns)))
        good += meets_slo(rec, slo_ttft_s=slo_ttft_s, slo_itl_s=slo_itl_s)
    counts["total"] = len(requests)
    summary = {name: _stats.describe(v, seed=seed) for name, v in values.items()}
    occ = occupancy(requests, start_ns=start_ns, end_ns=end_ns)
    warnings: list[str] = []
    if counts["failed"]:
        warnings.append(f"{counts['failed']} of {counts['total']} request(s) failed (see serving.requests[].error)")
    unfinished = counts["running"] + counts["queued"]
    if unfinished:
        warnings.append(f"{unfinished} of {counts['total']} request(s) had not finished when the window closed "
                        f"({counts['running']} running, {counts['queued']} queued): the server did not keep up "
                        "or the window is too short")
    n_ttft = summary["ttft_s"]["n"]
    if 0 < n_ttft < _stats.MIN_SAMPLES:
        warnings.append(f"only {n_ttft} request(s) with a first token: percentiles and confidence intervals need "
                        f"at least {_stats.MIN_SAMPLES} (raise --num-requests or --duration)")
    for name in ("ttft_s", "e2e_s"):
        warnings += _stats.stability_warnings(name, summary[name], min_samples=0)
    per_s = (lambda x: x / window_s) if window_s > 0 else (lambda x: None)
    return {
        "rate": rate,
        "window_s": window_s,
        "counts": counts,
        "summary": summary,
        "request_throughput_per_s": per_s(counts["finished"]),
        "output_token_throughput_per_s": per_s(tokens_in_window),
        "slo": {"ttft_s": slo_ttft_s, "itl_s": slo_itl_s},
        "goodput_per_s": per_s(good),
        "goodput_share": good / counts["total"] if counts["total"] else None,
        **keep_up(requests),
        "occupancy": {**occ, "mean_in_system": _time_weighted_mean(occ["t_s"], occ["in_system"], window_s),
                      "mean_generating": _time_weighted_mean(occ["t_s"], occ["generating"], window_s),
                      "max_generating": max(occ["generating"]) if occ["generating"] else 0},
        "warnings": warnings,
    }


def curve(points: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The serving curve across rates from per-run summaries (what :func:`summarize` returns, or
    a run's ``serving`` section with its ``summary``, or any dict with ``rate``,
    ``request_throughput_per_s``, ``output_token_throughput_per_s`` and ``summary``), sorted by
    offered rate.

    ``knee_rate``: the highest rate served at :data:`KNEE_SERVED_SHARE` of its load or better,
    every lower rate too, below a rate that was not (``behind_rate``): where throughput stops
    rising with load. Only rates with a steady state count (:func:`keep_up`; ``unsteady_rates``
    are left out). None when the highest steady rate still kept up (the knee lies above:
    ``kept_up_rate`` says how far the server was seen to keep up) or the lowest did not. The share
    is ``served_share`` (completion rate over realised arrival rate) where a point has it, else
    request throughput over the offered rate (results written before ``served_share`` existed).
    ``saturation_rate``: the first rate whose p99 TTFT exceeds :data:`SATURATION_TTFT_FACTOR` times
    the lowest rate's p99 TTFT; None when none does (the sweep did not reach saturation)."""
    rows = []
    for p in points:
        if p.get("rate") is None:
            continue
        s = p.get("summary") or {}
        k = keep_up_of(p)
        share = k["served_share"]
        if share is None and "steady" not in p and not p.get("requests") and p.get("request_throughput_per_s") \
                is not None and p["rate"] > 0:
            share = min(p["request_throughput_per_s"] / p["rate"], 1.0)  # an older summary: its window
        rows.append({
            "rate": float(p["rate"]),
            "num_requests": (p.get("counts") or {}).get("total"),
            "request_throughput_per_s": p.get("request_throughput_per_s"),
            "output_token_throughput_per_s": p.get("output_token_throughput_per_s"),
            "goodput_per_s": p.get("goodput_per_s"),
            **{**k, "served_share": share},
            **{f"{m}_{q}": (s.get(m) or {}).get(q) for m in ("ttft_s", "itl_s", "e2e_s") for q in ("p50", "p99")},
        })
    rows.sort(key=lambda r: r["rate"])
    kept = behind = None
    for r in rows:
        if r["steady"] is False or r["served_share"] is None:
            continue
        if r["served_share"] < KNEE_SERVED_SHARE:
            behind = r["rate"]
            break
        kept = r["rate"]
    saturation = None
    base = rows[0]["ttft_s_p99"] if rows else None
    if base:
        for r in rows[1:]:
            if r["ttft_s_p99"] is not None and r["ttft_s_p99"] > SATURATION_TTFT_FACTOR * base:
                saturation = r["rate"]
                break
    return {"points": rows, "knee_rate": kept if behind is not None else None, "kept_up_rate": kept,
            "behind_rate": behind, "unsteady_rates": [r["rate"] for r in rows if r["steady"] is False],
            "saturation_rate": saturation, "low_load_ttft_p99_s": base, "saturation_factor": SATURATION_TTFT_FACTOR,
            "knee_served_share": KNEE_SERVED_SHARE, "steady_latencies": STEADY_LATENCIES}
