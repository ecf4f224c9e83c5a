"""Generation metrics from per-token traces.

For one iteration with start ``s``, token marks ``t_1 .. t_N`` and end ``e`` (all on one clock):

- ``e2e_latency_s`` = e - s
- ``ttft_s`` (time to first token) = t_1 - s
- ``itl_s`` (inter-token latency) = the N-1 gaps t_{i+1} - t_i: the full distribution, pooled over
  iterations. The end timestamp is not a token, so it adds no gap.
- ``tpot_s`` (time per output token) = (t_N - t_1) / (N - 1)
- ``decode_tokens_per_s`` = batch * (N - 1) / (t_N - t_1)
- ``prefill_tokens_per_s`` = batch * prompt_len / ttft
- ``throughput_tokens_per_s`` = batch * N / e2e

A decode step that emits several tokens (speculative decoding) gives each of its tokens the step's
time: the step's first token carries the whole gap, the others a gap of zero, so the mean ITL is
the time per token as in plain decoding. The per-step metrics (``step_s``, ``tokens_per_step``,
``acceptance_rate``, ``draft_s``, ``verify_s``) are in :mod:`fastprof.analysis.speculative`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fastprof.capture.recorder import Trace

GENERATE_METRICS = (
    "e2e_latency_s",
    "ttft_s",
    "itl_s",
    "tpot_s",
    "decode_tokens_per_s",
    "prefill_tokens_per_s",
    "throughput_tokens_per_s",
)
CALLABLE_METRICS = ("latency_s",)


def clock_view(trace: Trace, clock: str) -> tuple[float, np.ndarray, float] | None:
    """(start, marks, end) in seconds relative to the start, on ``clock`` ('host' or 'device');
    None when that clock was not recorded."""
    if clock == "host":
        marks = (trace.host_marks_ns - trace.host_start_ns).astype(np.float64) * 1e-9
        return 0.0, marks, (trace.host_end_ns - trace.host_start_ns) * 1e-9
    if trace.device_marks_ns is None or trace.device_end_ns is None:
        return None
    return 0.0, trace.device_marks_ns.astype(np.float64) * 1e-9, trace.device_end_ns * 1e-9


def generation_metrics(traces: Sequence[Trace], *, batch_size: int, prompt_len: int,
                       clock: str = "host", unmarked_tokens: int | None = None) -> dict[str, np.ndarray] | None:
    """Per-metric samples over ``traces``: one value per iteration, except ``itl_s`` which holds
    every gap of every iteration. None when ``clock`` is missing from any trace.

    ``unmarked_tokens``: iterations without per-token marks (beam search) generated that many
    tokens per sequence; only ``e2e_latency_s`` and ``throughput_tokens_per_s`` exist then."""
    out: dict[str, list[float]] = {name: [] for name in GENERATE_METRICS}
    for trace in traces:
        view = clock_view(trace, clock)
        if view is None:
            return None
        start, marks, end = view
        n = marks.size
        e2e = end - start
        out["e2e_latency_s"].append(e2e)
        tokens = n if n or not unmarked_tokens else int(unmarked_tokens)
        out["throughput_tokens_per_s"].append(batch_size * tokens / e2e if e2e > 0 else np.nan)
        if n == 0:
            continue
        ttft = marks[0] - start
        out["ttft_s"].append(ttft)
        out["prefill_tokens_per_s"].append(batch_size * prompt_len / ttft if ttft > 0 else np.nan)
        if n >= 2:
            out["itl_s"].extend(np.diff(marks).tolist())
            decode = marks[-1] - marks[0]
            out["tpot_s"].append(decode / (n - 1))
            out["decode_tokens_per_s"].append(batch_size * (n - 1) / decode if decode > 0 else np.nan)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def itl_groups(traces: Sequence[Trace], *, clock: str = "host") -> np.ndarray | None:
    """The iteration index of every gap of ``generation_metrics(...)["itl_s"]``, in the same order
    (the clusters of the ITL interval's bootstrap); None when ``clock`` is missing."""
    out: list[np.ndarray] = []
    for i, trace in enumerate(traces):
        view = clock_view(trace, clock)
        if view is None:
            return None
        out.append(np.full(max(view[1].size - 1, 0), i, dtype=np.int64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def iteration_values(traces: Sequence[Trace], *, kind: str = "generate", batch_size: int = 1, prompt_len: int = 0,
                     clock: str = "host", unmarked_tokens: int | None = None) -> dict[str, np.ndarray] | None:
    """One value per iteration and metric, aligned with ``traces`` (NaN where an iteration has
    no value): the unit values of comparisons. ``itl_s`` is each iteration's *median* gap, not
    its gaps: gaps inside an iteration are correlated and are never counted as separate samples.
    None when ``clock`` is missing from any trace. In speculative decoding, where a step's tokens
    share its time and the median gap is zero, ``itl_s`` is the iteration's mean gap."""
    out: dict[str, list[float]] = {}
    for i, trace in enumerate(traces):
        if kind == "generate":
            m = generation_metrics([trace], batch_size=batch_size, prompt_len=prompt_len, clock=clock,
                                   unmarked_tokens=unmarked_tokens)
        else:
            m = callable_metrics([trace], clock=clock)
        if m is None:
            return None
        for name, v in m.items():
            col = out.setdefault(name, [float("nan")] * i)
            if name == "itl_s" and trace.steps is not None:
                # A speculative step's tokens share its time: the median gap is zero, the mean is
                # the time per token.
                col.append(float(np.mean(v)) if v.size else float("nan"))
            elif name == "itl_s":
                col.append(float(np.median(v)) if v.size else float("nan"))
            else:
                col.append(float(v[0]) if v.size else float("nan"))
        if kind == "generate":
            # Speculative decoding: each iteration's step metrics (median step, draft and verify
            # time, mean tokens per step, acceptance rate; see fastprof.analysis.speculative).
            from fastprof.analysis.speculative import iteration_values as _step_values

            for name, value in _step_values(trace, clock).items():
                out.setdefault(name, [float("nan")] * i).append(value)
        for name, col in out.items():
            if len(col) < i + 1:
                col.append(float("nan"))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def callable_metrics(traces: Sequence[Trace], *, clock: str = "host") -> dict[str, np.ndarray] | None:
    """``latency_s`` per iteration of a timed callable."""
    values = []
    for trace in traces:
        view = clock_view(trace, clock)
        if view is None:
            return None
        values.append(view[2] - view[0])
    return {"latency_s": np.asarray(values, dtype=np.float64)}
