"""``fastprof selftest`` on the console: one line per check."""

from __future__ import annotations

import sys
from typing import Any

from fastprof.capture.selftest import PASS, SKIPPED, WARN, Check, fmt_ns


def _fmt_value(c: Check) -> str:
    if c.value is None:
        return "-"
    if c.unit == "ns":
        return fmt_ns(c.value)
    if c.unit == "Hz":
        return f"{c.value:.1f} Hz"
    return f"{c.value:g} {c.unit}".strip()


def print_table(checks: list[Check], dev: Any, file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    file = file or sys.stdout
    console = Console(file=file, width=None if getattr(file, "isatty", lambda: False)() else 132)
    title = "fastprof selftest"
    if dev.kind:
        title += f" - {dev.info.get('name', '')} ({dev.kind}:{dev.ordinal})" if dev.info else ""
    table = Table(title=title, show_lines=False)
    table.add_column("check")
    table.add_column("measured", justify="right")
    table.add_column("target")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    style = {PASS: "green", WARN: "bold yellow", SKIPPED: "dim"}
    for c in checks:
        table.add_row(c.name, _fmt_value(c), c.target, f"[{style[c.status]}]{c.status}[/]", c.detail)
    console.print(table)
    if dev.kind is None:
        console.print(f"GPU checks skipped: {dev.reason}")


