"""``fastprof env``: the machine a measurement runs on, and what would spoil it.

GPU facts come from the official NVML binding (``import pynvml``, package nvidia-ml-py) when it
is installed and a driver answers; each query is guarded, so a field the GPU does not support
is ``None``. The CPU facts come from /proc/cpuinfo and the cpufreq sysfs tree.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from fastprof.environment import capture_environment, nvml_gpus  # noqa: F401  (nvml_gpus re-exported)

CPU_SYSFS = "/sys/devices/system/cpu"


def cpu_info(root: str = CPU_SYSFS) -> dict[str, Any]:
    """Governors of every CPU (``{governor: count}``) and their current and maximum frequency."""
    governors: dict[str, int] = {}
    cur, top = [], []
    for d in sorted(glob.glob(os.path.join(root, "cpu[0-9]*", "cpufreq"))):
        for name, store in (("scaling_governor", None), ("scaling_cur_freq", cur), ("cpuinfo_max_freq", top)):
            try:
                with open(os.path.join(d, name)) as f:
                    text = f.read().strip()
            except OSError:
                continue
            if store is None:
                governors[text] = governors.get(text, 0) + 1
            elif text.isdigit():
                store.append(int(text) / 1000.0)
    return {
        "governors": governors,
        "cur_freq_mhz_mean": sum(cur) / len(cur) if cur else None,
        "max_freq_mhz": max(top) if top else None,
    }


def warnings(info: dict[str, Any]) -> list[str]:
    """Conditions that spoil measurements: other processes on a GPU, a power cap below the
    default, a CPU governor other than performance."""
    out = []
    for g in info.get("gpus") or []:
        name = f"GPU {g.get('index')} ({g.get('name')})"
        others = g.get("other_processes") or []
        if others:
            pids = ", ".join(str(p["pid"]) for p in others[:8])
            out.append(f"{name} runs {len(others)} other process(es) (pid {pids}): they share the GPU with "
                       "the measurement")
        limit, default = g.get("power_limit_w"), g.get("power_default_limit_w")
        if isinstance(limit, (int, float)) and isinstance(default, (int, float)) and limit < default - 0.5:
            out.append(f"{name} power limit {limit:g} W is below its default {default:g} W: the GPU is capped "
                       "and results are not comparable with uncapped runs")
    governors = (info.get("cpu") or {}).get("governors") or {}
    bad = {g: n for g, n in governors.items() if g != "performance"}
    if bad:
        what = ", ".join(f"'{g}' on {n} CPU(s)" for g, n in bad.items())
        out.append(f"CPU frequency governor {what}, not 'performance': host-side timings (launch overhead, "
                   "small-model decode) will be noisier and slower")
    return out


def collect(cpu_root: str = CPU_SYSFS) -> dict[str, Any]:
    """Everything ``fastprof env`` shows, as one JSON-ready dict."""
    env = capture_environment(nvml=True)
    cpu = dict(env.get("cpu") or {})
    cpu.update(cpu_info(cpu_root))
    nvidia = dict(env.get("nvidia") or {})
    gpus, reason = nvidia.pop("gpus", []), nvidia.pop("reason", None)
    system = nvidia
    info: dict[str, Any] = {
        "hostname": env.get("hostname"),
        "platform": env.get("platform"),
        "python": env.get("python"),
        "versions": env.get("versions"),
        "cpu": cpu,
        "nvidia": {**system, "reason": reason},
        "gpus": gpus,
        "cuda_visible_devices": env.get("cuda_visible_devices"),
    }
    info["warnings"] = warnings(info)
    return info


def print_console(info: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    t = Table(title="host", title_justify="left", show_header=False)
    t.add_column("key")
    t.add_column("value")
    cpu = info.get("cpu") or {}
    t.add_row("hostname", str(info.get("hostname")))
    t.add_row("platform", str(info.get("platform")))
    t.add_row("CPU", f"{cpu.get('model')} ({cpu.get('logical_cores')} logical cores)")
    govs = ", ".join(f"{g} x{n}" for g, n in (cpu.get("governors") or {}).items()) or "unknown (no cpufreq)"
    t.add_row("CPU governor", govs)
    if cpu.get("cur_freq_mhz_mean"):
        t.add_row("CPU frequency", f"{cpu['cur_freq_mhz_mean']:.0f} MHz now (mean), max {cpu.get('max_freq_mhz') or 0:.0f} MHz")
    for k, v in (info.get("versions") or {}).items():
        t.add_row(k, str(v))
    nv = info.get("nvidia") or {}
    t.add_row("NVIDIA driver", str(nv.get("driver_version")))
    t.add_row("CUDA driver version", str(nv.get("cuda_driver_version")))
    t.add_row("CUDA_VISIBLE_DEVICES", str(info.get("cuda_visible_devices")))
    console.print(t)
    gpus = info.get("gpus") or []
    if gpus:
        g = Table(title="GPUs", title_justify="left")
        for col in ("#", "name", "UUID", "power limit / default [W]", "persistence", "ECC", "SM clock / max [MHz]",
                    "mem clock / max [MHz]", "temp [C]", "processes"):
            g.add_column(col)
        for d in gpus:
            def two(a: Any, b: Any) -> str:
                return f"{a if a is not None else '-'} / {b if b is not None else '-'}"

            g.add_row(str(d["index"]), str(d.get("name")), str(d.get("uuid")),
                      two(d.get("power_limit_w"), d.get("power_default_limit_w")),
                      {True: "on", False: "off", None: "-"}[d.get("persistence_mode")],
                      {True: "on", False: "off", None: "-"}[d.get("ecc_enabled")],
                      two(d.get("sm_clock_mhz"), d.get("sm_clock_max_mhz")),
                      two(d.get("mem_clock_mhz"), d.get("mem_clock_max_mhz")),
                      str(d.get("temperature_c") if d.get("temperature_c") is not None else "-"),
                      str(len(d.get("processes") or [])))
        console.print(g)
    else:
        console.print(f"[dim]no GPU listed: {escape(str(nv.get('reason') or 'NVML reports no device'))}[/dim]", highlight=False)
    for w in info.get("warnings") or []:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)
    if not info.get("warnings"):
        console.print("[green]no warnings[/green]")
