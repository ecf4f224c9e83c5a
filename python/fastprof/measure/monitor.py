"""``fastprof monitor``: run a command while the native sampler watches its GPUs.

The timeline file (JSON)::

    {"schema_version": 1, "kind": "monitor", "created": ..., "command": [...], "exit_code": 0,
     "start_ns": ..., "end_ns": ...,                 # CLOCK_MONOTONIC ns around the command
     "available": true, "reason": null,              # reason: why there are no samples
     "sampler": SamplerResult.to_dict(),             # timestamps_ns, device, fields, energy ...
     "summary": [{"device": ..., "samples": N, "gpu_util_pct": {"mean":..,"max":..}, ...}],
     "energy_j": ...}
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
import time
from typing import Any, Sequence

import numpy as np

from fastprof.results.io import json_safe, write_atomic

SUMMARY_FIELDS = ("gpu_util_pct", "mem_used_bytes", "power_w", "sm_clock_mhz", "temperature_c",
                  "dram_bw_util_pct", "tensor_active_pct")  # the last two: GPM, Hopper and newer


class CommandNotFound(Exception):
    pass


def default_devices() -> list[str | int]:
    """Every CUDA_VISIBLE_DEVICES entry, else every device NVML lists (through pynvml), else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        return list(range(len(entries))) or [0]
    if not os.environ.get("FASTPROF_NVML_LIBRARY"):
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                n = int(pynvml.nvmlDeviceGetCount())
            finally:
                pynvml.nvmlShutdown()
            if n > 0:
                return list(range(n))
        except Exception:
            pass
    return [0]


def _device_arg(text: str | int) -> str | int:
    return int(text) if isinstance(text, str) and text.isdigit() else text


def summarize(result: Any) -> list[dict[str, Any]]:
    """Per device: sample count and mean/max of the main fields."""
    out = []
    for d, info in enumerate(result.devices):
        rows = result.for_device(d)
        entry: dict[str, Any] = {"device": info.get("identifier"), "name": info.get("name"),
                                 "samples": int(rows["timestamps_ns"].size)}
        for f in SUMMARY_FIELDS:
            v = np.asarray(rows.get(f, []), dtype=np.float64)
            v = v[np.isfinite(v)]
            entry[f] = {"mean": float(v.mean()), "max": float(v.max())} if v.size else None
        e = result.energy_joules(d)
        entry["energy_j"] = e if np.isfinite(e) else None
        out.append(entry)
    return out


def monitor(cmd: Sequence[str], *, interval_ms: float = 10, output: str = "fastprof-monitor.json",
            devices: Sequence[str] | None = None, backend: str = "auto") -> dict[str, Any]:
    """Runs ``cmd`` under the sampler and writes the timeline to ``output``. Returns the timeline
    document; its ``exit_code`` is the command's."""
    sampler, reason = None, None
    devs = [_device_arg(d) for d in devices] if devices else default_devices()
    try:
        from fastprof.capture.sampler import Sampler

        sampler = Sampler(interval_ms=interval_ms, devices=devs, backend=backend)
    except Exception as exc:  # bad identifiers, no mapping: the command still runs
        reason = f"sampler unavailable: {exc}"
    if sampler is not None:
        sampler.start()
    start_ns = time.monotonic_ns()
    try:
        proc = subprocess.Popen(list(cmd))
    except (FileNotFoundError, PermissionError) as exc:
        if sampler is not None:
            sampler.stop()
        raise CommandNotFound(f"cannot run {cmd[0]!r}: {exc.strerror or exc}") from None
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the command; we wait for it
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        end_ns = time.monotonic_ns()
        result = sampler.stop() if sampler is not None else None
    exit_code = code if code >= 0 else 128 - code
    if result is not None:
        if result.n_samples == 0:
            reason = result.reason or "the sampler took no sample (the command ended before the first one)"
        elif result.reason:
            reason = result.reason
    doc = {
        "schema_version": 1, "kind": "monitor",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": list(cmd), "exit_code": exit_code, "start_ns": start_ns, "end_ns": end_ns,
        "interval_ms": interval_ms,
        "available": bool(result is not None and result.n_samples > 0), "reason": reason,
        "sampler": result.to_dict() if result is not None else None,
        "summary": summarize(result) if result is not None and result.n_samples else [],
    }
    write_atomic(output, json.dumps(json_safe(doc), indent=1, allow_nan=False))
    return doc
