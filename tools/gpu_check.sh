#!/usr/bin/env bash
# One command for a GPU machine: build the CUDA extension, run the CUDA test cases, the benchmarks on CUDA,
# compute-sanitizer (memcheck, racecheck) over every CUDA kernel path, the split path on every row length and its
# timing against the register paths, then the rest of the test suite with this build.
#   make gpu-check   or   OUT=/tmp/out tools/gpu_check.sh [build|test|bench|sanitize|split-paths|test-rest]...
# Logs and benchmark results are written to $WORK (default a new mktemp folder under /tmp, outside $OUT: the device tool
# brings back at most 8 files from $OUT) and packed into $OUT/gpu_check.tgz (written to a temporary name, then
# renamed) after every step, with a one-line-per-step $OUT/summary.txt, so that a run cut short still returns what it
# did ($OUT defaults to ./gpu-check-out). Each step has a time limit in seconds (T_BUILD, T_TEST_CUDA, T_TEST_REST,
# T_HOST_OVERHEAD, T_BENCH_SPARSEMAX, T_BENCH_ZLPR, T_PROFILE, T_BENCH_TREE, T_BENCH_FUSED, T_MEMCHECK, T_RACECHECK,
# T_SPLIT_PATHS, T_SPLIT_MEMCHECK, T_COOP_PATHS, T_COOP_MEMCHECK, T_REGISTER_PATHS, T_TUNE), so that one slow step
# cannot starve the rest, and every step ends by
# DEADLINE seconds after the start (default 560, inside the device tool's 600-s command limit; 2026-11-29 the whole
# run took 524 s with the last step, the rest of the tests, at 173 of the 179 s it had left): a step is cut to the
# time left and skipped when less than 15 s are left. On an H200 (2026-11-29) the steps took: CUDA test cases 53 s
# (8 workers), the rest of the tests 173 s, benchmarks 143 s (host time per call, tools/host_overhead.py, first),
# memcheck 33 s, racecheck 61 s, split-paths 49 s.
# PYTHON: the python that has a CUDA build of torch (default python3). If .prebuilt/ (which tools/build_for_device.sh
# fills without a GPU) holds a CUDA-enabled _C*.so built from these sources (tools/source_hash.sh) against the same
# torch, the build step copies it into python/torchxc/ (with its hash) and every step uses it through PYTHONPATH
# instead of compiling (minutes of device time); a library there from other sources (a warm machine keeps ignored
# files between calls) is removed first. .whl/ (filled by tools/build_for_device.sh too) holds the wheels of test and
# benchmark dependencies the machine lacks.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-check-out}
# a new folder per run: a warm machine keeps /tmp between calls, and an old run's logs would pass for this one's
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-work.XXXXXX")}
DEADLINE=${DEADLINE:-560}
mkdir -p "$OUT" "$WORK/results"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(build test bench sanitize split-paths test-rest)
export PYTHONUNBUFFERED=1
JOBS=${JOBS:-$(( $(nproc) > 8 ? 8 : $(nproc) ))}
# pytest: with pytest-xdist (JOBS workers) where installed, each worker limited to nproc / JOBS threads (unlimited,
# 12 workers of 16 threads each on 16 cores ran the CPU tests many times slower); -v prints every failure as it
# happens, so a run stopped at its time limit still names its failures.
PYTEST=(env)
PYTEST_ARGS=(-p no:cacheprovider -v -rfE --durations=15)
if $PY -c "import xdist" 2>/dev/null; then
  PYTEST=(env OMP_NUM_THREADS="$(( $(nproc) / JOBS > 2 ? $(nproc) / JOBS : 2 ))")
  PYTEST_ARGS+=(-n "$JOBS")
fi
PYTEST+=($PY -m pytest tests)
status=0
T0=$(date +%s)

pack() { tar czf "$OUT/gpu_check.tgz.part" -C "$WORK" . 2>/dev/null && mv -f "$OUT/gpu_check.tgz.part" "$OUT/gpu_check.tgz"; }
note() { echo "$*" | tee -a "$OUT/summary.txt"; }
note "gpu_check: steps ${STEPS[*]} at $(date -u +%FT%TZ), deadline ${DEADLINE}s"
pack  # something comes back even if the first command hangs

# The library in python/torchxc/ is used only with the hash of the sources it was built from (SOURCE_HASH beside it).
SRC_HASH=$(tools/source_hash.sh)
# no hash, no prebuilt library (an empty hash would equal a missing SOURCE_HASH file)
[ -n "$SRC_HASH" ] || { note "build: tools/source_hash.sh failed; not using any prebuilt library"; SRC_HASH=unavailable; }
local_lib_ok() {
  ls python/torchxc/_C*.so >/dev/null 2>&1 && [ "$(cat python/torchxc/SOURCE_HASH 2>/dev/null)" = "$SRC_HASH" ]
}
if ls python/torchxc/_C*.so >/dev/null 2>&1 && ! local_lib_ok; then
  rm -f python/torchxc/_C*.so python/torchxc/SOURCE_HASH
  note "build: removed python/torchxc/_C*.so, built from other sources than these"
fi
ORIG_PYTHONPATH=${PYTHONPATH:-}  # e.g. wheels installed with --target, kept behind python/
use_local_lib() { export PYTHONPATH=$PWD/python${ORIG_PYTHONPATH:+:$ORIG_PYTHONPATH}; }
drop_local_lib() { if [ -n "$ORIG_PYTHONPATH" ]; then export PYTHONPATH=$ORIG_PYTHONPATH; else unset PYTHONPATH; fi; }
local_lib_ok && use_local_lib  # also for a rerun of single steps (tools/gpu_check.sh test)

run() {  # run NAME LIMIT CMD...: log to $WORK/NAME.log, stop it after LIMIT seconds, record the status
  local name=$1 limit=$2; shift 2
  local start=$(date +%s)
  local left=$(( DEADLINE - (start - T0) - 10 ))
  if [ $left -lt 15 ]; then
    echo "$name: skipped (${DEADLINE}-s deadline reached at +$(( start - T0 ))s)" | tee -a "$OUT/summary.txt"
    status=1
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s, at +$(( start - T0 ))s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  local line="$name: exit $rc after $(( $(date +%s) - start ))s$( { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && echo ' (time limit)')"
  echo "== $line"
  echo "$line" >> "$OUT/summary.txt"
  tail -n "${TAIL:-15}" "$WORK/$name.log"
  [ $rc -eq 0 ] || status=1
  pack
  return $rc
}

cuda_build_ok() {
  (cd /tmp && timeout 120 $PY -c "import torch, torchxc; assert torchxc.cuda_kernels_built() and torch.cuda.is_available()
print('torch', torch.__version__, '| torchxc from', torchxc.__file__, '| CUDA kernels built |', torch.cuda.get_device_name())")
}

for step in "${STEPS[@]}"; do
  case $step in
    build)
      { timeout 60 nvidia-smi; timeout 120 $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
        nproc; uname -r; } > "$WORK/machine.txt" 2>&1
      head -n 12 "$WORK/machine.txt"
      if ls .whl/*.whl >/dev/null 2>&1; then  # test/benchmark-only wheels carried to a machine without internet
        TAIL=3 run wheels 60 $PY -m pip install --no-index --no-deps .whl/*.whl
      fi
      if ! local_lib_ok; then
        if ! ls .prebuilt/_C*.so >/dev/null 2>&1; then
          note "build: no .prebuilt/ library (run make device-prep here and carry .prebuilt); compiling here"
        elif [ "$(cat .prebuilt/SOURCE_HASH 2>/dev/null)" = "$SRC_HASH" ]; then
          cp -f .prebuilt/_C*.so python/torchxc/ && echo "$SRC_HASH" > python/torchxc/SOURCE_HASH
        else  # built from other sources (make device-prep after the last change to csrc/ or setup.py): compile here
          note "build: .prebuilt/ is stale or has no SOURCE_HASH (run make device-prep); compiling here"
        fi
      fi
      if local_lib_ok; then
        use_local_lib
        if cuda_build_ok > "$WORK/prebuilt_check.log" 2>&1; then
          note "build: using the prebuilt $(ls python/torchxc/_C*.so) (torch $(cat .prebuilt/TORCH_VERSION 2>/dev/null || echo '?') at build time)"
        else
          note "build: the prebuilt library was refused (prebuilt_check.log: $(tail -n 1 "$WORK/prebuilt_check.log"))"
          rm -f python/torchxc/_C*.so python/torchxc/SOURCE_HASH
          drop_local_lib  # the compiled library below goes to site-packages
        fi
      fi
      if ! ls python/torchxc/_C*.so >/dev/null 2>&1; then
        run build "${T_BUILD:-400}" env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
          MAX_JOBS="${MAX_JOBS:-$(nproc)}" $PY -m pip install -v --no-build-isolation --no-deps --no-index . || exit 1
        if ! cuda_build_ok > "$WORK/build_check.log" 2>&1; then
          echo "build: built, but torchxc has no CUDA kernels or no GPU (build_check.log)" | tee -a "$OUT/summary.txt"
          pack
          exit 1
        fi
      fi
      ;;
    test)  # the CUDA cases (their test ids hold "cuda")
      run test_cuda "${T_TEST_CUDA:-200}" "${PYTEST[@]}" "${PYTEST_ARGS[@]}" -k cuda
      ;;
    test-rest)  # the rest of the suite, with this CUDA build
      run test_rest "${T_TEST_REST:-240}" "${PYTEST[@]}" "${PYTEST_ARGS[@]}" -k "not cuda"
      ;;
    bench)
      R=$WORK/results
      # the torch.compile'd baselines compile anew for every case (minutes of Triton compiles): left out here, the
      # device minutes are for the kernels (TORCHXC_BENCH_COMPILED=1 make gpu-check to include them)
      export TORCHXC_BENCH_COMPILED=${TORCHXC_BENCH_COMPILED:-0}
      TAIL=12 run host_overhead "${T_HOST_OVERHEAD:-60}" $PY tools/host_overhead.py --device cuda
      run bench_sparsemax "${T_BENCH_SPARSEMAX:-120}" $PY benchmarks/bench_sparsemax.py --device cuda \
        --budget "${BENCH_BUDGET:-0.2}" --out "$R"
      run bench_zlpr "${T_BENCH_ZLPR:-120}" $PY benchmarks/bench_zlpr.py --device cuda \
        --budget "${BENCH_BUDGET:-0.2}" --out "$R"
      TAIL=60 run profile_kernels "${T_PROFILE:-90}" $PY tools/profile_kernels.py --device cuda --out "$R"
      run bench_tree_sampler "${T_BENCH_TREE:-90}" $PY benchmarks/bench_tree_sampler.py --device cuda \
        --budget "${BENCH_BUDGET_TREE:-0.5}" --out "$R"
      run bench_fused_linear_zlpr "${T_BENCH_FUSED:-90}" $PY benchmarks/bench_fused_linear_zlpr.py --device cuda \
        --out "$R"
      ;;
    split-paths)  # the split path on every row length (it normally serves rows > 32768 only), the same for the
      # cooperative chunks (ZLPR, sparsemax; csrc/cuda/coop.cuh) and the register rows, then the paths' timings
      NO_COOP=TORCHXC_CUDA_COOP_ABOVE=4611686018427387904
      TAIL=4 run split_paths "${T_SPLIT_PATHS:-120}" env TORCHXC_CUDA_SPLIT_ABOVE=0 $NO_COOP $PY tools/cuda_paths.py
      TAIL=4 run split_paths_memcheck "${T_SPLIT_MEMCHECK:-120}" env TORCHXC_CUDA_SPLIT_ABOVE=0 $NO_COOP \
        PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 $PY tools/cuda_paths.py
      TAIL=4 run coop_paths "${T_COOP_PATHS:-60}" env TORCHXC_CUDA_COOP_ABOVE=0 $PY tools/cuda_paths.py \
        --ops sparsemax,zlpr
      TAIL=4 run coop_paths_memcheck "${T_COOP_MEMCHECK:-90}" env TORCHXC_CUDA_COOP_ABOVE=0 \
        PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 $PY tools/cuda_paths.py \
        --ops sparsemax,zlpr
      TAIL=4 run register_paths "${T_REGISTER_PATHS:-60}" env $NO_COOP $PY tools/cuda_paths.py --ops zlpr \
        --sizes 5000,20000,32768
      TAIL=50 run tune_split_threshold "${T_TUNE:-120}" $PY tools/tune_split_threshold.py --out "$WORK/results"
      ;;
    sanitize)  # one cudaMalloc per tensor, so that an access past a tensor's end is outside any allocation
      TAIL=4 run memcheck "${T_MEMCHECK:-150}" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
        compute-sanitizer --tool memcheck --error-exitcode 1 $PY tools/cuda_paths.py
      TAIL=4 run racecheck "${T_RACECHECK:-150}" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
        compute-sanitizer --tool racecheck --error-exitcode 1 $PY tools/cuda_paths.py --sizes 1500,5000,32768,40000,100003
      ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
echo "total: $(( $(date +%s) - T0 ))s, status $status" | tee -a "$OUT/summary.txt"
pack
exit $status
