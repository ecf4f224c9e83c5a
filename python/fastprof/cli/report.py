"""``fastprof report``: a results file as tables; HTML, CSV and Markdown reports."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fastprof.cli._common import Formatter, UsageError, comma_list, load_results


def add_parser(sub: Any) -> None:
    from fastprof.report import DEFAULT_METRICS

    rep = sub.add_parser(
        "report",
        help="show a results file as tables; write HTML, CSV or Markdown reports",
        description=(
            "Show a results file of 'fastprof run' (or a saved BenchmarkResult) as a table: one row per\n"
            "configuration, medians with their unit, and for each configuration the verdict on why decode\n"
            "takes as long as it does (host-overhead-, memory- or compute-bound, with its numbers). On\n"
            "request, write a self-contained HTML report (charts of per-token latency, ITL histogram and CDF,\n"
            "GPU counters over time shaded by prefill and decode, the decode step's roofline position and\n"
            "bandwidth against the peak, throughput against batch size and prompt length, the environment\n"
            "and every warning), a CSV file (one row per configuration x clock x metric with every\n"
            "statistic) or a Markdown table.\n\n"
            "example:\n"
            "  fastprof report fastprof-results.json --html report.html --csv results.csv"
        ),
        formatter_class=Formatter,
    )
    rep.add_argument("results", metavar="RESULTS.json", help="results file")
    rep.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    rep.add_argument("--csv", metavar="FILE", help="write every statistic as CSV")
    rep.add_argument("--markdown", "--md", metavar="FILE", help="write the table as Markdown")
    rep.add_argument("--metric", type=comma_list(str), default=None, metavar="NAME[,...]",
                     help=f"metrics in the table (default: those of {', '.join(DEFAULT_METRICS)} that the file has, "
                          "else end-to-end latency and throughput)")
    rep.add_argument("--stat", type=comma_list(str), default=["p50"], metavar="STAT[,...]",
                     help="statistics per metric (n, mean, std, min, p50, p90, p95, p99, max, cv)")
    rep.add_argument("--clock", choices=("host", "device"), default="host", help="clock of the table")
    rep.add_argument("--details", action="store_true", help="also print every configuration's full tables")


def main(args: argparse.Namespace) -> int:
    from fastprof import report as reports

    sweep = load_results(args.results)
    if args.metric == list(reports.DEFAULT_METRICS) and sweep.ok_runs and \
            all(r.result.kind == "serving" for r in sweep.ok_runs):
        args.metric = ["queue_s", "ttft_s", "itl_s", "e2e_s"]  # serving runs: per-request latencies
    try:
        if args.metric is None:
            have = reports.available_metrics(sweep, args.clock)
            args.metric = [m for m in reports.DEFAULT_METRICS if m in have]
            if "ttft_s" not in have:  # no per-token marks (beam search, a callable): the whole call
                args.metric = [m for m in ("e2e_latency_s", "latency_s") if m in have] + args.metric
            args.metric = args.metric or have
        reports.check_metrics(sweep, args.metric, args.clock)
        reports.check_stats(args.stat)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    reports.print_console(sweep, metrics=args.metric, stats=args.stat, clock=args.clock, details=args.details,
                         source=args.results)
    for path, writer in ((args.html, reports.write_html), (args.csv, reports.write_csv),
                         (args.markdown, reports.write_markdown)):
        if path:
            writer(sweep, path, metrics=args.metric, stats=args.stat, clock=args.clock, source=args.results)
            print(f"wrote {path}", file=sys.stderr)
    return 0


