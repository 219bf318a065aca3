#!/usr/bin/env bash
# The CPU test suite against a build of the kernels with AddressSanitizer and UndefinedBehaviorSanitizer: an
# out-of-bounds read or write, a use after free, a signed overflow, a misaligned load, a bad shift or a float converted
# to an integer type that cannot hold it (NaN included) in csrc/ aborts the test that caused it, with the stack.
# Python and torch are not instrumented, so the sanitizer runtimes are preloaded; leak detection is off (the
# interpreter's own allocations would drown the report).
#
# The checkout (tracked and untracked-but-not-ignored files: the tests run the benchmark scripts too) is copied to
# $SANITIZE_DIR/src (default build/sanitize/src, mtimes kept so ninja rebuilds only what changed) and built in place
# there, so the sanitized library never mixes with the installed one or with python/torchxc/ of this checkout.
# Arguments go to pytest (default: the whole tests/ folder), e.g.
#   tools/sanitize_check.sh tests/test_tree_sampler.py -k bad
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
# absolute (the build and the tests run from the copy); not through realpath, which would leave a venv
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
WORK=${SANITIZE_DIR:-$ROOT/build/sanitize}
CXX_BIN=${CXX:-c++}
ASAN_LIB=$("$CXX_BIN" -print-file-name=libasan.so)
UBSAN_LIB=$("$CXX_BIN" -print-file-name=libubsan.so)
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
  [ -f "$lib" ] || { echo "sanitize_check: $CXX_BIN has no $(basename "$lib") (install the compiler's sanitizer runtimes)"; exit 1; }
done

rm -rf "$WORK/src"
mkdir -p "$WORK/src"
(cd "$ROOT" && tools/checkout_files.sh | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
# the tests find ../shared/data beside the project root: the same folder, seen from the copy
if [ -d "$ROOT/../shared" ] && [ ! -e "$WORK/shared" ]; then ln -s "$(cd "$ROOT/../shared" && pwd)" "$WORK/shared"; fi

echo "== sanitized build (ASan + UBSan, -O1) in $WORK"
(cd "$WORK/src" && SANITIZE=1 FORCE_ONLY_CPU=1 "$PY" setup.py build_ext --inplace --build-temp "$WORK/obj" \
  > "$WORK/build.log" 2>&1) || { tail -40 "$WORK/build.log"; exit 1; }

echo "== tests under the sanitizers"
cd "$WORK/src"
[ $# -gt 0 ] || set -- tests
export LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB${LD_PRELOAD:+:$LD_PRELOAD}"
# halt_on_error / -fno-sanitize-recover: the first report ends the process, so pytest cannot pass over it. Reports go
# to files (pytest would swallow a dying process's stderr, and the tests that run scripts capture theirs), and any
# report fails the check, even one from a subprocess whose failure a test expected.
REPORTS="$WORK/reports"
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:log_path=$REPORTS/asan
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$REPORTS/ubsan
export PYTHONPATH="$WORK/src/python${PYTHONPATH:+:$PYTHONPATH}"
# the tests must import this copy, not an installed torchxc
"$PY" -c "import sys, torchxc; lib = torchxc._C.__file__; print('testing', lib)
sys.exit(0 if lib.startswith('$WORK/src/python/') else 'sanitize_check: imported ' + lib + ', not the sanitized copy')"
status=0
"$PY" -m pytest -q -p no:cacheprovider "$@" || status=$?
if compgen -G "$REPORTS/*" > /dev/null; then
  echo "== sanitizer reports ($REPORTS):"
  cat "$REPORTS"/*
  exit 1
fi
[ "$status" -eq 0 ] && echo "== no sanitizer reports"
exit "$status"
