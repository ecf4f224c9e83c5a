"""Tables of a results file: on the console, as CSV and as Markdown."""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence

import numpy as np

from fastprof.analysis.stats import STAT_KEYS
from fastprof.results.io import write_atomic
from fastprof.results.layout import Column, console_width, fit_tables
from fastprof.results.sweep import Sweep
from fastprof.results.units import display_unit, metric_label

DEFAULT_METRICS = ("ttft_s", "itl_s", "tpot_s", "decode_tokens_per_s", "throughput_tokens_per_s")
TABLE_STATS = tuple(k for k in STAT_KEYS if k not in ("ci95_low", "ci95_high"))


# ---- checks ---------------------------------------------------------------------------------
def available_metrics(sweep: Sweep, clock: str = "host") -> list[str]:
    names: list[str] = []
    for run in sweep.ok_runs:
        table = run.result.summary if clock == "host" else run.result.device_summary
        for name in table or {}:
            if name not in names:
                names.append(name)
    return names


def check_metrics(sweep: Sweep, metrics: Sequence[str], clock: str = "host") -> None:
    """ValueError naming the metrics that no configuration has (a file with no successful run has none)."""
    known = available_metrics(sweep, "host")
    if not known:
        return
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; this file has: {', '.join(known)}")


def check_stats(stats: Sequence[str]) -> None:
    unknown = [s for s in stats if s not in TABLE_STATS]
    if unknown:
        raise ValueError(f"unknown statistic(s) {', '.join(map(repr, unknown))}; choose from {', '.join(TABLE_STATS)}")


# ---- the table shared by console, Markdown and HTML --------------------------------------------
def _metric_unit(sweep: Sweep, metric: str, clock: str) -> tuple[str, float]:
    medians = []
    for run in sweep.ok_runs:
        table = run.result.summary if clock == "host" else run.result.device_summary
        s = (table or {}).get(metric)
        if s and s.get("p50") is not None:
            medians.append(s["p50"])
    return display_unit(metric, float(np.median(medians)) if medians else None)


def stat_text(value: float | None, unit: tuple[str, float]) -> str:
    """One statistic in its display unit (``unit``: :func:`display_unit`'s name and scale), as
    every statistics table shows it, console and HTML: rates, watts and percentages with one
    decimal, the rest with three (bytes in GiB, MiB or KiB, never raw)."""
    if value is None:
        return "-"
    name, scale = unit
    return f"{value * scale:,.1f}" if name in ("tok/s", "W", "%") else f"{value * scale:,.3f}"


def table_data(sweep: Sweep, metrics: Sequence[str] = DEFAULT_METRICS, stats: Sequence[str] = ("p50",),
               clock: str = "host") -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings): one row per configuration, the keys that vary, the status and
    one column per metric x statistic."""
    keys = sweep.varying_keys or [k for k in ("batch_size", "prompt_len", "max_new_tokens") if
                                  any(k in r.config for r in sweep.runs)]
    units = {m: _metric_unit(sweep, m, clock) for m in metrics}
    header = ["#", *keys, "status"]
    for m in metrics:
        for st in stats:
            unit = "" if st in ("n", "cv") else f" [{units[m][0]}]"
            header.append(f"{metric_label(m)} {st}{unit}")
    rows = []
    for run in sweep.runs:
        row = [str(run.index), *(str(run.config.get(k, "-")) for k in keys)]
        if run.result is None:
            row.append("failed")  # the reason is among the warnings
            row += ["-"] * (len(header) - len(row))
            rows.append(row)
            continue
        row.append("ok")
        table = run.result.summary if clock == "host" else run.result.device_summary
        for m in metrics:
            s = (table or {}).get(m) or {}
            for st in stats:
                v = s.get(st)
                if v is None:
                    row.append("-")
                elif st == "n":
                    row.append(str(v))
                elif st == "cv":
                    row.append(f"{v:.1%}")
                else:
                    row.append(stat_text(v, units[m]))
        rows.append(row)
    return header, rows


def _same_keys(sweep: Sweep) -> dict[str, Any]:
    """The configuration values every run shares (said once above the table)."""
    if not sweep.runs:
        return {}
    varying = set(sweep.varying_keys)
    first = sweep.runs[0].config
    return {k: v for k, v in first.items() if k not in varying and not isinstance(v, (dict, list))
            and all(r.config.get(k) == v for r in sweep.runs)}


def _env_line(env: dict[str, Any]) -> str:
    def mapping(x: Any) -> dict[str, Any]:  # a file from elsewhere may hold anything here
        return x if isinstance(x, dict) else {}

    env = mapping(env)
    gpu_list = env.get("gpus") if isinstance(env.get("gpus"), list) else []
    gpus = ", ".join(str(mapping(g).get("name", "?")) for g in gpu_list) or "no GPU"
    v = mapping(env.get("versions"))
    return (f"{env.get('hostname', '?')}: {mapping(env.get('cpu')).get('model', '?')}; {gpus}; python "
            f"{env.get('python', '?')}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
            f"fastprof {v.get('fastprof')}")


def all_warnings(sweep: Sweep) -> list[str]:
    from fastprof.capture.environment import environment_warnings

    out = []
    for w in environment_warnings(sweep.environment) + sweep.warnings():
        if w not in out:
            out.append(w)
    if not sweep.complete:
        out.insert(0, "the sweep did not finish (interrupted or still running): only the configurations below ran")
    for run in sweep.runs:
        if not run.ok:
            err = run.error or {}
            out.append(f"configuration {run.index} ({run.label()}) failed: {err.get('type')}: {err.get('message')}")
    return out


# ---- console --------------------------------------------------------------------------------
def print_console(sweep: Sweep, *, metrics: Sequence[str] = DEFAULT_METRICS, stats: Sequence[str] = ("p50",),
                  clock: str = "host", details: bool = False, source: str | None = None, console: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    n_ok = len(sweep.ok_runs)
    console.print(f"[bold]{escape(source or 'results')}[/bold]: {len(sweep.runs)} configuration(s), {n_ok} ok, "
                  f"{len(sweep.runs) - n_ok} failed; created {sweep.created}", highlight=False)
    console.print(f"[dim]{escape(_env_line(sweep.environment))}[/dim]", highlight=False)
    header, rows = table_data(sweep, metrics, stats, clock)
    same = _same_keys(sweep)
    if same:
        console.print("every configuration: " + escape(", ".join(f"{k}={v}" for k, v in same.items())),
                      highlight=False)
    st = header.index("status")
    columns = [Column(h, justify="right" if i == 0 or i > st else "left", key=i <= st) for i, h in enumerate(header)]
    styles = [None if row[st] == "ok" else "red" for row in rows]
    for t in fit_tables(columns, rows, width=console_width(console), title=f"{clock} clock", row_styles=styles):
        console.print(t)
    from fastprof.report.distributed import print_ranks

    print_ranks(sweep, console)
    from fastprof.report.serving import print_serving

    print_serving(sweep, console=console, warnings=False)  # the warnings follow below
    from fastprof.report.quantization import print_quantization

    print_quantization(sweep, console)
    from fastprof.report.speculative import print_speculative

    print_speculative(sweep, console)
    if details:
        for run in sweep.ok_runs:
            console.rule(escape(f"configuration {run.index}: {run.label()}"))
            console.print(run.result)
    else:
        verdicts = [run for run in sweep.ok_runs if (run.result.verdict or {}).get("text")]
        if verdicts:
            console.print("[bold]why decode takes this long[/bold] (roofline and verdict; --details for more)")
        for run in verdicts:
            label = f" ({run.label(sweep.varying_keys)})" if sweep.varying_keys else ""
            console.print(f"  [bold]#{run.index}[/bold]{escape(label)}: {escape(run.result.verdict['text'])}",
                          highlight=False)
        traced = [run for run in sweep.ok_runs if getattr(run.result, "kernels", None)]
        if traced:
            from fastprof.results.result import kernel_lines

            console.print("[bold]kernel breakdown[/bold] (CUPTI trace of extra iterations; --details for more)")
        for run in traced:
            label = f" ({run.label(sweep.varying_keys)})" if sweep.varying_keys else ""
            console.print(f"  [bold]#{run.index}[/bold]{escape(label)}:", highlight=False)
            for line in kernel_lines(run.result.kernels, top=3):
                console.print("    " + line, highlight=False)
        for w in all_warnings(sweep):
            console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)


# ---- CSV and Markdown -----------------------------------------------------------------------
def write_csv(sweep: Sweep, path: str, **_: Any) -> None:
    """Every statistic: one row per configuration x clock x metric (:meth:`Sweep.rows`)."""
    rows = list(sweep.rows())
    fields: list[str] = []
    for r in rows:
        for k in r:
            if k not in fields:
                fields.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    write_atomic(path, buf.getvalue())


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(sweep: Sweep, *, metrics: Sequence[str] = DEFAULT_METRICS, stats: Sequence[str] = ("p50",),
             clock: str = "host", source: str | None = None) -> str:
    header, rows = table_data(sweep, metrics, stats, clock)
    lines = [f"# fastprof report{': ' + source if source else ''}", "",
             f"{len(sweep.runs)} configuration(s), created {sweep.created}. {clock} clock.", "",
             f"Environment: {_env_line(sweep.environment)}", "",
             "| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join("---:" if i == 0 or i > header.index("status") else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    verdicts = [run for run in sweep.ok_runs if (run.result.verdict or {}).get("text")]
    if verdicts:
        lines += ["", "## Why decode takes this long", ""]
        lines += [f"- configuration {run.index}: {_md_cell(run.result.verdict['text'])}" for run in verdicts]
    warnings = all_warnings(sweep)
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {_md_cell(w)}" for w in warnings]
    return "\n".join(lines) + "\n"


def write_markdown(sweep: Sweep, path: str, **kwargs: Any) -> None:
    write_atomic(path, markdown(sweep, **kwargs))
