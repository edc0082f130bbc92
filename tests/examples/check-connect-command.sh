#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# connect-command runs `nbdkit -s -v memory 1M` as its subprocess, writes a
# sector and reads it back (it fails if they differ). nbdkit's -v debug
# output on stderr proves a real nbdkit served it, and no nbdkit may be
# left behind. Usage: check-connect-command.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit
for t in "${transports[@]}"; do
  NBDCPP_TRANSPORT=$t bounded "$example" > "$tmp/out-$t" 2> "$tmp/err-$t" || { cat "$tmp/err-$t" | tail; fail "$t: exit status"; }
  [ ! -s "$tmp/out-$t" ] || fail "$t: unexpected output on stdout"
  grep -q 'memory.*debug' "$tmp/err-$t" || fail "$t: no nbdkit debug output on stderr"
  grep -q 'pwrite' "$tmp/err-$t" || fail "$t: nbdkit saw no write"
  echo "ok: $t: wrote and read back a sector through nbdkit ($(wc -l < "$tmp/err-$t") lines of nbdkit debug)"
done
