"""Speculative decoding in the console and the HTML report: per configuration, tokens per step,
acceptance, step time with the draft and the verification apart, and the speed-up against plain
decoding of the same run (:mod:`fastprof.analysis.speculative`)."""

from __future__ import annotations

from typing import Any

from fastprof.results.result import ms_text, ratio_text
from fastprof.results.sweep import Sweep

HEADER = ["#", "speculative", "tokens/step", "acceptance", "step [ms]", "draft [ms]", "verify [ms]",
          "speed-up e2e", "speed-up TPOT"]


def speculative_runs(sweep: Sweep) -> list[Any]:
    """The ok runs with a ``steps`` section, when at least one of them is speculative; else none."""
    runs = [r for r in sweep.ok_runs if r.result is not None and r.result.steps]
    return runs if any(r.result.steps.get("speculative") for r in runs) else []


def rows(sweep: Sweep) -> list[list[str]]:
    """One row per run of :func:`speculative_runs` under :data:`HEADER`."""
    out = []
    for run in speculative_runs(sweep):
        s = run.result.steps
        host = s.get("host") or {}
        acc = s.get("acceptance_rate")
        speed = s.get("speedup") or {}
        name = run.config.get("speculative") or s.get("method")
        out.append([str(run.index), str(name), f"{(s.get('tokens_per_step') or {}).get('mean') or 0:.2f}",
                    "-" if acc is None else f"{acc:.0%}", ms_text(host.get("step_s")), ms_text(host.get("draft_s")),
                    ms_text(host.get("verify_s")), ratio_text(speed.get("e2e_latency_s")), ratio_text(speed.get("tpot_s"))])
    return out


def print_speculative(sweep: Sweep, console: Any) -> None:
    """The speculative table of a sweep (nothing when no configuration is speculative)."""
    from rich.markup import escape

    from fastprof.results.layout import Column, console_width, fit_tables

    data = rows(sweep)
    if not data:
        return
    columns = [Column(h, justify="left" if i == 1 else "right", key=i <= 1) for i, h in enumerate(HEADER)]
    for t in fit_tables(columns, data, width=console_width(console),
                        title="speculative decoding (per decode step, host clock; speed-up: plain / speculative, "
                              "95% interval)"):
        console.print(t)
    console.print(escape("  tokens of one step reach the host together: each carries the step's time, so ITL "
                         "is per token (its mean is the time per token) and the step columns are per step"),
                  style="dim", highlight=False)


def _series(sweep: Sweep) -> dict[str, list[tuple[float, float, float | None]]]:
    """Per draft source (an assistant model, prompt lookup): (draft tokens proposed per step,
    tokens per step, acceptance rate) of each configuration, by draft tokens."""
    out: dict[str, list[tuple[float, float, float | None]]] = {}
    for run in speculative_runs(sweep):
        s = run.result.steps
        if not s.get("speculative") or s.get("proposed_per_step") is None:
            continue
        value = str(run.config.get("speculative") or s.get("method"))
        source = value.rpartition(" k=")[0] if " k=" in value else ("prompt lookup" if value.startswith("lookup=")
                                                                    else value)
        out.setdefault(source, []).append((float(s["proposed_per_step"]), float(s["tokens_per_step"]["mean"]),
                                           s.get("acceptance_rate")))
    return {k: sorted(v) for k, v in out.items()}


def _acceptance_chart(sweep: Sweep, plt: Any, png: Any) -> str | None:
    series = _series(sweep)
    if not series:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for source, points in series.items():
        x = [p[0] for p in points]
        ax1.plot(x, [p[1] for p in points], marker="o", label=source)
        ax2.plot(x, [p[2] if p[2] is not None else float("nan") for p in points], marker="o", label=source)
    top = max(p[0] for pts in series.values() for p in pts)
    ax1.plot([0, top], [1, top + 1], color="grey", linestyle=":", linewidth=1, label="every draft accepted")
    ax1.set_xlabel("draft tokens proposed per step (mean)")
    ax1.set_ylabel("tokens per step (mean)")
    ax2.set_xlabel("draft tokens proposed per step (mean)")
    ax2.set_ylabel("acceptance rate")
    ax2.set_ylim(-0.02, 1.02)
    ax1.legend(fontsize="small")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def _speedup_chart(sweep: Sweep, plt: Any, png: Any) -> str | None:
    runs = [r for r in speculative_runs(sweep) if (r.result.steps.get("speedup") or {}).get("e2e_latency_s")]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(runs) + 2), 3.2))
    labels, ratios, lo, hi = [], [], [], []
    for r in runs:
        row = r.result.steps["speedup"]["e2e_latency_s"]
        labels.append(str(r.config.get("speculative") or r.index))
        ratios.append(row["ratio"])
        lo.append(row["ratio"] - (row.get("ci95_low") or row["ratio"]))
        hi.append((row.get("ci95_high") or row["ratio"]) - row["ratio"])
    x = list(range(len(runs)))
    ax.bar(x, ratios, yerr=[lo, hi], capsize=4, color=["tab:green" if v >= 1 else "tab:red" for v in ratios])
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("speed-up (plain / speculative e2e)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return png(fig)


def speculative_html(sweep: Sweep, *, table: Any) -> str:
    """The HTML report's speculative decoding section: the table, tokens per step and acceptance
    against the draft length, and the speed-up against plain decoding (empty without speculative runs)."""
    from html import escape

    from fastprof.report.charts import png_img, pyplot

    data = rows(sweep)
    if not data:
        return ""
    parts = ["<h2>Speculative decoding</h2>",
             '<p class="muted">per decode step on the host clock; a step is a draft and the target\'s verification '
             "of it, and emits the accepted draft tokens plus one. Tokens of one step reach the host together and "
             "each carries the step's time, so ITL stays per token (its mean is the time per token) while these "
             "columns are per step. Speed-up: plain decoding's latency over the speculative configuration's, "
             "measured in the same run (95% interval).</p>",
             table(HEADER, data, left=2)]
    plt = pyplot()
    chart = _acceptance_chart(sweep, plt, png_img)
    if chart:
        parts.append("<h3>Tokens per step and acceptance against the draft length</h3>")
        parts.append(chart)
    chart = _speedup_chart(sweep, plt, png_img)
    if chart:
        parts.append("<h3>Speed-up against plain decoding</h3>")
        parts.append(chart)
    notes = {w for r in speculative_runs(sweep) for w in r.result.warnings if w.startswith("random weights")}
    parts += [f'<p class="muted">{escape(n)}</p>' for n in sorted(notes)]
    return "\n".join(parts)
