"""``fastprof compare``: ratios, intervals and significance between results files; a CI gate."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fastprof.cli._common import (
    Formatter,
    UsageError,
    comma_list,
    load_results,
    non_negative_float,
    non_negative_int,
    positive_int,
)


def add_parser(sub: Any) -> None:
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
        formatter_class=Formatter,
    )
    cmp_.add_argument("files", nargs="+", metavar="FILE", help="results files: the baseline first, then one or more")
    cmp_.add_argument("--metric", type=comma_list(str), default=None, metavar="NAME[,...]",
                      help="metrics to compare (default: every timing metric, and energy per token when sampled)")
    cmp_.add_argument("--clock", choices=("host", "device"), default="host", help="clock of the timing metrics")
    cmp_.add_argument("--alpha", type=float, default=0.05, help="significance level (p-value and 1-alpha interval)")
    cmp_.add_argument("--fail-on-regression", type=non_negative_float, default=None, metavar="PCT",
                      help="exit 1 when a significant regression exceeds PCT percent")
    cmp_.add_argument("--ignore", type=comma_list(str), default=[], metavar="KEY[,...]",
                      help="config keys not used to match configurations (e.g. model, to compare two models)")
    cmp_.add_argument("--resamples", type=positive_int, default=2000, help="bootstrap resamples")
    cmp_.add_argument("--seed", type=non_negative_int, default=0, help="bootstrap seed")
    cmp_.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")


def main(args: argparse.Namespace) -> int:
    from fastprof.report import compare
    if len(args.files) < 2:
        raise UsageError("compare needs at least two results files: the baseline, then one or more others")
    if not 0 < args.alpha < 1:
        raise UsageError(f"argument --alpha: must be between 0 and 1, got {args.alpha}")
    sweeps = [load_results(p) for p in args.files]
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


