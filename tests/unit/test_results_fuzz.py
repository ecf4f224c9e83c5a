"""Readers never fail with anything but a one-line ResultsFileError, whatever the document: a
property test over documents broken at every path of a real results file."""

import copy
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastprof import cli
from fastprof.results.io import ResultsFileError
from fastprof.results.sweep import Sweep

DOC = json.loads((Path(__file__).resolve().parents[1] / "data" / "sweep-0.1.0.json").read_text())


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            yield from paths(v, prefix + (i,))


PATHS = [p for p in paths(DOC) if p]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=6)


@st.composite
def broken_documents(draw):
    doc = copy.deepcopy(DOC)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue
    return doc


def read(doc):
    try:
        Sweep.from_dict(doc, source="fuzz.json")
    except ResultsFileError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken_documents())
def test_broken_documents_fail_with_one_line_only(doc):
    read(doc)


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_arbitrary_json_fails_with_one_line_only(doc):
    read(doc)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=broken_documents())
def test_the_commands_exit_0_or_2_with_one_line(tmp_path, doc):
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(doc))
    for argv in (["report", str(path)], ["compare", str(path), str(path)]):
        err, out = io.StringIO(), io.StringIO()
        with redirect_stderr(err), redirect_stdout(out):
            rc = cli.main(argv)
        assert rc in (0, 2), (argv, err.getvalue())
        if rc == 2:
            assert err.getvalue().count("\n") == 1 and "Traceback" not in err.getvalue()


@pytest.mark.parametrize("kind, words", [("monitor", "monitor' timeline"), ("selftest", "selftest' report")])
def test_files_of_another_kind_say_what_they_are(tmp_path, capsys, kind, words):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"schema_version": 1, "kind": kind}))
    for argv in (["report", str(path)], ["compare", str(path), str(path)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err


@pytest.mark.parametrize("key", ["batch_size", "prompt_len"])
def test_a_generate_result_without_its_shape_is_refused_in_one_line(tmp_path, capsys, key):
    doc = copy.deepcopy(DOC)
    doc["runs"][0]["result"]["config"].pop(key)
    path = tmp_path / "noshape.json"
    path.write_text(json.dumps(doc))
    for argv in (["report", str(path)], ["compare", str(path), str(path)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"config.{key}" in err
