// SPDX-License-Identifier: BSD-3-Clause
// The reply batching policy on its own: when a receive waits, how long, and
// how it backs off when waiting does not pay (the io_uring mechanism is
// tested in test_transport.cpp).

#include "transport/reply_batching.hpp"

#include <doctest/doctest.h>

using nbd::transport::ReplyBatching;

namespace {
constexpr std::size_t staging = 256 * 1024;
constexpr std::uint64_t small = 4096;

// One receive at QD 16 with 4 KiB reads that returns `replies`; returns
// whether it waited.
bool receive16(ReplyBatching& b, std::uint64_t replies) {
  bool waited = b.arm(16, 16 * small, staging) > 0;
  b.received(replies);
  return waited;
}
} // namespace

TEST_CASE("reply batching: waits only with enough small replies in flight") {
  ReplyBatching b;
  CHECK(b.enabled());
  CHECK(b.arm(1, small, staging) == 0);
  CHECK(b.arm(ReplyBatching::min_in_flight - 1, 7 * small, staging) == 0);
  CHECK(b.arm(ReplyBatching::min_in_flight, 8 * small, staging) ==
        8 * ReplyBatching::ns_per_command);
  CHECK(b.arm(16, 16 * small, staging) == 16 * ReplyBatching::ns_per_command);
  CHECK(b.arm(64, 64 * small, staging) == 64 * ReplyBatching::ns_per_command);
  // Deep queues: capped.
  CHECK(b.arm(80, 80 * 1024, staging) == ReplyBatching::max_ns);
  CHECK(b.arm(1000, 0, staging) == ReplyBatching::max_ns); // writes: no read payload
  // Large payloads (received in place) or more than staging holds: at once.
  CHECK(b.arm(16, 16 * 1024 * 1024, staging) == 0);
  CHECK(b.arm(16, staging + 1, staging) == 0);
  CHECK(b.arm(16, staging, staging) > 0);
}

TEST_CASE("reply batching: off means never") {
  ReplyBatching b;
  b.set_enabled(false);
  CHECK_FALSE(b.enabled());
  CHECK(b.arm(64, 64 * small, staging) == 0);
  b.set_enabled(true);
  CHECK(b.arm(64, 64 * small, staging) > 0);
}

TEST_CASE("reply batching: full batches keep it going") {
  ReplyBatching b;
  for (int i = 0; i < 1000; ++i) REQUIRE(receive16(b, 6));
  CHECK_FALSE(b.paused());
}

TEST_CASE("reply batching: batches of one reply pause it, then it tries again") {
  ReplyBatching b;
  int batched = 0;
  while (!b.paused()) {
    REQUIRE(receive16(b, 1));
    REQUIRE(++batched < 50);
  }
  CHECK(batched > 1); // one short batch is not enough
  for (unsigned i = 0; i < ReplyBatching::pause_receives; ++i) CHECK_FALSE(receive16(b, 1));
  CHECK_FALSE(b.paused());
  CHECK(receive16(b, 6)); // a new trial
  // Receives with few commands in flight neither wait nor count.
  for (int i = 0; i < 10; ++i) {
    CHECK(b.arm(2, 2 * small, staging) == 0);
    b.received(0);
  }
  CHECK_FALSE(b.paused());
}

TEST_CASE("reply batching: pauses when not waiting finds nearly as many replies") {
  // A server whose replies come in twos and threes anyway (qemu-nbd): 10
  // per batch is above min_yield, but not min_gain times what a plain
  // receive gets.
  ReplyBatching b;
  while (!b.paused()) REQUIRE(receive16(b, 1)); // first pause: learns the plain yield below
  for (unsigned i = 0; i < ReplyBatching::pause_receives; ++i) CHECK_FALSE(receive16(b, 3));
  int batched = 0;
  while (!b.paused()) {
    REQUIRE(receive16(b, 10));
    REQUIRE(++batched < 100);
  }
  CHECK(batched > 1);
  // Whereas against one reply per plain receive, 10 per batch is worth it.
  ReplyBatching c;
  while (!c.paused()) REQUIRE(receive16(c, 1));
  for (unsigned i = 0; i < ReplyBatching::pause_receives; ++i) CHECK_FALSE(receive16(c, 1));
  for (int i = 0; i < 1000; ++i) REQUIRE(receive16(c, 10));
  CHECK_FALSE(c.paused());
}

TEST_CASE("reply batching: an empty batch (EOF, a partial reply) counts as short") {
  ReplyBatching b;
  int n = 0;
  while (!b.paused() && n < 50) {
    receive16(b, 0);
    ++n;
  }
  CHECK(b.paused());
  CHECK(n < 10);
}

TEST_CASE("reply batching: switching it back on starts afresh") {
  ReplyBatching b;
  while (!b.paused()) REQUIRE(receive16(b, 1));
  b.set_enabled(true); // already on: changes nothing
  CHECK(b.paused());
  b.set_enabled(false);
  CHECK(b.arm(16, 16 * small, staging) == 0);
  b.set_enabled(true);
  CHECK_FALSE(b.paused());
  CHECK(receive16(b, 6));
}
