#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# copy SRC_URI DST_URI between two `nbdkit file` servers: afterwards the
# destination file equals the source byte for byte. The source has data,
# holes and a size that is no multiple of the request size; the
# destination starts out as random bytes, so the holes must really be
# zeroed. Three ways: with block status and zero commands, with a
# destination that cannot zero (nozero filter: zeroes are written), and
# with a source without block status (noextents: all data).
# Usage: check-copy.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit
size=41000000
head -c 5M /dev/urandom > "$tmp/src"
truncate -s 20M "$tmp/src"
head -c 3M /dev/urandom | dd of="$tmp/src" bs=1M seek=30 conv=notrunc status=none
truncate -s $size "$tmp/src"

n=0
copy() { # TRANSPORT SRC_FILTERS DST_FILTERS
  n=$((n + 1))
  local s=$tmp/s$n.sock d=$tmp/d$n.sock
  head -c $size /dev/urandom > "$tmp/dst"
  NBDCPP_TRANSPORT=$1 bounded nbdkit -U "$s" -r $2 file "$tmp/src" --run \
    "nbdkit -U '$d' $3 file '$tmp/dst' --run '$example nbd+unix:///?socket=$s nbd+unix:///?socket=$d'" \
    2> "$tmp/err" || { cat "$tmp/err"; fail "$1: $2 $3: exit status"; }
  cmp "$tmp/src" "$tmp/dst" || fail "$1: $2 $3: the destination differs from the source"
  grep -q '^copy: 100% (41000000/41000000 bytes)$' "$tmp/err" || { cat "$tmp/err"; fail "$1: no progress to 100%"; }
  summary=$(tail -n 1 "$tmp/err")
  echo "ok: $1: ${2:-}${3:+ }${3:-}: $summary"
}
for t in "${transports[@]}"; do
  copy "$t" "" ""
  # The holes (15 MiB + 7 MiB + the tail) went out as a few zero commands.
  [[ "$summary" =~ zeroed\ in\ [1-9]\ requests ]] || fail "$t: expected zero commands: $summary"
  [[ "$summary" =~ ^copy:\ 41000000\ bytes:\ 8388608\ read ]] || fail "$t: expected 8 MiB of data: $summary"
  copy "$t" "" "--filter=nozero"
  copy "$t" "--filter=noextents" ""
  [[ "$summary" =~ 41000000\ read\ and\ written ]] || fail "$t: expected all data: $summary"
done
