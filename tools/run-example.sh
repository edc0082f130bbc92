#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Installs what is missing, builds nbdcpp, and runs the aio-connect-read
# example against an nbdkit pattern server embedded in this command.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build
exec nbdkit -U - pattern size=1M --run './build/examples/aio-connect-read $unixsocket'
