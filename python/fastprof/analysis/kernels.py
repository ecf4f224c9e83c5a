"""Kernel breakdown: pure functions from a :class:`~fastprof.capture.kernel_trace.KernelTrace` and
step boundaries (on the same clock) to per-step GPU busy/idle time, time by kernel class, kernels
per token and top kernels.

Classes come from one ordered rule table, :data:`RULES` (first match wins, regexes searched in the
kernel name, case-insensitive). Add your own with :func:`add_rule` (inserted before the built-in
rules unless ``position`` says otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fastprof.capture.kernel_trace import KernelTrace

CLASSES = ("gemm", "attention", "elementwise", "reduction", "copy", "communication", "other")
CLASS_LABELS = {
    "gemm": "gemm", "attention": "attention", "elementwise": "elementwise/norm/activation",
    "reduction": "reduction/sampling", "copy": "copy/memset", "communication": "communication (NCCL)",
    "other": "other",
}

# (class, pattern): first match wins. Order matters: communication before everything (NCCL
# kernels contain "reduce"), attention before gemm (flash kernels run gemms inside), norms before
# reductions (a norm kernel reduces too).
RULES: list[tuple[str, re.Pattern[str]]] = [
    (cls, re.compile(pattern, re.IGNORECASE)) for cls, pattern in [
        ("communication", r"nccl|all_?reduce|all_?gather|reduce_?scatter|alltoall|cross_device|custom_ar"),
        ("copy", r"^memcpy|^memset|copy_kernel|copyKernel|CatArrayBatchedCopy|direct_copy"),
        ("attention", r"flash|fmha|attention|attn|sdpa|softmax_?mla|paged_?kv|decode_?kernel|mha_|xformers"),
        ("gemm", r"gemm|xmma|cutlass|nvjet|cublas|matmul|\bmm_|_mm\b|gemv|splitK|sm\d+_.*hmma|cutensor|"
                 r"triton_tem_fused|wgmma"),
        ("elementwise", r"rms_?norm|layer_?norm|norm_kernel|group_?norm|rotary|rope|silu|gelu|swiglu|relu|act_and_mul|"
                        r"elementwise|triton_poi|triton_per_fused.*(norm|mean|rsqrt)|vectorized|unrolled|"
                        r"fill_kernel|FillFunctor|index_(put|select)|embedding|indexSelect|where|cat_|scatter_gather"),
        ("reduction", r"reduce|triton_red|triton_per|argmax|argmin|topk|top_k|sort|sampling|sample|multinomial|"
                      r"softmax|cumsum|scan|max_kernel|sum_kernel"),
    ]
]


def add_rule(cls: str, pattern: str, position: int = 0) -> None:
    """Add a classification rule (`pattern`, a regex searched case-insensitively) for class `cls`,
    at `position` in :data:`RULES` (0: before every built-in rule, so it wins)."""
    if cls not in CLASSES:
        raise ValueError(f"unknown kernel class {cls!r}; choose one of {', '.join(CLASSES)}")
    RULES.insert(position, (cls, re.compile(pattern, re.IGNORECASE)))
    classify.cache_clear()


def _classify(name: str) -> str:
    for cls, pattern in RULES:
        if pattern.search(name):
            return cls
    return "other"


classify = lru_cache(maxsize=65536)(_classify)
classify.__doc__ = "The class of one kernel name (first matching rule of RULES; 'other' when none)."


def union_ns(starts: np.ndarray, ends: np.ndarray, lo: int | None = None, hi: int | None = None) -> int:
    """Total length of the union of [start, end) intervals, clipped to [lo, hi)."""
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    if lo is not None:
        s = np.maximum(s, lo)
    if hi is not None:
        e = np.minimum(e, hi)
    keep = e > s
    s, e = s[keep], e[keep]
    if s.size == 0:
        return 0
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    reach = np.maximum.accumulate(e)
    # an interval starts a new block when it begins after everything before it has ended
    new_block = np.empty(s.size, dtype=bool)
    new_block[0] = True
    new_block[1:] = s[1:] > reach[:-1]
    block_id = np.cumsum(new_block) - 1
    block_start = s[new_block]
    block_end = np.zeros(block_start.size, dtype=np.int64)
    np.maximum.at(block_end, block_id, e)
    return int((block_end - block_start).sum())


def record_classes(trace: KernelTrace) -> np.ndarray:
    """Class per record (object array): memcpy/memset are 'copy', kernels by name."""
    table = np.array([classify(n) for n in trace.names] or ["other"], dtype=object)
    out = table[trace.name_id] if len(trace) else np.zeros(0, dtype=object)
    if len(trace):
        out = out.copy()
        out[trace.kind != 0] = "copy"
    return out


@dataclass
class StepBreakdown:
    """Per step (arrays of one value per step): boundaries, busy (union of activity), idle,
    kernel counts, and time by class (ns, clipped to the step)."""

    start_ns: np.ndarray
    end_ns: np.ndarray
    busy_ns: np.ndarray
    idle_ns: np.ndarray
    kernels: np.ndarray
    by_class_ns: dict[str, np.ndarray]

    @property
    def step_ns(self) -> np.ndarray:
        return self.end_ns - self.start_ns

    @property
    def idle_share(self) -> np.ndarray:
        step = self.step_ns.astype(float)
        return np.divide(self.idle_ns, step, out=np.zeros_like(step), where=step > 0)


def step_breakdown(trace: KernelTrace, boundaries_ns: np.ndarray) -> StepBreakdown:
    """Busy/idle/class time for each step [boundaries[i], boundaries[i+1]).

    Busy is the union of all activity intervals clipped to the step (overlapping kernels on several
    streams count once). Class time sums each class's own union, so classes can add up to more than
    busy time where kernels of different classes overlap. A kernel is counted in the step holding
    its start.
    """
    b = np.asarray(boundaries_ns, dtype=np.int64)
    if b.size < 2:
        raise ValueError("step_breakdown needs at least two boundaries (one step)")
    if np.any(np.diff(b) < 0):
        raise ValueError("step boundaries must not decrease")
    n = b.size - 1
    starts, ends = trace.start_ns, trace.end_ns
    classes = record_classes(trace)
    order = np.argsort(starts, kind="stable")
    starts, ends, classes = starts[order], ends[order], classes[order]
    kinds = trace.kind[order]
    max_dur = int((ends - starts).max()) if len(trace) else 0
    busy = np.zeros(n, np.int64)
    count = np.zeros(n, np.int64)
    by_class = {c: np.zeros(n, np.int64) for c in CLASSES}
    for i in range(n):
        lo, hi = int(b[i]), int(b[i + 1])
        # candidates: records that start before hi and could end after lo
        a = int(np.searchsorted(starts, lo - max_dur, side="left"))
        z = int(np.searchsorted(starts, hi, side="left"))
        s, e, c = starts[a:z], ends[a:z], classes[a:z]
        busy[i] = union_ns(s, e, lo, hi)
        own = (s >= lo) & (s < hi) & (kinds[a:z] == 0)
        count[i] = int(own.sum())
        for cls in np.unique(c) if c.size else ():
            m = c == cls
            by_class[str(cls)][i] = union_ns(s[m], e[m], lo, hi)
    return StepBreakdown(start_ns=b[:-1].copy(), end_ns=b[1:].copy(), busy_ns=busy,
                         idle_ns=np.maximum((b[1:] - b[:-1]) - busy, 0), kernels=count, by_class_ns=by_class)


def top_kernels(trace: KernelTrace, lo_ns: int | None = None, hi_ns: int | None = None, n: int = 15,
                demangle_names: bool = True) -> list[dict[str, Any]]:
    """The `n` kernels (by name) with the most total time among records starting in [lo, hi):
    name, class, count, total_ns, mean_ns, share (of all activity time in the window)."""
    mask = np.ones(len(trace), dtype=bool)
    if lo_ns is not None:
        mask &= trace.start_ns >= lo_ns
    if hi_ns is not None:
        mask &= trace.start_ns < hi_ns
    if not mask.any():
        return []
    ids = trace.name_id[mask]
    dur = (trace.end_ns - trace.start_ns)[mask].astype(np.int64)
    total = np.bincount(ids, weights=dur, minlength=len(trace.names))
    counts = np.bincount(ids, minlength=len(trace.names))
    grand = float(dur.sum()) or 1.0
    order = np.argsort(-total, kind="stable")[:n]
    out = []
    for i in order:
        if counts[i] == 0:
            continue
        raw = trace.names[i]
        name = _demangle_short(raw) if demangle_names else raw
        out.append({"name": name, "class": classify(raw) if not raw.startswith(("Memcpy", "Memset")) else "copy",
                    "count": int(counts[i]), "total_ns": int(total[i]), "mean_ns": float(total[i] / counts[i]),
                    "share": float(total[i] / grand)})
    return out


def _demangle_short(name: str) -> str:
    if not name.startswith("_Z"):
        return name
    from fastprof.capture.kernel_trace import demangle

    return demangle(name)


def summarize(trace: KernelTrace, boundaries_ns: np.ndarray, tokens_per_step: int = 1,
              prefill_steps: int = 1, top: int = 10) -> dict[str, Any]:
    """The `kernels` section of a result from one traced span.

    `boundaries_ns` are the step boundaries on the trace's clock (start, then the end of each step);
    the first `prefill_steps` steps are prefill, the rest decode. Returns busy/idle/idle share/kernels
    per token (decode medians), time by class (decode totals and shares of busy time), per-step
    arrays and top kernels for prefill and decode apart.
    """
    br = step_breakdown(trace, boundaries_ns)
    p = max(0, min(prefill_steps, br.busy_ns.size))
    dec = slice(p, None)
    dec_busy = br.busy_ns[dec]
    class_total = {c: int(v[dec].sum()) for c, v in br.by_class_ns.items()}
    class_sum = sum(class_total.values()) or 1
    b = np.asarray(boundaries_ns, dtype=np.int64)

    def med(x):
        return float(np.median(x)) if np.size(x) else None

    return {
        "steps": int(br.busy_ns.size),
        "prefill_steps": p,
        "decode": {
            "step_ns_median": med(br.step_ns[dec]),
            "busy_ns_median": med(dec_busy),
            "idle_ns_median": med(br.idle_ns[dec]),
            "idle_share_median": med(br.idle_share[dec]),
            "kernels_per_token": (float(np.median(br.kernels[dec])) / max(tokens_per_step, 1)
                                  if dec_busy.size else None),
            "class_ns": class_total,
            "class_share": {c: v / class_sum for c, v in class_total.items()},
        },
        "per_step": {
            "step_ns": br.step_ns.tolist(),
            "busy_ns": br.busy_ns.tolist(),
            "kernels": br.kernels.tolist(),
            "class_ns": {c: v.tolist() for c, v in br.by_class_ns.items() if v.any()},
        },
        "top_prefill": top_kernels(trace, int(b[0]), int(b[p]), n=top) if p else [],
        "top_decode": top_kernels(trace, int(b[p]), int(b[-1]), n=top),
    }


def step_boundaries(host_start_ns: int, device_marks_ns: np.ndarray) -> np.ndarray:
    """Absolute step boundaries of one recorded iteration: its start, then each token's device mark.

    The recorder's device marks are nanoseconds after its start event, which is recorded right after
    the host start time on an idle, synchronised GPU: the start event therefore runs within a few
    microseconds of ``host_start_ns``, which anchors the marks on CLOCK_MONOTONIC (the trace's clock).
    Step 0 is prefill (up to the first token); the others are decode steps.
    """
    marks = np.asarray(device_marks_ns, dtype=np.int64)
    return np.concatenate([[0], np.maximum.accumulate(marks)]).astype(np.int64) + int(host_start_ns)


#: Most records a result keeps in its kernel ``timeline`` (about 30 bytes each in JSON).
TIMELINE_MAX_RECORDS = 200_000


def timeline(trace: KernelTrace, lo_ns: int, hi_ns: int, max_records: int = TIMELINE_MAX_RECORDS) -> dict[str, Any]:
    """The records starting in [lo, hi) as columns, for a timeline (``fastprof export --trace``):
    ``origin_ns`` (absolute CLOCK_MONOTONIC), per record ``start_ns`` (from the origin), ``dur_ns``,
    ``stream``, ``class`` and ``name`` (indexes into ``classes`` and ``names``, demangled), and
    ``truncated``: records left out beyond ``max_records`` (the earliest are kept)."""
    mask = (trace.start_ns >= lo_ns) & (trace.start_ns < hi_ns)
    idx = np.flatnonzero(mask)
    idx = idx[np.argsort(trace.start_ns[idx], kind="stable")]
    truncated = max(int(idx.size) - max_records, 0)
    idx = idx[:max_records]
    used, name_index = np.unique(trace.name_id[idx], return_inverse=True)
    classes = record_classes(trace)[idx] if idx.size else np.zeros(0, dtype=object)
    class_table = sorted(set(classes.tolist()))
    class_pos = {c: i for i, c in enumerate(class_table)}
    return {
        "origin_ns": int(lo_ns),
        "names": [_demangle_short(trace.names[int(i)]) for i in used],
        "classes": class_table,
        "start_ns": (trace.start_ns[idx] - lo_ns).astype(np.int64).tolist(),
        "dur_ns": (trace.end_ns[idx] - trace.start_ns[idx]).astype(np.int64).tolist(),
        "stream": trace.stream[idx].astype(np.int64).tolist(),
        "class": [class_pos[c] for c in classes.tolist()],
        "name": np.asarray(name_index, dtype=np.int64).reshape(-1).tolist(),
        "truncated": truncated,
    }


def section(trace: KernelTrace, iterations: list[tuple[int, np.ndarray]], *, itl_s_traced: float | None = None,
            itl_s_untraced: float | None = None, traced_timed: bool = False, top: int = 10) -> dict[str, Any]:
    """The ``kernels`` section of a result from a trace over several iterations.

    ``iterations``: (host_start_ns, device_marks_ns) per traced iteration (see :func:`step_boundaries`).
    Decode figures are over every decode step of every traced iteration: ``idle_share`` (median share
    of a step the GPU ran nothing), ``busy_s_per_step`` (median), ``kernels_per_token`` (median kernels
    per decode step), ``class_share`` (each class's share of class time), ``top_prefill`` and
    ``top_decode``; ``per_step`` holds the last iteration's steps for charts, and ``timeline`` its
    records (:func:`timeline`) for the trace export.
    """
    out: dict[str, Any] = {
        "available": trace.available, "reason": trace.reason, "backend": "cupti",
        "timestamp_method": trace.timestamp_method, "dropped": int(trace.dropped),
        "records": len(trace), "iterations": len(iterations), "traced_timed": traced_timed,
        "itl_s_traced": itl_s_traced, "itl_s_untraced": itl_s_untraced,
        "trace_overhead_ratio": (itl_s_traced / itl_s_untraced
                                 if itl_s_traced and itl_s_untraced and not traced_timed else None),
    }
    if not trace.available or not iterations:
        if trace.available:
            out.update(available=False, reason="no traced iteration with device token marks")
        return out
    busy, idle_share, step, count = [], [], [], []
    last_bounds = None
    cls_ns = {c: 0 for c in CLASSES}
    pre_mask = np.zeros(len(trace), dtype=bool)
    dec_mask = np.zeros(len(trace), dtype=bool)
    last = None
    for start, marks in iterations:
        b = step_boundaries(start, marks)
        br = step_breakdown(trace, b)
        busy.append(br.busy_ns[1:])
        idle_share.append(br.idle_share[1:])
        step.append(br.step_ns[1:])
        count.append(br.kernels[1:])
        for c, v in br.by_class_ns.items():
            cls_ns[c] += int(v[1:].sum())
        pre_mask |= (trace.start_ns >= b[0]) & (trace.start_ns < b[1])
        dec_mask |= (trace.start_ns >= b[1]) & (trace.start_ns < b[-1])
        last, last_bounds = br, b
    busy_a, idle_a, count_a = np.concatenate(busy), np.concatenate(idle_share), np.concatenate(count)
    total = sum(cls_ns.values())
    assert last is not None
    out.update({
        "decode_steps": int(busy_a.size),
        "idle_share": float(np.median(idle_a)) if idle_a.size else None,
        "busy_s_per_step": float(np.median(busy_a)) / 1e9 if busy_a.size else None,
        "step_s_median": float(np.median(np.concatenate(step))) / 1e9 if busy_a.size else None,
        "kernels_per_token": float(np.median(count_a)) if count_a.size else None,
        "class_s": {c: v / 1e9 / max(len(iterations), 1) for c, v in cls_ns.items()},
        "class_share": {c: (v / total if total else 0.0) for c, v in cls_ns.items()},
        "top_prefill": top_kernels(trace.select(pre_mask), n=top),
        "top_decode": top_kernels(trace.select(dec_mask), n=top),
        "per_step": {
            "step_s": (last.step_ns / 1e9).tolist(),
            "busy_s": (last.busy_ns / 1e9).tolist(),
            "kernels": last.kernels.tolist(),
            "class_s": {c: (v / 1e9).tolist() for c, v in last.by_class_ns.items() if v.any()},
        },
        "timeline": timeline(trace, int(last_bounds[0]), int(last_bounds[-1])),
    })
    return out


def unavailable(reason: str) -> dict[str, Any]:
    """The ``kernels`` section when there is no trace."""
    return {"available": False, "reason": reason}
