"""``fastprof run --processes N``: every configuration measured by N fresh worker processes.

Run-to-run drift (another process, another memory layout, another neighbour on the machine) is
larger than the noise between iterations of one process, and one process cannot see it. As
pyperf does, fastprof starts N worker processes one after the other, each running the whole
sweep with its own model load, warm-up and iterations (``fastprof run ... --processes 1`` into a
temporary file), and merges each configuration's N results (:func:`fastprof.results.processes.merge_processes`):
every iteration kept with its process, summaries over all, and the spread between processes
beside the spread within them. ``fastprof compare`` then uses the processes as its unit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from fastprof.analysis.compare import RECOMMENDED_PROCESSES
from fastprof.measure.runner import SweepOutcome
from fastprof.results.processes import merge_processes
from fastprof.results.sweep import Sweep, load

#: Worker processes per configuration when ``--processes`` is not given (a plain run: not
#: ``--serving``, not under torchrun).
DEFAULT_PROCESSES = RECOMMENDED_PROCESSES


def default_processes(given: int | None, distributed_mode: str | None = None, serving: bool = False) -> int:
    """``--processes`` as given, else :data:`DEFAULT_PROCESSES`; 1 for serving and torchrun runs,
    where one process serves every rate or torchrun starts the processes."""
    if given is not None:
        return int(given)
    return 1 if serving or distributed_mode is not None else DEFAULT_PROCESSES


#: Options of ``fastprof run`` that the parent sets for its workers (value-taking).
_PARENT_OPTIONS = ("--processes", "--output", "-o")


def worker_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` (the parent's ``run`` arguments) without the options the parent sets itself."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _PARENT_OPTIONS:
            skip = True
            continue
        if any(arg.startswith(o + "=") for o in _PARENT_OPTIONS if o.startswith("--")) or \
                (arg.startswith("-o") and len(arg) > 2 and not arg.startswith("--")):
            continue
        out.append(arg)
    return out


class WorkerInputError(RuntimeError):
    """A worker process refused its input (exit code 2): the message is its one-line error."""


def _key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def run_processes(args: Any, argv: Sequence[str], *, command: Sequence[str]) -> SweepOutcome:
    """Runs the sweep of ``args`` in ``args.processes`` worker processes and writes the merged
    results to ``args.output``."""
    from rich.console import Console
    from rich.markup import escape

    n = int(args.processes)
    console = Console(stderr=True, quiet=args.quiet, soft_wrap=True)
    rest = worker_argv(argv[1:] if argv and argv[0] == "run" else argv)
    sweeps: list[Sweep | None] = []
    pids: list[int | None] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fastprof-workers-") as tmp:
        for p in range(n):
            out = Path(tmp) / f"process-{p}.json"
            cmd = [sys.executable, "-m", "fastprof", "run", *rest, "--processes", "1", "--quiet", "--output", str(out)]
            console.print(escape(f"worker process {p + 1}/{n}"), highlight=False)
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                _, err = proc.communicate()
            except KeyboardInterrupt:
                proc.kill()
                proc.wait()
                raise
            pids.append(proc.pid)
            if proc.returncode == 130:
                raise KeyboardInterrupt
            if not out.exists() and proc.returncode == 2:
                # Bad input (the worker's one-line usage error): the same for every process.
                lines = (err or "").strip().splitlines() or ["bad input"]
                errors_said = [ln for ln in lines if ln.startswith("fastprof: error:")]
                raise WorkerInputError(errors_said[-1].removeprefix("fastprof: error:").strip() if errors_said
                                       else lines[-1])
            if not out.exists():
                last = (err or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
                errors.append(f"process {p}: {last[0]}")
                console.print(escape(f"  worker process {p + 1} wrote no results: {last[0]}"), style="red",
                              highlight=False)
                sweeps.append(None)
                continue
            sweeps.append(load(out))
            console.print(escape(f"  done in {time.perf_counter() - t0:.1f} s"), style="dim", highlight=False)
    ok = [(i, s) for i, s in enumerate(sweeps) if s is not None]
    if not ok:
        raise RuntimeError("no worker process produced results: " + "; ".join(errors))
    first = ok[0][1]
    merged = Sweep(environment=first.environment, parameters=dict(first.parameters), command=list(command),
                   complete=all(s.complete for _, s in ok))
    merged.parameters["processes"] = [n]
    failed = 0
    configs: list[dict[str, Any]] = []
    for _, s in ok:
        for run in s.runs:
            if _key(run.config) not in {_key(c) for c in configs}:
                configs.append(run.config)
    for config in configs:
        parts, part_pids, part_errors = [], [], []
        for i, s in ok:
            run = next((r for r in s.runs if _key(r.config) == _key(config)), None)
            if run is not None and run.result is not None:
                parts.append(run.result)
                part_pids.append(pids[i])
            elif run is not None:
                part_errors.append(f"process {i}: {(run.error or {}).get('type')}: {(run.error or {}).get('message')}")
        if not parts:
            failed += 1
            merged.add_failed(config, RuntimeError("; ".join(part_errors) or "no worker process ran it"))
            continue
        result = merge_processes(parts, pids=part_pids, seed=int(getattr(args, "seed", 0) or 0))
        missing = n - len(parts)
        if missing:
            result.warnings.append(f"{missing} of {n} worker process(es) did not measure this configuration"
                                   + (f" ({'; '.join(part_errors)})" if part_errors else ""))
        merged.add_ok(config, result)
    if len(merged.runs) == 1 and merged.runs[0].result is not None:
        merged.runs[0].result.save(args.output)
    else:
        merged.save(args.output)
    return SweepOutcome(merged, 1 if failed or errors else 0, failed, len(configs))
