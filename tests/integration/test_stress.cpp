// SPDX-License-Identifier: BSD-3-Clause
// Stress: 8 handles on 8 threads, 64 requests in flight on each, random
// 16 KiB reads and writes for NBDCPP_STRESS_SECONDS seconds (default 1;
// tools/test.sh's sanitizer stage runs 10) against nbdkit's cow filter over
// the pattern plugin. The cow overlay is per server, so every handle has its
// own nbdkit and a shadow copy of its disk; every read is checked against
// it, and so is the whole disk at the end. meson runs the integration
// suite on both transports.
//
// Named "threads: ..." so that the ThreadSanitizer stage runs it too.

#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t nthreads = 8;
constexpr std::size_t depth = 64;
constexpr std::size_t block = 16 * 1024;
constexpr std::uint64_t disk_size = 16 * 1024 * 1024;
constexpr std::size_t nblocks = disk_size / block;

double stress_seconds() {
  const char* s = std::getenv("NBDCPP_STRESS_SECONDS");
  if (!s || !*s) return 1.0;
  double v = std::atof(s);
  return v > 0 ? v : 1.0;
}

struct Result {
  std::uint64_t reads = 0, writes = 0, completions = 0;
  int errors = 0, mismatches = 0, lost = 0;
  std::string failure; // an exception's message
};

struct Op {
  std::vector<std::uint8_t> buf = std::vector<std::uint8_t>(block);
  std::size_t blk = 0;
  bool write = false;
  bool busy = false; // submitted, not yet reaped
  int done = 0;      // completions seen (must end up exactly 1)
  int error = 0;
};

void worker(std::size_t id, double seconds, Result& res) {
  std::mt19937_64 rng(0x5745 + id);
  nbd::Handle h;
  nbdtest::connect(h, {"--filter=cow", "pattern", "size=" + std::to_string(disk_size)});
  if (h.get_size() != static_cast<std::int64_t>(disk_size)) {
    res.failure = "unexpected export size";
    return;
  }
  std::vector<std::uint8_t> shadow(disk_size);
  for (std::uint64_t i = 0; i < disk_size; ++i) shadow[i] = nbdtest::pattern_byte(i);
  std::vector<bool> block_busy(nblocks, false);
  std::vector<Op> ops(depth);
  std::size_t in_flight = 0;

  auto submit = [&](Op& op) {
    // An operation never overlaps another in flight, so each read has one
    // right answer: the shadow as it is now.
    do op.blk = static_cast<std::size_t>(rng() % nblocks);
    while (block_busy[op.blk]);
    block_busy[op.blk] = true;
    op.write = rng() & 1;
    op.busy = true;
    op.done = 0;
    op.error = 0;
    const std::uint64_t off = static_cast<std::uint64_t>(op.blk) * block;
    auto cb = [&op](int* err) {
      ++op.done;
      op.error = *err;
      return 1;
    };
    if (op.write) {
      for (std::size_t i = 0; i < block; i += 8) {
        std::uint64_t x = rng();
        std::memcpy(op.buf.data() + i, &x, 8);
      }
      h.aio_pwrite(op.buf, off, cb);
      ++res.writes;
    } else {
      h.aio_pread(op.buf, off, cb);
      ++res.reads;
    }
    ++in_flight;
  };

  auto reap = [&](Op& op) {
    if (!op.busy || op.done == 0) return false;
    if (op.done != 1) ++res.lost;
    ++res.completions;
    std::uint8_t* s = shadow.data() + static_cast<std::uint64_t>(op.blk) * block;
    if (op.error) {
      ++res.errors;
    } else if (op.write) {
      std::memcpy(s, op.buf.data(), block);
    } else if (std::memcmp(s, op.buf.data(), block) != 0) {
      ++res.mismatches;
    }
    block_busy[op.blk] = false;
    op.busy = false;
    --in_flight;
    return true;
  };

  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (auto& op : ops) submit(op);
  while (in_flight > 0) {
    h.poll(-1);
    const bool more = std::chrono::steady_clock::now() < deadline;
    for (auto& op : ops)
      if (reap(op) && more) submit(op);
    if (h.aio_is_dead()) {
      res.failure = "handle died: " + h.get_error_message();
      return;
    }
  }
  if (h.aio_in_flight() != 0) res.failure = "commands left in flight";

  // The whole disk, against the shadow.
  std::vector<std::uint8_t> buf(1024 * 1024);
  for (std::uint64_t off = 0; off < disk_size; off += buf.size()) {
    h.pread(buf, off);
    if (std::memcmp(buf.data(), shadow.data() + off, buf.size()) != 0) ++res.mismatches;
  }
  h.shutdown();
}

} // namespace

TEST_CASE("threads: stress: 8 handles, 64 in flight each, random 16 KiB I/O on cow over pattern") {
  const double seconds = stress_seconds();
  std::vector<Result> results(nthreads);
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < nthreads; ++i)
    threads.emplace_back([&, i] {
      try {
        worker(i, seconds, results[i]);
      } catch (const std::exception& e) {
        results[i].failure = e.what();
      }
    });
  for (auto& t : threads) t.join();
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  Result total;
  for (std::size_t i = 0; i < nthreads; ++i) {
    const Result& r = results[i];
    INFO("thread " << i);
    CHECK(r.failure == "");
    total.reads += r.reads;
    total.writes += r.writes;
    total.completions += r.completions;
    total.errors += r.errors;
    total.mismatches += r.mismatches;
    total.lost += r.lost;
  }
  MESSAGE("stress (" << nbdtest::expected_transport() << ", " << seconds << " s): "
                     << total.reads << " reads, " << total.writes << " writes in " << took
                     << " s");
  CHECK(total.completions == total.reads + total.writes);
  CHECK(total.lost == 0);
  CHECK(total.errors == 0);
  CHECK(total.mismatches == 0);
  CHECK(total.reads > 0);
  CHECK(total.writes > 0);
}
