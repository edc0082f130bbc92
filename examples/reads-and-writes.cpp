// SPDX-License-Identifier: BSD-3-Clause
//
// Synchronous reads and writes at random offsets all over an NBD export.
// This destroys the export's contents. The nbdcpp port of libnbd's
// examples/reads-and-writes.c: 1000 writes, then 1000 read + write pairs,
// then a graceful shutdown; it prints nothing on success.
//
// Unlike libnbd's, this port also remembers what it wrote (for exports up
// to 256 MiB) and fails if a read returns anything else for those bytes.
//
// Try it with:
//
//   nbdkit -U - memory 1M --run './reads-and-writes $unixsocket'

#include <nbdcpp/handle.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

namespace {

// What we wrote where, so that reads can be checked.
class Shadow {
public:
  explicit Shadow(std::uint64_t size)
      : enabled_(size <= 256 * 1024 * 1024),
        data_(enabled_ ? size : 0), known_(enabled_ ? size : 0) {}

  void wrote(std::uint64_t offset, const std::uint8_t* p, std::size_t n) {
    if (!enabled_) return;
    std::memcpy(&data_[offset], p, n);
    std::memset(&known_[offset], 1, n);
  }

  bool matches(std::uint64_t offset, const std::uint8_t* p, std::size_t n) const {
    if (!enabled_) return true;
    for (std::size_t i = 0; i < n; ++i)
      if (known_[offset + i] && data_[offset + i] != p[i]) return false;
    return true;
  }

private:
  bool enabled_;
  std::vector<std::uint8_t> data_;
  std::vector<std::uint8_t> known_;
};

} // namespace

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::fprintf(stderr, "%s socket\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  std::mt19937_64 rng(static_cast<std::uint64_t>(std::time(nullptr)));
  std::array<std::uint8_t, 512> buf{};

  try {
    nbd::Handle nbd;
    nbd.connect_unix(argv[1]);

    // The export must hold at least one buffer, and be writable.
    const auto exportsize = static_cast<std::uint64_t>(nbd.get_size());
    if (exportsize < buf.size()) {
      std::fprintf(stderr, "%s: error: the export is smaller than %zu bytes\n", argv[0],
                   buf.size());
      std::exit(EXIT_FAILURE);
    }
    if (nbd.is_read_only()) {
      std::fprintf(stderr, "%s: error: this NBD export is read-only\n", argv[0]);
      std::exit(EXIT_FAILURE);
    }

    Shadow shadow(exportsize);
    auto random_offset = [&] {
      const std::uint64_t span = exportsize - buf.size();
      return span == 0 ? 0 : rng() % span;
    };
    for (auto& b : buf) b = static_cast<std::uint8_t>(rng());

    // 1000 writes.
    for (int i = 0; i < 1000; ++i) {
      const std::uint64_t offset = random_offset();
      nbd.pwrite(buf, offset);
      shadow.wrote(offset, buf.data(), buf.size());
    }

    // 1000 reads and writes; each write sends what the read returned.
    for (int i = 0; i < 1000; ++i) {
      std::uint64_t offset = random_offset();
      nbd.pread(buf, offset);
      if (!shadow.matches(offset, buf.data(), buf.size())) {
        std::fprintf(stderr, "FAILED: the read at offset %llu returned other data than was written\n",
                     static_cast<unsigned long long>(offset));
        std::exit(EXIT_FAILURE);
      }

      offset = random_offset();
      nbd.pwrite(buf, offset);
      shadow.wrote(offset, buf.data(), buf.size());
    }

    // A graceful shutdown: NBD_CMD_DISC, then wait for the server to close.
    nbd.shutdown();
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  std::exit(EXIT_SUCCESS);
}
