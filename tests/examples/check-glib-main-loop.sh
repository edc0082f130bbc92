#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# glib-main-loop copies one nbdkit to another from a GSource per handle:
# run as libnbd's (pattern -> memory) it must succeed; run on two files
# (`nbdkit file`) the destination must equal the source afterwards.
# Usage: check-glib-main-loop.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit
head -c 3M /dev/urandom > "$tmp/src"
truncate -s 10M "$tmp/src"
head -c 1M /dev/urandom >> "$tmp/src"
truncate -s 11534000 "$tmp/src"   # the last buffer is a partial one
for t in "${transports[@]}"; do
  NBDCPP_TRANSPORT=$t bounded "$example" || fail "$t: pattern -> memory copy failed"
  head -c 11534336 /dev/urandom > "$tmp/dst"
  NBDCPP_TRANSPORT=$t bounded "$example" "$tmp/src" "$tmp/dst" || fail "$t: file copy failed"
  cmp -n 11534000 "$tmp/src" "$tmp/dst" || fail "$t: the destination differs from the source"
  echo "ok: $t: copied 11534000 bytes through the glib main loop"
done
