"""``fastprof env``: the machine a measurement would run on, and what would spoil it."""

from __future__ import annotations

import argparse
from typing import Any

from fastprof.cli._common import Formatter


def add_parser(sub: Any) -> None:
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
        formatter_class=Formatter,
    )
    env.add_argument("--json", action="store_true", help="print JSON instead of tables")


def main(args: argparse.Namespace) -> int:
    from fastprof.capture.environment import collect
    from fastprof.report.env import print_console

    info = collect()
    if args.json:
        import json

        print(json.dumps(info, indent=1, default=str))
    else:
        print_console(info)
    return 0


