"""The measurement driver: warm-up, timed iterations, output validation, memory clean-up."""

from __future__ import annotations

import time
from typing import Any, Callable, Generator, Sequence

import numpy as np

import fastprof._torch as _torch
from fastprof.analysis import hardware as _hardware
from fastprof.analysis import roofline as _roofline
from fastprof.capture.environment import capture_environment, environment_warnings
from fastprof.capture import speculative as _speculative
from fastprof.capture.recorder import TokenRecorder, Trace
from fastprof.errors import FastprofError, OutputLengthError
from fastprof.measure import distributed as _distributed
from fastprof.measure import turn
from fastprof.measure.instruments import Instrument, drain, iter_phase, run_phase
from fastprof.results.result import BenchmarkResult


def check_interval_ms(interval_ms: float | None) -> None:
    """The sampling interval is 1 to 1000 ms (None: no sampling), checked whatever the hardware."""
    if interval_ms is not None and not 1 <= interval_ms <= 1000:
        raise ValueError(f"sample_interval_ms must be 1 to 1000 (None: no sampling), got {interval_ms!r}")


def _check_counts(warmup: int, iterations: int) -> None:
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")


def _make_recorder(capacity: int, device: Any, no_device_reason: str | None = None
                   ) -> tuple[TokenRecorder, dict[str, Any]]:
    """A recorder for ``device``; host-only, with the reason recorded, when there is no GPU
    or its driver cannot be used."""
    if device == "auto":
        device = "cuda" if _torch.cuda_ready(_torch.loaded()) else None
        no_device_reason = no_device_reason or "no GPU in use (torch is not loaded or sees no CUDA/ROCm device)"
    if device is None or str(device) == "cpu":
        reason = no_device_reason or f"device timing disabled (device={device!r})"
        return TokenRecorder(capacity, device=None), {"available": False, "reason": reason}
    try:
        rec = TokenRecorder(capacity, device=device)
    except FastprofError as exc:
        return TokenRecorder(capacity, device=None), {"available": False, "reason": str(exc)}
    return rec, {"available": True, "reason": None, "backend": rec.device_kind, "ordinal": rec.device_ordinal,
                 "library": rec.library_path, "clock": "GPU timing events, ns after the start event"}


class _Sampling(Instrument):
    """The sampler over a whole measurement (one thread for all iterations), or the reason there is none.

    Where the GPU has GPM counters (compute capability 9.0 or newer) and an iteration's decode phase
    is too short to hold a GPM window at every lag GPM's values may have, the GPU is left idle for
    1.5 GPM periods between timed iterations (:func:`fastprof.analysis.hardware.gpm_idle_gap_ns`):
    the lag is fitted on that contrast, and without it the decode phase's DRAM figure could not be
    told. The wait is outside every iteration's timing and is recorded in the hardware section
    (``idle_between_iterations_s``)."""

    name = "hardware"
    #: When the last timed iteration of any measurement in this process ended (CLOCK_MONOTONIC ns):
    #: measurements whose iterations alternate share the GPU's idle time.
    last_end_ns = 0

    def __init__(self, device_timing: dict[str, Any], interval_ms: float | None, backend: str) -> None:
        check_interval_ms(interval_ms)
        self.sampler = None
        self.samples = None
        self.reason: str | None = None
        #: GPM's sampling period where the sampled GPU may have GPM counters, else None.
        self.gpm_period_ns: int | None = None
        #: The idle time left between timed iterations (0: none), decided on the first iteration.
        self.idle_ns = 0
        if interval_ms is None:
            self.reason = "GPU sampling disabled"
        elif not device_timing.get("available"):
            self.reason = f"no GPU sampled: {device_timing.get('reason')}"
        else:
            from fastprof.capture.sampler import Sampler

            try:
                self.sampler = Sampler(interval_ms=interval_ms, devices=[int(device_timing["ordinal"])],
                                       backend=backend)
            except (ValueError, FastprofError) as exc:
                self.reason = f"GPU sampler unavailable: {exc}"
            if self.sampler is not None and _torch.gpm_capable(int(device_timing["ordinal"])):
                self.gpm_period_ns = int(self.sampler.field_periods_ms["dram_bw_util_pct"] * 1e6)

    def start(self) -> None:
        if self.sampler is not None:
            self.sampler.start()

    def iteration_begin(self, index: int) -> None:
        if self.idle_ns:
            wait_ns = _Sampling.last_end_ns + self.idle_ns - time.monotonic_ns()
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)

    def iteration_end(self, index: int, trace: Trace) -> None:
        _Sampling.last_end_ns = time.monotonic_ns()
        if self.gpm_period_ns and index == 0 and trace.n_marks:
            self.idle_ns = _hardware.gpm_idle_gap_ns(int(trace.host_end_ns - trace.host_marks_ns[0]),
                                                     self.gpm_period_ns)

    def stop(self) -> None:
        if self.sampler is not None and self.sampler.running:
            self.samples = self.sampler.stop()

    def finish(self, traces: Sequence[Trace], tokens: Sequence[int], seed: int) -> dict[str, Any]:
        if self.sampler is None:
            return _hardware.unavailable(self.reason or "no sampler")
        self.stop()
        hw = _hardware.summarize(self.samples, traces, tokens_per_iteration=tokens, seed=seed)
        if self.idle_ns:
            hw["idle_between_iterations_s"] = self.idle_ns / 1e9
        return hw


def _step_marks(trace: Trace, clock: str) -> np.ndarray:
    """The marks of ``trace`` on ``clock`` once per decode step: its marks as they are in plain
    decoding, the last token's mark of each step in speculative decoding (a step's tokens share it)."""
    marks = trace.host_marks_ns if clock == "host" else trace.device_marks_ns
    tokens = (trace.steps or {}).get("tokens")
    if marks is None or tokens is None or int(np.sum(tokens)) != marks.size:
        return marks
    return np.asarray(marks)[np.cumsum(tokens) - 1]


def _stall_section(rec: Any, events: list[dict[str, Any]], traces: Sequence[Trace], sampling: _Sampling) -> dict[str, Any]:
    """The ``stalls`` section: the recorder's events plus GPU throttling and other processes
    appearing on the GPU, from the samples."""
    from fastprof.analysis import stalls as _stalls

    sources = dict(rec.sources)
    samples = sampling.samples
    have = samples is not None and samples.n_samples
    if have and "throttle_reasons" in samples.fields:
        events = events + _stalls.throttle_events(samples.timestamps_ns, samples.fields["throttle_reasons"],
                                                  int(samples.interval_ms * 1e6))
        sources["gpu_throttle"] = {"available": True}
    else:
        sources["gpu_throttle"] = {"available": False, "reason": sampling.reason or "no GPU samples"}
    others = samples.fields.get("other_processes") if have else None
    if others is not None and np.isfinite(np.asarray(others, dtype=np.float64)).any():
        period_ns = int(max(samples.interval_ms, (getattr(sampling.sampler, "field_periods_ms", None) or {})
                            .get("other_processes", 0)) * 1e6)
        events = events + _stalls.process_events(samples.timestamps_ns, others, period_ns)
        sources["gpu_process"] = {"available": True}
    else:
        sources["gpu_process"] = {"available": False,
                                  "reason": sampling.reason or "the GPU sampler does not list the GPU's processes here"}
    events = sorted(events, key=lambda e: (e["start_ns"], e["end_ns"]))
    return _stalls.section([t.host_marks_ns for t in traces], events, sources, cost=rec.cost)


class _KernelTracing(Instrument):
    """The kernel trace of a measurement: extra traced iterations after the timed ones (or, opt-in,
    the timed iterations themselves), turned into the result's ``kernels`` section. With ``api``,
    the tracer also records the CUDA runtime and driver API calls (for the ``host`` section)."""

    name = "kernels"

    def __init__(self, iterations: int | None, trace_timed: bool, device_timing: dict[str, Any],
                 api: bool = False) -> None:
        on_cuda = bool(device_timing.get("available")) and device_timing.get("backend") == "cuda"
        if iterations is not None and iterations < 0:
            raise ValueError(f"kernel_trace_iterations must be >= 0, got {iterations}")
        self.iterations = (2 if on_cuda else 0) if iterations is None else int(iterations)
        self.trace_timed = bool(trace_timed)
        self.requested = self.trace_timed or self.iterations > 0
        self.api = bool(api)
        self.reason: str | None = None
        if self.requested and not on_cuda:
            self.reason = ("kernel tracing needs a CUDA GPU with device timing: "
                           f"{device_timing.get('reason') or 'this device is not CUDA'}")
        self.tracer = None
        self.trace = None
        self.warnings: list[str] = []
        if self.trace_timed:
            self.warnings.append("the timed iterations were traced (trace_timed=True): their timings include the "
                                 "kernel tracer's cost (about 2.4 us per kernel launch)")

    @property
    def active(self) -> bool:
        return self.tracer is not None and self.tracer.available

    def start(self) -> None:
        if not self.requested or self.reason is not None:
            return
        from fastprof.capture.kernel_trace import KernelTracer

        self.tracer = KernelTracer(api=self.api)
        if self.tracer.note:
            self.warnings.append(self.tracer.note)
        self.tracer.start()

    def stop(self) -> None:
        if self.tracer is not None and self.trace is None:
            _torch.synchronize()
            self.trace = self.tracer.stop()

    def abort(self) -> None:
        if self.tracer is not None and self.tracer.running:
            self.tracer.stop()

    def finish(self, traced: Sequence[Trace], itl_s_untraced: float | None) -> dict[str, Any] | None:
        from fastprof.analysis import kernels as _kernels

        if not self.requested:
            return None
        if self.tracer is None:
            return _kernels.unavailable(self.reason or "the kernel tracer did not start")
        self.stop()
        # Per decode step: a speculative step's tokens share one mark, so the steps are its marks.
        itl = [float(np.diff(_step_marks(t, "host")).mean()) / 1e9 for t in traced if _step_marks(t, "host").size > 1]
        spans = []
        for t in traced:
            if t.device_marks_ns is None:
                continue
            marks = _step_marks(t, "device") if t.n_marks else np.array([0, int(t.device_end_ns or 0)], dtype=np.int64)
            spans.append((int(t.host_start_ns), np.asarray(marks, dtype=np.int64)))
        section = _kernels.section(self.trace, spans, itl_s_traced=float(np.median(itl)) if itl else None,
                                   itl_s_untraced=itl_s_untraced, traced_timed=self.trace_timed)
        if section.get("dropped"):
            self.warnings.append(f"the kernel trace dropped {section['dropped']} records: its breakdown is incomplete")
        return section

    def run_after(self, timed: list[Trace], run_once: Callable[[], Trace],
                  others: Sequence[Instrument] = (), minimum: int = 0) -> list[Trace]:
        """The traced iterations: ``timed`` themselves under ``trace_timed``, else more
        ``run_once()`` calls after the timed ones under this tracer and ``others``: this tracer's
        iteration count when it is available, at least ``minimum`` (the host trace needs no GPU)."""
        if self.trace_timed:
            return timed
        self.start()
        count = max(self.iterations if self.active else 0, int(minimum))
        if count <= 0:
            self.abort()
            return []
        try:
            return run_phase(list(others), count, run_once)
        except BaseException:
            self.abort()
            raise


class _HostTracing(Instrument):
    """Module and generate-loop marks in the traced iterations (:mod:`fastprof.capture.host_trace`),
    turned with the kernel tracer's CUDA API records into the result's ``host`` section."""

    name = "host"

    def __init__(self, model: Any, enabled: bool, compiled: bool = False, python_samples: bool = False) -> None:
        self.sampler = None
        self.python = None
        if enabled and python_samples:
            from fastprof.capture.pysampler import PySpySampler

            self.sampler = PySpySampler()
        self.tracer = None
        self.reason: str | None = None if enabled else "host tracing disabled (host_trace=False)"
        self.iterations: list[tuple[int, np.ndarray]] = []
        self.spans = None
        self.modules_reason = ("the forward pass is compiled (torch.compile): a module mark inside it would break "
                               "its graph, so only the generate loop's markers and the CUDA API calls are recorded"
                               if compiled else None)
        if enabled:
            try:
                from fastprof.capture.host_trace import HostTracer

                self.tracer = HostTracer(model, modules=not compiled)
            except Exception as exc:  # noqa: BLE001 - the section says why instead
                self.reason = f"module marks could not be placed: {type(exc).__name__}: {exc}"

    def processors(self, base: list[Any]) -> Any:
        from transformers import LogitsProcessorList

        return self.tracer.wrap_processors(base) if self.tracer is not None else LogitsProcessorList(base)

    def start(self) -> None:
        if self.sampler is not None:
            self.sampler.start()
        if self.tracer is not None:
            self.tracer.take()
            self.tracer.attach()

    def iteration_end(self, index: int, trace: Trace) -> None:
        self.iterations.append((int(trace.host_start_ns), np.asarray(_step_marks(trace, "host"), dtype=np.int64)))

    def stop(self) -> None:
        if self.tracer is not None and self.tracer.attached:
            self.tracer.detach()
            self.spans = self.tracer.take()
        if self.sampler is not None and self.python is None:
            self.python = self.sampler.stop()

    def section(self, kernels: "_KernelTracing", itl_s_untraced: float | None) -> dict[str, Any]:
        import threading

        from fastprof.analysis import host as _host

        if not self.iterations:
            return _host.unavailable(self.reason or "no traced iterations ran (kernel_trace_iterations=0)")
        trace = kernels.trace
        api = getattr(trace, "api", None) if trace is not None and getattr(trace, "available", False) else None
        api_reason = (None if api is not None and len(api) else
                      kernels.reason or (trace.reason if trace is not None and not trace.available else None)
                      or ("no CUDA API records (not on a CUDA GPU)" if kernels.tracer is None
                          else "the kernel tracer recorded no CUDA API call"))
        cost = {"hooks": self.tracer.hook_count if self.tracer is not None else 0}
        section = _host.section(self.iterations, spans=self.spans, api=api, kernels=trace,
                                thread_candidates=(threading.get_native_id(), threading.get_ident()),
                                api_reason=api_reason, modules_reason=self.modules_reason or self.reason,
                                itl_s_untraced=itl_s_untraced, cost=cost,
                                api_mode=kernels.tracer.api_mode if kernels.tracer is not None else None,
                                python=self.python)
        return section


class _Stalls(Instrument):
    """The stall sources (:class:`fastprof.capture.stalls.StallRecorder`) over the timed iterations."""

    name = "stalls"

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.events: list[dict[str, Any]] | None = None

    def start(self) -> None:
        self.recorder.start()

    def iteration_begin(self, index: int) -> None:
        self.recorder.iteration_begin()

    def iteration_end(self, index: int, trace: Trace) -> None:
        self.recorder.iteration_end(trace)

    def stop(self) -> None:
        if self.events is None:
            self.events = self.recorder.stop()

    @property
    def cost(self) -> dict[str, Any] | None:
        return self.recorder.cost


class _HostPath(Instrument):
    """Steal time and the CPU clock around every timed iteration, and a host-path calibration after
    each one, outside its timed region (:mod:`fastprof.capture.hostpath`)."""

    name = "host_path"

    def __init__(self, device_ordinal: int | None, enabled: bool = True) -> None:
        from fastprof.capture import hostpath

        self.ordinal = device_ordinal
        self.watch = hostpath.HostPathWatch() if enabled else None
        self.calibrations: list[dict[str, Any]] = []
        self._calibrate = hostpath.calibrate

    def iteration_begin(self, index: int) -> None:
        if self.watch is not None:
            self.watch.begin()

    def iteration_end(self, index: int, trace: Trace) -> None:
        if self.watch is None:
            return
        self.watch.end()
        self.calibrations.append(self._calibrate(device_ordinal=self.ordinal))

    def section(self) -> dict[str, Any] | None:
        if self.watch is None:
            return None
        rows = self.watch.rows()
        for row, cal in zip(rows, self.calibrations):
            row["calibration"] = cal
        from fastprof.analysis import host as _host

        return _host.host_path_section(rows, steal_reason=self.watch.reason)


def benchmark(fn: Callable[[], Any], *, warmup: int = 3, iterations: int = 20, device: Any = "auto",
              name: str | None = None, free_memory: bool = False, sample_interval_ms: float | None = 10,
              sampler_backend: str = "auto", seed: int = 0, kernel_trace_iterations: int | None = None,
              trace_timed: bool = False) -> BenchmarkResult:
    """Times any callable.

    Each iteration synchronises the device, takes the host start time and records a start
    event, calls ``fn()``, records an end event, synchronises the device and takes the host end
    time. The host clock therefore includes all device work ``fn`` queued; the device clock is
    the time between the two events on the current stream.

    ``device``: ``"auto"`` (the current CUDA device if torch sees one), ``None``/``"cpu"``, or a
    device such as ``"cuda:1"``. ``free_memory=True`` collects garbage and empties the device cache
    before each iteration; it is off by default because the idle time it adds lets the GPU lower
    its clocks, which slows a short call that follows.

    On a GPU, a native sampler reads utilisation, memory, power, clocks, temperature and energy
    every ``sample_interval_ms`` (``None``: off) over all measured iterations; the result's
    ``hardware`` section attributes each sample to its iteration (see :mod:`fastprof.analysis.hardware`).

    Kernel trace: after the timed iterations, ``kernel_trace_iterations`` more run under the CUPTI
    tracer (default: 2 on a CUDA GPU, else 0; 0 turns it off), and the result's ``kernels`` section
    holds GPU busy/idle time per call, time by kernel class and the top kernels
    (:mod:`fastprof.analysis.kernels`). ``trace_timed=True`` traces the timed iterations instead,
    with a warning: their timings then include the tracer's cost.
    """
    _check_counts(warmup, iterations)
    check_interval_ms(sample_interval_ms)
    rec, device_timing = _make_recorder(1, device)
    tracing = _KernelTracing(kernel_trace_iterations, trace_timed, device_timing)
    for _ in range(warmup):
        fn()
    rec.synchronize()
    sampling = _Sampling(device_timing, sample_interval_ms, sampler_backend)

    def run_once() -> Trace:
        if free_memory:
            _torch.free_memory()
        rec.synchronize()
        rec.begin()
        try:
            fn()
        finally:
            trace = rec.end()
        return trace

    traces = run_phase([sampling, *([tracing] if tracing.trace_timed else [])], iterations, run_once)
    hardware = sampling.finish(traces, [1] * len(traces), seed)
    traced = tracing.run_after(traces, run_once)
    host_latency = [(t.host_end_ns - t.host_start_ns) / 1e9 for t in traces]
    kernels = tracing.finish(traced, None)
    if kernels and kernels.get("available") and traced and not tracing.trace_timed:
        kernels["latency_s_traced"] = float(np.median([(t.host_end_ns - t.host_start_ns) / 1e9 for t in traced]))
        kernels["latency_s_untraced"] = float(np.median(host_latency))
    env = capture_environment()
    config = {"name": name or getattr(fn, "__name__", "callable"), "warmup": warmup, "iterations": iterations,
              "free_memory": free_memory, "seed": seed}
    result = BenchmarkResult.from_traces("callable", traces, config=config, environment=env,
                                         device_timing=device_timing, hardware=hardware,
                                         warnings=environment_warnings(env) + hardware.get("warnings", [])
                                         + tracing.warnings)
    result.kernels = kernels
    return result


def _model_device(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return getattr(model, "device", None)


def benchmark_generate(model: Any, inputs: Any, *, max_new_tokens: int, warmup: int = 5, iterations: int = 20,
                       generate_kwargs: dict[str, Any] | None = None, device: Any = "auto",
                       config: dict[str, Any] | None = None, sample_interval_ms: float | None = 10,
                       sampler_backend: str = "auto", seed: int = 0,
                       progress: Callable[[str, int, int], None] | None = None,
                       weight_bytes: float | None = None,
                       distributed: str | bool = "auto", kernel_trace_iterations: int | None = None,
                       trace_timed: bool = False, stalls: bool = True, text: Any = None,
                       host_trace: bool = True, host_path: bool = True,
                       python_samples: bool = False) -> BenchmarkResult:
    """Benchmarks ``model.generate`` with exactly ``max_new_tokens`` new tokens per sequence.

    ``inputs`` is a dict with ``input_ids`` (and usually ``attention_mask``), such as a
    tokenizer's output, or a tensor of input ids. Greedy decoding is used unless
    ``generate_kwargs`` says otherwise; ``min_new_tokens`` is forced to ``max_new_tokens`` so
    an end-of-sequence token cannot cut an iteration short.

    Per token, the host clock is read when the token reaches the host and a GPU event is
    recorded right behind the step's forward pass (see :mod:`fastprof.capture.hf`). Each iteration
    is checked to have produced ``max_new_tokens`` tokens: a mismatch raises
    :class:`fastprof.OutputLengthError` naming both counts, and that iteration is not recorded.
    Between iterations, outside the timed region, Python garbage and the device's cached memory
    are freed; compiled graphs are kept.

    ``device``: ``"auto"`` follows the model (GPU timing events when it is on a CUDA/ROCm
    device); ``None`` disables device timing. ``progress(phase, i, n)`` is called after each
    warm-up and measured iteration.

    On a GPU, one native sampler runs over all measured iterations (every ``sample_interval_ms``;
    ``None``: off, ``sampler_backend``: ``"auto"``, ``"nvml"``, ``"amdsmi"``, ``"xpusmi"``). Each
    sample is attributed to its iteration and phase (prefill before the first token, decode
    after) through the shared clock; the result's ``hardware`` section holds the samples,
    per-iteration utilisation, peak memory, power, energy and joules per token, temperature and
    throttling, and their statistics. Throttling appears among the warnings.

    The result's ``roofline`` compares what each decode step must read (the weights' real bytes,
    or ``weight_bytes`` when given, plus the KV cache) and compute with the GPU's peak bandwidth
    and tensor FLOP/s (from NVML and a table by compute capability): MBU, MFU and the ideal step
    time; ``verdict`` says whether decode is host-overhead-, memory- or compute-bound and why
    (see :mod:`fastprof.analysis.roofline`, :mod:`fastprof.analysis.verdict`).

    Under torchrun (torch.distributed initialised with several ranks), every rank measures
    itself and rank 0 gathers them (``distributed="auto"``): rank 0 returns the merged result
    (``result.distributed`` holds every rank; see :mod:`fastprof.measure.distributed`), the other
    ranks their own. The mode is ``"tp"`` for a model sharded by transformers' tensor parallelism
    (``tp_plan``), else ``"dp"``; pass ``distributed="tp"`` or ``"dp"`` to say so, ``False`` to
    keep every rank's result to itself. Every rank must call it, with the same counts.

    Stalls (``stalls=True``, the default): during the timed iterations, Python garbage
    collections, the measuring thread's waits for a CPU (read by a native thread from ``/proc``),
    torch.compile recompilations, CUDA allocator growth and GPU throttling are recorded on the
    same clock, and every slow token gap is listed with the events that overlap it (the result's
    ``stalls`` section; see :mod:`fastprof.analysis.stalls`).

    Kernel trace: the timed iterations are never traced by default. After them,
    ``kernel_trace_iterations`` more iterations run under the CUPTI kernel tracer (default: 2 on a
    CUDA GPU, else 0; 0 turns it off). The result's ``kernels`` section holds, per decode step, GPU
    busy and idle time, kernels per token, time by class and the top kernels for prefill and decode
    (:mod:`fastprof.analysis.kernels`), plus the traced iterations' own ITL next to the untraced ITL
    so the tracer's cost is visible. Without CUPTI, or while another profiler holds it, the section
    says why. ``trace_timed=True`` traces the timed iterations themselves, with a warning: their
    timings then include the tracer's cost. The breakdown also feeds the verdict.

    Host trace (``host_trace=True``, the default): the traced iterations (2 after the timed ones
    by default, on the CPU too; ``kernel_trace_iterations`` sets how many, 0 turns both traces
    off) also carry forward hooks on the model's modules and markers in the generate loop, and on
    a CUDA GPU the kernel tracer records the CUDA runtime and driver API calls. The result's
    ``host`` section splits every decode step two ways, each adding up to the step: by CUDA API
    (kernel launches, graph launches, copies, waiting for the GPU, Python and framework: the rest)
    and by place (the generate loop's segments; embeddings, decoder layers, attention, MLP, norms,
    LM head), with each launch matched to its kernel (:mod:`fastprof.analysis.host`).

    ``python_samples=True`` also samples the measuring thread's Python frames from outside the
    process with py-spy during the traced iterations (``host.python``: each function's time per
    decode step), where py-spy is installed and the platform lets it read the process; otherwise
    the section says why (:mod:`fastprof.capture.pysampler`).

    Host path (``host_path=True``): around each timed iteration, the CPU time the hypervisor took
    (steal) and the CPU's clock, and after it a short calibration (driver launch cost, launch plus
    synchronise, a torch operation, a pure-Python loop), outside the timed region: the result's
    ``host_path`` section, so that a slow spell of the machine shows beside the iterations it
    slowed (:mod:`fastprof.capture.hostpath`).

    Speculative decoding (``generate_kwargs`` with ``assistant_model`` or ``prompt_lookup_num_tokens``):
    a decode step (a draft and the target's verification of it) emits several tokens. Per step, one
    host mark when its tokens reach the host, one device event behind the verification forward pass,
    the tokens it emitted, and the draft marked before and after (host, and device on a GPU) with the
    draft tokens it proposed (:mod:`fastprof.capture.speculative`). Each token carries its step's time,
    so ITL stays per token (its mean is the time per token); the summary adds the per-step metrics
    ``step_s``, ``tokens_per_step``, ``acceptance_rate``, ``draft_s`` and ``verify_s``, and
    ``result.steps`` the distribution and the split (:mod:`fastprof.analysis.speculative`).
    ``num_assistant_tokens``, ``num_assistant_tokens_schedule`` and ``assistant_confidence_threshold``
    in ``generate_kwargs`` go to the assistant's generation config, where transformers reads them,
    for the measurement only.

    Text prompts: ``text`` (a :class:`fastprof.capture.hf.TextPrompts`) says where ``inputs`` came
    from. With ``text.timed``, every timed iteration tokenizes the prompts first and detokenizes
    the output last, inside the timed region (end-to-end user latency: TTFT then includes
    tokenization, latency detokenization); otherwise both are timed once, outside, and reported
    beside the result (its ``inputs`` section).
    """
    return run_steps(generate_steps(
        model, inputs, max_new_tokens=max_new_tokens, warmup=warmup, iterations=iterations,
        generate_kwargs=generate_kwargs, device=device, config=config, sample_interval_ms=sample_interval_ms,
        sampler_backend=sampler_backend, seed=seed, progress=progress, weight_bytes=weight_bytes,
        distributed=distributed, kernel_trace_iterations=kernel_trace_iterations, trace_timed=trace_timed,
        stalls=stalls, text=text, host_trace=host_trace, host_path=host_path, python_samples=python_samples))


def round_order(arms: Sequence[Any], r: int) -> list[Any]:
    """The order in which ``arms`` run their ``r``-th timed iteration when they alternate: every
    other round reversed (A B, B A, ...), so that a steady drift within a pair of rounds falls on
    all alike; with three or more, each pair of rounds also starts one arm further on (A B C,
    C B A, B C A, A C B, ...), so that every arm takes its turn at the ends of a round, where it
    runs twice in a row, and in the middle (reversal alone keeps the middle arms there for good, and
    two iterations of one arm back to back can differ from two of different arms)."""
    arms = list(arms)
    n = len(arms)
    shift = (r // 2) % n if n > 2 else 0
    order = arms[shift:] + arms[:shift]
    return order if r % 2 == 0 else order[::-1]


def run_steps(steps: Generator[str, None, BenchmarkResult]) -> BenchmarkResult:
    """Runs a :func:`generate_steps` generator to its end: its result."""
    return drain(steps)


def generate_steps(model: Any, inputs: Any, *, max_new_tokens: int, warmup: int = 5, iterations: int = 20,
                   generate_kwargs: dict[str, Any] | None = None, device: Any = "auto",
                   config: dict[str, Any] | None = None, sample_interval_ms: float | None = 10,
                   sampler_backend: str = "auto", seed: int = 0,
                   progress: Callable[[str, int, int], None] | None = None,
                   weight_bytes: float | None = None,
                   distributed: str | bool = "auto", kernel_trace_iterations: int | None = None,
                   trace_timed: bool = False, stalls: bool = True, text: Any = None,
                   host_trace: bool = True, host_path: bool = True,
                   python_samples: bool = False) -> Generator[str, None, BenchmarkResult]:
    """:func:`benchmark_generate` one step at a time, with the same arguments: yields ``"warm"``
    once the warm-up is done, ``"timed"`` after each timed iteration (outside its timed region,
    every instrument having closed it) and ``"measured"`` once its last iteration (timed or traced)
    has run, and returns the :class:`BenchmarkResult` once the traced
    iterations ran and the result is built. Between two steps the caller may run other work on the
    same model: :mod:`fastprof.measure.runner` alternates the timed iterations of configurations
    that share a model this way. Closing the generator early stops its instruments.

    Two arms of one model, their timed iterations alternating (A B, B A, ...;
    :func:`round_order`)::

        from fastprof.measure.driver import round_order, run_steps

        a = fastprof.generate_steps(model, inputs, max_new_tokens=64)
        b = fastprof.generate_steps(model, inputs, max_new_tokens=64, generate_kwargs={"use_cache": False})
        for arm in (a, b):
            next(arm)                      # warm-up: "warm"
        for i in range(20):                # the default iterations
            for arm in round_order((a, b), i):
                next(arm)                  # one timed iteration: "timed"
        results = [run_steps(arm) for arm in (a, b)]
    """
    from transformers import LogitsProcessorList

    from fastprof.capture.hf import make_hooks

    _check_counts(warmup, iterations)
    check_interval_ms(sample_interval_ms)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not isinstance(inputs, dict) and hasattr(inputs, "shape"):
        inputs = {"input_ids": inputs}
    inputs = dict(inputs)
    input_ids = inputs["input_ids"]
    batch_size, prompt_len = int(input_ids.shape[0]), int(input_ids.shape[-1])

    model_device = _model_device(model)
    no_device_reason = None
    if device == "auto":
        on_gpu = getattr(model_device, "type", None) == "cuda"
        device = model_device if on_gpu else None
        no_device_reason = None if on_gpu else f"the model is on {model_device}, not a GPU"
    kwargs = {"do_sample": False}
    kwargs.update(generate_kwargs or {})
    user_processors = kwargs.pop("logits_processor", None) or []
    if "streamer" in kwargs:
        raise ValueError("generate_kwargs may not contain 'streamer': fastprof attaches its own")
    # Beam search keeps several candidates per sequence and picks at the end, so there is no
    # token to mark per step (transformers refuses a streamer with it): only the whole call is timed.
    per_token = int(kwargs.get("num_beams", 1) or 1) <= 1
    spec_method = _speculative.method(kwargs, model) if per_token else None
    assistant_cfg = _speculative.assistant_settings(kwargs)

    # One spare slot: a surplus token shows up as a count mismatch, not a capacity error.
    rec, device_timing = _make_recorder(max_new_tokens + 1, device, no_device_reason)
    tracing = _KernelTracing(kernel_trace_iterations, trace_timed, device_timing, api=host_trace)
    if spec_method is None:
        streamer, processor = make_hooks(rec)
        draft_rec, step_log, candidates = None, None, None
    else:
        # A decode step emits several tokens: one host and one device mark per step, the tokens
        # per step counted, and the draft marked by a second recorder on the same stream.
        draft_device = f"{rec.device_kind}:{rec.device_ordinal}" if device_timing.get("available") else None
        draft_rec = TokenRecorder(2 * max_new_tokens + 4, device=draft_device)
        step_log = _speculative.StepLog(max_new_tokens + 1)
        streamer, processor, wrap = _speculative.make_step_hooks(rec, draft_rec, step_log)
        candidates = wrap.installed(model)
    kwargs.update(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    if per_token:
        kwargs.update(streamer=streamer, logits_processor=LogitsProcessorList([*user_processors, processor]))
    elif user_processors:
        kwargs["logits_processor"] = LogitsProcessorList(user_processors)
    gen_config = getattr(model, "generation_config", None)
    if "pad_token_id" not in kwargs and gen_config is not None and gen_config.pad_token_id is None:
        eos = gen_config.eos_token_id
        kwargs["pad_token_id"] = (eos[0] if isinstance(eos, (list, tuple)) else eos) if eos is not None else 0

    import torch

    timed_text = text is not None and bool(getattr(text, "timed", False))
    timed_kwargs = kwargs

    def run_once(kw: dict[str, Any]) -> Trace:
        streamer.reset()
        _torch.free_memory()
        _torch.synchronize()
        if draft_rec is not None:
            draft_rec.begin()  # first: the iteration's own start comes last, right before generate
        rec.begin()
        try:
            with torch.inference_mode(), (candidates if candidates is not None else _nothing()):
                if timed_text:
                    out = model.generate(**text.encode(), **kw)
                    text.decode(out.sequences if hasattr(out, "sequences") else out)
                else:
                    out = model.generate(**inputs, **kw)
        finally:
            trace = rec.end()
            draft_trace = draft_rec.end() if draft_rec is not None else None
        sequences = out.sequences if hasattr(out, "sequences") else out
        produced = int(sequences.shape[-1]) - prompt_len
        if produced != max_new_tokens:
            raise OutputLengthError(max_new_tokens, produced, "generate returned sequences of the wrong length")
        if step_log is not None and draft_trace is not None:
            trace = _step_trace(trace, draft_trace, step_log, spec_method)
        if per_token and trace.n_marks != max_new_tokens:
            raise OutputLengthError(max_new_tokens, trace.n_marks, "the streamer saw a different number of tokens")
        return trace

    # The speculative settings sit on the assistant's generation config for the measurement only.
    with assistant_cfg:
        # Prepared beside other workers (fastprof.measure.turn): the whole warm-up now,
        # untimed beside theirs (at least one call: its one-off costs), then, once this worker's turn
        # has come, turn.REWARM iterations more (clocks and caches after the wait), and more while
        # the worker before this one still finishes (its result, its exit): timing starts alone.
        prepared = turn.pending()
        for i in range(max(warmup, 1) if prepared else warmup):
            run_once(timed_kwargs)
            if progress and i < warmup:
                progress("warmup", i + 1, warmup)
        if prepared:
            turn.wait_turn()
            for _ in range(min(warmup, turn.REWARM)):
                run_once(timed_kwargs)
            while warmup and not turn.alone(wait=False):
                run_once(timed_kwargs)
            turn.alone(wait=True)
        yield "warm"
        # Everything alive now (model, imports) lives as long as the measurement: each iteration's
        # collection then scans only what the iterations made (a full one took 0.3 s in the built-in
        # model's process). Thawed in the end, so that the model can be freed.
        _torch.freeze_long_lived()
        try:
            # The timed iterations, under the instruments that cost the measured thread nothing per token.
            on_cuda = getattr(model_device, "type", None) == "cuda"
            sampling = _Sampling(device_timing, sample_interval_ms, sampler_backend)
            stall_rec = None
            if stalls:
                from fastprof.capture.stalls import StallRecorder

                stall_rec = _Stalls(StallRecorder(cuda_device=model_device if on_cuda else None,
                                                  token_recorder=rec if on_cuda and per_token else None))
            hostpath = _HostPath(int(getattr(model_device, "index", None) or 0) if on_cuda else None, enabled=host_path)
            # Iterations end in reverse order: the host path's calibration runs after every other
            # instrument has closed the iteration, so nothing it does is counted in that iteration.
            timed_instruments: list[Instrument] = [hostpath, sampling, *([stall_rec] if stall_rec else [])]
            if tracing.trace_timed:
                timed_instruments.append(tracing)
            traces = yield from iter_phase(timed_instruments, iterations, lambda: run_once(timed_kwargs),
                                           (lambda i: progress("measure", i, iterations)) if progress else None,
                                           label="timed")
            hardware = sampling.finish(traces, [batch_size * max_new_tokens] * len(traces), seed)

            # The traced iterations, after the timed ones: kernel trace (with CUDA API records) and host marks.
            compiled = kwargs.get("compile_config") is not None or type(model).__name__ == "OptimizedModule"
            host = _HostTracing(model, host_trace and per_token and not tracing.trace_timed, compiled=compiled,
                            python_samples=python_samples)
            traced_kwargs = timed_kwargs
            if host.tracer is not None:
                traced_kwargs = dict(timed_kwargs, logits_processor=host.processors([*user_processors, processor]))
            n_host = (2 if kernel_trace_iterations is None else int(kernel_trace_iterations)) if host.tracer else 0
            traced = tracing.run_after(traces, lambda: run_once(traced_kwargs), others=[host], minimum=n_host)
            # The last iteration of this configuration has run: what follows builds the result.
            yield "measured"

            if device_timing["available"] and per_token:
                bad = [i for i, t in enumerate(traces) if t.device_marks_ns is None or t.device_marks_ns.size != t.n_marks]
                if bad:
                    device_timing = {"available": False,
                                     "reason": (f"the logits processor was not called once per token (iterations {bad}); "
                                                "this decoding strategy bypasses logits processors") if spec_method is None
                                     else (f"no device mark behind every verification (iterations {bad}): this "
                                           "transformers' candidate generator could not be wrapped")}

            env = capture_environment()
            cfg = {
                "model": getattr(getattr(model, "config", None), "name_or_path", None) or type(model).__name__,
                "batch_size": batch_size, "prompt_len": prompt_len, "max_new_tokens": max_new_tokens,
                "warmup": warmup, "iterations": iterations, "device": str(model_device),
                "dtype": str(getattr(model, "dtype", "")).replace("torch.", ""), "seed": seed,
                "generate_kwargs": {k: v for k, v in kwargs.items()
                                    if k not in ("streamer", "logits_processor") and isinstance(v, (int, float, str, bool))},
            }
            cfg["sample_interval_ms"] = sample_interval_ms
            notes: list[str] = []
            if not per_token:
                cfg["per_token_marks"] = False
                notes.append(f"beam search (num_beams={kwargs['num_beams']}): no per-token marks (the best sequence is "
                             "chosen at the end), so only end-to-end latency and throughput are measured")
            if spec_method is not None:
                cfg["draft"] = _speculative_config(model, spec_method, kwargs, assistant_cfg.settings)
            cfg.update(config or {})
            result = BenchmarkResult.from_traces("generate", traces, config=cfg, environment=env,
                                                 device_timing=device_timing, hardware=hardware,
                                                 warnings=notes + environment_warnings(env) + hardware.get("warnings", []))
            # The traced iterations' time per step against the untraced one's (per token in plain decoding).
            itl_untraced = (result.summary.get("step_s" if spec_method else "itl_s") or {}).get("mean")
            result.kernels = tracing.finish(traced, itl_untraced)
            result.warnings += tracing.warnings
            if per_token:
                result.host = host.section(tracing, itl_untraced)
            if spec_method is not None and result.steps is not None and traced:
                from fastprof.analysis import speculative as _spec_analysis

                result.steps["traced"] = _spec_analysis.traced_split(
                    traced, kernels=tracing.trace if tracing.active else None, spans=host.spans)
            result.host_path = hostpath.section()
            if stall_rec is not None and per_token:
                result.stalls = _stall_section(stall_rec.recorder, stall_rec.events or [], traces, sampling)
            if text is not None:
                result.inputs = text.describe(None if timed_text else _untimed_text_cost(text, traces))
            breakdown = result.kernels if result.kernels and result.kernels.get("available") else None
            gpu = None
            if getattr(model_device, "type", None) == "cuda":
                gpu = _roofline.gpu_peaks(_roofline.gpu_facts(env, int(getattr(model_device, "index", None) or 0)))
            result.diagnose(model=model_facts(model, weight_bytes=weight_bytes), gpu=gpu, kernels=breakdown)
            if distributed is not False and _distributed.active():
                mode = _distributed.infer_mode(model) if distributed in ("auto", True) else str(distributed)
                merged = _distributed.finish(result, None, mode=mode, device=str(model_device), environment=env, seed=seed)
                assert merged is not None
                result = merged
            return result
        finally:
            _torch.thaw_long_lived()


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _step_trace(trace: Trace, draft: Trace, log: Any, method: str | None) -> Trace:
    """The per-token trace of a speculative iteration: its per-step marks repeated for each token
    the step emitted (each token carries its step's time), with the steps themselves and the
    draft marks in ``steps``."""
    import dataclasses

    tokens = log.tokens[: log.steps].copy()
    host, device = _speculative.expand(trace.host_marks_ns, trace.device_marks_ns, tokens)
    free = trace.device_free_bytes
    if free is not None and free.size == tokens.size:
        free = np.repeat(free, tokens)
    steps = {"method": method, "tokens": tokens, "proposed": log.proposed[: log.drafts].copy(),
             "draft_start_ns": int(draft.host_start_ns),
             "draft_host_ns": np.asarray(draft.host_marks_ns, dtype=np.int64),
             "draft_device_ns": None if draft.device_marks_ns is None else np.asarray(draft.device_marks_ns,
                                                                                       dtype=np.int64)}
    return dataclasses.replace(trace, host_marks_ns=host, device_marks_ns=device, device_free_bytes=free,
                               steps=steps)


def _speculative_config(model: Any, method: str, kwargs: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The result's ``config.speculative``: the method and the draft's settings as generate saw them."""
    out: dict[str, Any] = {"method": method}
    assistant = kwargs.get("assistant_model")
    if assistant is not None:
        out["assistant_model"] = ("self" if assistant is model else
                                  getattr(getattr(assistant, "config", None), "name_or_path", None)
                                  or type(assistant).__name__)
        gen = getattr(assistant, "generation_config", None)
        for key in _speculative.ASSISTANT_SETTINGS:
            value = settings.get(key, getattr(gen, key, None))
            out[key] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
        try:
            out["assistant_parameters"] = int(sum(p.numel() for p in assistant.parameters()))
        except (AttributeError, TypeError):
            pass
    gen = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    for key in ("prompt_lookup_num_tokens", "max_matching_ngram_size", "assistant_early_exit"):
        value = kwargs.get(key, getattr(gen, key, None))
        if value is not None:
            out[key] = value
    return out


def _untimed_text_cost(text: Any, traces: Sequence[Trace], repeats: int = 5) -> dict[str, float]:
    """Median seconds of tokenizing the prompts and of detokenizing an output as long as the
    timed ones, each run ``repeats`` times after the timed iterations."""
    enc, dec = [], []
    sequences = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids = text.encode()
        enc.append(time.perf_counter() - t0)
        sequences = ids["input_ids"] if sequences is None else sequences
    n_new = max((t.n_marks for t in traces), default=0)
    import torch

    out = torch.cat([sequences, sequences[:, -1:].repeat(1, max(n_new, 0))], dim=1)
    for _ in range(repeats):
        t0 = time.perf_counter()
        text.decode(out)
        dec.append(time.perf_counter() - t0)
    return {"tokenize_s": float(np.median(enc)), "detokenize_s": float(np.median(dec))}


def model_facts(model: Any, *, weight_bytes: float | None = None) -> dict[str, Any] | None:
    """The facts the roofline needs about a transformers model: its config's shape (layers, heads,
    KV heads, head dimension, vocabulary), the parameter count, whether the input embedding is tied
    to the output layer, and the bytes the weights really occupy: the storage of every parameter and
    every non-boolean buffer, quantized storage with its scales included
    (:func:`fastprof.capture.quantization.weight_bytes`), unless ``weight_bytes`` is given.
    None when the model has no usable config."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "parameters"):
        return None
    params = list(model.parameters())
    if not params:
        return None
    from fastprof.capture import quantization

    n_params = sum(quantization.logical_numel(p) for p in params)
    if weight_bytes is None:
        weight_bytes = quantization.weight_bytes(model)
    floating = [p for p in params if p.dtype.is_floating_point]
    element = int(floating[0].element_size()) if floating else 2
    dtype = getattr(model, "dtype", None)
    kv_element = element
    try:
        import torch

        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            kv_element = int(torch.empty((), dtype=dtype).element_size())
    except ImportError:
        pass
    tied, emb_params, emb_bytes = None, None, None
    try:
        emb, out = model.get_input_embeddings(), model.get_output_embeddings()
        if emb is not None and getattr(emb, "weight", None) is not None:
            emb_params = int(emb.weight.numel())
            emb_bytes = emb_params * int(emb.weight.element_size())
            tied = out is not None and getattr(out, "weight", None) is not None and \
                emb.weight.data_ptr() == out.weight.data_ptr()
    except (AttributeError, NotImplementedError):
        pass
    try:
        return _roofline.model_facts_from_config(
            config, params=n_params, weight_bytes=float(weight_bytes), bytes_per_element=float(kv_element),
            kv_bytes_per_element=float(kv_element), tie_embeddings=tied, input_embedding_params=emb_params,
            input_embedding_bytes=emb_bytes)
    except (ValueError, TypeError):
        return None


def summarize_generation(traces: Sequence[Trace], *, batch_size: int, prompt_len: int,
                         config: dict[str, Any] | None = None, seed: int = 0) -> BenchmarkResult:
    """Turns traces from a hand-written decode loop (one :meth:`TokenRecorder.mark` per token)
    into the same metrics and statistics as :func:`benchmark_generate`."""
    if not traces:
        raise ValueError("no traces to summarize")
    has_device = all(t.device_marks_ns is not None and t.device_marks_ns.size == t.n_marks for t in traces)
    device_timing = {"available": has_device,
                     "reason": None if has_device else "the traces carry no complete device timestamps"}
    env = capture_environment()
    cfg = {"batch_size": batch_size, "prompt_len": prompt_len, "iterations": len(traces), "seed": seed,
           "max_new_tokens": max(t.n_marks for t in traces)}
    cfg.update(config or {})
    return BenchmarkResult.from_traces("generate", traces, config=cfg, environment=env, device_timing=device_timing,
                                       warnings=environment_warnings(env))
