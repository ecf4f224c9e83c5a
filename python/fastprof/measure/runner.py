"""The sweep behind ``fastprof run``: every combination of the swept values is one configuration.

Configurations run in the order dtype, attention implementation, compile, batch size, prompt
length, new tokens (the model is loaded once per dtype and attention implementation). A
configuration that raises is recorded as failed with its reason and the sweep goes on; the
results file (a sweep document, see :mod:`fastprof.results.sweep`) is rewritten atomically after each
configuration, so an interruption keeps the finished ones. When there is one configuration and it
ran, the file is that run's plain :class:`fastprof.BenchmarkResult` document instead.
"""

from __future__ import annotations

import gc
import itertools
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from fastprof.results.sweep import Sweep

BUILTIN_MODEL = "fastprof-builtin-llama"

#: The sweep axes of ``fastprof run``, in the order they nest (outermost first).
AXES = ("dtype", "attn_implementation", "compile", "batch_size", "prompt_len", "max_new_tokens")


class ModelLoadError(Exception):
    """The --model directory cannot be loaded at all (bad input, not a failed configuration)."""


def _dtype_name(dtype: str, device: str) -> str:
    return dtype if dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")


def load_model(model_dir: str | None, *, dtype: str, attn_implementation: str, device: str, seed: int) -> Any:
    """The built-in model (``model_dir`` None) or a local model, on ``device``, in eval mode."""
    import torch

    from fastprof.capture import hf
    kwargs = {} if attn_implementation == "auto" else {"attn_implementation": attn_implementation}
    torch_dtype = getattr(torch, dtype)
    if model_dir is None:
        return hf.build_default_model(dtype=torch_dtype, device=device, seed=seed, **kwargs)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype, local_files_only=True, **kwargs)
    return model.to(device).eval()


def compile_kwargs(mode: str) -> dict[str, Any]:
    """generate() arguments for ``--compile``: 'on' is a static KV cache plus transformers'
    CompileConfig (torch.compile of the forward pass, mode reduce-overhead, fullgraph)."""
    if mode == "off":
        return {}
    from transformers import CompileConfig

    return {"cache_implementation": "static", "compile_config": CompileConfig(fullgraph=True, mode="reduce-overhead")}


def _free(torch: Any) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did: the sweep (as written), the exit code (0 when every
    configuration ran, 1 when any failed, 130 when interrupted), failures and the total."""

    sweep: Sweep
    exit_code: int
    failed: int
    total: int


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
    from fastprof.measure.driver import benchmark_generate

    console = Console(stderr=True, quiet=args.quiet, soft_wrap=True)
    model_name = BUILTIN_MODEL if args.model is None else args.model
    dtypes = [_dtype_name(d, device) for d in args.dtype]
    dtypes = list(dict.fromkeys(dtypes))
    axes = {"dtype": dtypes, "attn_implementation": args.attn_implementation, "compile": args.compile,
            "batch_size": args.batch_size, "prompt_len": args.prompt_len, "max_new_tokens": args.max_new_tokens}
    combos = list(itertools.product(*(axes[a] for a in AXES)))
    sweep = Sweep(environment=capture_environment(), parameters={"model": [model_name], **axes},
                  command=list(command) if command else None, complete=False)
    what = "built-in model (Llama architecture, random weights)" if args.model is None else args.model
    console.print(f"[bold]fastprof run[/bold]: {escape(what)} on {device}, {len(combos)} configuration(s)", highlight=False)

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=False, disable=args.quiet)
    failed = 0
    model = None
    model_key: tuple[str, str] | None = None
    model_error: BaseException | None = None
    try:
        with progress:
            overall = progress.add_task("configurations", total=len(combos))
            iters = progress.add_task("iterations", total=args.warmup + args.iterations)
            for n, (dtype, attn, comp, bs, pl, new) in enumerate(combos):
                config = {"model": model_name, "batch_size": bs, "prompt_len": pl, "max_new_tokens": new,
                          "dtype": dtype, "attn_implementation": attn, "compile": comp}
                label = f"[{n + 1}/{len(combos)}] bs={bs} prompt={pl} new={new} {dtype} attn={attn} compile={comp}"
                progress.update(overall, description=escape(label))
                progress.reset(iters, total=args.warmup + args.iterations, description="  warmup")
                try:
                    if (dtype, attn) != model_key:
                        model, model_error, model_key = None, None, (dtype, attn)
                        _free(torch)
                        try:
                            model = load_model(args.model, dtype=dtype, attn_implementation=attn, device=device,
                                               seed=args.seed)
                        except (OSError, ValueError, ImportError) as exc:
                            if args.model is not None and attn == "auto":
                                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                                raise ModelLoadError(f"argument --model: cannot load {args.model!r}: {first}") from None
                            model_error = exc
                        except Exception as exc:  # noqa: BLE001 - recorded as the configuration's failure
                            model_error = exc
                    if model_error is not None:
                        raise model_error
                    assert model is not None
                    if attn == "auto":
                        config["attn_implementation"] = getattr(model.config, "_attn_implementation", None) or "auto"

                    def on_progress(phase: str, i: int, total: int) -> None:
                        done = i if phase == "warmup" else args.warmup + i
                        progress.update(iters, completed=done, description=f"  {phase}")

                    inputs = hf.random_inputs(int(model.config.vocab_size), bs, pl, device=device, seed=args.seed)
                    result = benchmark_generate(
                        model, inputs, max_new_tokens=new, warmup=args.warmup, iterations=args.iterations,
                        generate_kwargs=compile_kwargs(comp), seed=args.seed, progress=on_progress,
                        sample_interval_ms=args.sample_interval_ms or None, config=dict(config),
                    )
                    if comp == "on" and not device.startswith("cuda"):
                        result.warnings.append("--compile on: transformers compiles the forward pass on GPUs only; "
                                               f"on {device} this configuration ran with a static cache, uncompiled")
                    sweep.add_ok(config, result)
                except (KeyboardInterrupt, ModelLoadError):
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure is recorded and the sweep goes on
                    failed += 1
                    run = sweep.add_failed(config, exc)
                    console.print(escape(f"failed {label}: {run.error['type']}: {run.error['message']}"), style="red",
                                  highlight=False)
                    _free(torch)
                sweep.save(args.output)
                progress.advance(overall)
    except KeyboardInterrupt:
        sweep.complete = False
        sweep.save(args.output)
        print(f"fastprof: interrupted: {len(sweep.runs)} of {len(combos)} configuration(s) are in {args.output}",
              file=sys.stderr)
        return SweepOutcome(sweep, 130, failed, len(combos))
    sweep.complete = True
    if len(combos) == 1 and sweep.runs[0].result is not None:
        # One configuration that ran: the plain per-run document (BenchmarkResult JSON), which
        # report and compare read as a sweep of one.
        sweep.runs[0].result.save(args.output)
    else:
        sweep.save(args.output)
    return SweepOutcome(sweep, 1 if failed else 0, failed, len(combos))
