// SPDX-License-Identifier: BSD-3-Clause
//
// Connect to a server with the asynchronous API and read the first 32
// sectors, printing each one through `hexdump -C` as its read completes.
// The nbdcpp port of libnbd's examples/aio-connect-read.c: same output.
//
// Try it with:
//
//   nbdkit -U - pattern size=1M --run './aio-connect-read $unixsocket'

#include <nbdcpp/handle.hpp>

#include <array>
#include <cassert>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>

namespace {

constexpr std::size_t nr_sectors = 32;
constexpr std::size_t sector_size = 512;

struct Sector {
  std::uint64_t offset;
  std::array<std::uint8_t, sector_size> data;
};

int hexdump(const Sector& s) {
  std::printf("sector at offset 0x%" PRIx64 ":\n", s.offset);
  FILE* pp = ::popen("hexdump -C", "w");
  if (pp == nullptr) {
    std::perror("popen: hexdump");
    std::exit(EXIT_FAILURE);
  }
  std::fwrite(s.data.data(), sector_size, 1, pp);
  ::pclose(pp);
  std::printf("\n");
  // Returning 1 from the callback retires the command.
  return 1;
}

} // namespace

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::fprintf(stderr, "%s socket\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  try {
    nbd::Handle nbd;

    // This only starts connecting.
    nbd.aio_connect_unix(argv[1]);

    // Wait for the connection to complete. poll() is one way; the handle
    // can also be driven from poll(2), glib or epoll (aio_get_fd,
    // aio_get_direction, aio_notify_read/write).
    while (!nbd.aio_is_ready()) nbd.poll(-1);

    assert(nbd.get_size() >= static_cast<std::int64_t>(nr_sectors * sector_size));

    // Issue reads for the first sectors; each buffer must outlive its
    // command. The callback runs when the read completes.
    static std::array<Sector, nr_sectors> sectors;
    for (std::size_t i = 0; i < nr_sectors; ++i) {
      Sector& s = sectors[i];
      s.offset = i * sector_size;
      nbd.aio_pread(s.data, s.offset, [&s](int*) { return hexdump(s); });
    }

    // Run until every command has completed and retired.
    while (nbd.aio_in_flight() > 0) nbd.poll(-1);
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  std::exit(EXIT_SUCCESS);
}
