"""The ``fastprof`` command: the parser and one module per command.

Each command is a module here with ``add_parser(sub)`` (its options and help) and
``main(args)`` (returns the exit code): :mod:`.run`, :mod:`.report`, :mod:`.compare`, :mod:`.export`, :mod:`.env`,
:mod:`.monitor`, :mod:`.selftest`. To add a command, add such a module and list it in
``COMMANDS``. The top layer: it may import every other part of fastprof.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from fastprof.cli import compare, env, export, monitor, report, run, selftest
from fastprof.cli._common import EXIT_INTERRUPTED, EXIT_USAGE, Parser, UsageError

#: Under torchrun, how long a rank other than 0 waits before it reports a usage error and exits:
#: every rank checks the same arguments, rank 0 speaks for all, and torchrun stops every rank once
#: one exits, so a rank that left first could stop rank 0 before it has said why. A rank stopped in
#: this wait says nothing; an error of its own (its GPU missing, say) is said after it.
RANK_QUIET_S = 10.0

#: The commands, in the order of ``fastprof --help``.
COMMANDS = {"run": run, "report": report, "compare": compare, "export": export, "env": env, "monitor": monitor,
            "selftest": selftest}


def build_parser() -> argparse.ArgumentParser:
    from fastprof._version import __version__

    parser = Parser(
        prog="fastprof",
        description="Low-overhead, high-precision profiler for LLM inference.",
        epilog=(
            "commands:\n"
            "  fastprof run                    benchmark generate (a sweep of configurations), write results JSON\n"
            "  fastprof report RESULTS.json    tables; --html, --csv, --markdown reports\n"
            "  fastprof compare A.json B.json  ratios, confidence intervals, significance; CI gate\n"
            "  fastprof export R.json --trace T  one timeline for Perfetto / chrome://tracing\n"
            "  fastprof env                    GPUs, drivers, CPU, versions and what spoils measurements\n"
            "  fastprof monitor -- CMD ...     sample the GPUs while a command runs\n"
            "  fastprof selftest               check this installation\n\n"
            "Run 'fastprof COMMAND --help' for the options of a command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command_after_dashes = None
        parse_argv = argv
        if argv and argv[0] == "monitor":
            parse_argv, command_after_dashes = monitor.split_argv(argv)
        parser = build_parser()
        args = parser.parse_args(parse_argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "monitor" and command_after_dashes is not None:
            if args.cmd:
                raise UsageError(f"unrecognized arguments before '--': {' '.join(args.cmd)}")
            args.cmd = command_after_dashes
        args.argv = argv
        return COMMANDS[args.command].main(args)
    except UsageError as exc:
        if os.environ.get("RANK", "0") not in ("0", "") and os.environ.get("TORCHELASTIC_RUN_ID"):
            import time

            time.sleep(RANK_QUIET_S)  # rank 0 speaks for all (see RANK_QUIET_S)
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
