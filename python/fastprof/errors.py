"""Exceptions raised by fastprof. The native core raises these same classes."""

from __future__ import annotations


class FastprofError(Exception):
    """Base class of every fastprof error."""


class LibraryError(FastprofError, OSError):
    """A GPU library (driver or runtime) could not be loaded, or lacks an entry point.

    ``library`` is the path or name that was tried first; the message lists every attempt
    and says which ``FASTPROF_*_LIBRARY`` variable points fastprof at another copy.
    """

    def __init__(self, library: str, message: str) -> None:
        super().__init__(message)
        self.library = library


class DriverError(FastprofError, RuntimeError):
    """A driver call failed. ``call`` names it; ``code``, ``name`` and ``description``
    are the driver's own error code, error name and error string."""

    def __init__(self, call: str, code: int, name: str, description: str) -> None:
        super().__init__(f"{call} failed: {name} ({code}): {description}")
        self.call = call
        self.code = code
        self.name = name
        self.description = description

    def __reduce__(self):  # picklable, e.g. across multiprocessing
        return (type(self), (self.call, self.code, self.name, self.description))


class CapacityError(FastprofError, RuntimeError):
    """More marks than the recorder's capacity. The marks recorded so far are kept."""

    def __init__(self, message: str, capacity: int) -> None:
        super().__init__(message)
        self.capacity = capacity


class StateError(FastprofError, RuntimeError):
    """A recorder method was called in the wrong state (e.g. mark() before begin())."""


class OutputLengthError(FastprofError, RuntimeError):
    """An iteration generated a different number of tokens than asked for."""

    def __init__(self, expected: int, actual: int, detail: str = "") -> None:
        msg = f"expected {expected} new tokens per sequence, got {actual}"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.expected = expected
        self.actual = actual


class KernelTraceUnavailable(FastprofError, RuntimeError):
    """The kernel tracer cannot run here (another CUPTI subscriber such as torch.profiler holds the
    process, profiling is restricted to administrators, ...). The message says why."""
