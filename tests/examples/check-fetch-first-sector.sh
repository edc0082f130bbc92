#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# fetch-first-sector prints the first sector of a file served by
# `nbdkit file` exactly as `hexdump -C` prints it read straight from the
# file. Usage: check-fetch-first-sector.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit
need hexdump bsdextrautils
head -c 512 /dev/urandom > "$tmp/disk"
printf 'nbdcpp' | dd of="$tmp/disk" bs=1 seek=3 conv=notrunc status=none
truncate -s 1M "$tmp/disk"
head -c 512 "$tmp/disk" | hexdump -C > "$tmp/expected"
for t in "${transports[@]}"; do
  NBDCPP_TRANSPORT=$t bounded nbdkit -U - -r file "$tmp/disk" --run "$example \$unixsocket" > "$tmp/out-$t"
  cmp "$tmp/out-$t" "$tmp/expected" || { diff "$tmp/out-$t" "$tmp/expected" | head; fail "$t: sector differs"; }
  echo "ok: $t: $(head -n 1 "$tmp/out-$t")"
done
