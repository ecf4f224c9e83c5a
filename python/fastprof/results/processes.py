"""One result from several worker processes (``fastprof run --processes N``).

Each worker process runs the same configuration with its own warm-up and iterations. The merged
result keeps every iteration, labelled with its process (``iterations[i].process``), summarises
over all of them, and adds a ``processes`` section:

- ``count``: the number of processes merged;
- ``per_process``: for each, its index, pid, iteration count and the median of each metric;
- ``spread``: per metric, ``between_process_cv`` (coefficient of variation of the per-process
  medians: run-to-run drift) beside ``within_process_cv`` (the median over processes of the
  coefficient of variation of their iterations' values: iteration-to-iteration noise).

With a kernel trace (``--kernel-trace``), each ``per_process`` entry also carries ``kernels``: that
process's decode figures (:func:`kernel_figures`: GPU busy time per decode step, idle share,
kernels per step, and the time per step of each kernel class), or None where it has no trace. The
result's ``kernels`` section stays the first process's full one (timeline, top kernels, per-step
charts).

``fastprof compare`` uses the processes as its unit when both sides have at least two, and then
tests those per-process kernel figures as device metrics beside the timing metrics.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastprof.analysis import metrics as _metrics
from fastprof.analysis import stats as _stats
from fastprof.results.result import BenchmarkResult

#: Metrics whose process-to-process spread is reported.
SPREAD_METRICS = ("itl_s", "ttft_s", "e2e_latency_s", "decode_tokens_per_s", "latency_s")


def _cv(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    if x.size < 2 or x.mean() == 0:
        return None
    return float(np.std(x, ddof=1) / abs(x.mean()))


def iteration_table(result: BenchmarkResult, clock: str = "host") -> dict[str, np.ndarray] | None:
    """One value per iteration and metric (``itl_s``: each iteration's median gap)."""
    kind = result.kind
    if kind not in ("generate", "callable"):
        return None
    cfg = result.config
    return _metrics.iteration_values(
        result.traces(), kind=kind, clock=clock,
        batch_size=int(cfg.get("batch_size", 1) or 1), prompt_len=int(cfg.get("prompt_len", 0) or 0),
        unmarked_tokens=None if cfg.get("per_token_marks", True) else int(cfg.get("max_new_tokens", 0) or 0))


def process_labels(result: BenchmarkResult) -> np.ndarray | None:
    """The worker process of each iteration, or None for a single-process result."""
    if not result.processes or (result.processes.get("count") or 0) < 2:
        return None
    labels = [it.get("process") for it in result.iterations]
    if any(v is None for v in labels):
        return None
    return np.asarray(labels, dtype=np.int64)


def process_count(result: BenchmarkResult) -> int:
    labels = process_labels(result)
    return 1 if labels is None else int(np.unique(labels).size)


def merge_processes(results: Sequence[BenchmarkResult], *, pids: Sequence[int | None] | None = None,
                    seed: int = 0) -> BenchmarkResult:
    """The result of one configuration measured by ``len(results)`` worker processes."""
    if not results:
        raise ValueError("no process results to merge")
    kinds = {r.kind for r in results}
    if len(kinds) != 1 or next(iter(kinds)) not in ("generate", "callable"):
        raise ValueError(f"only generate or callable results of one kind merge across processes, got {sorted(kinds)}")
    base = results[0]
    traces, extras = [], []
    for p, r in enumerate(results):
        for rec, t in zip(r.iterations, r.traces()):
            traces.append(t)
            extras.append({**{k: v for k, v in rec.items() if k not in ("host", "device")}, "process": p})
    available = [bool(r.device_timing.get("available")) for r in results]
    timing = base.device_timing if all(available) or not any(available) else \
        {"available": False, "reason": "not every process had device timing"}
    warnings = [w for r in results for w in r.warnings if "measured iteration" not in w]
    merged = BenchmarkResult.from_traces(base.kind, traces, config=dict(base.config), environment=base.environment,
                                         device_timing=timing, per_iteration=extras,
                                         hardware=_merge_hardware([r.hardware for r in results], seed=seed),
                                         warnings=list(dict.fromkeys(warnings)), seed=seed)
    # Kernel trace, roofline and verdict come from the first process (they describe the workload).
    merged.kernels, merged.roofline, merged.verdict = base.kernels, base.roofline, base.verdict
    merged.host = base.host
    if merged.steps is not None and (base.steps or {}).get("traced"):
        merged.steps["traced"] = base.steps["traced"]  # the traced split, like the traces, from the first process
    merged.host_path = _merge_host_path([r.host_path for r in results])
    merged.processes = processes_section(merged, pids=pids)
    if any(kernel_figures(r.kernels) is not None for r in results):
        for entry, r in zip(merged.processes["per_process"], results):
            entry["kernels"] = kernel_figures(r.kernels)
    return merged


def kernel_figures(kernels: dict[str, Any] | None) -> dict[str, Any] | None:
    """One process's decode kernel figures from its ``kernels`` section
    (:func:`fastprof.analysis.kernels.section`): ``busy_s_per_step`` (median GPU busy time of a
    decode step), ``idle_share`` (median share of a step the GPU ran nothing), ``kernels_per_token``
    (median kernels per decode step) and ``class_s_per_step``: each kernel class's time per decode
    step (its total over the traced iterations' decode steps over their count; classes without time
    left out). None without a trace."""
    k = kernels or {}
    if not k.get("available") or k.get("busy_s_per_step") is None:
        return None
    steps = int(k.get("decode_steps") or 0)
    iters = max(int(k.get("iterations") or 1), 1)
    # class_s is seconds per traced iteration; decode_steps counts the steps of every traced iteration.
    classes = {c: float(total) * iters / steps for c, total in (k.get("class_s") or {}).items()
               if steps and total}
    return {"busy_s_per_step": float(k["busy_s_per_step"]),
            "idle_share": None if k.get("idle_share") is None else float(k["idle_share"]),
            "kernels_per_token": None if k.get("kernels_per_token") is None else float(k["kernels_per_token"]),
            "class_s_per_step": classes}


def _merge_host_path(parts: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Every process's host-path rows, each marked with its process, summarised together; the
    calibrations the processes took before their models loaded, in process order."""
    from fastprof.analysis.host import host_path_section

    if all(p is None for p in parts):
        return None
    rows = [{**row, "process": i} for i, p in enumerate(parts) for row in ((p or {}).get("iterations") or [])]
    reasons = {(p or {}).get("steal_reason") for p in parts} - {None}
    out = host_path_section(rows, steal_reason="; ".join(sorted(reasons)) or None)
    out["processes"] = [(p or {}).get("process") for p in parts]
    return out


def _merge_hardware(parts: Sequence[dict[str, Any] | None], *, seed: int) -> dict[str, Any] | None:
    present = [h for h in parts if h]
    if not present:
        return None
    merged = dict(present[0])
    rows = [row for h in present for row in (h.get("per_iteration") or [])]
    merged["per_iteration"] = rows
    summary = {}
    for name in (present[0].get("summary") or {}):
        values = [row.get(name) for row in rows if isinstance(row.get(name), (int, float))]
        summary[name] = _stats.describe(values, seed=seed) if values else present[0]["summary"][name]
    merged["summary"] = summary
    return merged


def processes_section(result: BenchmarkResult, *, pids: Sequence[int | None] | None = None) -> dict[str, Any]:
    """The ``processes`` section of a result whose iterations carry their ``process``."""
    labels = np.asarray([it.get("process", 0) for it in result.iterations], dtype=np.int64)
    table = iteration_table(result) or {}
    count = int(labels.max()) + 1 if labels.size else 0
    per_process, spread = [], {}
    for p in range(count):
        mask = labels == p
        medians = {name: (float(np.nanmedian(v[mask])) if np.isfinite(v[mask]).any() else None)
                   for name, v in table.items()}
        per_process.append({"process": p, "pid": (pids[p] if pids is not None and p < len(pids) else None),
                            "iterations": int(mask.sum()), "median": medians})
    for name in SPREAD_METRICS:
        if name not in table:
            continue
        meds = np.asarray([pp["median"][name] for pp in per_process if pp["median"].get(name) is not None],
                          dtype=np.float64)
        within = [c for c in (_cv(table[name][labels == p]) for p in range(count)) if c is not None]
        spread[name] = {"between_process_cv": _cv(meds),
                        "within_process_cv": float(np.median(within)) if within else None}
    return {"count": count, "per_process": per_process, "spread": spread}
