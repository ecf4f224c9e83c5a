"""A worker's turn: the workers of ``fastprof run --processes N`` prepared side by side wait here
until the machine is theirs alone.

Prepared together (on a CUDA GPU by default; ``FASTPROF_WORKER_PREPARE``) the parent forks every
worker at once (:mod:`fastprof.measure.workers`). Each loads its model and runs its whole warm-up,
untimed, beside the others (on a GPU the first iteration carries most of a worker's fixed cost:
its CUDA context, the lazy loading of the kernels it uses, the libraries' first calls); then
:func:`fastprof.generate_steps` calls :func:`wait_turn`, which says so to the parent and sleeps
until the parent gives it its turn; each worker then runs :data:`REWARM` warm-up iteration more
(after the wait) and measures, one after the other, as when they start one after the other.
A waiting worker runs nothing: it sleeps in
``select`` on a FIFO, waking once a second to check that the parent still lives.

Once a worker's last iteration on the machine has run (its timed and traced iterations, every
configuration), :func:`release` says so, and the parent hands the turn on at once
(``FASTPROF_WORKER_HANDOFF=measured``, the default) while this worker builds its result, writes it
and exits, at a lower CPU priority; the next worker's :data:`REWARM` iteration runs first. With
``FASTPROF_WORKER_HANDOFF=exit`` the parent waits for the worker to exit instead.

Anywhere else (no ``FASTPROF_WORKER_TURN`` in the environment) :func:`wait_turn` does nothing.
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


def pending() -> bool:
    """Whether this process was prepared together with others and has not had its turn yet."""
    return bool(os.environ.get(TURN_ENV)) and not _asked


def wait_turn() -> float | None:
    """Where this worker was prepared together with others: says it is ready and sleeps until
    its turn comes (once per process; later calls return at once). The seconds it waited, or None
    where it was not prepared together. Exits the process (code 1) when the parent is gone."""
    global _asked
    prefix = os.environ.get(TURN_ENV)
    if not prefix or _asked:
        return None
    _asked = True
    t0 = time.perf_counter()
    # Read and write: opening never blocks, and the FIFO never reads as closed while no writer
    # has it open; it becomes readable when the parent writes its byte.
    fd = os.open(prefix + ".go", os.O_RDWR)
    try:
        with open(prefix + ".ready", "x"):
            pass
        parent = int(os.environ.get(PARENT_ENV) or 0)
        server = os.getppid()
        while True:
            readable, _, _ = select.select([fd], [], [], 1.0)
            if readable:
                os.read(fd, 1)
                break
            if os.getppid() != server or (parent and not _alive(parent)):
                print("fastprof: error: the run that started this worker process is gone", file=sys.stderr)
                os._exit(1)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


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
