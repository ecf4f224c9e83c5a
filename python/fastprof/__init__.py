"""fastprof: low-overhead, high-precision timing of LLM inference.

Main entry points:

- :class:`TokenRecorder`: per-token host timestamps and GPU timing events from a native recorder.
- :func:`benchmark`: time any callable over warm-up and measured iterations.
- :func:`benchmark_generate`: time ``model.generate`` of a transformers model per token.
- :func:`generate_steps`: the same one step at a time, to alternate the iterations of several arms.
- :func:`benchmark_serving`: continuous batching under load: per-request TTFT, ITL, throughput at a request rate.
- :func:`summarize_generation`: the same metrics for traces from your own decode loop.
- :class:`BenchmarkResult`: summary statistics, raw data, environment; JSON save and load.
- :class:`Sampler`: GPU utilisation, memory, power, clocks, temperature and energy from a native thread.

The package is layered (enforced by import-linter, see ``[tool.importlinter]`` in pyproject.toml),
top to bottom: :mod:`fastprof.cli`; :mod:`fastprof.report` and :mod:`fastprof.measure`;
:mod:`fastprof.results`; :mod:`fastprof.analysis`; :mod:`fastprof.capture`. Each package's
docstring says what lives there and what it may import.
"""

from fastprof._core import clock_resolution_ns, monotonic_ns
from fastprof._version import __version__
from fastprof.analysis.stats import STAT_KEYS, describe
from fastprof.capture.environment import capture_environment
from fastprof.capture.recorder import TokenRecorder, Trace
from fastprof.capture.sampler import Sampler, SamplerResult
from fastprof.errors import (
    CapacityError,
    DriverError,
    FastprofError,
    LibraryError,
    OutputLengthError,
    StateError,
)
from fastprof.measure.driver import benchmark, benchmark_generate, generate_steps, summarize_generation
from fastprof.measure.serving import benchmark_serving
from fastprof.results.result import SCHEMA_VERSION, BenchmarkResult

__all__ = [
    "__version__",
    "BenchmarkResult",
    "CapacityError",
    "DriverError",
    "FastprofError",
    "LibraryError",
    "OutputLengthError",
    "SCHEMA_VERSION",
    "STAT_KEYS",
    "Sampler",
    "SamplerResult",
    "StateError",
    "TokenRecorder",
    "Trace",
    "benchmark",
    "benchmark_generate",
    "benchmark_serving",
    "capture_environment",
    "clock_resolution_ns",
    "describe",
    "generate_steps",
    "monotonic_ns",
    "summarize_generation",
]
