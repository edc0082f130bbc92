#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# open-qcow2 starts qemu-nbd through systemd socket activation on a qcow2
# image made by qemu-img, and prints its first sector as `hexdump -C`
# prints the raw image's. Usage: check-open-qcow2.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need qemu-img qemu-utils
need qemu-nbd qemu-utils
need hexdump bsdextrautils
head -c 512 /dev/urandom > "$tmp/raw"
truncate -s 1M "$tmp/raw"
qemu-img convert -f raw -O qcow2 "$tmp/raw" "$tmp/disk.qcow2"
head -c 512 "$tmp/raw" | hexdump -C > "$tmp/expected"
for t in "${transports[@]}"; do
  NBDCPP_TRANSPORT=$t bounded "$example" "$tmp/disk.qcow2" > "$tmp/out-$t"
  cmp "$tmp/out-$t" "$tmp/expected" || { diff "$tmp/out-$t" "$tmp/expected" | head; fail "$t: sector differs"; }
  echo "ok: $t: $(head -n 1 "$tmp/out-$t")"
done
