"""The serving curve: latency percentiles and throughput against offered load, with the knee.

Console (:func:`print_serving`) and HTML (:func:`serving_html`) views of the runs of kind
``serving`` in a sweep (``fastprof run --serving --rate ...``); the figures come from each run's
``serving`` section and :func:`fastprof.analysis.serving.curve`.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from fastprof.analysis import serving as _serving
from fastprof.results.layout import Column, console_width, fit_tables
from fastprof.results.sweep import Run, Sweep

HEADER = ("rate req/s", "requests", "done", "running", "failed", "req/s", "kept up %", "out tok/s", "goodput req/s",
          "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms", "E2E p99 s", "mean generating")


def serving_runs(sweep: Sweep) -> list[Run]:
    """The runs of kind ``serving`` that ran, in rate order."""
    runs = [r for r in sweep.ok_runs if r.result is not None and r.result.kind == "serving" and r.result.serving]
    return sorted(runs, key=lambda r: (r.result.serving.get("rate") is None, r.result.serving.get("rate") or 0))


def curve(sweep: Sweep) -> dict[str, Any]:
    """The serving curve of the sweep's serving runs (see :func:`fastprof.analysis.serving.curve`)."""
    return _serving.curve({**r.result.serving, "summary": r.result.summary} for r in serving_runs(sweep))


def rows(sweep: Sweep) -> list[list[str]]:
    """One row of :data:`HEADER` per serving run."""
    def f(v: Any, scale: float = 1.0, fmt: str = "{:,.2f}") -> str:
        return "-" if v is None else fmt.format(v * scale)

    out = []
    for run in serving_runs(sweep):
        s, summ = run.result.serving, run.result.summary
        c = s.get("counts") or {}
        q = {m: summ.get(m) or {} for m in ("ttft_s", "itl_s", "e2e_s")}
        out.append([
            f(s.get("rate"), fmt="{:g}") if s.get("rate") is not None else str(s.get("arrival")),
            str(c.get("total", 0)), str(c.get("finished", 0)), str(c.get("running", 0) + c.get("queued", 0)),
            str(c.get("failed", 0)), f(s.get("request_throughput_per_s")), f(s.get("served_share"), 100, "{:.0f}"),
            f(s.get("output_token_throughput_per_s"), fmt="{:,.1f}"), f(s.get("goodput_per_s")),
            f(q["ttft_s"].get("p50"), 1e3), f(q["ttft_s"].get("p99"), 1e3), f(q["itl_s"].get("p50"), 1e3),
            f(q["itl_s"].get("p99"), 1e3), f(q["e2e_s"].get("p99"), fmt="{:,.3f}"),
            f((s.get("occupancy") or {}).get("mean_generating")),
        ])
    return out


def knee_text(c: dict[str, Any]) -> str:
    """One line: the knee and the saturation rate of a curve."""
    knee = (f"knee at {c['knee_rate']:g} req/s (the highest rate whose completions kept up with >= "
            f"{c['knee_served_share']:.0%} of its arrivals)" if c.get("knee_rate") is not None else "no knee: even the lowest rate was not served at "
            f"{c.get('knee_served_share', 0.9):.0%} of its load")
    if c.get("saturation_rate") is not None:
        sat = (f"p99 TTFT exceeds {c['saturation_factor']:g}x its low-load value "
               f"({c['low_load_ttft_p99_s'] * 1e3:.1f} ms) from {c['saturation_rate']:g} req/s")
    else:
        sat = f"p99 TTFT stays within {c.get('saturation_factor', 10):g}x its low-load value at every rate"
    return f"{knee}; {sat}"


def print_serving(sweep: Sweep, *, console: Any = None, warnings: bool = True) -> None:
    """The serving curve as a console table, the knee, failed rates and (``warnings``) each run's warnings."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    runs = serving_runs(sweep)
    if not runs:
        return
    c = curve(sweep)
    columns = [Column(h, key=i == 0) for i, h in enumerate(HEADER)]
    styles = ["bold" if run.result.serving.get("rate") is not None and run.result.serving.get("rate") ==
              c.get("knee_rate") else None for run in runs]
    for t in fit_tables(columns, rows(sweep), width=console_width(console), row_styles=styles,
                        title="serving curve (latency and throughput against offered load)"):
        console.print(t)
    if len(runs) > 1:
        console.print(f"[bold]knee[/bold]: {escape(knee_text(c))}", highlight=False)
    if not warnings:
        return
    for run in sweep.runs:
        if run.result is None:
            err = run.error or {}
            console.print(f"[red]failed {escape(run.label())}: {escape(str(err.get('type')))}: "
                          f"{escape(str(err.get('message')))}[/red]", highlight=False)
    from fastprof.results.warnings import grouped

    for w in grouped((f"rate {run.result.serving.get('rate'):g}/s", w) for run in runs for w in run.result.warnings):
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)


def _chart(c: dict[str, Any]) -> str | None:
    pts = c["points"]
    if len(pts) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rates = [p["rate"] for p in pts]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key, label, style in (("ttft_s_p50", "TTFT p50", "o-"), ("ttft_s_p99", "TTFT p99", "o--"),
                              ("itl_s_p50", "ITL p50", "s-"), ("itl_s_p99", "ITL p99", "s--")):
        ys = [p[key] * 1e3 if p[key] is not None else float("nan") for p in pts]
        ax1.plot(rates, ys, style, label=label)
    ax1.set_yscale("log")
    ax1.set_xlabel("offered load (requests/s)")
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("latency percentiles")
    ax2.plot(rates, [p["request_throughput_per_s"] or 0 for p in pts], "o-", label="served req/s")
    ax2.plot(rates, [p["goodput_per_s"] or 0 for p in pts], "^--", label="goodput req/s")
    ax2.plot(rates, rates, ":", color="grey", label="offered")
    ax2.set_xlabel("offered load (requests/s)")
    ax2.set_ylabel("requests/s")
    ax2.set_title("throughput")
    for ax in (ax1, ax2):
        if c.get("knee_rate") is not None:
            ax.axvline(c["knee_rate"], color="tab:red", alpha=0.6, label="knee")
        if c.get("saturation_rate") is not None:
            ax.axvline(c["saturation_rate"], color="tab:purple", linestyle="--", alpha=0.6,
                       label=f"p99 TTFT > {c['saturation_factor']:g}x")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="serving curve" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'


def serving_html(sweep: Sweep) -> str:
    """The HTML section of the serving curve ('' when the sweep has no serving run)."""
    if not serving_runs(sweep):
        return ""
    c = curve(sweep)
    esc = html.escape
    parts = ["<h2>Serving curve</h2>", f'<p class="verdict">{esc(knee_text(c))}</p>']
    chart = _chart(c)
    if chart:
        parts.append(chart)
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in r) + "</tr>" for r in rows(sweep))
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(parts)
