"""Comparison of results files: configurations matched, metrics compared, a console table and JSON.

The statistics are :mod:`fastprof.analysis.compare`'s; this module finds the values to compare
in two results documents and presents the verdicts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from fastprof.analysis import metrics as _metrics
from fastprof.analysis.compare import Row, compare_metric
from fastprof.results.io import json_safe, write_atomic
from fastprof.results.layout import Column, console_width, fit_tables
from fastprof.results.result import BenchmarkResult
from fastprof.results.sweep import Run, Sweep
from fastprof.results.units import display_unit

HARDWARE_COMPARED = ("energy_per_token_j",)


class CompareError(ValueError):
    """Files that cannot be compared (no common configuration, an unknown metric)."""


def per_iteration_values(result: BenchmarkResult, metric: str, clock: str = "host") -> np.ndarray | None:
    """The raw values behind a metric: one per iteration (every gap for ``itl_s``), recomputed
    from the stored timestamps; None when the result does not have it."""
    if metric in HARDWARE_COMPARED:
        rows = (result.hardware or {}).get("per_iteration") or []
        vals = [r.get(metric) for r in rows if r.get(metric) is not None]
        return np.asarray(vals, dtype=np.float64) if vals else None
    if result.kind == "serving":  # one value per request (every gap for itl_s), from the raw timestamps
        from fastprof.analysis.serving import request_metrics

        per = [request_metrics(r) for r in (result.serving or {}).get("requests") or []]
        vals = [x for m in per for x in (m[metric] if metric == "itl_s" else [m.get(metric)]) if x is not None]
        return np.asarray(vals, dtype=np.float64) if vals else None
    traces = result.traces()
    if not traces:
        return None
    if result.kind == "generate":
        m = _metrics.generation_metrics(traces, batch_size=int(result.config["batch_size"]),
                                        prompt_len=int(result.config["prompt_len"]), clock=clock)
    else:
        m = _metrics.callable_metrics(traces, clock=clock)
    if m is None or metric not in m:
        return None
    v = m[metric]
    v = v[np.isfinite(v)]
    return v if v.size else None


@dataclass
class KernelDelta:
    """One line of the kernel breakdown of two matched runs: a decode-step figure in A and B."""
    config: str
    item: str  # "GPU busy", "GPU idle", "idle share", "kernels / step" or a kernel class
    a: float
    b: float
    unit: str  # "s", "share" or "count"

    @property
    def change_pct(self) -> float | None:
        return (self.b / self.a - 1) * 100 if self.a else None


@dataclass
class Comparison:
    baseline: str
    other: str
    rows: list[Row]
    unmatched_a: list[str]
    unmatched_b: list[str]
    #: The kernel breakdowns of matched runs that both have one (``fastprof run --kernel-trace``).
    kernels: list[KernelDelta] = field(default_factory=list)


def kernel_figures(result: BenchmarkResult) -> dict[str, tuple[float, str]] | None:
    """A result's decode kernel breakdown as (value, unit) by item: median GPU busy and idle time
    per decode step, the median idle share, kernels per step and the time per step of each kernel
    class (class totals over the traced iterations' decode steps); None without a trace."""
    k = result.kernels or {}
    if not k.get("available") or k.get("busy_s_per_step") is None:
        return None
    out: dict[str, tuple[float, str]] = {"GPU busy": (k["busy_s_per_step"], "s")}
    if k.get("step_s_median") is not None:
        out["GPU idle"] = (max(k["step_s_median"] - k["busy_s_per_step"], 0.0), "s")
    if k.get("idle_share") is not None:
        out["idle share"] = (k["idle_share"], "share")
    if k.get("kernels_per_token") is not None:
        out["kernels / step"] = (k["kernels_per_token"], "count")
    steps = k.get("decode_steps") or 0
    iters = max(k.get("iterations") or 1, 1)
    for cls, total in sorted((k.get("class_s") or {}).items(), key=lambda kv: -kv[1]):
        if steps and total:
            # class_s is per iteration; decode_steps counts every traced iteration's steps.
            out[cls] = (total * iters / steps, "s")
    return out


def _kernel_deltas(config: str, ra: BenchmarkResult, rb: BenchmarkResult) -> list[KernelDelta]:
    fa, fb = kernel_figures(ra), kernel_figures(rb)
    if fa is None or fb is None:
        return []
    return [KernelDelta(config, item, va, fb[item][0], unit) for item, (va, unit) in fa.items() if item in fb]


def _key(run: Run, ignore: Sequence[str]) -> str:
    return json.dumps({k: v for k, v in run.config.items() if k not in ignore}, sort_keys=True, default=str)


def compare_sweeps(a: Sweep, b: Sweep, *, metrics: Sequence[str] | None = None, clock: str = "host",
                   alpha: float = 0.05, ignore: Sequence[str] = (), resamples: int = 2000, seed: int = 0,
                   names: tuple[str, str] = ("A", "B")) -> Comparison:
    runs_a = {_key(r, ignore): r for r in a.ok_runs}
    runs_b = {_key(r, ignore): r for r in b.ok_runs}
    pairs = [(runs_a[k], runs_b[k]) for k in runs_a if k in runs_b]
    if not pairs and len(runs_a) == 1 and len(runs_b) == 1:  # one configuration each: compare them
        pairs = [(next(iter(runs_a.values())), next(iter(runs_b.values())))]
    if not pairs:
        raise CompareError(f"no configuration of {names[1]} matches one of {names[0]} "
                           "(use --ignore KEY to leave config keys out of the match)")
    matched_a = {id(p[0]) for p in pairs}
    matched_b = {id(p[1]) for p in pairs}
    keys = sorted({k for r in a.runs + b.runs for k in r.config if k not in ignore})
    varying = [k for k in keys if len({json.dumps(r.config.get(k), default=str) for r in a.runs + b.runs}) > 1]

    def label(run: Run) -> str:
        return run.label(varying) if varying else run.label()

    available = []
    for ra, rb in pairs:
        for name in list(ra.result.summary) + list(HARDWARE_COMPARED):
            if name not in available:
                available.append(name)
    if metrics is not None:
        unknown = [m for m in metrics if m not in available]
        if unknown:
            raise CompareError(f"unknown metric(s) {', '.join(map(repr, unknown))}; these files have: "
                               f"{', '.join(m for m in available if m not in HARDWARE_COMPARED)}"
                               f"{', ' + ', '.join(HARDWARE_COMPARED) if HARDWARE_COMPARED else ''}")
    rows: list[Row] = []
    kernels: list[KernelDelta] = []
    for ra, rb in pairs:
        kernels += _kernel_deltas(label(ra), ra.result, rb.result)
        for metric in metrics if metrics is not None else available:
            va = per_iteration_values(ra.result, metric, clock)
            vb = per_iteration_values(rb.result, metric, clock)
            if va is None or vb is None:
                continue
            rows.append(compare_metric(va, vb, metric, config=label(ra), alpha=alpha, resamples=resamples,
                                       seed=seed))
    if not rows:
        raise CompareError(f"no metric could be compared on the {clock} clock (is it recorded in both files?)")
    return Comparison(names[0], names[1], rows,
                      unmatched_a=[label(r) for r in a.ok_runs if id(r) not in matched_a],
                      unmatched_b=[label(r) for r in b.ok_runs if id(r) not in matched_b], kernels=kernels)


def compare_files(sweeps: Sequence[Sweep], *, names: Sequence[str], **kwargs: Any) -> list[Comparison]:
    """Each file after the first compared with the first."""
    return [compare_sweeps(sweeps[0], s, names=(names[0], n), **kwargs) for s, n in zip(sweeps[1:], names[1:])]


def regressions(comparisons: Sequence[Comparison], threshold_pct: float) -> list[Row]:
    """Significant regressions worse than ``threshold_pct`` percent."""
    return [r for c in comparisons for r in c.rows if r.verdict == "regression" and r.worse_pct > threshold_pct]


def print_console(comparisons: Sequence[Comparison], *, alpha: float = 0.05, threshold_pct: float | None = None,
                  console: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    for c in comparisons:
        console.print(escape(f"{c.other} vs {c.baseline}: ratio of medians B/A, its {1 - alpha:.0%} bootstrap interval, "
                             "Mann-Whitney U p-value"), highlight=False)
        columns = [Column("configuration", "left", key=True), Column("metric", "left", key=True),
                   Column("A p50"), Column("B p50"), Column("B/A"), Column(f"{1 - alpha:.0%} interval"), Column("p"),
                   Column("change"), Column("verdict", "left")]
        rows, styles = [], []
        for r in c.rows:
            unit, scale = display_unit(r.metric, r.median_a) if r.metric.endswith("_s") else ("", 1.0)
            fmt = (lambda v: f"{v * scale:,.3f} {unit}".strip()) if not r.metric.endswith("_tokens_per_s") \
                else (lambda v: f"{v:,.1f}")
            flag = r.verdict
            if r.verdict == "regression" and threshold_pct is not None and r.worse_pct > threshold_pct:
                flag = f"REGRESSION > {threshold_pct:g}%"
            rows.append([r.config or "-", r.metric, fmt(r.median_a), fmt(r.median_b), f"{r.ratio:.3f}",
                         f"{r.ci_low:.3f}-{r.ci_high:.3f}", f"{r.p_value:.2g}", f"{r.change_pct:+.1f}%", flag])
            styles.append({"regression": "red", "improvement": "green"}.get(r.verdict))
        for t in fit_tables(columns, rows, width=console_width(console), row_styles=styles):
            console.print(t)
        if c.kernels:
            _print_kernels(c, console)
        for label in c.unmatched_a:
            console.print(f"[dim]only in {escape(c.baseline)}: {escape(label)}[/dim]", highlight=False)
        for label in c.unmatched_b:
            console.print(f"[dim]only in {escape(c.other)}: {escape(label)}[/dim]", highlight=False)


def _print_kernels(c: Comparison, console: Any) -> None:
    from rich.markup import escape

    console.print(escape(f"kernel breakdown of the traced iterations, per decode step ({c.other} vs {c.baseline}; "
                         "medians, no test of significance: the trace covers few iterations)"), highlight=False)
    columns = [Column("configuration", "left", key=True), Column("item", "left", key=True), Column("A"),
               Column("B"), Column("change")]
    rows = []
    for d in c.kernels:
        if d.unit == "s":
            unit, scale = display_unit("busy_s", d.a)
            fmt = lambda v: f"{v * scale:,.3f} {unit}"  # noqa: E731
        elif d.unit == "share":
            fmt = lambda v: f"{v:.1%}"  # noqa: E731
        else:
            fmt = lambda v: f"{v:,.1f}"  # noqa: E731
        change = "-" if d.change_pct is None else f"{d.change_pct:+.1f}%"
        rows.append([d.config or "-", d.item, fmt(d.a), fmt(d.b), change])
    for t in fit_tables(columns, rows, width=console_width(console)):
        console.print(t)


def write_json(comparisons: Sequence[Comparison], path: str, *, alpha: float) -> None:

    doc = {"kind": "comparison", "alpha": alpha,
           "comparisons": [{"baseline": c.baseline, "other": c.other, "rows": [asdict(r) for r in c.rows],
                            "unmatched_baseline": c.unmatched_a, "unmatched_other": c.unmatched_b,
                            "kernels": [{**asdict(d), "change_pct": d.change_pct} for d in c.kernels]}
                           for c in comparisons]}
    write_atomic(path, json.dumps(json_safe(doc), indent=1, allow_nan=False))
