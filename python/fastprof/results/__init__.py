"""Results: the documents fastprof writes and reads.

Lives here: the per-run result (:mod:`.result`, :class:`BenchmarkResult`), the sweep document
(:mod:`.sweep`, what ``fastprof run`` writes and ``report``/``compare`` read), the JSON Schema
(``schema/``), atomic writing, reading with one-line errors (:mod:`.io`) and display units
(:mod:`.units`).

May import :mod:`fastprof.analysis` and :mod:`fastprof.capture`; never report, measure or cli.
"""

from fastprof.results.io import ResultsFileError, write_atomic
from fastprof.results.result import SCHEMA_VERSION, BenchmarkResult
from fastprof.results.sweep import Run, Sweep, load, schema, validate

__all__ = ["SCHEMA_VERSION", "BenchmarkResult", "ResultsFileError", "Run", "Sweep", "load", "schema", "validate",
           "write_atomic"]
