"""The machine's host path, measured beside each iteration: a short calibration of the launch path
and the interpreter, the CPU time the hypervisor took from the VM (steal), and the CPU's clock.

The same decode can run at 11 ms per token in one iteration and 20 ms in the next on a shared VM
while the GPU's work stays the same: the host got slower. These readings are independent of the
code under test, so they tell such spells apart from a real change:

- :func:`calibrate`: kernel launches through the CUDA driver (a zero-length spin kernel, timed
  one by one), launch plus device synchronisation round trips, a small torch operation on the
  device (dispatch plus launch) where torch uses CUDA, and a fixed pure-Python loop. Medians,
  in seconds. About 5 ms in all; it runs outside the timed region.
- :class:`HostPathWatch`: ``begin()`` / ``end()`` around an iteration read ``/proc/stat``'s steal
  time over the CPUs this process may run on, and the current CPU's clock
  (``/sys/devices/system/cpu/cpuN/cpufreq/scaling_cur_freq``, else ``/proc/cpuinfo``). Two reads
  of small files per iteration, none per token. Steal time counts in the kernel's ticks
  (``USER_HZ``, usually 10 ms) and per CPU, so it is located per iteration, not per token.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

_PY_LOOP = 20000


def _python_loop() -> int:
    """A fixed pure-Python loop (the interpreter's speed; no allocation beyond small ints)."""
    t0 = time.perf_counter_ns()
    acc = 0
    for i in range(_PY_LOOP):
        acc += i & 7
    return time.perf_counter_ns() - t0


def calibrate(*, device_ordinal: int | None = None, launches: int = 200, roundtrips: int = 50,
              python_repeats: int = 5, torch_ops: int = 100) -> dict[str, Any]:
    """One calibration of the host path (see the module docstring). ``device_ordinal``: the CUDA
    device to launch on (None: no GPU part). Parts that cannot run say why in ``reasons``."""
    out: dict[str, Any] = {"t_ns": time.monotonic_ns()}
    reasons: dict[str, str] = {}
    py = [_python_loop() for _ in range(max(python_repeats, 1))]
    out["python_loop_s"] = float(np.median(py)) / 1e9
    if device_ordinal is not None:
        try:
            spin = _spin_kernel(int(device_ordinal))
            out["launch_s"] = float(np.median(spin.time_launches(int(launches)))) / 1e9
            out["roundtrip_s"] = float(np.median(spin.time_roundtrips(int(roundtrips)))) / 1e9
        except Exception as exc:  # noqa: BLE001 - a calibration never fails the measurement
            reasons["launch"] = f"{type(exc).__name__}: {exc}"
        op = _torch_op_cost(int(device_ordinal), torch_ops)
        if isinstance(op, str):
            reasons["torch_op"] = op
        else:
            out["torch_op_s"] = op
    else:
        reasons["launch"] = "no CUDA device in use"
    if reasons:
        out["reasons"] = reasons
    return out


_SPIN: dict[int, Any] = {}


def _spin_kernel(ordinal: int) -> Any:
    """The spin kernel module, loaded once per device (its JIT compilation costs milliseconds)."""
    if ordinal not in _SPIN:
        from fastprof._native import _core

        _SPIN[ordinal] = _core.SpinKernel("cuda", ordinal)
    return _SPIN[ordinal]


def _torch_op_cost(ordinal: int, n: int) -> float | str:
    """Median seconds of one in-place add on a one-element CUDA tensor (dispatch plus launch),
    or the reason it was not measured. Only where torch already uses CUDA: never initialises it."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return "torch has not initialised CUDA in this process"
    try:
        x = torch.zeros(1, device=f"cuda:{ordinal}")
        times = np.empty(n, dtype=np.int64)
        for i in range(n):
            t0 = time.perf_counter_ns()
            x.add_(1)
            times[i] = time.perf_counter_ns() - t0
        torch.cuda.synchronize(ordinal)
        return float(np.median(times)) / 1e9
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def _user_hz() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


def read_steal_ticks(cpus: set[int] | None, path: str = "/proc/stat") -> int | None:
    """Steal ticks summed over ``cpus`` (all CPUs when None) from ``/proc/stat``'s per-CPU lines
    (the 8th value); None when the file or the field is missing."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    total, seen = 0, False
    for line in lines:
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        head, *vals = line.split()
        try:
            cpu = int(head[3:])
        except ValueError:
            continue
        if cpus is not None and cpu not in cpus:
            continue
        if len(vals) < 8:
            return None
        total += int(vals[7])
        seen = True
    return total if seen else None


def current_cpu(path: str = "/proc/thread-self/stat") -> int | None:
    """The CPU the calling thread last ran on (field 39 of its stat file)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
        return int(text.rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def cpu_mhz(cpu: int | None, sys_root: str = "/sys/devices/system/cpu", cpuinfo: str = "/proc/cpuinfo") -> float | None:
    """The clock of ``cpu`` in MHz: cpufreq's current frequency, else /proc/cpuinfo's "cpu MHz"
    for that processor; None where the kernel exposes neither (many VMs)."""
    if cpu is None:
        return None
    try:
        with open(f"{sys_root}/cpu{cpu}/cpufreq/scaling_cur_freq", encoding="ascii") as f:
            return int(f.read().strip()) / 1000.0
    except (OSError, ValueError):
        pass
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            proc = None
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "processor":
                    proc = int(val)
                elif key == "cpu MHz" and proc == cpu:
                    return float(val)
    except (OSError, ValueError):
        pass
    return None


class HostPathWatch:
    """Steal time and the CPU clock per iteration (see the module docstring). ``begin()`` and
    ``end()`` bracket one iteration, outside its timed region; :meth:`rows` gives one dict per
    iteration: ``steal_s`` (summed over the allowed CPUs), ``steal_share`` (of the wall time
    times the number of allowed CPUs), ``cpu`` and ``cpu_mhz`` at the end."""

    def __init__(self) -> None:
        try:
            self.cpus: set[int] | None = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = None
        self._hz = _user_hz()
        self._begin: tuple[int, int | None] | None = None
        self._rows: list[dict[str, Any]] = []
        self.reason: str | None = None
        if read_steal_ticks(self.cpus) is None:
            self.reason = "/proc/stat has no per-CPU steal time here"

    def begin(self) -> None:
        self._begin = (time.monotonic_ns(), read_steal_ticks(self.cpus) if self.reason is None else None)

    def end(self) -> dict[str, Any]:
        t1 = time.monotonic_ns()
        steal1 = read_steal_ticks(self.cpus) if self.reason is None else None
        t0, steal0 = self._begin if self._begin is not None else (t1, None)
        cpu = current_cpu()
        row: dict[str, Any] = {"start_ns": t0, "end_ns": t1, "cpu": cpu, "cpu_mhz": cpu_mhz(cpu)}
        if steal0 is not None and steal1 is not None:
            steal_s = (steal1 - steal0) / self._hz
            n = len(self.cpus) if self.cpus else (os.cpu_count() or 1)
            row["steal_s"] = steal_s
            row["steal_share"] = steal_s / max((t1 - t0) / 1e9 * n, 1e-9)
        self._rows.append(row)
        self._begin = None
        return row

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)
