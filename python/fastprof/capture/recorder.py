"""The public token recorder: per token, a host timestamp and a GPU timing event.

Example, a hand-written decode loop (works the same with a CUDA-graph replay)::

    import fastprof

    rec = fastprof.TokenRecorder(capacity=512, device="cuda")   # or device=None: host only
    traces = []
    for _ in range(20):
        rec.begin()                      # the request is issued
        for _ in range(128):
            logits = step(...)           # one decode step, queued on the current stream
            rec.mark()                   # host timestamp + event on the stream, no sync
        traces.append(rec.end())         # one synchronisation, then the timestamps
    result = fastprof.summarize_generation(traces, batch_size=1, prompt_len=128)
    print(result)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import fastprof._torch as _torch
from fastprof._native import _core


@dataclass(frozen=True)
class Trace:
    """The timestamps of one iteration.

    Host times are absolute CLOCK_MONOTONIC nanoseconds (the clock of time.perf_counter_ns()
    and of the GPU sampler). Device times are nanoseconds after the start event, from GPU
    timing events; they are None when no device was attached. With free-memory tracking
    (``TokenRecorder(track_device_memory=True)``), ``device_free_bytes`` holds the driver's free
    device memory read at each host mark (-1 where the read failed) and ``device_free_start_bytes``
    the value at ``begin()``; else both are None.

    ``steps``: decode steps that emitted several tokens at once (speculative decoding; see
    :mod:`fastprof.capture.speculative`): ``tokens`` (int array, tokens emitted per step; the
    marks hold one entry per token, a step's tokens all at the step's time), ``proposed`` (draft
    tokens proposed per step), ``draft_host_ns`` (absolute host ns, begin and end of each step's
    draft, flat) and ``draft_device_ns`` (device ns, the same points; None off a GPU), ``method``.
    None for plain decoding (one token per step).
    """

    host_start_ns: int
    host_end_ns: int
    host_marks_ns: np.ndarray
    device_marks_ns: np.ndarray | None = None
    device_end_ns: int | None = None
    device_free_bytes: np.ndarray | None = None
    device_free_start_bytes: int | None = None
    steps: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def n_marks(self) -> int:
        return int(self.host_marks_ns.size)

    def host_marks_rel_ns(self) -> np.ndarray:
        """Host marks relative to the start of the iteration."""
        return self.host_marks_ns - self.host_start_ns


def _parse_device(device: Any) -> tuple[str | None, int]:
    """Returns (device type, ordinal) for None, 'cpu', 'cuda', 'cuda:N', N, or a torch.device."""
    if device is None:
        return None, 0
    if isinstance(device, int):
        return "cuda", device
    text = str(device)
    kind, _, index = text.partition(":")
    if kind == "cpu":
        return None, 0
    if kind not in ("cuda", "hip", "rocm"):
        raise ValueError(f"unsupported device {device!r}: use None, 'cpu', 'cuda', 'cuda:N' or an ordinal")
    if index:
        if not index.isdigit():
            raise ValueError(f"bad device ordinal in {device!r}")
        return kind, int(index)
    torch = _torch.loaded()
    if _torch.cuda_ready(torch):
        return kind, torch.cuda.current_device()
    return kind, 0


class TokenRecorder(_core.Recorder):
    """Per-token recorder with a fixed capacity.

    Parameters
    ----------
    capacity:
        Most marks per iteration. All storage and the GPU event pool are allocated here, so
        ``mark()`` never allocates. Going past it raises :class:`fastprof.CapacityError`; the
        marks recorded so far are kept and ``end()`` still works.
    device:
        ``None`` or ``"cpu"``: host timestamps only. ``"cuda"``, ``"cuda:N"``, an ordinal or a
        ``torch.device``: also a GPU timing event per mark, recorded through the CUDA driver
        (or the HIP runtime on ROCm builds of torch). ``"auto"``: the current CUDA device when
        torch has been imported and sees one, else host only.
    stream:
        Raw ``CUstream``/``hipStream_t`` handle the events go on. Default: torch's current stream
        for the device when torch is loaded, else the legacy default stream (0).
    backend:
        ``"cuda"`` or ``"hip"``, to override the detection.
    track_device_memory:
        Also read the driver's free device memory (``cuMemGetInfo_v2``) at every host mark, into
        storage allocated here (the trace's ``device_free_bytes``): a drop between two marks is
        memory the process (its caching allocator growing) or another one took from the driver in
        that gap. CUDA only; where it cannot be read, tracking stays off and
        ``device_memory_reason`` says why. Its cost per mark is that driver call's (see
        docs/explanation/instruments.md, section "Slow tokens and their causes").
        ``track_device_memory(on)`` changes it between iterations.

    Methods: ``begin()``, ``mark()``, ``mark_host()``, ``mark_device()``, ``end() -> Trace``.
    """

    def __init__(self, capacity: int = 4096, device: Any = "auto", stream: int | None = None,
                 backend: str | None = None, track_device_memory: bool = False) -> None:
        torch = _torch.loaded()
        if device == "auto":
            device = "cuda" if _torch.cuda_ready(torch) else None
        kind, ordinal = _parse_device(device)
        if kind is not None:
            if backend is None:
                backend = "hip" if kind in ("hip", "rocm") else (_torch.backend_kind(torch) if torch else "cuda")
            if stream is None:
                # torch's current stream on that device; an ordinal torch does not know is left
                # for the driver to report (DriverError naming cuDeviceGet).
                known = _torch.cuda_ready(torch) and ordinal < torch.cuda.device_count()
                stream = int(torch.cuda.current_stream(ordinal).cuda_stream) if known else 0
        super().__init__(int(capacity), backend if kind is not None else None, ordinal, int(stream or 0))
        # The per-token methods as native builtins: instance attributes shadow the (slower)
        # pybind11 methods of the same names.
        self.mark, self.mark_host, self.mark_device = self.fast_marks()
        if track_device_memory:
            self.track_device_memory(True)

    def end(self) -> Trace:  # type: ignore[override]
        """End the iteration (one device synchronisation) and return its :class:`Trace`."""
        super().end()
        return self.trace()

    def trace(self) -> Trace:
        """The :class:`Trace` of the last completed iteration."""
        device_marks = self.device_marks()
        return Trace(
            host_start_ns=self.host_start_ns,
            host_end_ns=self.host_end_ns,
            host_marks_ns=self.host_marks(),
            device_marks_ns=device_marks,
            device_end_ns=self.device_end_ns if device_marks is not None else None,
            device_free_bytes=self.device_free_bytes(),
            device_free_start_bytes=self.device_free_start_bytes,
        )

    def __repr__(self) -> str:
        where = f"{self.device_kind}:{self.device_ordinal}" if self.has_device else "host only"
        return f"TokenRecorder(capacity={self.capacity}, {where})"
