"""Slow tokens and their causes: stall events laid over the token gaps, on one clock.

A decode gap (the time between two consecutive tokens of one iteration, host clock) is **slow**
when it exceeds its iteration's median gap by more than

    max(k x 1.4826 x MAD, relative_floor x median, absolute_floor_s)

with MAD the median absolute deviation of that iteration's gaps (1.4826 x MAD estimates the
standard deviation of normal noise), ``k = 6``, ``relative_floor = 0.25`` and
``absolute_floor_s = 0.2 ms`` by default (:data:`DEFAULT_RULE`): robust to the slow tokens
themselves, and sub-millisecond jitter never counts. Its **excess** is the gap minus the median.

Each slow token lists the stall events that lie **inside its gap** (kind and overlap in seconds).
Every event is on the tokens' clock (CLOCK_MONOTONIC), but each source places it with its own
uncertainty ``u``: 50 us for events timed on the measured thread or from its marks (``gc``,
``recompile``, ``allocator``; :data:`DEFAULT_TOLERANCE_NS`), one read of the scheduler watch for
``cpu_wait`` (1 ms by default), one sampling period for the GPU sampler's events (their
``resolution_ns``). An event counts for the gap ``[lo, hi]`` only when it starts no earlier than
``lo - u`` and ends no later than ``hi + u``: an event longer than the gap plus ``2u`` (an
iteration-wide span, a throttling episode over many tokens) is never the cause of that one gap.
The only exception is ``cpu_wait``: the kernel credits a run-queue wait when the thread gets a CPU
back, so an interval's wait is a block of that length ending somewhere inside the interval (it may
have begun before it). When every such placement lies inside the gap (within ``u``) the whole wait
counts; otherwise only the wait that every placement shares with the gap, usually none. Allocator events mark the
gap in which free device memory dropped (the allocator took memory from the driver) and span
exactly that gap; how long the allocation took is not known, so their overlap is at most the
token's excess. Sources marked ``coarse`` in ``sources`` (e.g. the allocator's per-iteration
counters when free memory could not be read at each token) never explain a single token.

A cause counts when its overlap is at least 10% of the excess (and 0.1 ms). The causes of a token
explain at most their total overlap: the rest of its excess (all of it without a cause) is its
``unexplained_s`` (a plain ``time.sleep`` stays unexplained, even when the step's own work also
waited for a CPU). The summary gives per kind the number of slow tokens it explains and the excess
attributed to it (each token's explained excess split across its causes in proportion to their
overlap), and the unexplained excess. ``placement`` in the output
states the tolerances used and the coarse sources left out.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

DEFAULT_RULE = {"k_mad": 6.0, "relative_floor": 0.25, "absolute_floor_s": 0.0002}
KINDS = ("gc", "cpu_wait", "recompile", "allocator", "gpu_throttle", "gpu_process")
#: NVML clocks-event reasons that slow the GPU down (power cap, slowdowns, thermal, power brake).
THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
_MIN_CAUSE_S = 0.0001
_MIN_CAUSE_SHARE = 0.1
#: How far outside its gap an event may start or end and still be placed in it, for sources timed
#: on the measured thread or from its marks (gc callbacks, compile callbacks, the allocator's gaps).
DEFAULT_TOLERANCE_NS = 50_000
#: The same for sources read on their own schedule, when the event does not carry its ``resolution_ns``.
KIND_TOLERANCE_NS = {"cpu_wait": 1_000_000}


def slow_gaps(marks_ns: np.ndarray, rule: dict[str, float] | None = None) -> list[tuple[int, float, float]]:
    """(token index, gap s, excess s) of the slow decode gaps of one iteration; ``marks_ns`` are
    the absolute times of its tokens (the gap ending at token i, for i >= 1)."""
    r = {**DEFAULT_RULE, **(rule or {})}
    marks = np.asarray(marks_ns, dtype=np.int64)
    if marks.size < 3:
        return []
    gaps = np.diff(marks) / 1e9
    med = float(np.median(gaps))
    mad = float(np.median(np.abs(gaps - med)))
    threshold = med + max(r["k_mad"] * 1.4826 * mad, r["relative_floor"] * med, r["absolute_floor_s"])
    return [(int(i) + 1, float(g), float(g - med)) for i, g in enumerate(gaps) if g > threshold]


def tolerance_ns(event: dict[str, Any]) -> int:
    """The uncertainty of an event's place on the tokens' clock: its ``resolution_ns`` when the
    source gives one, else its kind's (:data:`KIND_TOLERANCE_NS`), else :data:`DEFAULT_TOLERANCE_NS`."""
    res = event.get("resolution_ns")
    if res is None:
        res = KIND_TOLERANCE_NS.get(event["kind"], DEFAULT_TOLERANCE_NS)
    return max(int(res), DEFAULT_TOLERANCE_NS)


def _overlap(event: dict[str, Any], lo: int, hi: int, excess: float) -> float:
    """Seconds of ``event`` that can be placed inside the gap ``[lo, hi]`` (0: not a cause of it)."""
    s, e = int(event["start_ns"]), int(event["end_ns"])
    tol = tolerance_ns(event)
    inside_gap = s >= lo - tol and e <= hi + tol
    inside = max(min(e, hi) - max(s, lo), 0)
    if event["kind"] == "cpu_wait":
        # The kernel credits a wait when the thread gets a CPU back: the wait is a block of
        # `wait` seconds ending somewhere in the read interval [s, e].
        wait_ns = float((event.get("detail") or {}).get("run_queue_wait_s") or 0.0) * 1e9
        if s - wait_ns >= lo - tol and e <= hi + tol:
            return wait_ns / 1e9  # wherever it ended, it lies inside the gap (within the tolerance)

        def shared(end: float) -> float:
            return max(min(end, hi) - max(end - wait_ns, lo), 0.0)

        # Otherwise only what every placement shares with the gap (the least is at an end of the interval).
        return min(shared(s), shared(e)) / 1e9
    if not inside_gap:
        return 0.0
    ov = inside / 1e9
    if event.get("span") == "gap":  # located to the gap, duration unknown
        ov = min(ov, excess)
    return ov


def explain(iterations: Sequence[np.ndarray], events: Sequence[dict[str, Any]], *,
            rule: dict[str, float] | None = None, coarse: Sequence[str] = ()) -> dict[str, Any]:
    """The ``slow_tokens``, ``summary``, ``unexplained_excess_s`` and ``placement`` of the ``stalls``
    section.

    ``iterations``: each timed iteration's absolute token times (ns, CLOCK_MONOTONIC);
    ``events``: the stall events on the same clock; ``coarse``: kinds that are located too coarsely
    to explain single tokens (their events, and any event marked ``"coarse": True``, are left out)."""
    coarse = set(coarse)
    ev = sorted((e for e in events if e["kind"] not in coarse and not e.get("coarse")),
                key=lambda e: int(e["start_ns"]))
    starts = np.asarray([int(e["start_ns"]) for e in ev], dtype=np.int64)
    longest = max((int(e["end_ns"]) - int(e["start_ns"]) for e in ev), default=0)
    slow: list[dict[str, Any]] = []
    summary = {k: {"count": 0, "excess_s": 0.0} for k in KINDS}
    unexplained = 0.0
    total_excess = 0.0
    for it, marks in enumerate(iterations):
        marks = np.asarray(marks, dtype=np.int64)
        for token, gap, excess in slow_gaps(marks, rule):
            lo, hi = int(marks[token - 1]), int(marks[token])
            first = int(np.searchsorted(starts, lo - longest, side="left"))
            last = int(np.searchsorted(starts, hi, side="right"))
            causes: dict[str, float] = {}
            for e in ev[first:last]:
                ov = _overlap(e, lo, hi, excess)
                if ov > 0:
                    causes[e["kind"]] = causes.get(e["kind"], 0.0) + ov
            causes = {k: v for k, v in causes.items() if v >= max(_MIN_CAUSE_S, _MIN_CAUSE_SHARE * excess)}
            total_excess += excess
            weight = sum(causes.values())
            explained = min(excess, weight)  # the causes explain no more than they overlap
            for k, v in causes.items():
                s = summary.setdefault(k, {"count": 0, "excess_s": 0.0})
                s["count"] += 1
                s["excess_s"] += explained * v / weight
            unexplained += excess - explained
            slow.append({"iteration": it, "token": token, "gap_s": gap, "excess_s": excess,
                         "unexplained_s": excess - explained,
                         "causes": [{"kind": k, "overlap_s": v} for k, v in sorted(causes.items(),
                                                                              key=lambda kv: -kv[1])]})
    placement = {"default_tolerance_ns": DEFAULT_TOLERANCE_NS, "kind_tolerance_ns": dict(KIND_TOLERANCE_NS),
                 "coarse": sorted(coarse),
                 "rule": "an event explains a gap only when it lies inside it within its source's tolerance "
                         "(cpu_wait: only the wait that must fall inside the gap); coarse sources never do"}
    return {"rule": {**DEFAULT_RULE, **(rule or {})}, "slow_tokens": slow, "summary": summary,
            "unexplained_excess_s": unexplained, "slow_excess_s": total_excess, "placement": placement}


def _runs(ts: np.ndarray, active: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
    """The indices of each maximal run of ``active`` samples among the ``valid`` ones (invalid
    samples, NaN readings, neither break nor join a run)."""
    idx = np.flatnonzero(valid)
    out: list[np.ndarray] = []
    cur: list[int] = []
    for i in idx:
        if active[i]:
            cur.append(int(i))
        elif cur:
            out.append(np.asarray(cur))
            cur = []
    if cur:
        out.append(np.asarray(cur))
    return out


def throttle_events(timestamps_ns: np.ndarray, reasons: np.ndarray, interval_ns: int) -> list[dict[str, Any]]:
    """``gpu_throttle`` events from the sampler's clocks-event reasons: runs of samples whose
    bitmask has a slowdown reason (:data:`THROTTLE_MASK`), each extended by one sample interval."""
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    rs = np.asarray(reasons, dtype=np.float64)
    valid = np.isfinite(rs)
    bits = np.zeros(rs.shape, dtype=np.int64)
    bits[valid] = rs[valid].astype(np.int64) & THROTTLE_MASK
    return [{"kind": "gpu_throttle", "start_ns": int(ts[r[0]]) - interval_ns, "end_ns": int(ts[r[-1]]),
             "resolution_ns": int(interval_ns), "detail": {"reasons": int(np.bitwise_or.reduce(bits[r]))}}
            for r in _runs(ts, bits != 0, valid)]


def process_events(timestamps_ns: np.ndarray, others: np.ndarray, interval_ns: int) -> list[dict[str, Any]]:
    """``gpu_process`` events from the sampler's count of other compute processes on the GPU: runs
    of samples with more of them than at the first sample (processes that appeared while fastprof
    measured; those present from the start are part of every token's conditions), each run from
    one sampling period of that field before its first sample to its last."""
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    vals = np.asarray(others, dtype=np.float64)
    valid = np.isfinite(vals)
    if not valid.any():
        return []
    base = vals[valid][0]
    return [{"kind": "gpu_process", "start_ns": int(ts[r[0]]) - interval_ns, "end_ns": int(ts[r[-1]]),
             "resolution_ns": int(interval_ns),
             "detail": {"other_processes": int(vals[r].max()), "at_start": int(base)}}
            for r in _runs(ts, np.where(valid, vals, -np.inf) > base, valid)]


def section(iterations: Sequence[np.ndarray], events: Sequence[dict[str, Any]], sources: dict[str, Any], *,
            cost: dict[str, Any] | None = None, rule: dict[str, float] | None = None) -> dict[str, Any]:
    """The result's ``stalls`` section: ``sources`` (each available, or its reason; those marked
    ``coarse`` are not used as causes of single tokens), ``events``, and :func:`explain`'s slow
    tokens and summary."""
    coarse = [k for k, v in sources.items() if isinstance(v, dict) and v.get("coarse")]
    return {"sources": sources, "events": list(events), **explain(iterations, events, rule=rule, coarse=coarse),
            "cost": cost or {}}
