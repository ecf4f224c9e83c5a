"""GPU samples lined up with the token timeline.

The sampler and the recorder read the same clock (CLOCK_MONOTONIC ns), so a sample belongs to
iteration ``i`` when it falls between that iteration's host start and end, and to its prefill
phase when it comes before the first token reached the host, else to its decode phase.
Samples between iterations belong to none (phase ``"idle"``).

The GPU performance counters (NVML GPM: ``dram_bw_util_pct``, ``sm_active_pct``, ...) are averages
over the window since the device's previous GPM sample (100 ms by default), not instantaneous
readings. Their per-iteration means weight each window by the time it shares with the iteration
(``dram_bw_util_mean_pct``), or with the iteration's decode phase (``dram_bw_util_decode_mean_pct``),
so a window that straddles an iteration's start counts only for its part inside.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastprof.analysis import stats as _stats
from fastprof.capture.recorder import Trace
from fastprof.capture.sampler import GPM_FIELDS

#: Clock event reasons that mean the GPU ran slower than asked: software power cap (0x4),
#: hardware slowdown (0x8), software thermal (0x20 on older drivers is sync boost, not counted),
#: software thermal slowdown (0x40), hardware thermal slowdown (0x80), power brake (0x100).
THROTTLE_MASK = 0x4 | 0x8 | 0x40 | 0x80 | 0x100
THERMAL_MASK = 0x40 | 0x80

# GPU performance counter fields (NVML GPM); each has two per-iteration figures: the mean over the
# whole iteration and over its decode phase.


def gpm_metric_names(field: str) -> tuple[str, str]:
    """(iteration mean, decode-phase mean) per-iteration names of a GPM field:
    ``dram_bw_util_pct`` -> ``dram_bw_util_mean_pct``, ``dram_bw_util_decode_mean_pct``."""
    base = field[: -len("_pct")]
    return f"{base}_mean_pct", f"{base}_decode_mean_pct"


GPM_METRICS = tuple(name for f in GPM_FIELDS for name in gpm_metric_names(f))

HARDWARE_METRICS = ("gpu_util_mean_pct", "gpu_util_max_pct", "memory_peak_bytes", "power_mean_w", "energy_j",
                    "energy_per_token_j", "temperature_max_c", *GPM_METRICS)

PHASES = ("idle", "prefill", "decode")

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed trapz


def attribute(timestamps_ns: np.ndarray, traces: Sequence[Trace]) -> tuple[np.ndarray, np.ndarray]:
    """(iteration index or -1, phase code 0 idle / 1 prefill / 2 decode) for each sample."""
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    iteration = np.full(ts.shape, -1, dtype=np.int64)
    phase = np.zeros(ts.shape, dtype=np.int8)
    for i, t in enumerate(traces):
        inside = (ts >= t.host_start_ns) & (ts <= t.host_end_ns)
        iteration[inside] = i
        first = int(t.host_marks_ns[0]) if t.n_marks else t.host_end_ns
        phase[inside & (ts < first)] = 1
        phase[inside & (ts >= first)] = 2
    return iteration, phase


def _nan_stat(fn, values: np.ndarray) -> float | None:
    v = values[np.isfinite(values)]
    return float(fn(v)) if v.size else None


def _energy_between(start_ns: int, end_ns: int, ts: np.ndarray, power: np.ndarray, energy_ts: np.ndarray,
                    energy_mj: np.ndarray) -> tuple[float | None, str | None]:
    """Joules between two instants: the integral of the power samples inside the window (the
    sampler's interval resolves a single iteration), else, when fewer than two power samples fall
    inside, the cumulative energy counter interpolated linearly between its readings."""
    sel = (ts >= start_ns) & (ts <= end_ns) & np.isfinite(power)
    if np.count_nonzero(sel) >= 2:
        return float(_trapezoid(power[sel], ts[sel] * 1e-9)), "power_integral"
    if energy_ts.size >= 2 and energy_ts[0] <= start_ns and energy_ts[-1] >= end_ns:
        e0, e1 = np.interp([start_ns, end_ns], energy_ts, energy_mj)
        return float(e1 - e0) / 1000.0, "energy_counter"
    return None, None


def gpm_windows(timestamps_ns: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window starts, window ends, values) of one device's GPM series: each finite value covers the
    time since the previous finite value's row; the first covers as long as the median window
    (the row before it, the device's first GPM sample, holds no value)."""
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    end, v = ts[ok], v[ok]
    if end.size == 0:
        return end, end, v
    start = np.empty_like(end)
    start[1:] = end[:-1]
    if end.size > 1:
        start[0] = end[0] - int(np.median(np.diff(end)))
    else:  # a single window: its length is unknown, bounded by the device's first row
        earlier = ts[ts < end[0]]
        start[0] = earlier[0] if earlier.size else end[0]
    return start, end, v


def window_mean(start_ns: np.ndarray, end_ns: np.ndarray, values: np.ndarray, a: int, b: int) -> float | None:
    """Mean of window averages over [a, b], each weighted by its overlap with [a, b]; None when no
    window overlaps."""
    if values.size == 0 or b <= a:
        return None
    overlap = np.minimum(end_ns, b) - np.maximum(start_ns, a)
    w = np.clip(overlap, 0, None).astype(np.float64)
    total = w.sum()
    if total <= 0:
        return None
    return float(np.dot(w, values) / total)


def summarize(samples: Any, traces: Sequence[Trace], *, tokens_per_iteration: Sequence[int], seed: int = 0
              ) -> dict[str, Any]:
    """The ``hardware`` section of a result: the samples with their iteration and phase, per-iteration
    figures, their statistics, and warnings for throttling or thermal limits.

    With several devices, per-iteration figures add up energy and power and take the maximum of
    utilisation, memory and temperature over the devices.
    """
    ts = np.asarray(samples.timestamps_ns, dtype=np.int64)
    iteration, phase = attribute(ts, traces)
    fields = samples.fields
    nan = np.full(ts.shape, np.nan)
    util = np.asarray(fields.get("gpu_util_pct", nan), dtype=np.float64)
    mem = np.asarray(fields.get("mem_used_bytes", nan), dtype=np.float64)
    power = np.asarray(fields.get("power_w", nan), dtype=np.float64)
    temp = np.asarray(fields.get("temperature_c", nan), dtype=np.float64)
    throttle = np.asarray(fields.get("throttle_reasons", nan), dtype=np.float64)
    device = np.asarray(samples.device, dtype=np.int64)
    n_devices = max(1, len(samples.devices))
    # Per device, once: its power samples and its (finite) energy-counter readings.
    energy_device = np.asarray(samples.energy_device)
    energy_ts_all = np.asarray(samples.energy_timestamps_ns, dtype=np.int64)
    energy_mj_all = np.asarray(samples.energy_mj, dtype=np.float64)
    per_device = []
    gpm: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for d in range(n_devices):
        dsel = device == d
        esel = (energy_device == d) & np.isfinite(energy_mj_all)
        per_device.append((dsel, ts[dsel], power[dsel], energy_ts_all[esel], energy_mj_all[esel]))
        for f in GPM_FIELDS:
            if f in fields:
                series = gpm_windows(ts[dsel], np.asarray(fields[f], dtype=np.float64)[dsel])
                if series[2].size:
                    gpm.setdefault(f, []).append(series)

    per_iteration: list[dict[str, Any]] = []
    warnings: list[str] = []
    throttled_iters, thermal_iters = [], []
    for i, t in enumerate(traces):
        sel = iteration == i
        reasons = throttle[sel]
        bits = np.bitwise_or.reduce(reasons[np.isfinite(reasons)].astype(np.int64)) if np.isfinite(reasons).any() else 0
        energy, method = 0.0, None
        power_sum = []
        for dsel, dts, dpower, ets, emj in per_device:
            p = power[sel & dsel]
            if np.isfinite(p).any():
                power_sum.append(np.nanmean(p))
            if energy is not None:
                e, method = _energy_between(t.host_start_ns, t.host_end_ns, dts, dpower, ets, emj)
                energy = None if e is None else energy + e
        if energy is None:
            method = None
        tokens = tokens_per_iteration[i] if i < len(tokens_per_iteration) else 0
        row = {
            "samples": int(np.count_nonzero(sel)),
            "gpu_util_mean_pct": _nan_stat(np.mean, util[sel]),
            "gpu_util_max_pct": _nan_stat(np.max, util[sel]),
            "memory_peak_bytes": _nan_stat(np.max, mem[sel]),
            "power_mean_w": float(np.sum(power_sum)) if power_sum else None,
            "energy_j": energy,
            "energy_method": method,
            "energy_per_token_j": energy / tokens if energy is not None and tokens else None,
            "temperature_max_c": _nan_stat(np.max, temp[sel]),
            "throttle_reasons": int(bits),
            "throttled": bool(int(bits) & THROTTLE_MASK),
        }
        first = int(t.host_marks_ns[0]) if t.n_marks else t.host_end_ns
        for f in GPM_FIELDS:
            whole, decode = gpm_metric_names(f)
            # Several devices: the highest, like utilisation.
            means = [window_mean(*w, t.host_start_ns, t.host_end_ns) for w in gpm.get(f, [])]
            dmeans = [window_mean(*w, first, t.host_end_ns) for w in gpm.get(f, [])]
            row[whole] = max((m for m in means if m is not None), default=None)
            row[decode] = max((m for m in dmeans if m is not None), default=None)
        per_iteration.append(row)
        if row["throttled"]:
            throttled_iters.append(i)
        if int(bits) & THERMAL_MASK:
            thermal_iters.append(i)
    if throttled_iters:
        warnings.append(f"GPU clocks were throttled (power or thermal limits) in {len(throttled_iters)} of "
                        f"{len(traces)} iterations {throttled_iters[:10]}: results are not comparable with "
                        "unthrottled runs")
    if thermal_iters:
        warnings.append(f"thermal slowdown in iterations {thermal_iters[:10]}: the GPU hit its temperature limit")
    if samples.dropped:
        warnings.append(f"the sampler dropped {samples.dropped} of its oldest samples (buffer full); "
                        "raise max_samples or the interval")
    counter_total = samples.energy_joules()
    raw = samples.to_dict()
    summary = {}
    for name in HARDWARE_METRICS:
        values = [r[name] for r in per_iteration if r[name] is not None]
        summary[name] = _stats.describe(values, seed=seed)
    return {
        "available": samples.n_samples > 0,
        "reason": samples.reason,
        "backend": samples.backend,
        "library": samples.library,
        "interval_ms": samples.interval_ms,
        "devices": samples.devices,
        "unavailable": samples.unavailable,
        "dropped": samples.dropped,
        "missed_slots": samples.missed_slots,
        "read_errors": samples.read_errors,
        "thread_cpu_ns": samples.thread_cpu_ns,
        "energy_thread_cpu_ns": samples.energy_thread_cpu_ns,
        "start_ns": samples.start_ns,
        "stop_ns": samples.stop_ns,
        "samples": {
            "timestamps_ns": ts.tolist(),
            "device": device.tolist(),
            "iteration": iteration.tolist(),
            "phase": [PHASES[p] for p in phase.tolist()],
            **raw["fields"],
        },
        "energy": raw["energy"],
        "energy_counter_total_j": counter_total if np.isfinite(counter_total) else None,
        "per_iteration": per_iteration,
        "summary": summary,
        "warnings": warnings,
    }


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}
