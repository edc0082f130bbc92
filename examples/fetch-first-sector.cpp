// SPDX-License-Identifier: BSD-3-Clause
//
// Connect to an NBD server and print the first sector (usually the boot
// sector, a partition table or a filesystem superblock) through
// `hexdump -C`. The nbdcpp port of libnbd's examples/fetch-first-sector.c:
// same output.
//
// Try it with (the floppy plugin makes an MBR disk, so the first sector is
// the partition table):
//
//   nbdkit -U - floppy . --run './fetch-first-sector $unixsocket'

#include <nbdcpp/handle.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::fprintf(stderr, "%s socket\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  std::array<std::uint8_t, 512> buf{};
  try {
    nbd::Handle nbd;
    nbd.connect_unix(argv[1]);

    // Read the first sector synchronously.
    nbd.pread(buf, 0);
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  // The handle is gone (connection closed) before we print, as in libnbd's.

  FILE* pp = ::popen("hexdump -C", "w");
  if (pp == nullptr) {
    std::perror("popen: hexdump");
    std::exit(EXIT_FAILURE);
  }
  std::fwrite(buf.data(), buf.size(), 1, pp);
  ::pclose(pp);
  std::exit(EXIT_SUCCESS);
}
