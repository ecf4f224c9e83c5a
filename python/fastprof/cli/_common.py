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
    """Defaults in the help, and descriptions kept as written (paragraphs, examples). No
    "(default: None)", and none where the help already says its default."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Runs of unindented lines are one paragraph each, refilled to the terminal's width;
        indented lines (tables, examples) and blank lines are kept as written."""
        import textwrap

        out: list[str] = []
        run: list[str] = []

        def flush() -> None:
            if run:
                out.extend(textwrap.wrap(" ".join(run), width, initial_indent=indent, subsequent_indent=indent,
                                         break_on_hyphens=False) or [indent])
                run.clear()

        for line in text.splitlines():
            if line.strip() and not line[0].isspace():
                run.append(line.strip())
                continue
            flush()
            out.append(indent + line)
        flush()
        return "\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or "default:" in text:
            return action.help
        return super()._get_help_string(action)


# ---- argument types -----------------------------------------------------------------------
def _number(text: str, cast: Callable[[str], Any], expected: str, minimum: float, too_small: str) -> Any:
    """``text`` as ``cast`` (int or float), at least ``minimum`` (NaN is refused too)."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not value >= minimum:
        raise argparse.ArgumentTypeError(f"{too_small}, got {text if cast is float else value}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, "a positive integer", 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    return _number(text, int, "a non-negative integer", 0, "must be 0 or more")


def non_negative_float(text: str) -> float:
    return _number(text, float, "a number", 0, "must be 0 or more")


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


