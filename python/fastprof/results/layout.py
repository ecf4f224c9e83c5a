"""Tables that fit the terminal: numbers are never split or elided.

:func:`fit_tables` lays out one logical table (key columns, then value columns) as one rich Table
when it fits the console's width, else as several, each repeating the key columns with as many
value columns as fit. Columns never wrap and are as wide as their widest cell or header word;
headers take one word a line. At 80 columns (rich's width when output is piped, as in CI logs) a wide
table becomes a few narrower ones; a wide terminal gets one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

#: Width rich adds per column (padding and border) and per table (the outer border).
_PER_COLUMN, _PER_TABLE = 3, 1


@dataclass
class Column:
    header: str
    justify: str = "right"
    key: bool = False  # repeated in every part


def _natural(col: Column, cells: Sequence[str]) -> int:
    longest_word = max((len(w) for w in col.header.split()), default=1)
    return max([longest_word, *(len(c) for c in cells)])


def fit_tables(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, width: int, title: str | None = None,
               row_styles: Sequence[str | None] | None = None, escape_cells: bool = True) -> list[Any]:
    """The rich Tables that show ``rows`` under ``columns`` within ``width`` characters."""
    from rich.markup import escape
    from rich.table import Table

    cells_by_col = [[row[i] for row in rows] for i in range(len(columns))]
    widths = [_natural(c, cells) for c, cells in zip(columns, cells_by_col)]
    keys = [i for i, c in enumerate(columns) if c.key]
    values = [i for i, c in enumerate(columns) if not c.key]
    key_width = sum(widths[i] + _PER_COLUMN for i in keys) + _PER_TABLE
    parts: list[list[int]] = []
    current: list[int] = []
    used = key_width
    for i in values:
        need = widths[i] + _PER_COLUMN
        if current and used + need > width:
            parts.append(current)
            current, used = [], key_width
        current.append(i)
        used += need
    if current or not parts:
        parts.append(current)
    tables = []
    for n, part in enumerate(parts):
        suffix = f" ({n + 1}/{len(parts)})" if len(parts) > 1 else ""
        t = Table(title=(escape(title) + suffix) if title else None, title_justify="left")
        for i in keys + part:
            c = columns[i]
            # One word a line in the header, so a column is as wide as its widest word or cell.
            header = "\n".join(escape(w) for w in c.header.split()) or " "
            t.add_column(header, justify=c.justify, no_wrap=True, min_width=widths[i])
        for r, row in enumerate(rows):
            style = row_styles[r] if row_styles else None
            t.add_row(*((escape(row[i]) if escape_cells else row[i]) for i in keys + part), style=style)
        tables.append(t)
    return tables


def console_width(console: Any) -> int:
    return int(getattr(console, "width", 80) or 80)
