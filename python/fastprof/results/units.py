"""How metrics are named and scaled on screen (raw values stay SI in files)."""

from __future__ import annotations


def metric_label(name: str) -> str:
    if name.endswith("_tokens_per_s"):
        return name[: -len("_tokens_per_s")]
    return name[: -len("_s")] if name.endswith("_s") else name


def display_unit(name: str, typical: float | None) -> tuple[str, float]:
    """Display unit and scale for a metric, chosen from its median."""
    if name.endswith("_tokens_per_s"):
        return "tok/s", 1.0
    if typical is None or abs(typical) >= 1:
        return "s", 1.0
    if abs(typical) >= 1e-3:
        return "ms", 1e3
    return "us", 1e6
