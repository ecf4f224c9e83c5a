"""``fastprof env`` on the console: the host, the GPUs and the warnings."""

from __future__ import annotations

from typing import Any

from fastprof.results.layout import Column, console_width, fit_tables


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
        columns = [Column(col, "left", key=col in ("#", "name"))
                   for col in ("#", "name", "UUID", "power limit / default [W]", "persistence", "ECC",
                               "SM clock / max [MHz]", "mem clock / max [MHz]", "temp [C]", "processes")]
        rows = []
        for d in gpus:
            def two(a: Any, b: Any) -> str:
                return f"{a if a is not None else '-'} / {b if b is not None else '-'}"

            rows.append([str(d["index"]), str(d.get("name")), str(d.get("uuid")),
                      two(d.get("power_limit_w"), d.get("power_default_limit_w")),
                      {True: "on", False: "off", None: "-"}[d.get("persistence_mode")],
                      {True: "on", False: "off", None: "-"}[d.get("ecc_enabled")],
                      two(d.get("sm_clock_mhz"), d.get("sm_clock_max_mhz")),
                      two(d.get("mem_clock_mhz"), d.get("mem_clock_max_mhz")),
                      str(d.get("temperature_c") if d.get("temperature_c") is not None else "-"),
                         str(len(d.get("processes") or []))])
        for t in fit_tables(columns, rows, width=console_width(console), title="GPUs"):
            console.print(t)
    else:
        console.print(f"[dim]no GPU listed: {escape(str(nv.get('reason') or 'NVML reports no device'))}[/dim]", highlight=False)
    for w in info.get("warnings") or []:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)
    if not info.get("warnings"):
        console.print("[green]no warnings[/green]")
