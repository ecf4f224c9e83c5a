"""A results file as one timeline in the Chrome trace-event format (Perfetto UI, chrome://tracing).

Everything is on fastprof's clock (CLOCK_MONOTONIC), written in microseconds as the format asks,
so tokens, GPU samples and stall events line up. Per configuration (one trace process each):

- thread "iterations": one slice per timed iteration (host start to end);
- thread "host tokens": one slice per token gap on the host clock (prefill, then token i), slow
  tokens named as such with their causes in ``args``;
- thread "device tokens": the same on the GPU event clock, placed from the iteration's start
  (the recorder's start event is recorded at the iteration's host start);
- thread "stalls": one slice per stall event (gc, cpu_wait, recompile, allocator, gpu_throttle,
  gpu_process);
- thread "traced iteration": when a kernel trace was taken, the last traced iteration (run after
  the timed ones) and its steps (prefill, then each decode step) on the device clock;
- threads "GPU stream N": that iteration's kernels, copies and memsets, one slice each, named
  (demangled) and classed (gemm, attention, elementwise, ...), one thread per CUDA stream;
- thread "host thread (traced iteration)": when the host breakdown recorded CUDA API calls, the
  last traced iteration's calls of the measured thread (the outermost ones), one slice each, named
  by the API function, its part (launch, sync, copy, ...) in ``args``;
- thread "modules (traced iteration)": that iteration's module intervals (model, decoder layers,
  attention, MLP, ...), nested as they ran;
- counters: every GPU sample field that has values (power, utilisation, clocks, memory, the
  performance counters), one counter track each.

The format is plain JSON (``{"traceEvents": [...]}``), written atomically.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastprof.analysis.host import api_category
from fastprof.results.io import json_safe, write_atomic
from fastprof.results.sweep import Sweep

TIDS = {"iterations": 1, "host tokens": 2, "device tokens": 3, "stalls": 4, "traced iteration": 5,
        "host thread (traced iteration)": 6, "modules (traced iteration)": 7}
_STREAM_TID0 = 100  # thread ids of the GPU streams: 100 + their order of appearance
_COUNTER_SKIP = {"timestamps_ns", "device", "iteration", "phase"}


def _us(ns: int | float) -> float:
    return ns / 1000.0


def trace_events(sweep: Sweep) -> list[dict[str, Any]]:
    """The trace events of every run of ``sweep`` that has a result."""
    events: list[dict[str, Any]] = []
    for pid, run in enumerate(sweep.runs, start=1):
        r = run.result
        if r is None:
            continue
        events.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": run.label()}})
        for name, tid in TIDS.items():
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
            events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
        slow = {(t["iteration"], t["token"]): t for t in (r.stalls or {}).get("slow_tokens") or []}
        for i, t in enumerate(r.traces()):
            start = int(t.host_start_ns)
            events.append({"ph": "X", "name": f"iteration {i}", "cat": "iteration", "pid": pid,
                           "tid": TIDS["iterations"], "ts": _us(start), "dur": _us(int(t.host_end_ns) - start),
                           "args": {"iteration": i, "tokens": int(t.n_marks)}})
            marks = [int(m) for m in t.host_marks_ns]
            prev = start
            for k, m in enumerate(marks):
                s = slow.get((i, k))
                args: dict[str, Any] = {"iteration": i, "token": k}
                name = "prefill" if k == 0 else f"token {k}"
                if s is not None:
                    name = f"SLOW token {k}"
                    args.update(excess_ms=s["excess_s"] * 1e3, causes=[c["kind"] for c in s["causes"]] or ["unexplained"])
                events.append({"ph": "X", "name": name, "cat": "slow" if s else "token", "pid": pid,
                               "tid": TIDS["host tokens"], "ts": _us(prev), "dur": _us(m - prev), "args": args})
                prev = m
            if t.device_marks_ns is not None:
                dprev = 0
                for k, m in enumerate(int(x) for x in t.device_marks_ns):
                    events.append({"ph": "X", "name": "prefill" if k == 0 else f"token {k}", "cat": "device",
                                   "pid": pid, "tid": TIDS["device tokens"], "ts": _us(start + dprev),
                                   "dur": _us(m - dprev), "args": {"iteration": i, "token": k}})
                    dprev = m
        for e in (r.stalls or {}).get("events") or []:
            events.append({"ph": "X", "name": e["kind"], "cat": "stall", "pid": pid, "tid": TIDS["stalls"],
                           "ts": _us(int(e["start_ns"])), "dur": _us(int(e["end_ns"]) - int(e["start_ns"])),
                           "args": e.get("detail") or {}})
        events += _kernel_events(pid, r.kernels or {})
        events += _host_events(pid, getattr(r, "host", None) or {})
        samples = ((r.hardware or {}).get("samples") or {})
        ts = samples.get("timestamps_ns") or []
        for field, values in samples.items():
            if field in _COUNTER_SKIP or not isinstance(values, list) or len(values) != len(ts):
                continue
            for t_ns, v in zip(ts, values):
                if v is None or (isinstance(v, float) and not math.isfinite(v)):
                    continue
                events.append({"ph": "C", "name": field, "pid": pid, "ts": _us(int(t_ns)), "args": {field: v}})
    return events


def _kernel_events(pid: int, kernels: dict[str, Any]) -> list[dict[str, Any]]:
    """The traced iteration's steps and its kernels, one thread per stream."""
    tl = kernels.get("timeline")
    if not kernels.get("available") or not tl:
        return []
    origin = int(tl["origin_ns"])
    events: list[dict[str, Any]] = []
    steps = ((kernels.get("per_step") or {}).get("step_s")) or []
    t = float(origin)
    for k, step_s in enumerate(steps):
        dur = step_s * 1e9
        events.append({"ph": "X", "name": "prefill" if k == 0 else f"step {k}", "cat": "traced", "pid": pid,
                       "tid": TIDS["traced iteration"], "ts": _us(t), "dur": _us(dur), "args": {"step": k}})
        t += dur
    streams: dict[int, int] = {}
    names, classes = tl["names"], tl.get("classes") or []
    for start, dur, stream, cls, name in zip(tl["start_ns"], tl["dur_ns"], tl.get("stream") or [0] * len(tl["dur_ns"]),
                                            tl.get("class") or [None] * len(tl["dur_ns"]), tl["name"]):
        if stream not in streams:
            tid = streams[stream] = _STREAM_TID0 + len(streams)
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                           "args": {"name": f"GPU stream {stream}"}})
            events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
        c = classes[cls] if cls is not None and cls < len(classes) else "kernel"
        events.append({"ph": "X", "name": names[name], "cat": c, "pid": pid, "tid": streams[stream],
                       "ts": _us(origin + int(start)), "dur": _us(int(dur)), "args": {"class": c, "stream": stream}})
    if tl.get("truncated"):
        events.append({"ph": "i", "name": f"{tl['truncated']} more kernel records not kept", "pid": pid,
                       "tid": TIDS["traced iteration"], "ts": _us(t), "s": "t"})
    return events


def _host_events(pid: int, host: dict[str, Any]) -> list[dict[str, Any]]:
    """The last traced iteration's CUDA API calls and module intervals (host clock)."""
    tl = host.get("timeline")
    if not host.get("available") or not tl:
        return []
    events: list[dict[str, Any]] = []
    api_names = tl.get("api_names") or []
    parts = {name: api_category(name) for name in api_names}
    for start, end, n in tl.get("api") or []:
        name = api_names[n] if n < len(api_names) else "CUDA call"
        events.append({"ph": "X", "name": name, "cat": "cuda_api", "pid": pid,
                       "tid": TIDS["host thread (traced iteration)"], "ts": _us(int(start)),
                       "dur": _us(int(end) - int(start)), "args": {"part": parts.get(name, "other_api")}})
    module_names = tl.get("module_names") or []
    rows = ((host.get("modules") or {}).get("rows")) or []
    # a parent before the children that start with it, so that viewers nest them
    for start, end, m in sorted(tl.get("modules") or [], key=lambda r: (r[0], -r[1])):
        args: dict[str, Any] = {"module": m}
        if m < len(rows):
            args["kind"] = rows[m].get("kind")
        events.append({"ph": "X", "name": module_names[m] if m < len(module_names) else f"module {m}",
                       "cat": "module", "pid": pid, "tid": TIDS["modules (traced iteration)"],
                       "ts": _us(int(start)), "dur": _us(int(end) - int(start)), "args": args})
    if tl.get("truncated"):
        events.append({"ph": "i", "name": "host timeline truncated (more calls or intervals than kept)", "pid": pid,
                       "tid": TIDS["host thread (traced iteration)"], "ts": _us(int(tl.get("end_ns") or 0)), "s": "t"})
    return events


def write_trace(sweep: Sweep, path: str) -> int:
    """Writes ``sweep`` as a Chrome trace-event JSON file; returns the number of events."""
    events = trace_events(sweep)
    doc = {"traceEvents": events, "displayTimeUnit": "ms",
           "otherData": {"producer": "fastprof", "clock": "CLOCK_MONOTONIC"}}
    write_atomic(path, json.dumps(json_safe(doc), separators=(",", ":"), allow_nan=False))
    return len(events)
