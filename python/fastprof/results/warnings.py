"""Warnings said once: the same sentence about several metrics or configurations is one line.

A warning may start with the metric it is about (``"itl_s: coefficient of variation 16.3% ..."``).
Warnings whose text is the same once their percentages are set aside form one group; the group is
written once, each number that differs as its range over the group, followed by where it applies:
the metrics, and the configurations when there are several.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

_METRIC = re.compile(r"^([a-z][a-z0-9_]*): (.*)$", re.S)
#: The figures a warning quotes (percentages): they may differ within a group, other numbers may not.
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?=%)")


def _span(values: Sequence[str]) -> str:
    distinct = sorted(set(values), key=float)
    return distinct[0] if len(distinct) == 1 else f"{distinct[0]} to {distinct[-1]}"


def grouped(items: Iterable[tuple[str | None, str]]) -> list[str]:
    """``items`` are (configuration label or None, warning). Returns each distinct warning once,
    in order of first appearance, with the metrics and configurations it applies to."""
    groups: dict[str, dict] = {}
    for label, text in items:
        m = _METRIC.match(text)
        metric, body = (m.group(1), m.group(2)) if m else (None, text)
        key = _NUMBER.sub("#", body)
        g = groups.setdefault(key, {"parts": _NUMBER.split(body), "numbers": [], "where": {}})
        g["numbers"].append(_NUMBER.findall(body))
        metrics = g["where"].setdefault(label, [])
        if metric and metric not in metrics:
            metrics.append(metric)
    out = []
    for g in groups.values():
        slots = list(zip(*g["numbers"]))
        text = g["parts"][0] + "".join(_span(slot) + part for slot, part in zip(slots, g["parts"][1:]))
        where = []
        labels = [k for k in g["where"] if k]
        for label, metrics in g["where"].items():
            if label and metrics:
                where.append(f"{', '.join(metrics)} in {label}")
            elif label:
                where.append(label)
            elif metrics:
                where.append(", ".join(metrics))
        # The same metrics in every configuration: name them once.
        if labels and len({tuple(m) for m in g["where"].values()}) == 1:
            metrics = g["where"][labels[0]]
            where = [f"{', '.join(metrics)} in {', '.join(labels)}" if metrics else ", ".join(labels)]
        out.append(f"{text} ({'; '.join(where)})" if where else text)
    return out
