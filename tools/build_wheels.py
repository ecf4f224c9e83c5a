#!/usr/bin/env python3
"""Build fastprof's sdist and manylinux_2_28 wheels (x86_64, aarch64; CPython 3.10-3.13) into dist/.

    python tools/build_wheels.py                      # everything this machine can build
    python tools/build_wheels.py --python 3.11 --arch x86_64 --test-fakes

No container runtime is needed: zig (the `ziglang` package) is the C/C++ compiler and cross
compiler, targeting glibc 2.28 (`x86_64-linux-gnu.2.28`, `aarch64-linux-gnu.2.28`), so a wheel runs
on RHEL 8 and anything newer. It links libc++ and its unwinder statically: the extension needs only
glibc's libraries. scikit-build-core drives CMake with a generated toolchain file, pybind11 builds in
its cross-compiling mode, the wheel is tagged manylinux_2_28 and `auditwheel show` checks it against
that policy; the script then checks that no GPU library is among the extension's needs.

What the build needs of each target CPython is its headers:
- from an interpreter of that version and architecture on this machine (`python3.X` on PATH, or
  pyenv's versions), else
- from Debian's `libpython3.X-dev` for the architecture (downloaded with apt-get into a private
  apt state under build/wheels/debian/, with the Debian mirror of this machine's apt sources or
  --debian-mirror; nothing is installed). Debian's releases carry 3.11 (bookworm) and 3.13 (trixie).
A target whose headers cannot be had is skipped with the reason, unless asked for by --python.

The wheels are built from the sdist (unpacked), so a file missing from the sdist breaks the build.
The tools (ziglang, auditwheel, build, scikit-build-core, pybind11, cmake, ninja) are taken from the
running interpreter when it has them, else installed from PyPI into build/wheels/tools/ (once).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "wheels"
GLIBC = "2.28"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
ARCHS = {  # wheel architecture -> Debian architecture
    "x86_64": "amd64",
    "aarch64": "arm64",
}
# The Debian release that ships libpython3.X-dev, for the versions that one does.
DEBIAN_SUITES = {"3.11": "bookworm", "3.13": "trixie"}
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
TOOLS = ["ziglang==0.17.1", "auditwheel>=6.1", "build>=1.2", "scikit-build-core>=0.11", "pybind11>=3.0",
         "cmake>=3.18", "ninja"]
TOOL_MODULES = ("ziglang", "auditwheel", "build", "scikit_build_core", "pybind11")
# Prefixes of the GPU libraries the extension must never need (it opens them with dlopen at run time).
GPU_LIBRARIES = ("libcuda", "libcudart", "libcupti", "libnvidia-ml", "libamdhip", "libhip", "libamd_smi",
                 "librocm", "libtorch", "libc10", "libze_", "libxpum")


class BuildError(Exception):
    """A step failed; the message says which and what to do."""


def log(msg: str) -> None:
    print(f"[build_wheels] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


# ---- tools ------------------------------------------------------------------------------------

def ensure_tools(argv: list[str]) -> None:
    """Re-run this script under an interpreter that has the build tools, installing them if needed."""
    if all(importlib.util.find_spec(m) for m in TOOL_MODULES) and shutil.which("cmake"):
        return
    venv = WORK / "tools"
    py = venv / "bin" / "python"
    if os.environ.get("FASTPROF_WHEEL_TOOLS") == str(py):
        raise BuildError(f"the tools venv {venv} lacks some of {', '.join(TOOL_MODULES)}: remove it and re-run")
    if not py.exists():
        log(f"installing the build tools into {venv}")
        run([sys.executable, "-m", "venv", venv])
        run([py, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([py, "-m", "pip", "install", "--quiet", *TOOLS])
    env = dict(os.environ, FASTPROF_WHEEL_TOOLS=str(py), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    os.execve(str(py), [str(py), str(Path(__file__).resolve()), *argv], env)


def zig_wrappers(arch: str) -> dict[str, Path]:
    """Shell scripts that run zig as cc, c++, ar and ranlib for `arch` with glibc 2.28 (CMake wants paths)."""
    d = WORK / "zig" / arch
    d.mkdir(parents=True, exist_ok=True)
    target = f"{arch}-linux-gnu.{GLIBC}"
    out = {}
    for name, args in {"cc": f"cc -target {target} -mcpu=baseline", "c++": f"c++ -target {target} -mcpu=baseline",
                       "ar": "ar", "ranlib": "ranlib"}.items():
        p = d / name
        p.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ziglang {args} "$@"\n')
        p.chmod(0o755)
        out[name] = p
    return out


# ---- headers of the target CPython ------------------------------------------------------------

@dataclass
class Headers:
    include: Path  # the directory holding Python.h
    source: str    # where they came from, for the summary


def _local_interpreters(version: str) -> list[Path]:
    found = []
    exe = shutil.which(f"python{version}")
    if exe:
        found.append(Path(exe))
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        for d in sorted(pyenv.glob(f"{version}.*"), reverse=True):
            if re.fullmatch(re.escape(version) + r"\.\d+", d.name) and (d / "bin" / f"python{version}").exists():
                found.append(d / "bin" / f"python{version}")
    return found


def local_headers(version: str, arch: str) -> Headers | None:
    """The headers of a plain (not debug, not free-threaded) CPython `version` for `arch` installed here."""
    probe = ("import json, sys, sysconfig; print(json.dumps({'include': sysconfig.get_path('include'), "
             "'ext': sysconfig.get_config_var('EXT_SUFFIX'), 'debug': hasattr(sys, 'gettotalrefcount'), "
             "'ft': bool(sysconfig.get_config_var('Py_GIL_DISABLED')), 'impl': sys.implementation.name}))")
    for exe in _local_interpreters(version):
        try:
            info = json.loads(subprocess.run([str(exe), "-c", probe], capture_output=True, text=True,
                                             check=True, timeout=60).stdout)
        except (OSError, subprocess.SubprocessError, ValueError):
            continue
        include = Path(info["include"])
        if (info["impl"] == "cpython" and not info["debug"] and not info["ft"]
                and info["ext"] == ext_suffix(version, arch) and (include / "Python.h").is_file()):
            return Headers(include, f"{exe}")
    return None


class Debian:
    """libpython3.X-dev packages from Debian's archive, with a private apt state (no root, nothing installed)."""

    def __init__(self, mirror: str | None):
        self.dir = WORK / "debian"
        self.mirror = mirror
        self.updated = False

    @staticmethod
    def system_mirror() -> str | None:
        """The Debian mirror of this machine's apt sources (not the security archive)."""
        texts = []
        for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
            try:
                texts.append(f.read_text())
            except OSError:
                pass
        for text in texts:
            for m in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
                uri = m.group(1).rstrip("/")
                if uri.endswith("/debian"):
                    return uri
        return None

    def _apt_options(self) -> list[str]:
        d = self.dir
        return ["-o", f"Dir::Etc={d / 'etc'}", "-o", f"Dir::Etc::sourcelist={d / 'etc' / 'sources.list'}",
                "-o", f"Dir::Etc::sourceparts={d / 'etc' / 'sources.list.d'}", "-o", f"Dir::State={d / 'state'}",
                "-o", f"Dir::State::Lists={d / 'state' / 'lists'}", "-o", f"Dir::State::status={d / 'state' / 'status'}",
                "-o", f"Dir::Cache={d / 'cache'}", "-o", "Debug::NoLocking=1", "-o", "APT::Architecture=amd64",
                *[x for a in ARCHS.values() for x in ("-o", f"APT::Architectures::={a}")],
                # As root, apt would hand downloads to its _apt user, who cannot write into our tree.
                *(["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else [])]

    def _update(self) -> None:
        if self.updated:
            return
        for tool in ("apt-get", "dpkg-deb"):
            if not shutil.which(tool):
                raise BuildError(f"{tool} not found: Debian's headers need apt-get and dpkg-deb (a Debian or "
                                 "Ubuntu machine)")
        mirror = self.mirror or self.system_mirror()
        if not mirror:
            raise BuildError("no Debian mirror in /etc/apt/sources*: pass --debian-mirror URL")
        if not DEBIAN_KEYRING.is_file():
            raise BuildError(f"{DEBIAN_KEYRING} missing: install the debian-archive-keyring package")
        d = self.dir
        for sub in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "state/lists/partial",
                    "cache/archives/partial", "debs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "state" / "status").touch()
        arches = ",".join(ARCHS.values())
        suites = sorted(set(DEBIAN_SUITES.values()))
        (d / "etc" / "sources.list").write_text("".join(
            f"deb [arch={arches} signed-by={DEBIAN_KEYRING}] {mirror} {s} main\n" for s in suites))
        run(["apt-get", *self._apt_options(), "-q", "update"], stdout=subprocess.DEVNULL)
        self.updated = True

    def download(self, packages: list[str], suite: str, dest: Path) -> list[Path]:
        """Download `packages` (name:debarch) from `suite` with all they depend on, into dest."""
        self._update()
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "partial").mkdir(exist_ok=True)
        run(["apt-get", *self._apt_options(), "-o", f"Dir::Cache::archives={dest}", "-o", f"APT::Default-Release={suite}",
             "-q", "-y", "--download-only", "--no-install-recommends", "install", *packages],
            stdout=subprocess.DEVNULL)
        return sorted(dest.glob("*.deb"))

    def headers(self, version: str, arch: str) -> Headers | None:
        suite = DEBIAN_SUITES.get(version)
        if suite is None:
            return None
        out = self.dir / "headers" / f"{version}-{arch}"
        include = out / "include" / f"python{version}"
        if not (include / "Python.h").is_file():
            self._update()
            debarch = ARCHS[arch]
            pkg = f"libpython{version}-dev"
            debs = self.dir / "debs"
            for old in debs.glob(f"{pkg}_*_{debarch}.deb"):
                old.unlink()
            run(["apt-get", *self._apt_options(), "-q", "download", f"{pkg}:{debarch}/{suite}"], cwd=debs)
            deb = next(debs.glob(f"{pkg}_*_{debarch}.deb"))
            tree = out / "root"
            shutil.rmtree(tree, ignore_errors=True)
            tree.mkdir(parents=True)
            run(["dpkg-deb", "-x", deb, tree])
            # Debian splits pyconfig.h by architecture; put the real one beside Python.h.
            shutil.rmtree(include.parent, ignore_errors=True)
            shutil.copytree(tree / "usr" / "include" / f"python{version}", include)
            (include / "pyconfig.h").unlink(missing_ok=True)
            shutil.copy(tree / "usr" / "include" / f"{arch}-linux-gnu" / f"python{version}" / "pyconfig.h",
                        include / "pyconfig.h")
            (out / "source").write_text(f"Debian {suite} {deb.name}\n")
        return Headers(include, (out / "source").read_text().strip())


def ext_suffix(version: str, arch: str) -> str:
    return f".cpython-{version.replace('.', '')}-{arch}-linux-gnu.so"


# ---- build ------------------------------------------------------------------------------------

def fastprof_version() -> str:
    text = (ROOT / "python" / "fastprof" / "_version.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not m:
        raise BuildError("python/fastprof/_version.py has no __version__ line")
    return m.group(1)


def build_sdist(out: Path, version: str) -> Path:
    run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", out, ROOT])
    sdist = out / f"fastprof-{version}.tar.gz"
    if not sdist.is_file():
        raise BuildError(f"python -m build made no {sdist.name} in {out}")
    check_sdist(sdist, version)
    return sdist


# What the sdist must hold, and top-level folders that are build products, never sources.
SDIST_REQUIRED = ("pyproject.toml", "CMakeLists.txt", "LICENSE", "README.md", "python/fastprof/_version.py",
                  "csrc/clock.hpp", "tests/conftest.py", "tests/fake_libs.py", "tools/build_wheels.py")
SDIST_FORBIDDEN = ("build/", "dist/", ".ci-dist/", ".ci-venv/", ".venv/")
SDIST_MAX_BYTES = 20 * 1024 * 1024


def check_sdist(sdist: Path, version: str) -> None:
    """The sdist holds the sources (a wheel is built from it) and no build tree, venv or wheel."""
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
    prefix = f"fastprof-{version}/"
    names = {m.name[len(prefix):] for m in members if m.name.startswith(prefix)}
    missing = [n for n in SDIST_REQUIRED if n not in names]
    stray = sorted(n for n in names if n.startswith(SDIST_FORBIDDEN))
    size = sum(m.size for m in members)
    if missing or stray or size > SDIST_MAX_BYTES:
        raise BuildError(f"{sdist.name} is wrong: missing {missing}, build products {stray[:5]}"
                         f"{' ...' if len(stray) > 5 else ''}, {size / 2**20:.1f} MiB unpacked "
                         "(see sdist.include / sdist.exclude in pyproject.toml)")


def unpack(sdist: Path, version: str) -> Path:
    dest = WORK / "src"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        if sys.version_info >= (3, 12):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)  # noqa: S202 - our own sdist, just built
    return dest / f"fastprof-{version}"


def python_config(version: str, arch: str, headers: Headers, prefix: Path) -> None:
    """A pythonX.Y-config under prefix/bin that describes the target CPython.

    Cross-compiling, CMake's FindPython asks a config tool for the target's layout; without this one
    it would find the build machine's (another version, or another architecture).
    """
    configdir = prefix / "lib" / f"python{version}" / f"config-{version}-{arch}-linux-gnu"
    configdir.mkdir(parents=True, exist_ok=True)
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    tool = prefix / "bin" / f"python{version}-config"
    tool.write_text(f"""#!/bin/sh
# Generated by tools/build_wheels.py: CPython {version} for {arch}, headers only.
for a in "$@"; do
  case "$a" in
    --prefix|--exec-prefix) echo "{prefix}" ;;
    --includes|--cflags) echo "-I{headers.include}" ;;
    --abiflags|--ldflags|--libs|--embed) echo "" ;;
    --extension-suffix) echo "{ext_suffix(version, arch)}" ;;
    --configdir) echo "{configdir}" ;;
    *) echo "python{version}-config: unknown option $a" >&2; exit 1 ;;
  esac
done
""")
    tool.chmod(0o755)


def toolchain(version: str, arch: str, headers: Headers, tag: str) -> Path:
    zig = zig_wrappers(arch)
    path = WORK / "cmake" / tag / "toolchain.cmake"
    path.parent.mkdir(parents=True, exist_ok=True)
    python_config(version, arch, headers, path.parent / "python")
    path.write_text(f"""# Generated by tools/build_wheels.py: zig for {arch}, glibc {GLIBC}.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR {arch})
set(CMAKE_C_COMPILER "{zig['cc']}")
set(CMAKE_CXX_COMPILER "{zig['c++']}")
set(CMAKE_AR "{zig['ar']}" CACHE FILEPATH "")
set(CMAKE_RANLIB "{zig['ranlib']}" CACHE FILEPATH "")
# Stripped at link time (a host strip may not know the target's ELF).
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-s")
set(CMAKE_MODULE_LINKER_FLAGS_INIT "-s")
# The target CPython: its headers (an extension module links no libpython on Linux) and a
# config tool that describes it.
set(Python_INCLUDE_DIR "{headers.include}" CACHE PATH "")
set(Python_ROOT_DIR "{path.parent / 'python'}" CACHE PATH "")
# Libraries only from the target's tree (none: not the build machine's libpython).
set(CMAKE_FIND_ROOT_PATH "{path.parent / 'python'}")
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
# pybind11 must not ask the build machine's interpreter for the extension suffix: it takes the
# target's from SETUPTOOLS_EXT_SUFFIX / SKBUILD_SOABI.
set(PYBIND11_USE_CROSSCOMPILING ON CACHE BOOL "")
""")
    return path


def needed_libraries(wheel: Path) -> dict[str, list[str]]:
    """DT_NEEDED of every shared object in the wheel."""
    import zipfile

    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    out = {}
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if ".so" not in name:
                continue
            import io

            elf = ELFFile(io.BytesIO(z.read(name)))
            needed = []
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    needed += [t.needed for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
            out[name] = needed
    return out


def auditwheel_verdict(show: str, arch: str) -> tuple[int, int] | None:
    """The glibc version of the most compatible manylinux tag that `auditwheel show` found, else None."""
    m = re.search(r'is consistent\s+with the following platform tag:\s+"manylinux_(\d+)_(\d+)_' + arch + '"', show)
    return (int(m.group(1)), int(m.group(2))) if m else None


def build_wheel(src: Path, version: str, arch: str, headers: Headers, out: Path) -> dict:
    nodot = version.replace(".", "")
    plat = f"manylinux_{GLIBC.replace('.', '_')}_{arch}"
    tag = f"cp{nodot}-cp{nodot}-{plat}"
    raw = WORK / "raw" / tag
    shutil.rmtree(raw, ignore_errors=True)
    shutil.rmtree(WORK / "cmake" / tag, ignore_errors=True)  # a clean build: nothing left from another compiler
    t0 = time.monotonic()
    env = dict(os.environ, SETUPTOOLS_EXT_SUFFIX=ext_suffix(version, arch))
    env.pop("_PYTHON_HOST_PLATFORM", None)
    # Tagged manylinux_2_28 at once: the extension needs nothing to vendor (no `auditwheel repair`),
    # and `auditwheel show` below checks that the tag is true.
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", raw, src,
         f"-Ccmake.toolchain-file={toolchain(version, arch, headers, tag)}",
         f"-Cbuild-dir={WORK / 'cmake' / tag / 'build'}",
         f"-Cwheel.tags={tag}",
         "-Ccmake.python-hints=false",
         "-Cinstall.strip=false"], env=env)
    seconds = time.monotonic() - t0
    built = list(raw.glob(f"fastprof-*-{tag}.whl"))
    if len(built) != 1:
        raise BuildError(f"expected one {tag} wheel in {raw}, found {[w.name for w in raw.glob('*')]}")
    wheel = out / built[0].name
    shutil.copy2(built[0], wheel)
    show = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True)
    print(show.stdout, end="")
    verdict = auditwheel_verdict(show.stdout, arch) if show.returncode == 0 else None
    if verdict is None or verdict > tuple(int(x) for x in GLIBC.split(".")):
        raise BuildError(f"auditwheel show does not accept {wheel.name} as {plat}:\n{show.stdout}{show.stderr}")
    needed = needed_libraries(wheel)
    gpu = sorted({n for libs in needed.values() for n in libs if n.startswith(GPU_LIBRARIES)})
    if gpu:
        raise BuildError(f"{wheel.name} needs GPU libraries {gpu}: they must be opened with dlopen at run time")
    if not needed:
        raise BuildError(f"{wheel.name} holds no extension module")
    return {"wheel": wheel.name, "python": version, "arch": arch, "bytes": wheel.stat().st_size,
            "seconds": round(seconds, 1), "headers": headers.source, "needed": needed,
            "auditwheel": "manylinux_{}_{}_{}".format(*verdict, arch)}


def build_test_fakes(src: Path, arch: str, dest: Path) -> None:
    spec = importlib.util.spec_from_file_location("fake_libs", src / "tests" / "fake_libs.py")
    fake_libs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake_libs)
    cc = [str(zig_wrappers(arch)["cc"])]
    for name in fake_libs.LIBRARIES:
        log(f"test fake {fake_libs.build(name, dest, cc)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="build_wheels.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[0],
        epilog="Writes dist/fastprof-VERSION.tar.gz and dist/fastprof-VERSION-cp3X-cp3X-manylinux_2_28_ARCH.whl,\n"
               "and build/wheels/summary.json (sizes, build times, where each target's headers came from).")
    parser.add_argument("--python", action="append", choices=PYTHONS, metavar="3.X",
                        help=f"CPython version to build for (repeatable; default: each of {', '.join(PYTHONS)} "
                             "whose headers can be had)")
    parser.add_argument("--arch", action="append", choices=sorted(ARCHS),
                        help="architecture (repeatable; default: x86_64 and aarch64)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory (default: dist/)")
    parser.add_argument("--no-sdist", action="store_true", help="build the wheels from the source tree, no sdist")
    parser.add_argument("--test-fakes", type=Path, nargs="?", const=WORK / "test-fakes", metavar="DIR",
                        help="also build the tests' fake GPU libraries for this machine with zig, into DIR "
                             "(default build/wheels/test-fakes/), for FASTPROF_TEST_FAKES_DIR")
    parser.add_argument("--debian-mirror", metavar="URL",
                        help="Debian mirror for the headers (default: the one in this machine's apt sources)")
    args = parser.parse_args(argv)
    try:
        ensure_tools(argv)
        return _main(args)
    except BuildError as e:
        print(f"build_wheels: error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"build_wheels: error: {' '.join(map(str, e.cmd))} exited with {e.returncode}", file=sys.stderr)
        return 1


def _main(args) -> int:
    version = fastprof_version()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.no_sdist:
        src = ROOT
    else:
        src = unpack(build_sdist(out, version), version)
    debian = Debian(args.debian_mirror)
    results, skipped = [], []
    for arch in args.arch or list(ARCHS):
        for py in args.python or PYTHONS:
            headers = local_headers(py, arch) or debian.headers(py, arch)
            if headers is None:
                why = (f"no CPython {py} for {arch} here, and Debian ships libpython{py}-dev in none of "
                       f"{', '.join(f'{s} ({v})' for v, s in DEBIAN_SUITES.items())}")
                if args.python:
                    raise BuildError(f"cannot build for CPython {py} on {arch}: {why}")
                log(f"skipping cp{py.replace('.', '')} {arch}: {why}")
                skipped.append({"python": py, "arch": arch, "why": why})
                continue
            log(f"cp{py.replace('.', '')} {arch}: headers from {headers.source}")
            results.append(build_wheel(src, py, arch, headers, out))
    if args.test_fakes:
        build_test_fakes(src, platform.machine(), args.test_fakes.resolve())
    summary = {"version": version, "glibc": GLIBC, "zig": _zig_version(), "wheels": results, "skipped": skipped}
    (WORK / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(f"{'wheel':<60} {'size':>9} {'build s':>8}  headers")
    for r in results:
        print(f"{r['wheel']:<60} {r['bytes'] / 1024:>7.0f}Ki {r['seconds']:>8.1f}  {r['headers']}")
    for s in skipped:
        print(f"skipped cp{s['python'].replace('.', '')} {s['arch']}: {s['why']}")
    if not results:
        raise BuildError("no wheel built")
    return 0


def _zig_version() -> str:
    return subprocess.run([sys.executable, "-m", "ziglang", "version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
