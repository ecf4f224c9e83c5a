"""The GPU sampler: utilisation, memory, power, clocks, temperature, energy and, on NVIDIA Hopper
and newer, the GPU performance counters (DRAM bandwidth, SM activity and occupancy, tensor pipes)
over time.

A native thread reads the device counters every ``interval_ms`` on an absolute schedule,
without the GIL; a second native thread reads the cumulative energy counter at start, at stop
and once a second between (on NVML one read takes milliseconds and holds the library's lock,
delaying the fast reads). Timestamps are CLOCK_MONOTONIC nanoseconds, the clock of ``time.perf_counter_ns()``
and of :class:`fastprof.TokenRecorder`, so samples line up with token marks directly::

    from fastprof.capture.sampler import Sampler

    with Sampler(interval_ms=10, devices=[0]) as s:      # CUDA ordinal 0, as torch numbers it
        run_benchmark()
    result = s.result
    print(result.power_w.mean(), result.energy_joules())

Backends: ``"nvml"`` (NVIDIA, libnvidia-ml.so.1), ``"amdsmi"`` (AMD, libamd_smi.so),
``"xpusmi"`` (Intel, the ``xpu-smi dump`` tool, one row a second at best) or ``"auto"``.
Sampling never raises from the thread: a missing library, a failed initialisation or a
lost device ends sampling and is reported in :attr:`SamplerResult.reason`.

GPU performance counters (:data:`GPM_FIELDS`) come from NVML's GPM interface (Hopper and newer,
driver 520+): the sampler takes a GPM sample of each device every 100 ms by default, the refresh period of NVML's GPM counters (one costs
tens of microseconds) and each row's value is the average over the window since that device's
previous GPM sample, so the first GPM row holds NaN. On a GPU or driver without GPM these fields
are listed in :attr:`SamplerResult.unavailable`, like any field the device cannot report.

- ``dram_bw_util_pct``: DRAM bandwidth used, % of the theoretical maximum
- ``sm_active_pct``: % of SMs busy; ``sm_occupancy_pct``: resident warps, % of the maximum
- ``tensor_active_pct``: % of time the SMs ran any tensor-core operation
- ``tensor_hmma_active_pct``: half-precision tensor-core MMA (FP16 and BF16; NVML has no
  separate BF16 counter)
- ``fp16_active_pct``: non-tensor FP16 math
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

import fastprof._torch as _torch
from fastprof._native import _core

FIELDS: tuple[str, ...] = tuple(_core.sampler_fields())

#: The GPU performance counter fields (NVML GPM), each the average over the window between two
#: consecutive GPM samples of its device.
GPM_FIELDS: tuple[str, ...] = ("dram_bw_util_pct", "sm_active_pct", "sm_occupancy_pct", "tensor_active_pct",
                               "tensor_hmma_active_pct", "fp16_active_pct")


@dataclass
class SamplerResult:
    """The samples of one :meth:`Sampler.start` .. :meth:`Sampler.stop` run.

    Rows are one reading of one device. ``timestamps_ns`` (int64, CLOCK_MONOTONIC ns, taken right
    after the read) and ``device`` (int32, index into ``devices``) are per row; every field in
    :data:`FIELDS` is a float64 array per row with NaN where the value was not available. The
    energy counter has its own series (``energy_timestamps_ns``, ``energy_device``, ``energy_mj``:
    the device's cumulative energy in millijoules).
    """

    timestamps_ns: np.ndarray
    device: np.ndarray
    fields: dict[str, np.ndarray]
    energy_timestamps_ns: np.ndarray
    energy_device: np.ndarray
    energy_mj: np.ndarray
    devices: list[dict[str, str]]
    unavailable: dict[str, list[str]]
    dropped: int = 0
    energy_dropped: int = 0
    missed_slots: int = 0
    read_errors: int = 0
    reason: str | None = None
    backend: str = ""
    library: str = ""
    interval_ms: float = 10.0
    start_ns: int = 0
    stop_ns: int = 0
    thread_cpu_ns: int = 0
    energy_thread_cpu_ns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> np.ndarray:
        # result.power_w, result.gpu_util_pct, ...: the field arrays as attributes.
        fields = self.__dict__.get("fields")
        if fields is not None and name in fields:
            return fields[name]
        raise AttributeError(name)

    @property
    def n_samples(self) -> int:
        return int(self.timestamps_ns.size)

    @property
    def ok(self) -> bool:
        return self.reason is None

    def for_device(self, index: int) -> dict[str, np.ndarray]:
        """The rows of one device: ``timestamps_ns`` plus every field."""
        mask = self.device == index
        out = {"timestamps_ns": self.timestamps_ns[mask]}
        out.update({k: v[mask] for k, v in self.fields.items()})
        return out

    def energy_joules(self, index: int | None = None) -> float:
        """Energy used between the first and last energy reading (all devices, or one), in J."""
        total = 0.0
        found = False
        for d in range(len(self.devices)) if index is None else [index]:
            e = self.energy_mj[self.energy_device == d]
            if e.size >= 2:
                total += float(e[-1] - e[0]) / 1000.0
                found = True
        return total if found else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays become lists, NaN becomes None."""

        def floats(a: np.ndarray) -> list[float | None]:
            return [None if np.isnan(x) else float(x) for x in a.tolist()]

        return {
            "backend": self.backend,
            "library": self.library,
            "interval_ms": self.interval_ms,
            "devices": self.devices,
            "unavailable": self.unavailable,
            "reason": self.reason,
            "dropped": self.dropped,
            "energy_dropped": self.energy_dropped,
            "missed_slots": self.missed_slots,
            "read_errors": self.read_errors,
            "start_ns": self.start_ns,
            "stop_ns": self.stop_ns,
            "thread_cpu_ns": self.thread_cpu_ns,
            "energy_thread_cpu_ns": self.energy_thread_cpu_ns,
            "timestamps_ns": self.timestamps_ns.tolist(),
            "device": self.device.tolist(),
            "fields": {k: floats(v) for k, v in self.fields.items()},
            "energy": {
                "timestamps_ns": self.energy_timestamps_ns.tolist(),
                "device": self.energy_device.tolist(),
                "energy_mj": floats(self.energy_mj),
            },
        }

    @classmethod
    def _from_native(cls, raw: dict[str, Any], interval_ms: float) -> SamplerResult:
        devices = [dict(d) for d in raw["devices"]]
        unavailable = {d["identifier"]: list(u) for d, u in zip(devices, raw["unavailable"])}
        energy = raw["energy"]
        return cls(
            timestamps_ns=raw["timestamps_ns"],
            device=raw["device"],
            fields=dict(raw["fields"]),
            energy_timestamps_ns=energy["timestamps_ns"],
            energy_device=energy["device"],
            energy_mj=energy["energy_mj"],
            devices=devices,
            unavailable=unavailable,
            dropped=int(raw["dropped"]),
            energy_dropped=int(raw["energy_dropped"]),
            missed_slots=int(raw["missed_slots"]),
            read_errors=int(raw["read_errors"]),
            reason=raw["reason"],
            backend=raw["backend"],
            library=raw["library"],
            interval_ms=interval_ms,
            start_ns=int(raw["start_ns"]),
            stop_ns=int(raw["stop_ns"]),
            thread_cpu_ns=int(raw["thread_cpu_ns"]),
            energy_thread_cpu_ns=int(raw["energy_thread_cpu_ns"]),
        )


# Samplers still running at interpreter exit are stopped (threads joined, libraries shut down).
_running: weakref.WeakSet[Sampler] = weakref.WeakSet()
_running_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        samplers = list(_running)
    for s in samplers:
        try:
            s.stop()
        except Exception:
            pass


def _normalise_uuid(text: str) -> str:
    text = text.strip()
    if text.startswith(("GPU-", "MIG-")):
        return text
    return "GPU-" + text


def cuda_visible_to_nvml(ordinals: Iterable[int] | int, env: dict[str, str] | None = None) -> list[str]:
    """NVML identifiers for CUDA ordinals as torch numbers them, honouring CUDA_VISIBLE_DEVICES.

    - CUDA_VISIBLE_DEVICES set: its n-th entry is the device of ordinal n. Integers are NVML
      indices only under CUDA_DEVICE_ORDER=PCI_BUS_ID (else they are resolved through torch, as
      below); ``GPU-xxxx`` UUIDs (prefixes are expanded through torch when it can) and ``MIG-``
      identifiers are used as they are.
    - Not set: the ordinal is the NVML index when CUDA_DEVICE_ORDER=PCI_BUS_ID; otherwise (CUDA's
      default order is fastest-first, which need not be NVML's PCI order) the device is named
      by the UUID torch reports, else by its PCI bus id.
    """
    env = dict(os.environ if env is None else env)
    if isinstance(ordinals, int):
        ordinals = [ordinals]
    ordinals = [int(o) for o in ordinals]
    pci_order = env.get("CUDA_DEVICE_ORDER", "").strip().upper() == "PCI_BUS_ID"
    visible = env.get("CUDA_VISIBLE_DEVICES")
    entries: list[str] | None = None
    if visible is not None:
        entries = []
        for item in visible.split(","):
            item = item.strip()
            if not item:
                break
            if item.lstrip("-").isdigit() and int(item) < 0:
                break  # CUDA stops at the first invalid entry
            entries.append(item)

    out: list[str] = []
    for o in ordinals:
        if o < 0:
            raise ValueError(f"CUDA ordinal must be >= 0, got {o}")
        if entries is not None:
            if o >= len(entries):
                raise ValueError(f"CUDA ordinal {o} is not visible: CUDA_VISIBLE_DEVICES={visible!r}")
            item = entries[o]
            if item.isdigit():
                if pci_order:
                    out.append(item)
                    continue
                ident = _from_torch(o)
                out.append(ident if ident is not None else item)
                continue
            if item.startswith("MIG-"):
                out.append(item)
                continue
            uuid = _normalise_uuid(item)
            if len(uuid) < len("GPU-") + 36:  # a prefix: ask torch for the full UUID
                full = _from_torch(o)
                if full is not None and full.startswith(uuid):
                    uuid = full
            out.append(uuid)
            continue
        if pci_order:
            out.append(str(o))
            continue
        ident = _from_torch(o)
        if ident is None:
            raise ValueError(
                f"cannot map CUDA ordinal {o} to an NVML device: CUDA_DEVICE_ORDER is not PCI_BUS_ID and "
                "torch (with CUDA) is not available to report the device's UUID or PCI bus id; pass NVML "
                "identifiers (UUIDs) to the sampler instead")
        out.append(ident)
    return out


def _from_torch(ordinal: int) -> str | None:
    """The device's UUID ('GPU-...'), else its PCI bus id, as torch reports them."""
    torch = _torch.loaded()
    if torch is None:
        try:
            import torch  # noqa: F811
        except ImportError:
            return None
    try:
        if not torch.cuda.is_available() or ordinal >= torch.cuda.device_count():
            return None
        props = torch.cuda.get_device_properties(ordinal)
    except Exception:
        return None
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        text = str(uuid)
        if text and text.strip("0-"):
            return _normalise_uuid(text)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        return f"{int(getattr(props, 'pci_domain_id', 0)):08X}:{int(bus):02X}:{int(getattr(props, 'pci_device_id', 0)):02X}.0"
    return None


def _device_ids(devices: Any, backend: str) -> list[str]:
    if devices is None:
        devices = [0]
    if isinstance(devices, (int, str)):
        devices = [devices]
    out: list[str] = []
    ints = [d for d in devices if isinstance(d, int)]
    if ints and backend in ("nvml", "auto") and _cuda_ordinals_meaningful():
        mapped = iter(cuda_visible_to_nvml(ints))
        for d in devices:
            out.append(next(mapped) if isinstance(d, int) else str(d))
        return out
    return [str(d) for d in devices]


def _cuda_ordinals_meaningful() -> bool:
    """Integers are CUDA ordinals (mapped through CUDA_VISIBLE_DEVICES) when CUDA is in play."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return True
    torch = _torch.loaded()
    return torch is not None and _torch.cuda_ready(torch) and _torch.backend_kind(torch) == "cuda"


class Sampler:
    """Samples GPU counters on a native thread.

    Parameters
    ----------
    interval_ms:
        Sampling interval, 1 to 1000 ms (default 10).
    devices:
        What to watch. Integers are CUDA ordinals as torch numbers them (mapped to NVML through
        :func:`cuda_visible_to_nvml`; with no CUDA in play and no CUDA_VISIBLE_DEVICES they are
        NVML indices); strings are NVML identifiers (``GPU-``/``MIG-`` UUIDs, PCI bus ids, indices).
        Default: ``[0]``. For AMD SMI and xpu-smi, indices of those tools.
    max_samples:
        Rows kept (all devices together). When full the oldest rows are dropped and counted in
        :attr:`SamplerResult.dropped`. Memory is allocated up front: about 100 bytes a row.
    backend:
        ``"auto"`` (NVML, then AMD SMI, then xpu-smi), ``"nvml"``, ``"amdsmi"`` or ``"xpusmi"``.
    field_periods_ms:
        Least time between two reads of a field, by name (others keep their defaults). By default
        the fast fields (power, SM clock, throttle reasons) are read every sample, utilisation
        (which the driver averages over a window of many milliseconds) and memory every 10 ms,
        and the slow or costly ones (process memory, averaged power, memory
        clock, temperature) every 100 ms; rows in between hold NaN for them. On an H100 each NVML
        query costs 2-11 us of CPU, so reading everything every millisecond would cost 4% of a core.
        The GPM fields (:data:`GPM_FIELDS`) are read together, every 100 ms by default, whenever
        any of them is due; their window is the time since the previous GPM read.
    energy_interval_ms:
        Cadence of the cumulative energy counter (default 1000 ms), read on its own thread
        once at start, on this cadence and once at stop. Per-iteration energy comes from
        integrating the power samples; the counter gives the total.
    """

    def __init__(self, interval_ms: float = 10, devices: Sequence[int | str] | int | str | None = None,
                 max_samples: int = 1 << 18, backend: str = "auto", energy_interval_ms: float = 1000,
                 field_periods_ms: dict[str, float] | None = None) -> None:
        if not 1 <= float(interval_ms) <= 1000:
            raise ValueError(f"interval_ms must be between 1 and 1000, got {interval_ms}")
        if backend not in ("auto", "nvml", "amdsmi", "xpusmi"):
            raise ValueError(f"unknown backend {backend!r}: use 'auto', 'nvml', 'amdsmi' or 'xpusmi'")
        if int(max_samples) < 1:
            raise ValueError("max_samples must be >= 1")
        self.interval_ms = float(interval_ms)
        self.backend = backend
        self.max_samples = int(max_samples)
        self.energy_interval_ms = float(energy_interval_ms)
        self._requested = devices
        self.devices: list[str] = _device_ids(devices, backend)
        periods = None
        if field_periods_ms:
            unknown = set(field_periods_ms) - set(FIELDS)
            if unknown:
                raise ValueError(f"unknown sampler field(s) {sorted(unknown)}; fields: {', '.join(FIELDS)}")
            defaults = dict(zip(FIELDS, _core.Sampler(backend, ["0"]).field_periods_ns))
            periods = [int(round(field_periods_ms[f] * 1e6)) if f in field_periods_ms else defaults[f] for f in FIELDS]
        self._native = _core.Sampler(backend, self.devices, int(round(self.interval_ms * 1e6)), self.max_samples,
                                     int(round(self.energy_interval_ms * 1e6)), periods)
        self.field_periods_ms = {f: p / 1e6 for f, p in zip(FIELDS, self._native.field_periods_ns)}
        self.result: SamplerResult | None = None

    @property
    def running(self) -> bool:
        return bool(self._native.running)

    @property
    def sample_count(self) -> int:
        """Rows held so far (approximate while running)."""
        return int(self._native.sample_count)

    def start(self) -> Sampler:
        """Start sampling. Returns once the library is open (a failure shows in stop()'s reason)."""
        self.result = None
        self._native.start()
        with _running_lock:
            _running.add(self)
        return self

    def stop(self) -> SamplerResult:
        """Stop, join the threads and return the :class:`SamplerResult` (also kept as ``result``)."""
        with _running_lock:
            _running.discard(self)
        if not self._native.running:
            if self.result is not None:
                return self.result
        raw = self._native.stop()
        self.result = SamplerResult._from_native(raw, self.interval_ms)
        return self.result

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._native.running:
            self.stop()

    def __del__(self) -> None:
        try:
            if self._native.running:
                self._native.stop()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Sampler(interval_ms={self.interval_ms:g}, devices={self.devices}, backend={self.backend!r}, {state})"
