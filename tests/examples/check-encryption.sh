#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# encryption connects with TLS-PSK to `nbdkit --tls=require --tls-psk=KEYS`
# serving a file, and prints "TLS negotiated, ..." and the first sector as
# `od -A x -t x1 -v` prints it read straight from the file; the server
# must have seen its NBD_CMD_DISC (shutdown), not a cut connection. With a
# key the
# server does not know (same identity, another key; or an identity the
# server has no key for) it must fail cleanly: a non-zero exit status that
# is not a signal, a message on stderr, nothing on stdout.
# Usage: check-encryption.sh EXAMPLE
source "${BASH_SOURCE%/*}/lib.sh"
example=$1
need nbdkit nbdkit
need psktool gnutls-bin

psktool -u alice -p "$tmp/keys.psk" > /dev/null
psktool -u alice -p "$tmp/wrong.psk" > /dev/null   # alice, another key
psktool -u bob -p "$tmp/bob.psk" > /dev/null       # an identity the server lacks
cmp -s "$tmp/keys.psk" "$tmp/wrong.psk" && fail "psktool made the same key twice"

head -c 512 /dev/urandom > "$tmp/disk"
printf 'nbdcpp-tls' | dd of="$tmp/disk" bs=1 seek=3 conv=notrunc status=none
truncate -s 1M "$tmp/disk"
{
  echo "TLS negotiated, PSK identity alice"
  head -c 512 "$tmp/disk" | od -A x -t x1 -v
} > "$tmp/expected"

# One server for every run; it refuses plaintext (--tls=require). Its
# debug log (-v) shows each clean NBD_CMD_DISC.
nbdkit -v --log=stderr -U "$tmp/sock" -P "$tmp/pid" -r --tls=require \
  --tls-psk="$tmp/keys.psk" file "$tmp/disk" 2> "$tmp/nbdkit.log"
cleanup_hooks+=('kill "$(cat "$tmp/pid")"')
for _ in $(seq 600); do [ -S "$tmp/sock" ] && [ -s "$tmp/pid" ] && break; sleep 0.05; done
[ -S "$tmp/sock" ] || fail "nbdkit did not start"

discs=0
for t in "${transports[@]}"; do
  rc=0
  NBDCPP_TRANSPORT=$t bounded "$example" "$tmp/sock" "$tmp/keys.psk" alice \
    > "$tmp/out-$t" 2> "$tmp/err-$t" || rc=$?
  [ "$rc" -eq 0 ] || { tail "$tmp/err-$t"; fail "$t: exit status $rc"; }
  cmp -s "$tmp/out-$t" "$tmp/expected" || { diff "$tmp/out-$t" "$tmp/expected" | head; fail "$t: output differs"; }
  # shutdown() sent NBD_CMD_DISC through TLS: nbdkit logs it (it may log a
  # moment after the example exited).
  discs=$((discs + 1))
  for _ in $(seq 600); do
    [ "$(grep -c 'client sent NBD_CMD_DISC' "$tmp/nbdkit.log")" -ge "$discs" ] && break
    sleep 0.05
  done
  [ "$(grep -c 'client sent NBD_CMD_DISC' "$tmp/nbdkit.log")" -ge "$discs" ] ||
    { grep 'error' "$tmp/nbdkit.log" | tail -n 3 || true; fail "$t: nbdkit did not see NBD_CMD_DISC after shutdown()"; }
  echo "ok: $t: $(head -n 1 "$tmp/out-$t"); $(sed -n 2p "$tmp/out-$t")"

  # A wrong key, then an identity the server has no key for.
  for bad in "wrong.psk alice" "bob.psk bob"; do
    read -r keys user <<< "$bad"
    rc=0
    NBDCPP_TRANSPORT=$t bounded "$example" "$tmp/sock" "$tmp/$keys" "$user" \
      > "$tmp/bad-out-$t" 2> "$tmp/bad-err-$t" || rc=$?
    [ "$rc" -ne 0 ] || fail "$t: $keys ($user): connected with a key the server does not have"
    [ "$rc" -lt 124 ] || { cat "$tmp/bad-err-$t"; fail "$t: $keys ($user): exit status $rc (hang or signal)"; }
    [ ! -s "$tmp/bad-out-$t" ] || fail "$t: $keys ($user): printed on stdout: $(head -n 1 "$tmp/bad-out-$t")"
    [ -s "$tmp/bad-err-$t" ] || fail "$t: $keys ($user): failed without a message"
    grep -Eqi 'tls|handshake|psk|gnutls' "$tmp/bad-err-$t" ||
      fail "$t: $keys ($user): the message does not say TLS failed: $(head -n 1 "$tmp/bad-err-$t")"
    echo "ok: $t: $keys ($user) refused: $(head -n 1 "$tmp/bad-err-$t")"
  done
done
