"""The ``fastprof`` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

EXIT_USAGE = 2
DTYPES = ("auto", "float32", "float16", "bfloat16")


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump, exit code 2
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastprof",
        description="Low-overhead, high-precision profiler for LLM inference.",
        epilog="Run 'fastprof COMMAND --help' for the options of a command.",
    )
    from fastprof import __version__

    parser.add_argument("--version", action="version", version=f"fastprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="benchmark model.generate per token (a built-in small model when --model is not given)",
        description=(
            "Benchmark transformers' generate with per-token timing: time to first token, inter-token latency "
            "distribution, throughput, with confidence intervals. Without --model, a small Llama-architecture "
            "model with random weights is built from a config (nothing is downloaded). Runs on the GPU when "
            "there is one, else on the CPU."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument("--model", metavar="DIR", help="local model directory (from save_pretrained); default: built-in")
    run.add_argument("--batch-size", type=_positive_int, default=1, help="sequences per generate call")
    run.add_argument("--prompt-len", type=_positive_int, default=128, help="prompt tokens per sequence (random ids)")
    run.add_argument("--max-new-tokens", type=_positive_int, default=64, help="tokens generated per sequence")
    run.add_argument("--warmup", type=_non_negative_int, default=5, help="untimed iterations first")
    run.add_argument("--iterations", type=_positive_int, default=20, help="measured iterations")
    run.add_argument("--dtype", choices=DTYPES, default="auto", help="weights dtype; auto: bfloat16 on GPU, float32 on CPU")
    run.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    run.add_argument("--sample-interval-ms", type=_non_negative_int, default=10, metavar="MS",
                     help="GPU sampling interval (utilisation, power, energy ...); 0 turns sampling off")
    run.add_argument("--seed", type=_non_negative_int, default=0, help="seed of weights, prompts and bootstrap")
    run.add_argument("--output", "-o", default="fastprof-results.json", metavar="FILE", help="results JSON file")
    run.add_argument("--quiet", "-q", action="store_true", help="print no progress")
    return parser


def _resolve_device(text: str, torch: Any) -> str:
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise UsageError(f"argument --device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("argument --device: CUDA was asked for but torch sees no GPU")
        if index and int(index) >= torch.cuda.device_count():
            raise UsageError(f"argument --device: {text} does not exist ({torch.cuda.device_count()} GPU(s))")
    return text


def cmd_run(args: argparse.Namespace) -> int:
    if args.sample_interval_ms > 1000:
        raise UsageError(f"argument --sample-interval-ms: must be 1 to 1000 (or 0 for off), got {args.sample_interval_ms}")
    if args.model is not None and not Path(args.model).is_dir():
        raise UsageError(f"argument --model: {args.model!r} is not a directory")
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"'fastprof run' needs torch and transformers ({exc.name} is missing): "
                         "pip install 'fastprof[hf]'") from None
    import torch

    from rich.console import Console

    import fastprof
    from fastprof import hf

    console = Console(stderr=True, quiet=args.quiet, soft_wrap=True)
    out_console = Console()
    device = _resolve_device(args.device, torch)
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    dtype = getattr(torch, dtype_name)

    if args.model is None:
        console.print(f"[bold]fastprof run[/bold]: built-in model (Llama architecture, random weights) on {device}, {dtype_name}")
        model = hf.build_default_model(dtype=dtype, device=device, seed=args.seed)
        model_name = "fastprof-builtin-llama"
    else:
        from transformers import AutoModelForCausalLM

        console.print(f"[bold]fastprof run[/bold]: {args.model} on {device}, {dtype_name}")
        try:
            model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise UsageError(f"argument --model: cannot load {args.model!r}: {str(exc).splitlines()[0]}") from None
        model = model.to(device).eval()
        model_name = args.model
    vocab = int(model.config.vocab_size)
    inputs = hf.random_inputs(vocab, args.batch_size, args.prompt_len, device=device, seed=args.seed)

    def progress(phase: str, i: int, n: int) -> None:
        if i == n:
            console.print(f"  {phase}: {n} iteration(s) done", highlight=False)

    result = fastprof.benchmark_generate(
        model, inputs, max_new_tokens=args.max_new_tokens, warmup=args.warmup, iterations=args.iterations,
        seed=args.seed, progress=None if args.quiet else progress,
        sample_interval_ms=args.sample_interval_ms or None,
        config={"model": model_name, "dtype": dtype_name},
    )
    out_console.print(result)
    path = result.save(args.output)
    console.print(f"results written to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "run":
            return cmd_run(args)
        raise UsageError(f"unknown command {args.command!r}")
    except UsageError as exc:
        print(f"fastprof: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fastprof: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from fastprof.errors import FastprofError

        if isinstance(exc, FastprofError) or os.environ.get("FASTPROF_DEBUG") is None:
            print(f"fastprof: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            if not isinstance(exc, FastprofError):
                print("fastprof: set FASTPROF_DEBUG=1 for the traceback", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
