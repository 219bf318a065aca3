#!/usr/bin/env bash
# Builds torchxc with CMake against the installed torch (as a LibTorch user would) and runs the C++ smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PREFIX=$("$PY" -c "import torch; print(torch.utils.cmake_prefix_path)")
BUILD=${CMAKE_BUILD_DIR:-build-cmake}
cmake -S . -B "$BUILD" -DCMAKE_PREFIX_PATH="$PREFIX" -DTORCHXC_BUILD_TESTS=ON ${CMAKE_ARGS:-} > "$BUILD.log" 2>&1 ||
  { cat "$BUILD.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
"$BUILD/torchxc_cpp_test"
