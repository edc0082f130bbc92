// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// When a receive should wait for a batch of replies, and for how long: the
// policy behind the io_uring transport's batching timer (the mechanism is
// in uring_transport.cpp). No I/O here.
//
// On a busy connection every reply the server writes wakes the receive
// waiting for it, and the client spends a wakeup, a receive and a system
// call on each (or two: nbdkit writes header and data separately), while
// competing with the server for the CPUs. With many commands in flight
// nobody waits for any one reply, so the receive can start after a short
// timer instead and take a batch: fewer wakeups, receives and submissions
// per reply, the same bytes.
//
// - Only with at least min_in_flight commands in flight, and only for small
//   replies (all expected read payloads together fit the staging buffer:
//   large payloads are received in place, and a server blocked on a full
//   socket buffer must not wait for our timer).
// - The timer grows with the queue, ns_per_command for each command in
//   flight (a batch of about 5 replies at QD 16 against nbdkit's null
//   plugin, 10 at QD 64), and never holds a reply up more than max_ns.
// - It pays only if batches hold several replies: against a slow server a
//   timer costs about what it saves. The replies per batched receive are
//   averaged; when the average drops below min_yield, batching pauses for
//   pause_receives receives, then is tried again.

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace nbd::transport {

class ReplyBatching {
public:
  static constexpr std::size_t min_in_flight = 8;
  static constexpr long ns_per_command = 750;
  static constexpr long max_ns = 50'000;
  static constexpr unsigned min_yield = 3;        // replies per batched receive
  static constexpr unsigned pause_receives = 256; // receives without batching

  /// The handle's setting (Handle::set_reply_batching); also false for
  /// good when the kernel lacks what the timer needs.
  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }

  /// A staging receive is about to be armed: how long it should wait first,
  /// in nanoseconds; 0 means receive at once.
  long delay_ns(std::size_t in_flight, std::uint64_t read_bytes_in_flight,
                std::size_t staging_size) {
    if (!enabled_ || in_flight < min_in_flight || read_bytes_in_flight > staging_size) return 0;
    if (pause_left_ > 0) {
      --pause_left_;
      return 0;
    }
    return std::min(max_ns, ns_per_command * static_cast<long>(in_flight));
  }

  /// A receive that waited returned, and the engine parsed `replies` reply
  /// headers (or chunks) from it.
  void on_batch(std::uint64_t replies) {
    const auto r16 = static_cast<std::int64_t>(std::min<std::uint64_t>(replies, 1024) * 16);
    yield_x16_ += (r16 - yield_x16_) / 8; // moving average, 1/16 reply units
    if (yield_x16_ < min_yield * 16) {
      pause_left_ = pause_receives;
      yield_x16_ = start_yield_x16; // a fair new trial after the pause
    }
  }

  bool paused() const { return pause_left_ > 0; }

private:
  // Optimistic start: a few short batches are needed to pause.
  static constexpr std::int64_t start_yield_x16 = 2 * min_yield * 16;
  bool enabled_ = true;
  std::int64_t yield_x16_ = start_yield_x16;
  unsigned pause_left_ = 0;
};

} // namespace nbd::transport
