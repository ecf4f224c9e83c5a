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
)


def add_parser(sub: Any) -> None:
    cmp_ = sub.add_parser(
        "compare",
        help="compare results files: ratios with intervals, Welch tests over processes or iterations, Holm; "
             "a CI gate",
        description=(
            "Compare each results file with the first (the baseline A). For every configuration found in both\n"
            "(same config values) and every metric, over units that are independent enough:\n"
            "  process    one value per worker process, when both files come from 'fastprof run' with 2 or\n"
            "             more processes (5 by default; covers run-to-run drift);\n"
            "  iteration  otherwise, one value per iteration (ITL: each iteration's median gap; token gaps\n"
            "             are never counted as separate samples). Run-to-run drift is then NOT covered.\n"
            "B/A is the ratio of geometric means of the unit values, with Welch's t interval and p-value on\n"
            "their logs. p-values are Holm-adjusted over every metric and configuration of the comparison, so\n"
            "the chance of any false alarm stays at most --alpha. A change is significant when the adjusted p\n"
            "< --alpha and it is at least --min-effect percent; a regression when a latency went up or a\n"
            "throughput went down. Exit code 1 with --fail-on-regression PCT when a significant regression\n"
            "exceeds PCT percent; 2 for bad input. Each row also gives the smallest change it would catch\n"
            "95% of the time from the spread it saw (detectable_pct in --json); a note says when that is\n"
            "over 20%, and about how many processes a side would bring it down.\n\n"
            "Covariate adjustment: results written since schema version 4 carry the host path measured\n"
            "beside every iteration (a torch operation's dispatch and launch, a driver launch, a Python\n"
            "loop). Its share of each unit's spread is taken out (CUPED on logs, the slope fitted within\n"
            "each side) and the test runs on the adjusted values; a table gives the unadjusted ratio,\n"
            "interval and p beside them. A covariate that itself differs between the sides is not adjusted\n"
            "for (the compared code may move it). --covariate none turns it off.\n\n"
            "Two settings of one run: --by KEY compares the configurations of one file that differ in config\n"
            "key KEY (the run's first value is the baseline). Every worker process of that run measured\n"
            "each setting, next to each other and in alternating order, so each process's B is tested\n"
            "against its own A (a paired t test on the log ratios): what the machine did to that process\n"
            "cancels out, which a comparison of two separate runs cannot do. In a --processes 1 run\n"
            "whose settings alternated their timed iterations (fastprof run's default for settings of\n"
            "one model), each iteration of B is paired with A's of the same round instead.\n\n"
            "examples:\n"
            "  fastprof run -o main.json   # on each side (5 worker processes by default)\n"
            "  fastprof compare main.json branch.json --fail-on-regression 5\n"
            "  fastprof run --compile off,on -o both.json && fastprof compare both.json --by compile"
        ),
        formatter_class=Formatter,
    )
    cmp_.add_argument("files", nargs="+", metavar="FILE", help="results files: the baseline first, then one or more")
    cmp_.add_argument("--metric", type=comma_list(str), default=None, metavar="NAME[,...]",
                      help="metrics to compare (default: every timing metric, energy per token when sampled, and with "
                           "a kernel trace from 2 or more worker processes a side the device metrics "
                           "gpu_busy_s_per_step, kernels_per_step and gpu_<class>_s_per_step; for speculative "
                           "decoding also the step metrics step_s, tokens_per_step, acceptance_rate, draft_s and "
                           "verify_s)")
    cmp_.add_argument("--clock", choices=("host", "device"), default="host", help="clock of the timing metrics")
    cmp_.add_argument("--alpha", type=float, default=0.05, help="significance level (p-value and 1-alpha interval)")
    cmp_.add_argument("--fail-on-regression", type=non_negative_float, default=None, metavar="PCT",
                      help="exit 1 when a significant regression exceeds PCT percent")
    cmp_.add_argument("--ignore", type=comma_list(str), default=[], metavar="KEY[,...]",
                      help="config keys not used to match configurations (e.g. model, to compare two models)")
    cmp_.add_argument("--min-effect", type=non_negative_float, default=1.0, metavar="PCT",
                      help="smallest change, in percent, called a regression or an improvement")
    cmp_.add_argument("--by", metavar="KEY", default=None,
                      help="compare the configurations of ONE results file that differ in config key KEY "
                           "(batch_size, compile, attn_implementation, ...), paired by worker process, each "
                           "process's ratio taken round by round where its configurations alternated their "
                           "iterations (in a --processes 1 run: paired by round)")
    cmp_.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    cmp_.add_argument("--covariate", default="auto", choices=("auto", "none", "torch_op_s", "launch_s",
                                                            "python_loop_s"),
                      help="the host-path figure to adjust for (auto: the first of torch_op_s, launch_s, "
                           "python_loop_s that both files have; none: no adjustment)")


def main(args: argparse.Namespace) -> int:
    from fastprof.report import compare
    if args.by is not None and len(args.files) != 1:
        raise UsageError("argument --by: compares the configurations of one results file; give exactly one file")
    if args.by is None and len(args.files) < 2:
        raise UsageError("compare needs at least two results files: the baseline, then one or more others "
                         "(or one file and --by KEY)")
    if not 0 < args.alpha < 1:
        raise UsageError(f"argument --alpha: must be between 0 and 1, got {args.alpha}")
    sweeps = [load_results(p) for p in args.files]
    options = dict(metrics=args.metric, clock=args.clock, alpha=args.alpha, min_effect_pct=args.min_effect,
                   covariate=args.covariate)
    try:
        if args.by is not None:
            sides = compare.split_by(sweeps[0], args.by)
            names = [f"{args.by}={value}" for value, _ in sides]
            comparisons = [compare.compare_sweeps(sides[0][1], side, names=(names[0], name),
                                                  ignore=[args.by, *args.ignore], paired=True, **options)
                           for (_, side), name in zip(sides[1:], names[1:])]
        else:
            comparisons = compare.compare_files(sweeps, names=args.files, ignore=args.ignore, **options)
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


