"""``fastprof selftest``: how precise fastprof's timing is on this machine, in under a minute.

Host part (always):

- the host clock (CLOCK_MONOTONIC): its resolution, the cost of one read in native code and
  from Python (:func:`fastprof.monotonic_ns`), and the smallest step seen between two reads;
- the cost of one ``TokenRecorder.mark()`` with the host clock alone.

GPU part (CUDA; skipped, with the reason, when there is no usable GPU):

- the cost of one ``mark()`` that also records a timing event;
- the event resolution: the quantum of event timestamps, read from the differences between events
  recorded back to back (the GPU spaces those by its own processing time);
- the GPU sampler at 1 ms: achieved rate, interval jitter and its thread's CPU share;
- device timing against a calibrated spin: a kernel that spins on the GPU's nanosecond timer
  (``%globaltimer``) for 20 us, 200 us, 1 ms and 10 ms, timed by the recorder's events (mark,
  spin, mark). The launch gap of an empty spin, measured alongside, is subtracted; the result
  must agree with the requested length within 1% or 2 us, whichever is larger.

Every line is ``pass``, ``warn`` or ``skipped``. The table goes to stdout and every figure to a
JSON file (``--output``). The exit code is 0 unless ``--strict`` is given and a line warns, or
an explicitly requested device cannot be used.

The spin kernel is PTX text JIT-compiled by the driver (see ``fastprof._core.SpinKernel``), so
no CUDA toolkit is needed. This module never imports torch.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from fastprof._native import _core
from fastprof.errors import FastprofError

SCHEMA_VERSION = 1
PASS, WARN, SKIPPED = "pass", "warn", "skipped"

#: Spin lengths checked against the device clock, ns.
SPIN_DURATIONS_NS = (20_000, 200_000, 1_000_000, 10_000_000)
#: Agreement asked of a spin: this fraction of its length, or SPIN_ABS_TOL_NS if larger.
SPIN_REL_TOL = 0.01
SPIN_ABS_TOL_NS = 2_000
#: Spin queued before each measured pair so the GPU is always behind the host: every event is
#: then timestamped when the GPU reaches it, not when the host submits it.
SPIN_PAD_NS = 200_000

# Thresholds of the host and event lines (pass at or below).
CLOCK_RESOLUTION_MAX_NS = 100
CLOCK_READ_NATIVE_MAX_NS = 100
CLOCK_READ_PYTHON_MAX_NS = 500
CLOCK_STEP_MAX_NS = 100
MARK_HOST_MAX_NS = 1_000
MARK_EVENT_MAX_NS = 5_000
EVENT_RESOLUTION_MAX_NS = 1_000
LAUNCH_GAP_MAX_NS = 20_000
SAMPLER_RATE_MIN_FRACTION = 0.95
SAMPLER_JITTER_P99_MAX_NS = 250_000
SAMPLER_CPU_MAX_FRACTION = 0.05


@dataclass
class Check:
    """One line of the self-test."""

    name: str
    group: str
    status: str
    value: float | None = None
    unit: str = "ns"
    target: str = ""
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


# ---- formatting -----------------------------------------------------------------------------

def fmt_ns(ns: float | None) -> str:
    if ns is None or (isinstance(ns, float) and not np.isfinite(ns)):
        return "-"
    a = abs(ns)
    if a < 1e3:
        return f"{ns:.1f} ns"
    if a < 1e6:
        return f"{ns / 1e3:.3f} us"
    if a < 1e9:
        return f"{ns / 1e6:.3f} ms"
    return f"{ns / 1e9:.3f} s"


def _first_line(text: Any) -> str:
    """The first line of an error message, without the list of paths a loader tried."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    line = line.split(" Tried:")[0].rstrip(".; ")
    return line if len(line) <= 200 else line[:197] + "..."


# ---- host part ------------------------------------------------------------------------------

def _per_call_ns(fn: Callable[[], Any], n: int, repeats: int) -> tuple[float, list[float]]:
    """Median over `repeats` of the mean time of one call in a loop of `n` (loop cost included)."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(n):
            fn()
        samples.append((clock() - t0) / n)
    return statistics.median(samples), samples


def _clocksource() -> str | None:
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource", encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def host_checks() -> list[Check]:
    checks: list[Check] = []
    native = _core.measure_clock(1_000_000)
    source = _clocksource()
    src = f"clocksource {source}" if source else "clocksource unknown"

    res = int(native["resolution_ns"])
    checks.append(Check("host clock resolution (clock_getres)", "host",
                        PASS if res <= CLOCK_RESOLUTION_MAX_NS else WARN, res, "ns",
                        f"<= {CLOCK_RESOLUTION_MAX_NS} ns", "CLOCK_MONOTONIC", {"resolution_ns": res}))
    cost = float(native["read_cost_ns"])
    slow = "" if cost <= CLOCK_READ_NATIVE_MAX_NS else "; a slow clocksource (tsc is the fast one) makes every timestamp dear"
    checks.append(Check("host clock read, native", "host", PASS if cost <= CLOCK_READ_NATIVE_MAX_NS else WARN,
                        cost, "ns", f"<= {CLOCK_READ_NATIVE_MAX_NS} ns", src + slow,
                        {**native, "clocksource": source}))
    step = int(native["min_step_ns"])
    checks.append(Check("host clock step (smallest non-zero)", "host",
                        PASS if 0 < step <= CLOCK_STEP_MAX_NS else WARN, step if step > 0 else None, "ns",
                        f"<= {CLOCK_STEP_MAX_NS} ns",
                        f"{native['zero_steps']} of {native['reads']} back-to-back reads unchanged",
                        {"min_step_ns": step, "zero_steps": int(native["zero_steps"]), "reads": int(native["reads"])}))

    py_cost, py_samples = _per_call_ns(_core.monotonic_ns, 200_000, 5)
    checks.append(Check("host clock read, Python (fastprof.monotonic_ns)", "host",
                        PASS if py_cost <= CLOCK_READ_PYTHON_MAX_NS else WARN, py_cost, "ns",
                        f"<= {CLOCK_READ_PYTHON_MAX_NS} ns", "loop cost included",
                        {"per_call_ns": py_samples}))

    from fastprof.capture.recorder import TokenRecorder

    n = 100_000
    rec = TokenRecorder(capacity=n, device=None)
    samples = []
    for _ in range(5):
        rec.begin()
        try:
            samples.append(_per_call_ns(rec.mark, n, 1)[0])
        finally:
            rec.end()
    mark = statistics.median(samples)
    checks.append(Check("mark(), host clock only", "host", PASS if mark <= MARK_HOST_MAX_NS else WARN, mark, "ns",
                        f"<= {MARK_HOST_MAX_NS} ns", "TokenRecorder(device=None); loop cost included",
                        {"per_call_ns": samples}))
    return checks


# ---- device part ----------------------------------------------------------------------------

@dataclass
class _Device:
    kind: str | None
    ordinal: int = 0
    info: dict[str, Any] | None = None
    reason: str | None = None
    explicit: bool = False
    short: str = "no GPU"  # the reason in a few words, for the table
    error: str | None = None  # the full error message of the driver or loader


def resolve_device(text: str) -> _Device:
    text = (text or "auto").strip()
    if text == "cpu":
        return _Device(None, reason="host only (--device cpu)", short="--device cpu")
    explicit = text != "auto"
    kind, ordinal = "cuda", 0
    if explicit:
        kind, _, index = text.partition(":")
        if kind not in ("cuda", "hip", "rocm"):
            raise ValueError(f"unsupported device {text!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        kind = "hip" if kind == "rocm" else kind
        if index:
            if not index.isdigit():
                raise ValueError(f"bad device ordinal in {text!r}")
            ordinal = int(index)
    try:
        info = dict(_core.device_info(kind, ordinal))
    except FastprofError as exc:
        what = "no usable GPU" if not explicit else f"device {text} unusable"
        return _Device(None, ordinal, reason=f"{what}: {_first_line(exc)}", explicit=explicit, short=what,
                       error=str(exc))
    return _Device(kind, ordinal, info=info, explicit=explicit)


def _skipped(names: list[tuple[str, str]], reason: str) -> list[Check]:
    return [Check(name, group, SKIPPED, None, "", "", reason) for name, group in names]


GPU_LINES = [("mark() with a timing event", "device"), ("event resolution (back-to-back events)", "device"),
             ("sampler at 1 ms", "sampler"), ("spin launch gap (empty spin)", "spin")] + \
            [(f"spin {fmt_ns(d)}", "spin") for d in SPIN_DURATIONS_NS]


def _mark_event_check(dev: _Device) -> Check:
    from fastprof.capture.recorder import TokenRecorder

    n = 2_000
    rec = TokenRecorder(capacity=n, device=f"{dev.kind}:{dev.ordinal}", stream=0)
    samples = []
    for _ in range(7):
        rec.begin()
        try:
            samples.append(_per_call_ns(rec.mark, n, 1)[0])
        finally:
            rec.end()
    cost = statistics.median(samples[1:])  # the first batch warms the driver's paths
    return Check("mark() with a timing event", "device", PASS if cost <= MARK_EVENT_MAX_NS else WARN, cost, "ns",
                 f"<= {MARK_EVENT_MAX_NS} ns", "host timestamp + event record; loop cost included",
                 {"per_call_ns": samples})


def _event_resolution_check(dev: _Device, spin: Any) -> Check:
    from fastprof.capture.recorder import TokenRecorder

    n = 2_000
    rec = TokenRecorder(capacity=n, device=f"{dev.kind}:{dev.ordinal}", stream=0)
    mark = rec.mark_device
    rec.begin()
    try:
        if spin is not None:
            # Longer than submitting every event takes (~1.5 us each), so the events queue up
            # behind the spin and the GPU timestamps them back to back; with a shorter pad the
            # differences would only show the host's submission rate.
            spin.launch(max(SPIN_PAD_NS, n * 5_000), 0)
        for _ in range(n):
            mark()
    finally:
        trace = rec.end()
    d = np.diff(np.asarray(trace.device_marks_ns, dtype=np.int64))
    nonzero = d[d > 0]
    # Queued back to back, the GPU spaces event records by its own processing time (about
    # 1.2 us on an H100), so the differences show the timestamps' quantum rather than their
    # resolution directly: the smallest step between distinct differences (steps of 2 ns or less
    # are the float32 rounding of cuEventElapsedTime) is the resolution.
    distinct = np.unique(nonzero)
    steps = np.diff(distinct)
    steps = steps[steps > 2]
    quantum = int(steps.min()) if steps.size else (int(distinct[0]) if distinct.size else None)
    data = {"events": n, "zero_diffs": int((d == 0).sum()), "negative_diffs": int((d < 0).sum()),
            "min_nonzero_diff_ns": int(nonzero.min()) if nonzero.size else None,
            "median_diff_ns": float(np.median(d)) if d.size else None,
            "distinct_nonzero_diffs_ns": [int(x) for x in distinct[:16]]}
    if quantum is None:
        return Check("event resolution (back-to-back events)", "device", WARN, None, "ns",
                     f"<= {EVENT_RESOLUTION_MAX_NS} ns", f"all {n} events carried the same time", data)
    ok = quantum <= EVENT_RESOLUTION_MAX_NS and data["negative_diffs"] == 0
    detail = (f"back-to-back spacing {fmt_ns(data['min_nonzero_diff_ns'])} min; "
              f"{data['zero_diffs']} of {d.size} differences zero")
    if data["negative_diffs"]:
        detail += f"; {data['negative_diffs']} went backwards"
    return Check("event resolution (back-to-back events)", "device", PASS if ok else WARN, quantum, "ns",
                 f"<= {EVENT_RESOLUTION_MAX_NS} ns", detail, data)


def _sampler_check(dev: _Device, seconds: float) -> Check:
    name = "sampler at 1 ms"
    target = f">= {SAMPLER_RATE_MIN_FRACTION * 1000:.0f} Hz, p99 jitter <= {fmt_ns(SAMPLER_JITTER_P99_MAX_NS)}"
    try:
        from fastprof.capture.sampler import Sampler

        sampler = Sampler(interval_ms=1, devices=[dev.ordinal], backend="nvml" if dev.kind == "cuda" else "auto",
                          max_samples=1 << 16)
        sampler.start()
        time.sleep(max(0.1, seconds))
        r = sampler.stop()
    except (FastprofError, ValueError, OSError) as exc:
        return Check(name, "sampler", SKIPPED, None, "Hz", target, f"sampler unavailable: {_first_line(exc)}")
    n = r.n_samples
    if n < 2:
        why = r.reason or "fewer than two samples"
        return Check(name, "sampler", SKIPPED if n == 0 else WARN, None, "Hz", target,
                     f"sampler unavailable: {_first_line(why)}", {"reason": r.reason, "samples": n})
    wall_ns = max(1, r.stop_ns - r.start_ns)
    rate = n / (wall_ns / 1e9)
    gaps = np.diff(r.timestamps_ns).astype(np.float64)
    jitter = np.abs(gaps - 1e6)
    p50, p99 = (float(v) for v in np.percentile(jitter, [50, 99]))
    cpu = r.thread_cpu_ns / wall_ns
    ok = (rate >= SAMPLER_RATE_MIN_FRACTION * 1000 and p99 <= SAMPLER_JITTER_P99_MAX_NS
          and cpu <= SAMPLER_CPU_MAX_FRACTION and r.reason is None)
    detail = (f"jitter p50 {fmt_ns(p50)} p99 {fmt_ns(p99)}, thread CPU {cpu:.2%}, "
              f"missed slots {r.missed_slots}")
    if r.reason:
        detail += f"; stopped: {_first_line(r.reason)}"
    data = {"samples": n, "wall_ns": wall_ns, "rate_hz": rate, "jitter_p50_ns": p50, "jitter_p99_ns": p99,
            "jitter_max_ns": float(jitter.max()), "thread_cpu_ns": r.thread_cpu_ns, "thread_cpu_fraction": cpu,
            "missed_slots": r.missed_slots, "read_errors": r.read_errors, "backend": r.backend,
            "library": r.library, "reason": r.reason}
    return Check(name, "sampler", PASS if ok else WARN, rate, "Hz", target, detail, data)


def measure_spins(spin: Any, dev: _Device, durations_ns=SPIN_DURATIONS_NS, reps: int = 20) -> dict[int, dict]:
    """Times the spin kernel with the recorder's events: per repetition, an empty spin and a spin
    of each duration, each between two marks, behind a padding spin. Returns, per duration, the
    raw per-repetition times (ns) and those of the empty spin measured alongside."""
    from fastprof.capture.recorder import TokenRecorder

    out: dict[int, dict] = {}
    for duration in durations_ns:
        n = reps if duration < 5_000_000 else max(3, reps // 4)
        rec = TokenRecorder(capacity=4 * n, device=f"{dev.kind}:{dev.ordinal}", stream=0)
        mark, launch = rec.mark_device, spin.launch
        rec.begin()
        try:
            launch(1_000_000, 0)  # a head start: the host queues ahead of the GPU from here on
            for _ in range(n):
                launch(SPIN_PAD_NS, 0)
                mark()
                launch(0, 0)
                mark()
                launch(SPIN_PAD_NS, 0)
                mark()
                launch(int(duration), 0)
                mark()
        finally:
            trace = rec.end()
        m = np.asarray(trace.device_marks_ns, dtype=np.int64).reshape(n, 4)
        out[int(duration)] = {"empty_ns": (m[:, 1] - m[:, 0]).tolist(), "spin_ns": (m[:, 3] - m[:, 2]).tolist()}
    return out


def _spin_checks(dev: _Device, spin: Any) -> list[Check]:
    measured = measure_spins(spin, dev)
    checks: list[Check] = []
    empties = [x for v in measured.values() for x in v["empty_ns"]]
    gap = float(np.median(empties))
    checks.append(Check("spin launch gap (empty spin)", "spin", PASS if gap <= LAUNCH_GAP_MAX_NS else WARN, gap, "ns",
                        f"<= {fmt_ns(LAUNCH_GAP_MAX_NS)}",
                        "event - launch - event on a busy stream; subtracted from the spins below",
                        {"empty_ns": empties, "p10_ns": float(np.percentile(empties, 10)),
                         "p90_ns": float(np.percentile(empties, 90))}))
    for duration, v in measured.items():
        raw = float(np.median(v["spin_ns"]))
        base = float(np.median(v["empty_ns"]))
        corrected = raw - base
        err = corrected - duration
        tol = max(SPIN_REL_TOL * duration, SPIN_ABS_TOL_NS)
        checks.append(Check(
            f"spin {fmt_ns(duration)}", "spin", PASS if abs(err) <= tol else WARN, corrected, "ns",
            f"{fmt_ns(duration)} +/- {fmt_ns(tol)}",
            f"error {err / 1e3:+.3f} us ({err / duration:+.3%}); raw {fmt_ns(raw)} - gap {fmt_ns(base)}",
            {"requested_ns": duration, "measured_ns": corrected, "raw_median_ns": raw, "gap_median_ns": base,
             "error_ns": err, "error_fraction": err / duration, "tolerance_ns": tol,
             "raw_ns": v["spin_ns"], "empty_ns": v["empty_ns"]}))
    return checks


def device_checks(dev: _Device, sampler_seconds: float) -> list[Check]:
    if dev.kind is None:
        return _skipped(GPU_LINES, dev.short)
    checks = [_guard(lambda: _mark_event_check(dev), "mark() with a timing event", "device")]
    spin = None
    spin_reason = None
    if dev.kind != "cuda":
        spin_reason = "the spin kernel is PTX: CUDA only"
    else:
        try:
            spin = _core.SpinKernel("cuda", dev.ordinal)
        except (FastprofError, ValueError) as exc:
            spin_reason = f"spin kernel unavailable: {_first_line(exc)}"
    try:
        checks.append(_guard(lambda: _event_resolution_check(dev, spin), "event resolution (back-to-back events)",
                             "device"))
        checks.append(_guard(lambda: _sampler_check(dev, sampler_seconds), "sampler at 1 ms", "sampler"))
        if spin is None:
            checks += _skipped([x for x in GPU_LINES if x[1] == "spin"], spin_reason or "no spin kernel")
        else:
            try:
                checks += _spin_checks(dev, spin)
            except FastprofError as exc:
                checks += [Check(name, group, WARN, None, "", "", f"failed: {_first_line(exc)}")
                           for name, group in GPU_LINES if group == "spin"]
    finally:
        if spin is not None:
            try:
                spin.close()
            except FastprofError:
                pass
    return checks


def _guard(fn: Callable[[], Check], name: str, group: str) -> Check:
    try:
        return fn()
    except FastprofError as exc:
        return Check(name, group, WARN, None, "", "", f"failed: {_first_line(exc)}")


# ---- output ---------------------------------------------------------------------------------

def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    return x


def build_report(checks: list[Check], dev: _Device, seconds: float) -> dict[str, Any]:
    from fastprof._version import __version__

    counts = {s: sum(c.status == s for c in checks) for s in (PASS, WARN, SKIPPED)}
    return _json_safe({
        "schema_version": SCHEMA_VERSION,
        "kind": "selftest",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "fastprof_version": __version__,
        "host": {"hostname": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
                 "python": platform.python_version(), "clocksource": _clocksource(), "cpus": os.cpu_count()},
        "device": ({"kind": dev.kind, "ordinal": dev.ordinal, **(dev.info or {})} if dev.kind else None),
        "device_reason": dev.reason,
        "device_error": dev.error,
        "spin_kernel": {"entry": _core.SpinKernel.entry, "rel_tolerance": SPIN_REL_TOL,
                        "abs_tolerance_ns": SPIN_ABS_TOL_NS, "pad_ns": SPIN_PAD_NS},
        "counts": counts,
        "seconds": seconds,
        "checks": [asdict(c) for c in checks],
    })
