// SPDX-License-Identifier: BSD-3-Clause
#include <doctest/doctest.h>

#include "interop.hpp"

#include <csignal>
#include <cstdio>
#include <string>

// meson runs one suite per server (-ts=qemu-nbd, -ts=nbd-server). A server
// that is not installed makes its run a skip (77), never a silent pass.
int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  struct Need {
    const char* suite;
    std::vector<std::string> programs;
    const char* package;
  };
  const Need needs[] = {{"qemu-nbd", {"qemu-nbd", "qemu-img", "qemu-io"}, "qemu-utils"},
                        {"nbd-server", {"nbd-server"}, "nbd-server"}};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    for (const auto& n : needs) {
      if (a != std::string("-ts=") + n.suite && a != std::string("--test-suite=") + n.suite) continue;
      for (const auto& p : n.programs)
        if (!interop::have_program(p)) {
          std::fprintf(stderr, "SKIP: %s is not installed (Debian: %s)\n", p.c_str(), n.package);
          return 77;
        }
    }
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
