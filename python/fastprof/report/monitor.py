"""``fastprof monitor`` on the console: what ran, and its GPUs' summary."""

from __future__ import annotations

from typing import Any

from fastprof.results.layout import Column, console_width, fit_tables


def print_console(doc: dict[str, Any], console: Any) -> None:
    """The summary of a ``fastprof monitor`` timeline document."""
    from rich.markup import escape

    secs = (doc["end_ns"] - doc["start_ns"]) / 1e9
    console.print(f"[bold]fastprof monitor[/bold]: {escape(' '.join(doc['command']))} exited with {doc['exit_code']} "
                  f"after {secs:.2f} s", highlight=False)
    if not doc["available"]:
        console.print(f"no GPU samples: {escape(str(doc['reason']))}", highlight=False)
        return
    gpm = any(s.get("dram_bw_util_pct") for s in doc["summary"])  # performance counters (Hopper and newer)
    columns = [Column(col, "left" if col == "device" else "right", key=col == "device")
               for col in ("device", "samples", "util mean/max [%]", "power mean/max [W]", "memory max [GiB]",
                           "SM clock mean [MHz]", "temp max [C]", "energy [J]")
               + (("DRAM bw mean/max [%]",) if gpm else ())]
    rows = []
    for s in doc["summary"]:
        def mm(f: str, k: str = "mean", scale: float = 1.0) -> str:
            v = s.get(f)
            return "-" if not v else f"{v[k] * scale:,.1f}"

        rows.append([f"{s['device']} {s.get('name') or ''}".strip(), str(s["samples"]),
                  f"{mm('gpu_util_pct')} / {mm('gpu_util_pct', 'max')}", f"{mm('power_w')} / {mm('power_w', 'max')}",
                  mm("mem_used_bytes", "max", 1 / 2**30), mm("sm_clock_mhz"), mm("temperature_c", "max"),
                  "-" if s.get("energy_j") is None else f"{s['energy_j']:,.2f}",
                     *((f"{mm('dram_bw_util_pct')} / {mm('dram_bw_util_pct', 'max')}",) if gpm else ())])
    for t in fit_tables(columns, rows, width=console_width(console), title=f"GPU every {doc['interval_ms']:g} ms"):
        console.print(t)
    if doc["reason"]:
        console.print(f"[yellow]note:[/yellow] {escape(str(doc['reason']))}", highlight=False)
