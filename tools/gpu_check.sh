#!/usr/bin/env bash
# One command for a GPU machine: build the CUDA extension, run the whole test suite, run compute-sanitizer
# (memcheck, racecheck) over every CUDA kernel path, and run the benchmarks. Logs and results go to $OUT
# (default: ./gpu-check-out). Uses the python that already has a CUDA build of torch (PYTHON=python3).
#   make gpu-check            or           OUT=/tmp/out tools/gpu_check.sh [build|test|sanitize|bench]...
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(build test sanitize bench)
export PYTHONUNBUFFERED=1
status=0

run() {  # run NAME CMD...: log to $OUT/NAME.log, record the status
  local name=$1; shift
  local start=$(date +%s)
  echo "== $name: $*"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - start ))s (log: $OUT/$name.log)"
  tail -n 25 "$OUT/$name.log"
  [ $rc -eq 0 ] || status=1
  return $rc
}

for step in "${STEPS[@]}"; do
  case $step in
    build)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
      cat "$OUT/gpu.txt"
      if ls .whl/*.whl >/dev/null 2>&1; then  # test-only wheels carried to a machine without internet
        $PY -m pip install -q --no-index --no-deps .whl/*.whl
      fi
      run build env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
        $PY -m pip install -v --no-build-isolation --no-deps --no-index . || exit 1
      (cd /tmp && $PY -c "import torch, torchxc; print('torch', torch.__version__, 'cuda kernels', torchxc.cuda_kernels_built())")
      ;;
    test)
      run test $PY -m pytest tests -q -p no:cacheprovider -x --durations=15
      ;;
    sanitize)
      run memcheck compute-sanitizer --tool memcheck --error-exitcode 1 $PY tools/cuda_paths.py
      run racecheck compute-sanitizer --tool racecheck --error-exitcode 1 $PY tools/cuda_paths.py
      ;;
    bench)
      run bench $PY benchmarks/bench_sparsemax.py --device cuda --out "$OUT"
      ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
exit $status
