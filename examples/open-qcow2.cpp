// SPDX-License-Identifier: BSD-3-Clause
//
// Open a local qcow2 file by running qemu-nbd as a subprocess through
// systemd socket activation, and print its first sector through
// `hexdump -C`. The nbdcpp port of libnbd's examples/open-qcow2.c: same
// output.
//
// Try it with:
//
//   qemu-img create -f qcow2 disk.qcow2 1M
//   ./open-qcow2 disk.qcow2

#include <nbdcpp/handle.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::fprintf(stderr, "open-qcow2 file.qcow2\n");
    std::exit(EXIT_FAILURE);
  }
  const std::string filename = argv[1];

  std::array<std::uint8_t, 512> buf{};
  try {
    nbd::Handle nbd;

    // nbdcpp creates a listening Unix socket, starts qemu-nbd with
    // LISTEN_PID / LISTEN_FDS pointing at it (fd 3), and connects. qemu-nbd
    // needs no socket option of its own; it exits when the handle closes.
    nbd.connect_systemd_socket_activation({"qemu-nbd", "-f", "qcow2", filename});

    // Read the first sector.
    nbd.pread(buf, 0);

    FILE* fp = ::popen("hexdump -C", "w");
    if (fp == nullptr) {
      std::perror("popen: hexdump");
      std::exit(EXIT_FAILURE);
    }
    std::fwrite(buf.data(), buf.size(), 1, fp);
    ::pclose(fp);
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  std::exit(EXIT_SUCCESS);
}
