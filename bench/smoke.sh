#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Smoke test: nbdcpp-bench ENGINE TRANSPORT runs ~0.3 s against nbdkit's
# null plugin and prints one well-formed result line. No timing is judged.
# With a fourth argument, tls, nbdkit requires TLS-PSK and the bench
# connects through nbds+unix://...&tls-psk-file= (as bench/compare's tls
# row does).
set -u
bench=$1 engine=$2 transport=$3 tls=${4:-}
command -v nbdkit >/dev/null || { echo "nbdkit not found: skipped"; exit 77; }
if [ "$tls" = tls ]; then
  command -v psktool >/dev/null || { echo "psktool not found (Debian: gnutls-bin): skipped"; exit 77; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  psktool -u bench -p "$tmp/keys.psk" >/dev/null || { echo "psktool failed"; exit 1; }
  out=$(nbdkit -U - --tls=require --tls-psk="$tmp/keys.psk" null 1G --run \
    "'$bench' --engine $engine --transport $transport \"nbds+unix://bench@/?socket=\$unixsocket&tls-psk-file=$tmp/keys.psk\" 4 4096 0.3 rand read")
else
  out=$(nbdkit -U - null 1G --run \
    "'$bench' --engine $engine --transport $transport \"\$uri\" 4 4096 0.3 rand read")
fi
rc=$?
[ $rc -eq 77 ] && { echo "$engine not built in: skipped"; exit 77; }
echo "$out"
[ $rc -eq 0 ] || { echo "nbdcpp-bench exited with $rc"; exit 1; }
num='[0-9]+(\.[0-9]+)?'
re="^ops=[0-9]+ secs=$num ops_per_s=$num MiB_per_s=$num cpu_us_per_op=$num syscalls_per_op=-?$num allocs_per_op=$num\$"
[ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || { echo "expected one line"; exit 1; }
printf '%s\n' "$out" | grep -Eq "$re" || { echo "malformed result line"; exit 1; }
ops=$(printf '%s\n' "$out" | sed -E 's/^ops=([0-9]+).*/\1/')
[ "$ops" -gt 0 ] || { echo "no operation completed"; exit 1; }
echo "ok"
