#!/usr/bin/env bash
# The hash of the sources a torchxc library is built from (csrc/ and setup.py, as they are in the working tree: the
# tracked files and the untracked ones git does not ignore, which is what the device tool copies and what
# tools/build_for_device.sh builds from), run from the repository root. tools/build_for_device.sh stores it beside the library it builds (.prebuilt/SOURCE_HASH)
# and tools/gpu_check.sh refuses a prebuilt library whose hash differs from the checkout's: a stale library would
# run old kernels under the new tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Outside a git checkout (the device machine's copy of the tree may have no .git: it holds exactly those files) every
# file under csrc/ counts; the same list, so the same hash, as long as csrc/ holds no git-ignored files here.
if command -v git >/dev/null 2>&1 && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  tools/checkout_files.sh csrc setup.py
else
  find csrc setup.py -type f -print0
fi | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
