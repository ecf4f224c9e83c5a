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
        k = _serving.keep_up_of(s)
        # A rate without a steady state has no share worth showing (its completions came bunched).
        kept = "unsteady" if k["steady"] is False else f(k["served_share"], 100, "{:.0f}")
        c = s.get("counts") or {}
        q = {m: summ.get(m) or {} for m in ("ttft_s", "itl_s", "e2e_s")}
        out.append([
            f(s.get("rate"), fmt="{:g}") if s.get("rate") is not None else str(s.get("arrival")),
            str(c.get("total", 0)), str(c.get("finished", 0)), str(c.get("running", 0) + c.get("queued", 0)),
            str(c.get("failed", 0)), f(s.get("request_throughput_per_s")), kept,
            f(s.get("output_token_throughput_per_s"), fmt="{:,.1f}"), f(s.get("goodput_per_s")),
            f(q["ttft_s"].get("p50"), 1e3), f(q["ttft_s"].get("p99"), 1e3), f(q["itl_s"].get("p50"), 1e3),
            f(q["itl_s"].get("p99"), 1e3), f(q["e2e_s"].get("p99"), fmt="{:,.3f}"),
            f((s.get("occupancy") or {}).get("mean_generating")),
        ])
    return out


def _figures(p: dict[str, Any]) -> str:
    """A curve point's share, served and output throughput and p99 TTFT, for the knee's line."""
    parts = [f"kept up {p['served_share']:.0%}" if p.get("served_share") is not None else None,
             f"{p['request_throughput_per_s']:,.2f} req/s" if p.get("request_throughput_per_s") is not None else None,
             f"{p['output_token_throughput_per_s']:,.1f} out tok/s"
             if p.get("output_token_throughput_per_s") is not None else None,
             f"p99 TTFT {p['ttft_s_p99'] * 1e3:,.1f} ms" if p.get("ttft_s_p99") is not None else None]
    return ", ".join(x for x in parts if x)


def knee_text(c: dict[str, Any]) -> str:
    """One line: the knee (with the figures it rests on) and the saturation rate of a curve."""
    share = c.get("knee_served_share", _serving.KNEE_SERVED_SHARE)
    at = {p["rate"]: p for p in c.get("points", [])}
    if c.get("knee_rate") is not None:
        knee = (f"knee at {c['knee_rate']:g} req/s, the highest rate whose completions kept up with >= {share:.0%} "
                f"of its arrivals ({_figures(at[c['knee_rate']])}); at {c['behind_rate']:g} req/s "
                f"{_figures(at[c['behind_rate']])}")
    elif c.get("behind_rate") is not None:
        knee = (f"no knee: even the lowest rate with a steady state, {c['behind_rate']:g} req/s, was served at less "
                f"than {share:.0%} of its load ({_figures(at[c['behind_rate']])})")
    elif c.get("kept_up_rate") is not None:
        knee = (f"no knee reached: every rate with a steady state kept up with >= {share:.0%} of its arrivals, up to "
                f"{c['kept_up_rate']:g} req/s ({_figures(at[c['kept_up_rate']])}); the knee lies higher")
    else:
        knee = "no knee: no rate had a steady state with a known share"
    unsteady = c.get("unsteady_rates") or []
    if unsteady:
        knee += f"; left out, without a steady state: {', '.join(f'{r:g}' for r in unsteady)} req/s"
    if c.get("saturation_rate") is not None:
        sat = (f"p99 TTFT exceeds {c['saturation_factor']:g}x its low-load value "
               f"({c['low_load_ttft_p99_s'] * 1e3:.1f} ms) from {c['saturation_rate']:g} req/s")
    else:
        sat = f"p99 TTFT stays within {c.get('saturation_factor', 10):g}x its low-load value at every rate"
    return f"{knee}; {sat}"


def unsteady_lines(c: dict[str, Any]) -> list[str]:
    """One line per rate without a steady state: what its arrivals spanned against the request
    latency, and the requests or arrival time that would give one."""
    out = []
    for p in c.get("points", []):
        if p.get("steady") is not False:
            continue
        n = p.get("num_requests")
        line = (f"rate {p['rate']:g} req/s has no steady state: its {n if n is not None else ''} arrivals "
                f"spanned {p['arrival_span_s']:,.2f} s, less than {c['steady_latencies']:g} request latencies "
                f"({c['steady_latencies']:g} x {p['service_s']:,.2f} s, the median time in service): the requests "
                "were in the batch together, and its completion rate does not show what the server sustains; left "
                "out of the knee. ")
        if p.get("steady_requests") is not None:
            line += (f"About {p['steady_requests']:,} requests (--num-requests) or --duration "
                     f"{p['steady_duration_s']:.3g} at this rate would give one")
        else:
            line += "A burst never gives one: use --arrival poisson or fixed with --rate"
        out.append(" ".join(line.split()))
    return out


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
    for line in unsteady_lines(c):
        console.print(f"[yellow]note:[/yellow] {escape(line)}", highlight=False)
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
    parts += [f'<p class="muted">{esc(line)}</p>' for line in unsteady_lines(c)]
    chart = _chart(c)
    if chart:
        parts.append(chart)
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in r) + "</tr>" for r in rows(sweep))
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(parts)
