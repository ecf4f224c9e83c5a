"""The fake GPU libraries of tests/fakes/: what each one is built from, and how to build it.

The tests build them with the C compiler (`CC`, else `cc`, else `gcc`) on first use. Where no
compiler is at hand (a cluster node testing an installed wheel), build them beforehand, anywhere:

    python tests/fake_libs.py OUT_DIR [--cc "COMPILER [ARGS...]"]

and point the tests at them with ``FASTPROF_TEST_FAKES_DIR=OUT_DIR``. Each library is written with
a ``.sha256`` beside it (the digest of its source and flags), so the tests refuse a prebuilt copy
that is older than its source. ``tools/build_wheels.py --test-fakes`` does this with zig.

Standard library only: the wheel build script loads this file too.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

FAKES = Path(__file__).resolve().parent / "fakes"

# library file name -> (source in tests/fakes/, extra compiler flags)
LIBRARIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "libfakegpu.so": ("fake_gpu.c", ()),
    "libfakegpu_nomodules.so": ("fake_gpu.c", ("-DFAKE_GPU_NO_MODULES",)),
    "libfakenvml.so": ("fake_nvml.c", ()),
    "libfakenvml_nogpm.so": ("fake_nvml.c", ("-DFAKE_NVML_NO_GPM",)),
    "libfakeamdsmi.so": ("fake_amdsmi.c", ()),
    "libfakecupti.so": ("fake_cupti.c", ()),
    "libfakecupti_nots.so": ("fake_cupti.c", ("-DFAKE_CUPTI_NO_TS_CALLBACK",)),
}

FLAGS = ("-shared", "-fPIC", "-O1", "-Wall")
LIBS = ("-lpthread",)
PREBUILT_ENV = "FASTPROF_TEST_FAKES_DIR"


def digest(name: str) -> str:
    """What a built copy of `name` must have been built from: its source text and flags."""
    source, extra = LIBRARIES[name]
    h = hashlib.sha256((FAKES / source).read_bytes())
    h.update(" ".join((*FLAGS, *extra, *LIBS)).encode())
    return h.hexdigest()


def default_compiler() -> list[str] | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    return shlex.split(cc) if cc else None


def build(name: str, out_dir: Path, cc: list[str]) -> Path:
    """Compile the fake `name` into out_dir with the compiler command `cc`; write its digest beside it."""
    source, extra = LIBRARIES[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / name
    subprocess.run([*cc, *FLAGS, *extra, "-o", str(out), str(FAKES / source), *LIBS], check=True)
    out.with_name(name + ".sha256").write_text(digest(name) + "\n")
    return out


def prebuilt(name: str, directory: Path) -> Path:
    """The copy of `name` in `directory`, checked against its source; ValueError says what is wrong."""
    path = directory / name
    stamp = path.with_name(name + ".sha256")
    if not path.is_file() or not stamp.is_file():
        raise ValueError(f"{PREBUILT_ENV}={directory} has no {name} (with its .sha256): build the fakes with "
                         f"`python tests/fake_libs.py {directory}` or unset {PREBUILT_ENV}")
    if stamp.read_text().strip() != digest(name):
        raise ValueError(f"{path} was built from another version of tests/fakes/{LIBRARIES[name][0]}: rebuild "
                         f"with `python tests/fake_libs.py {directory}`")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fake_libs.py", description="Build the fake GPU libraries of the tests.")
    parser.add_argument("out_dir", type=Path, help="directory to write the libraries to")
    parser.add_argument("--cc", help="C compiler command line (default: $CC, else cc, else gcc)")
    args = parser.parse_args(argv)
    cc = shlex.split(args.cc) if args.cc else default_compiler()
    if not cc:
        parser.error("no C compiler: pass --cc or set CC")
    for name in LIBRARIES:
        print(build(name, args.out_dir, cc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
