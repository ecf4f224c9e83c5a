"""How metrics are named and scaled on screen. Files (JSON, CSV) keep raw SI values: seconds,
bytes, joules, watts; only what a person reads is scaled, by the metric's name suffix."""

from __future__ import annotations

_TIME = ((1.0, "s", 1.0), (1e-3, "ms", 1e3), (1e-6, "us", 1e6), (0.0, "ns", 1e9))
_BYTES = ((2.0**30, "GiB", 2.0**-30), (2.0**20, "MiB", 2.0**-20), (2.0**10, "KiB", 2.0**-10), (0.0, "B", 1.0))
_ENERGY = ((1.0, "J", 1.0), (0.0, "mJ", 1e3))


def metric_label(name: str) -> str:
    if name.endswith("_tokens_per_s"):
        return name[: -len("_tokens_per_s")]
    for suffix in ("_s", "_bytes", "_j", "_w", "_pct"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _pick(table, typical: float | None) -> tuple[str, float]:
    if typical is None:
        return table[0][1], table[0][2]
    for limit, unit, scale in table:
        if abs(typical) >= limit:
            return unit, scale
    return table[-1][1], table[-1][2]


def display_unit(name: str, typical: float | None) -> tuple[str, float]:
    """Display unit and scale for a metric, chosen from its typical value (its median): times in
    s, ms, us or ns, bytes in GiB, MiB, KiB or B, energy in J or mJ; rates as they are."""
    if name.endswith("_tokens_per_s"):
        return "tok/s", 1.0
    if name.endswith("_s"):
        return _pick(_TIME, typical)
    if name.endswith("_bytes"):
        return _pick(_BYTES, typical)
    if name.endswith("_j"):
        return _pick(_ENERGY, typical)
    if name.endswith("_w"):
        return "W", 1.0
    if name.endswith("_pct"):
        return "%", 1.0
    return "", 1.0


def format_value(name: str, value: float | None, typical: float | None = None) -> str:
    """``value`` of metric ``name`` with its display unit, e.g. ``1.30 GiB``, ``12.286 ms``."""
    if value is None:
        return "-"
    unit, scale = display_unit(name, value if typical is None else typical)
    digits = 1 if unit in ("tok/s", "W", "%") else 2 if unit in ("GiB", "MiB", "KiB", "J", "mJ") else 3
    return f"{value * scale:,.{digits}f} {unit}".strip()
