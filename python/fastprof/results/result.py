"""Benchmark results: a readable summary, a dict, and a versioned JSON file."""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from fastprof.analysis import metrics as _metrics
from fastprof.analysis import stats as _stats
from fastprof.capture.recorder import Trace
from fastprof.results.io import json_safe, scalar, write_atomic
from fastprof.results.units import display_unit, metric_label

SCHEMA_VERSION = 2

# Metrics whose stability (coefficient of variation) is checked; the rates are derived from them.
_CHECKED = ("e2e_latency_s", "ttft_s", "itl_s", "tpot_s", "latency_s")


def _trace_record(t: Trace, extra: dict[str, Any] | None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "host": {
            "start_ns": int(t.host_start_ns),
            "end_ns": int(t.host_end_ns),
            "marks_ns": (t.host_marks_ns - t.host_start_ns).tolist(),
        },
        "device": None,
    }
    if t.device_marks_ns is not None:
        rec["device"] = {"end_ns": int(t.device_end_ns or 0), "marks_ns": t.device_marks_ns.tolist()}
    if extra:
        rec.update(extra)
    return rec


def _trace_from_record(rec: dict[str, Any]) -> Trace:
    host = rec["host"]
    device = rec.get("device")
    start = int(host["start_ns"])
    return Trace(
        host_start_ns=start,
        host_end_ns=int(host["end_ns"]),
        host_marks_ns=np.asarray(host["marks_ns"], dtype=np.int64) + start,
        device_marks_ns=np.asarray(device["marks_ns"], dtype=np.int64) if device else None,
        device_end_ns=int(device["end_ns"]) if device else None,
    )


@dataclass
class BenchmarkResult:
    """The outcome of :func:`fastprof.benchmark` or :func:`fastprof.benchmark_generate`.

    ``summary`` maps each metric to its statistics (see :mod:`fastprof.analysis.stats`) on the host
    clock; ``device_summary`` the same on the GPU event clock, or None when device timing was
    unavailable (``device_timing['reason']`` says why).
    """

    kind: str  # "generate" or "callable"
    config: dict[str, Any]
    environment: dict[str, Any]
    iterations: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    device_summary: dict[str, dict[str, Any]] | None
    device_timing: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    hardware: dict[str, Any] | None = None
    #: Under torchrun: the mode, every rank's summary and raw iterations, clock offsets, step skew
    #: (see :mod:`fastprof.measure.distributed`); None for one process.
    distributed: dict[str, Any] | None = None
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_traces(cls, kind: str, traces: Sequence[Trace], *, config: dict[str, Any],
                    environment: dict[str, Any], device_timing: dict[str, Any],
                    per_iteration: Sequence[dict[str, Any]] | None = None,
                    hardware: dict[str, Any] | None = None,
                    warnings: Sequence[str] = (), seed: int | None = None) -> "BenchmarkResult":
        seed = int(config.get("seed", 0)) if seed is None else int(seed)
        if kind == "generate":
            batch, prompt = int(config["batch_size"]), int(config["prompt_len"])
            host = _metrics.generation_metrics(traces, batch_size=batch, prompt_len=prompt, clock="host")
            device = _metrics.generation_metrics(traces, batch_size=batch, prompt_len=prompt, clock="device")
        else:
            host = _metrics.callable_metrics(traces, clock="host")
            device = _metrics.callable_metrics(traces, clock="device")
        assert host is not None
        summary = {name: _stats.describe(v, seed=seed) for name, v in host.items()}
        device_summary = None
        if device is not None and device_timing.get("available"):
            device_summary = {name: _stats.describe(v, seed=seed) for name, v in device.items()}
        all_warnings = list(warnings)
        if len(traces) < _stats.MIN_SAMPLES:
            all_warnings.append(f"only {len(traces)} measured iteration(s): percentiles and confidence intervals "
                                f"need at least {_stats.MIN_SAMPLES} (raise the iteration count)")
        for name in _CHECKED:
            if name in summary:
                all_warnings += _stats.stability_warnings(name, summary[name], min_samples=0)
        extras = list(per_iteration) if per_iteration is not None else [None] * len(traces)
        return cls(
            kind=kind, config=dict(config), environment=environment,
            iterations=[_trace_record(t, x) for t, x in zip(traces, extras)],
            summary=summary, device_summary=device_summary, device_timing=dict(device_timing),
            warnings=all_warnings, hardware=hardware,
        )

    # ---- access -------------------------------------------------------------------------
    def traces(self) -> list[Trace]:
        """The raw per-iteration timestamps, as :class:`fastprof.Trace` objects."""
        return [_trace_from_record(r) for r in self.iterations]

    def metric(self, name: str, *, clock: str = "host") -> dict[str, Any]:
        table = self.summary if clock == "host" else self.device_summary
        if table is None:
            raise KeyError(f"no {clock} timing in this result: {self.device_timing.get('reason')}")
        if name not in table:
            raise KeyError(f"unknown metric {name!r}; this result has: {', '.join(table)}")
        return table[name]

    def to_dataframe(self):
        """A flat pandas DataFrame: one row per clock x metric, with the configuration's scalar
        values as columns and the statistics ``n, mean, std, min, p50, p90, p95, p99, max, cv,
        ci95_low, ci95_high``. ``clock`` is ``host``, ``device`` or ``gpu`` (the sampled hardware
        figures per iteration). Needs pandas (``pip install 'fastprof[pandas]'``); for a whole
        sweep see :meth:`fastprof.results.sweep.Sweep.to_dataframe`."""
        from fastprof.results.io import dataframe

        config = {k: scalar(v) for k, v in self.config.items() if not isinstance(v, (dict, list))}
        return dataframe(self.stat_rows(config))

    def stat_rows(self, base: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Flat rows, one per clock x metric: ``base`` (e.g. the configuration), then ``clock``,
        ``metric`` and every statistic (see :meth:`to_dataframe`)."""
        base = dict(base or {})
        for clock, table in (("host", self.summary), ("device", self.device_summary)):
            for metric, s in (table or {}).items():
                yield {**base, "clock": clock, "metric": metric, **{k: s.get(k) for k in _stats.STAT_KEYS}}
        hw = self.hardware or {}
        for metric, s in (hw.get("summary") or {}).items() if hw.get("available") else ():
            if s.get("n"):
                yield {**base, "clock": "gpu", "metric": metric, **{k: s.get(k) for k in _stats.STAT_KEYS}}

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "schema_version": self.schema_version,
            "kind": self.kind,
            "created": self.created,
            "environment": self.environment,
            "config": self.config,
            "device_timing": self.device_timing,
            "summary": self.summary,
            "device_summary": self.device_summary,
            "warnings": self.warnings,
            "hardware": self.hardware,
            "iterations": self.iterations,
            **({"distributed": self.distributed} if self.distributed is not None else {}),
        })

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the result as JSON, atomically. Returns the path."""
        write_atomic(path, self.to_json())
        return Path(path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchmarkResult":
        version = d.get("schema_version")
        if not isinstance(version, int):
            raise ValueError("not a fastprof result: no integer 'schema_version'")
        if version > SCHEMA_VERSION:
            raise ValueError(f"result schema version {version} is newer than this fastprof understands "
                             f"({SCHEMA_VERSION}); upgrade fastprof to read it")
        try:
            return cls(
                kind=d["kind"], config=d["config"], environment=d["environment"], iterations=d["iterations"],
                summary=d["summary"], device_summary=d.get("device_summary"), device_timing=d["device_timing"],
                warnings=list(d.get("warnings", [])), hardware=d.get("hardware"), created=d.get("created", ""),
                distributed=d.get("distributed"),
                schema_version=version,
            )
        except KeyError as exc:
            raise ValueError(f"not a complete fastprof result: missing {exc.args[0]!r}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BenchmarkResult":
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a fastprof result")
        return cls.from_dict(data)

    # ---- display ------------------------------------------------------------------------
    def table(self, clock: str = "host"):
        """A rich Table of the summary on ``clock``."""
        from rich.table import Table

        data = self.summary if clock == "host" else self.device_summary
        title = f"fastprof {self.kind} — {clock} clock"
        t = Table(title=title, title_justify="left")
        for col in ("metric", "unit", "n", "p50", "p50 95% CI", "mean", "p90", "p99", "cv"):
            t.add_column(col, justify="left" if col in ("metric", "unit") else "right", no_wrap=True)
        for name, s in (data or {}).items():
            unit, scale = display_unit(name, s.get("p50"))

            def fmt(v, scale=scale):
                return "-" if v is None else f"{v * scale:,.3f}" if scale != 1 else f"{v:,.1f}"

            ci = f"{fmt(s['ci95_low'])}-{fmt(s['ci95_high'])}" if s.get("ci95_low") is not None else "-"
            cv = f"{s['cv']:.1%}" if s.get("cv") is not None else "-"
            t.add_row(metric_label(name), unit, str(s["n"]), fmt(s["p50"]), ci, fmt(s["mean"]), fmt(s["p90"]),
                      fmt(s["p99"]), cv)
        return t

    def hardware_table(self):
        """A rich Table of the per-iteration GPU figures (median and range over iterations)."""
        from rich.table import Table

        hw = self.hardware or {}
        devices = ", ".join(d.get("name") or d.get("identifier", "?") for d in hw.get("devices", []))
        t = Table(title=f"GPU ({hw.get('backend')}, every {hw.get('interval_ms'):g} ms: {devices})",
                  title_justify="left")
        for col in ("per iteration", "p50", "min", "max"):
            t.add_column(col, justify="left" if col == "per iteration" else "right", no_wrap=True)
        scale = {"memory_peak_bytes": (1 / 2**30, "GiB"), "energy_per_token_j": (1e3, "mJ")}
        for name, s in (hw.get("summary") or {}).items():
            if not s.get("n"):
                continue
            k, unit = scale.get(name, (1.0, name.rsplit("_", 1)[-1].replace("pct", "%").upper()
                                       if name.endswith(("_w", "_j", "_c", "_pct")) else ""))
            label = name.rsplit("_", 1)[0] if unit else name
            t.add_row(f"{label} [{unit}]", *(f"{s[key] * k:,.2f}" for key in ("p50", "min", "max")))
        return t

    def __rich_console__(self, console, options):
        cfg = ", ".join(f"{k}={v}" for k, v in self.config.items() if not isinstance(v, (dict, list)))
        yield f"[bold]config[/bold]: {cfg}"
        yield self.table("host")
        if self.device_summary is not None:
            yield self.table("device")
        else:
            yield f"[dim]device timing unavailable: {self.device_timing.get('reason')}[/dim]"
        hw = self.hardware or {}
        if hw.get("available"):
            yield self.hardware_table()
        elif hw:
            yield f"[dim]GPU samples unavailable: {hw.get('reason')}[/dim]"
        for w in self.warnings:
            yield f"[yellow]warning:[/yellow] {w}"

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=130, record=True, file=open(os.devnull, "w"), color_system=None)
        console.print(self)
        return console.export_text()
