// SPDX-License-Identifier: BSD-3-Clause
#include <doctest/doctest.h>

#include <csignal>

int main(int argc, char** argv) {
  // The peer writes to sockets the client may have shut down: it uses
  // MSG_NOSIGNAL, but be safe against a stray SIGPIPE ending the run.
  std::signal(SIGPIPE, SIG_IGN);
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
