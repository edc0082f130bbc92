#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# server-flags prints every can_* / is_* answer, the canonical name and
# the description; nbdkit is configured three ways (a plain memory disk, a
# read-only eval plugin that turns most features off, a writable one with
# emulated FUA and cache) and each answer must be what those settings make
# nbdkit advertise. With libnbd-dev installed the same program written
# against libnbd must print the same.
# Usage: check-server-flags.sh EXAMPLE [LIBNBD_REFERENCE]
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
reference=${2:-}
need nbdkit nbdkit
zeroes='dd if=/dev/zero count=$3 iflag=count_bytes status=none'

configs=(
  "memory 1M"
  "-r --filter=exportname eval get_size='echo 1M' pread='$zeroes' is_rotational='exit 0'
     can_flush='exit 3' can_cache='echo none' can_multi_conn='exit 3' can_fua='echo none'
     exportdesc=fixed:'my disk' default-export=disk1"
  "eval get_size='echo 1M' pread='$zeroes' pwrite='cat >/dev/null' can_write='exit 0'
     can_trim='exit 0' trim='exit 0' can_fast_zero='exit 3' can_cache='echo native' cache='exit 0'
     can_fua='echo emulate' flush='exit 0'"
)

expect() {
  local v=("$@") names=(can_cache can_df can_flush can_fua can_multi_conn can_trim can_zero
                        can_fast_zero is_read_only is_rotational) i
  for i in "${!names[@]}"; do echo "nbd_${names[$i]} = ${v[$i]}"; done
}
{ expect true true true true true true true true false false
  echo 'nbd_get_canonical_export_name = ""'
  echo 'nbd_get_export_description = (not sent by the server)'; } > "$tmp/expected-0"
{ expect false true false false false false false false true true
  echo 'nbd_get_canonical_export_name = "disk1"'
  echo 'nbd_get_export_description = "my disk"'; } > "$tmp/expected-1"
# nbdkit emulates zeroing with writes whenever the export is writable.
{ expect true true true true false true true false false false
  echo 'nbd_get_canonical_export_name = ""'
  echo 'nbd_get_export_description = (not sent by the server)'; } > "$tmp/expected-2"

run() { eval "bounded nbdkit -U - ${2//$'\n'/ } --run '$1 \$unixsocket'" > "$3"; }

for i in "${!configs[@]}"; do
  for t in "${transports[@]}"; do
    NBDCPP_TRANSPORT=$t run "$example" "${configs[$i]}" "$tmp/out-$i-$t"
    cmp -s "$tmp/out-$i-$t" "$tmp/expected-$i" || {
      diff "$tmp/out-$i-$t" "$tmp/expected-$i"; fail "$t: config $i: not what nbdkit advertises"; }
  done
  if [ -n "$reference" ]; then
    run "$reference" "${configs[$i]}" "$tmp/ref-$i"
    cmp -s "$tmp/out-$i-uring" "$tmp/ref-$i" || {
      diff "$tmp/out-$i-uring" "$tmp/ref-$i"; fail "config $i: output differs from libnbd's"; }
  fi
  echo "ok: config $i: $(tr '\n' ' ' < "$tmp/expected-$i" | sed 's/nbd_//g; s/ = /=/g')"
done
[ -n "$reference" ] || skip "libnbd-dev not installed, no cross-check against libnbd (the nbdkit checks passed)"
echo "ok: every answer matches libnbd's"
