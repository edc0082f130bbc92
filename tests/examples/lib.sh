# SPDX-License-Identifier: BSD-3-Clause
# Shared by the check-*.sh example tests (sourced, not run). Each test runs
# its example against a server it starts itself, on both transports, and
# checks what the example printed or wrote. A missing tool skips (exit 77).
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
# need TOOL [PACKAGE]: skip unless TOOL is on PATH.
need() { command -v "$1" >/dev/null || skip "$1 not installed${2:+ (Debian: $2)}"; }

tmp=$(mktemp -d)
cleanup_hooks=()
cleanup() {
  local h
  for h in "${cleanup_hooks[@]}"; do eval "$h" || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

transports=(uring socket)

# A bounded run: a hang fails the test instead of stalling the suite.
bounded() { timeout --kill-after=5 60 "$@"; }
