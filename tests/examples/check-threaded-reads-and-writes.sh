#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# threaded-reads-and-writes: 8 threads, each with its own handle and 64
# commands in flight, against nbdkit's memory plugin (multi-conn). Every
# thread must finish and reach 64 in flight. Usage: check-threaded-reads-and-writes.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit
for t in "${transports[@]}"; do
  NBDCPP_TRANSPORT=$t bounded nbdkit -U - memory 100M --run "$example \$unixsocket" > "$tmp/out-$t"
  for i in 0 1 2 3 4 5 6 7; do
    grep -qx "thread $i: finished OK" "$tmp/out-$t" || fail "$t: thread $i did not finish"
  done
  last=$(tail -n 1 "$tmp/out-$t")
  [ "$last" = "most requests seen in flight = 64 (per thread) vs MAX_IN_FLIGHT = 64" ] || fail "$t: got: $last"
  echo "ok: $t: $last"
done
