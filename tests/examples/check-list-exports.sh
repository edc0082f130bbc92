#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# list-exports in option mode against nbdkit advertising two exports with a
# description: it lists both, connects to the one chosen on stdin and
# prints its size; choosing -1 lists and leaves.
# Usage: check-list-exports.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit
server=(--filter=exportname memory 1M exportname-list=explicit exportname=hello exportname=world
        "exportdesc=fixed:a RAM disk")
for t in "${transports[@]}"; do
  sock=$tmp/$t-1.sock
  echo 1 | NBDCPP_TRANSPORT=$t bounded nbdkit -U "$sock" "${server[@]}" --run "$example $sock" > "$tmp/out"
  printf '%s\n' '[0] hello' '  (a RAM disk)' '[1] world' '  (a RAM disk)' \
    "Which export to connect to (-1 to quit)? Connecting to world ..." \
    "$sock: world: size = 1048576 bytes" > "$tmp/expected"
  cmp -s "$tmp/out" "$tmp/expected" || { diff "$tmp/out" "$tmp/expected"; fail "$t: choosing 1"; }

  sock=$tmp/$t-2.sock
  echo -1 | NBDCPP_TRANSPORT=$t bounded nbdkit -U "$sock" "${server[@]}" --run "$example $sock" > "$tmp/out"
  head -n 4 "$tmp/expected" > "$tmp/expected-quit"
  printf 'Which export to connect to (-1 to quit)? ' >> "$tmp/expected-quit"
  cmp -s "$tmp/out" "$tmp/expected-quit" || { diff "$tmp/out" "$tmp/expected-quit"; fail "$t: choosing -1"; }
  echo "ok: $t: listed hello and world, connected to world"
done
