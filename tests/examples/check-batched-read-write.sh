#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# batched-read-write queues a 2 MiB read and a 2 MiB write (larger than the
# socket buffers) against nbdkit's noparallel filter, which serves one
# command at a time: it must print "finished OK" rather than deadlock.
# Usage: check-batched-read-write.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit
for t in "${transports[@]}"; do
  for size in 2M 8M; do
    out=$(NBDCPP_TRANSPORT=$t bounded nbdkit -U - --filter=noparallel memory "$size" --run "$example \$unixsocket")
    [ "$out" = "finished OK" ] || fail "$t: $size: got: $out"
  done
  echo "ok: $t: finished OK"
done
