"""The host side of each decode step: pure functions from the traced iterations' token marks, the
CUDA API records of the kernel tracer (:class:`fastprof.capture.kernel_trace.ApiTrace`) and the
module and generate-loop marks (:class:`fastprof.capture.host_trace.HostSpans`), all on one clock,
to the result's ``host`` section.

A decode step is the time between two tokens reaching the host (the ``k-1``-th and ``k``-th host
mark); the prefill step (request start to the first token) is kept apart. Two views of every
decode step, each adding up to the step exactly:

- **By CUDA API** (``parts_s``, needs the CUPTI API records): kernel launches, graph launches,
  copies, memsets, calls that wait for the GPU (stream, event and device synchronisation,
  blocking copies), other CUDA calls, and the rest, ``python_framework``: the step minus the
  calls. Calls are the outermost ones of the measured thread (a driver call made inside a
  runtime call is counted once, in the runtime call), clipped to the step.
- **By place** (``modules`` and ``loop``, no GPU needed): the generate loop's segments (the next
  step's input preparation and stopping criteria, the forward pass, the work after it, logits
  processors, sampling and the token's trip to the host) and, inside the forward pass, each
  hooked module's self time (its time minus its hooked children's), grouped by kind, so that
  embeddings + decoder layers (+ attention, MLP, norms inside them) + final norm + LM head + the
  forward's own code add up to the forward pass.

Figures per step are means over decode steps (means add up; medians would not), with the
median step beside them. Each launch is matched to its kernel through the correlation id: the
launch call's cost, the delay from the call to the kernel's start, and the share of kernels
that started on an idle stream, that is, the GPU waiting for the host.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from fastprof.capture.host_trace import LOOP_MARKS, MODULE_KINDS, HostSpans, iter_intervals

#: CUDA API categories, in report order; ``python_framework`` is what is left of the step.
API_PARTS = ("launch", "graph_launch", "copy", "memset", "sync", "other_api")
PARTS = (*API_PARTS, "python_framework")
PART_LABELS = {
    "launch": "kernel launches", "graph_launch": "graph launches", "copy": "async copies",
    "memset": "memsets", "sync": "waiting for the GPU", "other_api": "other CUDA calls",
    "python_framework": "Python and framework",
}
#: Generate-loop segments, in the order they run within a step.
LOOP_PARTS = ("prepare", "forward", "after_forward", "processors", "sample_to_host")
LOOP_LABELS = {
    "prepare": "stopping criteria and the next step's inputs", "forward": "forward pass",
    "after_forward": "after forward (cache update, logits, built-in processors)",
    "processors": "logits processors", "sample_to_host": "sampling and the token's trip to the host",
}
#: At most this many steps of per-step arrays (the last traced iteration's) go into the result.
MAX_PER_STEP = 4096
#: At most this many API calls and module intervals of the last traced iteration go into
#: ``host.timeline`` (for the trace export).
MAX_TIMELINE = 200_000

_SYNC = re.compile(r"synchronize", re.IGNORECASE)
_GRAPH = re.compile(r"graphlaunch", re.IGNORECASE)
_LAUNCH = re.compile(r"^cu(da)?Launch|LaunchKernel|LaunchCooperative", re.IGNORECASE)
_COPY = re.compile(r"memcpy", re.IGNORECASE)
_MEMSET = re.compile(r"memset", re.IGNORECASE)


def api_category(name: str) -> str:
    """The part of :data:`API_PARTS` that a CUDA runtime or driver call belongs to, by its name
    (``cudaLaunchKernel_v7000``, ``cuLaunchKernel``, ``cudaGraphLaunch_v10000``,
    ``cudaStreamSynchronize_v3020``, ``cudaMemcpyAsync_v3020``, ...). A copy without ``Async``
    in its name blocks until the GPU has finished it, so it counts as waiting."""
    if _GRAPH.search(name):
        return "graph_launch"
    if _LAUNCH.search(name):
        return "launch"
    if _SYNC.search(name):
        return "sync"
    if _COPY.search(name):
        return "copy" if "async" in name.lower() else "sync"
    if _MEMSET.search(name):
        return "memset"
    return "other_api"


def outermost(start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
    """Indices (into the given arrays) of the calls not nested inside an earlier call, in start
    order. One thread's calls nest or follow each other; they never partly overlap."""
    s = np.asarray(start_ns, dtype=np.int64)
    e = np.asarray(end_ns, dtype=np.int64)
    if s.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-e, s))  # by start, the longer call first when two start together
    e_sorted = e[order]
    reach = np.maximum.accumulate(e_sorted)
    keep = np.ones(order.size, dtype=bool)
    keep[1:] = e_sorted[1:] > reach[:-1]
    return order[keep]


def _category_table(names: Sequence[str]) -> np.ndarray:
    """:func:`api_category` of every name of a name table, indexable by ``name_id``."""
    return np.array([api_category(n) for n in names] or ["other_api"], dtype=object)


def _thread_calls(api: Any, thread: int | None, within: tuple[int, int] | None = None) -> np.ndarray:
    """Indices of ``thread``'s outermost calls in ``api`` (every thread's when None), in start
    order; with ``within`` = (lo, hi), among the calls lying wholly inside it."""
    start, end = np.asarray(api.start_ns), np.asarray(api.end_ns)
    sel = np.ones(len(api), dtype=bool) if thread is None else np.asarray(api.thread) == np.uint32(thread)
    if within is not None:
        sel &= (start >= within[0]) & (end <= within[1])
    idx = np.flatnonzero(sel)
    return idx[outermost(start[idx], end[idx])]


def measured_thread(thread: np.ndarray, names: Sequence[str], name_id: np.ndarray,
                    candidates: Sequence[int] = ()) -> int | None:
    """The thread whose calls to analyse: the first of ``candidates`` (CUPTI's threadId is the
    OS thread id or the pthread handle truncated to 32 bits, depending on the platform, so both
    are offered) found among the records, else the thread with the most launches."""
    thread = np.asarray(thread, dtype=np.uint32)
    if thread.size == 0:
        return None
    present = set(np.unique(thread).tolist())
    for c in candidates:
        c32 = int(c) & 0xFFFFFFFF
        if c32 in present:
            return c32
    cats = _category_table(names)[name_id]
    launches = thread[(cats == "launch") | (cats == "graph_launch")]
    pool = launches if launches.size else thread
    values, counts = np.unique(pool, return_counts=True)
    return int(values[np.argmax(counts)])


def _bounds(host_start_ns: int, marks_ns: np.ndarray) -> np.ndarray:
    """Step boundaries [start, mark0, mark1, ...]: step 0 is prefill, step k>0 decode step k."""
    return np.concatenate([[int(host_start_ns)], np.asarray(marks_ns, dtype=np.int64)])


def _clipped_sums(bounds: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Per step (len(bounds)-1), the total of [s, e) clipped to the step."""
    n = bounds.size - 1
    out = np.zeros(max(n, 0), dtype=np.float64)
    if n <= 0 or s.size == 0:
        return out
    lo, hi = bounds[:-1], bounds[1:]
    first = np.clip(np.searchsorted(bounds, s, side="right") - 1, 0, n - 1)
    last = np.clip(np.searchsorted(bounds, e, side="left") - 1, 0, n - 1)
    for k in np.unique(np.concatenate([first, last])):  # calls rarely straddle: handle by step
        sel = (first <= k) & (last >= k)
        out[k] = float((np.minimum(e[sel], hi[k]) - np.maximum(s[sel], lo[k])).clip(min=0).sum())
    return out


def _counts(bounds: np.ndarray, s: np.ndarray) -> np.ndarray:
    n = bounds.size - 1
    if n <= 0:
        return np.zeros(0)
    idx = np.searchsorted(bounds, s, side="right") - 1
    idx = idx[(idx >= 0) & (idx < n) & (s < bounds[-1])]
    return np.bincount(idx, minlength=n).astype(np.float64)


def api_parts(iterations: Sequence[tuple[int, np.ndarray]], api: Any, *, thread: int | None) -> dict[str, Any]:
    """Per decode step (rows of all iterations, prefill left out), the time and count of each
    :data:`API_PARTS` category from ``api`` (an ApiTrace) restricted to ``thread``, plus the
    step's length. Returns ``{"step_ns": (n,), "ns": {part: (n,)}, "calls": {part: (n,)},
    "iteration": (n,)}``."""
    keep = _thread_calls(api, thread)
    s, e = np.asarray(api.start_ns)[keep], np.asarray(api.end_ns)[keep]
    cats = _category_table(api.names)[np.asarray(api.name_id)[keep]]
    steps, ns, calls, it_idx = [], {p: [] for p in API_PARTS}, {p: [] for p in API_PARTS}, []
    for i, (start, marks) in enumerate(iterations):
        b = _bounds(start, marks)
        if b.size < 3:
            continue
        steps.append(np.diff(b)[1:])
        it_idx.append(np.full(b.size - 2, i))
        for p in API_PARTS:
            m = cats == p
            ns[p].append(_clipped_sums(b, s[m], e[m])[1:])
            calls[p].append(_counts(b, s[m])[1:])
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    return {"step_ns": cat(steps).astype(np.float64), "ns": {p: cat(v) for p, v in ns.items()},
            "calls": {p: cat(v) for p, v in calls.items()}, "iteration": cat(it_idx).astype(int)}


def launch_stats(api: Any, kernels: Any, *, thread: int | None, lo: int | None = None,
                 hi: int | None = None) -> dict[str, Any]:
    """Launch calls matched to the kernels they launched (correlation id): cost per call, the
    delay from the call's start to the kernel's start, the share of kernels that began on an
    idle stream (the stream's previous kernel had ended before the launch call returned: the GPU
    was waiting for the host), and kernels per graph launch. Calls outside [lo, hi] are left out."""
    sel = np.ones(len(api), dtype=bool) if thread is None else np.asarray(api.thread) == np.uint32(thread)
    s, e = np.asarray(api.start_ns, dtype=np.int64), np.asarray(api.end_ns, dtype=np.int64)
    if lo is not None:
        sel &= s >= lo
    if hi is not None:
        sel &= s <= hi
    cats = _category_table(api.names)[np.asarray(api.name_id)] if len(api) else np.zeros(0, dtype=object)
    corr = np.asarray(api.correlation, dtype=np.int64)
    launch = sel & (cats == "launch")
    graph = sel & (cats == "graph_launch")
    out: dict[str, Any] = {"launches": int(launch.sum()), "graph_launches": int(graph.sum())}
    dur = (e - s)[launch]
    if dur.size:
        out["launch_s"] = {"mean": float(dur.mean()) / 1e9, "p50": float(np.median(dur)) / 1e9,
                           "p90": float(np.percentile(dur, 90)) / 1e9}
    if kernels is None or len(kernels) == 0:
        return out
    kk = np.asarray(kernels.kind) == 0
    k_start = np.asarray(kernels.start_ns, dtype=np.int64)[kk]
    k_end = np.asarray(kernels.end_ns, dtype=np.int64)[kk]
    k_corr = np.asarray(kernels.correlation, dtype=np.int64)[kk]
    k_stream = np.asarray(kernels.stream, dtype=np.int64)[kk]
    # previous kernel's end on the same stream, for each kernel
    order = np.lexsort((k_start, k_stream))
    prev_end = np.full(k_start.size, np.iinfo(np.int64).min, dtype=np.int64)
    if order.size > 1:
        same = k_stream[order][1:] == k_stream[order][:-1]
        prev = np.where(same, k_end[order][:-1], np.iinfo(np.int64).min)
        prev_end[order[1:]] = prev
    by_corr = {int(c): j for j, c in enumerate(k_corr.tolist())}
    delays, waiting = [], []
    for c, cs, ce in zip(corr[launch].tolist(), s[launch].tolist(), e[launch].tolist()):
        j = by_corr.get(int(c))
        if j is None:
            continue
        delays.append(k_start[j] - cs)
        waiting.append(prev_end[j] <= ce)
    out["matched"] = len(delays)
    if delays:
        d = np.asarray(delays, dtype=np.float64)
        out["launch_to_kernel_s"] = {"p50": float(np.median(d)) / 1e9, "p10": float(np.percentile(d, 10)) / 1e9,
                                     "p90": float(np.percentile(d, 90)) / 1e9}
        out["gpu_waiting_share"] = float(np.mean(waiting))
    if graph.any():
        kernel_corr_counts = dict(zip(*np.unique(k_corr, return_counts=True)))
        per = [int(kernel_corr_counts.get(int(c), 0)) for c in corr[graph].tolist()]
        out["kernels_per_graph_launch"] = float(np.mean(per)) if per else None
    return out


def top_functions(iterations: Sequence[tuple[int, np.ndarray]], api: Any, *, thread: int | None,
                  top: int = 12) -> list[dict[str, Any]]:
    """The CUDA functions with the most time per decode step (outermost calls of ``thread`` in the
    decode steps): name, part, calls per step, seconds per step and per call."""
    keep = _thread_calls(api, thread)
    s, e, nid = np.asarray(api.start_ns)[keep], np.asarray(api.end_ns)[keep], np.asarray(api.name_id)[keep]
    inside = np.zeros(s.size, dtype=bool)
    steps = 0
    for start, marks in iterations:
        if marks.size < 2:
            continue
        inside |= (s >= marks[0]) & (s < marks[-1])
        steps += marks.size - 1
    if not steps or not inside.any():
        return []
    dur = (e - s)[inside].astype(np.float64)
    ids, inv = np.unique(nid[inside], return_inverse=True)
    total = np.bincount(inv, weights=dur)
    count = np.bincount(inv)
    order = np.argsort(-total)[:top]
    return [{"name": api.names[int(ids[i])], "part": api_category(api.names[int(ids[i])]),
             "calls_per_step": float(count[i]) / steps, "s_per_step": float(total[i]) / 1e9 / steps,
             "s_per_call": float(total[i]) / 1e9 / float(count[i])} for i in order]


def module_parts(iterations: Sequence[tuple[int, np.ndarray]], spans: HostSpans) -> dict[str, Any]:
    """Per decode step (rows of all iterations), each module's inclusive and self time and the
    generate loop's segments (:data:`LOOP_PARTS`). Returns ``{"step_ns", "inclusive_ns" (n, m),
    "self_ns" (n, m), "calls" (n, m), "loop_ns": {part: (n,)}, "iteration"}``."""
    modules = spans.modules
    m = len(modules)
    intervals = list(iter_intervals(spans))
    mi = np.array([i for i, _, _ in intervals], dtype=np.int64)
    t0 = np.array([a for _, a, _ in intervals], dtype=np.int64)
    t1 = np.array([b for _, _, b in intervals], dtype=np.int64)
    parent = np.array([info.parent for info in modules], dtype=np.int64)
    roots = [i for i, info in enumerate(modules) if info.parent < 0]
    root = roots[0] if roots else None
    marks_pb = spans.t_ns[spans.code == LOOP_MARKS["processors_begin"]]
    marks_pe = spans.t_ns[spans.code == LOOP_MARKS["processors_end"]]
    marks_ready = spans.t_ns[spans.code == LOOP_MARKS["inputs_ready"]]
    marks_done = spans.t_ns[spans.code == LOOP_MARKS["forward_done"]]
    rows_incl, rows_self, rows_calls, steps, it_idx = [], [], [], [], []
    loop: dict[str, list[np.ndarray]] = {p: [] for p in LOOP_PARTS}
    for it, (start, marks) in enumerate(iterations):
        b = _bounds(start, marks)
        n = b.size - 1
        if n < 2:
            continue
        inside = (t0 >= b[0]) & (t1 <= b[-1])
        step = np.searchsorted(b, t0[inside], side="right") - 1
        mods = mi[inside]
        dur = (t1 - t0)[inside].astype(np.float64)
        incl = np.zeros((n, m))
        calls = np.zeros((n, m))
        np.add.at(incl, (step, mods), dur)
        np.add.at(calls, (step, mods), 1)
        child = np.zeros((n, m))
        has_parent = parent[mods] >= 0
        np.add.at(child, (step[has_parent], parent[mods][has_parent]), dur[has_parent])
        rows_incl.append(incl[1:])
        rows_self.append((incl - child)[1:])
        rows_calls.append(calls[1:])
        steps.append(np.diff(b)[1:])
        it_idx.append(np.full(n - 1, it))
        # loop segments: the forward pass as the loop sees it (the inputs-ready and forward-done
        # markers; else the root module's hooks) and the processor markers
        seg = {p: np.full(n, np.nan) for p in LOOP_PARTS}
        f_enter = _first_in_steps(b, marks_ready)
        f_exit = _first_in_steps(b, marks_done)
        if not (f_enter >= 0).any() and root is not None:
            rsel = inside & (mi == root)
            r_step = np.searchsorted(b, t0[rsel], side="right") - 1
            for k, a, z in zip(r_step[::-1].tolist(), t0[rsel][::-1].tolist(), t1[rsel][::-1].tolist()):
                f_enter[k], f_exit[k] = a, z  # the first forward of the step wins (reverse loop)
        if (f_enter >= 0).any():
            pb = _first_in_steps(b, marks_pb)
            pe = _first_in_steps(b, marks_pe)
            ok = (f_enter >= 0) & (f_exit >= f_enter)
            seg["forward"][ok] = (f_exit - f_enter)[ok]
            seg["prepare"][ok] = (f_enter - b[:-1])[ok]
            full = ok & (pb >= 0) & (pe >= 0)
            seg["after_forward"][full] = (pb - f_exit)[full]
            seg["processors"][full] = (pe - pb)[full]
            seg["sample_to_host"][full] = (b[1:] - pe)[full]
            partial = ok & ~full
            seg["sample_to_host"][partial] = (b[1:] - f_exit)[partial]
            seg["after_forward"][partial] = 0.0
            seg["processors"][partial] = 0.0
        for p in LOOP_PARTS:
            loop[p].append(seg[p][1:])
    cat = (lambda xs, shape=(0,): np.concatenate(xs) if xs else np.zeros(shape))
    return {"step_ns": cat(steps).astype(np.float64), "inclusive_ns": cat(rows_incl, (0, m)),
            "self_ns": cat(rows_self, (0, m)), "calls": cat(rows_calls, (0, m)),
            "loop_ns": {p: cat(v) for p, v in loop.items()}, "iteration": cat(it_idx).astype(int)}


def _first_in_steps(bounds: np.ndarray, t: np.ndarray) -> np.ndarray:
    n = bounds.size - 1
    out = np.full(n, -1, dtype=np.int64)
    if t.size == 0 or n <= 0:
        return out
    idx = np.searchsorted(bounds, t, side="right") - 1
    ok = (idx >= 0) & (idx < n) & (t <= bounds[-1])
    for k, v in zip(idx[ok][::-1].tolist(), t[ok][::-1].tolist()):
        out[k] = v
    return out


def _mean_s(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) / 1e9 if x.size else None


def section(iterations: Sequence[tuple[int, np.ndarray]], *, spans: HostSpans | None = None,
            api: Any = None, kernels: Any = None, thread_candidates: Sequence[int] = (),
            api_reason: str | None = None, modules_reason: str | None = None,
            itl_s_untraced: float | None = None, cost: dict[str, Any] | None = None,
            api_mode: str | None = None, python: Any = None) -> dict[str, Any]:
    """The result's ``host`` section from the traced iterations (``(host_start_ns, host_marks_ns)``
    each), the module/loop marks and the CUDA API records (each None with its reason when not
    recorded)."""
    iterations = [(int(s), np.asarray(m, dtype=np.int64)) for s, m in iterations]
    diffs = [np.diff(m) for _, m in iterations if m.size > 1]
    steps = np.concatenate(diffs) if diffs else np.zeros(0)
    out: dict[str, Any] = {"available": steps.size > 0, "iterations": len(iterations), "decode_steps": int(steps.size)}
    if not steps.size:
        out["reason"] = "no traced decode step (fewer than two tokens per traced iteration)"
        return out
    out["step_s"] = {"mean": float(steps.mean()) / 1e9, "p50": float(np.median(steps)) / 1e9}
    if itl_s_untraced:
        out["itl_s_untraced"] = float(itl_s_untraced)
        out["added_s_per_step"] = float(steps.mean()) / 1e9 - float(itl_s_untraced)
    if cost:
        out["cost"] = dict(cost)
    last_start, last_marks = iterations[-1]
    n_last = max(last_marks.size - 1, 0)
    keep = slice(max(n_last - MAX_PER_STEP, 0), n_last)
    per_step: dict[str, Any] = {"iteration": len(iterations) - 1,
                                "step_s": (np.diff(last_marks)[keep] / 1e9).tolist()}

    # ---- by CUDA API -------------------------------------------------------------------
    if api is not None and len(api):
        thread = measured_thread(api.thread, list(api.names), np.asarray(api.name_id), thread_candidates)
        parts = api_parts(iterations, api, thread=thread)
        step_ns = parts["step_ns"]
        api_total = sum(parts["ns"][p] for p in API_PARTS)
        rest = step_ns - api_total
        parts_s = {p: float(parts["ns"][p].mean()) / 1e9 for p in API_PARTS}
        parts_s["python_framework"] = float(rest.mean()) / 1e9
        calls = {p: float(parts["calls"][p].mean()) for p in API_PARTS}
        lo = int(iterations[0][1][0]) if iterations[0][1].size else None
        out["api"] = {"available": True, "mode": api_mode, "thread": thread, "records": int(len(api)),
                      "parts_s": parts_s, "functions": top_functions(iterations, api, thread=thread),
                      "shares": {p: (v / out["step_s"]["mean"] if out["step_s"]["mean"] else None)
                                 for p, v in parts_s.items()},
                      "calls_per_step": calls, **launch_stats(api, kernels, thread=thread, lo=lo)}
        last = parts["iteration"] == len(iterations) - 1
        per_step["parts_s"] = {p: (parts["ns"][p][last][keep] / 1e9).tolist() for p in API_PARTS}
        per_step["parts_s"]["python_framework"] = (rest[last][keep] / 1e9).tolist()
    else:
        out["api"] = {"available": False, "reason": api_reason or "no CUDA API records"}

    # ---- by place: modules and the generate loop ---------------------------------------------
    if spans is not None and len(spans):
        mp = module_parts(iterations, spans)
        mods = spans.modules
    else:
        mp, mods = None, []
    if mp is not None and mods:
        self_mean = mp["self_ns"].mean(axis=0) / 1e9 if mp["self_ns"].size else np.zeros(len(mods))
        incl_mean = mp["inclusive_ns"].mean(axis=0) / 1e9 if mp["inclusive_ns"].size else np.zeros(len(mods))
        calls = mp["calls"].mean(axis=0) if mp["calls"].size else np.zeros(len(mods))
        rows = [{"name": info.name, "kind": info.kind, "layer": info.layer, "parent": info.parent,
                 "calls_per_step": float(calls[i]), "s_per_step": float(incl_mean[i]),
                 "self_s_per_step": float(self_mean[i])} for i, info in enumerate(mods)]
        by_kind = {k: 0.0 for k in MODULE_KINDS}
        for r in rows:
            by_kind[r["kind"]] += r["self_s_per_step"]
        layers = [r for r in rows if r["kind"] == "layer"]
        forward = [r for r in rows if r["parent"] < 0]
        out["modules"] = {
            "available": True, "count": len(mods), "rows": rows,
            "self_s_by_kind": {k: v for k, v in by_kind.items() if v or any(r["kind"] == k for r in rows)},
            "forward_s": float(sum(r["s_per_step"] for r in forward)),
            "layers": len(layers),
            "layer_s_each": float(np.mean([r["s_per_step"] for r in layers])) if layers else None,
            "dropped": int(spans.dropped),
        }
    else:
        out["modules"] = {"available": False, "reason": modules_reason or "no module marks"}
    if mp is not None:
        loop = {p: _mean_s(mp["loop_ns"][p]) for p in LOOP_PARTS}
        outside = None
        if loop.get("forward") is not None:
            outside = sum(v for p, v in loop.items() if p != "forward" and v is not None)
        out["loop"] = {"available": loop.get("forward") is not None, "parts_s": loop, "outside_forward_s": outside}
        last = mp["iteration"] == len(iterations) - 1
        per_step["loop_s"] = {p: [None if not np.isfinite(v) else v / 1e9 for v in mp["loop_ns"][p][last][keep]]
                              for p in LOOP_PARTS}
        if not out["loop"]["available"]:
            out["loop"]["reason"] = "the generate loop's markers were not seen in the decode steps"
        kinds_per_step = {}
        for k in MODULE_KINDS:
            cols = [i for i, info in enumerate(mods) if info.kind == k]
            if cols:
                kinds_per_step[k] = (mp["self_ns"][last][:, cols].sum(axis=1)[keep] / 1e9).tolist()
        per_step["module_self_s"] = kinds_per_step
    else:
        out["loop"] = {"available": False, "reason": modules_reason or "no generate-loop marks"}
    if python is not None:
        out["python"] = python_part(iterations, python)
    out["per_step"] = per_step
    out["timeline"] = _timeline(last_start, last_marks, spans, api, out.get("api", {}).get("thread"))
    return out


#: Functions listed in ``host.python.functions``.
MAX_PY_FUNCTIONS = 25


def python_part(iterations: Sequence[tuple[int, np.ndarray]], samples: Any) -> dict[str, Any]:
    """Where the Python time of the decode steps goes (``host.python``): py-spy's samples
    (:class:`fastprof.capture.pysampler.PythonSamples`) of the measured thread inside the decode
    steps, as each function's self time (innermost Python frame, native code it called included)
    and total time (anywhere on the stack) per step."""
    from fastprof.capture.pysampler import self_time

    if not getattr(samples, "available", False):
        return {"available": False, "reason": getattr(samples, "reason", None) or "no Python samples"}
    windows = [(int(m[0]), int(m[-1])) for _, m in iterations if m.size > 1]
    steps = sum(m.size - 1 for _, m in iterations if m.size > 1)
    table = self_time(samples, windows)
    sampled = sum(v["self_ns"] for v in table.values())
    span = sum(hi - lo for lo, hi in windows)
    rows = sorted(table.items(), key=lambda kv: -kv[1]["self_ns"])[:MAX_PY_FUNCTIONS]
    return {"available": True, "tool": samples.tool, "rate_hz": samples.rate,
            "alignment_s": samples.align_ns / 1e9,
            "coverage": sampled / span if span else None,
            "functions": [{"function": name, "file": filename, "self_s_per_step": v["self_ns"] / 1e9 / steps,
                           "total_s_per_step": v["total_ns"] / 1e9 / steps,
                           "self_share": v["self_ns"] / sampled if sampled else None}
                          for (name, filename), v in rows]}


def _timeline(start: int, marks: np.ndarray, spans: HostSpans | None, api: Any, thread: int | None) -> dict[str, Any]:
    """The last traced iteration's CUDA API calls of the measured thread (outermost) and module
    intervals, as ``[start_ns, end_ns, index]`` rows (``api_names`` / ``module_names`` index them),
    for the trace export. At most :data:`MAX_TIMELINE` rows of each; ``truncated`` says so."""
    hi = int(marks[-1]) if marks.size else int(start)
    out: dict[str, Any] = {"start_ns": int(start), "end_ns": hi, "api": [], "api_names": [], "modules": [],
                           "module_names": [], "truncated": False}
    if api is not None and len(api):
        keep = np.sort(_thread_calls(api, thread, within=(start, hi)))
        out["truncated"] |= keep.size > MAX_TIMELINE
        keep = keep[:MAX_TIMELINE]
        used = np.unique(np.asarray(api.name_id)[keep]) if keep.size else np.zeros(0, dtype=np.int64)
        remap = {int(n): i for i, n in enumerate(used.tolist())}
        out["api_names"] = [api.names[int(n)] for n in used.tolist()]
        out["api"] = [[int(a), int(b), remap[int(n)]] for a, b, n in
                      zip(np.asarray(api.start_ns)[keep].tolist(), np.asarray(api.end_ns)[keep].tolist(),
                          np.asarray(api.name_id)[keep].tolist())]
    if spans is not None and len(spans):
        rows = [[a, b, i] for i, a, b in iter_intervals(spans.window(start, hi))]
        rows.sort()
        out["truncated"] |= len(rows) > MAX_TIMELINE
        out["modules"] = rows[:MAX_TIMELINE]
        out["module_names"] = [m.name or "model" for m in spans.modules]
    return out


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def summary_line(host: dict[str, Any] | None) -> str | None:
    """One sentence on where the host's time goes per decode step ("of 11.1 ms per step, 4.9 ms
    in 714 kernel launches (6.9 us each), 0.3 ms waiting for the GPU, 5.9 ms Python and
    framework: 1.2 ms in the generate loop outside forward, 16 decoder layers at 0.28 ms each"),
    or None without a host section."""
    if not host or not host.get("available"):
        return None
    step = (host.get("step_s") or {}).get("mean")
    if not step:
        return None
    bits: list[str] = []
    api = host.get("api") or {}
    if api.get("available"):
        p, c = api.get("parts_s") or {}, api.get("calls_per_step") or {}
        launch = api.get("launch_s") or {}
        text = f"{ms_text(p.get('launch', 0.0))} in {c.get('launch', 0):.0f} kernel launches"
        if launch.get("mean"):
            text += f" ({launch['mean'] * 1e6:.1f} us each)"
        bits.append(text)
        if c.get("graph_launch"):
            g = f"{ms_text(p.get('graph_launch', 0.0))} in {c['graph_launch']:.0f} graph launches"
            kpg = api.get("kernels_per_graph_launch")
            if kpg:
                g += f" (each replacing about {kpg:.0f} kernel launches)"
            bits.append(g)
        copies = p.get("copy", 0.0) + p.get("memset", 0.0) + p.get("other_api", 0.0)
        if copies >= 0.05 * step:
            bits.append(f"{ms_text(copies)} in other CUDA calls")
        bits.append(f"{ms_text(p.get('sync', 0.0))} waiting for the GPU")
        py = f"{ms_text(p.get('python_framework', 0.0))} Python and framework"
    else:
        py = None
    where: list[str] = []
    loop = host.get("loop") or {}
    if loop.get("available") and loop.get("outside_forward_s") is not None:
        where.append(f"{ms_text(loop['outside_forward_s'])} in the generate loop outside forward")
    mods = host.get("modules") or {}
    if mods.get("available") and mods.get("layers"):
        where.append(f"{mods['layers']} decoder layers at {ms_text(mods['layer_s_each'])} each")
    if py is not None:
        bits.append(py)
    text = ", ".join(bits)
    if where:  # the places include the CUDA calls made there: a second view, not more parts
        text += ("; by place: " if text else "") + ", ".join(where)
    return f"of {ms_text(step)} per step, " + text if text else None


def ms_text(s: float | None) -> str:
    """Seconds as milliseconds for prose: two decimals below 0.1 s, whole ms above."""
    if s is None:
        return "?"
    return f"{s * 1e3:.2f} ms" if abs(s) < 0.1 else f"{s * 1e3:.0f} ms"


#: Calibration figures summarised in ``host_path.summary`` (seconds).
CALIBRATION_FIELDS = ("launch_s", "roundtrip_s", "torch_op_s", "python_loop_s")


def host_path_section(rows: Sequence[dict[str, Any]], *, steal_reason: str | None = None,
                      process: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``host_path`` section: one row per timed iteration (steal, CPU clock, the calibration
    after it) and, per figure, median, min, max and coefficient of variation over iterations.
    ``process``: the calibration a worker process took before its model loaded, if any."""
    summary: dict[str, Any] = {}

    def describe(values: list[float]) -> dict[str, float] | None:
        v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
        if not v.size:
            return None
        mean = float(v.mean())
        return {"p50": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
                "cv": float(v.std(ddof=1) / mean) if v.size > 1 and mean else 0.0}

    for key in CALIBRATION_FIELDS:
        d = describe([(r.get("calibration") or {}).get(key) for r in rows])
        if d:
            summary[key] = d
    for key in ("steal_share", "steal_s", "cpu_mhz"):
        d = describe([r.get(key) for r in rows])
        if d:
            summary[key] = d
    return {"iterations": [dict(r) for r in rows], "summary": summary, "steal_reason": steal_reason,
            **({"process": process} if process else {})}


def host_path_line(host_path: dict[str, Any] | None) -> str | None:
    """One line on the host path: launch cost, round trip, Python loop and steal over the
    timed iterations (median and range), or None."""
    if not host_path:
        return None
    s = host_path.get("summary") or {}
    bits = []
    for key, label in (("launch_s", "launch"), ("roundtrip_s", "launch+sync"), ("torch_op_s", "torch op"),
                       ("python_loop_s", "Python loop")):
        d = s.get(key)
        if d:
            scale, unit = (1e6, "us") if d["p50"] < 1e-3 else (1e3, "ms")
            bits.append(f"{label} {d['p50'] * scale:.1f} {unit} ({d['min'] * scale:.1f}-{d['max'] * scale:.1f})")
    st = s.get("steal_share")
    if st:
        bits.append(f"steal {st['p50']:.1%} (max {st['max']:.1%})")
    mhz = s.get("cpu_mhz")
    if mhz:
        bits.append(f"CPU {mhz['p50']:.0f} MHz")
    return "host path per iteration: " + ", ".join(bits) if bits else None
