"""The kernel breakdown in the HTML report: per-token stacked GPU time by kernel class with the
idle remainder, and the top-kernels tables (prefill and decode).

The page's helpers (matplotlib, PNG embedding, tables) are passed in by :mod:`fastprof.report.html`,
which imports this module."""

from __future__ import annotations

import html
from typing import Any, Callable

import numpy as np

from fastprof.analysis.kernels import CLASS_LABELS, CLASSES

_COLORS = {"gemm": "#4c72b0", "attention": "#dd8452", "elementwise": "#55a868", "reduction": "#8172b3",
           "copy": "#937860", "communication": "#da8bc3", "other": "#8c8c8c"}


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def kernel_chart(kernels: dict[str, Any], plt: Any, png: Callable[[Any], str]) -> str | None:
    """Stacked bars, one per step of the last traced iteration: time by class, then idle."""
    per = kernels.get("per_step") or {}
    step = np.asarray(per.get("step_s") or [], dtype=float) * 1e3
    busy = np.asarray(per.get("busy_s") or [], dtype=float) * 1e3
    if step.size == 0:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.4))
    x = np.arange(step.size)
    bottom = np.zeros(step.size)
    classes = per.get("class_s") or {}
    raw_sum = np.zeros(step.size)
    for c in CLASSES:
        if c in classes:
            raw_sum += np.asarray(classes[c], dtype=float) * 1e3
    # classes may overlap (concurrent streams): scale each step's classes to its busy time
    scale = np.divide(busy, raw_sum, out=np.zeros_like(busy), where=raw_sum > 0)
    for c in CLASSES:
        if c not in classes:
            continue
        v = np.asarray(classes[c], dtype=float) * 1e3 * scale
        ax.bar(x, v, bottom=bottom, width=1.0, color=_COLORS[c], label=CLASS_LABELS[c], linewidth=0)
        bottom += v
    ax.bar(x, np.maximum(step - busy, 0), bottom=bottom, width=1.0, color="#e6e6e6", label="GPU idle", linewidth=0)
    ax.set_xlabel("step (0 = prefill, then one per token)")
    ax.set_ylabel("time [ms]")
    ax.set_title("GPU time per step by kernel class, and idle (last traced iteration)")
    if step.size > 1 and step[0] > 5 * np.median(step[1:]):
        ax.set_ylim(0, float(np.percentile(step[1:], 99)) * 1.3)
        ax.text(0, ax.get_ylim()[1] * 0.95, f" prefill {step[0]:.2f} ms (clipped)", fontsize=7, va="top")
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    return png(fig)


def kernel_tables(kernels: dict[str, Any], table: Callable[..., str]) -> list[str]:
    parts = []
    for key, title in (("top_decode", "decode"), ("top_prefill", "prefill")):
        rows = [[_esc(k["name"] if len(k["name"]) <= 90 else k["name"][:87] + "..."), _esc(k.get("class")),
                 f"{k['count']:,}", f"{k['total_ns'] / 1e6:,.3f}", f"{k['mean_ns'] / 1e3:,.2f}", f"{k['share']:.1%}"]
                for k in kernels.get(key) or []]
        if rows:
            parts.append(f"<h4>top kernels, {title}</h4>")
            parts.append(table(["kernel", "class", "count", "total [ms]", "mean [us]", "share"], rows, left=2))
    return parts


def kernel_section(kernels: dict[str, Any] | None, *, plt: Callable[[], Any], png: Callable[[Any], str],
                   table: Callable[..., str]) -> list[str]:
    """The HTML parts of one run's kernel breakdown (empty when not traced). ``plt()`` gives
    matplotlib's pyplot, ``png(fig)`` embeds a figure, ``table(header, rows, left=)`` renders a table."""
    if not kernels:
        return []
    parts = ["<h3>Kernel breakdown (CUPTI trace)</h3>"]
    if not kernels.get("available"):
        return parts + [f'<p class="muted">kernel trace unavailable: {_esc(kernels.get("reason"))}</p>']
    bits = []
    if kernels.get("idle_share") is not None:
        bits.append(f"GPU idle {kernels['idle_share']:.0%} of each decode step")
    if kernels.get("kernels_per_token") is not None:
        bits.append(f"{kernels['kernels_per_token']:.0f} kernels per token")
    shares = sorted(((v, k) for k, v in (kernels.get("class_share") or {}).items() if v > 0), reverse=True)
    if shares:
        bits.append("by class: " + ", ".join(f"{CLASS_LABELS.get(k, k)} {v:.0%}" for v, k in shares))
    parts.append(f"<p>{_esc('; '.join(bits))}</p>")
    traced, untraced = kernels.get("itl_s_traced"), kernels.get("itl_s_untraced")
    note = f"{kernels.get('iterations', 0)} traced iteration(s); timestamps: {kernels.get('timestamp_method')}; " \
           f"{kernels.get('dropped', 0)} records dropped"
    if kernels.get("traced_timed"):
        note += "; the timed iterations were traced, their timings include the tracer's cost"
    elif traced and untraced:
        note += f"; ITL traced {traced * 1e3:.3f} ms vs untraced {untraced * 1e3:.3f} ms"
    parts.append(f'<p class="muted">{_esc(note)}</p>')
    chart = kernel_chart(kernels, plt(), png) if (kernels.get("per_step") or {}).get("step_s") else None
    if chart:
        parts.append(chart)
    return parts + kernel_tables(kernels, table)
