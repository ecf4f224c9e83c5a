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


#: Below this width the details go under the table, one line each, instead of in a column.
DETAIL_COLUMN_MIN_WIDTH = 120


def print_table(checks: list[Check], dev: Any, file: Any = None, console: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(file=file or sys.stdout)
    title = "fastprof selftest"
    if dev.kind:
        title += f" - {dev.info.get('name', '')} ({dev.kind}:{dev.ordinal})" if dev.info else ""
    wide = console.width >= DETAIL_COLUMN_MIN_WIDTH
    table = Table(title=escape(title), title_justify="left", show_lines=False)
    table.add_column("check", overflow="fold")
    table.add_column("measured", justify="right", no_wrap=True)
    table.add_column("target", no_wrap=True)
    table.add_column("status", no_wrap=True)
    if wide:
        table.add_column("detail", overflow="fold")
    style = {PASS: "green", WARN: "bold yellow", SKIPPED: "dim"}
    for c in checks:
        cells = [escape(c.name), _fmt_value(c), escape(c.target), f"[{style[c.status]}]{c.status}[/]"]
        table.add_row(*cells, *([escape(c.detail)] if wide else []))
    console.print(table)
    if not wide:
        for c in checks:
            if c.detail:
                console.print(f"[dim]{escape(c.name)}:[/dim] {escape(c.detail)}", highlight=False)
    if dev.kind is None:
        console.print(f"GPU checks skipped: {escape(str(dev.reason))}", highlight=False)
