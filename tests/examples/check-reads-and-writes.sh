#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# reads-and-writes does 3000 synchronous commands on a file served by
# `nbdkit file`; it checks every read against what it wrote itself. Here:
# it succeeds, its writes reached the file, and the size is unchanged.
# Usage: check-reads-and-writes.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit
for t in "${transports[@]}"; do
  truncate -s 1M "$tmp/disk-$t"
  NBDCPP_TRANSPORT=$t bounded nbdkit -U - file "$tmp/disk-$t" --run "$example \$unixsocket" > "$tmp/out-$t"
  [ ! -s "$tmp/out-$t" ] || fail "$t: unexpected output"
  [ "$(stat -c %s "$tmp/disk-$t")" = 1048576 ] || fail "$t: the file changed size"
  nonzero=$(tr -d '\0' < "$tmp/disk-$t" | wc -c)
  # 2000 writes of 512 bytes all over 1 MiB leave a good part of it written.
  [ "$nonzero" -gt 200000 ] || fail "$t: only $nonzero non-zero bytes: the writes did not land"
  echo "ok: $t: $nonzero of 1048576 bytes written"
done
