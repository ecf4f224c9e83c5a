"""MkDocs hook: the reference pages that are generated at build time, so that they cannot drift.

- ``<!-- fastprof:cli -->`` is replaced by the command-line reference, rendered from the argparse
  parsers of :func:`fastprof.cli.build_parser` (every command, its usage, description, option
  groups, each option with its metavar, choices, default and help).
- ``explanation/bench-results.md`` is added to the site from ``bench/RESULTS.md``, the measured
  figures the pages cite, so that the site shows the file the benchmarks write, never a copy.
- ``<!-- fastprof:schema -->`` is replaced by the results-file reference, rendered from the newest
  ``results-v*.schema.json`` in ``python/fastprof/results/schema/`` (every definition and field).

The rendering functions need neither MkDocs nor a build: ``tests/unit/test_docs.py`` calls them
directly. MkDocs loads this file through ``hooks:`` in ``mkdocs.yml``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

CLI_MARKER = "<!-- fastprof:cli -->"
SCHEMA_MARKER = "<!-- fastprof:schema -->"
ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "python" / "fastprof" / "results" / "schema"
BENCH_RESULTS = ROOT / "bench" / "RESULTS.md"
BENCH_PAGE = "explanation/bench-results.md"


# ---- the command line ----------------------------------------------------------------------
def _cell(text: str) -> str:
    """``text`` for one cell of a Markdown table: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The action's help with argparse's ``%(default)s`` and friends filled in."""
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params = dict(vars(action), prog=parser.prog)
    for name in list(params):
        if params[name] is argparse.SUPPRESS:
            del params[name]
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    try:
        return action.help % params
    except (KeyError, TypeError, ValueError):
        return action.help


def _default(action: argparse.Action) -> str:
    default = action.default
    if default is None or default is argparse.SUPPRESS or isinstance(action, (argparse._HelpAction,
                                                                               argparse._VersionAction)):
        return ""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return ""  # a flag: its presence is the value
    if isinstance(default, (list, tuple)):
        default = ",".join(str(v) for v in default)
    return f"`{default}`"


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    fmt = parser._get_formatter()
    return fmt._format_action_invocation(action)


def _usage(parser: argparse.ArgumentParser) -> str:
    fmt = argparse.HelpFormatter(parser.prog, width=100)
    fmt.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return fmt.format_help().strip()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _description(text: str | None) -> str:
    """A parser's description or epilog as Markdown: runs of unindented lines are paragraphs,
    indented lines (tables, examples) a code block."""
    if not text:
        return ""
    out: list[str] = []
    block: list[str] = []
    para: list[str] = []

    def flush_para() -> None:
        if para:
            out.append(" ".join(para))
            out.append("")
            para.clear()

    def flush_block() -> None:
        if block:
            out.append("```text")
            out.extend(block)
            out.append("```")
            out.append("")
            block.clear()

    for line in text.splitlines():
        if not line.strip():
            flush_para()
            if block:
                block.append("")
            continue
        if line[0].isspace():
            flush_para()
            block.append(line.rstrip())
            continue
        if block:
            while block and not block[-1]:
                block.pop()
            flush_block()
        if line.rstrip().endswith(":") and not para:
            para.append(f"**{line.strip()}**")
            flush_para()
            continue
        para.append(line.strip())
    flush_para()
    while block and not block[-1]:
        block.pop()
    flush_block()
    return "\n".join(out)


def _options_table(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> list[str]:
    rows = ["| option | default | description |", "| --- | --- | --- |"]
    for action in actions:
        if action.help == argparse.SUPPRESS:
            continue
        invocation = _invocation(parser, action)
        if not action.option_strings:
            invocation = action.metavar or action.dest
        choices = ""
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
            choices = " (one of " + ", ".join(f"`{c}`" for c in action.choices) + ")"
        help_text = _help_text(parser, action)
        rows.append(f"| `{_cell(invocation)}` | {_cell(_default(action))} | {_cell((help_text + choices).strip())} |")
    return rows


def render_parser(name: str, parser: argparse.ArgumentParser, level: int = 2) -> str:
    """One command as Markdown: heading, usage, description, one options table per group."""
    lines = [f"{'#' * level} `{name}`", "", "```text", _usage(parser), "```", ""]
    description = _description(parser.description)
    if description:
        lines += [description, ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS
                   and not isinstance(a, argparse._SubParsersAction)]
        if not actions:
            continue
        title = group.title or "options"
        lines += [f"**{title}**", ""]
        if group.description:
            lines += [_description(group.description), ""]
        lines += _options_table(parser, actions)
        lines.append("")
    epilog = _description(parser.epilog)
    if epilog:
        lines += [epilog, ""]
    return "\n".join(lines)


def render_cli(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole command line as Markdown: ``fastprof`` itself, then every command in the order of
    ``fastprof --help``."""
    if parser is None:
        from fastprof.cli import build_parser

        parser = build_parser()
    parts = [render_parser("fastprof", parser)]
    for name, sub in _subparsers(parser).items():
        parts.append(render_parser(f"fastprof {name}", sub))
    return "\n".join(parts)


# ---- the results schema --------------------------------------------------------------------
def newest_schema(directory: Path = SCHEMA_DIR) -> Path:
    """The ``results-vN.schema.json`` with the largest N."""
    found = []
    for path in directory.glob("results-v*.schema.json"):
        m = re.fullmatch(r"results-v(\d+)\.schema\.json", path.name)
        if m:
            found.append((int(m.group(1)), path))
    if not found:
        raise FileNotFoundError(f"no results-v*.schema.json in {directory}")
    return max(found)[1]


def _type(node: Any) -> str:
    if not isinstance(node, dict):
        return ""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#def-{name.replace('_', '-')})"
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " | ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " or ".join(t for t in (_type(n) for n in node[key]) if t)
    t = node.get("type", "")
    if isinstance(t, list):
        t = " or ".join(t)
    if t == "array" and isinstance(node.get("items"), dict):
        inner = _type(node["items"])
        return f"array of {inner}" if inner else "array"
    if t == "object" and isinstance(node.get("additionalProperties"), dict):
        inner = _type(node["additionalProperties"])
        if inner:
            return f"object of {inner}"
    return t


def _fields(node: dict[str, Any], prefix: str = "", depth: int = 0) -> list[str]:
    """Table rows for the properties of ``node``, nested objects written out with dotted names."""
    rows: list[str] = []
    required = set(node.get("required", []))
    for key, sub in node.get("properties", {}).items():
        if not isinstance(sub, dict):
            continue
        name = f"{prefix}{key}"
        req = "yes" if key in required else ""
        rows.append(f"| `{_cell(name)}` | {_cell(_type(sub))} | {req} | {_cell(sub.get('description', ''))} |")
        if depth < 3 and sub.get("type") == "object" and "properties" in sub:
            rows += _fields(sub, prefix=f"{name}.", depth=depth + 1)
        items = sub.get("items")
        if depth < 3 and isinstance(items, dict) and items.get("type") == "object" and "properties" in items:
            rows += _fields(items, prefix=f"{name}[].", depth=depth + 1)
    return rows


def _table(node: dict[str, Any]) -> list[str]:
    rows = _fields(node)
    if not rows:
        return []
    return ["| field | type | required | description |", "| --- | --- | --- | --- |", *rows, ""]


def render_schema(path: Path | None = None) -> str:
    """The results file's JSON Schema as Markdown: the top level, then every definition."""
    path = path or newest_schema()
    doc = json.loads(path.read_text(encoding="utf-8"))
    version = re.fullmatch(r"results-v(\d+)\.schema\.json", path.name).group(1)
    lines = [f"Generated from `python/fastprof/results/schema/{path.name}` "
             f"(schema version {version}, "
             f"shipped in the package as `fastprof/results/schema/{path.name}`).", ""]
    if doc.get("description"):
        lines += [doc["description"], ""]
    lines += ["## Top level", ""]
    lines += _table(doc)
    lines += ["## Definitions", ""]
    for name, node in doc.get("$defs", {}).items():
        anchor = f"def-{name.replace('_', '-')}"
        lines += [f"### `{name}` {{#{anchor}}}", ""]
        if isinstance(node, dict):
            if node.get("description"):
                lines += [node["description"], ""]
            table = _table(node)
            if table:
                lines += table
            else:
                t = _type(node)
                if t:
                    lines += [f"Type: {t}.", ""]
                for key in ("anyOf", "oneOf", "allOf"):
                    for alt in node.get(key, []):
                        if isinstance(alt, dict) and "properties" in alt:
                            lines += _table(alt)
    return "\n".join(lines)


# ---- the MkDocs hook -----------------------------------------------------------------------
def bench_results_page() -> str:
    """``bench/RESULTS.md`` as a page of the site, with a line saying where it comes from."""
    text = BENCH_RESULTS.read_text(encoding="utf-8")
    lines = text.splitlines()
    head, rest = (lines[0], lines[1:]) if lines and lines[0].startswith("# ") else ("# Benchmark results", lines)
    note = ("This page is `bench/RESULTS.md` of the repository, included when the documentation is built: "
            "every figure measured by the scripts in `bench/`, with the machine and versions.")
    return "\n".join([head, "", note, *rest]) + "\n"


def on_files(files: Any, config: Any, **_: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, BENCH_PAGE, content=bench_results_page()))
    return files


SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, page: Any = None, config: Any = None, files: Any = None, **_: Any) -> str:
    """The docstrings' Sphinx roles (``:class:`X```) show as the code alone in the API reference."""
    return SPHINX_ROLE.sub("", html)


def on_page_markdown(markdown: str, page: Any = None, config: Any = None, files: Any = None, **_: Any) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, render_cli())
    if SCHEMA_MARKER in markdown:
        markdown = markdown.replace(SCHEMA_MARKER, render_schema())
    return markdown
