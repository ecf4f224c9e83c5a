"""Files fastprof writes are readable by others as the user's umask allows, like any new file."""

import os
import stat

import pytest

from fastprof import cli
from fastprof.results.io import write_atomic


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_write_atomic_follows_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    p = tmp_path / "r.json"
    write_atomic(p, "{}")
    assert stat.S_IMODE(p.stat().st_mode) == expected
    write_atomic(p, "{}")  # replacing keeps the rule
    assert stat.S_IMODE(p.stat().st_mode) == expected


def test_report_files_are_readable_by_others(tmp_path, umask):
    umask(0o022)
    data = os.path.join(os.path.dirname(__file__), "..", "data", "sweep-0.1.0.json")
    csv, md = tmp_path / "r.csv", tmp_path / "r.md"
    assert cli.main(["report", data, "--csv", str(csv), "--markdown", str(md)]) == 0
    for p in (csv, md):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
