"""The results file of ``fastprof run``: every configuration of a sweep in one document.

A sweep document (``kind: "sweep"``)::

    {
      "schema_version": 5,
      "kind": "sweep",
      "created": "2025-01-01T00:00:00+00:00",     # UTC, ISO 8601
      "complete": true,                            # false while running or after an interruption
      "command": ["fastprof", "run", ...],         # how it was made, when known
      "parameters": {"batch_size": [1, 4], ...},   # the swept axes, in order
      "environment": {...},                        # once for all runs (see fastprof.capture.environment)
      "runs": [
        {"index": 0, "config": {"batch_size": 1, ...}, "status": "ok", "error": null,
         "result": {...}},                         # BenchmarkResult.to_dict() without "environment"
        {"index": 1, "config": {...}, "status": "failed",
         "error": {"type": "OutOfMemoryError", "message": "..."}, "result": null}
      ]
    }

A single configuration is a sweep of one. A plain :class:`fastprof.BenchmarkResult` file (what
``result.save()`` writes) is read as a sweep of one too. The layout is written down as a JSON
Schema shipped with the package (``fastprof/results/schema/results-v5.schema.json``, see :func:`schema`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fastprof.results.io import (
    ResultsFileError,
    dataframe,
    json_safe,
    read_json,
    scalar,
    write_atomic,
)
from fastprof.results.result import SCHEMA_VERSION, BenchmarkResult

#: Configuration keys that name a run of ``fastprof run`` (the sweep axes and the model).
CONFIG_KEYS = ("model", "batch_size", "prompt_len", "max_new_tokens", "dtype", "quantization", "attn_implementation",
               "compile", "prompts", "speculative")

#: The ``speculative`` config value of plain decoding, the baseline of every speculative configuration.
PLAIN = "none"

SCHEMA_FILE = f"results-v{SCHEMA_VERSION}.schema.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def schema() -> dict[str, Any]:
    """The JSON Schema of the results file (sweep documents and single results)."""
    from importlib import resources

    text = resources.files("fastprof.results").joinpath("schema", SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def validate(doc: Any, *, source: str = "results") -> None:
    """Raises :class:`ResultsFileError` unless ``doc`` is a results document this fastprof reads.

    A ``schema_version`` newer than :data:`fastprof.SCHEMA_VERSION` is refused with a message
    saying so; the rest is checked against :func:`schema` with ``jsonschema`` when it is installed.
    """
    if not isinstance(doc, dict) or "schema_version" not in doc or "kind" not in doc:
        raise ResultsFileError(f"{source} is not a fastprof results file (no 'schema_version' and 'kind')")
    other = {"monitor": "a 'fastprof monitor' timeline", "selftest": "a 'fastprof selftest' report"}
    if isinstance(doc.get("kind"), str) and doc["kind"] in other:
        raise ResultsFileError(f"{source} is {other[doc['kind']]}, not a results file: report and compare read what "
                               "'fastprof run' or BenchmarkResult.save() write")
    version = doc["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultsFileError(f"{source}: 'schema_version' must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ResultsFileError(f"{source} has results schema version {version}, newer than this fastprof "
                               f"understands ({SCHEMA_VERSION}); upgrade fastprof to read it")
    try:
        import jsonschema
    except ImportError:  # the structural checks of from_dict still apply
        return
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
        raise ResultsFileError(f"{source} does not match the fastprof results schema at {where}: {message}")


@dataclass
class Run:
    """One configuration of a sweep: its config, whether it worked, and its result."""

    index: int
    config: dict[str, Any]
    status: str  # "ok" or "failed"
    error: dict[str, str] | None = None
    result: BenchmarkResult | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def label(self, keys: Any = None) -> str:
        keys = list(keys) if keys is not None else [k for k in self.config if k != "model"]
        return " ".join(f"{_short(k)}={self.config.get(k)}" for k in keys) or f"run {self.index}"

    def to_dict(self) -> dict[str, Any]:
        result = None
        if self.result is not None:
            result = self.result.to_dict()
            result.pop("environment", None)
        return json_safe({"index": self.index, "config": self.config, "status": self.status, "error": self.error,
                       "result": result})


_SHORT = {"batch_size": "bs", "prompt_len": "prompt", "max_new_tokens": "new", "attn_implementation": "attn"}


def _short(key: str) -> str:
    return _SHORT.get(key, key)


@dataclass
class Sweep:
    """Every configuration of one ``fastprof run``, with one environment."""

    environment: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    parameters: dict[str, list[Any]] = field(default_factory=dict)
    command: list[str] | None = None
    complete: bool = True
    created: str = field(default_factory=_now)
    schema_version: int = SCHEMA_VERSION

    # ---- building -----------------------------------------------------------------------
    def add_ok(self, config: dict[str, Any], result: BenchmarkResult) -> Run:
        run = Run(len(self.runs), dict(config), "ok", None, result)
        self.runs.append(run)
        return run

    def add_failed(self, config: dict[str, Any], exc: BaseException | str) -> Run:
        if isinstance(exc, BaseException):
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            error = {"type": type(exc).__name__, "message": message}
        else:
            error = {"type": "Error", "message": str(exc)}
        run = Run(len(self.runs), dict(config), "failed", error, None)
        self.runs.append(run)
        return run

    # ---- access -------------------------------------------------------------------------
    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def varying_keys(self) -> list[str]:
        """Config keys whose value differs between runs (all sweep axes with more than one value)."""
        keys: list[str] = []
        for run in self.runs:
            for k in run.config:
                if k not in keys:
                    keys.append(k)
        return [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True, default=str)
                                         for r in self.runs}) > 1]

    def baseline(self, run: Run) -> Run | None:
        """The plain-decoding run that ``run`` (a speculative configuration: config ``speculative``
        other than ``"none"``) is compared with: the ok run whose config is the same except
        ``speculative: "none"``. None when ``run`` is not speculative or has no such run."""
        value = run.config.get("speculative")
        if value in (None, PLAIN):
            return None
        want = json.dumps({**run.config, "speculative": PLAIN}, sort_keys=True, default=str)
        for other in self.ok_runs:
            if json.dumps(other.config, sort_keys=True, default=str) == want:
                return other
        return None

    def attach_speedups(self, seed: int = 0) -> int:
        """Puts into each speculative run's ``result.steps["speedup"]`` its speed-up against its
        :meth:`baseline` (:func:`fastprof.analysis.speculative.speedup`: plain over speculative
        end-to-end latency and time per output token, paired by worker process when both results
        have several). Returns how many runs got one."""
        from fastprof.analysis.speculative import speedup
        from fastprof.results.processes import iteration_table, process_labels

        done = 0
        for run in self.ok_runs:
            base = self.baseline(run)
            if base is None or run.result is None or base.result is None or run.result.steps is None:
                continue
            ta, tb = iteration_table(base.result), iteration_table(run.result)
            if ta is None or tb is None:
                continue
            out = speedup(ta, tb, base_process=process_labels(base.result), spec_process=process_labels(run.result),
                          seed=seed)
            out["baseline"] = base.label(["speculative"])
            run.result.steps["speedup"] = out
            done += 1
        return done

    def warnings(self) -> list[str]:
        """Every distinct warning of every run once, with the metrics and configurations it
        applies to (see :mod:`fastprof.results.warnings`)."""
        from fastprof.results.warnings import grouped

        keys = self.varying_keys
        several = len(self.runs) > 1 and bool(keys)
        return grouped((run.label(keys) if several else None, w)
                       for run in self.runs if run.result is not None for w in run.result.warnings)

    def rows(self) -> Iterator[dict[str, Any]]:
        """Flat rows: one per run x clock x metric with its statistics (see :meth:`to_dataframe`)."""
        from fastprof.analysis.stats import STAT_KEYS

        for run in self.runs:
            base = {"run": run.index, **{k: scalar(v) for k, v in run.config.items()}, "status": run.status}
            if run.result is None:
                yield {**base, "error": (run.error or {}).get("message"), "clock": None, "metric": None,
                       **dict.fromkeys(STAT_KEYS)}
                continue
            yield from run.result.stat_rows({**base, "error": None})

    def to_dataframe(self):
        """A pandas DataFrame with one row per configuration x clock x metric.

        Columns: ``run`` (index), the configuration keys (``model``, ``batch_size``, ...),
        ``status``, ``error``, ``clock`` (``host``, ``device`` or ``gpu`` for the sampled hardware
        figures), ``metric`` and the statistics ``n, mean, std, min, p50, p90, p95, p99, max, cv,
        ci95_low, ci95_high``. A failed configuration has one row with its error and no metric.
        Needs pandas (``pip install 'fastprof[pandas]'``).
        """
        return dataframe(self.rows())

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "schema_version": self.schema_version,
            "kind": "sweep",
            "created": self.created,
            "complete": self.complete,
            "command": self.command,
            "parameters": self.parameters,
            "environment": self.environment,
            "runs": [r.to_dict() for r in self.runs],
        })

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the document atomically (a temporary file and a rename). Returns the path."""
        write_atomic(path, self.to_json())
        return Path(path)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "results", check: bool = True) -> "Sweep":
        """A sweep from a sweep document or from a single :class:`BenchmarkResult` document.
        ``check=False`` skips the schema check (a document this fastprof has just written)."""
        if check:
            validate(d, source=source)
        try:
            if d["kind"] != "sweep":
                result = BenchmarkResult.from_dict(d)
                config = {k: result.config[k] for k in CONFIG_KEYS if k in result.config}
                sweep = cls(environment=result.environment, created=result.created, schema_version=d["schema_version"])
                sweep.add_ok(config or {"name": result.config.get("name", result.kind)}, result)
                return sweep
            env = d["environment"]
            runs = []
            for i, r in enumerate(d["runs"]):
                result = None
                if r.get("result") is not None:
                    rd = dict(r["result"])
                    rd.setdefault("environment", env)
                    result = BenchmarkResult.from_dict(rd)
                runs.append(Run(int(r.get("index", i)), dict(r["config"]), r["status"], r.get("error"), result))
            return cls(environment=env, runs=runs, parameters=dict(d.get("parameters") or {}),
                       command=d.get("command"), complete=bool(d.get("complete", True)),
                       created=d.get("created", ""), schema_version=d["schema_version"])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, ResultsFileError):
                raise
            what = f"missing {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
            raise ResultsFileError(f"{source} is not a complete fastprof results file: {what}") from None


def load(path: str | os.PathLike, *, check: bool = True) -> Sweep:
    """Reads a results file (sweep or single result). Raises :class:`ResultsFileError` with a
    one-line reason for a missing, unreadable, truncated, foreign or too new file. ``check=False``
    skips the schema check, which takes most of the time of a large file: only for a file this
    fastprof wrote itself (a worker process's results)."""
    return Sweep.from_dict(read_json(path), source=str(path), check=check)
