#!/usr/bin/env bash
# Prepares a run of tools/gpu_check.sh on the lent GPU machine (no internet there, minutes of device time), here,
# without a GPU: builds the CUDA extension against the machine's torch in a copy of this checkout and puts the
# library into .prebuilt/ (gpu_check.sh uses it instead of compiling for minutes), and puts the wheels of the test
# and benchmark dependencies the machine lacks into .whl/. Both folders are git-ignored: name them in the device
# call's `carry`, e.g. `make gpu-check` with carry [".prebuilt", ".whl"].
#   tools/build_for_device.sh            (DEVICE_TORCH=2.11.0, DEVICE_PY=3.12, CUDA_HOME=/usr/local/cuda)
# DEVICE_TORCH / DEVICE_PY: the machine's torch and Python (KINDS.md of the device tool lists them); the torch wheel
# comes from the package index (a CUDA build), the build runs with this machine's nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TORCH_VERSION=${DEVICE_TORCH:-2.11.0}
PYV=${DEVICE_PY:-3.12}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH=$CUDA_HOME/bin:$PATH
WORKDIR=$(mktemp -d)
trap 'rm -rf "$WORKDIR"' EXIT
PYBIN=""
for candidate in "python$PYV" python3; do  # the first that runs (a pyenv shim can exist for an inactive version)
  if "$candidate" -c "import sys" >/dev/null 2>&1; then PYBIN=$(command -v "$candidate"); break; fi
done
[ -n "$PYBIN" ] || { echo "build_for_device: no working python$PYV or python3" >&2; exit 1; }
echo "== venv with torch $TORCH_VERSION ($PYBIN; the library is built for the limited API, one file for every Python)"
"$PYBIN" -m venv "$WORKDIR/venv"
"$WORKDIR/venv/bin/pip" install -q "torch==$TORCH_VERSION" setuptools wheel ninja numpy
"$WORKDIR/venv/bin/python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
echo "== build (FORCE_CUDA=1, sm_90) in a copy of the checkout"
mkdir -p "$WORKDIR/src"
# the files the device gets (tracked, and untracked ones git does not ignore), as they are now; their hash taken with
# the copy, so that an edit during the build makes the library stale instead of labelling it with the new sources
HASH=$(tools/source_hash.sh)
tools/checkout_files.sh | tar --null -T - -cf - | tar -x -C "$WORKDIR/src"
(cd "$WORKDIR/src" && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
  "$WORKDIR/venv/bin/python" setup.py -q build_ext --inplace)
mkdir -p "$ROOT/.prebuilt"
rm -f "$ROOT/.prebuilt/SOURCE_HASH" "$ROOT"/.prebuilt/_C*.so  # no moment where an old hash labels a new library
cp "$WORKDIR"/src/python/torchxc/_C*.so "$ROOT/.prebuilt/"
echo "$HASH" > "$ROOT/.prebuilt/SOURCE_HASH"  # the sources it was built from
"$WORKDIR/venv/bin/python" -c "import torch; print(torch.__version__)" > "$ROOT/.prebuilt/TORCH_VERSION"
echo "== wheels of liac-arff and entmax (pure Python) into .whl/"
mkdir -p "$ROOT/.whl"
"$WORKDIR/venv/bin/pip" wheel -q --no-deps -w "$ROOT/.whl" liac-arff==2.5.0 entmax==1.3
ls -la "$ROOT/.prebuilt" "$ROOT/.whl"
