// SPDX-License-Identifier: BSD-3-Clause
#include <doctest/doctest.h>

#include "harness.hpp"

#include <cstdio>

int main(int argc, char** argv) {
  // The integration suite talks to a real nbdkit; without it the suite
  // cannot run at all, which is a skip (77), not a pass.
  if (!nbdtest::have_program("nbdkit")) {
    std::fprintf(stderr, "SKIP: nbdkit is not installed (Debian: nbdkit)\n");
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
