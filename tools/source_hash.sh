#!/usr/bin/env bash
# The hash of the sources a torchxc library is built from (csrc/ and setup.py, as they are in the working tree: the
# tracked files and the untracked ones git does not ignore, which is what the device tool copies and what
# tools/build_for_device.sh builds from), run from the repository root. tools/build_for_device.sh stores it beside the library it builds (.prebuilt/SOURCE_HASH)
# and tools/gpu_check.sh refuses a prebuilt library whose hash differs from the checkout's: a stale library would
# run old kernels under the new tests.
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files -z -co --exclude-standard -- csrc setup.py | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
