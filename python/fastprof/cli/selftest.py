"""``fastprof selftest``: checks the precision of this machine in a few seconds."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from fastprof.capture import selftest as _selftest
from fastprof.capture.selftest import PASS, SKIPPED, WARN
from fastprof.cli._common import Formatter
from fastprof.report.selftest import print_table
from fastprof.results.io import write_atomic


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "selftest",
        help="check the precision of this machine: clock, mark cost, event resolution, sampler, spin kernel",
        description=(
            "Check the precision of this machine in a few seconds: the host clock's resolution and read cost,\n"
            "the cost of mark() with and without a GPU event, the resolution of event timestamps, the\n"
            "sampler's rate, jitter and CPU share at 1 ms, and device timing against a spin kernel of known\n"
            "length (20 us to 10 ms). Prints pass/warn per line and writes every figure as JSON. Without a\n"
            "GPU (or with --device cpu) the GPU lines are skipped."
        ),
        formatter_class=Formatter,
    )
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastprof selftest``."""
    parser.add_argument("--output", "-o", default="fastprof-selftest.json", metavar="FILE",
                        help="JSON file of every figure (written atomically)")
    parser.add_argument("--device", default="auto",
                        help="'auto' (CUDA device 0 when the driver sees one), 'cpu' (host part only), "
                             "'cuda' or 'cuda:N'")
    parser.add_argument("--sampler-seconds", type=float, default=3.0, metavar="S",
                        help="how long the 1 ms sampler check runs")
    parser.add_argument("--strict", action="store_true", help="exit code 1 when any line warns")


def main(args: argparse.Namespace) -> int:
    """Runs the self-test; prints the table and writes the JSON file. Returns the exit code."""
    t0 = time.perf_counter()
    try:
        dev = _selftest.resolve_device(getattr(args, "device", "auto"))
    except ValueError as exc:
        print(f"fastprof selftest: error: {exc}", file=sys.stderr)
        return 2
    checks = _selftest.host_checks()
    checks += _selftest.device_checks(dev, float(getattr(args, "sampler_seconds", 3.0)))
    report = _selftest.build_report(checks, dev, time.perf_counter() - t0)
    print_table(checks, dev)
    output = getattr(args, "output", None) or "fastprof-selftest.json"
    write_atomic(output, json.dumps(report, indent=2) + "\n")
    counts = report["counts"]
    print(f"{counts[PASS]} pass, {counts[WARN]} warn, {counts[SKIPPED]} skipped in {report['seconds']:.1f} s; "
          f"wrote {output}")
    if dev.explicit and dev.kind is None:
        print(f"fastprof selftest: error: {dev.reason}", file=sys.stderr)
        return 1
    if getattr(args, "strict", False) and counts[WARN]:
        return 1
    return 0

