"""The native module links no GPU library, and its typed stub matches it."""

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

import fastprof
from fastprof import _core

FORBIDDEN = ("libcuda", "libcudart", "libamdhip", "libnvidia-ml", "libamd_smi", "libtorch", "libc10", "libhip")


def test_extension_needs_no_gpu_library():
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf not installed")
    out = subprocess.run([readelf, "-d", _core.__file__], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
    assert needed, out
    assert not [n for n in needed if n.startswith(FORBIDDEN)], needed


def test_stub_matches_native_module():
    stub = Path(fastprof.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    public = {n for n in dir(_core) if not n.startswith("_")}
    assert names == public
    stub_recorder = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Recorder")
    members = {n.name for n in stub_recorder.body if isinstance(n, ast.FunctionDef)}
    members |= {n.target.id for n in stub_recorder.body if isinstance(n, ast.AnnAssign)}
    assert members - {"__init__"} == {n for n in dir(_core.Recorder) if not n.startswith("_")}
    assert Path(fastprof.__file__).with_name("py.typed").exists()
