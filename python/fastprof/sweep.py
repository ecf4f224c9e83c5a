"""Results files of ``fastprof run`` (``fastprof.sweep.load``, ``schema``, ``validate``): kept as a
short path to :mod:`fastprof.results.sweep`, where they live."""

from fastprof.results.io import ResultsFileError
from fastprof.results.sweep import CONFIG_KEYS, Run, Sweep, load, schema, validate

__all__ = ["CONFIG_KEYS", "ResultsFileError", "Run", "Sweep", "load", "schema", "validate"]
