"""fastprof under torchrun: every rank measures itself, rank 0 gathers and writes one result.

torch.distributed is the engine; fastprof builds no transport of its own. On top of the job's
process group, fastprof makes one gloo group (:func:`setup`) for its own traffic: small Python
objects and clock round trips, with a timeout, so that a rank that died can never hang the
gather (gloo raises when the timeout passes; NCCL might wait for ever).

Clocks: ranks on one host (same boot id) share CLOCK_MONOTONIC and need no correction. For ranks
on other hosts, each rank's offset to rank 0 is estimated over the gloo group with a few round
trips, keeping the one with the smallest round-trip time (offset = remote time - midpoint of the
round trip, uncertainty = half the round trip), and the rank's host times are shifted by it. The
offsets, their uncertainty and whether they were applied are recorded in the result.

``FASTPROF_CLOCK_OFFSET_NS`` (a testing aid) makes a rank read its clock that many nanoseconds
ahead and present itself as another host, so the estimate and its correction can be checked on
one machine.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fastprof.analysis import metrics as _metrics
from fastprof.analysis import ranks as _ranks
from fastprof.analysis import stats as _stats
from fastprof.results.result import BenchmarkResult

#: Seconds a gather or a clock round trip may wait for another rank (FASTPROF_DIST_TIMEOUT_S).
DEFAULT_TIMEOUT_S = 300.0
CLOCK_ROUNDS = 8
MODES = ("tp", "dp")


def _injected_offset_ns() -> int:
    try:
        return int(os.environ.get("FASTPROF_CLOCK_OFFSET_NS", "0") or 0)
    except ValueError:
        return 0


def now_ns() -> int:
    """This rank's CLOCK_MONOTONIC (plus the injected test offset, if any)."""
    return time.perf_counter_ns() + _injected_offset_ns()


def host_identity() -> str:
    """Ranks with the same identity share CLOCK_MONOTONIC: the host name and its boot id."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "unknown-boot"
    ident = f"{socket.gethostname()}/{boot}"
    off = _injected_offset_ns()
    return f"{ident}/offset{off}" if off else ident


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside it."""
    def get(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    return get("RANK", 0), get("WORLD_SIZE", 1), get("LOCAL_RANK", 0)


def launched() -> bool:
    """Started by torchrun (or another launcher that sets WORLD_SIZE > 1)."""
    return env_world()[1] > 1


def active() -> bool:
    """torch.distributed is initialised with more than one rank."""
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def timeout_s() -> float:
    try:
        return float(os.environ.get("FASTPROF_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


@dataclass
class Context:
    """One rank's view of the job: rank, world size, its gloo group and the clock offsets
    (filled on rank 0 by :func:`estimate_offsets`)."""

    rank: int
    world_size: int
    local_rank: int
    group: Any
    backend: str
    host: str
    offsets: list[dict[str, Any]] = field(default_factory=list)


_CONTEXT: Context | None = None


def setup(device_type: str = "cpu") -> Context:
    """Joins (or initialises, under torchrun) the process group and makes fastprof's gloo group.
    Collective: every rank must call it. Idempotent."""
    global _CONTEXT
    import torch.distributed as dist

    if _CONTEXT is not None:
        return _CONTEXT
    timeout = _dt.timedelta(seconds=timeout_s())
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
        if backend == "nccl":
            import torch

            kwargs["device_id"] = torch.device("cuda", env_world()[2])
        dist.init_process_group(**kwargs)
    group = dist.new_group(backend="gloo", timeout=timeout)
    _CONTEXT = Context(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=env_world()[2],
                       group=group, backend=str(dist.get_backend()), host=host_identity())
    _CONTEXT.offsets = estimate_offsets(_CONTEXT)
    return _CONTEXT


def context() -> Context | None:
    """The context made by :func:`setup`, or one made now if torch.distributed is active."""
    if _CONTEXT is None and active():
        import torch

        return setup("cuda" if torch.cuda.is_available() else "cpu")
    return _CONTEXT


def teardown() -> None:
    global _CONTEXT
    _CONTEXT = None
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort at exit
        pass


def estimate_offsets(ctx: Context, rounds: int = CLOCK_ROUNDS) -> list[dict[str, Any]]:
    """Each rank's clock offset to rank 0 (collective; the list is complete on rank 0).

    For each other rank, ``rounds`` round trips over the gloo group: rank 0 reads t1, the other
    rank answers with its clock t2, rank 0 reads t3. The round trip with the smallest
    ``t3 - t1`` gives ``offset = t2 - (t1 + t3) / 2`` and ``uncertainty = (t3 - t1) / 2``.
    Ranks on rank 0's host (same boot id) share its clock: their offset is measured and
    recorded but not applied.
    """
    import torch
    import torch.distributed as dist

    hosts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(hosts, ctx.host, group=ctx.group)
    out = [{"rank": 0, "host": hosts[0], "offset_ns": 0, "uncertainty_ns": 0, "rtt_ns": 0, "applied": False}]
    buf = torch.zeros(1, dtype=torch.int64)
    for r in range(1, ctx.world_size):
        best: tuple[int, int] | None = None
        for _ in range(rounds):
            if ctx.rank == 0:
                t1 = now_ns()
                buf[0] = t1
                dist.send(buf, dst=r, group=ctx.group)
                dist.recv(buf, src=r, group=ctx.group)
                t3 = now_ns()
                rtt, offset = t3 - t1, int(buf[0]) - (t1 + t3) // 2
                if best is None or rtt < best[0]:
                    best = (rtt, offset)
            elif ctx.rank == r:
                dist.recv(buf, src=0, group=ctx.group)
                buf[0] = now_ns()
                dist.send(buf, dst=0, group=ctx.group)
        if ctx.rank == 0 and best is not None:
            same = hosts[r] == hosts[0]
            out.append({"rank": r, "host": hosts[r], "offset_ns": int(best[1]), "uncertainty_ns": int(best[0] // 2),
                        "rtt_ns": int(best[0]), "applied": not same})
    return out if ctx.rank == 0 else []


def gather(ctx: Context, payload: Any) -> list[Any] | None:
    """Every rank's ``payload`` on rank 0 (None on the others), over the gloo group. Raises
    RuntimeError on rank 0 when a rank does not answer within the timeout."""
    import torch.distributed as dist

    out: list[Any] | None = [None] * ctx.world_size if ctx.rank == 0 else None
    dist.gather_object(payload, out, dst=0, group=ctx.group)
    return out


def agree(ctx: Context, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a broadcast over the gloo group)."""
    import torch.distributed as dist

    box = [value if ctx.rank == 0 else None]
    dist.broadcast_object_list(box, src=0, group=ctx.group)
    return box[0]


# ---- the merged result --------------------------------------------------------------------
def rank_payload(ctx: Context, result: BenchmarkResult | None, error: BaseException | None,
                 device: str | None = None) -> dict[str, Any]:
    """What a rank sends to rank 0 after one configuration."""
    doc = None
    if result is not None:
        doc = result.to_dict()
        doc.pop("environment", None)
    err = None if error is None else {"type": type(error).__name__, "message": str(error).strip().splitlines()[0]
                                      if str(error).strip() else type(error).__name__}
    return {"rank": ctx.rank, "local_rank": ctx.local_rank, "host": ctx.host, "device": device, "result": doc,
            "error": err}


class RankError(RuntimeError):
    """One or more ranks failed a configuration: the message names them and their errors."""


def _rank_results(payloads: Sequence[dict[str, Any]], environment: dict[str, Any]) -> list[BenchmarkResult]:
    failed = [p for p in payloads if p.get("error") or p.get("result") is None]
    if failed:
        raise RankError("; ".join(f"rank {p['rank']}: {(p.get('error') or {}).get('type', 'no result')}: "
                                  f"{(p.get('error') or {}).get('message', '')}" for p in failed))
    out = []
    for p in payloads:
        d = dict(p["result"])
        d["environment"] = environment
        out.append(BenchmarkResult.from_dict(d))
    return out


def _kernel_digest(kernels: dict[str, Any]) -> dict[str, Any]:
    """The headline of one rank's kernel breakdown (what compares across ranks)."""
    keys = ("available", "reason", "idle_share", "busy_s_per_step", "step_s_median", "kernels_per_token",
            "class_share", "decode_steps", "trace_overhead_ratio")
    return {k: kernels[k] for k in keys if k in kernels}


def merge(payloads: Sequence[dict[str, Any]], *, mode: str, offsets: Sequence[dict[str, Any]],
          environment: dict[str, Any], world_size: int, backend: str, seed: int = 0) -> BenchmarkResult:
    """Rank 0's merged result of one configuration (see :mod:`fastprof.analysis.ranks`).

    ``tp``: the main summary is the job's (each step's slowest rank); ``dp``: the slowest rank's
    latency, plus ``total_*_tokens_per_s`` summed across ranks per iteration. Either way, the
    ``distributed`` section holds every rank's own summary and raw iterations (and the headline of
    its kernel breakdown when traced), the clock offsets, and for ``tp`` the step skew and how
    often each rank was last. A ``tp`` result carries the slowest rank's kernel breakdown
    (``kernels.rank`` says which); a ``dp`` result is the slowest rank's, breakdown included.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    results = _rank_results(payloads, environment)
    applied = {o["rank"]: int(o["offset_ns"]) for o in offsets if o.get("applied")}
    traces = [_ranks.shift(r.traces(), applied.get(i, 0)) for i, r in enumerate(results)]
    base = results[0]
    cfg = dict(base.config)
    bs, pl = int(cfg.get("batch_size", 1)), int(cfg.get("prompt_len", 0))
    per_rank = []
    for p, r in zip(payloads, results):
        per_rank.append({"rank": p["rank"], "host": p["host"], "device": p.get("device"), "summary": r.summary,
                         "device_summary": r.device_summary, "hardware_summary": (r.hardware or {}).get("summary"),
                         "iterations": r.iterations, "warnings": r.warnings,
                         **({"kernels": _kernel_digest(r.kernels)} if r.kernels else {})})
    section: dict[str, Any] = {"mode": mode, "world_size": world_size, "backend": backend,
                               "clock": {"method": "offset estimated over the process group" if applied
                                         else "shared CLOCK_MONOTONIC (one host)", "offsets": list(offsets)},
                               "ranks": per_rank}
    warnings: list[str] = []
    if mode == "tp":
        merged_traces = _ranks.tensor_parallel_merge(traces)
        skew = _ranks.step_skew(traces)
        last = [int(x) for x in skew["last_counts"]]
        section["skew"] = {"step_skew_s": _stats.describe(np.asarray(skew["skew_ns"], dtype=np.float64) / 1e9,
                                                          seed=seed),
                           "last_counts": last, "most_often_last": int(np.argmax(last)) if last else None}
        device_timing = base.device_timing if all(r.device_timing.get("available") for r in results) else \
            {"available": False, "reason": "not every rank has device timing"}
        merged = BenchmarkResult.from_traces("generate", merged_traces, config=cfg, environment=environment,
                                             device_timing=device_timing, hardware=base.hardware,
                                             warnings=[w for w in base.warnings if "iteration" not in w], seed=seed)
        section["slowest_rank"] = section["skew"]["most_often_last"]
        # The kernel breakdown is per GPU: the merged result carries the slowest rank's, and
        # section["ranks"] every rank's digest.
        traced = results[section["slowest_rank"] or 0].kernels or base.kernels
        if traced is not None:
            merged.kernels = {**traced, "rank": section["slowest_rank"] or 0}
    else:
        itl = [float(r.summary.get("itl_s", r.summary.get("e2e_latency_s", {})).get("p50") or 0.0) for r in results]
        slowest = int(np.argmax(itl))
        merged = results[slowest]
        merged.config = cfg
        merged.environment = environment
        section["slowest_rank"] = slowest
        for name in ("throughput_tokens_per_s", "decode_tokens_per_s"):
            values = []
            for t in traces:
                m = _metrics.generation_metrics(t, batch_size=bs, prompt_len=pl)
                if m is None or name not in m:
                    break
                values.append(m[name])
            else:
                merged.summary[f"total_{name}"] = _stats.describe(_ranks.summed_per_iteration(values), seed=seed)
        warnings.append(f"data parallel over {world_size} ranks: latencies are rank {slowest}'s (the slowest); "
                        "total_* throughputs add up every rank")
    merged.distributed = section
    merged.warnings = list(dict.fromkeys(list(merged.warnings) + warnings))
    return merged


def attach_rank(result: BenchmarkResult, ctx: Context, mode: str) -> BenchmarkResult:
    """A non-zero rank's own result, marked with its rank (what it returns to its caller)."""
    result.distributed = {"mode": mode, "world_size": ctx.world_size, "rank": ctx.rank, "merged_on_rank": 0}
    return result


def infer_mode(model: Any) -> str:
    """``tp`` for a model sharded by transformers' tensor parallelism, else ``dp``."""
    size = getattr(model, "_tp_size", None)
    try:
        size = size or getattr(model, "tp_size", None)
    except Exception:  # noqa: BLE001 - a property that raises on unsharded models
        size = None
    return "tp" if isinstance(size, int) and size > 1 else "dp"


def finish(result: BenchmarkResult | None, error: BaseException | None, *, mode: str, device: str | None,
           environment: dict[str, Any], seed: int = 0) -> BenchmarkResult | None:
    """The end of one configuration on every rank (collective). Rank 0 returns the merged
    result, or raises :class:`RankError` naming the ranks that failed; other ranks return their
    own result (or re-raise their own error)."""
    ctx = context()
    assert ctx is not None
    payloads = gather(ctx, rank_payload(ctx, result, error, device))
    if ctx.rank != 0:
        if error is not None:
            raise error
        return attach_rank(result, ctx, mode) if result is not None else None
    assert payloads is not None
    return merge(payloads, mode=mode, offsets=ctx.offsets, environment=environment, world_size=ctx.world_size,
                 backend=ctx.backend, seed=seed)

