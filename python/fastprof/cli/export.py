"""``fastprof export``: a results file as one timeline that trace viewers open."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fastprof.cli._common import Formatter, UsageError, load_results


def add_parser(sub: Any) -> None:
    exp = sub.add_parser(
        "export",
        help="write a results file as a Chrome trace (Perfetto UI, chrome://tracing): tokens, samples, stalls",
        description=(
            "Write a results file as one timeline in the Chrome trace-event JSON format, which Perfetto UI\n"
            "(ui.perfetto.dev) and chrome://tracing open. Per configuration: the timed iterations, every token\n"
            "gap on the host and GPU clocks (slow tokens named, with their causes), the stall events (garbage\n"
            "collection, CPU waits, recompilations, allocator growth, GPU throttling) and the GPU samples as\n"
            "counter tracks, all on fastprof's one clock.\n\n"
            "example:\n"
            "  fastprof export fastprof-results.json --trace run.trace.json"
        ),
        formatter_class=Formatter,
    )
    exp.add_argument("results", metavar="RESULTS.json", help="a results file of fastprof run or benchmark_generate")
    exp.add_argument("--trace", required=True, metavar="FILE", help="the Chrome trace-event JSON file to write")


def main(args: argparse.Namespace) -> int:
    from fastprof.report.trace_export import write_trace

    sweep = load_results(args.results)
    if not any(r.result is not None for r in sweep.runs):
        raise UsageError(f"{args.results}: no configuration ran, nothing to export")
    n = write_trace(sweep, args.trace)
    print(f"{n} trace events written to {args.trace} (open it in ui.perfetto.dev or chrome://tracing)",
          file=sys.stderr)
    return 0
