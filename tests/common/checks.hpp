// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// Checks every test suite may share (integration, interop, hostile):
// header-only, so a suite includes it without linking anything more.

#include <nbdcpp/handle.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace nbdtest {

/// Runs f; returns the errno of the nbd::Error it threw, or 0 if it did not
/// throw (any other exception propagates and fails the test).
template <typename F>
int error_of(F&& f) {
  try {
    f();
  } catch (const nbd::Error& e) {
    return e.errnum();
  }
  return 0;
}

/// What an nbd::Error said: its errno (0: nothing was thrown) and message.
struct Failure {
  int err = 0;
  std::string what;
};

/// Runs f; the nbd::Error it threw, or {} if it did not throw.
template <typename F>
Failure failure_of(F&& f) {
  try {
    f();
  } catch (const nbd::Error& e) {
    return {e.errnum(), e.what()};
  }
  return {};
}

/// Bytes to write at an offset, and to find there again.
struct Write {
  std::uint64_t off;
  std::vector<std::uint8_t> data;
};

/// Writes each of writes with a blocking pwrite (with flags), then reads
/// each back with pread and checks it.
inline void write_and_read_back(nbd::Handle& h, const std::vector<Write>& writes, std::uint32_t flags = 0) {
  for (const auto& w : writes) h.pwrite(w.data, w.off, flags);
  for (const auto& w : writes) {
    CAPTURE(w.off);
    std::vector<std::uint8_t> back(w.data.size());
    h.pread(back, w.off);
    CHECK(back == w.data);
  }
}

} // namespace nbdtest
