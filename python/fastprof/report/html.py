"""The HTML report of a results file: one self-contained page.

Charts are PNG images embedded as base64 (matplotlib, Agg backend), styles are inline, there is
no script and nothing is fetched from the network.
"""

from __future__ import annotations

import html
import json
from typing import Any, Iterable, Sequence

import numpy as np

from fastprof.report.charts import png_img, pyplot
from fastprof.report.host_html import host_section
from fastprof.report.kernels_html import kernel_section
from fastprof.report.tables import (
    DEFAULT_METRICS,
    _env_line,
    _metric_unit,
    all_warnings,
    available_metrics,
    stat_text,
    table_data,
)
from fastprof.results.io import write_atomic
from fastprof.results.sweep import Run, Sweep
from fastprof.results.units import display_unit, metric_label

# ---- charts ---------------------------------------------------------------------------------


def _token_latency_chart(run: Run) -> str | None:
    plt = pyplot()
    traces = run.result.traces()
    if not traces or not any(t.n_marks for t in traces):
        return None
    fig, ax = plt.subplots(figsize=(8, 3.2))
    all_vals = []
    for i, t in enumerate(traces):
        if not t.n_marks:
            continue
        marks = (t.host_marks_ns - t.host_start_ns).astype(np.float64)
        lat = np.diff(np.concatenate([[0.0], marks])) * 1e-6
        all_vals.append(lat)
        ax.plot(np.arange(1, lat.size + 1), lat, lw=0.8, alpha=0.6, marker="." if lat.size < 40 else None,
                label=f"iteration {i}" if len(traces) <= 8 else None)
    flat = np.concatenate(all_vals)
    if flat.size and flat.min() > 0 and flat.max() / flat.min() > 20:
        ax.set_yscale("log")
    # Slow tokens, coloured by their main cause (see fastprof.analysis.stalls).
    colours = {"gc": "#d62728", "cpu_wait": "#ff7f0e", "recompile": "#9467bd", "allocator": "#8c564b",
               "gpu_throttle": "#e377c2", "gpu_process": "#17becf", "unexplained": "#7f7f7f"}
    by_cause: dict[str, list[tuple[int, float]]] = {}
    for tok in ((run.result.stalls or {}).get("slow_tokens") or []):
        it, k = int(tok["iteration"]), int(tok["token"])
        cause = tok["causes"][0]["kind"] if tok["causes"] else "unexplained"
        by_cause.setdefault(cause, []).append((k + 1, tok["gap_s"] * 1e3))
    for cause, pts in by_cause.items():
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, s=36, facecolors="none", edgecolors=colours.get(cause, "k"), linewidths=1.5, zorder=4,
                   label=f"slow: {cause}")
    ax.set_xlabel("token (1 = time to first token, then inter-token gaps)")
    ax.set_ylabel("latency [ms]")
    ax.set_title("per-token latency, every measured iteration (host clock)")
    ax.grid(alpha=0.3)
    if len(traces) <= 8 or by_cause:
        ax.legend(fontsize=7, ncol=4)
    return png_img(fig)


def _itl_chart(run: Run) -> str | None:
    plt = pyplot()
    gaps = [np.diff(t.host_marks_ns).astype(np.float64) * 1e-6 for t in run.result.traces() if t.n_marks >= 2]
    if not gaps:
        return None
    itl = np.concatenate(gaps)
    fig, (h, c) = plt.subplots(1, 2, figsize=(9, 3.2))
    h.hist(itl, bins=min(60, max(10, itl.size // 5)), color="#4c72b0")
    h.set_xlabel("inter-token latency [ms]")
    h.set_ylabel("tokens")
    h.set_title(f"ITL histogram ({itl.size} gaps)")
    xs = np.sort(itl)
    c.plot(xs, np.arange(1, xs.size + 1) / xs.size, color="#4c72b0")
    c.set_xlabel("inter-token latency [ms]")
    c.set_ylabel("fraction of tokens")
    c.set_title("ITL CDF")
    for q, style in ((50, "--"), (99, ":")):
        v = float(np.percentile(itl, q))
        for ax in (h, c):
            ax.axvline(v, color="#c44e52", ls=style, lw=1, label=f"p{q} {v:.3g} ms")
    c.legend(fontsize=7)
    for ax in (h, c):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_img(fig)


_GPU_SERIES = (("gpu_util_pct", "GPU utilisation [%]", 1.0), ("dram_bw_util_pct", "DRAM bandwidth [%] (GPM)", 1.0),
               ("tensor_active_pct", "tensor pipes active [%] (GPM)", 1.0), ("power_w", "power [W]", 1.0),
               ("mem_used_bytes", "memory used [GiB]", 1 / 2**30), ("sm_clock_mhz", "SM clock [MHz]", 1.0),
               ("mem_clock_mhz", "memory clock [MHz]", 1.0), ("temperature_c", "temperature [C]", 1.0))


def _gpu_timeline_chart(run: Run) -> str | None:
    hw = run.result.hardware or {}
    samples = hw.get("samples") or {}
    ts = np.asarray(samples.get("timestamps_ns") or [], dtype=np.int64)
    if not hw.get("available") or ts.size == 0:
        return None
    series = []
    for key, label, scale in _GPU_SERIES:
        values = samples.get(key)
        if values is None:
            continue
        arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64) * scale
        if np.isfinite(arr).any():
            series.append((label, arr))
    if not series:
        return None
    plt = pyplot()
    traces = run.result.traces()
    t0 = min([t.host_start_ns for t in traces] + [int(ts.min())])
    x = (ts - t0) * 1e-9
    device = np.asarray(samples.get("device") or [0] * ts.size)
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 1.7 * len(series) + 0.6), sharex=True, squeeze=False)
    marks = np.concatenate([(t.host_marks_ns - t0) * 1e-9 for t in traces]) if traces else np.array([])
    for ax, (label, arr) in zip(axes[:, 0], series):
        for t in traces:
            s, e = (t.host_start_ns - t0) * 1e-9, (t.host_end_ns - t0) * 1e-9
            f = (t.host_marks_ns[0] - t0) * 1e-9 if t.n_marks else e
            ax.axvspan(s, f, color="#dd8452", alpha=0.25, lw=0)
            ax.axvspan(f, e, color="#4c72b0", alpha=0.12, lw=0)
        for d in sorted(set(device.tolist())):
            sel = (device == d) & np.isfinite(arr)
            ax.plot(x[sel], arr[sel], lw=1, marker="." if sel.sum() < 60 else None, ms=3,
                    label=f"device {d}" if len(set(device.tolist())) > 1 else None)
        if marks.size:
            ax.vlines(marks, 0.93, 1.0, transform=ax.get_xaxis_transform(), color="k", lw=0.4, alpha=0.5)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    from matplotlib.patches import Patch

    axes[0, 0].legend(handles=[Patch(color="#dd8452", alpha=0.5, label="prefill"),
                               Patch(color="#4c72b0", alpha=0.3, label="decode"),
                               Patch(color="k", label="token marks (top ticks)")], fontsize=7, ncol=3, loc="lower right")
    axes[0, 0].set_title(f"GPU counters every {hw.get('interval_ms')} ms ({hw.get('backend')}), shaded by phase")
    axes[-1, 0].set_xlabel("time since the first measured iteration started [s] (CLOCK_MONOTONIC)")
    fig.tight_layout()
    return png_img(fig)


def _roofline_chart(run: Run) -> str | None:
    """The decode step on the GPU's roofline (FLOP/s against FLOPs per byte, both logarithmic) and
    its bandwidth against the peak: over the whole step, over GPU busy time, as the DRAM counters
    measured it."""
    roof = run.result.roofline or {}
    gpu = roof.get("gpu") or {}
    bw, peak = gpu.get("peak_bandwidth_bytes_per_s"), gpu.get("peak_tensor_flops")
    intensity = roof.get("arithmetic_intensity_flops_per_byte")
    if not roof.get("available") or not bw or not intensity or roof.get("itl_s") is None:
        return None
    plt = pyplot()
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    lo = min(intensity, (peak or bw) / bw) / 20
    hi = max(intensity, (peak / bw) if peak else intensity) * 20
    x = np.geomspace(lo, hi, 200)
    ax.plot(x, np.minimum(bw * x, peak) if peak else bw * x, color="k", lw=1.5,
            label=f"roof: {bw / 1e12:.2f} TB/s" + (f", {peak / 1e12:.0f} TFLOP/s" if peak else ""))
    ax.scatter([intensity], [roof["achieved_flops"]], color="#c44e52", zorder=3, label="decode step (whole step)")
    busy = roof.get("gpu_busy_s_per_step")
    if busy:
        ax.scatter([intensity], [roof["flops_per_step"] / busy], color="#4c72b0", marker="s", zorder=3,
                   label="decode step (GPU busy time)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity [FLOPs per byte]")
    ax.set_ylabel("FLOP/s")
    ax.set_title("roofline position")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    rows = [("peak", bw, "#999999"), ("achieved (whole step)", roof["bytes_per_step"] / roof["itl_s"], "#c44e52")]
    if busy:
        rows.append(("achieved (GPU busy)", roof["bytes_per_step"] / busy, "#4c72b0"))
    if roof.get("measured_dram_util_pct") is not None:
        rows.append(("DRAM counters (GPM)", roof["measured_dram_util_pct"] / 100.0 * bw, "#55a868"))
    labels, values, colors = zip(*rows)
    ys = np.arange(len(values))[::-1]
    bars.barh(ys, np.asarray(values) / 1e9, color=colors)
    for y, v in zip(ys, values):
        bars.text(v / 1e9, y, f" {v / bw:.0%}", va="center", fontsize=8)
    bars.set_yticks(ys)
    bars.set_yticklabels(labels, fontsize=8)
    bars.set_xlabel("memory bandwidth [GB/s]")
    bars.set_title(f"ideal step {roof['ideal_step_s'] * 1e3:.3f} ms vs ITL {roof['itl_s'] * 1e3:.3f} ms")
    bars.set_xlim(0, max(values) / 1e9 * 1.2)
    bars.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return png_img(fig)


def _roofline_table(roof: dict[str, Any]) -> str:
    def num(v: Any, scale: float = 1.0, fmt: str = "{:,.3f}") -> str:
        return "-" if v is None else fmt.format(v * scale)

    gpu = roof.get("gpu") or {}
    rows = [
        ["bytes per decode step [MB]", num(roof.get("bytes_per_step"), 1e-6, "{:,.1f}")],
        ["  weights [MB]", num(roof.get("weight_bytes_per_step"), 1e-6, "{:,.1f}")],
        ["  KV cache, mean over steps [MB]", num(roof.get("kv_cache_bytes_mean"), 1e-6, "{:,.2f}")],
        ["FLOPs per token [GFLOP]", num(roof.get("flops_per_token"), 1e-9)],
        ["arithmetic intensity [FLOPs/byte]", num(roof.get("arithmetic_intensity_flops_per_byte"), 1, "{:,.2f}")],
        ["peak bandwidth [TB/s]", num(gpu.get("peak_bandwidth_bytes_per_s"), 1e-12)],
        ["peak dense tensor FLOP/s [TFLOP/s]", num(gpu.get("peak_tensor_flops"), 1e-12, "{:,.0f}")],
        ["ITL, mean [ms]", num(roof.get("itl_s"), 1e3)],
        ["ideal step at full bandwidth [ms]", num(roof.get("ideal_step_s"), 1e3)],
        ["MBU (whole step)", num(roof.get("mbu"), 100, "{:.1f}%")],
        ["MBU (GPU busy time)", num(roof.get("mbu_busy"), 100, "{:.1f}%")],
        ["DRAM bandwidth, GPU counters (decode)", num(roof.get("measured_dram_util_pct"), 1, "{:.1f}%")],
        ["MFU (whole step)", num(roof.get("mfu"), 100, "{:.2f}%")],
        ["MFU (GPU busy time)", num(roof.get("mfu_busy"), 100, "{:.2f}%")],
    ]
    return _html_table(["roofline", "value"], rows, left=1)


def _sweep_chart(sweep: Sweep, axis: str, metrics: Sequence[str], clock: str) -> str | None:
    """Median (with its 95% interval) of ``metrics`` against ``axis``, one line per combination of
    the other varying keys; None unless ``axis`` takes two values or more among the runs that worked."""
    runs = [r for r in sweep.ok_runs if axis in r.config]
    values = sorted({r.config[axis] for r in runs}, key=lambda v: (str(type(v)), v))
    if len(values) < 2:
        return None
    others = [k for k in sweep.varying_keys if k != axis]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.2), squeeze=False)
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(" ".join(f"{k}={r.config.get(k)}" for k in others) or "all", []).append(r)
    for ax, metric in zip(axes[0], metrics):
        unit, scale = _metric_unit(sweep, metric, clock)
        for name, group in groups.items():
            pts = []
            for r in sorted(group, key=lambda r: r.config[axis]):
                table = r.result.summary if clock == "host" else r.result.device_summary
                s = (table or {}).get(metric) or {}
                if s.get("p50") is not None:
                    lo, hi = s.get("ci95_low"), s.get("ci95_high")
                    pts.append((r.config[axis], s["p50"] * scale,
                                (s["p50"] - lo) * scale if lo is not None else 0.0,
                                (hi - s["p50"]) * scale if hi is not None else 0.0))
            if pts:
                xs, ys, lo, hi = zip(*pts)
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name if len(groups) > 1 else None)
        if all(isinstance(v, (int, float)) for v in values):
            ax.set_xticks(values)
        ax.set_xlabel(axis)
        ax.set_ylabel(f"{metric_label(metric)} median [{unit}]")
        ax.set_title(f"{metric_label(metric)} against {axis}")
        ax.grid(alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return png_img(fig)


# ---- HTML -----------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}
tr.failed td{color:#a00}
.warn{background:#fff6e0;border-left:4px solid #e0a000;padding:.4em .8em;margin:.3em 0}
.muted{color:#666;font-size:.9em}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
code{background:#f3f3f3;padding:0 .2em}
.verdict{background:#eef3fb;border-left:4px solid #4c72b0;padding:.4em .8em}
"""


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _stalls_section(stalls: dict[str, Any] | None, top: int = 20) -> list[str]:
    """Slow tokens: the excess by cause, then the worst tokens with their causes."""
    if not stalls:
        return []
    slow = stalls.get("slow_tokens") or []
    parts = ["<h3>Slow tokens</h3>"]
    if not slow:
        parts.append('<p class="muted">no slow token (a gap above its iteration\'s median by more than the rule\'s '
                     "margin)</p>")
        return parts
    rows = [[k, str(v["count"]), f"{v['excess_s'] * 1e3:.2f}"] for k, v in (stalls.get("summary") or {}).items()
            if v.get("count")]
    rows.append(["unexplained", str(sum(1 for t in slow if not t["causes"])),
                 f"{stalls.get('unexplained_excess_s', 0.0) * 1e3:.2f}"])
    parts.append(_html_table(["cause", "slow tokens", "excess [ms]"], rows))
    worst = sorted(slow, key=lambda t: -t["excess_s"])[:top]
    parts.append(_html_table(["iteration", "token", "gap [ms]", "excess [ms]", "causes (overlap ms)"],
                             [[str(t["iteration"]), str(t["token"]), f"{t['gap_s'] * 1e3:.2f}",
                               f"{t['excess_s'] * 1e3:.2f}",
                               ", ".join(f"{c['kind']} {c['overlap_s'] * 1e3:.2f}" for c in t["causes"])
                               or "unexplained"] for t in worst]))
    missing = [f"{k}: {v.get('reason')}" for k, v in (stalls.get("sources") or {}).items()
               if isinstance(v, dict) and v.get("available") is False]
    if missing:
        parts.append(f'<p class="muted">not recorded here: {_esc("; ".join(missing))}</p>')
    return parts


def _html_table(header: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1, row_class: Any = None) -> str:
    out = ["<table><tr>" + "".join(f'<th class="{"l" if i < left else ""}">{_esc(h)}</th>'
                                   for i, h in enumerate(header)) + "</tr>"]
    for row in rows:
        cls = row_class(row) if row_class else ""
        out.append(f'<tr class="{cls}">' + "".join(f'<td class="{"l" if i < left else ""}">{_esc(c)}</td>'
                                                  for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, x in enumerate(d):
            out += _flatten(x, f"{prefix}[{i}]")
    else:
        out.append((prefix, json.dumps(d) if isinstance(d, (list, bool)) or d is None else str(d)))
    return out


def _run_stats_table(run: Run) -> str:
    header = ["clock", "metric", "n", "p50", "95% CI of p50", "mean", "p90", "p99", "max", "cv"]
    rows = []
    hw = run.result.hardware or {}
    tables = [("host", run.result.summary), ("device", run.result.device_summary),
              ("gpu", hw.get("summary") if hw.get("available") else None)]
    for clock, table in tables:
        for metric, s in (table or {}).items():
            if clock == "gpu" and not s.get("n"):
                continue
            # The console's units and digits (tables.stat_text): memory in GiB, not raw bytes.
            unit = display_unit(metric, s.get("p50"))
            f = lambda v, unit=unit: stat_text(v, unit)  # noqa: E731
            ci = f"{f(s.get('ci95_low'))} - {f(s.get('ci95_high'))}" if s.get("ci95_low") is not None else "-"
            rows.append([clock, f"{metric} [{unit[0]}]" if unit[0] else metric, str(s.get("n")), f(s.get("p50")),
                         ci, f(s.get("mean")), f(s.get("p90")), f(s.get("p99")), f(s.get("max")),
                         "-" if s.get("cv") is None else f"{s['cv']:.1%}"])
    return _html_table(header, rows, left=2)


def html_report(sweep: Sweep, *, metrics: Sequence[str] = DEFAULT_METRICS, stats: Sequence[str] = ("p50",),
                clock: str = "host", source: str | None = None) -> str:
    """The whole report as one HTML document (no scripts, no external resources)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>fastprof report{': ' + _esc(source) if source else ''}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>fastprof report{': <code>' + _esc(source) + '</code>' if source else ''}</h1>",
             f'<p class="muted">{len(sweep.runs)} configuration(s), {len(sweep.ok_runs)} ok; created '
             f"{_esc(sweep.created)}; schema version {sweep.schema_version}"
             f"{'' if sweep.complete else '; <b>incomplete sweep</b>'}</p>",
             f'<p class="muted">{_esc(_env_line(sweep.environment))}</p>']
    header, rows = table_data(sweep, metrics, stats, clock)
    st = header.index("status")
    parts.append(f"<h2>Configurations ({clock} clock)</h2>")
    parts.append(_html_table(header, rows, left=st + 1, row_class=lambda r: "" if r[st] == "ok" else "failed"))

    warnings = all_warnings(sweep)
    parts.append("<h2>Warnings</h2>")
    parts += [f'<div class="warn">{_esc(w)}</div>' for w in warnings] or ['<p class="muted">none</p>']

    from fastprof.report.serving import serving_html

    parts.append(serving_html(sweep))
    from fastprof.report.quantization import quantization_html

    parts.append(quantization_html(sweep))
    from fastprof.report.speculative import speculative_html

    parts.append(speculative_html(sweep, table=_html_table))
    sweep_charts = []
    for axis, ms in (("batch_size", ("throughput_tokens_per_s", "decode_tokens_per_s")),
                     ("prompt_len", ("throughput_tokens_per_s", "prefill_tokens_per_s", "ttft_s"))):
        ms = [m for m in ms if m in available_metrics(sweep, clock)]
        chart = _sweep_chart(sweep, axis, ms, clock) if ms else None
        if chart:
            sweep_charts.append(f"<h3>against {_esc(axis)}</h3>{chart}")
    if sweep_charts:
        parts.append("<h2>Throughput across the sweep</h2>")
        parts.append('<p class="muted">medians with their 95% bootstrap intervals</p>')
        parts += sweep_charts

    keys = sweep.varying_keys
    for run in sweep.runs:
        parts.append(f"<h2>Configuration {run.index}: {_esc(run.label(keys) if keys else run.label())}</h2>")
        parts.append('<p class="muted">' + _esc(", ".join(f"{k}={v}" for k, v in run.config.items())) + "</p>")
        if run.result is None:
            err = run.error or {}
            parts.append(f'<div class="warn">failed: {_esc(err.get("type"))}: {_esc(err.get("message"))}</div>')
            continue
        dt = run.result.device_timing
        if not dt.get("available"):
            parts.append(f'<p class="muted">device timing unavailable: {_esc(dt.get("reason"))}</p>')
        parts.append(_run_stats_table(run))
        for chart in (_token_latency_chart(run), _itl_chart(run)):
            if chart:
                parts.append(chart)
        verdict = run.result.verdict or {}
        roof = run.result.roofline or {}
        if verdict.get("text") or roof.get("available"):
            parts.append("<h3>Why decode takes this long</h3>")
            if verdict.get("text"):
                parts.append(f'<p class="verdict"><b>{_esc(verdict.get("verdict"))}</b>: {_esc(verdict["text"])}</p>')
            if roof.get("available"):
                chart = _roofline_chart(run)
                if chart:
                    parts.append(chart)
                parts.append(_roofline_table(roof))
                for reason in roof.get("reasons") or []:
                    parts.append(f'<p class="muted">{_esc(reason)}</p>')
            elif roof.get("reason"):
                parts.append(f'<p class="muted">roofline unavailable: {_esc(roof["reason"])}</p>')
        parts += _stalls_section(run.result.stalls)
        parts += kernel_section(getattr(run.result, "kernels", None), plt=pyplot, png=png_img, table=_html_table)
        parts += host_section(getattr(run.result, "host", None), plt=pyplot, png=png_img, table=_html_table)
        hw = run.result.hardware or {}
        gpu = _gpu_timeline_chart(run)
        if gpu:
            parts.append(gpu)
        elif hw:
            parts.append(f'<p class="muted">GPU samples unavailable: {_esc(hw.get("reason"))}</p>')
        for w in run.result.warnings:
            parts.append(f'<div class="warn">{_esc(w)}</div>')

    parts.append("<h2>Environment</h2>")
    parts.append(_html_table(["key", "value"], _flatten(sweep.environment), left=2))
    if sweep.command:
        parts.append(f'<p class="muted">command: <code>{_esc(" ".join(sweep.command))}</code></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(sweep: Sweep, path: str, **kwargs: Any) -> None:
    write_atomic(path, html_report(sweep, **kwargs))

