// SPDX-License-Identifier: BSD-3-Clause
//
// Issue 1000 structured reads at random offsets, all in flight at once,
// and check that the server's chunks obey the NBD spec: chunks may come in
// any order, but a successful read must be covered by its chunks exactly
// once, with no overlap, no zero-length chunk, and a single chunk when the
// DF (don't fragment) flag was given. The nbdcpp port of libnbd's
// examples/strict-structured-reads.c: prints the same totals.
//
// Try it with qemu-nbd (which sends hole chunks for sparse areas):
//
//   qemu-nbd -f raw -k /tmp/sock -r disk.img &
//   ./strict-structured-reads /tmp/sock

#include <nbdcpp/handle.hpp>

#include <cassert>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <iterator>
#include <list>
#include <random>
#include <vector>

namespace {

// A byte range [first, last) not covered by a chunk yet.
struct Range {
  std::uint64_t first;
  std::uint64_t last;
};

// Per-read bookkeeping.
struct Data {
  std::uint64_t offset;
  std::size_t count;
  std::uint32_t flags;
  std::size_t chunks = 0;
  std::list<Range> remaining;
};

constexpr std::size_t max_buf = 2 * 1024 * 1024;

// Statistics.
int total_data_chunks;
std::int64_t total_data_bytes;
int total_hole_chunks;
std::int64_t total_hole_bytes;
int total_chunks;
int total_df_reads;
int total_reads;
std::int64_t total_bytes;
int total_success;

int read_chunk(Data& data, std::span<const std::uint8_t> subbuf, std::uint64_t offset,
               unsigned status, int* error) {
  std::uint64_t count = subbuf.size();

  // nbdcpp guarantees this (it rejects chunks outside the request itself).
  assert(offset >= data.offset);
  assert(offset + count <= data.offset + data.count);

  switch (status) {
  case nbd::READ_DATA:
    total_data_chunks++;
    total_data_bytes += static_cast<std::int64_t>(count);
    break;
  case nbd::READ_HOLE:
    total_hole_chunks++;
    total_hole_bytes += static_cast<std::int64_t>(count);
    break;
  case nbd::READ_ERROR:
    // Make sure no later chunk may visit this offset either.
    if (count == 0) count = 1;
    break;
  default:
    *error = EPROTO;
    return -1;
  }
  data.chunks++;
  if (count == 0) {
    std::fprintf(stderr, "buggy server: chunk must have non-zero size\n");
    *error = EPROTO;
    return -1;
  }

  // The chunk must lie inside one range nothing has covered yet.
  auto r = data.remaining.begin();
  while (r != data.remaining.end() && !(offset >= r->first && offset < r->last)) ++r;
  if (r == data.remaining.end() || offset + count > r->last) {
    // A second error at one offset goes undetected, but the read fails anyway.
    if (status == nbd::READ_ERROR) return 0;
    std::fprintf(stderr, "buggy server: chunk with overlapping range\n");
    *error = EPROTO;
    return -1;
  }

  // Shrink or split the range around the chunk.
  if (offset == r->first && offset + count == r->last) {
    data.remaining.erase(r);
  } else if (offset == r->first) {
    r->first += count;
  } else if (offset + count == r->last) {
    r->last -= count;
  } else {
    data.remaining.insert(std::next(r), Range{offset + count, r->last});
    r->last = offset;
  }
  return 0;
}

int read_verify(Data& data, int* error) {
  total_reads++;
  total_chunks += static_cast<int>(data.chunks);
  if (*error) return -1;
  assert(data.chunks > 0);
  if (data.flags & nbd::CMD_FLAG_DF) {
    total_df_reads++;
    if (data.chunks > 1) {
      std::fprintf(stderr, "buggy server: too many chunks for DF flag\n");
      *error = EPROTO;
      return -1;
    }
  }
  if (!data.remaining.empty()) {
    std::fprintf(stderr, "buggy server: not enough chunks on success\n");
    *error = EPROTO;
    return -1;
  }
  total_bytes += static_cast<std::int64_t>(data.count);
  total_success++;
  // Leave the command for aio_command_completed, as libnbd's does; -1 with
  // *error set above makes it fail there.
  return 0;
}

} // namespace

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::fprintf(stderr, "%s socket|uri\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  std::mt19937_64 rng(static_cast<std::uint64_t>(std::time(nullptr)));
  // Every read lands in this one buffer. Not safe in real life, but fine
  // here: only the server's behaviour is checked, not the data.
  static std::vector<std::uint8_t> buf(max_buf);
  std::deque<Data> reads;

  try {
    nbd::Handle nbd;
    if (std::strstr(argv[1], "://"))
      nbd.connect_uri(argv[1]);
    else
      nbd.connect_unix(argv[1]);

    const std::int64_t exportsize = nbd.get_size();
    if (exportsize < 512) {
      std::fprintf(stderr, "image is too small for useful testing\n");
      std::exit(EXIT_FAILURE);
    }
    std::int64_t maxsize = max_buf;
    if (exportsize <= maxsize) maxsize = exportsize - 1;
    // DF needs the server's support; asking without it is an error.
    const bool df = nbd.can_df();

    // Queue 1000 reads at once.
    for (int i = 0; i < 1000; ++i) {
      const std::uint64_t offset = rng() % static_cast<std::uint64_t>(exportsize - maxsize);
      const std::uint32_t flags = (df && (rng() & 1)) ? nbd::CMD_FLAG_DF : 0;
      const auto count = static_cast<std::size_t>(maxsize);
      Data& d = reads.emplace_back(Data{offset, count, flags, 0, {Range{offset, offset + count}}});
      nbd.aio_pread_structured(
          std::span(buf).first(count), offset,
          [&d](std::span<const std::uint8_t> sub, std::uint64_t off, unsigned status, int* error) {
            return read_chunk(d, sub, off, status, error);
          },
          [&d](int* error) { return read_verify(d, error); }, flags);
    }

    // Retire each read as it completes (aio_command_completed throws for a
    // read the server failed or read_verify rejected: count, don't stop).
    while (nbd.aio_in_flight() > 0) {
      const std::uint64_t cookie = nbd.aio_peek_command_completed();
      if (cookie == 0) {
        nbd.poll(-1);
      } else {
        std::error_code ec;
        nbd.aio_command_completed(cookie, ec);
      }
    }

    nbd.shutdown();
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }

  std::printf("totals:\n");
  std::printf(" data chunks: %10d\n", total_data_chunks);
  std::printf(" data bytes:  %10" PRId64 "\n", total_data_bytes);
  std::printf(" hole chunks: %10d\n", total_hole_chunks);
  std::printf(" hole bytes:  %10" PRId64 "\n", total_hole_bytes);
  std::printf(" all chunks:  %10d\n", total_chunks);
  std::printf(" df reads:    %10d\n", total_df_reads);
  std::printf(" reads:       %10d\n", total_reads);
  std::printf(" bytes read:  %10" PRId64 "\n", total_bytes);
  std::printf(" compliant:   %10d\n", total_success);
  std::exit(EXIT_SUCCESS);
}
