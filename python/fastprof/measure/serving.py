"""Continuous batching under load: requests arrive on a schedule and are served by transformers'
continuous-batching manager while fastprof records every request's arrival and tokens.

How it runs (:func:`benchmark_serving`):

1. ``model.init_continuous_batching`` builds the manager (paged KV cache sized from the workload
   when the API allows it), the manager's own warm-up runs, the generation thread starts.
2. ``warmup_requests`` requests are submitted at once and waited for; they are not measured.
3. The measured schedule starts: request *i* arrives at ``t0 + offset_i`` (Poisson, fixed interval or
   all at once, seeded; :func:`fastprof.analysis.serving.arrival_offsets`) and is submitted at that
   moment with ``streaming=True``; between arrivals the caller's thread collects outputs.
4. The window closes when every measured request is done (``num_requests``) or at
   ``t0 + duration`` (``duration``); requests still generating or still queued then are recorded as
   ``running`` / ``queued`` with the tokens they had, never dropped.

Clock: transformers stamps each generated token with ``time.perf_counter()`` when it is asked to
(``record_timestamps``); on Linux that is CLOCK_MONOTONIC, fastprof's clock, and the first output of
each run is checked to lie between the request's submission and its reception. When the API has no
per-token timestamps, or they fail that check, each token is stamped on the host when its streamed
output reaches fastprof (``serving.token_clock`` says which).
"""

from __future__ import annotations

import inspect
import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from fastprof.analysis import serving as _serving
from fastprof.capture.environment import capture_environment, environment_warnings
from fastprof.capture.recorder import Trace
from fastprof.errors import FastprofError
from fastprof.results.result import BenchmarkResult

#: Attention implementations transformers' continuous batching runs (others are refused up front).
SUPPORTED_ATTN = ("sdpa", "eager", "paged|eager", "paged|sdpa")


class UnsupportedServingError(FastprofError):
    """The model or its attention implementation cannot be served by continuous batching."""


def _params(fn: Any) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def check_supported(model: Any) -> None:
    """Raises :class:`UnsupportedServingError` with a one-line reason when transformers' continuous
    batching cannot serve ``model``."""
    if not callable(getattr(model, "init_continuous_batching", None)):
        import transformers

        raise UnsupportedServingError(
            f"{type(model).__name__} has no init_continuous_batching (transformers {transformers.__version__}): "
            "continuous batching needs a transformers generative model and transformers >= 5")
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise UnsupportedServingError(f"{type(model).__name__} is an encoder-decoder model; continuous batching "
                                      "serves decoder-only models")
    check_attention(getattr(getattr(model, "config", None), "_attn_implementation", None) or "sdpa")


def check_attention(attn: str) -> None:
    """Raises :class:`UnsupportedServingError` unless continuous batching runs attention ``attn``
    (sdpa, eager, paged variants, flash attention; ``auto``: the model's default, checked later)."""
    if not (attn == "auto" or attn in SUPPORTED_ATTN or "flash" in attn or attn.startswith("paged")):
        raise UnsupportedServingError(f"attention implementation {attn!r} is not supported by continuous batching "
                                      "(use sdpa, eager or a flash attention implementation)")


def _make_manager(model: Any, *, max_new_tokens: int, max_prompt: int, num_requests: int,
                  cb_options: dict[str, Any], eos_token_id: Any) -> tuple[Any, dict[str, Any]]:
    """The manager, built through whatever the installed transformers offers (feature detection:
    ``continuous_batching_config`` and ``workload_hints`` where ``init_continuous_batching`` takes
    them, else the options set on the generation config as older releases read them)."""
    from transformers import GenerationConfig

    gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_token_id,
                           pad_token_id=getattr(model.config, "pad_token_id", None) or 0)
    init = model.init_continuous_batching
    accepted = _params(init)
    kwargs: dict[str, Any] = {"generation_config": gen}
    used: dict[str, Any] = dict(cb_options)
    if "continuous_batching_config" in accepted:
        from transformers import ContinuousBatchingConfig

        fields = _params(ContinuousBatchingConfig)
        unknown = [k for k in cb_options if k not in fields]
        if unknown:
            raise ValueError(f"unknown continuous-batching option(s) {', '.join(unknown)}; this transformers "
                             f"takes: {', '.join(sorted(fields))}")
        kwargs["continuous_batching_config"] = ContinuousBatchingConfig(**cb_options)
    else:
        for k, v in cb_options.items():
            setattr(gen, k, v)
    if "workload_hints" in accepted:
        try:
            from transformers.generation.continuous_batching.utils import WorkloadHints

            kwargs["workload_hints"] = WorkloadHints(max_prompt_length=max_prompt, max_generated_length=max_new_tokens,
                                                     num_requests=num_requests)
            used["workload_hints"] = {"max_prompt_length": max_prompt, "max_generated_length": max_new_tokens,
                                      "num_requests": num_requests}
        except ImportError:
            pass
    return init(**kwargs), used


def _default_cb_options(model: Any, *, max_prompt: int, max_new_tokens: int, num_requests: int) -> dict[str, Any]:
    """On the CPU, a paged cache sized for the workload (the default sizes it from memory, which on a
    CPU means most of the RAM and seconds of allocation); on a GPU, transformers' own defaults."""
    try:
        on_gpu = next(model.parameters()).device.type == "cuda"
    except (StopIteration, AttributeError):
        on_gpu = False
    if on_gpu:
        return {}
    page = 64
    per_request = math.ceil((max_prompt + max_new_tokens + 1) / page)
    return {"page_size": page, "num_blocks": max(8, per_request * max(1, num_requests)),
            "max_batch_tokens": max(256, max_prompt * 2)}


class _Collector:
    """Turns the manager's outputs into request records (token times on fastprof's clock)."""

    def __init__(self, use_transformers_clock: bool) -> None:
        self.use_tf = use_transformers_clock
        self.checked = False
        self.records: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []

    def add(self, rid: str, rec: dict[str, Any]) -> None:
        rec.setdefault("token_ns", [])
        rec.setdefault("_n", 0)
        self.records[rid] = rec

    def take(self, out: Any, received_ns: int) -> dict[str, Any] | None:
        rec = self.records.get(getattr(out, "request_id", None))
        if rec is None:
            return None
        generated = list(getattr(out, "generated_tokens", None) or [])
        stamps = getattr(out, "timestamps", None) if self.use_tf else None
        if stamps is not None and not self.checked:
            self.checked = True
            first = int(round(stamps[0] * 1e9)) if stamps else None
            if first is not None and not (rec["submit_ns"] - 1_000_000 <= first <= received_ns + 1_000_000):
                self.use_tf = False
                stamps = None
                self.warnings.append("transformers' token timestamps are not on fastprof's clock (a first token "
                                     "outside its request's submission..reception span): tokens were timed on the "
                                     "host when their output arrived")
        if stamps is not None:
            rec["token_ns"] = [int(round(t * 1e9)) for t in list(stamps)[: len(generated)]]
        else:
            grown = len(generated) - rec["_n"]
            rec["token_ns"] = rec["token_ns"] + [received_ns] * max(grown, 0)
        rec["_n"] = len(generated)
        lifespan = getattr(out, "lifespan", None)
        if lifespan and lifespan[0] is not None and lifespan[0] > 0:
            rec["scheduled_ns"] = int(round(lifespan[0] * 1e9))
        status = getattr(out, "status", None)
        name = getattr(status, "name", str(status)).upper()
        error = getattr(out, "error", None)
        if name == "FAILED" or error:
            rec["status"], rec["error"] = "failed", str(error or "failed")
            rec["done"] = True
        elif name == "FINISHED":
            rec["status"], rec["done"] = "finished", True
        else:
            rec["status"] = "running" if rec["token_ns"] else "queued"
        return rec


def benchmark_serving(model: Any, prompts: Sequence[Sequence[int]], *, rate: float | None,
                      num_requests: int | None = None, duration: float | None = None, max_new_tokens: int = 64,
                      arrival: str = "poisson", warmup_requests: int = 2, manager_warmup: bool = True,
                      slo_ttft_ms: float | None = None, slo_itl_ms: float | None = None,
                      ignore_eos: bool = True, drain_timeout_s: float = 300.0,
                      continuous_batching_options: dict[str, Any] | None = None,
                      sample_interval_ms: float | None = 10, sampler_backend: str = "auto", seed: int = 0,
                      config: dict[str, Any] | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> BenchmarkResult:
    """Serves ``prompts`` (lists of token ids; request *i* takes prompt ``i % len(prompts)``) through
    transformers' continuous batching at an offered load of ``rate`` requests per second and
    returns a result of kind ``"serving"``.

    Give ``num_requests`` (the window closes when they are all done, or after ``drain_timeout_s``)
    or ``duration`` seconds of arrivals (the window closes then; requests in flight count as
    ``running`` or ``queued``). ``arrival``: ``"poisson"`` (seeded by ``seed``), ``"fixed"`` (every
    1/rate s) or ``"burst"`` (all at once; needs ``num_requests``). ``warmup_requests`` are served
    first and not measured; ``manager_warmup`` runs the manager's own warm-up (CUDA graph capture).

    ``ignore_eos`` (default) generates exactly ``max_new_tokens`` per request. ``slo_ttft_ms`` and
    ``slo_itl_ms`` set the limits goodput counts against. ``continuous_batching_options`` go to
    transformers' ``ContinuousBatchingConfig`` (e.g. ``num_blocks``, ``max_batch_tokens``,
    ``max_requests_per_batch``). On a GPU the native sampler runs over the whole window.

    The result's ``serving`` section holds every measured request raw (``arrival_ns``,
    ``token_ns``, ``status``, ``error``) with ``queue_s``, ``ttft_s`` and ``e2e_s``, and the run's
    throughput, goodput and occupancy (:func:`fastprof.analysis.serving.summarize`); ``summary``
    has the statistics of queue delay, TTFT, ITL, TPOT and end-to-end latency over the requests.
    Raises :class:`UnsupportedServingError` when continuous batching cannot serve the model.
    """
    from fastprof.measure.driver import _model_device, _Sampling, model_facts

    if (num_requests is None) == (duration is None):
        raise ValueError("give exactly one of num_requests and duration")
    if num_requests is not None and num_requests < 1:
        raise ValueError(f"num_requests must be >= 1, got {num_requests}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration}")
    if arrival == "burst" and num_requests is None:
        raise ValueError("arrival 'burst' needs num_requests (all requests arrive at once)")
    if arrival != "burst" and (rate is None or not rate > 0):
        raise ValueError(f"rate must be > 0 requests per second for {arrival} arrivals, got {rate}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if warmup_requests < 0:
        raise ValueError(f"warmup_requests must be >= 0, got {warmup_requests}")
    prompts = [list(map(int, p)) for p in prompts]
    if not prompts or any(not p for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token id lists")
    check_supported(model)

    if num_requests is not None:
        offsets = _serving.arrival_offsets(num_requests, rate=rate or 0.0, arrival=arrival, seed=seed)
    else:
        assert duration is not None and rate is not None
        n = int(rate * duration * 2 + 50)
        offsets = _serving.arrival_offsets(n, rate=rate, arrival=arrival, seed=seed)
        while offsets[-1] < duration:
            n *= 2
            offsets = _serving.arrival_offsets(n, rate=rate, arrival=arrival, seed=seed)
        offsets = offsets[offsets < duration]
    n_measured = int(offsets.size)
    max_prompt = max(len(p) for p in prompts)
    cb_options = dict(continuous_batching_options if continuous_batching_options is not None else
                      _default_cb_options(model, max_prompt=max_prompt, max_new_tokens=max_new_tokens,
                                          num_requests=n_measured + warmup_requests))
    manager, cb_used = _make_manager(model, max_new_tokens=max_new_tokens, max_prompt=max_prompt,
                                     num_requests=n_measured + warmup_requests, cb_options=cb_options,
                                     eos_token_id=-1 if ignore_eos else getattr(model.generation_config,
                                                                                "eos_token_id", None))
    add_params = _params(manager.add_request)
    use_tf_clock = "record_timestamps" in add_params
    add_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if "streaming" in add_params:
        add_kwargs["streaming"] = True
    if use_tf_clock:
        add_kwargs["record_timestamps"] = True
    if ignore_eos and "eos_token_id" in add_params:
        add_kwargs["eos_token_id"] = -1
    warnings: list[str] = []
    if "streaming" not in add_params:
        warnings.append("this transformers' add_request has no streaming: requests in flight at the window's end "
                        "are recorded without their tokens")

    model_device = _model_device(model)
    on_gpu = getattr(model_device, "type", None) == "cuda"
    sampling_device = ({"available": True, "ordinal": int(getattr(model_device, "index", None) or 0)} if on_gpu
                       else {"available": False, "reason": f"the model is on {model_device}, not a GPU"})
    sampling = _Sampling(sampling_device, sample_interval_ms, sampler_backend)
    collector = _Collector(use_tf_clock)
    now = time.perf_counter_ns

    def submit(i: int, arrival_ns: int, measured: bool) -> str:
        prompt = prompts[i % len(prompts)]
        submit_ns = now()
        rid = manager.add_request(prompt, request_id=f"{'m' if measured else 'w'}{i}", **add_kwargs)
        rec = {"request": i, "rate": rate, "arrival_ns": arrival_ns, "submit_ns": submit_ns, "scheduled_ns": None,
               "token_ns": [], "status": "queued", "error": None, "prompt_len": len(prompt)}
        if rid is None:
            rec.update(status="failed", error="the manager refused the request (add_request returned None)",
                       done=True)
        collector.add(rid or f"refused-{i}", rec)
        return rid or f"refused-{i}"

    def poll(timeout_s: float) -> None:
        out = manager.get_result(timeout=max(timeout_s, 1e-4))
        while out is not None:
            collector.take(out, now())
            out = manager.get_result(timeout=0)

    started = False
    try:
        if manager_warmup and callable(getattr(manager, "warmup", None)):
            manager.warmup()
        manager.start()
        started = True
        warm_ids = [submit(i, now(), False) for i in range(warmup_requests)]
        deadline = time.monotonic() + drain_timeout_s
        while any(not collector.records[r].get("done") for r in warm_ids):
            if time.monotonic() > deadline or not manager.is_running():
                raise FastprofError("the warm-up requests did not finish: "
                                    + ("the generation thread stopped" if not manager.is_running()
                                       else f"still running after {drain_timeout_s:g} s"))
            poll(0.05)
            if progress:
                progress("warmup", sum(bool(collector.records[r].get("done")) for r in warm_ids), warmup_requests)
        for r in warm_ids:
            if collector.records[r]["status"] == "failed":
                raise FastprofError(f"a warm-up request failed: {collector.records[r]['error']}")

        sampling.start()
        t0 = now() + 1_000_000  # 1 ms ahead, so that the first arrival is on time
        arrivals = t0 + np.round(offsets * 1e9).astype(np.int64)
        window_end = t0 + int(round(duration * 1e9)) if duration is not None else None
        measured: list[str] = []
        nxt = 0
        drain_deadline: int | None = None
        while True:
            t = now()
            while nxt < n_measured and arrivals[nxt] <= t:
                measured.append(submit(nxt, int(arrivals[nxt]), True))
                nxt += 1
            done = sum(bool(collector.records[r].get("done")) for r in measured)
            if progress:
                progress("measure", done, n_measured)
            if window_end is not None and t >= window_end:
                break
            if nxt == n_measured:
                if done == n_measured:
                    break
                drain_deadline = drain_deadline or t + int(drain_timeout_s * 1e9)
                if t >= drain_deadline:
                    warnings.append(f"{n_measured - done} request(s) still in flight {drain_timeout_s:g} s after "
                                    "the last arrival: the window was closed on them")
                    break
            if not manager.is_running():
                warnings.append("the continuous-batching generation thread stopped before the window closed")
                break
            wait = (int(arrivals[nxt]) - now()) / 1e9 if nxt < n_measured else 0.05
            if window_end is not None:
                wait = min(wait, (window_end - now()) / 1e9)
            poll(min(max(wait, 0.0), 0.05))
        end_ns = now() if window_end is None else window_end
        last = [collector.records[r]["token_ns"][-1] for r in measured if collector.records[r]["token_ns"]]
        if window_end is None and last and all(collector.records[r].get("done") for r in measured):
            end_ns = max(last)  # every request done: the window ends with the last token
    except BaseException:
        sampling.abort()
        raise
    finally:
        if started:
            stop_params = _params(manager.stop)
            try:
                manager.stop(block=True, timeout=30, **({"hard_stop": True} if "hard_stop" in stop_params else {}))
            except Exception:  # noqa: BLE001 - stopping after a failure must not hide it
                pass
            if callable(getattr(manager, "destroy", None)):
                try:
                    manager.destroy()
                except Exception:  # noqa: BLE001
                    pass
    warnings += collector.warnings

    requests = []
    for rid in measured:
        rec = {k: v for k, v in collector.records[rid].items() if k not in ("_n", "done")}
        if window_end is not None and rec["status"] != "failed":
            kept = [x for x in rec["token_ns"] if x <= window_end]
            if len(kept) < len(rec["token_ns"]) or rec["status"] != "finished":
                rec["token_ns"] = kept
                rec["status"] = "running" if rec["token_ns"] else "queued"
        requests.append(_serving.with_metrics(rec))
    run = _serving.summarize(requests, start_ns=int(t0), end_ns=int(end_ns), rate=rate,
                             slo_ttft_s=slo_ttft_ms / 1e3 if slo_ttft_ms is not None else None,
                             slo_itl_s=slo_itl_ms / 1e3 if slo_itl_ms is not None else None, seed=seed)
    late = [(r["submit_ns"] - r["arrival_ns"]) / 1e6 for r in requests]
    if late and float(np.percentile(late, 99)) > 5.0:
        warnings.append(f"requests were submitted up to {max(late):.1f} ms after their arrival time (p99 "
                        f"{np.percentile(late, 99):.1f} ms): the collecting thread was busy; that delay counts as "
                        "queueing")
    all_tokens = np.sort(np.asarray([x for r in requests for x in r["token_ns"]], dtype=np.int64))
    window_trace = Trace(host_start_ns=int(t0), host_end_ns=int(end_ns), host_marks_ns=all_tokens,
                         device_marks_ns=None, device_end_ns=None)
    hardware = sampling.finish([window_trace], [int(all_tokens.size)], seed)

    env = capture_environment()
    cfg = {
        "model": getattr(getattr(model, "config", None), "name_or_path", None) or type(model).__name__,
        "rate": rate, "arrival": arrival, "num_requests": num_requests, "duration_s": duration,
        "max_new_tokens": max_new_tokens, "prompt_len": max_prompt, "warmup_requests": warmup_requests,
        "manager_warmup": manager_warmup, "device": str(model_device),
        "dtype": str(getattr(model, "dtype", "")).replace("torch.", ""),
        "attn_implementation": getattr(getattr(model, "config", None), "_attn_implementation", None),
        "slo_ttft_ms": slo_ttft_ms, "slo_itl_ms": slo_itl_ms, "seed": seed, "sample_interval_ms": sample_interval_ms,
    }
    cfg.update(config or {})
    serving = {
        "rate": rate, "arrival": arrival, "token_clock": "transformers" if collector.use_tf else "host",
        "window_start_ns": int(t0), "window_end_ns": int(end_ns),
        "continuous_batching": {k: v for k, v in cb_used.items() if isinstance(v, (int, float, str, bool, dict))},
        **{k: v for k, v in run.items() if k not in ("summary", "warnings")},
        "requests": requests,
    }
    result = BenchmarkResult(
        kind="serving", config=cfg, environment=env, iterations=[], summary=run["summary"], device_summary=None,
        device_timing={"available": False, "reason": "serving runs time tokens on the host clock (per-token GPU "
                                                     "events do not apply to a changing batch)"},
        warnings=environment_warnings(env) + warnings + run["warnings"] + hardware.get("warnings", []),
        hardware=hardware, serving=serving)
    result.diagnose(model=model_facts(model))
    result.verdict = None  # no static batch to judge; the kernel trace and roofline apply to generate runs
    return result


def run_rates(args: Any, *, device: str, command: Sequence[str] | None = None) -> Any:
    """``fastprof run --serving``: loads the model once, then one :func:`benchmark_serving` per rate
    of ``args.rate`` (a failed rate is recorded and the others go on), writing the results file
    (a sweep with ``rate`` as its axis) after each. Returns a :class:`fastprof.measure.runner.SweepOutcome`.

    Raises :class:`UnsupportedServingError` (one line) when the model cannot be loaded with the
    asked attention implementation or continuous batching cannot serve it."""
    import sys

    from rich.console import Console
    from rich.markup import escape

    from fastprof.capture import hf
    from fastprof.capture.environment import capture_environment
    from fastprof.measure import runner
    from fastprof.results.sweep import Sweep

    console = Console(stderr=True, quiet=args.quiet, soft_wrap=True)
    model_name = runner.BUILTIN_MODEL if args.model is None else args.model
    dtype = runner._dtype_name(args.dtype[0], device)
    attn = args.attn_implementation[0]
    prompt_len, new = int(args.prompt_len[0]), int(args.max_new_tokens[0])
    rates = list(args.rate) if args.rate is not None else [None]
    num_requests = args.num_requests if args.duration is None else None
    if num_requests is None and args.duration is None:
        num_requests = 32
    check_attention(attn)
    quant = (getattr(args, "quantization", None) or ["none"])[0]
    from fastprof.capture.quantization import QuantizationUnavailable
    try:
        model = runner.load_model(args.model, dtype=dtype, attn_implementation=attn, device=device, seed=args.seed,
                                  quantization=quant)
    except QuantizationUnavailable as exc:
        raise UnsupportedServingError(str(exc)) from None
    except (OSError, ValueError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if args.model is not None and attn == "auto":
            raise runner.ModelLoadError(f"argument --model: cannot load {args.model!r}: {first}") from None
        raise UnsupportedServingError(f"cannot load the model with attention implementation {attn!r}: {first}") \
            from None
    check_supported(model)
    vocab = int(model.config.vocab_size)
    # Four prompts of the asked length, seeded random ids (no tokenizer needed).
    ids = hf.random_inputs(vocab, 4, prompt_len, device="cpu", seed=args.seed)["input_ids"].tolist()
    sweep = Sweep(environment=capture_environment(),
                  parameters={"model": [model_name], "rate": rates, "arrival": [args.arrival]},
                  command=list(command) if command else None, complete=False)
    what = "built-in model (Llama architecture, random weights)" if args.model is None else args.model
    console.print(f"[bold]fastprof run --serving[/bold]: {escape(what)} on {device}, {len(rates)} rate(s), "
                  f"{args.arrival} arrivals", highlight=False)
    failed = 0
    try:
        for n, rate in enumerate(rates):
            config = {"model": model_name, "rate": rate, "arrival": args.arrival, "prompt_len": prompt_len,
                      "max_new_tokens": new, "dtype": dtype, "quantization": quant,
                      "attn_implementation": getattr(model.config, "_attn_implementation", None) or attn}
            label = f"[{n + 1}/{len(rates)}] rate={rate}"
            console.print(escape(label), highlight=False)
            try:
                result = benchmark_serving(
                    model, ids, rate=rate, num_requests=num_requests, duration=args.duration, max_new_tokens=new,
                    arrival=args.arrival, warmup_requests=args.warmup_requests, manager_warmup=args.manager_warmup,
                    slo_ttft_ms=args.slo_ttft_ms, slo_itl_ms=args.slo_itl_ms,
                    sample_interval_ms=args.sample_interval_ms or None, seed=args.seed, config=dict(config))
            except (KeyboardInterrupt, UnsupportedServingError):
                raise
            except Exception as exc:  # noqa: BLE001 - recorded as the rate's failure
                failed += 1
                run = sweep.add_failed(config, exc)
                console.print(escape(f"failed {label}: {run.error['type']}: {run.error['message']}"), style="red",
                              highlight=False)
            else:
                sweep.add_ok(config, result)
            sweep.save(args.output)
    except KeyboardInterrupt:
        sweep.save(args.output)
        print(f"fastprof: interrupted: {len(sweep.runs)} of {len(rates)} rate(s) are in {args.output}",
              file=sys.stderr)
        return runner.SweepOutcome(sweep, 130, failed, len(rates))
    sweep.complete = True
    if len(rates) == 1 and sweep.runs[0].result is not None:
        sweep.runs[0].result.save(args.output)
    else:
        sweep.save(args.output)
    return runner.SweepOutcome(sweep, 1 if failed else 0, failed, len(rates))
