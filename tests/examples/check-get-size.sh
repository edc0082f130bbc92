#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# get-size prints the size nbdkit was given (an odd one, so that nothing
# rounds it). Usage: check-get-size.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit
for t in "${transports[@]}"; do
  sock=$tmp/$t.sock
  out=$(NBDCPP_TRANSPORT=$t bounded nbdkit -U "$sock" memory size=1234567 --run "$example $sock")
  [ "$out" = "$sock: size = 1234567 bytes" ] || fail "$t: got: $out"
  echo "ok: $t: $out"
done
