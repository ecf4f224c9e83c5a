"""What every command shares: the parser class, argument types, usage errors, loading results."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump, exit code 2
        raise UsageError(message)


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and descriptions kept as written (paragraphs, examples)."""


# ---- argument types -----------------------------------------------------------------------
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def comma_list(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
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


def choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(choices)})")
        return text

    return parse


def name(text: str) -> str:
    if not text.replace("_", "").replace("-", "").replace("|", "").isalnum():
        raise argparse.ArgumentTypeError(f"not a valid name: {text!r}")
    return text


def load_results(path: str) -> Any:
    """A results file as a sweep, or a UsageError with the one-line reason."""
    from fastprof.results.sweep import ResultsFileError, load

    try:
        return load(path)
    except ResultsFileError as exc:
        raise UsageError(str(exc)) from None


