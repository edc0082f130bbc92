// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <nbdcpp/error.hpp>

#include <poll.h>

#include <cerrno>
#include <chrono>
#include <cstdint>

namespace nbd::transport {

/// poll() that survives EINTR without overrunning the caller's timeout:
/// after an interruption it waits only for what is left until deadline.
/// Counts each call in syscalls; throws nbd::Error on any other failure.
inline int poll_until(pollfd* fds, std::size_t n, int timeout_ms,
                      std::chrono::steady_clock::time_point deadline, std::uint64_t& syscalls) {
  for (;;) {
    int t = timeout_ms;
    if (timeout_ms > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      t = left.count() > 0 ? static_cast<int>(left.count()) : 0;
    }
    ++syscalls;
    int r = ::poll(fds, n, t);
    if (r >= 0) return r;
    if (errno != EINTR) throw Error(errno, "poll");
  }
}

} // namespace nbd::transport
