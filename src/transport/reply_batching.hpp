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
//   flight (12 us at QD 16, 48 us at QD 64), and never holds a reply up
//   more than max_ns.
// - It pays only if batches hold many more replies than receives that do
//   not wait. Against nbdkit a receive that does not wait finds about one
//   reply, one that waits 13 (QD 16) to 24 (QD 64), and CPU per reply
//   falls by a fifth to a third. Against qemu-nbd (slower, and it writes a
//   reply in one piece) one that does not wait finds 1.5 to 3, one that
//   waits 8 to 11, and the client spends more CPU per reply, not less. So
//   the replies per receive are averaged, for receives that waited and for
//   those that did not (with as many commands in flight); when waiting
//   yields less than min_yield, or less than min_gain times what not
//   waiting does, batching pauses for pause_receives receives (which also
//   measure the latter), then is tried again.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace nbd::transport {

class ReplyBatching {
public:
  static constexpr std::size_t min_in_flight = 8;
  static constexpr long ns_per_command = 750;
  static constexpr long max_ns = 50'000;
  static constexpr unsigned min_yield = 3;        // replies per receive that waited
  static constexpr unsigned min_gain = 6;         // times the replies of one that did not
  static constexpr unsigned pause_receives = 256; // receives without waiting

  /// The handle's setting (Handle::set_reply_batching); also false for
  /// good when the kernel lacks what the timer needs. Switching it back on
  /// starts afresh: what was learnt before may no longer hold.
  void set_enabled(bool on) {
    if (on && !enabled_) *this = ReplyBatching{};
    enabled_ = on;
  }
  bool enabled() const { return enabled_; }

  /// A staging receive is about to be armed: how long it should wait first,
  /// in nanoseconds; 0 means receive at once.
  long arm(std::size_t in_flight, std::uint64_t read_bytes_in_flight, std::size_t staging_size) {
    last_ = Last::other;
    if (!enabled_ || in_flight < min_in_flight || read_bytes_in_flight > staging_size) return 0;
    if (pause_left_ > 0) {
      // The last paused receive: a fair new trial against what plain
      // receives yield now.
      if (--pause_left_ == 0) batched_x16_ = 2 * threshold_x16();
      last_ = Last::plain;
      return 0;
    }
    last_ = Last::batched;
    return std::min(max_ns, ns_per_command * static_cast<long>(in_flight));
  }

  /// The receive armed last returned, and the engine parsed `replies`
  /// reply headers (or chunks) from it.
  void received(std::uint64_t replies) {
    const auto r16 = static_cast<std::int64_t>(std::min<std::uint64_t>(replies, 1024) * 16);
    switch (std::exchange(last_, Last::other)) {
    case Last::other: return;
    case Last::plain: plain_x16_ += (r16 - plain_x16_) / 8; return;
    case Last::batched: batched_x16_ += (r16 - batched_x16_) / 8; break;
    }
    if (batched_x16_ < threshold_x16()) pause_left_ = pause_receives;
  }

  bool paused() const { return pause_left_ > 0; }

private:
  enum class Last : std::uint8_t { other, plain, batched };
  std::int64_t threshold_x16() const {
    return std::max<std::int64_t>(min_yield * 16, min_gain * plain_x16_);
  }

  bool enabled_ = true;
  Last last_ = Last::other;
  // Moving averages of replies per receive, in 1/16 reply units. Optimistic
  // start: a few short batches are needed to pause.
  std::int64_t plain_x16_ = 16;
  std::int64_t batched_x16_ = 2 * std::max(min_yield, min_gain) * 16;
  unsigned pause_left_ = 0;
};

} // namespace nbd::transport
