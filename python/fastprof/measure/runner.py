"""The sweep behind ``fastprof run``: every combination of the swept values is one configuration.

Configurations run in the order dtype, quantization, attention implementation, compile, batch
size, prompt length, new tokens, speculative decoding, each worker process of ``--processes N``
starting at another place (:func:`interleaved_order`) (the model is loaded once per dtype,
quantization and attention implementation; a draft model once per model load). Plain
configurations of one model load alternate their timed iterations (``--iteration-order
interleaved``, the default; :func:`_groups`): each is warmed up, then their iterations run in
rounds, A B, B A, ... (:func:`fastprof.measure.driver.round_order`), through
:func:`fastprof.measure.driver.generate_steps`. Speculative
configurations (``--assistant-model``, ``--prompt-lookup``) run right after their plain baseline
(``speculative: "none"``), and each gets its speed-up against it once the sweep is done
(:meth:`fastprof.results.sweep.Sweep.attach_speedups`). A
configuration that raises is recorded as failed with its reason and the sweep goes on; the
results file (a sweep document, see :mod:`fastprof.results.sweep`) is rewritten atomically as
configurations finish (those that alternate finish together), so an interruption keeps the
finished ones. When there is one configuration and it
ran, the file is that run's plain :class:`fastprof.BenchmarkResult` document instead.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

from fastprof.results.sweep import Sweep

BUILTIN_MODEL = "fastprof-builtin-llama"

#: The sweep axes of ``fastprof run``, in the order they nest (outermost first).
AXES = ("dtype", "quantization", "attn_implementation", "compile", "batch_size", "prompt_len", "max_new_tokens",
        "speculative")

#: Where a model load's axes end in a configuration tuple (dtype, quantization, attention
#: implementation: nothing is loaded twice within one), and where a unit's end (a plain
#: configuration and the speculative ones behind it).
_LOAD_END, _UNIT_END = AXES.index("compile"), AXES.index("speculative")

#: ``--assistant-model`` names that are not directories: the built-in draft model, the target itself.
BUILTIN_DRAFT, SELF_DRAFT = "builtin", "self"
#: ``--num-assistant-tokens`` schedules besides a constant N: transformers' default (``dynamic``: up
#: to 20 draft tokens, a draft stops early when the draft model's confidence falls under a
#: threshold that adapts) and its ``heuristic`` schedule (more draft tokens after a fully accepted
#: draft, fewer otherwise; reset at every generate call, so that iterations stay alike).
SCHEDULES = ("dynamic", "heuristic")


def speculative_values(assistants: Sequence[str] | None, draft_tokens: Sequence[str] | None,
                       lookups: Sequence[str] | None) -> list[str]:
    """The ``speculative`` axis of a sweep: ``"none"`` (plain decoding, always first: the baseline
    of the others), then ``"draft=NAME k=K"`` for every assistant and draft length, then
    ``"lookup=N"`` for every prompt-lookup length. ``["none"]`` when no speculative option is given."""
    values = ["none"]
    for name in assistants or []:
        if name == "none":
            continue
        for k in draft_tokens or ["dynamic"]:
            values.append(f"draft={name} k={k}")
    for n in lookups or []:
        if str(n) != "none":
            values.append(f"lookup={n}")
    return list(dict.fromkeys(values))


def parse_speculative(value: str) -> dict[str, Any]:
    """A ``speculative`` axis value back into its parts: ``{"method": "none"}``,
    ``{"method": "assistant", "assistant": NAME, "k": K}`` or ``{"method": "prompt_lookup", "n": N}``."""
    if value in (None, "none"):
        return {"method": "none"}
    if value.startswith("lookup="):
        return {"method": "prompt_lookup", "n": int(value[len("lookup="):])}
    if value.startswith("draft="):
        name, _, k = value[len("draft="):].rpartition(" k=")
        return {"method": "assistant", "assistant": name, "k": k}
    raise ValueError(f"unknown speculative setting {value!r}")


def speculative_kwargs(value: str, draft: Any) -> dict[str, Any]:
    """generate() arguments of a ``speculative`` axis value; ``draft`` is the loaded assistant model
    (None for plain decoding and prompt lookup). The draft settings go to the assistant's generation
    config for the measurement (:func:`fastprof.capture.speculative.assistant_settings`)."""
    spec = parse_speculative(value)
    if spec["method"] == "none":
        return {}
    if spec["method"] == "prompt_lookup":
        return {"prompt_lookup_num_tokens": spec["n"]}
    k = spec["k"]
    out: dict[str, Any] = {"assistant_model": draft}
    if k == "heuristic":
        out["num_assistant_tokens_schedule"] = "heuristic_transient"
    elif k != "dynamic":
        # A constant draft length: without the confidence threshold, which would stop drafts early.
        out.update(num_assistant_tokens=int(k), num_assistant_tokens_schedule="constant",
                   assistant_confidence_threshold=0.0)
    return out


def load_draft(name: str, target: Any, *, dtype: str, device: str, seed: int) -> Any:
    """The assistant model ``name``: the target itself (``self``), the built-in draft sized to the
    target's vocabulary (``builtin``), or a local model directory."""
    import torch

    from fastprof.capture import hf

    if name == SELF_DRAFT:
        return target
    torch_dtype = getattr(torch, dtype)
    if name == BUILTIN_DRAFT:
        return hf.build_default_draft(dtype=torch_dtype, device=device, seed=seed, target=target)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, local_files_only=True).to(device).eval()


class ModelLoadError(Exception):
    """The --model directory cannot be loaded at all (bad input, not a failed configuration)."""


def _dtype_name(dtype: str, device: str) -> str:
    return dtype if dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")


def load_model(model_dir: str | None, *, dtype: str, attn_implementation: str, device: str, seed: int,
               tensor_parallel: bool = False, quantization: str = "none") -> Any:
    """The built-in model (``model_dir`` None) or a local model, on ``device``, in eval mode.

    ``tensor_parallel``: loaded with transformers' ``tp_plan="auto"`` across the torchrun ranks
    (the built-in model is saved to a temporary directory first, since that goes through
    ``from_pretrained``). ``quantization``: a method of :mod:`fastprof.capture.quantization`,
    loaded through ``from_pretrained`` with its transformers config straight onto ``device``;
    :class:`~fastprof.capture.quantization.QuantizationUnavailable` when its backend is missing."""
    import tempfile

    import torch

    from fastprof.capture import hf
    from fastprof.capture import quantization as _quant
    kwargs = {} if attn_implementation == "auto" else {"attn_implementation": attn_implementation}
    torch_dtype = getattr(torch, dtype)
    qconfig = _quant.transformers_config(quantization, torch_dtype, device)
    if model_dir is None and not tensor_parallel and qconfig is None:
        return hf.build_default_model(dtype=torch_dtype, device=device, seed=seed, **kwargs)
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' loading bar would break fastprof's own progress
    try:
        with tempfile.TemporaryDirectory(prefix="fastprof-model-") as tmp:
            if model_dir is None:
                hf.save_default_model(tmp, dtype=torch_dtype, seed=seed)
            source = model_dir or tmp
            if qconfig is not None:
                return AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, local_files_only=True,
                                                            quantization_config=qconfig, device_map=device,
                                                            **kwargs).eval()
            if tensor_parallel:
                return AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, local_files_only=True,
                                                            tp_plan="auto", **kwargs).eval()
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, local_files_only=True, **kwargs)
            return model.to(device).eval()
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def compile_kwargs(mode: str) -> dict[str, Any]:
    """generate() arguments for ``--compile``: 'on' is a static KV cache plus transformers'
    CompileConfig (torch.compile of the forward pass, mode reduce-overhead, fullgraph)."""
    if mode == "off":
        return {}
    from transformers import CompileConfig

    return {"cache_implementation": "static", "compile_config": CompileConfig(fullgraph=True, mode="reduce-overhead")}


def beam_kwargs(args: Any) -> dict[str, Any]:
    """generate() arguments for ``--num-beams`` (beam search: end-to-end timing only)."""
    beams = int(getattr(args, "num_beams", 1) or 1)
    return {"num_beams": beams} if beams > 1 else {}


def speculative_notes(spec: dict[str, Any], *, builtin_target: bool) -> list[str]:
    """Warnings of a speculative configuration whose acceptance says little about real use."""
    from fastprof.analysis.speculative import NOTE_RANDOM_WEIGHTS

    if spec["method"] == "assistant" and spec["assistant"] == SELF_DRAFT:
        return []
    if builtin_target or (spec["method"] == "assistant" and spec["assistant"] == BUILTIN_DRAFT):
        return [NOTE_RANDOM_WEIGHTS]
    return []


def _free(torch: Any) -> None:
    from fastprof import _torch

    _torch.thaw_long_lived(force=True)  # a configuration that failed mid-measurement may have left it frozen
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _allocated(torch: Any, device: str) -> int | None:
    """Bytes the CUDA caching allocator holds for tensors on ``device`` (None off CUDA)."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    torch.cuda.synchronize(device)
    return int(torch.cuda.memory_allocated(device))


def _model_info(model: Any, quant: str, torch: Any, device: str, allocated0: int | None) -> dict[str, Any]:
    """The result's ``quantization`` section: the method and its backend, the bytes the weights
    occupy, and on CUDA how much the allocator grew while the model loaded."""
    from fastprof.capture import quantization as _quant

    after = _allocated(torch, device)
    return {**_quant.details(quant), "weight_bytes": _quant.weight_bytes(model),
            "allocated_bytes": None if after is None or allocated0 is None else after - allocated0}


@dataclass
class _Job:
    """One configuration of a sweep on its way: from :func:`run_sweep`'s ``start`` to ``complete``."""

    index: int
    combo: tuple
    config: dict[str, Any]
    label: str
    steps: Any = None  # its generate_steps generator while it runs
    result: Any = None
    error: BaseException | None = None
    spec: dict[str, Any] | None = None
    model_info: dict[str, Any] | None = None
    interleaved_with: int = 1


def _groups(combos: Sequence[tuple], *, interleave: bool) -> list[list[int]]:
    """The sweep's configurations (indices into ``combos``, in their order) in the groups whose
    timed iterations alternate: consecutive plain configurations of one model load (same dtype,
    quantization and attention implementation) when ``interleave``, else one by one.
    Speculative configurations run on their own: their draft settings sit on a draft model that
    several of them share."""
    groups: list[list[int]] = []
    for i, combo in enumerate(combos):
        prev = combos[groups[-1][-1]] if groups else None
        if (interleave and prev is not None and prev[:_LOAD_END] == combo[:_LOAD_END]
                and combo[_UNIT_END] == "none" and prev[_UNIT_END] == "none"):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did: the sweep (as written), the exit code (0 when every
    configuration ran, 1 when any failed, 130 when interrupted), failures and the total."""

    sweep: Sweep
    exit_code: int
    failed: int
    total: int
    #: Under torchrun, this process's rank: only rank 0 writes and prints the results.
    rank: int = 0


def distributed_mode(args: Any) -> str | None:
    """``tp`` or ``dp`` under torchrun (``dp`` unless ``--tp``); None for one process."""
    from fastprof.measure import distributed

    if getattr(args, "tp", False):
        return "tp"
    if getattr(args, "dp", False) or distributed.launched():
        return "dp"
    return None


def _injected_failure(config_index: int, rank: int) -> None:
    """``FASTPROF_FAIL_RANK=R`` or ``R:I`` (a testing aid): rank R raises in every configuration,
    or in configuration I (0-based) only, as a failing rank would."""
    spec = os.environ.get("FASTPROF_FAIL_RANK")
    if not spec:
        return
    r, _, i = spec.partition(":")
    if r.strip() == str(rank) and (not i or i.strip() == str(config_index)):
        raise RuntimeError(f"failure injected by FASTPROF_FAIL_RANK={spec}")


def _injected_delay() -> dict[str, Any]:
    """``FASTPROF_STEP_DELAY_MS=D`` (a testing aid): every decode step sleeps D ms on the host, a
    known slowdown for checking that comparisons find it. Returns generate kwargs."""
    spec = os.environ.get("FASTPROF_STEP_DELAY_MS")
    if not spec:
        return {}
    delay = float(spec) / 1e3
    import time

    from transformers import LogitsProcessor, LogitsProcessorList

    class _Delay(LogitsProcessor):
        def __call__(self, input_ids, scores):
            time.sleep(delay)
            return scores

    return {"logits_processor": LogitsProcessorList([_Delay()])}


def interleaved_order(combos: Sequence[tuple], shift: int) -> list[tuple]:
    """The sweep's configurations in the order worker process ``shift`` runs them.

    The host's speed drifts within a process (from iteration to iteration, and after events such
    as a kernel trace), so a configuration that always ran first would meet another machine than
    one that always ran last. Each worker process therefore starts at another place: within each
    model load (same dtype, quantization and attention implementation: nothing is loaded twice),
    the configurations are rotated by ``shift``, a speculative configuration staying right behind
    its plain baseline; and odd workers take the model loads in reverse order. Over N processes
    every configuration then runs at every position about equally often, and the statistics over
    processes average the drift out instead of folding it into the difference. ``shift`` 0 is the
    plain nested order."""
    groups: list[list[list[tuple]]] = []  # model loads -> units -> configurations
    for combo in combos:
        if not groups or groups[-1][0][0][:_LOAD_END] != combo[:_LOAD_END]:
            groups.append([])
        units = groups[-1]
        if not units or units[-1][0][:_UNIT_END] != combo[:_UNIT_END]:
            units.append([])
        units[-1].append(combo)
    if shift % 2 and len(groups) > 1:
        groups.reverse()
    out: list[tuple] = []
    for units in groups:
        k = shift % len(units)
        for unit in units[k:] + units[:k]:
            out.extend(unit)
    return out


def run_sweep(args: Any, *, device: str, command: Sequence[str] | None = None) -> SweepOutcome:
    """Runs every configuration of ``args`` (the parsed ``fastprof run`` options), writing the
    results file after each; an interruption keeps the finished ones."""
    import torch
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from fastprof.capture import hf
    from fastprof.capture.environment import capture_environment
    from fastprof.measure import distributed, turn
    from fastprof.measure.driver import generate_steps, round_order

    mode = distributed_mode(args)
    ctx = distributed.setup("cuda" if device.startswith("cuda") else "cpu") if mode else None
    # The host path of this process before any model loads: a worker that starts on a slow host
    # shows it here, whatever the configurations do later.
    from fastprof.capture import hostpath

    ordinal = (torch.cuda.current_device() if device == "cuda" else int(device.split(":")[1])) \
        if device.startswith("cuda") else None
    process_calibration = hostpath.calibrate(device_ordinal=ordinal)
    rank0 = ctx is None or ctx.rank == 0
    console = Console(stderr=True, quiet=args.quiet or not rank0, soft_wrap=True)
    model_name = BUILTIN_MODEL if args.model is None else args.model
    dtypes = [_dtype_name(d, device) for d in args.dtype]
    dtypes = list(dict.fromkeys(dtypes))
    texts = getattr(args, "prompt_texts", None)
    axes = {"dtype": dtypes, "quantization": list(getattr(args, "quantization", None) or ["none"]),
            "attn_implementation": args.attn_implementation, "compile": args.compile,
            "batch_size": args.batch_size, "prompt_len": [None] if texts else args.prompt_len,
            "max_new_tokens": args.max_new_tokens, "speculative": list(getattr(args, "speculative", None) or ["none"])}
    speculative = axes["speculative"] != ["none"]
    combos = interleaved_order(list(itertools.product(*(axes[a] for a in AXES))),
                               int(getattr(args, "order_shift", 0) or 0))
    parameters = {"model": [model_name], **axes}
    if not speculative:
        parameters.pop("speculative")
    sweep = Sweep(environment=capture_environment(), parameters=parameters,
                  command=list(command) if command else None, complete=False)
    what = "built-in model (Llama architecture, random weights)" if args.model is None else args.model
    if ctx is not None:
        sweep.parameters["distributed"] = [mode]
        what += f", {'tensor' if mode == 'tp' else 'data'} parallel over {ctx.world_size} ranks"
    console.print(f"[bold]fastprof run[/bold]: {escape(what)} on {device}, {len(combos)} configuration(s)", highlight=False)

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=False, disable=args.quiet or not rank0)
    state: dict[str, Any] = {"failed": 0, "model": None, "key": None, "info": {}, "error": None}
    drafts: dict[str, Any] = {}
    interleave = getattr(args, "iteration_order", "interleaved") == "interleaved"

    def start(n: int, combo: tuple) -> _Job:
        """Configuration ``n``: its config and label, its model (loaded when the model load
        changes), inputs and draft, and its measurement as a :func:`generate_steps` generator
        that has not run yet (``steps`` None and ``error`` set when this already failed)."""
        dtype, quant, attn, comp, bs, pl, new, spec = combo
        config = {"model": model_name, "batch_size": bs, "prompt_len": pl, "max_new_tokens": new,
                  "dtype": dtype, "quantization": quant, "attn_implementation": attn, "compile": comp}
        if speculative:
            config["speculative"] = spec
        if texts:
            config["prompts"] = args.prompt_source
        if beam_kwargs(args):
            config["num_beams"] = int(args.num_beams)
        label = (f"[{n + 1}/{len(combos)}] bs={bs} prompt={'text' if texts else pl} new={new} {dtype}"
                 f"{'' if quant == 'none' else ' ' + quant} attn={attn} compile={comp}"
                 f"{' spec=' + spec if speculative else ''}")
        job = _Job(n, combo, config, label)
        progress.update(overall, description=escape(label))
        progress.reset(iters, total=args.warmup + args.iterations, description="  warmup")
        try:
            if (dtype, quant, attn) != state["key"]:
                state.update(model=None, error=None, key=(dtype, quant, attn))
                drafts.clear()
                _free(torch)
                try:
                    allocated0 = _allocated(torch, device)
                    state["model"] = load_model(args.model, dtype=dtype, attn_implementation=attn, device=device,
                                                seed=args.seed, tensor_parallel=mode == "tp", quantization=quant)
                    state["info"] = _model_info(state["model"], quant, torch, device, allocated0)
                except (OSError, ValueError, ImportError) as exc:
                    if args.model is not None and attn == "auto" and quant == "none":
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        raise ModelLoadError(f"argument --model: cannot load {args.model!r}: {first}") from None
                    state["error"] = exc
                except Exception as exc:  # noqa: BLE001 - recorded as the configuration's failure
                    state["error"] = exc
            if state["error"] is not None:
                raise state["error"]
            model = state["model"]
            assert model is not None
            job.model_info = dict(state["info"])
            if attn == "auto":
                config["attn_implementation"] = getattr(model.config, "_attn_implementation", None) or "auto"

            def on_progress(phase: str, i: int, total: int) -> None:
                done = i if phase == "warmup" else args.warmup + i
                progress.update(overall, description=escape(label))
                progress.update(iters, completed=done, description=f"  {phase}")

            # Data parallel: every rank its own prompts; tensor parallel: the same on every rank.
            input_seed = args.seed + (ctx.rank if ctx is not None and mode == "dp" else 0)
            text = None
            if texts:
                text = hf.TextPrompts(args.tokenizer_obj, texts, bs, device=device, source=args.prompt_source,
                                      tokenizer_path=args.tokenizer_path,
                                      timed=bool(getattr(args, "time_tokenization", False)))
                inputs = text.inputs
                config["prompt_len"] = text.prompt_len
            else:
                inputs = hf.random_inputs(int(model.config.vocab_size), bs, pl, device=device, seed=input_seed)
            _injected_failure(n, ctx.rank if ctx is not None else 0)
            job.spec = parse_speculative(spec)
            draft = None
            if job.spec["method"] == "assistant":
                name = job.spec["assistant"]
                if name not in drafts:
                    drafts[name] = load_draft(name, model, dtype=dtype, device=device, seed=args.seed)
                draft = drafts[name]
            job.steps = generate_steps(
                model, inputs, max_new_tokens=new, warmup=args.warmup, iterations=args.iterations,
                generate_kwargs={**compile_kwargs(comp), **beam_kwargs(args), **_injected_delay(),
                                 **speculative_kwargs(spec, draft)},
                seed=args.seed, progress=on_progress,
                sample_interval_ms=args.sample_interval_ms or None, config=dict(config), distributed=False,
                kernel_trace_iterations=getattr(args, "kernel_trace", None),
                trace_timed=getattr(args, "kernel_trace_timed", False), text=text,
                python_samples=bool(getattr(args, "python_samples", False)),
            )
        except (KeyboardInterrupt, ModelLoadError):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is recorded and the sweep goes on
            job.error = exc
        return job

    def step(job: _Job, until: str | None) -> None:
        """Runs ``job``'s measurement to its next ``until`` step (``"warm"``, ``"timed"``), or to
        its end (None: ``job.result``). A failure is kept in ``job.error`` and ends the job."""
        if job.steps is None:
            return
        progress.update(overall, description=escape(job.label))
        try:
            with warnings.catch_warnings():
                # bitsandbytes' int8 matmul warns at every call that it casts its inputs to
                # float16; said once in the result instead.
                warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
                while True:
                    try:
                        got = next(job.steps)
                    except StopIteration as done:
                        job.result, job.steps = done.value, None
                        return
                    if got == "measured" and job.index == last:
                        # This process's last iteration on the machine has run: a worker prepared
                        # beside others hands its turn on now (fastprof.measure.turn).
                        turn.release()
                    if got == until:
                        return
        except (KeyboardInterrupt, ModelLoadError):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is recorded and the sweep goes on
            job.error, job.steps = exc, None

    def complete(job: _Job) -> None:
        """Adds ``job`` to the sweep (its result, or its failure) and writes the file."""
        result, error = job.result, job.error
        dtype, quant, attn, comp, bs, pl, new, spec = job.combo
        if result is not None:
            result.quantization = job.model_info or None
            if job.interleaved_with > 1:
                result.config["iteration_order"] = {"interleaved_with": job.interleaved_with}
            if result.host_path is not None:
                result.host_path["process"] = process_calibration
            if quant == "bnb-int8" and dtype != "float16":
                result.warnings.append(f"bnb-int8 runs its int8 matmuls in float16: the {dtype} activations "
                                       "are cast at every quantized layer (--dtype float16 avoids it)")
            if job.spec and job.spec["method"] != "none":
                result.warnings += speculative_notes(job.spec, builtin_target=args.model is None)
            if comp == "on" and not device.startswith("cuda"):
                result.warnings.append("--compile on: transformers compiles the forward pass on GPUs only; "
                                       f"on {device} this configuration ran with a static cache, uncompiled")
        if ctx is not None:  # every rank's result (or error) to rank 0, which merges them
            try:
                result = distributed.finish(result, error, mode=mode, device=device,
                                            environment=sweep.environment, seed=args.seed)
                error = None
            except Exception as exc:  # noqa: BLE001 - a failed rank fails the configuration
                result, error = None, exc
        if error is None:
            sweep.add_ok(job.config, result)
        else:
            state["failed"] += 1
            run = sweep.add_failed(job.config, error)
            console.print(escape(f"failed {job.label}: {run.error['type']}: {run.error['message']}"), style="red",
                          highlight=False)
            _free(torch)
        if rank0 and job.index + 1 < len(combos):
            sweep.save(args.output)  # the last configuration's is the final write below

    groups = _groups(combos, interleave=interleave and ctx is None)
    last = groups[-1][-1] if groups else -1  # the configuration whose iterations run last
    try:
        with progress:
            overall = progress.add_task("configurations", total=len(combos))
            iters = progress.add_task("iterations", total=args.warmup + args.iterations)
            for group in groups:
                jobs = [start(n, combos[n]) for n in group]
                live = [job for job in jobs if job.steps is not None]
                for job in live:
                    job.interleaved_with = len(live)
                if len(live) > 1:
                    # Several configurations on one model: warm each up, then alternate their timed
                    # iterations (A B, B A, A B, ...; round_order), so that the machine's drift
                    # falls on all alike.
                    for job in live:
                        step(job, until="warm")
                    for r in range(args.iterations):
                        for job in round_order(live, r):
                            step(job, until="timed")
                for job in jobs:
                    step(job, until=None)
                    complete(job)
                    progress.advance(overall)
    except KeyboardInterrupt:
        sweep.complete = False
        if rank0:
            sweep.save(args.output)
        print(f"fastprof: interrupted: {len(sweep.runs)} of {len(combos)} configuration(s) are in {args.output}",
              file=sys.stderr)
        return SweepOutcome(sweep, 130, state["failed"], len(combos))
    turn.release()  # where the last configuration failed before its end
    sweep.complete = True
    if speculative:
        try:
            sweep.attach_speedups(seed=args.seed)
        except Exception as exc:  # noqa: BLE001 - the measurements are written whatever happens here
            if rank0:
                sweep.save(args.output)
            raise RuntimeError(f"the speed-ups could not be computed ({exc}); the measurements are in "
                               f"{args.output}") from exc
    if not rank0:
        return SweepOutcome(sweep, 1 if state["failed"] else 0, state["failed"], len(combos), rank=ctx.rank)
    if len(combos) == 1 and sweep.runs[0].result is not None:
        # One configuration that ran: the plain per-run document (BenchmarkResult JSON), which
        # report and compare read as a sweep of one.
        sweep.runs[0].result.save(args.output)
    else:
        sweep.save(args.output)
    return SweepOutcome(sweep, 1 if state["failed"] else 0, state["failed"], len(combos))
