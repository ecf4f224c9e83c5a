"""The host breakdown in the HTML report: where the host's time goes in each decode step of the
traced iterations (by CUDA API call, by generate-loop segment, by module), as a per-step stacked
chart and tables.

The page's helpers (matplotlib, PNG embedding, tables) are passed in by :mod:`fastprof.report.html`,
which imports this module."""

from __future__ import annotations

import html
from typing import Any, Callable

import numpy as np

from fastprof.analysis.host import LOOP_LABELS, LOOP_PARTS, PART_LABELS, PARTS, summary_line

_PART_COLORS = {"launch": "#4c72b0", "graph_launch": "#64b5cd", "copy": "#937860", "memset": "#8172b3",
                "sync": "#c44e52", "other_api": "#8c8c8c", "python_framework": "#55a868"}
_LOOP_COLORS = {"prepare": "#8172b3", "forward": "#4c72b0", "after_forward": "#dd8452", "processors": "#da8bc3",
                "sample_to_host": "#55a868"}
#: Rows of the module table (by self time): a model has a few modules per layer, the page stays short.
TOP_MODULES = 30


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:,.3f}"


def _share(s: float | None, step: float | None) -> str:
    return f"{s / step:.1%}" if s is not None and step else "-"


def _unavailable(what: str, part: dict[str, Any] | None, default: str) -> str:
    return f'<p class="muted">{_esc(what)} unavailable: {_esc((part or {}).get("reason") or default)}</p>'


def host_chart(host: dict[str, Any], plt: Any, png: Callable[[Any], str]) -> str | None:
    """Stacked bars, one per decode step of the last traced iteration: by CUDA API part when the
    API records were taken (the parts add up to the step), else by generate-loop segment."""
    per = host.get("per_step") or {}
    api = (host.get("api") or {}).get("available") and per.get("parts_s")
    series = per.get("parts_s") if api else per.get("loop_s")
    if not series:
        return None
    keys, labels, colors = (PARTS, PART_LABELS, _PART_COLORS) if api else (LOOP_PARTS, LOOP_LABELS, _LOOP_COLORS)
    n = max((len(series.get(k) or []) for k in keys), default=0)
    if n == 0:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.4))
    x = np.arange(1, n + 1)
    bottom = np.zeros(n)
    for k in keys:
        if k not in series:
            continue
        # loop segments are None in steps where the forward pass was not found: draw nothing there
        v = np.asarray([np.nan if y is None else y for y in series[k]], dtype=float)[:n] * 1e3
        v = np.nan_to_num(np.pad(v, (0, n - v.size)), nan=0.0)
        if not v.any():  # a part never used (graph launches without CUDA graphs): keep the legend short
            continue
        ax.bar(x, v, bottom=bottom, width=1.0, color=colors[k], label=labels[k], linewidth=0)
        bottom += v
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("decode step (last traced iteration)")
    ax.set_ylabel("time [ms]")
    what = "CUDA API part" if api else "generate-loop segment"
    ax.set_title(f"host time per decode step by {what}")
    # below the axes: the segments' labels are long, and the bars fill the plot
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    ax.grid(alpha=0.3, axis="y")
    return png(fig)


def api_table(host: dict[str, Any], table: Callable[..., str]) -> list[str]:
    api = host.get("api") or {}
    if not api.get("available"):
        return [_unavailable("CUDA API breakdown", api, "no CUDA API records")]
    step = (host.get("step_s") or {}).get("mean")
    parts, calls = api.get("parts_s") or {}, api.get("calls_per_step") or {}
    # parts never used (no graph launch, no memset) are left out; the rest still adds up to the step
    used = [p for p in PARTS if p in parts and (parts[p] or calls.get(p) or p in ("launch", "sync", "python_framework"))]
    rows = [[PART_LABELS.get(p, p), _ms(parts.get(p)), _share(parts.get(p), step),
             "-" if calls.get(p) is None else f"{calls[p]:,.1f}"] for p in used]
    rows.append(["decode step", _ms(step), _share(step, step), ""])
    out = ["<h4>by CUDA API call (measured thread)</h4>",
           table(["part", "ms/step", "share of the step", "calls/step"], rows)]
    bits = []
    launch, delay = api.get("launch_s") or {}, api.get("launch_to_kernel_s") or {}
    if launch.get("mean") is not None:
        bits.append(f"a kernel launch costs {launch['mean'] * 1e6:.1f} us on the host (mean)")
    if delay.get("p50") is not None:
        bits.append(f"its kernel starts {delay['p50'] * 1e6:.1f} us after the call (median)")
    if api.get("gpu_waiting_share") is not None:
        bits.append(f"{api['gpu_waiting_share']:.0%} of kernels started on an idle stream (the GPU waiting for the host)")
    if bits:
        out.append(f'<p class="muted">{_esc("; ".join(bits))}</p>')
    return out


def loop_table(host: dict[str, Any], table: Callable[..., str]) -> list[str]:
    loop = host.get("loop") or {}
    if not loop.get("available"):
        return [_unavailable("generate-loop segments", loop, "no forward pass found among the module marks")]
    step = (host.get("step_s") or {}).get("mean")
    parts = loop.get("parts_s") or {}
    rows = [[LOOP_LABELS.get(p, p), _ms(parts.get(p)), _share(parts.get(p), step)] for p in LOOP_PARTS if p in parts]
    if loop.get("outside_forward_s") is not None:
        rows.append(["outside the forward pass", _ms(loop["outside_forward_s"]), _share(loop["outside_forward_s"], step)])
    return ["<h4>by generate-loop segment</h4>", table(["segment", "ms/step", "share of the step"], rows)]


def module_table(host: dict[str, Any], table: Callable[..., str]) -> list[str]:
    mods = host.get("modules") or {}
    if not mods.get("available"):
        return [_unavailable("module breakdown", mods, "no module marks")]
    rows = sorted(mods.get("rows") or [], key=lambda r: -(r.get("self_s_per_step") or 0.0))
    out = [f"<h4>by module (top {min(TOP_MODULES, len(rows))} of {len(rows)} by self time)</h4>"]
    out.append(table(["module", "kind", "calls/step", "ms/step (inclusive)", "ms/step (self)"],
                     [[r["name"] or "model", r.get("kind"),
                       "-" if r.get("calls_per_step") is None else f"{r['calls_per_step']:,.1f}",
                       _ms(r.get("s_per_step")), _ms(r.get("self_s_per_step"))] for r in rows[:TOP_MODULES]], left=2))
    by_kind = sorted(((v, k) for k, v in (mods.get("self_s_by_kind") or {}).items() if v), reverse=True)
    if by_kind:
        text = "self time by kind: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for v, k in by_kind)
        if mods.get("forward_s") is not None:
            text += f" (forward pass {mods['forward_s'] * 1e3:.3f} ms)"
        out.append(f'<p class="muted">{_esc(text)}</p>')
    if mods.get("dropped"):
        out.append(f'<p class="warn">{mods["dropped"]:,} module marks were lost past the buffer\'s capacity: '
                   "the module figures are incomplete</p>")
    return out


def host_section(host: dict[str, Any] | None, *, plt: Callable[[], Any], png: Callable[[Any], str],
                 table: Callable[..., str]) -> list[str]:
    """The HTML parts of one run's host breakdown (empty without a host section). ``plt()`` gives
    matplotlib's pyplot, ``png(fig)`` embeds a figure, ``table(header, rows, left=)`` renders a table."""
    if not host:
        return []
    parts = ["<h3>Host time per decode step</h3>"]
    if not host.get("available"):
        return parts + [_unavailable("host breakdown", host, "not traced")]
    line = summary_line(host)
    if line:
        parts.append(f"<p>{_esc(line[0].upper() + line[1:])}.</p>")
    note = f"{host.get('iterations', 0)} traced iteration(s), {host.get('decode_steps', 0)} decode steps; " \
           "figures are means per decode step"
    if host.get("added_s_per_step") is not None and host.get("itl_s_untraced"):
        added = host["added_s_per_step"]
        note += (f"; a traced step took {added * 1e3:+.3f} ms against the untraced ITL of "
                 f"{host['itl_s_untraced'] * 1e3:.3f} ms "
                 + ("(the tracing's cost)" if added >= 0 else
                    "(faster traced than untraced: the machine's speed changed more than tracing costs)"))
    parts.append(f'<p class="muted">{_esc(note)}</p>')
    chart = host_chart(host, plt(), png) if host.get("per_step") else None
    if chart:
        parts.append(chart)
    return parts + api_table(host, table) + loop_table(host, table) + module_table(host, table)
