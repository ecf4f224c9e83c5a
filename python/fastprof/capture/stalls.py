"""Stall sources recorded during the timed iterations, on CLOCK_MONOTONIC like every token.

Each source yields events ``{"kind", "start_ns", "end_ns", "detail"}``:

- ``gc``: every Python garbage collection (``gc.callbacks``), with its generation and how many
  objects it collected and found uncollectable.
- ``cpu_wait``: intervals in which the measuring thread was runnable but waited for a CPU, or was
  switched out involuntarily, read from ``/proc/self/task/<tid>/schedstat`` and ``status`` by a
  native thread (:class:`fastprof._core.SchedWatch`, 1 ms), never by the measured thread; the
  detail has the run-queue wait and the switch count.
- ``recompile``: torch.compile (dynamo) compilations that started during the timed iterations
  (``torch._dynamo.callback_handler``), with the graph breaks counted meanwhile. Watched only
  when torch.compile has been used before them (``torch._dynamo`` loaded): importing dynamo
  just to watch it costs seconds per process, and without it nothing can recompile. A first
  compilation inside the timed iterations makes the source unavailable, with the reason.
- ``allocator``: the token gap in which free device memory dropped by at least one segment
  (2 MiB, :data:`SEGMENT_BYTES`): the caching allocator grew (a new segment is a ``cudaMalloc``;
  an out-of-memory retry frees cached blocks and allocates again) or something else took device
  memory. Read by the token recorder at every host mark (the driver's ``cuMemGetInfo_v2``, turned on
  through ``token_recorder``), so the event spans exactly that gap (previous mark to this one), with
  the bytes in its detail. The free memory is the device's, so another process allocating on the
  same GPU shows too. torch's own counters (``torch.cuda.memory_stats``: new segments, retries,
  out-of-memory frees) cost about 0.12 ms a call on an H200, too much at every token; they are
  read between iterations only and kept as a per-iteration figure in ``sources["allocator"]``,
  never as events. Without the per-token read (no token recorder on a CUDA device, HIP, an old
  driver) the source is ``coarse``: those per-iteration counts only, not used as the cause of any
  single token.
- ``gpu_throttle`` (from the GPU sampler, added by the analysis): samples with clock-event
  (throttle) reasons other than idle.
- ``gpu_process`` (from the GPU sampler, NVML): more compute processes on the GPU than when the
  timed iterations began, i.e. another job that appeared on the same GPU.

A source that is not available here (no ``/proc``, no torch, no CUDA) is listed in ``sources``
with the reason, never an error. :func:`fastprof.analysis.stalls.explain` names the slow tokens.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Any

import numpy as np

from fastprof._native import _core

SCHED_INTERVAL_NS = 1_000_000
#: The smallest segment torch's CUDA caching allocator asks the driver for (small-block pool):
#: a drop of free device memory of at least this much between two marks is an allocator event.
SEGMENT_BYTES = 2 << 20


class StallRecorder:
    """Records the stall sources between :meth:`start` and :meth:`stop` (around the timed iterations)."""

    def __init__(self, *, cuda_device: Any = None, sched_interval_ns: int = SCHED_INTERVAL_NS,
                 token_recorder: Any = None, segment_bytes: int = SEGMENT_BYTES) -> None:
        """``cuda_device``: where torch's allocator counters are read (None: not read).
        ``token_recorder``: the :class:`fastprof.TokenRecorder` of the timed iterations; when it has a
        CUDA device, :meth:`start` turns on its free-memory read at every mark (:meth:`stop` turns it
        off) and :meth:`iteration_end` makes the allocator events from it."""
        self.events: list[dict[str, Any]] = []
        self.sources: dict[str, dict[str, Any]] = {}
        self._cuda_device = cuda_device
        self._sched_interval_ns = int(sched_interval_ns)
        self._gc_start: dict[int, int] = {}
        self._watch = None
        self._dynamo = None
        self._compile_start: int | None = None
        self._breaks0 = 0
        self._mem: dict[str, int] | None = None
        self._iteration_start: int | None = None
        self._iteration = -1
        self._token_recorder = token_recorder
        self._segment_bytes = int(segment_bytes)
        self._per_token = False
        self._counters_available = False
        self._alloc_iterations: list[dict[str, Any]] = []
        self._failed_reads = 0
        self.cost: dict[str, Any] = {}

    # ---- gc ------------------------------------------------------------------------------
    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter_ns()
        if phase == "start":
            self._gc_start[info.get("generation", 0)] = now
            return
        start = self._gc_start.pop(info.get("generation", 0), now)
        self.events.append({"kind": "gc", "start_ns": start, "end_ns": now,
                            "detail": {"generation": info.get("generation"), "collected": info.get("collected"),
                                       "uncollectable": info.get("uncollectable")}})

    # ---- torch.compile ---------------------------------------------------------------------
    @staticmethod
    def _graph_breaks() -> int:
        try:
            from torch._dynamo.utils import counters

            return int(sum(counters["graph_break"].values()))
        except Exception:  # noqa: BLE001 - counters are internal; absent means none known
            return 0

    def _on_compile_start(self, *args: Any, **kwargs: Any) -> None:
        self._compile_start = time.perf_counter_ns()
        self._breaks0 = self._graph_breaks()

    def _on_compile_end(self, *args: Any, **kwargs: Any) -> None:
        now = time.perf_counter_ns()
        start = self._compile_start if self._compile_start is not None else now
        self._compile_start = None
        self.events.append({"kind": "recompile", "start_ns": start, "end_ns": now,
                            "detail": {"graph_breaks": self._graph_breaks() - self._breaks0}})

    # ---- allocator -------------------------------------------------------------------------
    def _memory_stats(self) -> dict[str, int] | None:
        if self._cuda_device is None:
            return None
        try:
            import torch

            s = torch.cuda.memory_stats(self._cuda_device)
        except Exception:  # noqa: BLE001 - no CUDA allocator here
            return None
        return {"segments": int(s.get("segment.all.allocated", 0)), "retries": int(s.get("num_alloc_retries", 0)),
                "ooms": int(s.get("num_ooms", 0))}

    def iteration_begin(self) -> None:
        """Marks the start of one timed iteration (for the allocator's per-iteration counts)."""
        self._iteration += 1
        self._iteration_start = time.perf_counter_ns()
        self._mem = self._memory_stats()

    def iteration_end(self, trace: Any = None) -> None:
        """After the iteration's ``end()``: its allocator events from the free memory read at its
        marks (``trace``, else the token recorder's last trace), and its allocator counts."""
        if self._per_token:
            self._gap_events(trace if trace is not None else self._token_recorder.trace())
        if self._mem is None or self._iteration_start is None:
            return
        after = self._memory_stats()
        if after is None:
            return
        delta = {k: after[k] - self._mem[k] for k in after}
        if any(delta.values()):
            self._alloc_iterations.append({"iteration": self._iteration, "new_segments": delta["segments"],
                                           "alloc_retries": delta["retries"], "ooms": delta["ooms"]})

    def _gap_events(self, trace: Any) -> None:
        """One allocator event per gap (previous mark, or the iteration's start, to this mark) in
        which free device memory dropped by at least one segment."""
        free = getattr(trace, "device_free_bytes", None)
        if free is None or not len(free):
            return
        free = np.asarray(free, dtype=np.int64)
        marks = np.asarray(trace.host_marks_ns, dtype=np.int64)
        start_free = trace.device_free_start_bytes
        before = np.concatenate([[start_free if start_free is not None else -1], free[:-1]])
        since = np.concatenate([[int(trace.host_start_ns)], marks[:-1]])
        self._failed_reads += int(np.count_nonzero(free < 0))
        drop = before - free
        for i in np.flatnonzero((before >= 0) & (free >= 0) & (drop >= self._segment_bytes)).tolist():
            self.events.append({"kind": "allocator", "start_ns": int(since[i]), "end_ns": int(marks[i]),
                                "span": "gap",
                                "detail": {"bytes": int(drop[i]), "token": int(i), "iteration": self._iteration,
                                           "free_after_bytes": int(free[i])}})

    def _start_allocator(self) -> None:
        self._counters_available = self._memory_stats() is not None
        why = "no token recorder with a CUDA device"
        rec = self._token_recorder
        if rec is not None and getattr(rec, "has_device", False):
            self._per_token = bool(rec.track_device_memory(True))
            why = rec.device_memory_reason or "free device memory cannot be read at the marks"
        if self._per_token:
            self.sources["allocator"] = {
                "available": True, "per_token": True, "segment_bytes": self._segment_bytes,
                "signal": "free device memory read at every token mark (cuMemGetInfo_v2): a drop of at least "
                          "one segment is memory taken from the driver in that gap (the caching allocator "
                          "growing, or another allocation on the device)"}
        elif self._counters_available:
            self.sources["allocator"] = {
                "available": True, "per_token": False, "coarse": True,
                "reason": f"allocator growth is known per iteration only ({why}): not used as the cause of "
                          "single tokens"}
        else:
            self.sources["allocator"] = {"available": False, "reason": "no CUDA caching allocator (not on a GPU)"}

    def _stop_allocator(self) -> None:
        src = self.sources.get("allocator")
        if self._per_token:
            self._per_token = False
            try:
                self._token_recorder.track_device_memory(False)
            except Exception:  # noqa: BLE001 - stopped inside an iteration (an abort): left on
                pass
            if src is not None and self._failed_reads:
                src["failed_reads"] = self._failed_reads
        if src is not None and self._counters_available:
            its = self._alloc_iterations
            src["per_iteration"] = {
                "iterations_with_growth": len(its),
                "new_segments": sum(i["new_segments"] for i in its),
                "alloc_retries": sum(i["alloc_retries"] for i in its), "ooms": sum(i["ooms"] for i in its),
                "iterations": list(its),
                "note": "torch.cuda.memory_stats read between iterations: a summary, never laid over the tokens"}

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "StallRecorder":
        self.events.clear()
        self._alloc_iterations = []
        self._failed_reads = 0
        self._iteration = -1
        gc.callbacks.append(self._on_gc)
        self.sources["gc"] = {"available": True}
        self._watch = _core.SchedWatch(threading.get_native_id(), self._sched_interval_ns)
        if self._watch.start():
            self.sources["cpu_wait"] = {"available": True, "interval_ns": self._sched_interval_ns}
        else:
            self.sources["cpu_wait"] = {"available": False, "reason": self._watch.reason}
            self._watch = None
        if "torch._dynamo" not in sys.modules:
            # Nothing has been compiled: importing dynamo only to watch it would cost seconds per
            # process. If something loads it during the timed iterations, stop() says so.
            self.sources["recompile"] = {"available": True, "dynamo_loaded": False}
        else:
            try:
                from torch._dynamo import callback_handler

                callback_handler.register_start_callback(self._on_compile_start)
                callback_handler.register_end_callback(self._on_compile_end)
                self._dynamo = callback_handler
                self.sources["recompile"] = {"available": True, "dynamo_loaded": True}
            except Exception as exc:  # noqa: BLE001 - a torch without dynamo callbacks
                self.sources["recompile"] = {"available": False,
                                             "reason": f"torch.compile callbacks unavailable ({type(exc).__name__})"}
        self._start_allocator()
        self.sources["affinity"] = _affinity()
        return self

    def stop(self) -> list[dict[str, Any]]:
        t0 = time.perf_counter_ns()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._dynamo is not None:
            for remove, cb in ((getattr(self._dynamo, "remove_start_callback", None), self._on_compile_start),
                               (getattr(self._dynamo, "remove_end_callback", None), self._on_compile_end)):
                try:
                    if remove is not None:
                        remove(cb)
                except Exception:  # noqa: BLE001 - already removed
                    pass
            self._dynamo = None
        elif self.sources.get("recompile", {}).get("dynamo_loaded") is False and "torch._dynamo" in sys.modules:
            self.sources["recompile"] = {
                "available": False,
                "reason": "torch.compile was first used during the timed iterations: its compilations were not "
                          "timed (compile the model in the warm-up)"}
        if self._watch is not None:
            self._watch.stop()
            for start, end, delay, nonvol in self._watch.intervals().tolist():
                self.events.append({"kind": "cpu_wait", "start_ns": int(start), "end_ns": int(end),
                                    "detail": {"run_queue_wait_s": delay / 1e9, "involuntary_switches": int(nonvol)}})
            self.cost = {"sched_watch_cpu_s": self._watch.thread_cpu_ns / 1e9, "sched_reads": int(self._watch.reads),
                         "sched_dropped": int(self._watch.dropped)}
            self._watch = None
        self._stop_allocator()
        self.cost["stop_s"] = (time.perf_counter_ns() - t0) / 1e9
        self.events.sort(key=lambda e: (e["start_ns"], e["end_ns"]))
        return self.events


def _affinity() -> dict[str, Any]:
    """The CPUs this process may run on and the load at the start (a busy machine explains waits)."""
    import os

    out: dict[str, Any] = {"available": True}
    try:
        out["cpus"] = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        out["cpus"] = None
    try:
        out["loadavg_1m"] = os.getloadavg()[0]
    except (AttributeError, OSError):
        out["loadavg_1m"] = None
    out["cpu_count"] = os.cpu_count()
    return out
