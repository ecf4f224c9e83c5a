"""Several ranks of one measurement (torchrun): merged traces, step skew, summed throughput.

Pure functions over per-rank :class:`fastprof.Trace` lists that are already on one clock (the
caller applies each rank's clock offset first). Ranks must have the same number of iterations.

- Tensor parallel: every rank computes a share of every step, so a step is done when the
  slowest rank is done. The merged trace of an iteration starts at the earliest rank's start and
  marks token ``i`` at the latest rank's mark ``i``; its metrics are the job's step times.
  The skew of a step is the spread of that token's host marks across ranks; the rank whose mark
  is latest was last.
- Data parallel: ranks work independently; throughput adds up across ranks, latency is each
  rank's own (and the slowest rank's).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fastprof.capture.recorder import Trace


def _check(per_rank: Sequence[Sequence[Trace]]) -> int:
    if not per_rank:
        raise ValueError("no ranks")
    n = {len(t) for t in per_rank}
    if len(n) != 1:
        raise ValueError(f"ranks have different numbers of iterations: {[len(t) for t in per_rank]}")
    return n.pop()


def shift(traces: Sequence[Trace], offset_ns: int) -> list[Trace]:
    """The traces with their absolute host times moved by ``-offset_ns`` (a rank's clock read
    ``offset_ns`` ahead of the reference clock). Relative marks and device times are kept."""
    if not offset_ns:
        return list(traces)
    return [Trace(host_start_ns=t.host_start_ns - int(offset_ns), host_marks_ns=t.host_marks_ns - int(offset_ns),
                  host_end_ns=t.host_end_ns - int(offset_ns), device_marks_ns=t.device_marks_ns,
                  device_end_ns=t.device_end_ns) for t in traces]


def tensor_parallel_merge(per_rank: Sequence[Sequence[Trace]]) -> list[Trace]:
    """One trace per iteration: start at the earliest rank's start, token ``i`` at the latest
    rank's mark ``i``, end at the latest end. Device times are each step's slowest rank's,
    relative to that rank's start event. Every rank must have the same number of marks."""
    n_iter = _check(per_rank)
    merged = []
    for i in range(n_iter):
        its = [ranks[i] for ranks in per_rank]
        counts = {t.n_marks for t in its}
        if len(counts) != 1:
            raise ValueError(f"iteration {i}: ranks produced different numbers of tokens {[t.n_marks for t in its]}")
        host = np.max(np.stack([t.host_marks_ns for t in its]), axis=0)
        device = None
        if all(t.device_marks_ns is not None and t.device_marks_ns.size == t.n_marks for t in its):
            device = np.max(np.stack([t.device_marks_ns for t in its]), axis=0)
        device_end = None
        if all(t.device_end_ns is not None for t in its):
            device_end = int(max(int(t.device_end_ns) for t in its))
        merged.append(Trace(host_start_ns=int(min(t.host_start_ns for t in its)), host_marks_ns=host.astype(np.int64),
                            host_end_ns=int(max(t.host_end_ns for t in its)), device_marks_ns=device,
                            device_end_ns=device_end))
    return merged


def step_skew(per_rank: Sequence[Sequence[Trace]]) -> dict[str, object]:
    """Per step (token) of every iteration: the spread of host marks across ranks (ns), and how
    often each rank was the last. Returns ``skew_ns`` (flat array over iterations and tokens)
    and ``last_counts`` (one count per rank)."""
    n_iter = _check(per_rank)
    skews, last = [], np.zeros(len(per_rank), dtype=np.int64)
    for i in range(n_iter):
        marks = np.stack([ranks[i].host_marks_ns for ranks in per_rank])  # ranks x tokens
        skews.append(marks.max(axis=0) - marks.min(axis=0))
        last += np.bincount(np.argmax(marks, axis=0), minlength=len(per_rank))
    return {"skew_ns": np.concatenate(skews) if skews else np.zeros(0, np.int64), "last_counts": last}


def summed_per_iteration(values_per_rank: Sequence[np.ndarray]) -> np.ndarray:
    """Iteration-wise sum across ranks (data-parallel throughput): ranks must have the same count."""
    arrays = [np.asarray(v, dtype=np.float64) for v in values_per_rank]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"ranks have different numbers of iterations: {[a.size for a in arrays]}")
    return np.sum(np.stack(arrays), axis=0)
