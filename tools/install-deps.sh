#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Installs the Debian packages nbdcpp's build, tests, examples and benchmarks
# need, and only those that are missing. Safe to run again; needs root (or sudo).
set -euo pipefail

packages=(
  meson ninja-build pkg-config g++ clang
  liburing-dev libfmt-dev doctest-dev
  nbdkit nbdkit-plugin-dev
  libnbd-dev libnbd-bin
  qemu-utils nbd-server
  bsdextrautils python3
  libglib2.0-dev
  gnutls-bin libgnutls28-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
