#!/usr/bin/env bash
# The native core under sanitizers: builds fastprof's extension with AddressSanitizer +
# UndefinedBehaviorSanitizer ("asan") or ThreadSanitizer ("tsan"), stages it with the Python
# package in build/sanitize-<kind>/pkg, and runs the native tests (recorder, sampler and its soak,
# kernel tracer, self-check, host spans; fake GPU libraries included) against it. Any sanitizer report fails
# the run.
#
#   tools/sanitize.sh asan            # or: tsan, or: all
#   FASTPROF_SOAK_SECONDS=10 tools/sanitize.sh tsan   # a shorter sampler soak (default 60 s)
#   tools/sanitize.sh asan -k soak    # extra arguments go to pytest
#
# Needs: a C++17 compiler with the sanitizer runtimes (gcc or clang), cmake, and a Python
# environment with pybind11, numpy and fastprof's test requirements (pip install ".[test]").
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${1:-all}
shift || true
if [ "$kind" = all ]; then
  "$0" asan "$@"
  exec "$0" tsan "$@"
fi

CXX=${CXX:-$(command -v g++ || command -v clang++)}
case "$kind" in
  asan)
    flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
    runtime=$("$CXX" -print-file-name=libasan.so)
    export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_init_order=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    ;;
  tsan)
    flags="-fsanitize=thread"
    runtime=$("$CXX" -print-file-name=libtsan.so)
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
    ;;
  *) echo "usage: tools/sanitize.sh asan|tsan|all [pytest arguments]" >&2; exit 2 ;;
esac
if [ ! -e "$runtime" ] || [ "$runtime" = "$(basename "$runtime")" ]; then
  echo "sanitize.sh: $CXX has no $kind runtime ($runtime); install it (gcc: libasan/libubsan/libtsan)" >&2
  exit 2
fi

build="build/sanitize-$kind"
python -c "import pybind11" 2>/dev/null || { echo "sanitize.sh: pip install pybind11 first" >&2; exit 2; }
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_CXX_FLAGS="$flags -g" -DCMAKE_SHARED_LINKER_FLAGS="$flags" \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python)" >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null

# The package from the source tree, with the sanitized extension in it.
rm -rf "$build/pkg" && mkdir -p "$build/pkg"
cp -r python/fastprof "$build/pkg/fastprof"
find "$build/pkg/fastprof" -name '_core*.so' -delete
cp "$build"/_core*.so "$build/pkg/fastprof/"

export PYTHONPATH="$PWD/$build/pkg"
# The C++ runtime is preloaded with the sanitizer: Python itself does not link it, and without it
# the sanitizer cannot find the real __cxa_throw to intercept (every C++ exception would abort).
export LD_PRELOAD="$runtime $("$CXX" -print-file-name=libstdc++.so)"
# The sampler soak runs for a minute under each sanitizer unless told otherwise.
export FASTPROF_SOAK_SECONDS="${FASTPROF_SOAK_SECONDS:-60}"
# Which sanitizer the tests run under (ThreadSanitizer keeps state for every thread that ever ran
# and AddressSanitizer quarantines freed memory, so the soak's flat-memory check is left to the
# plain run).
export FASTPROF_SANITIZER="$kind"
# Refuse to run the tests against any other copy of fastprof (an installed or editable one).
python - "$PWD/$build/pkg" <<'EOF'
import sys
from pathlib import Path
from fastprof import _native
where = Path(_native._core.__file__).resolve()
if not where.is_relative_to(Path(sys.argv[1])):
    sys.exit(f"sanitize.sh: fastprof's extension was loaded from {where}, not the sanitized build: "
             "uninstall the editable install (pip uninstall fastprof) or run from a clean environment")
EOF

tests=(tests/unit/test_recorder.py tests/unit/test_clock.py tests/unit/test_sampler.py
       tests/unit/test_sampler_gpm.py tests/unit/test_sampler_soak.py tests/unit/test_kernel_trace.py
       tests/unit/test_selftest.py tests/unit/test_benchmark.py tests/unit/test_host_spans.py
       tests/unit/test_allocator_stalls.py)
echo "sanitize.sh: $kind build, running the native tests"
python -m pytest -q -p no:cacheprovider -m "not gpu" "${tests[@]}" "$@"
