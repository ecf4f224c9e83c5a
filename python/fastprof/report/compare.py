"""Comparison of results files: configurations matched, metrics compared, a console table and JSON.

The statistics are :mod:`fastprof.analysis.compare`'s; this module finds the values to compare
in two results documents and presents the verdicts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from fastprof.analysis.compare import (
    RECOMMENDED_PROCESSES,
    TARGET_EFFECT_PCT,
    TARGET_POWER,
    TOO_LITTLE,
    Row,
    adjust,
    compare_metric,
    detectable_change_pct,
    units_needed,
)
from fastprof.report.quantization import methods_compared
from fastprof.results.io import json_safe, write_atomic
from fastprof.results.layout import Column, console_width, fit_tables
from fastprof.results.processes import iteration_table, process_count, process_labels
from fastprof.results.result import BenchmarkResult
from fastprof.results.sweep import Run, Sweep
from fastprof.results.units import display_unit

HARDWARE_COMPARED = ("energy_per_token_j",)


class CompareError(ValueError):
    """Files that cannot be compared (no common configuration, an unknown metric)."""


def unit_values(result: BenchmarkResult, metric: str, clock: str = "host", unit: str = "iteration",
                table: dict[str, np.ndarray] | None = None) -> np.ndarray | None:
    """The values a comparison tests: one per unit, recomputed from the stored timestamps; None
    when the result does not have the metric.

    ``unit="iteration"``: one value per iteration (``itl_s``: the iteration's median gap; gaps
    are never separate samples). ``unit="process"``: the median of those per worker process
    (needs a result of ``fastprof run --processes N``). Serving results: one value per request
    (``itl_s``: the request's median gap). Energy: one value per iteration (or process).
    ``table``: the result's :func:`iteration_table` on ``clock``, when the caller already has it."""
    if result.kind == "serving":
        from fastprof.analysis.serving import request_metrics

        per = [request_metrics(r) for r in (result.serving or {}).get("requests") or []]
        vals = [float(np.median(m["itl_s"])) if metric == "itl_s" and m["itl_s"] else m.get(metric)
                for m in per]
        arr = np.asarray([v for v in vals if v is not None and not isinstance(v, list)], dtype=np.float64)
        return arr if arr.size else None
    vals = _per_iteration(result, metric, clock, table)
    if vals is None:
        return None
    vals = _per_unit(result, vals, unit)
    if vals is None:
        return None
    vals = vals[np.isfinite(vals)]
    return vals if vals.size else None


def _per_iteration(result: BenchmarkResult, metric: str, clock: str,
                   table: dict[str, np.ndarray] | None) -> np.ndarray | None:
    if metric in HARDWARE_COMPARED:
        rows = (result.hardware or {}).get("per_iteration") or []
        return np.asarray([r.get(metric) if r.get(metric) is not None else np.nan for r in rows], dtype=np.float64)
    table = table if table is not None else iteration_table(result, clock)
    if table is None or metric not in table:
        return None
    return np.asarray(table[metric], dtype=np.float64)


def _per_unit(result: BenchmarkResult, vals: np.ndarray, unit: str) -> np.ndarray | None:
    if unit != "process":
        return vals
    labels = process_labels(result)
    if labels is None or labels.size != vals.size:
        return None
    return np.asarray([np.nanmedian(vals[labels == p]) if np.isfinite(vals[labels == p]).any() else np.nan
                       for p in np.unique(labels)])


#: The device metrics of the kernel trace, beside ``gpu_<class>_s_per_step`` for each kernel class:
#: the GPU's busy time per decode step and the kernels per step (medians over the process's traced
#: decode steps), one value per worker process (:func:`fastprof.results.processes.kernel_figures`).
DEVICE_METRICS = ("gpu_busy_s_per_step", "kernels_per_step")


def is_device_metric(name: str) -> bool:
    """Whether ``name`` is a device metric of the kernel trace (never adjusted for the host path)."""
    return name in DEVICE_METRICS or (name.startswith("gpu_") and name.endswith("_s_per_step"))


def process_kernels(result: BenchmarkResult) -> list[dict[str, Any]]:
    """The kernel figures of each worker process that has them (``processes.per_process[i].kernels``);
    empty for a single-process result or one without a kernel trace."""
    if result.kind == "serving" or process_count(result) < 2:
        return []
    return [pp["kernels"] for pp in (result.processes or {}).get("per_process") or [] if pp.get("kernels")]


def device_metrics(ra: BenchmarkResult, rb: BenchmarkResult) -> list[str]:
    """The device metrics two results can be compared on: both from at least two worker processes
    with a kernel trace each; a class's metric when every traced process of both sides ran kernels
    of it (ordered by A's time in it, largest first). Empty otherwise."""
    fa, fb = process_kernels(ra), process_kernels(rb)
    if len(fa) < 2 or len(fb) < 2:
        return []
    names = list(DEVICE_METRICS)
    common = set.intersection(*(set(f.get("class_s_per_step") or {}) for f in fa + fb))
    total = {c: sum((f.get("class_s_per_step") or {}).get(c, 0.0) for f in fa) for c in common}
    names += [f"gpu_{c}_s_per_step" for c in sorted(common, key=lambda c: (-total[c], c))]
    return names


def _kernel_value(figures: dict[str, Any], metric: str) -> float | None:
    if metric == "gpu_busy_s_per_step":
        v = figures.get("busy_s_per_step")
    elif metric == "kernels_per_step":
        v = figures.get("kernels_per_token")
    else:
        v = (figures.get("class_s_per_step") or {}).get(metric[len("gpu_"):-len("_s_per_step")])
    return float(v) if v is not None and np.isfinite(v) else None


def device_unit_values(result: BenchmarkResult, metric: str) -> np.ndarray | None:
    """One value of device metric ``metric`` per worker process with a kernel trace; None when
    fewer than two have it."""
    vals = [v for v in (_kernel_value(f, metric) for f in process_kernels(result)) if v is not None]
    return np.asarray(vals, dtype=np.float64) if len(vals) >= 2 else None


def process_values_by_pid(result: BenchmarkResult, metric: str, clock: str = "host",
                          table: dict[str, np.ndarray] | None = None) -> dict[int, float] | None:
    """The metric's value in each worker process of a ``fastprof run --processes N`` result, keyed
    by the process's pid (a timing metric: the median over its iterations; a device metric: its
    kernel figures); None for a single-process result or where a pid is unknown."""
    if result.kind == "serving" or process_count(result) < 2:
        return None
    per_process = (result.processes or {}).get("per_process") or []
    pids = {pp.get("process"): pp.get("pid") for pp in per_process}
    if any(v is None for v in pids.values()):
        return None
    if is_device_metric(metric):
        out = {pids[pp.get("process")]: _kernel_value(pp["kernels"], metric) for pp in per_process if pp.get("kernels")}
        return {k: v for k, v in out.items() if v is not None}
    per = _iterations_by_pid(result, metric, clock, table)
    if per is None:
        return None
    return {pid: float(np.nanmedian(v)) for pid, v in per.items() if np.isfinite(v).any()}


def paired_process_values(ra: BenchmarkResult, rb: BenchmarkResult, metric: str, clock: str = "host",
                          tables: Sequence[dict[str, np.ndarray] | None] = (None, None)
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """The metric's per-process values of two configurations of one run, aligned on the worker
    process that measured both (by pid); None below two common processes. Third: where every such
    process alternated the two configurations' timed iterations (``config.iteration_order``) and
    timed as many of each, each process's log ratio B/A as the median over its rounds of B's
    iteration against A's of the same round (its neighbour in time, so that what the machine did
    between the two cancels), else None."""
    va = process_values_by_pid(ra, metric, clock, tables[0])
    vb = process_values_by_pid(rb, metric, clock, tables[1])
    if va is None or vb is None:
        return None
    common = [pid for pid in va if pid in vb]
    if len(common) < 2:
        return None
    within = None
    if not is_device_metric(metric):
        within = _round_log_ratios(ra, rb, metric, clock, tables, common)
    return (np.asarray([va[p] for p in common], dtype=np.float64),
            np.asarray([vb[p] for p in common], dtype=np.float64), within)


def _iterations_by_pid(result: BenchmarkResult, metric: str, clock: str,
                       table: dict[str, np.ndarray] | None) -> dict[int, np.ndarray] | None:
    """Each worker process's per-iteration values, in the order it timed them, keyed by pid."""
    vals = _per_iteration(result, metric, clock, table)
    labels = process_labels(result)
    if vals is None or labels is None or labels.size != vals.size:
        return None
    pids = {pp.get("process"): pp.get("pid") for pp in (result.processes or {}).get("per_process") or []}
    return {int(pids[p]): vals[labels == p] for p in np.unique(labels) if pids.get(p) is not None}


def _round_log_ratios(ra: BenchmarkResult, rb: BenchmarkResult, metric: str, clock: str,
                      tables: Sequence[dict[str, np.ndarray] | None], pids: Sequence[int]) -> np.ndarray | None:
    if not all((r.config or {}).get("iteration_order") for r in (ra, rb)):
        return None
    ia, ib = _iterations_by_pid(ra, metric, clock, tables[0]), _iterations_by_pid(rb, metric, clock, tables[1])
    if ia is None or ib is None:
        return None
    out = []
    for pid in pids:
        a, b = ia.get(pid), ib.get(pid)
        if a is None or b is None or a.size != b.size:
            return None
        ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        out.append(float(np.median(np.log(b[ok]) - np.log(a[ok]))) if ok.any() else np.nan)
    return np.asarray(out, dtype=np.float64)


def paired_round_values(ra: BenchmarkResult, rb: BenchmarkResult, metric: str, clock: str = "host",
                        tables: Sequence[dict[str, np.ndarray] | None] = (None, None)
                        ) -> tuple[np.ndarray, np.ndarray] | None:
    """The metric's per-iteration values of two configurations whose timed iterations alternated
    in one process (``config.iteration_order``, ``fastprof run --processes 1``), aligned by round:
    A's i-th iteration with B's i-th, its neighbour. None for results of several processes
    (paired by process instead), results that did not alternate, or unequal counts."""
    if any(r.kind == "serving" or process_count(r) > 1 or not (r.config or {}).get("iteration_order")
           for r in (ra, rb)):
        return None
    va = unit_values(ra, metric, clock, "iteration", table=tables[0])
    vb = unit_values(rb, metric, clock, "iteration", table=tables[1])
    if va is None or vb is None or va.size != vb.size or va.size < 2:
        return None
    return va, vb


def split_by(sweep: Sweep, key: str) -> list[tuple[Any, Sweep]]:
    """The configurations of one results file split by the value of config key ``key``: one sweep
    per value, in the order of the run's parameters (the first is the baseline)."""
    runs = sweep.ok_runs
    if not any(key in r.config for r in runs):
        keys = sorted({k for r in runs for k in r.config
                       if len({json.dumps(x.config.get(k), default=str) for x in runs}) > 1})
        raise CompareError(f"no configuration has the config key {key!r}; "
                           + (f"the keys that vary in this file: {', '.join(keys)}" if keys
                              else "this file has one configuration"))
    order = list((sweep.parameters or {}).get(key) or [])
    for r in runs:
        if r.config.get(key) not in order:
            order.append(r.config.get(key))
    sides = []
    for value in order:
        side = Sweep(environment=sweep.environment, parameters=dict(sweep.parameters or {}))
        for r in runs:
            if r.config.get(key) == value:
                side.add_ok(dict(r.config), r.result)
        if side.ok_runs:
            sides.append((value, side))
    if len(sides) < 2:
        raise CompareError(f"every configuration has the same {key} ({order[0]!r}): nothing to compare")
    return sides


#: The host-path figures a comparison can adjust for, in the order tried by default: a torch
#: operation's dispatch and launch (the path host-bound decode takes hundreds of times a step), a
#: driver launch, a fixed Python loop.
COVARIATES = ("torch_op_s", "launch_s", "python_loop_s")


def covariate_values(result: BenchmarkResult, name: str) -> np.ndarray | None:
    """The host-path calibration ``name`` taken after each timed iteration (``host_path``), one per
    iteration in the order of ``result.iterations``; None when the result lacks it."""
    rows = (result.host_path or {}).get("iterations") or []
    if not rows or len(rows) != len(result.iterations):
        return None
    vals = np.asarray([((r.get("calibration") or {}).get(name) or np.nan) for r in rows], dtype=np.float64)
    return vals if np.isfinite(vals).any() else None


def choose_covariate(ra: BenchmarkResult, rb: BenchmarkResult, wanted: str | None = "auto") -> str | None:
    """The covariate both results carry: ``wanted``, or with ``"auto"`` the first of
    :data:`COVARIATES` that both have; None for ``None``/``"none"`` or when neither has one."""
    if wanted in (None, "none"):
        return None
    names = COVARIATES if wanted == "auto" else (wanted,)
    for name in names:
        if covariate_values(ra, name) is not None and covariate_values(rb, name) is not None:
            return name
    return None


def paired_units(result: BenchmarkResult, metric: str, clock: str, unit: str, covariate: np.ndarray | None,
                 table: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The metric's unit values and the covariate's (``covariate``: its value per iteration, from
    :func:`covariate_values`), unit by unit (a process's covariate is the median over its
    iterations), keeping the units where both are finite."""
    if result.kind == "serving":
        return None
    vals, cov = _per_iteration(result, metric, clock, table), covariate
    if vals is None or cov is None or vals.size != cov.size:
        return None
    vals, cov = _per_unit(result, vals, unit), _per_unit(result, cov, unit)
    if vals is None or cov is None:
        return None
    ok = np.isfinite(vals) & np.isfinite(cov)
    return (vals[ok], cov[ok]) if ok.any() else None


def choose_unit(ra: BenchmarkResult, rb: BenchmarkResult) -> str:
    """``process`` when both results come from at least two worker processes, ``request`` for
    serving, else ``iteration``."""
    if ra.kind == "serving" or rb.kind == "serving":
        return "request"
    return "process" if process_count(ra) >= 2 and process_count(rb) >= 2 else "iteration"


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
    #: The host breakdowns (the ``host`` section) of matched runs that both have one.
    host: list[KernelDelta] = field(default_factory=list)
    #: What each side ran, when the matched runs differ in quantization (method, backend, weights).
    about: list[str] = field(default_factory=list)
    #: The significance level the rows were decided at (their detectable changes use it).
    alpha: float = 0.05
    #: The configurations whose kernel figures were tested over worker processes (device metric rows).
    kernels_tested: list[str] = field(default_factory=list)


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


def host_figures(result: BenchmarkResult) -> dict[str, tuple[float, str]] | None:
    """A result's host breakdown per decode step as (value, unit) by item: the traced step, each
    part by CUDA API (kernel launches, waiting for the GPU, Python and framework, ...), launches
    per step and the cost of one, the generate loop outside forward, and a decoder layer; None
    without a host section (:mod:`fastprof.analysis.host`)."""
    from fastprof.analysis.host import PART_LABELS

    h = result.host or {}
    if not h.get("available"):
        return None
    out: dict[str, tuple[float, str]] = {"host step": ((h.get("step_s") or {}).get("mean") or 0.0, "s")}
    api = h.get("api") or {}
    if api.get("available"):
        for part, v in (api.get("parts_s") or {}).items():
            if v or part in ("launch", "sync", "python_framework"):
                out[PART_LABELS.get(part, part)] = (float(v), "s")
        launches = (api.get("calls_per_step") or {}).get("launch")
        if launches is not None:
            out["launches / step"] = (float(launches), "count")
        if (api.get("launch_s") or {}).get("mean") is not None:
            out["one launch"] = (float(api["launch_s"]["mean"]), "s")
    loop = h.get("loop") or {}
    if loop.get("available") and loop.get("outside_forward_s") is not None:
        out["loop outside forward"] = (float(loop["outside_forward_s"]), "s")
    mods = h.get("modules") or {}
    if mods.get("available") and mods.get("layer_s_each") is not None:
        out["one decoder layer"] = (float(mods["layer_s_each"]), "s")
    return out


def _deltas(config: str, fa: dict[str, tuple[float, str]] | None,
            fb: dict[str, tuple[float, str]] | None) -> list[KernelDelta]:
    if fa is None or fb is None:
        return []
    return [KernelDelta(config, item, va, fb[item][0], unit) for item, (va, unit) in fa.items() if item in fb]


def _kernel_deltas(config: str, ra: BenchmarkResult, rb: BenchmarkResult) -> list[KernelDelta]:
    return _deltas(config, kernel_figures(ra), kernel_figures(rb))


#: Config keys that older results files lack, with the value they meant (so an old file still
#: matches a new one of the same settings).
IMPLIED_CONFIG = {"quantization": "none", "speculative": "none"}


def _key(run: Run, ignore: Sequence[str]) -> str:
    config = {**IMPLIED_CONFIG, **run.config}
    return json.dumps({k: v for k, v in config.items() if k not in ignore}, sort_keys=True, default=str)


def compare_sweeps(a: Sweep, b: Sweep, *, metrics: Sequence[str] | None = None, clock: str = "host",
                   alpha: float = 0.05, ignore: Sequence[str] = (), min_effect_pct: float = 0.0,
                   names: tuple[str, str] = ("A", "B"), covariate: str | None = "auto",
                   paired: bool = False) -> Comparison:
    """Every configuration present in both (matched by config values, ``ignore`` left out) and
    every metric, compared over units (see :mod:`fastprof.analysis.compare`), with Holm's
    adjustment over all the rows. ``paired``: ``a`` and ``b`` are configurations of one run
    (:func:`split_by`), so each worker process's value of B is tested against its own value of A
    (:func:`fastprof.analysis.compare.paired_log_ratio`) wherever two or more processes measured both
    (where they alternated the two configurations' timed iterations, each process's ratio is the
    median over its rounds, :func:`paired_process_values`); in a one-process run whose
    configurations alternated their timed iterations, each iteration of B is tested against A's of
    the same round (:func:`paired_round_values`)."""
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
        if varying:
            return run.label(varying)
        return run.label([k for k in run.config if k != "model" and k not in ignore]) if ignore else run.label()

    available = []
    device = {id(ra): device_metrics(ra.result, rb.result) for ra, rb in pairs}
    for ra, rb in pairs:
        for name in list(ra.result.summary) + list(HARDWARE_COMPARED) + device[id(ra)]:
            if name not in available:
                available.append(name)
    if metrics is not None:
        unknown = [m for m in metrics if m not in available]
        if unknown:
            why = ""
            if any(is_device_metric(m) for m in unknown):
                why = ("; device metrics (gpu_busy_s_per_step, kernels_per_step, gpu_<class>_s_per_step) need a "
                       "kernel trace from at least two worker processes on each side (fastprof run --kernel-trace "
                       f"--processes {RECOMMENDED_PROCESSES})")
            timing = [m for m in available if m not in HARDWARE_COMPARED and not is_device_metric(m)]
            known = timing + list(HARDWARE_COMPARED) + [m for m in available if is_device_metric(m)]
            raise CompareError(f"unknown metric(s) {', '.join(map(repr, unknown))}; these files have: "
                               f"{', '.join(known)}{why}")
    rows: list[Row] = []
    kernels: list[KernelDelta] = []
    kernels_tested: list[str] = []
    host: list[KernelDelta] = []
    for ra, rb in pairs:
        kernels += _kernel_deltas(label(ra), ra.result, rb.result)
        host += _deltas(label(ra), host_figures(ra.result), host_figures(rb.result))
        unit = choose_unit(ra.result, rb.result)
        cov_name = choose_covariate(ra.result, rb.result, covariate)
        covs = [covariate_values(r.result, cov_name) if cov_name else None for r in (ra, rb)]
        # Each iteration's values, computed once per result rather than once per metric.
        tables = [iteration_table(r.result, clock) if r.result.kind != "serving" else None for r in (ra, rb)]
        for metric in metrics if metrics is not None else available:
            pair = None  # (A's values, B's, each pair's log ratio where measured inside the unit)
            if paired and unit == "process" and (not is_device_metric(metric) or metric in device[id(ra)]):
                pair = paired_process_values(ra.result, rb.result, metric, clock, tables)
            elif paired and unit == "iteration" and not is_device_metric(metric):
                rounds = paired_round_values(ra.result, rb.result, metric, clock, tables)
                pair = None if rounds is None else (*rounds, None)
            if pair is not None:
                rows.append(compare_metric(pair[0], pair[1], metric, config=label(ra), unit=unit, alpha=alpha,
                                           min_effect_pct=min_effect_pct, paired=True, log_ratios=pair[2]))
                if is_device_metric(metric) and label(ra) not in kernels_tested:
                    kernels_tested.append(label(ra))
                continue
            if is_device_metric(metric):
                # The kernel trace's figures, one per worker process: the GPU's time does not follow
                # the host's speed, so they are never adjusted for the host path.
                if unit != "process" or metric not in device[id(ra)]:
                    continue
                va, vb = device_unit_values(ra.result, metric), device_unit_values(rb.result, metric)
                if va is None or vb is None:
                    continue
                rows.append(compare_metric(va, vb, metric, config=label(ra), unit=unit, alpha=alpha,
                                           min_effect_pct=min_effect_pct))
                if label(ra) not in kernels_tested:
                    kernels_tested.append(label(ra))
                continue
            va = unit_values(ra.result, metric, clock, unit, table=tables[0])
            vb = unit_values(rb.result, metric, clock, unit, table=tables[1])
            if va is None or vb is None:
                continue
            cov = None
            if cov_name is not None and metric not in HARDWARE_COMPARED:
                pa = paired_units(ra.result, metric, clock, unit, covs[0], table=tables[0])
                pb = paired_units(rb.result, metric, clock, unit, covs[1], table=tables[1])
                if pa is not None and pb is not None:
                    va, vb, cov = pa[0], pb[0], (cov_name, pa[1], pb[1])
            rows.append(compare_metric(va, vb, metric, config=label(ra), unit=unit, alpha=alpha,
                                       min_effect_pct=min_effect_pct, covariate=cov))
    if not rows:
        raise CompareError(f"no metric could be compared on the {clock} clock (is it recorded in both files?)")
    rows = adjust(rows, alpha=alpha, min_effect_pct=min_effect_pct)
    return Comparison(names[0], names[1], rows,
                      unmatched_a=[label(r) for r in a.ok_runs if id(r) not in matched_a],
                      unmatched_b=[label(r) for r in b.ok_runs if id(r) not in matched_b], kernels=kernels,
                      host=host,
                      about=methods_compared([p[0] for p in pairs], [p[1] for p in pairs]), alpha=alpha,
                      kernels_tested=kernels_tested)


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
        plural = {"process": "processes", "iteration": "iterations", "request": "requests"}
        units = [plural.get(u, u) for u in sorted({r.unit for r in c.rows})]
        how = f"Welch's {1 - alpha:.0%} interval"
        if c.rows and all(r.paired for r in c.rows):
            if all(r.unit == "iteration" for r in c.rows):
                how = f"paired by round of alternating iterations (one process), t {1 - alpha:.0%} interval"
            elif any(r.paired_rounds for r in c.rows):
                how = (f"paired by worker process (each process measured both, its timing ratios the median over "
                       f"rounds of its alternating iterations), t {1 - alpha:.0%} interval")
            else:
                how = f"paired by worker process (each process measured both), t {1 - alpha:.0%} interval"
        console.print(escape(f"{c.other} vs {c.baseline}: B/A = ratio of geometric means over {' and '.join(units)}, "
                             f"{how}, p-value Holm-adjusted over {len(c.rows)} tests"),
                      highlight=False)
        width = console_width(console)
        configs, said = config_column([r.config or "-" for r in c.rows], width)
        for line in said:
            console.print(escape(line), highlight=False)
        columns = [Column("configuration", "left", key=True), Column("metric", "left", key=True),
                   Column("units A/B"), Column("A p50"), Column("B p50"), Column("B/A"),
                   Column(f"{1 - alpha:.0%} interval"), Column("p (Holm)"), Column("change"),
                   Column("verdict", "left")]
        rows, styles = [], []
        for r in c.rows:
            name = r.metric[:-len("_per_step")] if r.metric.endswith("_s_per_step") else r.metric  # device times
            unit, scale = display_unit(name, r.median_a) if name.endswith("_s") else ("", 1.0)
            fmt = (lambda v: f"{v * scale:,.3f} {unit}".strip()) if not name.endswith(("_per_s", "_per_step")) \
                else (lambda v: f"{v:,.1f}")
            flag = r.verdict
            if r.verdict == "regression" and threshold_pct is not None and r.worse_pct > threshold_pct:
                flag = f"REGRESSION > {threshold_pct:g}%"
            interval = "-" if not np.isfinite(r.ci_low) else f"{r.ci_low:.3f}-{r.ci_high:.3f}"
            p = "-" if not np.isfinite(r.p_adjusted) else f"{r.p_adjusted:.2g}"
            rows.append([r.config or "-", r.metric, f"{r.n_a}/{r.n_b} {r.unit[0]}", fmt(r.median_a),
                         fmt(r.median_b), f"{r.ratio:.3f}", interval, p, f"{r.change_pct:+.1f}%", flag])
            styles.append({"regression": "red", "improvement": "green"}.get(r.verdict))
        columns, rows = with_config_column(columns, rows, configs)
        for t in fit_tables(columns, rows, width=width, row_styles=styles):
            console.print(t)
        for line in c.about:
            console.print(escape(line), highlight=False)
        _print_adjustments(c, console, alpha)
        for note in notes(c):
            console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
        if c.kernels:
            _print_kernels(c, console)
        if c.host:
            _print_kernels(c, console, host=True)
        for label in c.unmatched_a:
            console.print(f"[dim]only in {escape(c.baseline)}: {escape(label)}[/dim]", highlight=False)
        for label in c.unmatched_b:
            console.print(f"[dim]only in {escape(c.other)}: {escape(label)}[/dim]", highlight=False)


#: A configuration label wider than this share of the console is abbreviated in compare's tables
#: (c1, c2, ... named above them): a key column of 78 characters at 80 columns left no room for a
#: single number, and rich elided every one.
CONFIG_COLUMN_SHARE = 0.25


def config_column(labels: Sequence[str], width: int) -> tuple[list[str] | None, list[str]]:
    """The configuration cells of a table's rows and the lines said above the table: no column and
    one line when every row has the same configuration (as ``fastprof report`` does), short names
    and one line per name when a label is wider than :data:`CONFIG_COLUMN_SHARE` of ``width``."""
    distinct = list(dict.fromkeys(labels))
    if len(distinct) == 1:
        return None, [f"configuration of every row: {distinct[0]}"]
    if max((len(x) for x in distinct), default=0) <= width * CONFIG_COLUMN_SHARE:
        return list(labels), []
    names = {x: f"c{i + 1}" for i, x in enumerate(distinct)}
    return [names[x] for x in labels], [f"{names[x]}: {x}" for x in distinct]


def with_config_column(columns: list[Column], rows: list[list[str]],
                       configs: list[str] | None) -> tuple[list[Column], list[list[str]]]:
    """``columns`` and ``rows`` (configuration first) with the cells of :func:`config_column`: the
    column dropped when it is None."""
    if configs is None:
        return columns[1:], [row[1:] for row in rows]
    return columns, [[cfg, *row[1:]] for cfg, row in zip(configs, rows)]


#: Below these a note is printed (bench/RESULTS.md, "Comparisons: false alarms and power"):
#: processes per side (:data:`fastprof.analysis.compare.RECOMMENDED_PROCESSES`), and iterations
#: per side.
RECOMMENDED_ITERATIONS = 10


#: A detectable change above this (percent) is not quoted: a 10x slowdown is 900%, so a figure
#: beyond it (2 processes a side on a CPU gave 356673284%, the t quantiles of one or two degrees of
#: freedom) says only that the data cannot detect any change of practical size, and the note says so.
PRACTICAL_CHANGE_PCT = 1000.0
#: The most processes a side :func:`processes_for_target` looks at.
MAX_PROCESSES_NEEDED = 100_000


def processes_for_target(row: Row, *, tests: int, alpha: float,
                         effect_pct: float = TARGET_EFFECT_PCT) -> int | None:
    """About how many processes a side would bring ``row``'s detectable change (over ``tests``
    tests) down to ``effect_pct``: the standard error shrinks as one over the square root of the
    processes and the degrees of freedom grow with them. :func:`units_needed` keeps the degrees of
    freedom, which is close enough at 5 a side but, at 2, asks for thousands where about 15 do.
    None when the spread is unknown or more than :data:`MAX_PROCESSES_NEEDED` would be needed."""
    n0 = min(row.n_a, row.n_b)
    if not (n0 >= 2 and np.isfinite(row.se_log) and row.se_log > 0 and np.isfinite(row.df) and row.df > 0):
        return None

    def detectable(n: int) -> float:
        return detectable_change_pct(row.se_log * np.sqrt(n0 / n), row.df * (n - 1) / (n0 - 1), alpha=alpha,
                                     tests=tests)

    if detectable(MAX_PROCESSES_NEEDED) > effect_pct:
        return None
    lo, hi = n0, MAX_PROCESSES_NEEDED  # detectable(lo) may already meet it; detectable(hi) does
    if detectable(lo) <= effect_pct:
        return lo
    while hi - lo > 1:  # the detectable change falls as n grows
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if detectable(mid) <= effect_pct else (mid, hi)
    return hi


def notes(c: Comparison) -> list[str]:
    """One-line notes on what the comparison cannot see: drift with one process per side, or
    too few units for the calibrated targets."""
    out = []
    units = {r.unit for r in c.rows}
    if "iteration" in units:
        out.append("one process per side: the unit is the iteration, so run-to-run drift is not covered and a "
                   "difference between two runs of the same code can show as significant; measure both sides "
                   f"with 'fastprof run --processes {RECOMMENDED_PROCESSES}'")
    few_p = [r for r in c.rows if r.unit == "process" and min(r.n_a, r.n_b) < RECOMMENDED_PROCESSES]
    if few_p:
        n = min(min(r.n_a, r.n_b) for r in few_p)
        out.append(f"only {n} process(es) on a side: a real slowdown can go unflagged; {RECOMMENDED_PROCESSES} a side "
                   "caught 99-100% of injected 20% slowdowns on an idle CPU, 3 only 58-67% (bench/RESULTS.md)")
    weak = sorted((r for r in c.rows if r.unit == "process" and np.isfinite(r.detectable_pct)
                   and r.detectable_pct > TARGET_EFFECT_PCT), key=lambda r: -r.detectable_pct)
    hopeless = [r for r in weak if r.detectable_pct > PRACTICAL_CHANGE_PCT]
    if hopeless:
        tests = sum(bool(np.isfinite(r.p_adjusted)) for r in c.rows)
        need = [processes_for_target(r, tests=tests, alpha=c.alpha) for r in weak]
        n = min(min(r.n_a, r.n_b) for r in hopeless)
        shown = ", ".join(r.metric for r in hopeless[:3])
        more = f" and {len(hopeless) - 3} more" if len(hopeless) > 3 else ""
        rest = [r for r in weak if r.detectable_pct <= PRACTICAL_CHANGE_PCT]
        also = "; ".join(f"{r.metric} about {r.detectable_pct:.0f}%" for r in rest[:3])
        reach = (f"about {max(need)} processes a side would catch a {TARGET_EFFECT_PCT:g}% change"
                 if None not in need else
                 f"no number of processes up to {MAX_PROCESSES_NEEDED:,} would catch a {TARGET_EFFECT_PCT:g}% change")
        out.append(f"too little data for any change of practical size: with {n} process(es) a side and the spread "
                   f"between them seen here, {shown}{more} would need a change of more than "
                   f"{PRACTICAL_CHANGE_PCT:g}% to be caught {TARGET_POWER:.0%} of the time"
                   f"{f' ({also})' if also else ''}; {reach}")
    elif weak:
        need = max(units_needed(r) or 0 for r in weak)
        shown = ", ".join(f"{r.metric} (about {r.detectable_pct:.0f}% is)" for r in weak[:3])
        more = f" and {len(weak) - 3} more" if len(weak) > 3 else ""
        out.append(f"too little data for the calibrated target: with the spread between processes seen here, a "
                   f"{TARGET_EFFECT_PCT:g}% change would be caught less than {TARGET_POWER:.0%} of the time in "
                   f"{shown}{more}; about {need} processes a side would reach it")
    few_i = [r for r in c.rows if r.unit == "iteration" and min(r.n_a, r.n_b) < RECOMMENDED_ITERATIONS]
    if few_i:
        out.append(f"only {min(min(r.n_a, r.n_b) for r in few_i)} iteration(s) on a side: too few for a reliable test")
    if any(r.verdict == TOO_LITTLE for r in c.rows):
        out.append("some metrics have fewer than two units on a side and were not tested")
    return out


def _print_adjustments(c: Comparison, console: Any, alpha: float) -> None:
    """The covariate adjustment beside the unadjusted figures, for every row that had one."""
    from rich.markup import escape

    adjusted = [r for r in c.rows if r.adjustment]
    if not adjusted:
        return
    names = sorted({r.adjustment["covariate"] for r in adjusted})
    console.print(escape(f"adjusted for the host path measured beside each unit ({', '.join(names)}; CUPED, the "
                         "slope fitted within each side): the table above shows the adjusted ratio, interval and "
                         "test where it applied; unadjusted beside it here"), highlight=False)
    columns = [Column("configuration", "left", key=True), Column("metric", "left", key=True),
               Column("unadjusted B/A"), Column(f"{1 - alpha:.0%} interval"), Column("p"),
               Column("adjusted B/A"), Column("variance removed")]
    rows = []
    for r in adjusted:
        info, plain = r.adjustment, r.adjustment.get("unadjusted") or {}
        interval = ("-" if not np.isfinite(plain.get("ci_low", np.nan))
                    else f"{plain['ci_low']:.3f}-{plain['ci_high']:.3f}")
        p = plain.get("p_value")
        applied = info.get("applied")
        rows.append([r.config or "-", r.metric, f"{plain.get('ratio', float('nan')):.3f}", interval,
                     "-" if p is None or not np.isfinite(p) else f"{p:.2g}",
                     f"{r.ratio:.3f}" if applied else "-",
                     f"{info.get('variance_reduction', 0.0):.0%}" if applied else "-"])
    configs, said = config_column([r.config or "-" for r in adjusted], console_width(console))
    for line in said:
        console.print(escape(line), highlight=False)
    columns, rows = with_config_column(columns, rows, configs)
    for t in fit_tables(columns, rows, width=console_width(console)):
        console.print(t)
    # Why a row was not adjusted is a sentence: below the table, wrapped, never cut to the column.
    for i, r in enumerate(adjusted):
        if not r.adjustment.get("applied") and r.adjustment.get("reason"):
            where = f"{r.metric} ({configs[i]})" if configs is not None else r.metric
            console.print(f"[yellow]note:[/yellow] {escape(where)}: {escape(str(r.adjustment['reason']))}",
                          highlight=False)
    for r in adjusted:
        if r.adjustment.get("covariate_changed"):
            console.print(f"[yellow]note:[/yellow] {escape(r.metric)}: {escape(r.adjustment['covariate_changed'])}",
                          highlight=False)


def _print_kernels(c: Comparison, console: Any, *, host: bool = False) -> None:
    from rich.markup import escape

    if host:
        console.print(escape(f"host breakdown of the traced iterations, per decode step (means, {c.other} vs "
                             f"{c.baseline}; no test of significance: the trace covers few iterations)"),
                      highlight=False)
    else:
        configs = list(dict.fromkeys(d.config for d in c.kernels))
        tested = [x for x in configs if x in c.kernels_tested]
        if not tested:
            why = ("no test of significance: with one process a side the trace covers only its few traced "
                   "iterations, and device metrics are tested over worker processes (fastprof run --kernel-trace "
                   f"--processes {RECOMMENDED_PROCESSES} on both sides)")
        elif len(tested) == len(configs):
            why = ("the first process's trace; gpu_busy_s_per_step, kernels_per_step and gpu_<class>_s_per_step "
                   "above test them over the worker processes")
        else:
            why = ("the first process's trace; tested over worker processes above for "
                   f"{', '.join(x or '-' for x in tested)} only: the others have one process a side or no trace "
                   "in every process, and no test is possible without worker processes")
        console.print(escape(f"kernel breakdown of the traced iterations, per decode step (medians, {c.other} vs "
                             f"{c.baseline}; {why})"), highlight=False)
    columns = [Column("configuration", "left", key=True), Column("item", "left", key=True), Column("A"),
               Column("B"), Column("change")]
    rows = []
    deltas = c.host if host else c.kernels
    for d in deltas:
        if d.unit == "s":
            unit, scale = display_unit("busy_s", d.a)
            fmt = lambda v: f"{v * scale:,.3f} {unit}"  # noqa: E731
        elif d.unit == "share":
            fmt = lambda v: f"{v:.1%}"  # noqa: E731
        else:
            fmt = lambda v: f"{v:,.1f}"  # noqa: E731
        change = "-" if d.change_pct is None else f"{d.change_pct:+.1f}%"
        rows.append([d.config or "-", d.item, fmt(d.a), fmt(d.b), change])
    configs, said = config_column([d.config or "-" for d in deltas], console_width(console))
    for line in said:
        console.print(escape(line), highlight=False)
    columns, rows = with_config_column(columns, rows, configs)
    for t in fit_tables(columns, rows, width=console_width(console)):
        console.print(t)


def write_json(comparisons: Sequence[Comparison], path: str, *, alpha: float) -> None:

    doc = {"kind": "comparison", "alpha": alpha, "test": "welch-t on log unit values, holm-adjusted",
           "comparisons": [{"baseline": c.baseline, "other": c.other, "rows": [asdict(r) for r in c.rows],
                            "unmatched_baseline": c.unmatched_a, "unmatched_other": c.unmatched_b,
                            "notes": notes(c), "about": c.about,
                            "kernels": [{**asdict(d), "change_pct": d.change_pct} for d in c.kernels],
                            "kernels_tested": c.kernels_tested,
                            "host": [{**asdict(d), "change_pct": d.change_pct} for d in c.host]}
                           for c in comparisons]}
    write_atomic(path, json.dumps(json_safe(doc), indent=1, allow_nan=False))
