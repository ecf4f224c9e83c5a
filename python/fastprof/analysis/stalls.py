"""Slow tokens and their causes: stall events laid over the token gaps, on one clock.

A decode gap (the time between two consecutive tokens of one iteration, host clock) is **slow**
when it exceeds its iteration's median gap by more than

    max(k x 1.4826 x MAD, relative_floor x median, absolute_floor_s)

with MAD the median absolute deviation of that iteration's gaps (1.4826 x MAD estimates the
standard deviation of normal noise), ``k = 6``, ``relative_floor = 0.25`` and
``absolute_floor_s = 0.2 ms`` by default (:data:`DEFAULT_RULE`): robust to the slow tokens
themselves, and sub-millisecond jitter never counts. Its **excess** is the gap minus the median.

Each slow token lists the stall events that overlap its gap (kind and overlap in seconds). For
``cpu_wait`` intervals (read every millisecond), the overlap is the run-queue wait they hold,
scaled by the share of the interval inside the gap. A cause counts when its overlap is at least
10% of the excess (and 0.1 ms); a slow gap without one is **unexplained**. The summary gives per
kind the number of slow tokens it explains and the excess attributed to it (each token's excess
split across its causes in proportion to their overlap), and the unexplained excess.
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


def _overlap(event: dict[str, Any], lo: int, hi: int) -> float:
    s, e = int(event["start_ns"]), int(event["end_ns"])
    inside = min(e, hi) - max(s, lo)
    if event["kind"] == "cpu_wait":
        if inside <= 0 and not (s <= lo <= e or s <= hi <= e):
            return 0.0
        width = max(e - s, 1)
        wait = float((event.get("detail") or {}).get("run_queue_wait_s") or 0.0)
        return wait * max(inside, 0) / width
    return max(inside, 0) / 1e9


def explain(iterations: Sequence[np.ndarray], events: Sequence[dict[str, Any]], *,
            rule: dict[str, float] | None = None) -> dict[str, Any]:
    """The ``slow_tokens``, ``summary`` and ``unexplained_excess_s`` of the ``stalls`` section.

    ``iterations``: each timed iteration's absolute token times (ns, CLOCK_MONOTONIC);
    ``events``: the stall events on the same clock."""
    ev = sorted(events, key=lambda e: int(e["start_ns"]))
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
                ov = _overlap(e, lo, hi)
                if ov > 0:
                    causes[e["kind"]] = causes.get(e["kind"], 0.0) + ov
            causes = {k: v for k, v in causes.items() if v >= max(_MIN_CAUSE_S, _MIN_CAUSE_SHARE * excess)}
            total_excess += excess
            if causes:
                weight = sum(causes.values())
                for k, v in causes.items():
                    s = summary.setdefault(k, {"count": 0, "excess_s": 0.0})
                    s["count"] += 1
                    s["excess_s"] += excess * v / weight
            else:
                unexplained += excess
            slow.append({"iteration": it, "token": token, "gap_s": gap, "excess_s": excess,
                         "causes": [{"kind": k, "overlap_s": v} for k, v in sorted(causes.items(),
                                                                              key=lambda kv: -kv[1])]})
    return {"rule": {**DEFAULT_RULE, **(rule or {})}, "slow_tokens": slow, "summary": summary,
            "unexplained_excess_s": unexplained, "slow_excess_s": total_excess}


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
             "detail": {"reasons": int(np.bitwise_or.reduce(bits[r]))}}
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
             "detail": {"other_processes": int(vals[r].max()), "at_start": int(base)}}
            for r in _runs(ts, np.where(valid, vals, -np.inf) > base, valid)]


def section(iterations: Sequence[np.ndarray], events: Sequence[dict[str, Any]], sources: dict[str, Any], *,
            cost: dict[str, Any] | None = None, rule: dict[str, float] | None = None) -> dict[str, Any]:
    """The result's ``stalls`` section: ``sources`` (each available, or its reason), ``events``,
    and :func:`explain`'s slow tokens and summary."""
    return {"sources": sources, "events": list(events), **explain(iterations, events, rule=rule),
            "cost": cost or {}}
