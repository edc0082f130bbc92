// SPDX-License-Identifier: BSD-3-Clause
//
// Connect to an NBD server over a Unix domain socket and print the size
// of the export. The nbdcpp port of libnbd's examples/get-size.c: same
// output.
//
// Try it with:
//
//   nbdkit -U - memory 1M --run './get-size $unixsocket'

#include <nbdcpp/handle.hpp>

#include <cstdio>
#include <cstdlib>

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::fprintf(stderr, "%s socket\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  try {
    nbd::Handle nbd;

    // Blocking connect: returns once negotiation is over.
    nbd.connect_unix(argv[1]);

    // The size in bytes, as the server announced it.
    std::printf("%s: size = %lld bytes\n", argv[1], static_cast<long long>(nbd.get_size()));

    // The destructor closes the connection (libnbd's nbd_close).
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  std::exit(EXIT_SUCCESS);
}
