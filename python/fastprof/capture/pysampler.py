"""Python frame samples of the measuring thread, taken from outside the process by py-spy, on
fastprof's clock: where the "Python and framework" part of a step goes, function by function.

py-spy (``pip install py-spy``, or ``fastprof[pyspy]``) reads the interpreter's memory from
another process without stopping it (``--nonblocking``), so the measured thread runs on while it
is sampled. :class:`PySpySampler` starts ``py-spy record --format chrometrace`` on this process,
and :meth:`stop` returns the measured thread's stack changes as (time, enter/leave, function,
file, line) events. py-spy stamps its events in microseconds from its own start; fastprof aligns
them to CLOCK_MONOTONIC with a marker: right after py-spy starts, the measured thread runs a
function of known name (:func:`_fastprof_clock_marker`) from a known instant, and the first sample
inside it fixes the offset (to within one sampling interval, 5 ms at the default 200 Hz).

Reading another process's memory needs ptrace permission. Where the kernel's Yama policy only
lets a process be traced by its ancestors (``/proc/sys/kernel/yama/ptrace_scope`` 1), the process
names py-spy as its tracer (``prctl(PR_SET_PTRACER)``) for the time of the sampling. Where py-spy
is missing or the platform forbids it (ptrace_scope 2 or 3, a container without CAP_SYS_PTRACE),
the sampler says why in one line and nothing else changes.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

#: Samples per second (py-spy's --rate).
DEFAULT_RATE = 200
_PR_SET_PTRACER = 0x59616D61
_MARKER_S = 0.03


def find_pyspy() -> str | None:
    """``FASTPROF_PYSPY``, else ``py-spy`` next to this interpreter, else on PATH."""
    env = os.environ.get("FASTPROF_PYSPY")
    if env:
        return env if os.path.exists(env) else None
    import sys

    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.path.exists(here) else shutil.which("py-spy")


def _set_ptracer(pid: int) -> None:
    """Let ``pid`` (0: nobody again) trace this process under Yama's ptrace_scope 1."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _fastprof_clock_marker(seconds: float) -> None:
    """Busy for ``seconds`` under a name py-spy's samples can be matched to."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@dataclass
class PythonSamples:
    """The measured thread's stack changes on CLOCK_MONOTONIC: ``events`` rows of (t_ns, +1 enter
    / -1 leave, function, file, line); ``available``/``reason``; the sampling ``rate`` and the
    clock alignment's uncertainty (``align_ns``, one sampling interval)."""

    events: list[tuple[int, int, str, str, int]] = field(default_factory=list)
    available: bool = False
    reason: str | None = None
    rate: int = DEFAULT_RATE
    align_ns: int = 0
    tool: str | None = None


class PySpySampler:
    """py-spy sampling this process's calling thread (see the module docstring)."""

    def __init__(self, rate: int = DEFAULT_RATE) -> None:
        self.rate = int(rate)
        self.path = find_pyspy()
        self.reason: str | None = None if self.path else (
            "py-spy is not installed (pip install py-spy): no Python frame samples")
        self._proc: subprocess.Popen | None = None
        self._out: str | None = None
        self._marker_ns = 0
        self._tid = threading.get_ident()

    @property
    def available(self) -> bool:
        return self.reason is None

    def start(self) -> bool:
        if self.path is None:
            return False
        fd, self._out = tempfile.mkstemp(prefix="fastprof-pyspy-", suffix=".json")
        os.close(fd)
        self._tid = threading.get_ident()
        cmd = [self.path, "record", "--pid", str(os.getpid()), "--rate", str(self.rate), "--nonblocking",
               "--format", "chrometrace", "--output", self._out]
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            self.reason = f"py-spy could not start: {exc}"
            return False
        _set_ptracer(self._proc.pid)
        time.sleep(0.2)  # py-spy attaches
        if self._proc.poll() is not None:
            self.reason = self._failure()
            return False
        self._marker_ns = time.monotonic_ns()
        _fastprof_clock_marker(_MARKER_S)
        return True

    def _failure(self) -> str:
        err = (self._proc.stderr.read() if self._proc and self._proc.stderr else "") or ""
        lines = [ln.strip() for ln in err.strip().splitlines() if ln.strip()]
        text = lines[-1] if lines else f"py-spy exited with code {self._proc.returncode if self._proc else '?'}"
        if "ermission" in text or "ptrace" in text.lower():
            text += " (the platform forbids reading this process: ptrace permission)"
        return f"py-spy failed: {text}"

    def stop(self) -> PythonSamples:
        out = PythonSamples(rate=self.rate, align_ns=int(1e9 / max(self.rate, 1)), tool="py-spy")
        if self._proc is None:
            out.reason = self.reason or "py-spy did not start"
            return out
        try:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGINT)
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        finally:
            _set_ptracer(0)
        try:
            with open(self._out or "", encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            out.reason = self.reason or self._failure()
            return out
        finally:
            if self._out:
                try:
                    os.unlink(self._out)
                except OSError:
                    pass
        rows = doc if isinstance(doc, list) else doc.get("traceEvents", [])
        mine = [e for e in rows if e.get("tid") == self._tid and e.get("ph") in ("B", "E")]
        marker = [e for e in mine if e.get("ph") == "B" and e.get("name") == "_fastprof_clock_marker"]
        if not marker:
            out.reason = "py-spy's samples missed the clock marker: cannot align them to the tokens"
            return out
        offset_ns = self._marker_ns - int(float(marker[0]["ts"]) * 1000)
        for e in mine:
            args = e.get("args") or {}
            out.events.append((int(float(e["ts"]) * 1000) + offset_ns, 1 if e["ph"] == "B" else -1,
                               str(e.get("name")), str(args.get("filename") or ""), int(args.get("line") or 0)))
        out.available = True
        return out


def self_time(samples: PythonSamples, windows: list[tuple[int, int]]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (function, file): ``self_ns`` (innermost frame) and ``total_ns`` (on the stack) inside
    ``windows`` ([lo, hi) on CLOCK_MONOTONIC), from the stack changes."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    stack: list[tuple[str, str]] = []
    prev_t = None

    def credit(t0: int, t1: int) -> None:
        if not stack or t1 <= t0:
            return
        inside = sum(max(0, min(t1, hi) - max(t0, lo)) for lo, hi in windows)
        if not inside:
            return
        seen = set()
        for i, key in enumerate(stack):
            row = out.setdefault(key, {"self_ns": 0.0, "total_ns": 0.0})
            if key not in seen:
                row["total_ns"] += inside
                seen.add(key)
            if i == len(stack) - 1:
                row["self_ns"] += inside

    for t, kind, name, filename, _line in samples.events:
        if prev_t is not None:
            credit(prev_t, t)
        prev_t = t
        key = (name, filename)
        if kind > 0:
            stack.append(key)
        elif key in stack:
            del stack[len(stack) - 1 - stack[::-1].index(key)]
    return out
