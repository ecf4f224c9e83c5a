"""A worker's turn: the workers of ``fastprof run --processes N`` prepared side by side wait here
until the machine is theirs alone.

Prepared together (on a CUDA GPU by default; ``FASTPROF_WORKER_PREPARE``) the parent forks every
worker at once (:mod:`fastprof.measure.workers`). Each loads its model and runs its whole warm-up,
untimed, beside the others (on a GPU the first iteration carries most of a worker's fixed cost:
its CUDA context, the lazy loading of the kernels it uses, the libraries' first calls); then
:func:`fastprof.generate_steps` calls :func:`wait_turn`, which says so to the parent and sleeps
until the parent gives it its turn. A waiting worker runs nothing: it sleeps in ``select`` on a
FIFO, waking once a second to check that the parent still lives.

Once its turn has come, a worker runs :data:`REWARM` warm-up iterations more (clocks and caches
after the wait), and more of them until :func:`alone` says that the worker before it has exited,
and only then its timed iterations: no timed iteration ever overlaps another worker's work. The
worker before it had handed its turn on (:func:`release`) once its own last iteration had run,
and was building its result, writing it and exiting meanwhile, at a lower CPU priority
(``FASTPROF_WORKER_HANDOFF=measured``, the default; with ``exit`` the parent hands the turn on only
once that worker has exited, and the one re-warm iteration runs alone).

The parent's signals are bytes on the worker's FIFO ``<prefix>.go``: ``g`` (the turn), then ``a``
(alone: the worker before has exited).

Anywhere else (no ``FASTPROF_WORKER_TURN`` in the environment) these functions do nothing.
"""

from __future__ import annotations

import os
import select
import sys
import time

#: Set by the parent for each worker prepared together: the path prefix of its two files,
#: ``<prefix>.ready`` (created by the worker) and ``<prefix>.go`` (a FIFO the parent writes to).
TURN_ENV = "FASTPROF_WORKER_TURN"
#: The parent's pid: a worker whose parent is gone stops waiting and exits.
PARENT_ENV = "FASTPROF_WORKER_PARENT"

#: Warm-up iterations a prepared worker runs again once its turn has come, before its timed ones:
#: it ran its whole warm-up while preparing, then sat idle (GPU clocks down, caches cold).
REWARM = 1

_asked = False
_released = False
_alone = False
_fd: int | None = None  # the FIFO, open from the turn until "alone"
#: The parent's bytes on the FIFO.
TURN, ALONE = b"g", b"a"


def pending() -> bool:
    """Whether this process was prepared together with others and has not had its turn yet."""
    return bool(os.environ.get(TURN_ENV)) and not _asked


def _next_byte(fd: int, timeout: float | None) -> bytes | None:
    """The parent's next byte on ``fd``: waits up to ``timeout`` seconds (None: until it comes),
    None where none came. Exits the process (code 1) when the parent is gone."""
    parent = int(os.environ.get(PARENT_ENV) or 0)
    server = os.getppid()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
        readable, _, _ = select.select([fd], [], [], wait)
        if readable:
            return os.read(fd, 1)
        if os.getppid() != server or (parent and not _alive(parent)):
            print("fastprof: error: the run that started this worker process is gone", file=sys.stderr)
            os._exit(1)
        if deadline is not None and time.monotonic() >= deadline:
            return None


def wait_turn() -> float | None:
    """Where this worker was prepared together with others: says it is ready and sleeps until
    its turn comes (once per process; later calls return at once). The seconds it waited, or None
    where it was not prepared together. Exits the process (code 1) when the parent is gone."""
    global _asked, _fd
    prefix = os.environ.get(TURN_ENV)
    if not prefix or _asked:
        return None
    _asked = True
    t0 = time.perf_counter()
    # Read and write: opening never blocks, and the FIFO never reads as closed while no writer
    # has it open; it becomes readable when the parent writes its byte. It stays open until
    # "alone" has come (the parent's write fails where no reader has it open).
    fd = os.open(prefix + ".go", os.O_RDWR)
    with open(prefix + ".ready", "x"):
        pass
    _next_byte(fd, None)  # the turn
    _fd = fd
    alone(wait=False)  # where "alone" came with it
    return time.perf_counter() - t0


def alone(wait: bool) -> bool:
    """After :func:`wait_turn`: whether the worker before this one has exited, so that nothing else
    of the run works beside this one (``wait``: sleeps until it has). True where this process
    was not prepared together."""
    global _alone, _fd
    if _alone or _fd is None:
        return True
    got = _next_byte(_fd, None if wait else 0)
    while got is not None and got != ALONE:
        got = _next_byte(_fd, None if wait else 0)
    if got == ALONE:
        _alone = True
        os.close(_fd)
        _fd = None
    return _alone


def release() -> bool:
    """Where this worker was prepared together with others and has had its turn: says that it is
    done with the machine (``<prefix>.done``), so that the parent can give the next worker its
    turn, and lowers this process's CPU priority for what it has left to do (build its result,
    write it, exit). Once per process; True where it said so."""
    global _released
    prefix = os.environ.get(TURN_ENV)
    if not prefix or not _asked or _released:
        return False
    _released = True
    try:
        with open(prefix + ".done", "x"):
            pass
    except OSError:
        return False
    try:
        os.nice(10)
    except OSError:
        pass
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
