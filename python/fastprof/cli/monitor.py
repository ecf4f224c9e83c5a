"""``fastprof monitor``: run a command while the native sampler watches its GPUs."""

from __future__ import annotations

import argparse
from typing import Any

from fastprof.cli._common import Formatter, UsageError, comma_list, positive_int


def add_parser(sub: Any) -> None:
    mon = sub.add_parser(
        "monitor",
        help="run a command while sampling its GPUs; print a summary, write the timeline",
        usage="fastprof monitor [-h] [--interval-ms MS] [--output FILE] [--devices LIST]\n"
              "                        [--backend NAME] -- CMD [ARGS ...]",
        description=(
            "Run CMD while the native sampler reads utilisation, memory, power, clocks and temperature of\n"
            "its GPUs; then print a summary and write the timeline as JSON. CMD's exit code is passed\n"
            "through (128+N when a signal N ended it). Without a GPU library the command still runs and\n"
            "the summary says why there are no samples.\n\n"
            "example:\n"
            "  fastprof monitor --interval-ms 5 -o timeline.json -- python serve_bench.py --requests 100"
        ),
        formatter_class=Formatter,
    )
    mon.add_argument("--interval-ms", type=positive_int, default=10, metavar="MS", help="sampling interval, 1 to 1000")
    mon.add_argument("--output", "-o", default="fastprof-monitor.json", metavar="FILE", help="timeline JSON file")
    mon.add_argument("--devices", type=comma_list(str), default=None, metavar="LIST",
                     help="GPUs to watch: CUDA ordinals as the command sees them, or NVML UUIDs "
                          "(default: every device in CUDA_VISIBLE_DEVICES, else every device NVML lists, else 0)")
    mon.add_argument("--backend", choices=("auto", "nvml", "amdsmi", "xpusmi"), default="auto",
                     help="GPU library")
    mon.add_argument("--quiet", "-q", action="store_true", help="print no summary")
    mon.add_argument("cmd", nargs="*", metavar="CMD", help="the command and its arguments, after '--'")


def split_argv(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """argv of 'monitor': the options before '--', the command after it."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, None


def main(args: argparse.Namespace) -> int:
    from fastprof.measure import monitor
    if not args.cmd:
        raise UsageError("monitor needs a command: fastprof monitor [options] -- CMD [ARGS ...]")
    if args.interval_ms > 1000:
        raise UsageError(f"argument --interval-ms: must be 1 to 1000, got {args.interval_ms}")
    try:
        doc = monitor.monitor(args.cmd, interval_ms=args.interval_ms, output=args.output, devices=args.devices,
                              backend=args.backend)
    except monitor.CommandNotFound as exc:
        raise UsageError(str(exc)) from None
    from rich.console import Console
    from rich.markup import escape

    from fastprof.report.monitor import print_console

    console = Console(stderr=True, quiet=args.quiet, soft_wrap=True)
    print_console(doc, console)
    console.print(f"timeline written to {escape(str(args.output))}", highlight=False)
    return int(doc["exit_code"])


