#!/usr/bin/env python3
"""Run a fastprof wheel for another architecture under qemu user-mode emulation.

    python tools/run_emulated.py dist/fastprof-*-cp311-cp311-manylinux_2_28_aarch64.whl
    python tools/run_emulated.py WHEEL -- -m pytest tests/test_recorder.py

Debian's CPython of the wheel's version for the wheel's architecture (with the libraries it and the
dependencies' wheels need) is unpacked from Debian's archive into build/wheels/emulated/, the wheel
and its dependencies (the PyPI wheels for that architecture) are installed beside it with
`pip install --target`, and the command runs as `qemu-ARCH -L SYSROOT python3.X ARGS`; the default
is `-m fastprof.cli selftest --device cpu`. With --test-fakes, the tests' fake GPU libraries are
built for the architecture with zig and FASTPROF_TEST_FAKES_DIR points at them.

Needs qemu-user (Debian: `apt-get install qemu-user-static`), apt-get and dpkg-deb; installs nothing
on the system. Only the Python versions that Debian ships can run: 3.11 (bookworm), 3.13 (trixie).
Child processes of the emulated Python (the tests start `sys.executable`) run only where the kernel
has a binfmt_misc handler for the architecture (qemu-user-static's package registers one where
binfmt_misc is mounted); QEMU_LD_PREFIX is set for them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _build_wheels():
    spec = importlib.util.spec_from_file_location("build_wheels", HERE / "build_wheels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_wheels"] = module
    spec.loader.exec_module(module)
    return module


bw = _build_wheels()
# What Debian's python3.X-minimal lacks that the wheels of fastprof's dependencies need (C++ runtime).
EXTRA_PACKAGES = ("libstdc++6", "libgcc-s1")


def sysroot(debian, version: str, arch: str) -> Path:
    """Debian's CPython `version` for `arch`, unpacked (not installed) into a directory of its own."""
    suite = bw.DEBIAN_SUITES.get(version)
    if suite is None:
        raise bw.BuildError(f"Debian ships no CPython {version}: only {', '.join(bw.DEBIAN_SUITES)}")
    root = bw.WORK / "emulated" / f"{version}-{arch}" / "sysroot"
    python = root / "usr" / "bin" / f"python{version}"
    if python.exists():
        return root
    debarch = bw.ARCHS[arch]
    debs = debian.download([f"python{version}:{debarch}", *(f"{p}:{debarch}" for p in EXTRA_PACKAGES)], suite,
                           bw.WORK / "emulated" / f"{version}-{arch}" / "debs")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for deb in debs:
        bw.run(["dpkg-deb", "-x", deb, root], stdout=subprocess.DEVNULL)
    # Merged /usr (trixie's packages install under usr/ only): the ELF interpreter is /lib/ld-linux-*.
    for d in ("bin", "sbin", "lib"):
        if not (root / d).exists():
            (root / d).symlink_to(f"usr/{d}")
    if not python.exists():
        raise bw.BuildError(f"{python} missing after unpacking {len(debs)} packages")
    return root


def install(wheel: Path, version: str, arch: str, extra: list[str]) -> Path:
    """The wheel and its dependencies for `arch`, installed with the build machine's pip into a directory."""
    site = bw.WORK / "emulated" / f"{version}-{arch}" / "site"
    shutil.rmtree(site, ignore_errors=True)
    nodot = version.replace(".", "")
    platforms = [f"manylinux_2_{m}_{arch}" for m in (28, 27, 26, 24, 17)] + [f"manylinux2014_{arch}"]
    bw.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", site, "--only-binary=:all:",
            "--implementation", "cp", "--python-version", version, "--abi", f"cp{nodot}",
            *(x for p in platforms for x in ("--platform", p)), wheel, *extra])
    return site


def qemu(arch: str) -> str:
    for name in (f"qemu-{arch}-static", f"qemu-{arch}"):
        if shutil.which(name):
            return shutil.which(name)
    raise bw.BuildError(f"qemu-{arch} not found: install qemu user-mode emulation (Debian: apt-get install "
                        "qemu-user-static)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_emulated.py", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("wheel", type=Path, help="a fastprof wheel (cp3X, manylinux, aarch64 or x86_64)")
    parser.add_argument("args", nargs="*", help="arguments of python (after --; default: "
                                                "-m fastprof.cli selftest --device cpu)")
    parser.add_argument("--with", dest="extra", action="append", default=[], metavar="REQ",
                        help="also install this requirement for the architecture (repeatable), e.g. pytest")
    parser.add_argument("--test-fakes", action="store_true",
                        help="build the tests' fake GPU libraries for the architecture, set FASTPROF_TEST_FAKES_DIR")
    parser.add_argument("--debian-mirror", metavar="URL", help="Debian mirror (default: this machine's apt sources)")
    args = parser.parse_args(argv)
    m = re.fullmatch(r"fastprof-[^-]+-cp3(\d+)-cp3\1-manylinux_\d+_\d+_(\w+)\.whl", args.wheel.name)
    if not m:
        parser.error(f"{args.wheel.name} is not a fastprof manylinux wheel for CPython")
    version, arch = f"3.{m.group(1)}", m.group(2)
    try:
        emulator = qemu(arch)
        root = sysroot(bw.Debian(args.debian_mirror), version, arch)
        site = install(args.wheel.resolve(), version, arch, args.extra)
        env = dict(os.environ, PYTHONPATH=str(site), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1",
                   PATH=f"{site / 'bin'}{os.pathsep}{os.environ['PATH']}")
        env.pop("PYTHONHOME", None)
        # Children started with sys.executable (the tests do) run under qemu only through a binfmt_misc
        # handler for the architecture; this tells that qemu where the target's libraries are.
        env["QEMU_LD_PREFIX"] = str(root)
        if not Path(f"/proc/sys/fs/binfmt_misc/qemu-{arch}").exists():
            bw.log(f"no binfmt_misc handler for {arch}: programs that start {arch} children (tests that run "
                   "sys.executable) will fail with 'Exec format error'")
        if args.test_fakes:
            fakes = bw.WORK / "emulated" / f"{version}-{arch}" / "test-fakes"
            bw.build_test_fakes(HERE.parent, arch, fakes)
            env["FASTPROF_TEST_FAKES_DIR"] = str(fakes)
        command = [emulator, "-L", root, root / "usr" / "bin" / f"python{version}",
                   *(args.args or ["-m", "fastprof.cli", "selftest", "--device", "cpu", "-o",
                                   str(bw.WORK / "emulated" / f"{version}-{arch}" / "selftest.json")])]
        bw.log("$ " + " ".join(map(str, command)))
        return subprocess.run([str(c) for c in command], env=env).returncode
    except bw.BuildError as e:
        print(f"run_emulated: error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"run_emulated: error: {' '.join(map(str, e.cmd))} exited with {e.returncode}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
