#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Installs what is missing, builds with g++ and clang++ (warnings are
# errors), runs every test suite on the g++ build, then again under
# sanitizers (ASan+UBSan: everything; TSan: the threaded tests), and ends
# with one line over all of them: "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage's start, in seconds since this script began (CI's time limit).
stage() { echo "=== [${SECONDS}s] $*"; }

stage "install what is missing"
bash tools/install-deps.sh

setup() { # DIR [meson args...]
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" | tail -n 3
  else
    meson setup "$dir" "$@" | tail -n 3
  fi
}

stage "g++ build"
setup build --werror
ninja -C build

# clang++ must build the whole tree warning-free as well.
stage "clang++ build"
CC=clang CXX=clang++ setup build-clang --werror
ninja -C build-clang

status=0
stage "tests (g++ build)"
meson test -C build --print-errorlogs --num-processes 2 || status=$?
logs=(build/meson-logs/testlog.json)

# --- sanitizers ---------------------------------------------------------------
# Every finding is fatal (UBSan reports are otherwise only printed). The
# nbdkit test plugins stay unsanitized (tests/plugins/meson.build): nbdkit
# cannot dlopen an ASan module.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

# ASan+UBSan: the whole suite (unit, fuzz corpora, integration on both
# transports, examples), with the stress test running 10 s instead of 1.
stage "ASan+UBSan build and tests"
# -O1 and line tables only (-g1): what the sanitizers need for fast runs
# and symbolized reports, at half the compile time of -O2 -g.
sanitizer_build=(-Doptimization=1 -Ddebug=false -Dc_args=-g1 -Dcpp_args=-g1 -Db_lundef=false
  -Dbench=disabled -Ddocs=disabled)
setup build-asan -Db_sanitize=address,undefined "${sanitizer_build[@]}"
ninja -C build-asan
NBDCPP_STRESS_SECONDS=10 meson test -C build-asan --print-errorlogs --num-processes 2 \
  || status=$?
logs+=(build-asan/meson-logs/testlog.json)

# TSan: the tests named "threads: ..." (tests/integration/test_threads.cpp,
# test_stress.cpp), in suite "threads", which only a TSan build registers.
# Only what those tests need is built.
stage "TSan build and tests"
setup build-tsan -Db_sanitize=thread "${sanitizer_build[@]}" -Dexamples=disabled
ninja -C build-tsan tests/integration/integration-tests
meson test -C build-tsan --no-rebuild --suite threads --print-errorlogs --num-processes 1 \
  || status=$?
logs+=(build-tsan/meson-logs/testlog.json)

stage "done"
python3 tools/summarize-tests.py "${logs[@]}" || status=1
exit $status
