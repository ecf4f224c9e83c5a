"""The instruments of a measurement and their one lifecycle.

Every instrument (the GPU sampler, the stall sources, the host-path watch, the kernel and host
tracers) fits the same small shape, so the driver runs any set of them the same way:

- ``start()`` before the first iteration of its phase, ``stop()`` after the last;
- ``iteration_begin(i)`` and ``iteration_end(i, trace)`` around each iteration, outside its timed
  region (``trace`` is the iteration's :class:`~fastprof.capture.recorder.Trace`);
- ``abort()`` when an iteration raised: stop quietly, keep nothing half-done;
- ``section(...)``: its part of the result (built after the run, never during it);
- ``cost``: what it cost the measured thread, in its own words (a dict), or None.

:func:`run_phase` runs a number of iterations under a list of instruments: start in order,
stop in reverse order, abort all of them if anything raises; :func:`iter_phase` does the same one
iteration at a time.
"""

from __future__ import annotations

from typing import Any, Callable, Generator, Sequence

from fastprof.capture.recorder import Trace


class Instrument:
    """The base lifecycle: every step does nothing. Subclasses override what they need."""

    #: The result section the instrument fills (for reports and error messages).
    name = "instrument"

    def start(self) -> None:
        pass

    def iteration_begin(self, index: int) -> None:
        pass

    def iteration_end(self, index: int, trace: Trace) -> None:
        pass

    def stop(self) -> None:
        pass

    def abort(self) -> None:
        """Stop after a failure; never raises (the original error is what matters)."""
        try:
            self.stop()
        except Exception:  # noqa: BLE001
            pass

    @property
    def cost(self) -> dict[str, Any] | None:
        return None


def run_phase(instruments: Sequence[Instrument], count: int, run_once: Callable[[], Trace],
              progress: Callable[[int], None] | None = None) -> list[Trace]:
    """``count`` iterations of ``run_once`` under ``instruments``: returns their traces."""
    return drain(iter_phase(instruments, count, run_once, progress))


def drain(steps: Generator[Any, None, Any]) -> Any:
    """Runs a generator of steps (:func:`iter_phase`, :func:`fastprof.measure.driver.generate_steps`)
    to its end: the value it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def iter_phase(instruments: Sequence[Instrument], count: int, run_once: Callable[[], Trace],
               progress: Callable[[int], None] | None = None, label: Any = None) -> Generator[Any, None, list[Trace]]:
    """:func:`run_phase` one iteration at a time: yields ``label`` (None: the iteration's index)
    after each finished iteration (every instrument has closed it), so that a caller can run other
    work between two iterations (another configuration's, :mod:`fastprof.measure.runner`); returns
    the traces. Closing the generator early aborts the instruments."""
    started: list[Instrument] = []
    traces: list[Trace] = []
    try:
        for inst in instruments:
            inst.start()
            started.append(inst)
        for i in range(count):
            for inst in instruments:
                inst.iteration_begin(i)
            trace = run_once()
            for inst in reversed(instruments):
                inst.iteration_end(i, trace)
            traces.append(trace)
            if progress is not None:
                progress(i + 1)
            yield i if label is None else label
    except BaseException:
        for inst in reversed(started):
            inst.abort()
        raise
    for inst in reversed(started):
        inst.stop()
    return traces
