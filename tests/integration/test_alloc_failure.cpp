// SPDX-License-Identifier: BSD-3-Clause
// Out of memory while queueing a command: the call throws std::bad_alloc
// (the noexcept form reports ENOMEM), nothing is queued, a read's buffer
// is zeroed as for any rejected read (pread_initialize), and the handle
// goes on: later commands run and every queued one completes exactly once.
// Built as its own executable (alloc-failure-tests): it replaces the
// global operator new.

#include "../common/alloc_failure.hpp"
#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <new>
#include <system_error>
#include <vector>

namespace {

constexpr std::size_t len = 4096;

bool all_zero(const std::vector<std::uint8_t>& b) {
  return std::all_of(b.begin(), b.end(), [](std::uint8_t c) { return c == 0; });
}

bool is_pattern(const std::vector<std::uint8_t>& b, std::uint64_t offset) {
  for (std::size_t i = 0; i < b.size(); ++i)
    if (b[i] != nbdtest::pattern_byte(offset + i)) return false;
  return true;
}

} // namespace

TEST_CASE("out of memory in a handle's first aio_pread, at each allocation it makes") {
  // A fresh handle per step: the first command allocates the command
  // slots, the cookie table and the completion records; step n fails
  // allocation n, until a step needs fewer than n.
  bool finished = false;
  for (long n = 0; n < 50 && !finished; ++n) {
    CAPTURE(n);
    nbd::Handle h;
    nbdtest::connect(h, {"pattern", "1M"});
    std::vector<std::uint8_t> buf(len, 0xAA);
    int calls = 0;
    bool threw = false;
    std::uint64_t cookie = 0;
    {
      nbdtest::AllocFailure fail(n);
      try {
        cookie = h.aio_pread(buf, 8192, [&](int* err) {
          ++calls;
          CHECK(*err == 0);
          return 1;
        });
      } catch (const std::bad_alloc&) {
        threw = true;
      }
      finished = !fail.happened();
      CHECK(threw == fail.happened());
    }
    if (threw) {
      CHECK(h.aio_in_flight() == 0);
      CHECK(all_zero(buf));
      CHECK(calls == 0);
      // The handle goes on.
      cookie = h.aio_pread(buf, 8192, [&](int*) {
        ++calls;
        return 1;
      });
    }
    CHECK(cookie >= 1);
    while (h.aio_in_flight() > 0) h.poll(-1);
    CHECK(calls == 1);
    CHECK(is_pattern(buf, 8192));
    h.shutdown();
  }
  CHECK(finished);
}

TEST_CASE("out of memory while commands are in flight: the tables grow later, nothing is lost") {
  // 300 reads queued one by one, each first with its first allocation
  // failing: where the slots, the cookie table or the records must grow,
  // that read is refused and queued again without the failure. Then every
  // read completes once, with the right data.
  nbd::Handle h;
  nbdtest::connect(h, {"pattern", "4M"});
  constexpr int count = 300;
  std::vector<std::vector<std::uint8_t>> bufs(count, std::vector<std::uint8_t>(len));
  std::vector<int> calls(count, 0);
  int refused = 0;
  for (int i = 0; i < count; ++i) {
    CAPTURE(i);
    auto cb = [&calls, i](int* err) {
      ++calls[static_cast<std::size_t>(i)];
      CHECK(*err == 0);
      return 1;
    };
    const std::uint64_t offset = static_cast<std::uint64_t>(i) * len;
    const auto in_flight = h.aio_in_flight();
    std::fill(bufs[i].begin(), bufs[i].end(), 0xAA);
    bool threw = false;
    {
      nbdtest::AllocFailure fail(0);
      try {
        h.aio_pread(bufs[i], offset, cb);
      } catch (const std::bad_alloc&) {
        threw = true;
      }
    }
    if (threw) {
      ++refused;
      CHECK(h.aio_in_flight() == in_flight);
      CHECK(all_zero(bufs[i]));
      // The noexcept form says ENOMEM.
      std::error_code ec;
      {
        nbdtest::AllocFailure fail(0);
        CHECK(h.aio_pread(bufs[i], offset, cb, 0, ec) == 0);
      }
      CHECK(ec.value() == ENOMEM);
      CHECK(h.aio_in_flight() == in_flight);
      h.aio_pread(bufs[i], offset, cb);
    }
    CHECK(h.aio_in_flight() == in_flight + 1);
  }
  // Growing from nothing to 300 commands in flight needs several
  // allocations; each was refused once.
  CHECK(refused >= 3);
  while (h.aio_in_flight() > 0) h.poll(-1);
  for (int i = 0; i < count; ++i) {
    CAPTURE(i);
    CHECK(calls[static_cast<std::size_t>(i)] == 1);
    CHECK(is_pattern(bufs[static_cast<std::size_t>(i)], static_cast<std::uint64_t>(i) * len));
  }
  h.shutdown();
}
