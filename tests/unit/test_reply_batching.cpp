// SPDX-License-Identifier: BSD-3-Clause
// The reply batching policy on its own: when a receive waits, how long, and
// how it backs off when batches turn out small (the io_uring mechanism is
// tested in test_transport.cpp).

#include "transport/reply_batching.hpp"

#include <doctest/doctest.h>

using nbd::transport::ReplyBatching;

namespace {
constexpr std::size_t staging = 256 * 1024;
constexpr std::uint64_t small = 4096;
} // namespace

TEST_CASE("reply batching: waits only with enough small replies in flight") {
  ReplyBatching b;
  CHECK(b.enabled());
  CHECK(b.delay_ns(1, small, staging) == 0);
  CHECK(b.delay_ns(ReplyBatching::min_in_flight - 1, 7 * small, staging) == 0);
  CHECK(b.delay_ns(ReplyBatching::min_in_flight, 8 * small, staging) ==
        8 * ReplyBatching::ns_per_command);
  CHECK(b.delay_ns(16, 16 * small, staging) == 16 * ReplyBatching::ns_per_command);
  // Deep queues: capped.
  CHECK(b.delay_ns(64, 64 * small, staging) == 64 * ReplyBatching::ns_per_command);
  CHECK(b.delay_ns(80, 80 * 1024, staging) == ReplyBatching::max_ns);
  CHECK(b.delay_ns(1000, 0, staging) == ReplyBatching::max_ns); // writes: no read payload
  // Large payloads (received in place) or more than staging holds: at once.
  CHECK(b.delay_ns(16, 16 * 1024 * 1024, staging) == 0);
  CHECK(b.delay_ns(16, staging + 1, staging) == 0);
  CHECK(b.delay_ns(16, staging, staging) > 0);
}

TEST_CASE("reply batching: off means never") {
  ReplyBatching b;
  b.set_enabled(false);
  CHECK_FALSE(b.enabled());
  CHECK(b.delay_ns(64, 64 * small, staging) == 0);
  b.set_enabled(true);
  CHECK(b.delay_ns(64, 64 * small, staging) > 0);
}

TEST_CASE("reply batching: full batches keep it going") {
  ReplyBatching b;
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(b.delay_ns(16, 16 * small, staging) > 0);
    b.on_batch(ReplyBatching::min_yield + 2);
  }
  CHECK_FALSE(b.paused());
}

TEST_CASE("reply batching: batches of one reply pause it, then it tries again") {
  ReplyBatching b;
  int batched = 0;
  while (!b.paused()) {
    REQUIRE(b.delay_ns(16, 16 * small, staging) > 0);
    b.on_batch(1);
    REQUIRE(++batched < 50);
  }
  CHECK(batched > 1); // one short batch is not enough
  for (unsigned i = 0; i < ReplyBatching::pause_receives; ++i)
    CHECK(b.delay_ns(16, 16 * small, staging) == 0);
  CHECK_FALSE(b.paused());
  // A new trial: the first receives after the pause wait again.
  CHECK(b.delay_ns(16, 16 * small, staging) > 0);
  // Receives that never waited (too few in flight) do not count towards
  // the pause.
  b.on_batch(1);
  for (int i = 0; i < 10; ++i) {
    CHECK(b.delay_ns(2, 2 * small, staging) == 0);
  }
  CHECK_FALSE(b.paused());
}

TEST_CASE("reply batching: an empty batch (EOF, a partial reply) counts as short") {
  ReplyBatching b;
  int n = 0;
  while (!b.paused() && n < 50) {
    b.delay_ns(16, 16 * small, staging);
    b.on_batch(0);
    ++n;
  }
  CHECK(b.paused());
  CHECK(n < 10);
}
