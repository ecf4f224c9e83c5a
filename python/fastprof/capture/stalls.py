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
- ``allocator``: an iteration in which torch's CUDA caching allocator allocated new segments or
  had to retry an allocation (``torch.cuda.memory_stats``, read between iterations).
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

from fastprof._native import _core

SCHED_INTERVAL_NS = 1_000_000


class StallRecorder:
    """Records the stall sources between :meth:`start` and :meth:`stop` (around the timed iterations)."""

    def __init__(self, *, cuda_device: Any = None, sched_interval_ns: int = SCHED_INTERVAL_NS) -> None:
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
        self._iteration_start = time.perf_counter_ns()
        self._mem = self._memory_stats()

    def iteration_end(self) -> None:
        if self._mem is None or self._iteration_start is None:
            return
        after = self._memory_stats()
        if after is None:
            return
        delta = {k: after[k] - self._mem[k] for k in after}
        if any(delta.values()):
            self.events.append({"kind": "allocator", "start_ns": self._iteration_start,
                                "end_ns": time.perf_counter_ns(),
                                "detail": {"new_segments": delta["segments"], "alloc_retries": delta["retries"],
                                           "ooms": delta["ooms"]}})

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "StallRecorder":
        self.events.clear()
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
        if self._memory_stats() is not None:
            self.sources["allocator"] = {"available": True}
        else:
            self.sources["allocator"] = {"available": False, "reason": "no CUDA caching allocator (not on a GPU)"}
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
