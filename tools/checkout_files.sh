#!/usr/bin/env bash
# The files a copy of this checkout holds, NUL-separated: the tracked ones and the untracked ones git does not ignore,
# as they are in the working tree (a deletion not yet committed is left out, though git still lists the file).
# Run from the repository root; arguments limit the list to those paths. Used by tools/source_hash.sh,
# tools/build_for_device.sh and tools/sanitize_check.sh.
set -euo pipefail
git ls-files -z -co --exclude-standard -- "$@" | while IFS= read -r -d '' f; do
  if [ -e "$f" ]; then printf '%s\0' "$f"; fi
done
