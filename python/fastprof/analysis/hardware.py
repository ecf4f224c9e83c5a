"""GPU samples lined up with the token timeline.

The sampler and the recorder read the same clock (CLOCK_MONOTONIC ns), so a sample belongs to
iteration ``i`` when it falls between that iteration's host start and end, and to its prefill
phase when it comes before the first token reached the host, else to its decode phase.
Samples between iterations belong to none (phase ``"idle"``).

The GPU performance counters (NVML GPM: ``dram_bw_util_pct``, ``sm_active_pct``, ...) are averages
over the window since the device's previous GPM sample (100 ms by default), not instantaneous
readings: a window that straddles prefill or the idle time between iterations (garbage collection,
memory clean-up) averages that time in. Per iteration:

- ``dram_bw_util_mean_pct``: the mean over the whole iteration, each window weighted by the time it
  shares with the iteration (a window that straddles the iteration's edges counts for its part
  inside, diluted by what lies outside);
- ``dram_bw_util_decode_mean_pct``: the time-weighted mean of the windows that lie wholly inside the
  iteration's decode phase (first token to end); None when no whole window fits. Never diluted.

The run's figures (``gpm_phases`` of the section, :func:`gpm_phases`) pool, per phase (``decode``,
``iteration``) and field, the windows that lie wholly inside that phase of some iteration: windows
inside the decode phases of consecutive iterations count together, weighted by their length, and
none that takes in time outside them. Where no window fits (iterations shorter than the GPM period)
the figure is unavailable, with the reason.

A GPM value lags the row that carries it: on an H200 the window it describes ended 80 to 115 ms
before that row (the same within a run). The lag is fitted per run and device against the
iterations' busy and idle time (:func:`estimate_gpm_lag`) and the windows shifted by it, with a
margin, before they are matched to phases; where it cannot be fitted, a window counts only if the
phase holds it at every lag up to :data:`GPM_LAG_MAX_NS`. The whole-iteration means above use
the windows as stamped.
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
    time since the previous finite value's row; the first since the device's first row (its first
    GPM sample, which holds no value) or as long as the median window, whichever starts earlier.

    The starts are the earliest the windows can have begun: after a failed GPM read the sampler
    starts the next window at its next good sample, later than the previous finite row; so a window
    that starts inside a phase by these bounds truly does."""
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    end, v = ts[ok], v[ok]
    if end.size == 0:
        return end, end, v
    start = np.empty_like(end)
    start[1:] = end[:-1]
    earlier = ts[ts < end[0]]
    first = int(earlier.min()) if earlier.size else int(end[0])
    if end.size > 1:
        first = min(first, int(end[0] - int(np.median(np.diff(end)))))
    start[0] = first
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


#: A GPM sample is taken while its row is read, before the row is stamped: a window may begin up to
#: one row's read time (well under a millisecond) before the stamp of the row that opened it. A window
#: counts toward a phase only if its stamped start lies this much after the phase begins.
GPM_STAMP_SLACK_NS = 1_000_000

#: The phases :func:`gpm_phases` measures.
GPM_PHASES = ("decode", "iteration")

#: A GPM value lags its row: on an H200 (driver 580) the window a value describes ended 80 to 115 ms
#: before the sample that returned it (the counters reach NVML on the device's own ~100 ms tick),
#: the same within a run and different from run to run. :func:`estimate_gpm_lag` fits it per run
#: and device, on this grid up to ``GPM_LAG_MAX_NS``; where it cannot (no contrast between busy and
#: idle time to fit), a window counts toward a phase only if the phase holds it at every lag up to
#: ``GPM_LAG_MAX_NS``. ``GPM_LAG_TOLERANCE_NS``: the margin kept around a fitted lag.
GPM_LAG_MAX_NS = 250_000_000
GPM_LAG_STEP_NS = 5_000_000
GPM_LAG_TOLERANCE_NS = 15_000_000
#: The fit's acceptance: at least this many windows, this spread of busy share across them and this
#: share of the values' variance explained (R^2) at the best lag.
GPM_LAG_MIN_WINDOWS = 6
GPM_LAG_MIN_SPREAD = 0.1
GPM_LAG_MIN_R2 = 0.7
#: ... and a sharp minimum: every lag this far or farther from the best leaves at least
#: ``GPM_LAG_SHARPNESS_RATIO`` times its squared error.
GPM_LAG_SHARPNESS_NS = 30_000_000
GPM_LAG_SHARPNESS_RATIO = 3.0


#: Idle time left between timed iterations whose decode phases are too short for a GPM window at
#: every lag (:func:`gpm_idle_gap_ns`), in GPM periods: the contrast the lag is fitted on.
GPM_IDLE_GAP_PERIODS = 1.5


def gpm_idle_gap_ns(decode_ns: int, period_ns: int) -> int:
    """How long the GPU should stay idle between two timed iterations so that GPM's lag can be
    fitted (:func:`estimate_gpm_lag` needs busy and idle time to tell apart): 0 where a decode
    phase of ``decode_ns`` holds a whole GPM window of ``period_ns`` at every lag up to
    :data:`GPM_LAG_MAX_NS` (the figure needs no fitted lag), else :data:`GPM_IDLE_GAP_PERIODS`
    periods. Short iterations back to back leave no idle time to fit on; the decode figure would
    then be unavailable however many iterations ran."""
    if decode_ns >= period_ns + GPM_LAG_MAX_NS + GPM_STAMP_SLACK_NS:
        return 0
    return int(GPM_IDLE_GAP_PERIODS * period_ns)


def phase_intervals(traces: Sequence[Trace], phase: str) -> list[tuple[int, int]]:
    """(start, end) host ns of each iteration's ``phase``: ``"iteration"``, host start to end;
    ``"decode"``, first token to end (none for an iteration without tokens or that ends at its first)."""
    out = []
    for t in traces:
        if phase == "iteration":
            a, b = int(t.host_start_ns), int(t.host_end_ns)
        elif phase == "decode":
            if not t.n_marks:
                continue
            a, b = int(t.host_marks_ns[0]), int(t.host_end_ns)
        else:
            raise ValueError(f"unknown phase {phase!r}: use one of {GPM_PHASES}")
        if b > a:
            out.append((a, b))
    return out


def windows_inside(start_ns: np.ndarray, end_ns: np.ndarray, intervals: Sequence[tuple[int, int]],
                   slack_ns: int = GPM_STAMP_SLACK_NS) -> np.ndarray:
    """For each window, the index of the interval that holds it whole (its start at least
    ``slack_ns`` after the interval's start, its end no later than the interval's end), else -1."""
    start = np.asarray(start_ns, dtype=np.int64)
    end = np.asarray(end_ns, dtype=np.int64)
    out = np.full(start.shape, -1, dtype=np.int64)
    if not len(intervals) or start.size == 0:
        return out
    order = np.argsort([a for a, _ in intervals], kind="stable")
    a = np.asarray([intervals[k][0] for k in order], dtype=np.int64)
    b = np.asarray([intervals[k][1] for k in order], dtype=np.int64)
    idx = np.searchsorted(a, start - slack_ns, side="right") - 1
    ok = idx >= 0
    safe = np.clip(idx, 0, None)
    ok &= (start - slack_ns >= a[safe]) & (end <= b[safe]) & (end > start)
    out[ok] = order[safe[ok]]
    return out


def _overlap_share(start: np.ndarray, end: np.ndarray, intervals: Sequence[tuple[int, int]]) -> np.ndarray:
    """Share of each window [start, end] inside the (disjoint) intervals."""
    share = np.zeros(start.shape, dtype=np.float64)
    for a, b in intervals:
        share += np.clip(np.minimum(end, b) - np.maximum(start, a), 0, None)
    return share / np.maximum(end - start, 1)


def estimate_gpm_lag(start_ns: np.ndarray, end_ns: np.ndarray, values: np.ndarray,
                     busy: Sequence[tuple[int, int]]) -> int | None:
    """The lag (ns) between the windows as stamped and the time their values describe: the lag on
    the grid (0 to ``GPM_LAG_MAX_NS``) at which the values are best explained, by least squares, as
    a linear function of each shifted window's share of ``busy`` time (the iterations); None when
    the fit is not trustworthy (too few windows, too little contrast, R^2 too low)."""
    start = np.asarray(start_ns, dtype=np.int64)
    end = np.asarray(end_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if v.size < GPM_LAG_MIN_WINDOWS or not busy:
        return None
    total = float(np.sum((v - v.mean()) ** 2))
    if total <= 0:
        return None
    fits = []
    for lag in range(0, GPM_LAG_MAX_NS + 1, GPM_LAG_STEP_NS):
        f = _overlap_share(start - lag, end - lag, busy)
        if f.std() < GPM_LAG_MIN_SPREAD:
            continue
        x = np.column_stack([np.ones_like(f), f])
        coef, *_ = np.linalg.lstsq(x, v, rcond=None)
        if coef[1] > 0:
            fits.append((lag, float(np.sum((v - x @ coef) ** 2))))
    if not fits:
        return None
    lag, sse = min(fits, key=lambda t: t[1])
    if 1.0 - sse / total < GPM_LAG_MIN_R2:
        return None
    # A sharp minimum: lags GPM_LAG_SHARPNESS_NS or more away explain the values clearly worse.
    far = [e for k, e in fits if abs(k - lag) >= GPM_LAG_SHARPNESS_NS]
    if far and min(far) < GPM_LAG_SHARPNESS_RATIO * sse + 1e-9 * total:
        return None
    return int(lag)


def shift_windows(start_ns: np.ndarray, end_ns: np.ndarray, lag_ns: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The span each window's value may describe: shifted back by a fitted lag, widened by
    ``GPM_LAG_TOLERANCE_NS`` each side; without one, every lag up to ``GPM_LAG_MAX_NS``."""
    start = np.asarray(start_ns, dtype=np.int64)
    end = np.asarray(end_ns, dtype=np.int64)
    if lag_ns is None:
        return start - GPM_LAG_MAX_NS, end
    return start - lag_ns - GPM_LAG_TOLERANCE_NS, end - lag_ns + GPM_LAG_TOLERANCE_NS


def _weighted_mean_ci(values: np.ndarray, weights: np.ndarray) -> tuple[float, float | None]:
    """Weighted mean and the half-width of its 95% confidence interval (Student's t over the
    windows, treated as independent); no interval from a single window."""
    w = weights / weights.sum()
    mean = float(np.dot(w, values))
    n = values.size
    if n < 2:
        return mean, None
    from scipy import stats as _scipy_stats

    var = float(np.dot(w, (values - mean) ** 2)) * n / (n - 1)
    return mean, float(_scipy_stats.t.ppf(0.975, n - 1) * np.sqrt(var / n))


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.0f} ms"


def _no_window_reason(phase: str, intervals: Sequence[tuple[int, int]], window_ns: float,
                      lags: Sequence[int | None] = ()) -> str:
    if not intervals:
        if phase == "decode":
            return "no decode phase: no iteration recorded a token before it ended"
        return "no iterations"
    lengths = np.asarray([b - a for a, b in intervals], dtype=np.float64)
    med, longest = float(np.median(lengths)), float(lengths.max())
    span = _ms(med) if longest < 1.2 * med else f"{_ms(med)} (up to {_ms(longest)})"
    what = "decode phases" if phase == "decode" else "iterations"
    advice = ("run longer generations (--max-new-tokens) to measure it" if phase == "decode"
              else "run longer iterations to measure it")
    if not lags:
        lag = ""
    elif any(x is None for x in lags):
        lag = f" (allowing for values that lag by up to {_ms(GPM_LAG_MAX_NS)}: no lag could be fitted)"
    else:
        lag = f" (its values lag by {_ms(max(lags))}, fitted)"
    return (f"{what} of {span} hold no whole {_ms(window_ns)} GPM window{lag}, and a window that takes in time "
            f"outside them would dilute the figure; {advice}")


def phase_figure(series: Sequence[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray], int | None]],
                 intervals: Sequence[tuple[int, int]], phase: str = "decode") -> dict[str, Any]:
    """One GPM field over one phase of the run, from ``series`` ((device, :func:`gpm_windows`, the
    device's lag from :func:`estimate_gpm_lag` or None) per device) and the phase's ``intervals``
    (:func:`phase_intervals`): the time-weighted mean of the windows whose span
    (:func:`shift_windows`) lies wholly inside an interval (``pct``), with ``windows`` (how many),
    ``covered_s`` (their total length), ``phase_s`` (the phases' total length), ``window_s`` (the
    median window), ``ci95_pct`` (half-width of the mean's 95% interval), ``lag_s`` (the fitted
    lag; None: every lag up to ``GPM_LAG_MAX_NS`` was allowed for) and ``device``; several devices:
    the highest. ``available`` false, with a ``reason``, when no window fits."""
    phase_s = float(sum(b - a for a, b in intervals)) / 1e9
    lengths = [w[1] - w[0] for _, w, _ in series if w[0].size]
    window_ns = float(np.median(np.concatenate(lengths))) if lengths else 0.0
    best = None
    for d, (start, end, values), lag in series:
        inside = windows_inside(*shift_windows(start, end, lag), intervals) >= 0
        if not inside.any():
            continue
        weights = (end[inside] - start[inside]).astype(np.float64)
        mean, ci = _weighted_mean_ci(values[inside], weights)
        if best is None or mean > best["pct"]:
            best = {"available": True, "pct": mean, "windows": int(np.count_nonzero(inside)),
                    "covered_s": float(weights.sum()) / 1e9, "phase_s": phase_s, "window_s": window_ns / 1e9,
                    "ci95_pct": ci, "lag_s": None if lag is None else lag / 1e9, "device": int(d), "reason": None}
    if best is not None:
        return best
    lags = [lag for _, _, lag in series]
    return {"available": False, "pct": None, "windows": 0, "covered_s": 0.0, "phase_s": phase_s,
            "window_s": window_ns / 1e9, "ci95_pct": None,
            "lag_s": None if not lags or lags[0] is None else lags[0] / 1e9, "device": None,
            "reason": _no_window_reason(phase, intervals, window_ns, lags)}


def _gpm_series(ts: np.ndarray, device: np.ndarray, n_devices: int, fields: Any, traces: Sequence[Trace]
                ) -> dict[str, list[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray], int | None]]]:
    """Per GPM field with a value: (device, its windows, the device's lag) for each device that has
    one. The lag is fitted (:func:`estimate_gpm_lag`) against the iterations on the first field,
    in :data:`GPM_FIELDS` order, that gives one; it is the device's, the same for every field."""
    busy = phase_intervals(traces, "iteration")
    gpm: dict[str, list[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray], int | None]]] = {}
    for d in range(n_devices):
        dsel = device == d
        per_field = {}
        for f in GPM_FIELDS:
            if f in fields:
                series = gpm_windows(ts[dsel], np.asarray(fields[f], dtype=np.float64)[dsel])
                if series[2].size:
                    per_field[f] = series
        lag = None
        for series in per_field.values():
            lag = estimate_gpm_lag(*series, busy)
            if lag is not None:
                break
        for f, series in per_field.items():
            gpm.setdefault(f, []).append((d, series, lag))
    return gpm


def gpm_phases(samples: Any, traces: Sequence[Trace]) -> dict[str, dict[str, dict[str, Any]]]:
    """The run's GPM figures per phase and field (:func:`phase_figure`): ``{"decode": {field:
    figure}, "iteration": {...}}``, for the GPM fields that were sampled. ``samples``: a
    :class:`fastprof.capture.sampler.SamplerResult`, or the ``hardware`` section of a result (its
    ``samples`` and ``devices``), for results written before these figures."""
    if isinstance(samples, dict):
        raw = samples.get("samples") or {}
        ts = np.asarray(raw.get("timestamps_ns") or [], dtype=np.int64)
        device = np.asarray(raw.get("device") or np.zeros(ts.size), dtype=np.int64)
        fields = {f: np.asarray([np.nan if x is None else x for x in raw[f]], dtype=np.float64)
                  for f in GPM_FIELDS if f in raw and len(raw[f]) == ts.size}
        n_devices = max(len(samples.get("devices") or []), int(device.max()) + 1 if device.size else 1)
    else:
        ts = np.asarray(samples.timestamps_ns, dtype=np.int64)
        device = np.asarray(samples.device, dtype=np.int64)
        fields = samples.fields
        n_devices = max(1, len(samples.devices))
    return _phases_from_series(_gpm_series(ts, device, n_devices, fields, traces), traces)


def _phases_from_series(gpm: dict[str, list[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray], int | None]]],
                        traces: Sequence[Trace]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for phase in GPM_PHASES:
        intervals = phase_intervals(traces, phase)
        out[phase] = {f: phase_figure(series, intervals, phase) for f, series in gpm.items()}
    return out


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
    for d in range(n_devices):
        dsel = device == d
        esel = (energy_device == d) & np.isfinite(energy_mj_all)
        per_device.append((dsel, ts[dsel], power[dsel], energy_ts_all[esel], energy_mj_all[esel]))
    gpm = _gpm_series(ts, device, n_devices, fields, traces)

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
        decode_phase = phase_intervals([t], "decode")
        for f in GPM_FIELDS:
            whole, decode = gpm_metric_names(f)
            # Several devices: the highest, like utilisation.
            means = [window_mean(*w, t.host_start_ns, t.host_end_ns) for _, w, _ in gpm.get(f, [])]
            row[whole] = max((m for m in means if m is not None), default=None)
            # Decode: only windows wholly inside this iteration's decode phase, never diluted.
            dmeans = [phase_figure([dw], decode_phase, "decode")["pct"] for dw in gpm.get(f, [])]
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
        "gpm_phases": _phases_from_series(gpm, traces),
        "warnings": warnings,
    }


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}
