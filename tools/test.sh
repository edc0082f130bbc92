#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Installs what is missing, builds with g++ and clang++ (warnings are
# errors), runs every test suite on the g++ build, and ends with one line:
# "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh

setup() { # DIR [meson args...]
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
}

setup build --werror
ninja -C build

# clang++ must build the whole tree warning-free as well.
CC=clang CXX=clang++ setup build-clang --werror
ninja -C build-clang

status=0
meson test -C build --print-errorlogs --num-processes 2 || status=$?

python3 tools/summarize-tests.py build/meson-logs/testlog.json || status=1
exit $status
