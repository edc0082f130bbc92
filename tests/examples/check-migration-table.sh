#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# docs/migrating-from-libnbd.md must have a table row for every function
# the installed libnbd.h declares, so a libnbd user finds each call.
# Usage: check-migration-table.sh MIGRATING_MD [LIBNBD_H]
set -euo pipefail
doc=$1
header=${2:-/usr/include/libnbd.h}
[ -f "$header" ] || { echo "SKIP: $header not found (Debian: libnbd-dev)"; exit 77; }
[ -f "$doc" ] || { echo "FAIL: $doc not found"; exit 1; }

# Every `extern ... nbd_NAME (...);` declaration (they span lines).
calls=$(tr '\n' ' ' < "$header" | grep -oE 'extern [^;]*' |
        grep -oE '\bnbd_[a-z0-9_]+ *\(' | tr -d ' (' | sort -u)
[ -n "$calls" ] || { echo "FAIL: no nbd_* declarations found in $header"; exit 1; }

# A table row names the call as its first cell: | `nbd_NAME` | ...
rows=$(grep -oE '^\| *`nbd_[a-z0-9_]+`' "$doc" | grep -oE 'nbd_[a-z0-9_]+' | sort -u)
missing=$(comm -23 <(echo "$calls") <(echo "$rows"))
if [ -n "$missing" ]; then
  echo "FAIL: calls in $header without a row in $doc:"
  echo "$missing"
  exit 1
fi
echo "ok: all $(echo "$calls" | wc -l) calls in $header have a row in $(basename "$doc")"
