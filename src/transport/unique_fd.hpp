// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <unistd.h>

#include <utility>

namespace nbd::transport {

/// Move-only owner of a file descriptor; closes it on destruction.
class UniqueFd {
public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}

  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    // Self-move must not close the descriptor we are about to keep.
    if (this != &other)
      reset(other.release());
    return *this;
  }

  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }

  /// Gives up ownership without closing; the caller now owns the fd.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

  /// Closes the current fd (if any) and takes ownership of `fd`.
  void reset(int fd = -1) noexcept {
    int old = std::exchange(fd_, fd);
    // Never retry close() on EINTR: on Linux the descriptor is released
    // even then, and a retry could close an fd another thread just opened.
    if (old >= 0)
      ::close(old);
  }

  explicit operator bool() const noexcept { return fd_ >= 0; }

private:
  int fd_ = -1;
};

} // namespace nbd::transport
