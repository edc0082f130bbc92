// SPDX-License-Identifier: BSD-3-Clause
//
// Run an NBD server (nbdkit) as a subprocess of the handle, write a sector,
// read it back and check the two match. The nbdcpp port of libnbd's
// examples/connect-command.c: it prints nothing on success (nbdkit's own
// debug messages, from -v, go to stderr) and fails if the data differ.
//
// Try it with:
//
//   ./connect-command

#include <nbdcpp/handle.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

int main() {
  std::array<std::uint8_t, 512> wbuf{};
  std::array<std::uint8_t, 512> rbuf{};

  try {
    nbd::Handle nbd;

    // The server speaks NBD on its stdin/stdout, which nbdcpp connects to
    // one end of a socketpair.
    nbd.connect_command({
        "nbdkit",
        // -s: serve a single connection on stdin/stdout (required).
        "-s",
        // Recommended: nbdkit exits if this program dies.
        "--exit-with-parent",
        // nbdkit's debug messages, on stderr.
        "-v",
        // The plugin: a 1 MiB RAM disk.
        "memory", "1M",
    });

    // Write some data to the first sector.
    for (std::size_t i = 0; i < wbuf.size(); ++i) wbuf[i] = static_cast<std::uint8_t>(i % 13);
    nbd.pwrite(wbuf, 0);

    // Read the first sector back.
    nbd.pread(rbuf, 0);

    // Leaving the scope closes the handle; nbdkit then exits and is reaped.
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }

  // What was read must be exactly what was written.
  if (rbuf != wbuf) {
    std::fprintf(stderr, "FAILED: read data did not match written data\n");
    std::exit(EXIT_FAILURE);
  }
  std::exit(EXIT_SUCCESS);
}
