"""The package's shape: layers enforced by import-linter, no import cycles, documented packages,
and the public API of before the layout still importable."""

import importlib
import textwrap
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")
importlinter_cli = pytest.importorskip("importlinter.cli")

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PACKAGES = ("capture", "analysis", "results", "measure", "report", "cli")
#: The compiled core has no source file, so the graph takes its one import for one of the root.
IGNORED = {("fastprof._native", "fastprof")}


def import_cycles(package: str, ignored=frozenset()) -> list[tuple[str, ...]]:
    """Every direct import a -> b of ``package`` (imports inside functions included) such that b
    leads back to a, as the chain a, b, ..., a."""
    graph = grimp.build_graph(package, cache_dir=None)
    for importer, imported in ignored:
        if graph.direct_import_exists(importer=importer, imported=imported):
            graph.remove_import(importer=importer, imported=imported)
    cycles = []
    for a in sorted(graph.modules):
        for b in sorted(graph.find_modules_directly_imported_by(a)):
            back = graph.find_shortest_chain(importer=b, imported=a)
            if back:
                cycles.append((a, *back))
    return cycles


@pytest.mark.skipif(not PYPROJECT.exists(), reason="needs the source tree's pyproject.toml")
def test_layer_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(PYPROJECT.parent)
    assert importlinter_cli.lint_imports(config_filename=str(PYPROJECT), no_cache=True) == 0


def test_no_import_cycles():
    assert import_cycles("fastprof", IGNORED) == []


def test_a_cycle_inside_a_function_is_found(tmp_path, monkeypatch):
    pkg = tmp_path / "cyclepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import cyclepkg.b\n")
    (pkg / "b.py").write_text(textwrap.dedent("""\
        def later():
            from cyclepkg import a  # imported inside a function: still a cycle
            return a
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cycles = import_cycles("cyclepkg")
    assert ("cyclepkg.a", "cyclepkg.b", "cyclepkg.a") in cycles


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_says_what_lives_there_and_what_it_may_import(name):
    doc = importlib.import_module(f"fastprof.{name}").__doc__ or ""
    assert "Lives here" in doc or "module here" in doc, name
    assert "import" in doc, name


PUBLIC = ["BenchmarkResult", "CapacityError", "DriverError", "FastprofError", "LibraryError", "OutputLengthError",
          "SCHEMA_VERSION", "STAT_KEYS", "Sampler", "SamplerResult", "StateError", "TokenRecorder", "Trace",
          "benchmark", "benchmark_generate", "capture_environment", "clock_resolution_ns", "describe",
          "monotonic_ns", "summarize_generation"]


def test_public_api_of_before_the_layout_still_imports():
    import fastprof

    for name in PUBLIC:
        assert name in fastprof.__all__ and getattr(fastprof, name) is not None, name
    from fastprof.sampler import Sampler
    from fastprof.sweep import ResultsFileError, Sweep, load, schema, validate

    assert Sampler is fastprof.Sampler
    assert schema()["title"] and callable(validate) and callable(load) and Sweep and ResultsFileError
