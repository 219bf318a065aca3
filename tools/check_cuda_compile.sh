#!/usr/bin/env bash
# Compiles every CUDA source (compile only, nothing is linked or run) against the installed torch headers, so that
# CUDA code that does not compile fails CI on machines without a GPU. Works with a CPU-only torch wheel: its one
# missing generated header (c10/cuda/impl/cuda_cmake_macros.h) comes from a shim include directory.
#   PYTHON=python  CUDA_ARCH=90  tools/check_cuda_compile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
ARCH=${CUDA_ARCH:-90}
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || { echo "check_cuda_compile: nvcc not found" >&2; exit 1; }

read -r -a TORCH_INC < <("$PY" -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")
PY_INC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
ABI=$("$PY" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/shim/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$WORK/shim/c10/cuda/impl/cuda_cmake_macros.h"

# Same defines as torch.utils.cpp_extension uses for nvcc.
FLAGS=(-c -std=c++20 -O1 "-gencode=arch=compute_${ARCH},code=sm_${ARCH}" --expt-relaxed-constexpr
       -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
       -D__CUDA_NO_HALF2_OPERATORS__ -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H
       -D_GLIBCXX_USE_CXX11_ABI="$ABI" -DTORCHXC_WITH_CUDA=1 -Xcompiler -fPIC -Werror=all-warnings
       "${TORCH_INC[@]}" "-I$PY_INC" "-I$WORK/shim")

status=0
for f in ${CU_FILES:-csrc/cuda/*.cu}; do
  start=$(date +%s)
  if "$NVCC" "${FLAGS[@]}" "$f" -o "$WORK/$(basename "$f").o" ${NVCC_EXTRA:-}; then
    echo "check_cuda_compile: ok   $f ($(( $(date +%s) - start ))s)"
  else
    echo "check_cuda_compile: FAIL $f" >&2
    status=1
  fi
done
exit $status
