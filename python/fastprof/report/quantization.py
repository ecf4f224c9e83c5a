"""The quantization view of a sweep (``fastprof run --quantization ...``): latency and throughput
per method side by side, and throughput against batch size with one line per method.

Shown when the sweep holds a quantized configuration. Each row is one configuration that ran:
the method, its backend version, the bytes its weights occupy, TTFT p50, ITL p50 and p99, decode
throughput, MBU and the decode step against the bf16/fp16 baseline of the same other settings.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

from fastprof.results.layout import Column, console_width, fit_tables
from fastprof.results.sweep import Run, Sweep

HEADER = ("method", "weights MB", "TTFT p50 ms", "ITL p50 ms", "ITL p99 ms", "decode tok/s", "MBU %",
          "ITL vs none")


def method_of(run: Run) -> str:
    return str(run.config.get("quantization") or "none")


def quantized_runs(sweep: Sweep) -> list[Run]:
    """The generate runs that ran, when any of the sweep's configurations is quantized (else [])."""
    runs = [r for r in sweep.ok_runs if r.result is not None and r.result.kind == "generate"]
    if not any(method_of(r) != "none" for r in sweep.runs):
        return []
    return runs


def _others(sweep: Sweep, run: Run) -> tuple[tuple[str, str], ...]:
    """The run's values of the varying keys other than quantization (its group)."""
    return tuple((k, str(run.config.get(k))) for k in sweep.varying_keys if k != "quantization")


def _stat(run: Run, metric: str, key: str) -> float | None:
    s = (run.result.summary or {}).get(metric) or {}
    v = s.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def _fmt(v: float | None, scale: float = 1.0, spec: str = "{:,.3f}") -> str:
    return "-" if v is None else spec.format(v * scale)


def groups(sweep: Sweep) -> list[tuple[str, list[Run]]]:
    """The quantized runs grouped by their other varying settings (label, runs by method order)."""
    order = list(dict.fromkeys(method_of(r) for r in sweep.runs))
    out: dict[tuple[tuple[str, str], ...], list[Run]] = {}
    for r in quantized_runs(sweep):
        out.setdefault(_others(sweep, r), []).append(r)
    return [(" ".join(f"{k}={v}" for k, v in key) or "all",
             sorted(runs, key=lambda r: order.index(method_of(r)))) for key, runs in out.items()]


def rows(sweep: Sweep) -> list[tuple[str, list[list[str]]]]:
    """Per group, one row per method (see :data:`HEADER`)."""
    out = []
    for label, runs in groups(sweep):
        base = next((r for r in runs if method_of(r) == "none"), None)
        base_itl = _stat(base, "itl_s", "p50") if base is not None else None
        table = []
        for r in runs:
            q = r.result.quantization or {}
            weights = q.get("weight_bytes")
            roof = r.result.roofline or {}
            itl = _stat(r, "itl_s", "p50")
            ratio = f"{itl / base_itl:.2f}x" if itl and base_itl and r is not base else ("1.00x" if r is base else "-")
            table.append([method_of(r), _fmt(weights, 1e-6, "{:,.1f}"),
                          _fmt(_stat(r, "ttft_s", "p50"), 1e3), _fmt(itl, 1e3), _fmt(_stat(r, "itl_s", "p99"), 1e3),
                          _fmt(_stat(r, "decode_tokens_per_s", "p50"), 1.0, "{:,.1f}"),
                          _fmt(roof.get("mbu") if roof.get("available", True) else None, 100.0, "{:.1f}"), ratio])
        out.append((label, table))
    return out


def backends(sweep: Sweep) -> str:
    """The backends and versions the sweep's methods ran on ('' when none)."""
    seen = {}
    for r in quantized_runs(sweep):
        q = r.result.quantization or {}
        if q.get("backend"):
            seen[q["backend"]] = f"{q['backend']} {q.get('backend_version') or '(version unknown)'}"
    return ", ".join(seen.values())


def print_quantization(sweep: Sweep, console: Any) -> None:
    """The per-method tables on ``console`` (nothing when no configuration is quantized)."""
    from rich.markup import escape

    grouped = rows(sweep)
    if not grouped:
        return
    console.print("[bold]quantization[/bold] (medians; ITL vs none: the decode step against the unquantized "
                  "model of the same settings)", highlight=False)
    if backends(sweep):
        console.print(escape(f"backends: {backends(sweep)}"), highlight=False)
    columns = [Column(h, justify="left" if i == 0 else "right", key=i == 0) for i, h in enumerate(HEADER)]
    for label, table in grouped:
        for t in fit_tables(columns, table, width=console_width(console), title=escape(label)):
            console.print(t)


def _chart(sweep: Sweep) -> str | None:
    """Decode throughput against batch size, one line per method (per other setting)."""
    runs = quantized_runs(sweep)
    sizes = sorted({int(r.config.get("batch_size", 0)) for r in runs})
    if len(sizes) < 2:
        return None
    from fastprof.report.charts import png_img, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), squeeze=False)
    others = [k for k in sweep.varying_keys if k not in ("quantization", "batch_size")]
    lines: dict[str, list[Run]] = {}
    for r in runs:
        rest = " ".join(f"{k}={r.config.get(k)}" for k in others)
        lines.setdefault(f"{method_of(r)}{' ' + rest if rest else ''}", []).append(r)
    for ax, (metric, title, scale, unit) in zip(axes[0], (("decode_tokens_per_s", "decode throughput", 1.0, "tok/s"),
                                                          ("itl_s", "inter-token latency", 1e3, "ms"))):
        for name, group in lines.items():
            pts = [(int(r.config["batch_size"]), _stat(r, metric, "p50"), _stat(r, metric, "ci95_low"),
                    _stat(r, metric, "ci95_high")) for r in sorted(group, key=lambda r: int(r.config["batch_size"]))]
            pts = [p for p in pts if p[1] is not None]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1] * scale for p in pts]
            err = [[(p[1] - p[2]) * scale if p[2] is not None else 0.0 for p in pts],
                   [(p[3] - p[1]) * scale if p[3] is not None else 0.0 for p in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"{title} median [{unit}]")
        ax.set_title(f"{title} against batch size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_img(fig)


def quantization_html(sweep: Sweep) -> str:
    """The HTML section ('' when no configuration is quantized)."""
    grouped = rows(sweep)
    if not grouped:
        return ""
    esc = html.escape
    parts = ["<h2>Quantization</h2>",
             '<p class="muted">medians; weights: the bytes the weights occupy (quantized storage and scales); '
             "ITL vs none: the decode step against the unquantized model of the same settings"
             f"{'; backends: ' + esc(backends(sweep)) if backends(sweep) else ''}</p>"]
    chart = _chart(sweep)
    if chart:
        parts.append(chart)
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    for label, table in grouped:
        body = "".join("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in r) + "</tr>" for r in table)
        parts.append(f"<h3>{esc(label)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(parts)


def methods_compared(a: Sequence[Run], b: Sequence[Run]) -> list[str]:
    """Lines for a comparison whose sides differ in quantization: what each side ran."""
    def describe(runs: Sequence[Run]) -> str:
        seen = {}
        for r in runs:
            q = (r.result.quantization if r.result is not None else None) or {}
            m = method_of(r)
            if m not in seen:
                what = m if not q.get("backend") else f"{m} ({q['backend']} {q.get('backend_version') or '?'})"
                if q.get("weight_bytes"):
                    what += f", weights {q['weight_bytes'] / 1e6:,.1f} MB"
                seen[m] = what
        return "; ".join(seen.values())
    left, right = describe(a), describe(b)
    return [] if left == right else [f"baseline: {left}", f"other: {right}"]
