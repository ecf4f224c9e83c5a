"""The ``fastprof`` command: run, report, compare, env, monitor, selftest."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DTYPES = ("auto", "float32", "float16", "bfloat16")
COMPILE_MODES = ("off", "on")


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump, exit code 2
        raise UsageError(message)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and descriptions kept as written (paragraphs, examples)."""


# ---- argument types -----------------------------------------------------------------------
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


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _comma_list(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """A comma-separated list of ``item`` values: at least one, duplicates dropped, order kept."""

    def parse(text: str) -> list[Any]:
        parts = [p.strip() for p in text.split(",")]
        if not any(parts):
            raise argparse.ArgumentTypeError(f"empty list {text!r}: give at least one value")
        if not all(parts):
            raise argparse.ArgumentTypeError(f"empty item in {text!r}")
        values: list[Any] = []
        for p in parts:
            v = item(p)
            if v not in values:
                values.append(v)
        return values

    return parse


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(choices)})")
        return text

    return parse


def _name(text: str) -> str:
    if not text.replace("_", "").replace("-", "").replace("|", "").isalnum():
        raise argparse.ArgumentTypeError(f"not a valid name: {text!r}")
    return text


# ---- the parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from fastprof import __version__

    parser = _Parser(
        prog="fastprof",
        description="Low-overhead, high-precision profiler for LLM inference.",
        epilog=(
            "commands:\n"
            "  fastprof run                    benchmark generate (a sweep of configurations), write results JSON\n"
            "  fastprof report RESULTS.json    tables; --html, --csv, --markdown reports\n"
            "  fastprof compare A.json B.json  ratios, confidence intervals, significance; CI gate\n"
            "  fastprof env                    GPUs, drivers, CPU, versions and what spoils measurements\n"
            "  fastprof monitor -- CMD ...     sample the GPUs while a command runs\n"
            "  fastprof selftest               check this installation\n\n"
            "Run 'fastprof COMMAND --help' for the options of a command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_run(sub)
    _add_report(sub)
    _add_compare(sub)
    _add_env(sub)
    _add_monitor(sub)
    sub.add_parser("selftest", help="check that this installation works (recorder, sampler, GPU access)",
                   description="Check that this installation works. Options: 'fastprof selftest --help'.",
                   add_help=False)
    return parser


def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="benchmark model.generate per token over a sweep of configurations (a built-in small model by default)",
        description=(
            "Benchmark transformers' generate with per-token timing: time to first token, inter-token latency\n"
            "distribution, throughput, with confidence intervals. Without --model, a small Llama-architecture\n"
            "model with random weights is built from a config (nothing is downloaded). Runs on the GPU when\n"
            "there is one, else on the CPU.\n\n"
            "Sweeps: --batch-size, --prompt-len, --max-new-tokens, --dtype, --attn-implementation and --compile\n"
            "take comma lists; every combination is one configuration. A configuration that fails (out of\n"
            "memory, an unsupported attention implementation, any error) is recorded as failed with its reason\n"
            "and the sweep goes on. The results file holds every configuration and is rewritten after each\n"
            "one, so Ctrl-C keeps the finished ones. Exit code: 0 when every configuration ran, 1 when any\n"
            "failed, 2 for bad input, 130 when interrupted.\n\n"
            "example:\n"
            "  fastprof run --batch-size 1,4,16 --prompt-len 128,1024 --attn-implementation eager,sdpa"
        ),
        formatter_class=_Formatter,
    )
    run.add_argument("--model", metavar="DIR", help="local model directory (from save_pretrained); default: built-in")
    run.add_argument("--batch-size", type=_comma_list(_positive_int), default=[1], metavar="N[,N...]",
                     help="sequences per generate call")
    run.add_argument("--prompt-len", type=_comma_list(_positive_int), default=[128], metavar="N[,N...]",
                     help="prompt tokens per sequence (random ids)")
    run.add_argument("--max-new-tokens", type=_comma_list(_positive_int), default=[64], metavar="N[,N...]",
                     help="tokens generated per sequence")
    run.add_argument("--dtype", type=_comma_list(_choice(DTYPES)), default=["auto"], metavar="DTYPE[,...]",
                     help=f"weights dtype, of {', '.join(DTYPES)}; auto: bfloat16 on GPU, float32 on CPU")
    run.add_argument("--attn-implementation", type=_comma_list(_name), default=["auto"], metavar="NAME[,...]",
                     help="attention implementation passed to the model (eager, sdpa, flash_attention_2, ...); "
                          "auto: the model's default")
    run.add_argument("--compile", type=_comma_list(_choice(COMPILE_MODES)), default=["off"], metavar="off,on",
                     help="on: static KV cache and transformers' torch.compile of the forward pass "
                          "(mode reduce-overhead, fullgraph); transformers compiles on GPUs only")
    run.add_argument("--warmup", type=_non_negative_int, default=5, help="untimed iterations first, per configuration")
    run.add_argument("--iterations", type=_positive_int, default=20, help="measured iterations per configuration")
    run.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    run.add_argument("--sample-interval-ms", type=_non_negative_int, default=10, metavar="MS",
                     help="GPU sampling interval (utilisation, power, energy ...); 0 turns sampling off")
    run.add_argument("--seed", type=_non_negative_int, default=0, help="seed of weights, prompts and bootstrap")
    run.add_argument("--output", "-o", default="fastprof-results.json", metavar="FILE", help="results JSON file")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _add_report(sub: Any) -> None:
    from fastprof.report import DEFAULT_METRICS

    rep = sub.add_parser(
        "report",
        help="show a results file as tables; write HTML, CSV or Markdown reports",
        description=(
            "Show a results file of 'fastprof run' (or a saved BenchmarkResult) as a table: one row per\n"
            "configuration, medians with their unit. On request, write a self-contained HTML report (charts\n"
            "of per-token latency, ITL histogram and CDF, GPU counters over time shaded by prefill and decode,\n"
            "throughput against batch size and prompt length, the environment and every warning), a CSV file\n"
            "(one row per configuration x clock x metric with every statistic) or a Markdown table.\n\n"
            "example:\n"
            "  fastprof report fastprof-results.json --html report.html --csv results.csv"
        ),
        formatter_class=_Formatter,
    )
    rep.add_argument("results", metavar="RESULTS.json", help="results file")
    rep.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    rep.add_argument("--csv", metavar="FILE", help="write every statistic as CSV")
    rep.add_argument("--markdown", "--md", metavar="FILE", help="write the table as Markdown")
    rep.add_argument("--metric", type=_comma_list(str), default=list(DEFAULT_METRICS), metavar="NAME[,...]",
                     help="metrics in the table")
    rep.add_argument("--stat", type=_comma_list(str), default=["p50"], metavar="STAT[,...]",
                     help="statistics per metric (n, mean, std, min, p50, p90, p95, p99, max, cv)")
    rep.add_argument("--clock", choices=("host", "device"), default="host", help="clock of the table")
    rep.add_argument("--details", action="store_true", help="also print every configuration's full tables")


def _add_compare(sub: Any) -> None:
    cmp_ = sub.add_parser(
        "compare",
        help="compare results files: ratios, bootstrap confidence intervals, Mann-Whitney U; a CI gate",
        description=(
            "Compare each results file with the first (the baseline A). For every configuration found in both\n"
            "(same config values) and every metric: the ratio of medians B/A, a bootstrap confidence interval\n"
            "of that ratio from the raw per-iteration data, and the two-sided Mann-Whitney U p-value. A change\n"
            "is significant when p < --alpha and the interval excludes 1; it is a regression when a latency\n"
            "went up or a throughput went down. Exit code 1 with --fail-on-regression PCT when a significant\n"
            "regression exceeds PCT percent; 2 for bad input.\n\n"
            "example:\n"
            "  fastprof compare main.json branch.json --fail-on-regression 5"
        ),
        formatter_class=_Formatter,
    )
    cmp_.add_argument("files", nargs="+", metavar="FILE", help="results files: the baseline first, then one or more")
    cmp_.add_argument("--metric", type=_comma_list(str), default=None, metavar="NAME[,...]",
                      help="metrics to compare (default: every timing metric, and energy per token when sampled)")
    cmp_.add_argument("--clock", choices=("host", "device"), default="host", help="clock of the timing metrics")
    cmp_.add_argument("--alpha", type=float, default=0.05, help="significance level (p-value and 1-alpha interval)")
    cmp_.add_argument("--fail-on-regression", type=_non_negative_float, default=None, metavar="PCT",
                      help="exit 1 when a significant regression exceeds PCT percent")
    cmp_.add_argument("--ignore", type=_comma_list(str), default=[], metavar="KEY[,...]",
                      help="config keys not used to match configurations (e.g. model, to compare two models)")
    cmp_.add_argument("--resamples", type=_positive_int, default=2000, help="bootstrap resamples")
    cmp_.add_argument("--seed", type=_non_negative_int, default=0, help="bootstrap seed")
    cmp_.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")


def _add_env(sub: Any) -> None:
    env = sub.add_parser(
        "env",
        help="show GPUs, driver, clocks, power limits, CPU governor, versions, and what spoils measurements",
        description=(
            "Show the environment a measurement would run in: GPUs (name, UUID, driver, CUDA driver version,\n"
            "power limit, persistence mode, ECC, current and maximum clocks, processes; through nvidia-ml-py\n"
            "when installed), the CPU model and frequency governor, and the Python, torch, transformers and\n"
            "fastprof versions; then warnings about conditions that spoil measurements (another process on\n"
            "the GPU, a power cap below the default, a CPU governor other than performance)."
        ),
        formatter_class=_Formatter,
    )
    env.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _add_monitor(sub: Any) -> None:
    mon = sub.add_parser(
        "monitor",
        help="run a command while sampling its GPUs; print a summary, write the timeline",
        usage="fastprof monitor [-h] [--interval-ms MS] [--output FILE] [--devices LIST] [--backend NAME] -- CMD [ARGS ...]",
        description=(
            "Run CMD while the native sampler reads utilisation, memory, power, clocks and temperature of\n"
            "its GPUs; then print a summary and write the timeline as JSON. CMD's exit code is passed\n"
            "through (128+N when a signal N ended it). Without a GPU library the command still runs and\n"
            "the summary says why there are no samples.\n\n"
            "example:\n"
            "  fastprof monitor --interval-ms 5 -o timeline.json -- python serve_bench.py --requests 100"
        ),
        formatter_class=_Formatter,
    )
    mon.add_argument("--interval-ms", type=_positive_int, default=10, metavar="MS", help="sampling interval, 1 to 1000")
    mon.add_argument("--output", "-o", default="fastprof-monitor.json", metavar="FILE", help="timeline JSON file")
    mon.add_argument("--devices", type=_comma_list(str), default=None, metavar="LIST",
                     help="GPUs to watch: CUDA ordinals as the command sees them, or NVML UUIDs "
                          "(default: every device in CUDA_VISIBLE_DEVICES, else every device NVML lists, else 0)")
    mon.add_argument("--backend", choices=("auto", "nvml", "amdsmi", "xpusmi"), default="auto",
                     help="GPU library")
    mon.add_argument("--quiet", "-q", action="store_true", help="print no summary")
    mon.add_argument("cmd", nargs="*", metavar="CMD", help="the command and its arguments, after '--'")


# ---- run ----------------------------------------------------------------------------------
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


def cmd_run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    from fastprof import runner

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

    device = _resolve_device(args.device, torch)
    try:
        return runner.run_sweep(args, device=device, command=["fastprof", *(argv if argv is not None else sys.argv[1:])])
    except runner.ModelLoadError as exc:
        raise UsageError(str(exc)) from None


# ---- report, compare, env, monitor, selftest -------------------------------------------------
def _load(path: str):
    from fastprof.sweep import ResultsFileError, load

    try:
        return load(path)
    except ResultsFileError as exc:
        raise UsageError(str(exc)) from None


def cmd_report(args: argparse.Namespace) -> int:
    from fastprof import report

    sweep = _load(args.results)
    try:
        report.check_metrics(sweep, args.metric, args.clock)
        report.check_stats(args.stat)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    report.print_console(sweep, metrics=args.metric, stats=args.stat, clock=args.clock, details=args.details,
                         source=args.results)
    for path, writer in ((args.html, report.write_html), (args.csv, report.write_csv),
                         (args.markdown, report.write_markdown)):
        if path:
            writer(sweep, path, metrics=args.metric, stats=args.stat, clock=args.clock, source=args.results)
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from fastprof import compare

    if len(args.files) < 2:
        raise UsageError("compare needs at least two results files: the baseline, then one or more others")
    if not 0 < args.alpha < 1:
        raise UsageError(f"argument --alpha: must be between 0 and 1, got {args.alpha}")
    sweeps = [_load(p) for p in args.files]
    try:
        comparisons = compare.compare_files(sweeps, names=args.files, metrics=args.metric, clock=args.clock,
                                            alpha=args.alpha, ignore=args.ignore, resamples=args.resamples,
                                            seed=args.seed)
    except compare.CompareError as exc:
        raise UsageError(str(exc)) from None
    compare.print_console(comparisons, alpha=args.alpha, threshold_pct=args.fail_on_regression)
    if args.json:
        compare.write_json(comparisons, args.json, alpha=args.alpha)
    if args.fail_on_regression is not None:
        worst = compare.regressions(comparisons, args.fail_on_regression)
        if worst:
            print(f"fastprof: {len(worst)} significant regression(s) above {args.fail_on_regression:g}%",
                  file=sys.stderr)
            return 1
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from fastprof import envinfo

    info = envinfo.collect()
    if args.json:
        import json

        print(json.dumps(info, indent=1, default=str))
    else:
        envinfo.print_console(info)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from fastprof import monitor

    if not args.cmd:
        raise UsageError("monitor needs a command: fastprof monitor [options] -- CMD [ARGS ...]")
    if args.interval_ms > 1000:
        raise UsageError(f"argument --interval-ms: must be 1 to 1000, got {args.interval_ms}")
    try:
        return monitor.monitor(args.cmd, interval_ms=args.interval_ms, output=args.output, devices=args.devices,
                               backend=args.backend, quiet=args.quiet)
    except monitor.CommandNotFound as exc:
        raise UsageError(str(exc)) from None


def cmd_selftest(rest: Sequence[str]) -> int:
    import importlib

    try:
        selftest = importlib.import_module("fastprof.selftest")
    except ModuleNotFoundError as exc:
        if exc.name != "fastprof.selftest":
            raise
        print("fastprof: selftest is unavailable in this installation (no fastprof.selftest module)", file=sys.stderr)
        return EXIT_USAGE
    parser = _Parser(prog="fastprof selftest", description="Check that this installation works.")
    selftest.add_arguments(parser)
    return int(selftest.main(parser.parse_args(list(rest))))


def _split_monitor(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """argv of 'monitor': the options before '--', the command after it."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "selftest":
            return cmd_selftest(argv[1:])
        command_after_dashes = None
        parse_argv = argv
        if argv and argv[0] == "monitor":
            parse_argv, command_after_dashes = _split_monitor(argv)
        parser = build_parser()
        args = parser.parse_args(parse_argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "run":
            return cmd_run(args, argv)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "env":
            return cmd_env(args)
        if args.command == "monitor":
            if command_after_dashes is not None:
                if args.cmd:
                    raise UsageError(f"unrecognized arguments before '--': {' '.join(args.cmd)}")
                args.cmd = command_after_dashes
            return cmd_monitor(args)
        raise UsageError(f"unknown command {args.command!r}")
    except UsageError as exc:
        print(f"fastprof: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fastprof: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. 'fastprof report x.json | head'
        return 1
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
