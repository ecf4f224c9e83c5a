"""The documentation stays true (docs/, README.md, mkdocs.yml).

- Every ``fastprof`` command shown in a shell block of the README or a docs page parses with the
  real command-line parser: a misspelt or removed option fails here.
- Blocks marked ``<!-- docs-test: python -->`` run (one interpreter per page, blocks in order,
  sharing their names), and blocks marked ``<!-- docs-test: run -->`` (``$ `` lines of a console
  block) run in a folder holding small results files made here; each command must exit 0, or the
  code the marker names (``<!-- docs-test: run exit=1 -->``) for the block's last command.
- The generated references (docs/hooks/fastprof_docs.py) cover every command, option and schema
  definition; every ``FASTPROF_*`` variable the package reads is in the environment reference;
  every page is in the navigation and every relative link points at a page.

None of this needs MkDocs (CI runs ``mkdocs build --strict`` itself). Skipped where the tests run
without the repository's docs/ (an sdist).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
pytestmark = pytest.mark.skipif(not (DOCS / "hooks").is_dir(), reason="no docs/ here (not a repository checkout)")

SHELLS = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*docs-test:\s*(\w+)([^>]*)-->")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None  # "python", "run" or None
    options: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    found = [ROOT / "README.md"] + sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)
    return [p for p in found if p.exists()]


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, with the docs-test marker just above each, if any."""
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        marker, options = None, ""
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0:
            mm = MARKER.search(lines[j])
            if mm:
                marker, options = mm.group(1), mm.group(2).strip()
        out.append(Block(page, start + 1, lang, "\n".join(body), marker, options))
    return out


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in blocks(p)]


# ---- commands in shell blocks ----------------------------------------------------------------
def shell_commands(block: Block) -> list[str]:
    """The command lines of a shell block: ``$ `` lines of a console block (with their ``\\``
    continuations), every line of a bash block."""
    raw = block.code.splitlines()
    if block.lang == "console":
        raw = [line[2:] for line in raw if line.startswith("$ ")] if any(l.startswith("$ ") for l in raw) else []
    joined: list[str] = []
    buf = ""
    for line in raw:
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        joined.append(buf + line)
        buf = ""
    if buf:
        joined.append(buf)
    return [c for c in joined if c.strip()]


def fastprof_invocations(command: str) -> list[list[str]]:
    """The argument lists given to fastprof in one shell command line (``fastprof ...``,
    ``python -m fastprof ...``, ``torchrun ... -m fastprof ...``), after ``&&``, ``;`` or ``|``."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    segments: list[list[str]] = [[]]
    for tok in tokens:
        if tok in (";", "&&", "||", "|", "&"):
            segments.append([])
        else:
            segments[-1].append(tok)
    found = []
    for seg in segments:
        while seg and re.match(r"^[A-Z_][A-Z0-9_]*=", seg[0]):  # VAR=value prefixes
            seg = seg[1:]
        if not seg:
            continue
        if seg[0] == "fastprof":
            found.append(seg[1:])
        elif "-m" in seg and seg.index("-m") + 1 < len(seg) and seg[seg.index("-m") + 1] == "fastprof" \
                and (seg[0] in ("torchrun", "python", "python3") or seg[0].endswith("python")):
            found.append(seg[seg.index("-m") + 2:])
    return found


def check_parses(args: list[str]) -> str | None:
    """None when fastprof's parser accepts ``args``, else the parser's message."""
    from fastprof.cli import build_parser, monitor
    from fastprof.cli._common import UsageError

    parse_argv, after = args, None
    if args and args[0] == "monitor":
        parse_argv, after = monitor.split_argv(args)
    try:
        ns = build_parser().parse_args(parse_argv)
    except UsageError as exc:
        return str(exc)
    except SystemExit as exc:  # --help, --version
        return None if exc.code in (0, None) else f"exit {exc.code}"
    if ns.command is None:
        return "no command"
    if ns.command == "monitor" and after is None and not ns.cmd:
        return "monitor needs a command after '--'"
    return None


def documented_invocations() -> list[tuple[str, list[str]]]:
    out = []
    for block in all_blocks():
        if block.lang not in SHELLS:
            continue
        for command in shell_commands(block):
            for args in fastprof_invocations(command):
                out.append((block.where, args))
    return out


def test_the_docs_show_fastprof_commands():
    invocations = documented_invocations()
    commands = {args[0] for _, args in invocations if args}
    assert len(invocations) >= 20, invocations
    assert {"run", "report", "compare", "export", "env", "monitor", "selftest"} <= commands, commands


def test_every_documented_command_parses():
    bad = []
    for where, args in documented_invocations():
        error = check_parses(args)
        if error:
            bad.append(f"{where}: fastprof {shlex.join(args)}: {error}")
    assert not bad, "\n".join(bad)


def test_a_wrong_option_is_caught():
    """The check above can fail: a misspelt option and a bad value are refused."""
    block = Block(ROOT / "README.md", 1, "bash", "pip install . && fastprof run --batchsize 4 -o x.json\n"
                  "torchrun --nproc-per-node 2 -m fastprof run --processes 0", None, "")
    found = [args for c in shell_commands(block) for args in fastprof_invocations(c)]
    assert found == [["run", "--batchsize", "4", "-o", "x.json"], ["run", "--processes", "0"]]
    assert all(check_parses(args) for args in found)
    assert check_parses(["compare", "a.json", "b.json", "--fail-on-regression", "5"]) is None


# ---- runnable blocks -------------------------------------------------------------------------
def _needs(code: str) -> list[str]:
    """Top-level modules a Python block imports that are not installed here."""
    mods = set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", code, re.M))
    return sorted(m for m in mods if importlib.util.find_spec(m) is None)


def _python_pages() -> list[Path]:
    return [p for p in pages() if any(b.marker == "python" for b in blocks(p))]


def _run_pages() -> list[Path]:
    return [p for p in pages() if any(b.marker == "run" for b in blocks(p))]


RUNNER = textwrap.dedent("""
    import sys, traceback
    names = {"__name__": "__main__"}
    for where, code in BLOCKS:
        try:
            exec(compile(code, where, "exec"), names)
        except BaseException:
            traceback.print_exc()
            print(f"docs example failed: {where}", file=sys.stderr)
            sys.exit(1)
""")


@pytest.mark.parametrize("page", _python_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_run(page, tmp_path):
    runnable = [b for b in blocks(page) if b.marker == "python"]
    missing = sorted({m for b in runnable for m in _needs(b.code)})
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    script = tmp_path / "examples.py"
    script.write_text(f"BLOCKS = {[(b.where, b.code) for b in runnable]!r}\n{RUNNER}", encoding="utf-8")
    env = dict(os.environ, COLUMNS="80", MPLBACKEND="Agg")
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """Small real results files under the names the runnable blocks use: host-clock traces of a
    sleeping loop, as from ``summarize_generation``."""
    import time

    import fastprof

    folder = tmp_path_factory.mktemp("docs-results")

    def make(name: str, sleep_s: float, config: dict) -> None:
        rec = fastprof.TokenRecorder(capacity=16, device=None)
        traces = []
        for _ in range(6):
            rec.begin()
            for _ in range(8):
                time.sleep(sleep_s)
                rec.mark()
            traces.append(rec.end())
        result = fastprof.summarize_generation(traces, batch_size=1, prompt_len=32, config=config)
        result.save(str(folder / name))

    base = {"model": "fastprof-builtin-llama", "dtype": "float32", "quantization": "none", "compile": "off"}
    make("fastprof-results.json", 0.001, dict(base, attn_implementation="sdpa"))
    make("quick.json", 0.001, dict(base, attn_implementation="sdpa"))
    make("eager.json", 0.001, dict(base, attn_implementation="eager"))
    make("sdpa.json", 0.002, dict(base, attn_implementation="sdpa"))  # slower: the gate's example exits 1
    return folder


@pytest.mark.parametrize("page", _run_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_console_examples_run(page, results_dir):
    env = dict(os.environ, COLUMNS="80", FASTPROF_PY=sys.executable, MPLBACKEND="Agg")
    for block in (b for b in blocks(page) if b.marker == "run"):
        commands = shell_commands(block)
        assert commands, f"{block.where}: a runnable block without '$ ' commands"
        m = re.search(r"exit=(\d+)", block.options)
        for k, command in enumerate(commands):
            expected = int(m.group(1)) if m and k == len(commands) - 1 else 0
            script = 'fastprof() { "$FASTPROF_PY" -m fastprof "$@"; }\n' + command
            run = subprocess.run(["bash", "-c", script], cwd=results_dir, capture_output=True, text=True, env=env,
                                 timeout=120)
            assert run.returncode == expected, (f"{block.where}: `{command}` exited {run.returncode}, "
                                                f"expected {expected}\n{run.stdout[-2000:]}{run.stderr[-2000:]}")


# ---- generated references, navigation, links --------------------------------------------------
def _hooks():
    spec = importlib.util.spec_from_file_location("fastprof_docs", DOCS / "hooks" / "fastprof_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_covers_every_command_and_option():
    import argparse

    from fastprof.cli import COMMANDS, build_parser

    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    hooks = _hooks()
    assert hooks.CLI_MARKER in page
    text = hooks.on_page_markdown(page)
    assert hooks.CLI_MARKER not in text
    subs = hooks._subparsers(build_parser())
    assert list(subs) == list(COMMANDS)
    for name, parser in subs.items():
        assert f"## `fastprof {name}`" in text
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for option in action.option_strings:
                assert option in text, f"fastprof {name} {option} missing from the CLI reference"


def test_schema_reference_is_the_newest_schema():
    import json

    hooks = _hooks()
    schemas = sorted((ROOT / "python" / "fastprof" / "results" / "schema").glob("results-v*.schema.json"),
                     key=lambda p: int(re.search(r"v(\d+)", p.name).group(1)))
    newest = schemas[-1]
    assert hooks.newest_schema() == newest
    text = hooks.render_schema()
    assert newest.name in text
    doc = json.loads(newest.read_text(encoding="utf-8"))
    for name in doc.get("$defs", {}):
        assert f"### `{name}`" in text
    page = (DOCS / "reference" / "schema.md").read_text(encoding="utf-8")
    assert hooks.SCHEMA_MARKER in page


def test_every_environment_variable_is_documented():
    read = set()  # quoted names: what getenv / os.environ read, not include guards or prose
    quoted = re.compile(r"[\"'](FASTPROF_[A-Z][A-Z0-9_]*)[\"']")
    for path in [*(ROOT / "python" / "fastprof").rglob("*.py"), *(ROOT / "csrc").glob("*.[ch]pp"),
                 *(ROOT / "tests").glob("*.py")]:
        read |= set(quoted.findall(path.read_text(encoding="utf-8")))
    assert read, "no FASTPROF_ variable found in the sources"
    page = (DOCS / "reference" / "environment.md").read_text(encoding="utf-8")
    missing = sorted(v for v in read if f"`{v}`" not in page)
    assert not missing, f"not in docs/reference/environment.md: {missing}"


def _nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:"):]
    return re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, re.M)


def test_every_page_is_in_the_navigation():
    nav = _nav_pages()
    generated = {_hooks().BENCH_PAGE}
    for page in nav:
        assert page in generated or (DOCS / page).exists(), f"mkdocs.yml lists a missing page: {page}"
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "hooks" not in p.parts}
    assert not on_disk - set(nav), f"pages not in the navigation: {sorted(on_disk - set(nav))}"


def test_relative_links_point_at_pages():
    generated = {_hooks().BENCH_PAGE}
    bad = []
    for page in pages():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            resolved = (page.parent / path).resolve()
            rel = resolved.relative_to(DOCS).as_posix() if resolved.is_relative_to(DOCS) else None
            if not resolved.exists() and rel not in generated:
                bad.append(f"{page.relative_to(ROOT)}: {target}")
    assert not bad, "\n".join(bad)


def test_readme_is_short_and_keeps_its_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 160
    assert 'pip install ".[hf]" && fastprof run' in text
    assert 'pip install ".[test]" && python -m pytest' in text


def test_pictures_are_small_pngs():
    for png in (DOCS / "images").glob("*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 300_000, png


def test_readme_python_example_is_a_tested_one():
    """The README's Python example is not run again (it would cost as much as the docs' run);
    it must be, character for character, a runnable example of the docs."""
    readme = [b.code for b in blocks(ROOT / "README.md") if b.lang == "python"]
    tested = {b.code for p in pages() if p.name != "README.md" for b in blocks(p) if b.marker == "python"}
    assert readme and all(code in tested for code in readme)


SOURCE_SUFFIXES = {".py", ".c", ".cc", ".cpp", ".h", ".hpp", ".cu"}


def _source_texts() -> list[tuple[str, str]]:
    out = []
    for top in ("python", "csrc"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and path.is_file():
                out.append((path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8", errors="replace")))
    return out


def _headings(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {m.group(1).strip() for m in re.finditer(r"^#+\s+(.+)$", text, flags=re.M)}


def test_sources_point_at_docs_pages_not_the_readme():
    """The README is a short overview: docstrings and help texts cite the docs/ page (and its
    section) where the explanation lives, and every page and section they cite exists."""
    bad = []
    for rel, text in _source_texts():
        bad += [f"{rel}: cites the README" for _ in re.finditer(r"README", text)]
        for m in re.finditer(r"docs/([\w./-]+\.md)", text):
            page = DOCS / m.group(1)
            if not page.is_file():
                bad.append(f"{rel}: {m.group(0)} is not a page")
                continue
            section = re.match(r'[^"\n]{0,20}section\s+"([^"]+)"', text[m.end():])
            if section and section.group(1) not in _headings(page):
                bad.append(f'{rel}: {m.group(0)} has no section "{section.group(1)}"')
    assert not bad, "\n".join(bad)
