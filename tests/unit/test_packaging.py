"""Packaging: the native module links no GPU library, its stub matches it; one version, the metadata, the
wheel build script; with FASTPROF_TEST_INSTALLED=1, that the package under test is the installed one."""

import ast
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
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


# ---- what is installed: version, metadata, the wheel under test ---------------------------------

SOURCE_TREE = Path(__file__).resolve().parents[2]
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def test_fastprof_under_test_is_the_installed_one():
    """With FASTPROF_TEST_INSTALLED=1 (CI, a wheel's proof), fastprof must come from site-packages, not python/."""
    if os.environ.get("FASTPROF_TEST_INSTALLED") != "1":
        pytest.skip("FASTPROF_TEST_INSTALLED is not 1")
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    for module in (fastprof, _core):
        path = Path(module.__file__).resolve()
        assert any(s in path.parents for s in site), f"{module.__name__} imported from {path}, not from {site}"
        assert SOURCE_TREE / "python" not in path.parents, path
    files = metadata.distribution("fastprof").files
    assert any(f.name == Path(_core.__file__).name for f in files), "the extension is not among the installed files"


def test_one_version_everywhere():
    from fastprof._version import __version__

    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+)?(\.post\d+)?(\.dev\d+)?", __version__), __version__
    assert fastprof.__version__ == __version__
    assert metadata.version("fastprof") == __version__, "installed metadata is stale: reinstall fastprof"
    p = subprocess.run([sys.executable, "-m", "fastprof.cli", "--version"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"fastprof {__version__}"
    from fastprof.capture.environment import capture_environment

    assert capture_environment(nvml=False)["versions"]["fastprof"] == __version__


def test_metadata_a_cluster_admin_expects():
    meta = metadata.metadata("fastprof")
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    license_file = next(f for f in metadata.distribution("fastprof").files if f.name == "LICENSE")
    assert license_file.read_text().lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in license_file.read_text()
    assert not meta.get_all("Project-URL") and not meta.get_all("Home-page")
    versions = sorted((c.rsplit(":: ", 1)[1] for c in meta.get_all("Classifier")
                       if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)), key=lambda v: int(v[2:]))
    assert tuple(versions) == PYTHONS
    assert meta["Requires-Python"] == f">={PYTHONS[0]}"


def _source(path: str) -> Path:
    p = SOURCE_TREE / path
    if not p.exists():
        pytest.skip(f"no source tree beside the tests ({p} missing)")
    return p


def test_build_routes_agree_on_versions_and_architectures():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(_source("pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["version"] and "version" not in project["project"]
    regex = project["tool"]["scikit-build"]["metadata"]["version"]
    assert regex["input"] == "python/fastprof/_version.py"
    cibw = project["tool"]["cibuildwheel"]
    assert cibw["build"].split() == [f"cp{v.replace('.', '')}-*" for v in PYTHONS]
    script = _load_build_wheels()
    assert script.PYTHONS == PYTHONS
    assert sorted(script.ARCHS) == sorted(cibw["archs"])
    assert cibw["manylinux-x86_64-image"] == cibw["manylinux-aarch64-image"] == f"manylinux_{script.GLIBC.replace('.', '_')}"
    assert script.fastprof_version() == fastprof.__version__


def _load_build_wheels():
    path = _source("tools/build_wheels.py")
    if "build_wheels" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_wheels", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_wheels"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["build_wheels"]


def test_build_script_reads_auditwheel_and_apt_sources(tmp_path):
    script = _load_build_wheels()
    show = ('fastprof-0.1.0-cp311-cp311-manylinux_2_28_aarch64.whl is consistent\n'
            'with the following platform tag: "manylinux_2_17_aarch64".\n')
    assert script.auditwheel_verdict(show, "aarch64") == (2, 17)
    assert script.auditwheel_verdict(show, "x86_64") is None
    assert script.auditwheel_verdict("fastprof.whl is consistent with the following platform tag: "
                                      '"linux_x86_64".', "x86_64") is None
    assert script.ext_suffix("3.13", "aarch64") == ".cpython-313-aarch64-linux-gnu.so"


def test_build_script_finds_this_interpreters_headers():
    script = _load_build_wheels()
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if version not in script.PYTHONS or sysconfig.get_config_var("Py_GIL_DISABLED"):
        pytest.skip(f"CPython {version} is not a wheel target")
    headers = script.local_headers(version, platform.machine())
    if headers is None:
        pytest.skip("no python3.X executable of this version on PATH or in pyenv")
    assert (headers.include / "Python.h").is_file()
    assert (headers.include / "patchlevel.h").read_text().count(f'PY_VERSION              "{version}.') == 1
    other = "aarch64" if platform.machine() == "x86_64" else "x86_64"
    assert script.local_headers(version, other) is None


# ---- prebuilt fakes ---------------------------------------------------------------------------

def test_prebuilt_fakes_are_checked_against_their_source(tmp_path):
    import fake_libs

    with pytest.raises(ValueError, match="has no libfakenvml.so"):
        fake_libs.prebuilt("libfakenvml.so", tmp_path)
    (tmp_path / "libfakenvml.so").write_bytes(b"\x7fELF")
    (tmp_path / "libfakenvml.so.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(ValueError, match="another version of tests/fakes/fake_nvml.c"):
        fake_libs.prebuilt("libfakenvml.so", tmp_path)
    (tmp_path / "libfakenvml.so.sha256").write_text(fake_libs.digest("libfakenvml.so") + "\n")
    assert fake_libs.prebuilt("libfakenvml.so", tmp_path) == tmp_path / "libfakenvml.so"
    # The flags are part of what a copy was built from.
    assert fake_libs.digest("libfakegpu.so") != fake_libs.digest("libfakegpu_nomodules.so")


def test_build_script_refuses_an_sdist_with_build_products(tmp_path):
    import io
    import tarfile

    script = _load_build_wheels()

    def sdist(names):
        path = tmp_path / "fastprof-9.9.9.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for name in names:
                info = tarfile.TarInfo(f"fastprof-9.9.9/{name}")
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
        return path

    script.check_sdist(sdist(script.SDIST_REQUIRED), "9.9.9")
    with pytest.raises(script.BuildError, match=r"build products \['build/wheels/x.o'\]"):
        script.check_sdist(sdist([*script.SDIST_REQUIRED, "build/wheels/x.o"]), "9.9.9")
    with pytest.raises(script.BuildError, match=r"missing \['LICENSE'\]"):
        script.check_sdist(sdist([n for n in script.SDIST_REQUIRED if n != "LICENSE"]), "9.9.9")
