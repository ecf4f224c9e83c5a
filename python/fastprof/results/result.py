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
from fastprof.analysis import roofline as _roofline
from fastprof.analysis import speculative as _speculative
from fastprof.analysis import stats as _stats
from fastprof.analysis import verdict as _verdict
from fastprof.analysis.hardware import GPM_FIELDS, gpm_metric_names
from fastprof.capture.recorder import Trace
from fastprof.results.io import json_safe, scalar, write_atomic
from fastprof.results.units import display_unit, metric_label

SCHEMA_VERSION = 5

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
    if t.steps is not None:
        rec["steps"] = _steps_record(t)
    if extra:
        rec.update(extra)
    return rec


def _ints(values: Any) -> list[int] | None:
    return None if values is None else [int(v) for v in np.asarray(values).tolist()]


def _steps_record(t: Trace) -> dict[str, Any]:
    """An iteration's ``steps`` as stored: tokens and proposed drafts per step, the draft marks
    (host: ns from the iteration's start; device: ns from the draft recorder's start event, which
    began ``draft_start_ns`` ns after the iteration's host start, usually a few microseconds before it)."""
    s = t.steps or {}
    host = s.get("draft_host_ns")
    start = s.get("draft_start_ns")
    return {"method": s.get("method"), "tokens": _ints(s.get("tokens")), "proposed": _ints(s.get("proposed")),
            "draft_host_ns": None if host is None else _ints(np.asarray(host, dtype=np.int64) - int(t.host_start_ns)),
            "draft_device_ns": _ints(s.get("draft_device_ns")),
            "draft_start_ns": None if start is None else int(start) - int(t.host_start_ns)}


def _steps_from_record(rec: dict[str, Any] | None, start: int) -> dict[str, Any] | None:
    if not isinstance(rec, dict) or rec.get("tokens") is None:
        return None
    host = rec.get("draft_host_ns")
    dev = rec.get("draft_device_ns")
    prop = rec.get("proposed")
    return {"method": rec.get("method"), "tokens": np.asarray(rec["tokens"], dtype=np.int64),
            "proposed": None if prop is None else np.asarray(prop, dtype=np.int64),
            "draft_host_ns": None if host is None else np.asarray(host, dtype=np.int64) + start,
            "draft_device_ns": None if dev is None else np.asarray(dev, dtype=np.int64),
            "draft_start_ns": None if rec.get("draft_start_ns") is None else int(rec["draft_start_ns"]) + start}


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
        steps=_steps_from_record(rec.get("steps"), start),
    )


@dataclass
class BenchmarkResult:
    """The outcome of :func:`fastprof.benchmark` or :func:`fastprof.benchmark_generate`.

    ``summary`` maps each metric to its statistics (see :mod:`fastprof.analysis.stats`) on the host
    clock; ``device_summary`` the same on the GPU event clock, or None when device timing was
    unavailable (``device_timing['reason']`` says why).

    ``roofline`` (generation only): what one decode step must read and compute against the GPU's
    peaks, MBU and MFU (:func:`fastprof.analysis.roofline.roofline`); ``verdict``: host-overhead-,
    memory- or compute-bound with its supporting paragraph (:func:`fastprof.analysis.verdict.verdict`).
    Both are None in results that predate them; :meth:`diagnose` computes them.
    """

    kind: str  # "generate", "callable" or "serving"
    config: dict[str, Any]
    environment: dict[str, Any]
    iterations: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    device_summary: dict[str, dict[str, Any]] | None
    device_timing: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    hardware: dict[str, Any] | None = None
    roofline: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    #: Under torchrun: the mode, every rank's summary and raw iterations, clock offsets, step skew
    #: (see :mod:`fastprof.measure.distributed`); None for one process.
    distributed: dict[str, Any] | None = None
    #: Continuous batching under load (kind ``"serving"``): the arrival schedule, every request's raw
    #: timestamps and derived latencies, throughput, goodput and occupancy (see
    #: :mod:`fastprof.analysis.serving`); None for other kinds.
    serving: dict[str, Any] | None = None
    #: The kernel breakdown from traced iterations (:func:`fastprof.analysis.kernels.section`):
    #: availability, GPU busy/idle per decode step, time by class, top kernels; None when not traced.
    kernels: dict[str, Any] | None = None
    #: ``fastprof run --processes N``: the count, each worker process's medians, and the spread
    #: between processes beside the spread within them (:mod:`fastprof.results.processes`);
    #: None for one process. Each iteration then carries its ``process``.
    processes: dict[str, Any] | None = None
    #: Stall sources during the timed iterations and the slow tokens they explain
    #: (:mod:`fastprof.analysis.stalls`): ``sources``, ``events``, ``slow_tokens``, ``summary``,
    #: ``unexplained_excess_s``; None when not recorded.
    stalls: dict[str, Any] | None = None
    #: ``fastprof run``: the quantization method, its backend and version, and the bytes the weights
    #: occupy (:func:`fastprof.capture.quantization.details`); None for other callers.
    quantization: dict[str, Any] | None = None
    #: Where the prompts came from (random ids or text through a tokenizer) and whether tokenization
    #: is timed; None for random prompts given by the caller.
    inputs: dict[str, Any] | None = None
    #: Where the host's time goes per decode step, from the traced iterations: CUDA API calls,
    #: modules, the generate loop (:func:`fastprof.analysis.host.section`); None when not traced.
    host: dict[str, Any] | None = None
    #: The machine's host path beside every timed iteration: steal time, CPU clock and a launch /
    #: interpreter calibration (:func:`fastprof.analysis.host.host_path_section`).
    host_path: dict[str, Any] | None = None
    #: Decode steps (generation with per-token marks): tokens per step, step time, and for
    #: speculative decoding the acceptance, the draft and the verification apart and the speed-up
    #: against plain decoding of the same run (:func:`fastprof.analysis.speculative.section`);
    #: None for other kinds and for results that predate it (schema version 5).
    steps: dict[str, Any] | None = None
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
            unmarked = None if config.get("per_token_marks", True) else int(config["max_new_tokens"])
            host = _metrics.generation_metrics(traces, batch_size=batch, prompt_len=prompt, clock="host",
                                               unmarked_tokens=unmarked)
            device = _metrics.generation_metrics(traces, batch_size=batch, prompt_len=prompt, clock="device",
                                                 unmarked_tokens=unmarked)
        else:
            host = _metrics.callable_metrics(traces, clock="host")
            device = _metrics.callable_metrics(traces, clock="device")
        assert host is not None
        def keep(values: Any) -> bool:  # without per-token marks, the per-token metrics do not exist
            return kind != "generate" or config.get("per_token_marks", True) or values.size > 0

        def described(metrics: dict[str, Any], clock: str) -> dict[str, dict[str, Any]]:
            # Token gaps are correlated within an iteration: their interval resamples iterations.
            groups = _metrics.itl_groups(traces, clock=clock) if kind == "generate" else None
            out = {name: _stats.describe(v, seed=seed, groups=groups if name == "itl_s" and groups is not None
                                         and groups.size == v.size else None)
                   for name, v in metrics.items() if keep(v)}
            if kind == "generate":
                # Speculative decoding: the per-step metrics beside the per-token ones (steps are
                # correlated within an iteration too: their interval resamples iterations).
                for name, (v, g) in _speculative.summary_samples(traces, clock).items():
                    out[name] = _stats.describe(v, seed=seed, groups=g)
            return out

        summary = described(host, "host")
        device_summary = None
        if device is not None and device_timing.get("available"):
            device_summary = described(device, "device")
        all_warnings = list(warnings)
        if len(traces) < _stats.MIN_SAMPLES:
            all_warnings.append(f"only {len(traces)} measured iteration(s): percentiles and confidence intervals "
                                f"need at least {_stats.MIN_SAMPLES} (raise the iteration count)")
        # Speculative decoding: token gaps are zero inside a step, so the steps' spread is checked instead.
        checked = [("step_s" if n == "itl_s" else n) for n in _CHECKED] if "step_s" in summary else _CHECKED
        for name in checked:
            if name in summary:
                all_warnings += _stats.stability_warnings(name, summary[name], min_samples=0)
        extras = list(per_iteration) if per_iteration is not None else [None] * len(traces)
        steps = None
        if kind == "generate" and config.get("per_token_marks", True):
            steps = _speculative.section(traces, seed=seed)
            if steps is not None and device_summary is None:
                steps["device"] = None
        return cls(
            kind=kind, config=dict(config), environment=environment,
            iterations=[_trace_record(t, x) for t, x in zip(traces, extras)],
            summary=summary, device_summary=device_summary, device_timing=dict(device_timing),
            warnings=all_warnings, hardware=hardware, steps=steps,
        )

    # ---- why decode is slow ---------------------------------------------------------------
    def gpu_counters(self) -> dict[str, Any]:
        """The GPU performance counters (NVML GPM) over decode, undiluted: per field, in %, the
        time-weighted mean of the GPM windows that lie wholly inside the decode phases of the
        iterations (:func:`fastprof.analysis.hardware.gpm_phases`); a field whose decode phases hold
        no whole window (iterations shorter than the GPM period) is left out rather than diluted
        by prefill or the time between iterations. A run without decode phases (a callable): the
        windows wholly inside iterations. Beside the figures, ``phase`` (``"decode"`` or
        ``"iteration"``) and ``windows``: per sampled field, its figure's provenance (``windows``,
        ``covered_s``, ``phase_s``, ``window_s``, ``ci95_pct``) or, when ``available`` is false,
        the ``reason``. Results written before these figures: recomputed from their samples; with
        none, the summary's median decode-phase (else whole-iteration) mean. Empty without GPM."""
        from fastprof.analysis.hardware import gpm_phases

        hw = self.hardware or {}
        phases = hw.get("gpm_phases")
        if phases is None and (hw.get("samples") or {}).get("timestamps_ns") and self.iterations:
            phases = gpm_phases(hw, self.traces())
        if phases is not None:
            decode = phases.get("decode") or {}
            has_decode = self.kind == "generate" or any(e.get("phase_s") for e in decode.values())
            phase = "decode" if has_decode else "iteration"
            entries = phases.get(phase) or {}
            if not entries:
                return {}
            figures: dict[str, Any] = {f: float(e["pct"]) for f, e in entries.items()
                                       if e.get("available") and e.get("pct") is not None}
            return {**figures, "phase": phase, "windows": {f: dict(e) for f, e in entries.items()}}
        summary = hw.get("summary") or {}
        out: dict[str, Any] = {}
        for f in GPM_FIELDS:
            whole, decode = gpm_metric_names(f)
            for name in (decode, whole):
                p50 = (summary.get(name) or {}).get("p50")
                if p50 is not None:
                    out[f] = float(p50)
                    break
        return out

    def diagnose(self, *, model: dict[str, Any] | None = None, gpu: dict[str, Any] | None = None,
                 kernels: dict[str, Any] | None = None) -> dict[str, Any]:
        """Computes ``roofline`` and ``verdict`` and returns the verdict.

        ``model``: model facts (:func:`fastprof.analysis.roofline.model_facts_from_config`);
        ``gpu``: GPU peaks (:func:`fastprof.analysis.roofline.gpu_peaks`); both default to those
        already in ``roofline``. ``kernels``: a kernel breakdown summary (``idle_share``,
        ``kernels_per_token``, ``class_share``, optionally ``busy_s_per_step``) from a kernel trace, or
        None. The step time is the mean inter-token latency on the host clock; the measured DRAM
        utilisation is the GPU counters' decode-phase median (:meth:`gpu_counters`).
        """
        old = self.roofline if self.roofline and self.roofline.get("available") else {}
        model = model if model is not None else old.get("model")
        gpu = gpu if gpu is not None else old.get("gpu")
        counters = self.gpu_counters()
        if self.kind == "serving":
            self.roofline = _roofline.unavailable("the roofline is computed for static-batch generation; a serving "
                                                  "run's batch changes from step to step")
        elif self.kind != "generate":
            self.roofline = _roofline.unavailable("the roofline is computed for generation (benchmark_generate)")
        elif not model:
            self.roofline = _roofline.unavailable("no model facts (layers, heads, parameters) were collected")
        else:
            itl = (self.summary.get("itl_s") or {}).get("mean")
            self.roofline = _roofline.roofline(
                model, gpu or _roofline.gpu_peaks({}), batch_size=int(self.config["batch_size"]),
                prompt_len=int(self.config["prompt_len"]), new_tokens=int(self.config["max_new_tokens"]),
                itl_s=itl, kernels=kernels, measured_dram_util_pct=counters.get("dram_bw_util_pct"))
        self.verdict = _verdict.verdict(self.roofline, kernels, counters or None, host=self.host)
        return self.verdict

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
            "roofline": self.roofline,
            "verdict": self.verdict,
            "iterations": self.iterations,
            **({"distributed": self.distributed} if self.distributed is not None else {}),
            **({"serving": self.serving} if self.serving is not None else {}),
            **({"kernels": self.kernels} if self.kernels is not None else {}),
            **({"processes": self.processes} if self.processes is not None else {}),
            **({"stalls": self.stalls} if self.stalls is not None else {}),
            **({"quantization": self.quantization} if self.quantization is not None else {}),
            **({"inputs": self.inputs} if self.inputs is not None else {}),
            **({"host": self.host} if self.host is not None else {}),
            **({"host_path": self.host_path} if self.host_path is not None else {}),
            **({"steps": self.steps} if self.steps is not None else {}),
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
        config = d.get("config")
        if d.get("kind") == "generate" and isinstance(config, dict):
            for key in ("batch_size", "prompt_len"):
                if not isinstance(config.get(key), int) or isinstance(config.get(key), bool):
                    raise ValueError(f"not a complete fastprof result: config.{key} must be an integer, "
                                     f"got {config.get(key)!r}")
        try:
            return cls(
                kind=d["kind"], config=d["config"], environment=d["environment"], iterations=d["iterations"],
                summary=d["summary"], device_summary=d.get("device_summary"), device_timing=d["device_timing"],
                warnings=list(d.get("warnings", [])), hardware=d.get("hardware"), roofline=d.get("roofline"),
                verdict=d.get("verdict"), created=d.get("created", ""), schema_version=version,
                distributed=d.get("distributed"), serving=d.get("serving"), kernels=d.get("kernels"), processes=d.get("processes"),
                stalls=d.get("stalls"), quantization=d.get("quantization"), inputs=d.get("inputs"),
                host=d.get("host"), host_path=d.get("host_path"), steps=d.get("steps"),
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
    def _summary_rows(self, clock: str) -> tuple[list[Any], list[list[str]]]:
        from fastprof.results.layout import Column

        data = self.summary if clock == "host" else self.device_summary
        columns = [Column("metric", "left", key=True), Column("unit", "left", key=True), Column("n"), Column("p50"),
                   Column("p50 95% CI"), Column("mean"), Column("p90"), Column("p99"), Column("cv")]
        rows = []
        for name, s in (data or {}).items():
            # A speculative step's tokens share its time: the median gap may be zero, the mean is not.
            unit, scale = display_unit(name, s.get("p50") or s.get("mean"))

            def fmt(v, scale=scale, unit=unit):
                return "-" if v is None else f"{v * scale:,.1f}" if unit in ("tok/s", "W", "%") else f"{v * scale:,.3f}"

            ci = f"{fmt(s['ci95_low'])}-{fmt(s['ci95_high'])}" if s.get("ci95_low") is not None else "-"
            cv = f"{s['cv']:.1%}" if s.get("cv") is not None else "-"
            rows.append([metric_label(name), unit, str(s["n"]), fmt(s["p50"]), ci, fmt(s["mean"]), fmt(s["p90"]),
                         fmt(s["p99"]), cv])
        return columns, rows

    def tables(self, clock: str = "host", width: int = 200) -> list[Any]:
        """The summary on ``clock`` as rich Tables that fit ``width`` columns (one when it fits)."""
        from fastprof.results.layout import fit_tables

        columns, rows = self._summary_rows(clock)
        return fit_tables(columns, rows, width=width, title=f"fastprof {self.kind}, {clock} clock")

    def table(self, clock: str = "host"):
        """A rich Table of the summary on ``clock`` (all columns; see :meth:`tables`)."""
        return self.tables(clock, width=10_000)[0]

    def hardware_table(self):
        """A rich Table of the per-iteration GPU figures (median and range over iterations), each
        in the unit the HTML report gives it (:func:`display_unit` of its median: energy in J or mJ,
        memory in GiB, MiB, ...)."""
        from rich.markup import escape
        from rich.table import Table

        hw = self.hardware or {}
        devices = ", ".join(d.get("name") or d.get("identifier", "?") for d in hw.get("devices", []))
        t = Table(title=f"GPU ({hw.get('backend')}, every {hw.get('interval_ms'):g} ms: {devices})",
                  title_justify="left")
        for col in ("per iteration", "p50", "min", "max"):
            t.add_column(col, justify="left" if col == "per iteration" else "right", no_wrap=True)
        summary = hw.get("summary") or {}
        for name, s in summary.items():
            if not s.get("n"):
                continue
            # GPU performance counters: the decode-phase mean where there is one, else the iteration's.
            decode = name[: -len("_mean_pct")] + "_decode_mean_pct"
            if name.endswith("_mean_pct") and (summary.get(decode) or {}).get("n"):
                continue
            unit, k = display_unit(name, s.get("p50"))
            if not unit and name.endswith("_c"):
                unit, k = "C", 1.0
            label = (name[: -len("_c")] if name.endswith("_c") else metric_label(name)) if unit else name
            # escaped: "[mJ]" is rich markup, and printed nothing
            t.add_row(escape(f"{label} [{unit}]" if unit else label),
                      *(f"{s[key] * k:,.2f}" for key in ("p50", "min", "max")))
        return t

    def __rich_console__(self, console, options):
        cfg = ", ".join(f"{k}={v}" for k, v in self.config.items() if not isinstance(v, (dict, list)))
        yield f"[bold]config[/bold]: {cfg}"
        width = int(getattr(options, "max_width", 80) or 80)
        yield from self.tables("host", width)
        if self.device_summary is not None:
            yield from self.tables("device", width)
        else:
            yield f"[dim]device timing unavailable: {self.device_timing.get('reason')}[/dim]"
        hw = self.hardware or {}
        if hw.get("available"):
            yield self.hardware_table()
        elif hw:
            yield f"[dim]GPU samples unavailable: {hw.get('reason')}[/dim]"
        if self.serving is not None:
            yield from serving_lines(self.serving)
        yield from process_lines(self.processes)
        yield from model_lines(self.quantization, self.inputs)
        yield from stall_lines(self.stalls)
        yield from kernel_lines(self.kernels)
        yield from host_lines(self.host, self.host_path)
        yield from step_lines(self.steps)
        yield from roofline_lines(self.roofline, self.verdict)
        from fastprof.results.warnings import grouped

        for w in grouped((None, w) for w in self.warnings):
            yield f"[yellow]warning:[/yellow] {w}"

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=130, record=True, file=open(os.devnull, "w"), color_system=None)
        console.print(self)
        return console.export_text()


def _bytes(n: float) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= k:
            return f"{n / k:,.2f} {unit}"
    return f"{n:,.0f} B"


def roofline_summary(roof: dict[str, Any] | None) -> str | None:
    """One line of the roofline: bytes per step, MBU and MFU, the ideal step time, the counters."""
    if not roof or not roof.get("available"):
        return None
    parts = [f"{_bytes(roof['bytes_per_step'])} per step (weights {_bytes(roof['weight_bytes_per_step'])}, "
             f"KV cache {_bytes(roof['kv_cache_bytes_mean'])})"]
    gpu = roof.get("gpu") or {}
    bw, flops = gpu.get("peak_bandwidth_bytes_per_s"), gpu.get("peak_tensor_flops")
    if roof.get("mbu") is not None:
        text = f"MBU {roof['mbu']:.1%}"
        if roof.get("mbu_busy") is not None:
            text += f" ({roof['mbu_busy']:.1%} of GPU busy time)"
        if roof.get("measured_dram_util_pct") is not None:
            text += f", DRAM counters {roof['measured_dram_util_pct']:.1f}%"
        parts.append(text + f" of {bw / 1e12:.2f} TB/s")
    if roof.get("mfu") is not None:
        text = f"MFU {roof['mfu']:.2%}"
        if roof.get("mfu_busy") is not None:
            text += f" ({roof['mfu_busy']:.2%} of GPU busy time)"
        parts.append(text + f" of {flops / 1e12:.0f} TFLOP/s")
    if roof.get("ideal_step_s") is not None and roof.get("itl_s") is not None:
        parts.append(f"ideal step {roof['ideal_step_s'] * 1e3:.3f} ms at full bandwidth vs ITL "
                     f"{roof['itl_s'] * 1e3:.3f} ms")
    for reason in roof.get("reasons") or []:
        parts.append(reason)
    return "; ".join(parts)


def roofline_lines(roof: dict[str, Any] | None, verdict: dict[str, Any] | None) -> Iterator[str]:
    """The console's short block: the roofline line and the verdict paragraph (rich markup)."""
    from rich.markup import escape

    line = roofline_summary(roof)
    if line:
        yield f"[bold]roofline[/bold]: {escape(line)}"
    elif roof and roof.get("reason"):
        yield f"[dim]roofline unavailable: {escape(str(roof['reason']))}[/dim]"
    if verdict and verdict.get("text"):
        yield f"[bold]verdict[/bold]: {escape(verdict['text'])}"


def serving_lines(serving: dict[str, Any]) -> Iterator[str]:
    """The console's serving block: request counts, throughput, goodput and occupancy of one run."""
    from rich.markup import escape

    c = serving.get("counts") or {}

    def num(v: Any, fmt: str = "{:,.2f}") -> str:
        return "-" if v is None else fmt.format(v)

    rate = serving.get("rate")
    offered = f"{rate:g} req/s {serving.get('arrival')}" if rate is not None else str(serving.get("arrival"))
    yield (f"[bold]serving[/bold]: offered {escape(offered)}, window {num(serving.get('window_s'))} s; requests "
           f"{c.get('total', 0)}: {c.get('finished', 0)} finished, {c.get('running', 0)} running, "
           f"{c.get('queued', 0)} queued, {c.get('failed', 0)} failed")
    slo = serving.get("slo") or {}
    limits = ", ".join(f"{k[:-2].upper()} <= {v * 1e3:g} ms" for k, v in slo.items() if v is not None)
    share = serving.get("goodput_share")
    yield (f"[bold]throughput[/bold]: {num(serving.get('request_throughput_per_s'))} req/s, "
           f"{num(serving.get('output_token_throughput_per_s'), '{:,.1f}')} output tok/s; goodput "
           f"{num(serving.get('goodput_per_s'))} req/s ({num(share * 100 if share is not None else None, '{:.0f}')}%"
           f"{' within ' + limits if limits else ', no limits set'})")
    occ = serving.get("occupancy") or {}
    yield (f"[bold]occupancy[/bold]: mean {num(occ.get('mean_in_system'))} requests in the system, "
           f"{num(occ.get('mean_generating'))} generating (max {occ.get('max_generating', '-')}); token times "
           f"from {serving.get('token_clock', '?')}")


def model_lines(quantization: dict[str, Any] | None, inputs: dict[str, Any] | None) -> Iterator[str]:
    """The weights (and their quantization) and where the prompts came from, a line each."""
    from rich.markup import escape

    if quantization:
        wb = quantization.get("weight_bytes")
        size = f"{wb / 1e6:,.1f} MB" if isinstance(wb, (int, float)) else "size unknown"
        if quantization.get("method", "none") == "none":
            yield f"[bold]weights[/bold]: {size}, unquantized"
        else:
            yield (f"[bold]weights[/bold]: {size}, {escape(str(quantization['method']))} "
                   f"({escape(str(quantization.get('backend')))} {escape(str(quantization.get('backend_version') or '?'))}: "
                   f"{escape(str(quantization.get('maps_to')))})")
    if inputs and inputs.get("source") in ("text", "file"):
        tokens = inputs.get("prompt_tokens") or []
        what = (f"[bold]prompts[/bold]: {'--prompt' if inputs['source'] == 'text' else '--prompts'} text, "
                f"{min(tokens) if tokens else '?'}-{max(tokens) if tokens else '?'} tokens, tokenizer "
                f"{escape(str(inputs.get('tokenizer')))}; ")
        if inputs.get("tokenization_timed"):
            yield what + "tokenization and detokenization inside the timed region"
        else:
            tok, detok = inputs.get("tokenize_s"), inputs.get("detokenize_s")
            cost = (f" (tokenize {tok * 1e3:.3f} ms, detokenize {detok * 1e3:.3f} ms; --time-tokenization "
                    "includes them)") if isinstance(tok, (int, float)) and isinstance(detok, (int, float)) else ""
            yield what + "tokenization and detokenization outside the timed region" + cost


def stall_lines(stalls: dict[str, Any] | None, top: int = 5) -> Iterator[str]:
    """Slow tokens: how many, the excess time per cause and the unexplained, then the worst few."""
    from rich.markup import escape

    if not stalls:
        return
    slow = stalls.get("slow_tokens") or []
    missing = [k for k, v in (stalls.get("sources") or {}).items() if isinstance(v, dict) and not v.get("available")]
    if not slow:
        yield "[bold]slow tokens[/bold]: none" + (f" [dim](not recorded: {escape(', '.join(missing))})[/dim]"
                                                   if missing else "")
        return
    parts = [f"{k} {v['count']} ({v['excess_s'] * 1e3:.2f} ms)" for k, v in (stalls.get("summary") or {}).items()
             if v.get("count")]
    parts.append(f"unexplained {stalls.get('unexplained_excess_s', 0.0) * 1e3:.2f} ms")
    yield (f"[bold]slow tokens[/bold]: {len(slow)}, {stalls.get('slow_excess_s', 0.0) * 1e3:.2f} ms over their "
           f"iterations' median gap; by cause: {escape(', '.join(parts))}")
    for t in sorted(slow, key=lambda t: -t["excess_s"])[:top]:
        causes = ", ".join(f"{c['kind']} {c['overlap_s'] * 1e3:.2f} ms" for c in t["causes"]) or "unexplained"
        yield (f"  iteration {t['iteration']} token {t['token']}: {t['gap_s'] * 1e3:.2f} ms "
               f"(+{t['excess_s'] * 1e3:.2f} ms): {escape(causes)}")
    if missing:
        yield f"  [dim]not recorded here: {escape(', '.join(missing))}[/dim]"


def process_lines(processes: dict[str, Any] | None) -> Iterator[str]:
    """One line per metric: the spread between worker processes beside the spread within them."""
    if not processes or (processes.get("count") or 0) < 2:
        return
    yield (f"[bold]{processes['count']} worker processes[/bold]: spread of the per-process medians "
           "(run-to-run) beside the spread of iterations within a process")
    for name, sp in (processes.get("spread") or {}).items():
        between, within = sp.get("between_process_cv"), sp.get("within_process_cv")
        if between is None and within is None:
            continue
        fmt = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
        yield f"  {name}: between processes CV {fmt(between)}, within a process CV {fmt(within)}"
    line = comparison_outlook(processes)
    if line:
        yield f"  {line}"


#: Timing metrics ``fastprof compare`` tests for a generation result (Holm over all of them).
COMPARED_METRICS = 7


def comparison_outlook(processes: dict[str, Any] | None, metric: str = "itl_s") -> str | None:
    """What comparing two runs like this one could tell apart: the change in ``metric`` that
    ``fastprof compare`` would catch 95% of the time if the other side spread as much between its
    processes (:func:`fastprof.analysis.compare.detectable_change_pct`, Holm over
    :data:`COMPARED_METRICS`), and, when that exceeds the 20% target, about how many processes a
    side would reach it. None without the spread."""
    from fastprof.analysis.compare import TARGET_EFFECT_PCT, TARGET_POWER, detectable_change_pct, units_for

    n = int((processes or {}).get("count") or 0)
    cv = (((processes or {}).get("spread") or {}).get(metric) or {}).get("between_process_cv")
    if n < 2 or cv is None or not np.isfinite(cv) or cv <= 0:
        return None
    sd_log = float(np.sqrt(np.log1p(cv * cv)))  # the spread of the logs of a log-normal of this CV
    se, df = sd_log * np.sqrt(2.0 / n), 2.0 * n - 2.0
    pct = detectable_change_pct(se, df, tests=COMPARED_METRICS)
    text = (f"compared with another run of {n} processes spread like this one, a change in {metric} of about "
            f"{pct:.0f}% or more would be caught {TARGET_POWER:.0%} of the time")
    if pct > TARGET_EFFECT_PCT:
        text += f"; for {TARGET_EFFECT_PCT:g}%, about {units_for(pct, n)} processes a side"
    return text


def host_lines(host: dict[str, Any] | None, host_path: dict[str, Any] | None = None, top: int = 3) -> Iterator[str]:
    """The console's host breakdown (rich markup): where each decode step's host time goes by
    CUDA API and by place, launch-to-kernel delays, the modules with the most self time, the
    tracing's cost, and the host path over the timed iterations."""
    from rich.markup import escape

    from fastprof.analysis import host as _host

    if host:
        if not host.get("available"):
            yield f"[dim]host trace unavailable: {escape(str(host.get('reason')))}[/dim]"
        else:
            yield f"[bold]host[/bold]: {escape(_host.summary_line(host) or '')}"
            api = host.get("api") or {}
            step = (host.get("step_s") or {}).get("mean") or 0.0
            if api.get("available"):
                parts = api.get("parts_s") or {}
                shown = ", ".join(f"{_host.PART_LABELS[p]} {v / step:.0%}" for p, v in parts.items()
                                  if step and v >= 0.005 * step)
                yield "  by CUDA API: " + escape(shown)
                lk = api.get("launch_to_kernel_s") or {}
                if lk:
                    text = f"launch to kernel start: median {lk['p50'] * 1e6:.0f} us"
                    if api.get("gpu_waiting_share") is not None:
                        text += f"; the GPU was idle, waiting for the launch, for {api['gpu_waiting_share']:.0%} of kernels"
                    yield "  " + escape(text)
            else:
                yield f"  [dim]CUDA API calls: {escape(str(api.get('reason')))}[/dim]"
            loop = host.get("loop") or {}
            if loop.get("available"):
                segs = ", ".join(f"{_host.LOOP_LABELS[p].split(' (')[0]} {_host.ms_text(v)}"
                                 for p, v in (loop.get("parts_s") or {}).items() if v is not None)
                yield "  generate loop: " + escape(segs)
            mods = host.get("modules") or {}
            if mods.get("available"):
                rows = sorted(mods.get("rows") or [], key=lambda r: -(r.get("self_s_per_step") or 0))[:top]
                if rows:
                    yield "  most self time: " + escape(", ".join(
                        f"{r['name'] or 'model'} {_host.ms_text(r['self_s_per_step'])}" for r in rows))
            else:
                yield f"  [dim]modules: {escape(str(mods.get('reason')))}[/dim]"
            py = host.get("python")
            if py and py.get("available"):
                top = (py.get("functions") or [])[:top]
                yield "  Python samples (py-spy), most self time per step: " + escape(", ".join(
                    f"{f['function']} {_host.ms_text(f['self_s_per_step'])}" for f in top))
            elif py:
                yield f"  [dim]Python samples: {escape(str(py.get('reason')))}[/dim]"
            cost = f"{host.get('iterations', 0)} traced iteration(s)"
            added = host.get("added_s_per_step")
            if added is not None:
                cost += f", step {_host.ms_text(step)} traced vs {_host.ms_text(host.get('itl_s_untraced'))} untraced "
                cost += (f"(tracing adds {_host.ms_text(added)})" if added >= 0 else
                         "(faster traced than untraced: the machine's speed changed more than tracing costs)")
            yield f"  [dim]{escape(cost)}[/dim]"
    line = _host.host_path_line(host_path) if host_path else None
    if line:
        yield f"[dim]{escape(line)}[/dim]"


def ms_text(v: Any) -> str:
    """Seconds as milliseconds with three decimals ('-' for None)."""
    return "-" if v is None else f"{v * 1e3:,.3f}"


def ratio_text(row: dict[str, Any] | None) -> str:
    """A speed-up row (:func:`fastprof.analysis.speculative.speedup`) as ``1.23x (1.10-1.40)``."""
    if not row or row.get("ratio") is None:
        return "-"
    text = f"{row['ratio']:.2f}x"
    if row.get("ci95_low") is not None and row.get("ci95_high") is not None:
        text += f" ({row['ci95_low']:.2f}-{row['ci95_high']:.2f})"
    return text


def step_lines(steps: dict[str, Any] | None) -> Iterator[str]:
    """The console's lines of a result's ``steps`` section (rich markup): tokens per step and their
    distribution, acceptance, the step split into draft, verification and the loop's rest per
    clock, the traced iterations' split, the speed-up; nothing for plain decoding."""
    from rich.markup import escape

    if not steps or not steps.get("speculative"):
        return
    tps = steps.get("tokens_per_step") or {}
    dist = ", ".join(f"{n}: {c}" for n, c in sorted((tps.get("distribution") or {}).items(), key=lambda x: int(x[0])))
    acc = steps.get("acceptance_rate")
    text = f"{steps.get('method')}, {tps.get('mean') or 0:.2f} tokens per step (steps by tokens emitted: {dist})"
    if acc is not None:
        text += (f"; acceptance {acc:.0%} ({steps.get('accepted_per_step') or 0:.2f} of "
                 f"{steps.get('proposed_per_step') or 0:.2f} proposed draft tokens per step)")
    yield f"[bold]steps[/bold]: {escape(text)}"
    for clock in ("host", "device"):
        c = steps.get(clock) or {}
        if c.get("step_s") is None:
            continue
        parts = [f"step {ms_text(c['step_s'])} ms"]
        if c.get("draft_s") is not None:
            share = c["draft_s"] / c["step_s"] if c["step_s"] else 0.0
            parts.append(f"draft {ms_text(c['draft_s'])} ms ({share:.0%})")
            parts.append(f"verify {ms_text(c.get('verify_s'))} ms")
            if c.get("other_s") is not None:
                parts.append(f"loop {ms_text(c['other_s'])} ms")
        yield f"  {clock} clock, per decode step: " + escape(", ".join(parts))
    traced = steps.get("traced") or {}
    k = traced.get("kernels") or {}
    if k.get("draft_busy_s_per_step") is not None:
        yield ("  " + escape(f"kernel trace, GPU busy per decode step: draft {ms_text(k['draft_busy_s_per_step'])} ms "
                             f"({k.get('draft_kernels_per_step', 0):.0f} kernels), verify "
                             f"{ms_text(k.get('verify_busy_s_per_step'))} ms "
                             f"({k.get('verify_kernels_per_step', 0):.0f} kernels)"))
    h = traced.get("host") or {}
    if h.get("draft_model_s_per_step") is not None:
        yield ("  " + escape(f"host trace, the target model's forward time per decode step: inside the draft "
                             f"{ms_text(h['draft_model_s_per_step'])} ms, inside the verification "
                             f"{ms_text(h.get('verify_model_s_per_step'))} ms"))
    speed = steps.get("speedup") or {}
    if speed:
        yield ("  " + escape(f"speed-up against plain decoding ({speed.get('baseline')}, same run): end to end "
                             f"{ratio_text(speed.get('e2e_latency_s'))}, per output token "
                             f"{ratio_text(speed.get('tpot_s'))}"))


def kernel_lines(kernels: dict[str, Any] | None, top: int = 5) -> Iterator[str]:
    """The console's compact kernel breakdown (rich markup): idle share, kernels per token, time by
    class, the traced ITL beside the untraced one, and the top decode kernels."""
    from rich.markup import escape

    from fastprof.analysis.kernels import CLASS_LABELS

    if not kernels:
        return
    if not kernels.get("available"):
        yield f"[dim]kernel trace unavailable: {escape(str(kernels.get('reason')))}[/dim]"
        return
    parts = []
    if kernels.get("idle_share") is not None:
        parts.append(f"GPU idle {kernels['idle_share']:.0%} of each decode step")
    if kernels.get("busy_s_per_step") is not None:
        parts.append(f"busy {kernels['busy_s_per_step'] * 1e3:.3f} ms")
    if kernels.get("kernels_per_token") is not None:
        parts.append(f"{kernels['kernels_per_token']:.0f} kernels per token")
    yield f"[bold]kernels[/bold]: {escape('; '.join(parts))}"
    shares = sorted(((v, k) for k, v in (kernels.get("class_share") or {}).items() if v > 0), reverse=True)
    if shares:
        yield "  by class: " + escape(", ".join(f"{CLASS_LABELS.get(k, k)} {v:.0%}" for v, k in shares))
    traced, untraced = kernels.get("itl_s_traced"), kernels.get("itl_s_untraced")
    how = f"{kernels.get('iterations', 0)} traced iteration(s)"
    if kernels.get("traced_timed"):
        how = "the timed iterations were traced: their numbers include the tracer's cost"
    elif traced and untraced:
        how += f", ITL {traced * 1e3:.3f} ms traced vs {untraced * 1e3:.3f} ms untraced ({traced / untraced:.2f}x)"
    drops = f", {kernels['dropped']} records dropped" if kernels.get("dropped") else ""
    yield f"  [dim]{escape(how)}; timestamps: {escape(str(kernels.get('timestamp_method')))}{escape(drops)}[/dim]"
    for k in (kernels.get("top_decode") or [])[:top]:
        name = k["name"] if len(k["name"]) <= 70 else k["name"][:67] + "..."
        yield (f"  {escape(name)}  [dim]{k['class']}, {k['count']}x, mean {k['mean_ns'] / 1e3:.1f} us, "
               f"{k['share']:.0%}[/dim]")
