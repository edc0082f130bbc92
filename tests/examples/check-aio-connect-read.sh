#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The aio-connect-read example must print byte for byte what the same
# program prints on libnbd, against the same nbdkit pattern server, once
# with stdout a file (fully buffered, as under a pipe) on each transport.
# Usage: check-aio-connect-read.sh EXAMPLE [LIBNBD_REFERENCE]
set -euo pipefail
example=$1
reference=${2:-}
command -v nbdkit >/dev/null || { echo "SKIP: nbdkit not installed"; exit 77; }
command -v hexdump >/dev/null || { echo "SKIP: hexdump not installed (bsdextrautils)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One server thread keeps replies in request order, so both clients print
# the sectors in the same order.
run() { nbdkit -U - --threads=1 pattern size=1M --run "$1 \$unixsocket" > "$2"; }

# What the pattern plugin serves, dumped independently of any client.
for ((i = 0; i < 32; i++)); do
  printf 'sector at offset 0x%x:\n\n' $((i * 512)) >> "$tmp/lines"
done

for t in uring socket; do
  NBDCPP_TRANSPORT=$t run "$example" "$tmp/out-$t"
  grep -c '^sector at offset' "$tmp/out-$t" | grep -qx 32 || { echo "FAIL: $t: expected 32 sectors"; exit 1; }
  if [ -n "$reference" ]; then
    cmp "$tmp/out-$t" "$tmp/ref" 2>/dev/null || {
      [ -f "$tmp/ref" ] || run "$reference" "$tmp/ref"
      cmp "$tmp/out-$t" "$tmp/ref" || { echo "FAIL: $t: output differs from libnbd's"; diff "$tmp/out-$t" "$tmp/ref" | head -20; exit 1; }
    }
  fi
  # The sector lines are printf'd (buffered) while hexdump writes straight
  # to stdout, so under a file they all come last, as with libnbd.
  tail -n 64 "$tmp/out-$t" | cmp - "$tmp/lines" || { echo "FAIL: $t: sector lines"; exit 1; }
  head -n 1 "$tmp/out-$t" | grep -q '^00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 08' || { echo "FAIL: $t: first sector"; exit 1; }
  echo "ok: $t transport matches${reference:+ libnbd}"
done
[ -n "$reference" ] || { echo "SKIP: libnbd-dev not installed, no byte-for-byte cross-check"; exit 77; }
