"""Decode steps: how many tokens each step emitted, how long it took, and, for speculative
decoding, its draft and its verification apart.

A *step* is one pass of the generate loop: one forward pass of the model in plain decoding (one
token per sequence), or a draft followed by the target's verification forward pass in speculative
decoding (1 to ``k + 1`` tokens, ``k`` the draft tokens proposed). How they are recorded:
:mod:`fastprof.capture.speculative`.

Per iteration, with step ``j`` ending at ``e_j`` (the host mark of its tokens; on the device
clock, the event behind its verification) and its draft running from ``d_j`` to ``f_j``:

- ``step_s``: ``e_j - e_{j-1}`` for the decode steps (``j >= 1``; step 0 holds the prefill and
  belongs to TTFT, as in the inter-token latency).
- ``draft_s``: ``f_j - d_j``; ``verify_s``: ``e_j - f_j`` (the target's forward pass, the
  acceptance and, on the host, the tokens' copy to the host); the loop's own time between
  steps (cache crop, stopping criteria) is ``other_s`` = ``d_j - e_{j-1}``. All per decode step.
- ``tokens_per_step``: tokens emitted by each step (every step, the first included).
- ``acceptance_rate``: accepted draft tokens over proposed ones, where a step's accepted tokens
  are its emitted tokens minus one (the target's own token), at most the proposed ones.

Plain decoding is one token per step: its steps are its tokens and ``step_s`` is the inter-token
latency. Per-token times of a speculative step: every token of a step carries the step's end time
(their inter-token gaps inside the step are zero), so the per-token ITL statistics remain
comparable with plain decoding through their mean (the time per token); the per-step statistics
stand beside them.

The speed-up of a speculative configuration (:func:`speedup`) is against plain decoding of the same
target measured in the same run: the ratio of the median end-to-end latencies of the iterations
(the same number of tokens, so the same ratio as throughput), and the same for the time per
output token. With several worker processes on both sides, each process's pair is one unit
(paired: the plain and the speculative configuration ran in the same process) and the speed-up
is the geometric mean of the per-process ratios with a t interval over processes; otherwise a
bootstrap interval over iterations.

Random weights: a draft model with random weights agrees with the target's greedy choice about
as often as two random functions agree, so its drafts are almost never accepted and speculative
decoding looks slower than it is with trained weights. Acceptance depends on how well the draft
predicts the target on the prompts measured; only real weights (and real prompts) measure it.
Self-speculation (the target as its own draft) accepts every draft token whatever the weights: a
check of the machinery and the upper bound of acceptance.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastprof.analysis import stats as _stats
from fastprof.capture.recorder import Trace

#: Per-step metrics added to the summary of speculative results (host clock; the times also on the device).
STEP_METRICS = ("step_s", "tokens_per_step", "acceptance_rate", "draft_s", "verify_s")
#: The step metrics on the device clock.
DEVICE_STEP_METRICS = ("step_s", "draft_s", "verify_s")
#: Step metrics pooled over steps (one value per decode step); the others are one value per step
#: (``tokens_per_step``) or per iteration (``acceptance_rate``).
POOLED_STEP_METRICS = ("step_s", "draft_s", "verify_s")
#: Step metrics where more is better.
HIGHER_IS_BETTER = ("tokens_per_step", "acceptance_rate", "speedup")

NOTE_RANDOM_WEIGHTS = ("random weights: a draft with random weights rarely agrees with the target, so few draft "
                       "tokens are accepted and speculative decoding looks slower than with trained weights; "
                       "acceptance depends on real weights and prompts (self-speculation accepts every draft)")


def is_speculative(traces: Sequence[Trace]) -> bool:
    return bool(traces) and all(t.steps is not None for t in traces)


def step_view(trace: Trace, clock: str = "host") -> dict[str, Any] | None:
    """One iteration's steps on ``clock``, in seconds from the iteration's start: ``tokens``,
    ``ends`` (each step's end), ``draft_begin``/``draft_end`` (None without draft marks on that
    clock), ``proposed`` (None in plain decoding). None when ``clock`` was not recorded."""
    if clock == "host":
        marks = (np.asarray(trace.host_marks_ns, dtype=np.int64) - int(trace.host_start_ns)) * 1e-9
    else:
        if trace.device_marks_ns is None:
            return None
        marks = np.asarray(trace.device_marks_ns, dtype=np.float64) * 1e-9
    steps = trace.steps
    if steps is None:
        tokens = np.ones(marks.size, dtype=np.int64)
        return {"tokens": tokens, "ends": marks, "draft_begin": None, "draft_end": None, "proposed": None}
    tokens = np.asarray(steps["tokens"], dtype=np.int64)
    if int(tokens.sum()) != marks.size:
        return None
    ends = marks[np.cumsum(tokens) - 1] if tokens.size else marks[:0]
    draft = steps.get("draft_host_ns") if clock == "host" else steps.get("draft_device_ns")
    begin = end = None
    if draft is not None and len(draft) == 2 * tokens.size:
        d = np.asarray(draft, dtype=np.float64)
        if clock == "host":
            d = (d - int(trace.host_start_ns)) * 1e-9
        else:
            # The draft recorder's device clock starts at its own start event, recorded on the same
            # stream just before the iteration's: shift by the two starts' host times.
            offset = int(steps.get("draft_start_ns") or trace.host_start_ns) - int(trace.host_start_ns)
            d = d * 1e-9 + offset * 1e-9
        begin, end = d[0::2], d[1::2]
    proposed = steps.get("proposed")
    proposed = np.asarray(proposed, dtype=np.int64) if proposed is not None else None
    return {"tokens": tokens, "ends": ends, "draft_begin": begin, "draft_end": end, "proposed": proposed}


def accepted(tokens: np.ndarray, proposed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(accepted, proposed) draft tokens per step, over the steps that had a draft."""
    if proposed is None or proposed.size != tokens.size:
        return None
    has = proposed >= 0
    prop = proposed[has]
    return np.minimum(tokens[has] - 1, prop).clip(min=0), prop


def step_metrics(traces: Sequence[Trace], clock: str = "host") -> dict[str, list[np.ndarray]] | None:
    """Per iteration, the arrays of each step metric (see the module docstring) on ``clock``: lists
    aligned with ``traces``; ``acceptance_rate`` holds one value per iteration. None when the
    clock is missing from any trace."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in STEP_METRICS}
    out["other_s"] = []
    for t in traces:
        v = step_view(t, clock)
        if v is None:
            return None
        ends, tokens = v["ends"], v["tokens"]
        out["step_s"].append(np.diff(ends))
        out["tokens_per_step"].append(tokens.astype(np.float64))
        acc = accepted(tokens, v["proposed"])
        rate = float(acc[0].sum() / acc[1].sum()) if acc is not None and acc[1].sum() > 0 else np.nan
        out["acceptance_rate"].append(np.asarray([rate]) if acc is not None else np.zeros(0))
        if v["draft_begin"] is not None and ends.size:
            out["draft_s"].append((v["draft_end"] - v["draft_begin"])[1:])
            out["verify_s"].append((ends - v["draft_end"])[1:])
            out["other_s"].append(v["draft_begin"][1:] - ends[:-1])
        else:
            for k in ("draft_s", "verify_s", "other_s"):
                out[k].append(np.zeros(0))
    return out


def pooled(per_iteration: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The values of every iteration in one array, and the iteration of each (the bootstrap's clusters)."""
    if not per_iteration:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in per_iteration])
    groups = np.concatenate([np.full(len(v), i, dtype=np.int64) for i, v in enumerate(per_iteration)])
    return values, groups


def summary_samples(traces: Sequence[Trace], clock: str) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The step metrics of the result's summary on ``clock`` (speculative traces only): per metric,
    (values, groups) for :func:`fastprof.analysis.stats.describe`. Empty for plain decoding."""
    if not is_speculative(traces):
        return {}
    m = step_metrics(traces, clock)
    if m is None:
        return {}
    names = STEP_METRICS if clock == "host" else DEVICE_STEP_METRICS
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for name in names:
        values, groups = pooled(m[name])
        if values.size == 0 or not np.isfinite(values).any():
            continue
        out[name] = (values, None if name == "acceptance_rate" else groups)
    return out


def iteration_values(trace: Trace, clock: str) -> dict[str, float]:
    """One value per step metric for one iteration (the units of a comparison): the median of
    its decode steps' times, its mean tokens per step, its acceptance rate. Empty for plain decoding."""
    if trace.steps is None:
        return {}
    m = step_metrics([trace], clock)
    if m is None:
        return {}
    names = STEP_METRICS if clock == "host" else DEVICE_STEP_METRICS
    out = {}
    for name in names:
        v = np.asarray(m[name][0], dtype=np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            out[name] = float("nan")
        elif name == "tokens_per_step":
            out[name] = float(v.mean())
        else:
            out[name] = float(np.median(v))
    return out


def _mean(per: list[np.ndarray]) -> float | None:
    values = np.concatenate(per) if per else np.zeros(0)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def section(traces: Sequence[Trace], *, seed: int = 0) -> dict[str, Any] | None:
    """The result's ``steps`` section: ``method`` (``"none"`` for plain decoding), ``speculative``,
    ``steps_per_iteration`` (mean), ``tokens_per_step`` (``mean`` and ``distribution``: how many
    steps emitted each count, as a {count: steps} map), ``acceptance_rate`` (every accepted draft
    token over every proposed one, pooled), ``proposed_per_step`` and ``accepted_per_step``
    (means over the steps with a draft), and the mean per decode step of ``step_s``, ``draft_s``,
    ``verify_s`` and ``other_s`` on each clock (``host``, ``device``: None where not recorded),
    ``draft_share`` (the draft's share of the step, host clock), ``first_step_tokens`` (mean).
    None without traces."""
    if not traces:
        return None
    spec = is_speculative(traces)
    host = step_metrics(traces, "host")
    if host is None:
        return None
    tokens, _ = pooled(host["tokens_per_step"])
    counts = np.bincount(tokens.astype(np.int64)) if tokens.size else np.zeros(0, dtype=np.int64)
    methods = {str((t.steps or {}).get("method") or "none") for t in traces}
    out: dict[str, Any] = {
        "method": methods.pop() if len(methods) == 1 else "mixed",
        "speculative": spec,
        "iterations": len(traces),
        "steps_per_iteration": float(np.mean([len(v) for v in host["tokens_per_step"]])),
        "tokens_per_step": {"mean": float(tokens.mean()) if tokens.size else None,
                            "distribution": {str(n): int(c) for n, c in enumerate(counts) if c}},
        "first_step_tokens": float(np.mean([v[0] for v in host["tokens_per_step"] if len(v)]))
        if any(len(v) for v in host["tokens_per_step"]) else None,
    }
    acc_all, prop_all = [], []
    for t in traces:
        v = step_view(t, "host")
        a = accepted(v["tokens"], v["proposed"]) if v is not None else None
        if a is not None:
            acc_all.append(a[0])
            prop_all.append(a[1])
    if prop_all and np.concatenate(prop_all).size:
        acc, prop = np.concatenate(acc_all), np.concatenate(prop_all)
        out["acceptance_rate"] = float(acc.sum() / prop.sum()) if prop.sum() > 0 else None
        out["proposed_per_step"] = float(prop.mean())
        out["accepted_per_step"] = float(acc.mean())
        out["proposed"] = int(prop.sum())
        out["accepted"] = int(acc.sum())
        # Acceptance by draft position: the share of steps that accepted at least i + 1 drafts,
        # among those that proposed at least i + 1.
        width = int(prop.max()) if prop.size else 0
        out["accepted_by_position"] = [float(((acc > i) & (prop > i)).sum() / max((prop > i).sum(), 1))
                                       for i in range(width)]
    else:
        out.update(acceptance_rate=None, proposed_per_step=None, accepted_per_step=None)
    for clock in ("host", "device"):
        m = host if clock == "host" else step_metrics(traces, "device")
        if m is None:
            out[clock] = None
            continue
        out[clock] = {k: _mean(m[k]) for k in ("step_s", "draft_s", "verify_s", "other_s")}
    h = out["host"] or {}
    out["draft_share"] = (h["draft_s"] / h["step_s"]) if h.get("draft_s") is not None and h.get("step_s") else None
    return out


# ---- speed-up against plain decoding ------------------------------------------------------

def _ratio_ci(base: np.ndarray, spec: np.ndarray, seed: int, resamples: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    ib = rng.integers(0, base.size, (resamples, base.size))
    isp = rng.integers(0, spec.size, (resamples, spec.size))
    ratios = np.median(base[ib], axis=1) / np.median(spec[isp], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def speedup(base: dict[str, np.ndarray], spec: dict[str, np.ndarray], *,
            base_process: np.ndarray | None = None, spec_process: np.ndarray | None = None,
            seed: int = 0) -> dict[str, Any]:
    """The speed-up of a speculative configuration against plain decoding of the same target:
    per metric (``e2e_latency_s``, ``tpot_s``; per-iteration values of each side), ``ratio`` =
    plain / speculative (above 1: the speculative configuration is faster) with ``ci95_low`` /
    ``ci95_high``, and ``unit`` (``process`` when both sides carry the worker process of each
    iteration, paired process by process; else ``iteration``)."""
    out: dict[str, Any] = {}
    for metric in ("e2e_latency_s", "tpot_s"):
        a = np.asarray(base.get(metric, []), dtype=np.float64)
        b = np.asarray(spec.get(metric, []), dtype=np.float64)
        ok_a, ok_b = np.isfinite(a) & (a > 0), np.isfinite(b) & (b > 0)
        if ok_a.sum() < 1 or ok_b.sum() < 1:
            continue
        row: dict[str, Any] = {"base_median": float(np.median(a[ok_a])), "median": float(np.median(b[ok_b]))}
        paired = None
        if base_process is not None and spec_process is not None:
            procs = sorted(set(np.asarray(base_process)[ok_a].tolist()) & set(np.asarray(spec_process)[ok_b].tolist()))
            if len(procs) >= 2:
                paired = np.log([np.median(a[ok_a & (base_process == p)]) / np.median(b[ok_b & (spec_process == p)])
                                 for p in procs])
        if paired is not None:
            from scipy import stats as _scipy_stats

            n = paired.size
            mean, se = float(paired.mean()), float(paired.std(ddof=1) / np.sqrt(n))
            t = float(_scipy_stats.t.ppf(0.975, n - 1))
            row.update(ratio=float(np.exp(mean)), ci95_low=float(np.exp(mean - t * se)),
                       ci95_high=float(np.exp(mean + t * se)), unit="process", n=n)
        else:
            row["ratio"] = row["base_median"] / row["median"]
            if ok_a.sum() >= 2 and ok_b.sum() >= 2:
                row["ci95_low"], row["ci95_high"] = _ratio_ci(a[ok_a], b[ok_b], seed)
            else:
                row["ci95_low"] = row["ci95_high"] = None
            row.update(unit="iteration", n=int(min(ok_a.sum(), ok_b.sum())))
        out[metric] = row
    return out


# ---- the traced iterations: kernels and host time, draft and verify apart ----------------

def _segments(trace: Trace, clock: str) -> np.ndarray | None:
    """Absolute boundaries (ns) of each step's three segments, loop, draft and verify:
    [start, d_0, f_0, e_0, d_1, f_1, e_1, ...] on CLOCK_MONOTONIC; None without draft marks."""
    v = step_view(trace, clock)
    if v is None or v["draft_begin"] is None:
        return None
    n = v["ends"].size
    points = np.empty(3 * n, dtype=np.float64)
    points[0::3], points[1::3], points[2::3] = v["draft_begin"], v["draft_end"], v["ends"]
    rel = np.concatenate([[0.0], points])
    return (np.maximum.accumulate(np.round(rel * 1e9)).astype(np.int64) + int(trace.host_start_ns))


def traced_split(traced: Sequence[Trace], *, kernels: Any = None, spans: Any = None) -> dict[str, Any]:
    """Draft against verification in the traced iterations, per decode step: ``kernels`` (GPU
    busy time and kernels launched in each part, from the kernel trace: a kernel counts in the part
    its start falls in) and ``host`` (the wrapped modules' outermost time in each part, from the
    host breakdown's marks: the draft model's forward passes against the target's). Each is None
    with a ``reason`` when that trace is missing."""
    out: dict[str, Any] = {"iterations": len(traced)}
    if kernels is not None and getattr(kernels, "available", False) and len(kernels):
        from fastprof.analysis.kernels import step_breakdown

        busy = {"other": [], "draft": [], "verify": []}
        count = {"other": [], "draft": [], "verify": []}
        for t in traced:
            b = _segments(t, "device")
            if b is None or b.size < 4:
                continue
            br = step_breakdown(kernels, b)
            for k, part in enumerate(("other", "draft", "verify")):
                # Segment 3j + k belongs to step j; step 0 (prefill) is left out.
                busy[part].append(br.busy_ns[3 + k::3])
                count[part].append(br.kernels[3 + k::3])
        if busy["draft"]:
            out["kernels"] = {f"{p}_busy_s_per_step": float(np.concatenate(busy[p]).mean()) / 1e9
                              for p in busy if np.concatenate(busy[p]).size}
            out["kernels"].update({f"{p}_kernels_per_step": float(np.concatenate(count[p]).mean())
                                   for p in count if np.concatenate(count[p]).size})
        else:
            out["kernels"] = {"reason": "no traced iteration with device draft marks"}
    else:
        out["kernels"] = {"reason": "no kernel trace (it needs a CUDA GPU)"}
    if spans is not None and len(spans):
        from fastprof.capture.host_trace import iter_intervals

        roots = {i for i, m in enumerate(spans.modules) if m.parent < 0}
        intervals = np.asarray([(t0, t1) for i, t0, t1 in iter_intervals(spans) if i in roots], dtype=np.int64)
        parts = {"other": [], "draft": [], "verify": []}
        for t in traced:
            b = _segments(t, "host")
            if b is None or b.size < 4 or not intervals.size:
                continue
            lo, hi = b[:-1], b[1:]
            # Each root forward pass counts, clipped, in every segment it overlaps.
            inside = np.zeros(lo.size, dtype=np.float64)
            for t0, t1 in intervals:
                if t1 <= b[0] or t0 >= b[-1]:
                    continue
                inside += np.clip(np.minimum(hi, t1) - np.maximum(lo, t0), 0, None)
            for k, part in enumerate(("other", "draft", "verify")):
                parts[part].append(inside[3 + k::3])
        if parts["draft"]:
            out["host"] = {f"{p}_model_s_per_step": float(np.concatenate(v).mean()) / 1e9
                           for p, v in parts.items() if np.concatenate(v).size}
        else:
            out["host"] = {"reason": "no module marks in the traced iterations (a compiled forward pass has none)"}
    else:
        out["host"] = {"reason": "no host trace"}
    return out
