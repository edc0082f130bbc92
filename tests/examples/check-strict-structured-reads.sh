#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# strict-structured-reads issues 1000 structured reads at once and checks
# that the server's chunks cover each exactly once. Against nbdkit (data
# chunks) and qemu-nbd on a sparse image (hole chunks too) every read must
# be compliant, and the data and hole bytes must add up to the bytes read.
# Usage: check-strict-structured-reads.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit

field() { sed -n "s/^ $1: *//p" "$2"; }
check() { # LABEL OUTPUT
  [ "$(field reads "$2")" = 1000 ] || { cat "$2"; fail "$1: not 1000 reads"; }
  [ "$(field compliant "$2")" = 1000 ] || { cat "$2"; fail "$1: not every read was compliant"; }
  local data hole total
  data=$(field 'data bytes' "$2"); hole=$(field 'hole bytes' "$2"); total=$(field 'bytes read' "$2")
  [ $((data + hole)) = "$total" ] || { cat "$2"; fail "$1: chunks do not add up"; }
  echo "ok: $1: $(tr -s ' \n' ' ' < "$2")"
}

for t in "${transports[@]}"; do
  NBDCPP_TRANSPORT=$t bounded nbdkit -U - memory 3M --run "$example \$unixsocket" > "$tmp/out"
  check "$t: nbdkit" "$tmp/out"
done

command -v qemu-nbd >/dev/null || skip "qemu-nbd not installed (qemu-utils): hole chunks not checked (nbdkit passed)"
head -c 512K /dev/urandom > "$tmp/disk"
truncate -s 2M "$tmp/disk"
head -c 256K /dev/urandom >> "$tmp/disk"
truncate -s 3M "$tmp/disk"
for t in "${transports[@]}"; do
  sock=$tmp/q-$t.sock
  # --fork: returns once the server is listening (the socket file exists
  # a moment before that). It exits after the example's one connection.
  qemu-nbd -f raw -r -k "$sock" --fork --pid-file="$tmp/q-$t.pid" "$tmp/disk"
  cleanup_hooks+=("pkill -F '$tmp/q-$t.pid' -x qemu-nbd")
  NBDCPP_TRANSPORT=$t bounded "$example" "$sock" > "$tmp/out"
  [ "$(field 'hole chunks' "$tmp/out")" -gt 0 ] || { cat "$tmp/out"; fail "$t: qemu-nbd sent no hole chunks"; }
  check "$t: qemu-nbd" "$tmp/out"
done
