"""GPU kernel trace: every kernel (graph-launched ones included), memcpy and memset that ran on
the device, on fastprof's clock (CLOCK_MONOTONIC ns), from NVIDIA's CUPTI activity API.

Example::

    from fastprof.capture.kernel_trace import KernelTracer

    with KernelTracer() as tracer:        # never raises for a missing CUPTI: see .available/.reason
        run_some_steps()
        torch.cuda.synchronize()
    trace = tracer.trace                  # KernelTrace: columns, names, dropped, timestamp_method
    print(trace.available, trace.reason, len(trace))

CUPTI is opened at run time: a copy already loaded in the process (torch's; a second copy would
take torch.profiler's records, so it wins over ``FASTPROF_CUPTI_LIBRARY`` and the tracer's
:attr:`KernelTracer.note` says so), ``FASTPROF_CUPTI_LIBRARY``, the ``nvidia-cuda-cupti`` wheel's ``lib`` folder (``nvidia/cuda_cupti/lib`` or ``nvidia/cu13/lib``),
the CUDA toolkit (``/usr/local/cuda*/lib64``, ``extras/CUPTI/lib64``, ``targets/*/lib``), then the
loader path. Only one CUPTI subscriber can exist per process: while torch.profiler or Nsight holds
it, the tracer reports ``available=False`` with the reason instead of failing.

Tracing costs the host about 2.4 us per kernel launch on an H100: keep it out of timed iterations.

``KernelTracer(api=True)`` also records the CUDA runtime and driver API calls that launch kernels
or graphs, copy, set memory or wait for the GPU (CUPTI's RUNTIME and DRIVER activity records,
switched on one function at a time with ``cuptiActivityEnableRuntimeApi``/``DriverApi``):
start/end on the same clock, the calling thread, the correlation id shared with the kernel or copy
it launched, and the function's name. The thousands of small bookkeeping calls a framework makes
per step (``cudaGetDevice``, ``cudaStreamIsCapturing``, ...) are left out: a record costs the
calling thread more than such a call, and recording them inflated a 1.2B eager step by about
2 ms on an H200. ``api="all"`` records every call (as does a CUPTI without the per-function
switches: :attr:`KernelTracer.api_mode` says which). The records land in ``trace.api``
(:class:`ApiTrace`), never among the device records. They cost the host extra time in every
recorded call, on top of the kernel tracing: like it, they belong outside timed iterations.
"""

from __future__ import annotations

import glob
import os
import site
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastprof.errors import KernelTraceUnavailable, LibraryError, StateError

KIND_NAMES = ("kernel", "memcpy", "memset")
API_KIND = 3  # the native record kind of a CUDA API call; split off into ApiTrace
API_DOMAINS = {1: "driver", 2: "runtime"}  # ApiTrace.domain (CUPTI's CUpti_CallbackDomain)
_LIB_NAMES = ("libcupti.so", "libcupti.so.13", "libcupti.so.12")


def mapped_cupti() -> list[str]:
    """The libcupti files this process has already mapped (torch loads its wheel's copy on import)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return sorted({line.split()[-1] for line in maps if "libcupti.so" in line and "/" in line})
    except OSError:
        return []


#: The CUPTI files fastprof's tracers opened in this process (they stay mapped): a copy fastprof
#: opened itself is no reason to pass over ``FASTPROF_CUPTI_LIBRARY`` later.
_OPENED: set[str] = set()


def _other_copy_note(mapped: list[str]) -> str | None:
    """Why ``FASTPROF_CUPTI_LIBRARY`` is passed over: it names a file other than the CUPTI that
    something else in this process (torch) already uses. Two copies of CUPTI in one process take
    each other's records: after a trace by the second, torch.profiler sees no kernels (0 CUDA
    events against 100, H200, torch 2.11)."""
    wanted = os.environ.get("FASTPROF_CUPTI_LIBRARY")
    mapped = [m for m in mapped if os.path.realpath(m) not in _OPENED]
    if not wanted or not mapped:
        return None
    if any(os.path.realpath(wanted) == os.path.realpath(m) for m in mapped):
        return None
    return (f"FASTPROF_CUPTI_LIBRARY names {wanted}, but this process already uses {mapped[0]}: traced with "
            "that one, as a second copy of CUPTI in one process would take torch.profiler's records")


def cupti_candidates(mapped: list[str] | None = None) -> list[str]:
    """Paths to try for libcupti, best first (FASTPROF_CUPTI_LIBRARY is handled natively, before these);
    ``mapped``: :func:`mapped_cupti`, when the caller has read it already."""
    found: list[str] = []

    def add(paths):
        for p in paths:
            if p not in found and os.path.exists(p):
                found.append(p)

    add(mapped_cupti() if mapped is None else mapped)  # a copy already mapped (torch's kineto loads the wheel's): no second copy
    roots = list(dict.fromkeys([*sys.path, *site.getsitepackages(), site.getusersitepackages()]))
    for root in roots:
        for sub in ("nvidia/cuda_cupti/lib", "nvidia/cu13/lib", "nvidia/cu12/lib"):
            add(sorted(glob.glob(os.path.join(root, sub, "libcupti.so*"))))
    for pattern in ("/usr/local/cuda*/lib64/libcupti.so*", "/usr/local/cuda*/extras/CUPTI/lib64/libcupti.so*",
                    "/usr/local/cuda*/targets/*/lib/libcupti.so*"):
        add(sorted(glob.glob(pattern)))
    found.extend(_LIB_NAMES)  # the loader path
    return found


@dataclass
class ApiTrace:
    """CUDA runtime and driver API calls of one traced span (``KernelTracer(api=True)``), as numpy
    columns of equal length.

    ``start_ns``/``end_ns`` absolute CLOCK_MONOTONIC, as the device records; ``thread`` CUPTI's
    threadId of the calling thread; ``correlation`` the id the kernel, copy or memset the call
    launched carries too (0 for calls that launch nothing); ``cbid`` CUPTI's callback id;
    ``domain`` 1 driver API, 2 runtime API (:data:`API_DOMAINS`); ``name_id`` indexes ``names``,
    the table shared with the :class:`KernelTrace` (``cudaLaunchKernel_v7000``, ``cuLaunchKernel``;
    ``cuda_runtime_cbid_<n>`` / ``cuda_driver_cbid_<n>`` when CUPTI cannot name the function).
    """

    start_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    end_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    correlation: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    thread: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    cbid: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    domain: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    name_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.start_ns.size)

    @property
    def name(self) -> np.ndarray:
        """Per record name (object array of str)."""
        table = np.asarray(self.names, dtype=object)
        return table[self.name_id] if len(self) else np.zeros(0, dtype=object)

    @property
    def duration_ns(self) -> np.ndarray:
        return self.end_ns - self.start_ns


@dataclass
class KernelTrace:
    """The activity records of one traced span, as numpy columns of equal length.

    ``kind``: 0 kernel, 1 memcpy, 2 memset (:data:`KIND_NAMES`); ``name_id`` indexes ``names``
    (raw, mangled C++ names; :meth:`demangled` for readable ones); ``start_ns``/``end_ns`` absolute
    CLOCK_MONOTONIC; ``graph_id`` 0 outside CUDA graphs. ``dropped`` counts records lost (CUPTI's
    own count, pool exhaustion, capacity): never silent. ``timestamp_method``: ``"callback"`` (CUPTI
    stamps with CLOCK_MONOTONIC) or ``"offset"`` (converted with a measured offset). ``api``: the
    CUDA API calls (:class:`ApiTrace`, sharing ``names``) when traced with ``api=True``, else empty;
    they are not among the columns above, which hold device activity only.
    """

    kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    start_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    end_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    name_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    device: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    stream: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    correlation: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    graph_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    bytes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    names: list[str] = field(default_factory=list)
    dropped: int = 0
    timestamp_method: str | None = None
    available: bool = True
    reason: str | None = None
    library_path: str | None = None
    overhead: dict[str, float] = field(default_factory=dict)
    api: ApiTrace = field(default_factory=ApiTrace)

    def __len__(self) -> int:
        return int(self.kind.size)

    @property
    def name(self) -> np.ndarray:
        """Per record name (object array of str)."""
        table = np.asarray(self.names, dtype=object)
        return table[self.name_id] if len(self) else np.zeros(0, dtype=object)

    def demangled(self) -> list[str]:
        """The name table, demangled (Itanium ABI); names that are not mangled come back unchanged."""
        return [demangle(n) for n in self.names]

    @property
    def duration_ns(self) -> np.ndarray:
        return self.end_ns - self.start_ns

    @classmethod
    def unavailable(cls, reason: str) -> KernelTrace:
        return cls(available=False, reason=reason)

    @classmethod
    def from_native(cls, data: dict[str, Any], **extra: Any) -> KernelTrace:
        dropped = int(data["dropped_backend"]) + int(data["dropped_pool"]) + int(data["dropped_capacity"])
        names = list(data["names"])
        kind = np.asarray(data["kind"])
        is_api = kind == API_KIND
        api = ApiTrace(names=names)
        if is_api.any():
            api = ApiTrace(**{col: np.asarray(data[col])[is_api] for col in
                              ("start_ns", "end_ns", "correlation", "thread", "cbid", "domain", "name_id")},
                           names=names)
            dev = ~is_api
            data = {**data, **{col: np.asarray(data[col])[dev] for col in
                               ("kind", "start_ns", "end_ns", "name_id", "device", "stream", "correlation",
                                "graph_id", "bytes")}}
        return cls(kind=data["kind"], start_ns=data["start_ns"], end_ns=data["end_ns"], name_id=data["name_id"],
                   device=data["device"], stream=data["stream"], correlation=data["correlation"],
                   graph_id=data["graph_id"], bytes=data["bytes"], names=names, dropped=dropped, api=api,
                   **extra)

    @classmethod
    def from_records(cls, records: list[tuple], **extra: Any) -> KernelTrace:
        """From (kind, name, start_ns, end_ns) tuples, optionally followed by device, stream,
        correlation, graph_id: for tests and for importing other tools' traces."""
        names: dict[str, int] = {}
        cols: dict[str, list] = {k: [] for k in ("kind", "start_ns", "end_ns", "name_id", "device", "stream",
                                                  "correlation", "graph_id")}
        for rec in records:
            kind, name, start, end, *rest = rec
            rest = list(rest) + [0] * (4 - len(rest))
            cols["kind"].append(KIND_NAMES.index(kind) if isinstance(kind, str) else int(kind))
            cols["name_id"].append(names.setdefault(name, len(names)))
            cols["start_ns"].append(start)
            cols["end_ns"].append(end)
            for key, value in zip(("device", "stream", "correlation", "graph_id"), rest):
                cols[key].append(value)
        dtypes = {"kind": np.uint8, "start_ns": np.int64, "end_ns": np.int64}
        arrays = {k: np.asarray(v, dtype=dtypes.get(k, np.uint32)) for k, v in cols.items()}
        return cls(**arrays, bytes=np.zeros(len(records), np.uint64), names=list(names), **extra)

    def select(self, mask: np.ndarray) -> KernelTrace:
        """The records where `mask` holds (same name table, counts and metadata)."""
        out = KernelTrace(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        for col in ("kind", "start_ns", "end_ns", "name_id", "device", "stream", "correlation", "graph_id", "bytes"):
            setattr(out, col, getattr(self, col)[mask])
        return out


def demangle(name: str) -> str:
    """Demangle one C++ symbol with the native core (abi::__cxa_demangle)."""
    from fastprof._native import _core

    return _core.demangle(name)


class KernelTracer:
    """Start/stop a CUPTI activity trace. Never raises for CUPTI being absent or held by another
    profiler: :attr:`available` is False and :attr:`reason` says why, and :attr:`trace` is then an
    empty, unavailable :class:`KernelTrace`.

    Parameters: ``buffer_bytes`` and ``buffer_count`` size the preallocated buffer pool (records
    beyond it are dropped and counted); ``max_records`` bounds the records kept (device and API records
    together); ``timestamp_callback`` False forces the measured-offset clock conversion; ``api`` True
    also records the CUDA launch, copy, memset and synchronising calls (``"all"``: every runtime and
    driver call) into :attr:`KernelTrace.api` (extra host cost
    in every CUDA call: for traces outside timed iterations). Synchronise the device before :meth:`stop`.
    """

    def __init__(self, buffer_bytes: int = 4 << 20, buffer_count: int = 16, max_records: int = 1 << 20,
                 timestamp_callback: bool = True, api: bool | str = False) -> None:
        self._native = None
        self.available = False
        self.reason: str | None = None
        self.trace: KernelTrace | None = None
        self._started_ns = 0
        if api not in (False, True, "selected", "all"):
            raise ValueError(f"api must be False, True ('selected') or 'all', got {api!r}")
        self.api = bool(api)
        from fastprof._native import _core

        #: Set when ``FASTPROF_CUPTI_LIBRARY`` was passed over for the CUPTI the process already uses.
        mapped = mapped_cupti()
        self.note: str | None = _other_copy_note(mapped)
        saved = os.environ.pop("FASTPROF_CUPTI_LIBRARY", None) if self.note else None
        try:
            self._native = _core.KernelTracer(cupti_candidates(mapped), buffer_bytes, buffer_count, max_records,
                                              timestamp_callback, api=self.api, all_api=api == "all")
            self.available = True
            if self._native.library_path and os.path.sep in self._native.library_path:
                _OPENED.add(os.path.realpath(self._native.library_path))
        except LibraryError as exc:
            self.reason = f"no CUPTI library: {exc}"
        finally:
            if saved is not None:
                os.environ["FASTPROF_CUPTI_LIBRARY"] = saved

    @property
    def running(self) -> bool:
        return bool(self._native is not None and self._native.running)

    @property
    def library_path(self) -> str | None:
        return self._native.library_path if self._native is not None else None

    @property
    def api_mode(self) -> str:
        """Which CUDA API calls the running or last trace records: ``"off"``, ``"selected"``
        (launches, copies, memsets and synchronising calls, switched on one function at a time)
        or ``"all"`` (every runtime and driver call: ``api="all"``, or a CUPTI without per-function
        switches)."""
        return self._native.api_mode if self._native is not None else "off"

    def start(self) -> bool:
        """Begin recording; returns False (and sets :attr:`reason`) when tracing cannot be had."""
        if self._native is None:
            return False
        try:
            self._native.start()
        except (KernelTraceUnavailable, StateError) as exc:
            self.available = False
            self.reason = str(exc)
            return False
        self.available = True
        self.reason = None
        self._started_ns = time.perf_counter_ns()
        return True

    def flush(self) -> None:
        if self._native is not None:
            self._native.flush()

    def stop(self) -> KernelTrace:
        """Stop, flush and return the :class:`KernelTrace` (also kept as :attr:`trace`)."""
        if self._native is None or not self.available:
            self.trace = KernelTrace.unavailable(self.reason or "the kernel tracer did not start")
            return self.trace
        t0 = time.perf_counter_ns()
        self._native.stop()
        t1 = time.perf_counter_ns()
        data = self._native.take()
        self.trace = KernelTrace.from_native(
            data, timestamp_method=self._native.timestamp_method, library_path=self._native.library_path,
            overhead={"stop_flush_ms": (t1 - t0) / 1e6, "take_ms": (time.perf_counter_ns() - t1) / 1e6})
        return self.trace

    def __enter__(self) -> KernelTracer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
