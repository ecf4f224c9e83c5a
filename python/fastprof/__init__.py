"""fastprof: low-overhead, high-precision timing of LLM inference.

Main entry points:

- :class:`TokenRecorder`: per-token host timestamps and GPU timing events from a native recorder.
- :func:`benchmark`: time any callable over warm-up and measured iterations.
- :func:`benchmark_generate`: time ``model.generate`` of a transformers model per token.
- :func:`summarize_generation`: the same metrics for traces from your own decode loop.
- :class:`BenchmarkResult`: summary statistics, raw data, environment; JSON save and load.
- :class:`Sampler`: GPU utilisation, memory, power, clocks, temperature and energy from a native thread.
"""

from fastprof._core import clock_resolution_ns, monotonic_ns
from fastprof.driver import benchmark, benchmark_generate, summarize_generation
from fastprof.environment import capture_environment
from fastprof.errors import (
    CapacityError,
    DriverError,
    FastprofError,
    LibraryError,
    OutputLengthError,
    StateError,
)
from fastprof.recorder import TokenRecorder, Trace
from fastprof.result import SCHEMA_VERSION, BenchmarkResult
from fastprof.sampler import Sampler, SamplerResult
from fastprof.stats import STAT_KEYS, describe

try:
    from importlib.metadata import version as _version

    __version__ = _version("fastprof")
except Exception:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"

__all__ = [
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
    "capture_environment",
    "clock_resolution_ns",
    "describe",
    "monotonic_ns",
    "summarize_generation",
]
