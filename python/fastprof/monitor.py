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
from rich.markup import escape

from fastprof.result import _clean, write_atomic

SUMMARY_FIELDS = ("gpu_util_pct", "mem_used_bytes", "power_w", "sm_clock_mhz", "temperature_c")


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
            devices: Sequence[str] | None = None, backend: str = "auto", quiet: bool = False) -> int:
    """Runs ``cmd`` under the sampler; writes the timeline; returns the command's exit code."""
    from rich.console import Console

    console = Console(stderr=True, quiet=quiet, soft_wrap=True)
    sampler, reason = None, None
    devs = [_device_arg(d) for d in devices] if devices else default_devices()
    try:
        from fastprof.sampler import Sampler

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
    write_atomic(output, json.dumps(_clean(doc), indent=1, allow_nan=False))
    _print(console, doc)
    console.print(f"timeline written to {escape(str(output))}", highlight=False)
    return exit_code


def _print(console: Any, doc: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    secs = (doc["end_ns"] - doc["start_ns"]) / 1e9
    console.print(f"[bold]fastprof monitor[/bold]: {escape(' '.join(doc['command']))} exited with {doc['exit_code']} "
                  f"after {secs:.2f} s", highlight=False)
    if not doc["available"]:
        console.print(f"no GPU samples: {escape(str(doc['reason']))}", highlight=False)
        return
    t = Table(title=f"GPU every {doc['interval_ms']:g} ms", title_justify="left")
    for col in ("device", "samples", "util mean/max [%]", "power mean/max [W]", "memory max [GiB]",
                "SM clock mean [MHz]", "temp max [C]", "energy [J]"):
        t.add_column(col, justify="left" if col == "device" else "right")
    for s in doc["summary"]:
        def mm(f: str, k: str = "mean", scale: float = 1.0) -> str:
            v = s.get(f)
            return "-" if not v else f"{v[k] * scale:,.1f}"

        t.add_row(f"{s['device']} {s.get('name') or ''}".strip(), str(s["samples"]),
                  f"{mm('gpu_util_pct')} / {mm('gpu_util_pct', 'max')}", f"{mm('power_w')} / {mm('power_w', 'max')}",
                  mm("mem_used_bytes", "max", 1 / 2**30), mm("sm_clock_mhz"), mm("temperature_c", "max"),
                  "-" if s.get("energy_j") is None else f"{s['energy_j']:,.2f}")
    console.print(t)
    if doc["reason"]:
        console.print(f"[yellow]note:[/yellow] {escape(str(doc['reason']))}", highlight=False)
