"""``fastprof run --processes N``: every configuration measured by N fresh worker processes.

Run-to-run drift (another process, another memory layout, another neighbour on the machine) is
larger than the noise between iterations of one process, and one process cannot see it. As
pyperf does, fastprof starts N worker processes one after the other, each running the whole
sweep with its own model load, warm-up and iterations (``fastprof run ... --processes 1`` into a
temporary file), and merges each configuration's N results (:func:`fastprof.results.processes.merge_processes`):
every iteration kept with its process, summaries over all, and the spread between processes
beside the spread within them. ``fastprof compare`` then uses the processes as its unit.

How the workers start (``processes.start`` of each merged result): on Linux, from a fork server
(``"fork-server"``). The parent starts one helper process that imports torch, transformers and
fastprof's measuring modules once (importing torch does not initialise CUDA, and the helper
touches nothing else of torch), freezes that heap for the garbage collector (:func:`gc.freeze`:
the imported modules live as long as the process, and frozen objects are never scanned again)
and then, for each worker, forks a child that runs the same ``run`` entry point a fresh worker
runs (stdin and stdout on ``/dev/null``, stderr to a file the parent reads, the parent's
environment and working directory). Each child is a new process for CUDA, with its own model
load, warm-up and iterations; the parent waits for each before asking for the next, so the
workers never overlap. Where that is not possible (not Linux, ``FASTPROF_WORKER_START=fresh``,
the helper fails to start or dies, a thread running in it), the workers are fresh interpreters
(``sys.executable -m fastprof run ...``), as before, and the result says why
(``processes.start_note``).

On a CUDA GPU, by default, the server forks every worker at once; each prepares (model load, its
warm-up) beside the others and waits for its turn (:mod:`fastprof.measure.turn`), and the parent
gives the turns one at a time, in order, each once the previous worker's last iteration has run
(it then builds its result and exits beside the next one's re-warm-up iterations, and the next
one's timed iterations start only once it has exited; ``FASTPROF_WORKER_HANDOFF=exit``: the turn
after it exited): the one-off costs overlap, the measurements never do (``processes.prepare``,
``processes.handoff``, and each process's ``ready_s``, ``waited_s``, ``overlap_s`` and
``turn_s``). Every worker's model is then in memory at once, so this is done only where they fit
in the GPU's free memory (:func:`_memory_refusal`); ``FASTPROF_WORKER_PREPARE`` overrides it
(:data:`PREPARE_ENV`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Sequence

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


#: Environment variable choosing how workers start: ``fork`` (the default: a fork server where the
#: platform allows) or ``fresh`` (a fresh interpreter per worker).
START_ENV = "FASTPROF_WORKER_START"
FORK_SERVER = "fork-server"
FRESH = "fresh-interpreter"

#: What the fork server imports before forking: everything a worker of ``fastprof run`` needs
#: except the model (and nothing that initialises CUDA).
PRELOAD = (
    "numpy", "torch", "transformers", "transformers.generation", "transformers.generation.streamers",
    "transformers.models.llama.modeling_llama",
    "safetensors.torch", "rich.console", "rich.progress", "rich.table",
    "fastprof.cli", "fastprof.cli.run", "fastprof.measure.runner", "fastprof.measure.driver",
    "fastprof.capture.hf", "fastprof.capture.environment", "fastprof.capture.hostpath", "fastprof.capture.stalls",
    "fastprof.capture.quantization", "fastprof.analysis.stalls", "fastprof.results.sweep",
    "fastprof.results.warnings", "fastprof.report.distributed",
)


class _ServerGone(RuntimeError):
    """The fork server died or said something unreadable: the workers start fresh from here on."""


def _fork_refusal() -> str | None:
    """Why the fork server may not use fork here, or None."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return f"fork server on Linux only ({sys.platform})"
    want = os.environ.get(START_ENV, "").strip().lower()
    if want == "fresh":
        return f"{START_ENV}=fresh"
    return None


class _ForkServer:
    """The parent's end of the fork server (see :func:`serve`): one request at a time.

    Constructing it starts the server's imports and returns at once; :meth:`wait_ready` waits
    for them, so that the parent can do its own checks meanwhile (:func:`prestart`)."""

    def __init__(self, tmp: Path, *, own_tmp: bool = False) -> None:
        #: The folder of its log, removed by :meth:`close` when it is the server's own (``own_tmp``).
        self._own_tmp: Path | None = tmp if own_tmp else None
        self.log = tmp / "fork-server.stderr"
        self._log_file = open(self.log, "wb")
        self._t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from fastprof.measure.workers import serve; sys.exit(serve())"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file, text=True, bufsize=1)
        self.child: int | None = None
        self._raw = b""
        self.early: list[dict[str, Any]] = []
        #: Seconds from the start to the server's "ready" (None until :meth:`wait_ready`).
        self.preload_s: float | None = None

    def wait_ready(self) -> None:
        """Waits until the server has imported what the workers need; raises :class:`_ServerGone`
        (and closes it) when it could not."""
        if self.preload_s is not None:
            return
        try:
            ready = self._read()
            if not ready.get("ready"):
                raise _ServerGone(str(ready.get("error") or "did not start"))
        except BaseException:
            self.close()
            raise
        self.preload_s = time.perf_counter() - self._t0

    def _tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"exit code {self.proc.poll()}"

    def _read(self) -> dict[str, Any]:
        """The server's next message, however long it takes (through :meth:`messages`, the one
        reader of its stdout)."""
        got: list[dict[str, Any]] = []
        while not got:
            got = self.messages(None)
        first, *self.early = got
        return first

    def run(self, args: list[str], stderr_path: Path) -> tuple[int, int]:
        """Forks one worker running ``fastprof <args>``: its (pid, exit code); raises
        :class:`_ServerGone` (the worker may then be started fresh) when the server cannot."""
        self.wait_ready()
        assert self.proc.stdin is not None
        request = {"argv": args, "stderr": str(stderr_path), "cwd": os.getcwd(), "env": dict(os.environ)}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.proc.wait()
            raise _ServerGone(f"the fork server exited ({self._tail()})") from None
        answer = self._read()
        if "refused" in answer:
            raise _ServerGone(str(answer["refused"]))
        self.child = int(answer["pid"])
        try:
            done = self._read()
        except _ServerGone:
            self._reap_orphan()
            raise
        self.child = None
        return int(answer["pid"]), int(done["rc"])

    def start_together(self, requests: list[dict[str, Any]]) -> list[int]:
        """Forks one worker per request at once: their pids, in order. Their exits are then read
        with :meth:`messages`. Raises :class:`_ServerGone` (having ended those it forked) when the
        server cannot."""
        self.wait_ready()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"together": requests}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.proc.wait()
            raise _ServerGone(f"the fork server exited ({self._tail()})") from None
        pids: list[int] = []
        exits: list[dict[str, Any]] = []  # children that ended before the last was forked
        while len(pids) < len(requests):
            message = self._read()
            if "rc" in message:
                exits.append(message)
            elif "pid" in message:
                pids.append(int(message["pid"]))
            elif "refused" in message:
                _kill(pids)
                raise _ServerGone(str(message["refused"]))
        self.early = exits + self.early
        return pids

    def messages(self, timeout: float | None) -> list[dict[str, Any]]:
        """The server's messages, those already read first, else those that arrive within
        ``timeout`` seconds (None: however long it takes); raises :class:`_ServerGone` when the
        server has exited. Reads the pipe itself (``select`` and ``os.read``), never through
        ``proc.stdout``'s buffer, so that a timeout can be kept."""
        import select

        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if self.early:
            out, self.early = self.early, []
            return out
        while b"\n" not in self._raw:
            readable, _, _ = select.select([fd], [], [], timeout)
            if not readable:
                return []
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait()
                raise _ServerGone(f"the fork server exited ({self._tail()})")
            self._raw += chunk
        *lines, self._raw = self._raw.split(b"\n")
        try:
            return [json.loads(line) for line in lines if line.strip()]
        except ValueError:
            raise _ServerGone(f"the fork server said {lines[0].strip()[:200]!r}") from None

    def _reap_orphan(self) -> None:
        """The server died with a child running: end that child, so that workers never overlap."""
        pid, self.child = self.child, None
        if pid is None:
            return
        _kill([pid])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.05)

    def kill_child(self) -> None:
        self._reap_orphan()

    def close(self) -> None:
        """Ends the server (at once when it was never used: it may still be importing); idempotent."""
        if self._log_file.closed:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        if self.preload_s is None and self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()
        if self._own_tmp is not None:
            import shutil

            shutil.rmtree(self._own_tmp, ignore_errors=True)


def _kill(pids: Sequence[int]) -> None:
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


#: Environment variable: how the workers of a GPU run are prepared. ``auto`` (unset): together
#: where the run is on a CUDA GPU and every worker's model fits in its free memory at once
#: (:func:`_memory_refusal`), else one after the other; ``together``: together on any GPU, without
#: the memory check; ``serial``: one after the other. Prepared together, the fork server forks
#: every worker at once; each loads its model and runs its warm-up beside the others, then they
#: measure one at a time (:mod:`fastprof.measure.turn`).
PREPARE_ENV = "FASTPROF_WORKER_PREPARE"
PREPARE_MODES = ("auto", "together", "serial")
#: What a worker prepared together holds on the GPU beside its weights (CUDA context, cuBLAS
#: workspace, KV cache, the caching allocator's slack): an estimate, on the safe side for decode.
WORKER_OVERHEAD_BYTES = 2 * 2**30
#: The built-in model's weights (about 60 M parameters), rounded up.
BUILTIN_WEIGHT_BYTES = 2**29
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _together_refusal(device: str | None) -> str | None:
    """Why workers asked to prepare together on ``device`` prepare one after the other, or None.
    On the CPU the preparation (building the model, the first iterations) is CPU work, and side by
    side it only competes for the same cores: on a 2-core machine the default run took 147-207 s
    prepared together against 113-129 s one after the other (bench/RESULTS.md)."""
    if device is not None and not str(device).startswith("cuda"):
        return f"{PREPARE_ENV}=together does not apply on {device}: the workers' preparation is CPU work there"
    return None


def _weight_bytes(model: str | None) -> int | None:
    """The bytes of the weight files in a model directory, where transformers loads them from (not
    its subdirectories: some hold another copy); the built-in model's estimate for None; None for
    a directory without weight files, or no directory."""
    if model is None:
        return BUILTIN_WEIGHT_BYTES
    root = Path(model)
    if not root.is_dir():
        return None
    sizes = [f.stat().st_size for f in root.iterdir() if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES)]
    return sum(sizes) if sizes else None


def _gpu_free_bytes() -> int | None:
    """The least free memory of the GPUs this process may use (NVML; CUDA_VISIBLE_DEVICES by index
    or UUID), or None where NVML cannot say."""
    from fastprof.capture.environment import nvml_gpus

    gpus, _, _ = nvml_gpus()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        names = {v.strip() for v in visible.split(",")}
        gpus = [g for g in gpus if str(g.get("index")) in names or str(g.get("uuid")) in names]
    free = [int(g["memory_total_bytes"]) - int(g["memory_used_bytes"]) for g in gpus
            if isinstance(g.get("memory_total_bytes"), int) and isinstance(g.get("memory_used_bytes"), int)]
    return min(free) if free else None


def _memory_refusal(n: int, model: str | None, dtypes: Sequence[str], free_bytes: int | None = None) -> str | None:
    """Why ``n`` workers of ``model`` cannot hold the GPU's memory at once, or None where they can:
    each needs its weights (the weight files' size; twice that where the sweep has float32, in
    case the files hold 16-bit weights) and :data:`WORKER_OVERHEAD_BYTES`, all together at most
    90% of the free memory (``free_bytes``, else read through NVML)."""
    weights = _weight_bytes(model)
    if weights is None:
        return f"the size of the model's weights is not known (no weight files in {model})"
    if "float32" in dtypes and model is not None:
        weights *= 2
    free = _gpu_free_bytes() if free_bytes is None else free_bytes
    if free is None:
        return "the GPU's free memory could not be read through NVML"
    need = n * (weights + WORKER_OVERHEAD_BYTES)
    if need > 0.9 * free:
        return (f"{n} workers' models and CUDA contexts would need about {need / 2**30:.1f} GiB at once, "
                f"the GPU has {free / 2**30:.1f} GiB free")
    return None


def _env_choice(name: str, modes: Sequence[str]) -> tuple[str, str | None]:
    """The value of environment variable ``name`` among ``modes`` (the first where unset), and a
    note where it is set to something else (then read as the first)."""
    mode = os.environ.get(name, "").strip().lower() or modes[0]
    if mode not in modes:
        return modes[0], f"{name}={mode!r} is not one of {', '.join(modes)}: {modes[0]}"
    return mode, None


def _prepare_plan(device: str | None, n: int, fork_server: bool, model: str | None,
                  dtypes: Sequence[str]) -> tuple[bool, str | None]:
    """Whether the workers are prepared together, and the note that says why not where it was
    asked for (or, by default on a GPU, where memory or the fork server rules it out)."""
    mode, note = _env_choice(PREPARE_ENV, PREPARE_MODES)
    on_gpu = device is not None and str(device).startswith("cuda")
    if mode == "serial" or (mode == "auto" and (not on_gpu or not fork_server or n < 2)):
        return False, note
    reasons = [r for r in (_together_refusal(device),
                           None if fork_server else "workers are prepared together only when forked from the fork server",
                           None if n >= 2 else "one worker has nothing to be prepared beside") if r]
    if not reasons and mode == "auto":
        reasons = [r for r in (_memory_refusal(n, model, dtypes),) if r]
    if reasons:
        return False, "; ".join([*([note] if note else []), *reasons]) + ": one after the other"
    return True, note


#: Environment variable: when a worker prepared together hands its turn on. ``measured`` (unset):
#: once its last iteration has run (:func:`fastprof.measure.turn.release`), while it builds and
#: writes its result at a lower CPU priority and exits, beside the next worker's re-warm-up
#: iterations (that worker's timed iterations start only once it has exited); ``exit``: once it
#: has exited.
HANDOFF_ENV = "FASTPROF_WORKER_HANDOFF"
HANDOFF_MODES = ("measured", "exit")


def _handoff() -> tuple[str, str | None]:
    """The hand-off of :data:`HANDOFF_ENV`, and a note where its value is not one of
    :data:`HANDOFF_MODES` (then ``measured``)."""
    return _env_choice(HANDOFF_ENV, HANDOFF_MODES)


def _out_of_memory_hint(errors: Sequence[str], together: bool) -> str | None:
    """What to do where workers prepared together ran out of GPU memory (every worker's model is in
    memory at once, and the check before is an estimate), or None."""
    if together and any("out of memory" in e.lower() or "outofmemory" in e.lower() for e in errors):
        return (f"the workers were prepared together, every model in GPU memory at once: "
                f"{PREPARE_ENV}=serial prepares them one after the other")
    return None


class _Together:
    """Workers forked at once and prepared side by side, then given the machine one at a time,
    in order: :meth:`run` of worker ``p`` waits until every worker is ready (or gone), gives ``p``
    its turn and waits for it to exit, as :meth:`_ForkServer.run` waits for a worker forked alone.
    With the ``measured`` hand-off (:func:`_handoff`), worker ``p + 1`` gets its turn as soon as
    ``p`` says it is done with the machine (:func:`fastprof.measure.turn.release`), while ``p``
    still builds and writes its result, and "alone" once ``p`` has exited: it re-warms meanwhile
    and times only after that."""

    def __init__(self, server: _ForkServer, tmp: Path, cmds: list[list[str]], stderr_paths: list[Path],
                 handoff: str = "measured") -> None:
        from fastprof.measure import turn

        self.server = server
        self.handoff = handoff
        self.prefixes = [tmp / f"turn-{p}" for p in range(len(cmds))]
        for prefix in self.prefixes:
            os.mkfifo(f"{prefix}.go", 0o600)
        env = dict(os.environ, **{turn.PARENT_ENV: str(os.getpid())})
        requests = [{"argv": cmd, "stderr": str(err), "cwd": os.getcwd(), "env": dict(env, **{turn.TURN_ENV: str(prefix)})}
                    for cmd, err, prefix in zip(cmds, stderr_paths, self.prefixes)]
        self.t0 = time.perf_counter()
        self.pids = server.start_together(requests)
        self.rcs: dict[int, int] = {}
        #: Seconds from the fork to each worker's "ready", and each one's wait for its turn.
        self.ready_s: dict[int, float] = {}
        self.waited_s: dict[int, float] = {}
        #: Seconds from each worker's turn to its handing the turn on (its release or its exit),
        #: and from its turn to the exit of the worker before it (its re-warm-up meanwhile).
        self.turn_s: dict[int, float] = {}
        self.overlap_s: dict[int, float] = {}
        self._given: dict[int, float] = {}

    def _read(self, timeout: float | None) -> None:
        for message in self.server.messages(timeout):
            if "rc" in message:
                self.rcs[int(message["pid"])] = int(message["rc"])

    def _settled(self) -> bool:
        for p, prefix in enumerate(self.prefixes):
            if p not in self.ready_s and Path(f"{prefix}.ready").exists():
                self.ready_s[p] = time.perf_counter() - self.t0
        return all(p in self.ready_s or pid in self.rcs for p, pid in enumerate(self.pids))

    def _signal(self, p: int, byte: bytes) -> None:
        """One byte on worker ``p``'s FIFO (fastprof.measure.turn); nothing where it is gone."""
        try:
            fd = os.open(f"{self.prefixes[p]}.go", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: it stopped waiting (gone): its exit comes next
            return
        try:
            os.write(fd, byte)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _give(self, p: int) -> None:
        """Worker ``p``'s turn (once; not to a worker that is gone), and "alone" with it where the
        worker before it has exited."""
        from fastprof.measure import turn

        if p in self._given or self.pids[p] in self.rcs:
            return
        now = time.perf_counter()
        self._given[p] = now
        self.waited_s[p] = now - self.t0 - self.ready_s[p]
        self._signal(p, turn.TURN)
        if p == 0 or self.pids[p - 1] in self.rcs:
            self._alone(p)

    def _alone(self, p: int) -> None:
        """Tells worker ``p`` (which has its turn) that the worker before it has exited: its timed
        iterations may start."""
        from fastprof.measure import turn

        if p in self.overlap_s or p not in self._given:
            return
        self.overlap_s[p] = time.perf_counter() - self._given[p]
        self._signal(p, turn.ALONE)

    def run(self, p: int) -> tuple[int, int]:
        """Worker ``p``'s (pid, exit code) once it has had its turn; raises :class:`_ServerGone`."""
        while not self._settled():
            self._read(0.05)
        pid = self.pids[p]
        self._give(p)
        # The hand-off: 'measured', its release (a file, polled) or its exit; 'exit', its exit.
        done = Path(f"{self.prefixes[p]}.done") if self.handoff == "measured" else None
        while pid not in self.rcs and not (done is not None and done.exists()):
            self._read(0.05 if done is not None else 1.0)
        if p in self._given:
            self.turn_s[p] = time.perf_counter() - self._given[p]
        if p + 1 < len(self.pids):
            self._give(p + 1)
        while pid not in self.rcs:
            self._read(1.0)
        if p + 1 < len(self.pids):
            self._alone(p + 1)
        return pid, self.rcs[pid]

    def kill_rest(self) -> None:
        """Ends the workers still alive (waiting, or the one measuring)."""
        alive = [pid for pid in self.pids if pid not in self.rcs]
        _kill(alive)
        deadline = time.monotonic() + 10
        while any(pid not in self.rcs for pid in alive) and time.monotonic() < deadline:
            try:
                self._read(0.2)
            except _ServerGone:
                return


def prestart() -> _ForkServer | None:
    """Starts the fork server now, before the parent's own checks and imports, so that its
    imports run beside them (they take seconds each); None where the fork server is not used.
    Pass it to :func:`run_processes`, and close it when the run does not get that far."""
    if _fork_refusal() is not None:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="fastprof-server-"))
    try:
        return _ForkServer(tmp, own_tmp=True)
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return None


def _fresh(cmd: list[str]) -> tuple[int, int, str]:
    """One worker as a fresh interpreter: its (pid, exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "fastprof", *cmd], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate()
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        raise
    return proc.pid, proc.returncode, err or ""


def run_processes(args: Any, argv: Sequence[str], *, command: Sequence[str],
                  server: _ForkServer | None = None, device: str | None = None) -> SweepOutcome:
    """Runs the sweep of ``args`` in ``args.processes`` worker processes and writes the merged
    results to ``args.output``. ``server``: a fork server from :func:`prestart` (closed here);
    ``device``: the resolved device of the run ('cpu', 'cuda:0', ...)."""
    from rich.console import Console
    from rich.markup import escape

    n = int(args.processes)
    console = Console(stderr=True, quiet=args.quiet, soft_wrap=True)
    rest = worker_argv(argv[1:] if argv and argv[0] == "run" else argv)
    sweeps: list[Sweep | None] = []
    pids: list[int | None] = []
    starts: list[str] = []
    errors: list[str] = []
    note = _fork_refusal()
    with tempfile.TemporaryDirectory(prefix="fastprof-workers-") as tmp:
        if note is None:
            try:
                if server is None:
                    server = _ForkServer(Path(tmp))
                server.wait_ready()
                console.print(escape(f"{n} worker processes, forked one after the other from a fork server "
                                     f"(torch and transformers imported once, in {server.preload_s:.1f} s)"),
                              style="dim", highlight=False)
            except (_ServerGone, OSError) as exc:
                note = f"the fork server did not start: {exc}"
                server = None
        elif server is not None:
            server.close()
            server = None
        if server is None:
            console.print(escape(f"{n} worker processes, each a fresh interpreter ({note})"), style="dim",
                          highlight=False)
        def out_of(p: int) -> Path:
            return Path(tmp) / f"process-{p}.json"

        def cmd_of(p: int) -> list[str]:
            return ["run", *rest, "--processes", "1", "--quiet", "--output", str(out_of(p)), "--order-shift", str(p)]

        together: _Together | None = None
        prepare, prepare_note = _prepare_plan(device, n, server is not None, getattr(args, "model", None),
                                              list(getattr(args, "dtype", None) or []))
        if prepare_note is not None:
            console.print(escape(f"  {prepare_note}"), style="yellow", highlight=False)
        if prepare:
            assert server is not None
            handoff, handoff_note = _handoff()
            if handoff_note is not None:
                console.print(escape(f"  {handoff_note}"), style="yellow", highlight=False)
            try:
                together = _Together(server, Path(tmp), [cmd_of(p) for p in range(n)],
                                     [Path(tmp) / f"process-{p}.stderr" for p in range(n)], handoff=handoff)
                console.print(escape(f"  prepared together: all {n} forked at once, each prepared (model "
                                     "load, warm-up) beside the others; they measure one at a time"),
                              style="dim", highlight=False)
            except (_ServerGone, OSError) as exc:
                note = prepare_note = f"the workers could not be prepared together: {exc}"
                server.close()
                server = None
                console.print(escape(f"  {note}; fresh interpreters instead"), style="yellow", highlight=False)
        try:
            for p in range(n):
                out = out_of(p)
                cmd = cmd_of(p)
                console.print(escape(f"worker process {p + 1}/{n}"), highlight=False)
                t0 = time.perf_counter()
                pid = rc = None
                if server is not None:
                    err_path = Path(tmp) / f"process-{p}.stderr"
                    try:
                        pid, rc = together.run(p) if together is not None else server.run(cmd, err_path)
                        err = err_path.read_text(errors="replace") if err_path.exists() else ""
                        starts.append(FORK_SERVER)
                    except _ServerGone as exc:
                        note = f"fork server stopped at worker {p + 1}: {exc}"
                        console.print(escape(f"  {note}; fresh interpreters from here on"), style="yellow",
                                      highlight=False)
                        if together is not None:
                            together.kill_rest()
                            together = None
                            prepare_note = f"prepared together until then; {note}"
                        server.close()
                        server = None
                        out.unlink(missing_ok=True)
                if pid is None:
                    pid, rc, err = _fresh(cmd)
                    starts.append(FRESH)
                pids.append(pid)
                if rc == 130:
                    raise KeyboardInterrupt
                if not out.exists() and rc == 2:
                    # Bad input (the worker's one-line usage error): the same for every process.
                    lines = (err or "").strip().splitlines() or ["bad input"]
                    errors_said = [ln for ln in lines if ln.startswith("fastprof: error:")]
                    raise WorkerInputError(errors_said[-1].removeprefix("fastprof: error:").strip() if errors_said
                                           else lines[-1])
                if not out.exists():
                    last = (err or "").strip().splitlines()[-1:] or [f"exit code {rc}"]
                    errors.append(f"process {p}: {last[0]}")
                    console.print(escape(f"  worker process {p + 1} wrote no results: {last[0]}"), style="red",
                                  highlight=False)
                    sweeps.append(None)
                    continue
                sweeps.append(load(out, check=False))  # written by this fastprof a moment ago
                console.print(escape(f"  done in {time.perf_counter() - t0:.1f} s"), style="dim", highlight=False)
        except KeyboardInterrupt:
            if server is not None:
                server.kill_child()
            raise
        finally:
            if together is not None:
                together.kill_rest()
            if server is not None:
                server.close()
    ok = [(i, s) for i, s in enumerate(sweeps) if s is not None]
    if not ok:
        raise RuntimeError("no worker process produced results: " + "; ".join(errors))
    first = ok[0][1]
    merged = Sweep(environment=first.environment, parameters=dict(first.parameters), command=list(command),
                   complete=all(s.complete for _, s in ok))
    merged.parameters["processes"] = [n]
    started = sorted(set(starts))
    start = started[0] if len(started) == 1 else "mixed"
    failed = 0
    configs: list[dict[str, Any]] = []
    for _, s in ok:
        for run in s.runs:
            if _key(run.config) not in {_key(c) for c in configs}:
                configs.append(run.config)
    for config in configs:
        parts, part_pids, part_starts, part_errors, part_positions, part_procs = [], [], [], [], [], []
        for i, s in ok:
            run = next((r for r in s.runs if _key(r.config) == _key(config)), None)
            if run is not None and run.result is not None:
                parts.append(run.result)
                part_procs.append(i)
                part_pids.append(pids[i])
                part_starts.append(starts[i])
                part_positions.append(s.runs.index(run))
            elif run is not None:
                part_errors.append(f"process {i}: {(run.error or {}).get('type')}: {(run.error or {}).get('message')}")
        hint = _out_of_memory_hint(part_errors, together is not None)
        if not parts:
            failed += 1
            merged.add_failed(config, RuntimeError(("; ".join(part_errors) or "no worker process ran it")
                                                   + (f" ({hint})" if hint else "")))
            continue
        result = merge_processes(parts, pids=part_pids, seed=int(getattr(args, "seed", 0) or 0))
        _record_start(result.processes, start, note, part_starts)
        _record_prepare(result.processes, together, part_procs, prepare_note)
        if len(configs) > 1 and result.processes is not None:
            # Where this configuration ran in each process's order (interleaved_order): 0 = first.
            for row, position in zip(result.processes.get("per_process") or [], part_positions):
                row["position"] = position
        missing = n - len(parts)
        if missing:
            result.warnings.append(f"{missing} of {n} worker process(es) did not measure this configuration"
                                   + (f" ({'; '.join(part_errors)})" if part_errors else "")
                                   + (f"; {hint}" if hint else ""))
        merged.add_ok(config, result)
    if len(merged.runs) == 1 and merged.runs[0].result is not None:
        merged.runs[0].result.save(args.output)
    else:
        merged.save(args.output)
    return SweepOutcome(merged, 1 if failed or errors else 0, failed, len(configs))


def _record_prepare(section: dict[str, Any] | None, together: _Together | None, procs: Sequence[int],
                    note: str | None = None) -> None:
    """How the workers were prepared, in a result's ``processes`` section: ``prepare``
    ('together' or 'one after the other'), ``prepare_note`` (why not together, where it was
    asked for) and, prepared together, ``handoff`` (:data:`HANDOFF_ENV`) and each process's
    ``ready_s`` (from the fork to the end of its preparation), ``waited_s`` (then until its turn),
    ``overlap_s`` (from its turn until the worker before it had exited: it re-warmed meanwhile,
    its timed iterations came after) and ``turn_s`` (from its turn until it handed the turn on)."""
    if section is None:
        return
    section["prepare"] = "together" if together is not None else "one after the other"
    section["prepare_note"] = note
    if together is None:
        return
    section["handoff"] = together.handoff
    for row, p in zip(section.get("per_process") or [], procs):
        row["ready_s"] = together.ready_s.get(p)
        row["waited_s"] = together.waited_s.get(p)
        row["turn_s"] = together.turn_s.get(p)
        row["overlap_s"] = together.overlap_s.get(p)


def _record_start(section: dict[str, Any] | None, start: str, note: str | None, per_process: Sequence[str]) -> None:
    """How the workers started, in a result's ``processes`` section: ``start`` ('fork-server',
    'fresh-interpreter' or 'mixed'), ``start_note`` (why not the fork server, else None) and each
    process's own ``start``."""
    if section is None:
        return
    section["start"] = start
    section["start_note"] = note
    for row, how in zip(section.get("per_process") or [], per_process):
        row["start"] = how


# ---------------------------------------------------------------------------------------------
# The fork server's side.


def _send(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def _python_threads() -> int:
    import threading

    return threading.active_count()


def serve() -> int:
    """The fork server: imports :data:`PRELOAD`, says ``{"ready": true}`` on stdout, then for each
    request line on stdin (``{"argv", "stderr", "cwd", "env"}``) forks a child that runs
    ``fastprof <argv>``, says ``{"pid"}``, waits for it and says ``{"rc"}``. A request it cannot
    serve safely is answered ``{"refused": reason}``. Exits when stdin closes."""
    import gc
    import importlib
    import signal

    # The protocol on a private copy of stdout; fd 1 itself goes to /dev/null, so that nothing a
    # module prints can garble it.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.close(devnull)
    # Ctrl-C reaches the whole process group: the worker stops (exit code 130) and the parent
    # decides; the server itself waits for its child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                if name in ("torch", "transformers") or name.startswith("fastprof."):
                    raise
                print(f"fork server: {name} not preloaded: {exc}", file=sys.stderr)
    except BaseException as exc:  # noqa: BLE001 - said to the parent, which starts fresh workers instead
        _send(channel, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    # Everything alive now lives as long as the process: frozen, a collection in a worker scans
    # only what the worker made (and a frozen heap is not dirtied page by page after the fork).
    gc.collect()
    gc.freeze()
    _send(channel, {"ready": True, "frozen": gc.get_freeze_count()})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        threads = _python_threads()
        if threads != 1:
            _send(channel, {"refused": f"{threads - 1} other thread(s) running in the fork server"})
            continue
        # {"together": [request, ...]}: every child forked at once (each says its pid), then each
        # exit said as it comes ({"rc", "pid"}); a plain request: one child, waited for.
        batch = request["together"] if "together" in request else [request]
        running: set[int] = set()
        for one in batch:
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as exc:
                _send(channel, {"refused": f"fork failed: {exc}"})
                break
            if pid == 0:
                _child(one, channel)  # never returns
            running.add(pid)
            _send(channel, {"pid": pid})
        while running:
            try:
                pid, status = os.waitpid(-1, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                break
            if pid in running:
                running.discard(pid)
                _send(channel, {"rc": os.waitstatus_to_exitcode(status), "pid": pid})
    return 0


def _child(request: dict[str, Any], channel: IO[str]) -> None:
    """In the forked child: become a fresh ``python -m fastprof <argv>`` and exit with its code."""
    import signal

    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # stdin and stdout on /dev/null (never the server's protocol pipes), stderr to the file
        # the parent reads.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(err, 2)
        os.close(err)
        try:
            channel.close()
        except OSError:
            pass
        sys.stdin = open(os.devnull)  # the server's stdin wrapper may hold buffered requests
        os.chdir(request.get("cwd") or os.getcwd())
        env = request.get("env")
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        _reseed()
        import importlib.util

        argv = [str(a) for a in request["argv"]]
        spec = importlib.util.find_spec("fastprof.__main__")
        sys.argv = [(spec.origin if spec is not None else None) or "fastprof", *argv]
        # The program's own entry point, as `python -m fastprof` runs it (it exits with the
        # command's code); the measure layer does not import the command line itself.
        import runpy

        runpy.run_module("fastprof", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - a worker's crash is its exit code and traceback
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        _exit(code)


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _exit(code: Any) -> None:
    """Exits the child as an interpreter would (exit handlers, flushed streams), without
    unwinding into the server's loop."""
    import atexit

    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code if isinstance(code, int) else 1)


def _reseed() -> None:
    """Random state as a fresh interpreter would have it. Python's ``random`` reseeds itself in
    a forked child; numpy's legacy global generator does not (fresh: seeded from the OS); torch's
    default generator is left alone: a fresh interpreter starts it at the same fixed seed and the
    server never draws from it (``fastprof run`` seeds weights and prompts from ``--seed`` anyway)."""
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()
