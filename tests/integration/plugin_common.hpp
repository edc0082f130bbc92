// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// Shared by the test_plugin_*.cpp suites: starting nbdkit with the test
// plugin (tests/plugins/test-plugin.c, see its README.md), reading its call
// log, and probes that count how often a callback runs and dies.
//
// Everything here is header-only and lives in namespace ptest, so that it
// cannot collide with helpers other suites add to harness.hpp.

#include "harness.hpp"

#include <doctest/doctest.h>
#include <nbdcpp/handle.hpp>

#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace ptest {

inline constexpr const char* v2 = "nbdkit-test-plugin.so";
inline constexpr const char* no_errno = "nbdkit-test-plugin-no-errno.so";
inline constexpr const char* v1 = "nbdkit-test-plugin-v1.so";

/// nbdkit arguments for the test plugin: OPTS (e.g. --filter=..., -r) go
/// before the plugin, PARAMS after it. nbdkit's own error messages (many
/// tests provoke them on purpose) are discarded unless NBDCPP_TEST_VERBOSE
/// is set in the environment.
inline std::vector<std::string> args(std::vector<std::string> params,
                                     std::vector<std::string> opts = {},
                                     const char* which = v2) {
  std::vector<std::string> a;
  const char* verbose = std::getenv("NBDCPP_TEST_VERBOSE");
  if (!verbose || !*verbose) a.push_back("--log=null");
  a.insert(a.end(), opts.begin(), opts.end());
  a.push_back(nbdtest::plugin(which));
  a.insert(a.end(), params.begin(), params.end());
  return a;
}

/// Connects h to `nbdkit -s --exit-with-parent OPTS plugin PARAMS`.
inline void connect(nbd::Handle& h, std::vector<std::string> params,
                    std::vector<std::string> opts = {}, const char* which = v2) {
  nbdtest::connect(h, args(std::move(params), std::move(opts), which));
}

/// Runs f and returns the errno of the nbd::Error it threw, 0 if none.
template <typename F>
int errno_of(F&& f) {
  return nbdtest::error_of(std::forward<F>(f));
}

/// "EINVAL (Invalid argument)" for messages.
inline std::string errname(int e) { return std::to_string(e) + " " + std::string(std::strerror(e)); }

/// True if the nbdkit filter is installed (nbdkit --dump-config filterdir).
inline bool have_filter(const std::string& name) {
  static const char* dirs[] = {"/usr/lib/x86_64-linux-gnu/nbdkit/filters",
                               "/usr/lib64/nbdkit/filters", "/usr/lib/nbdkit/filters",
                               "/usr/local/lib/nbdkit/filters"};
  for (const char* d : dirs) {
    struct stat st;
    std::string p = std::string(d) + "/nbdkit-" + name + "-filter.so";
    if (::stat(p.c_str(), &st) == 0) return true;
  }
  return false;
}

// A TEST_CASE decorator and a body guard for tests that need an nbdkit
// filter: doctest reports the case as skipped when the filter is missing
// (and if it is run anyway with --no-skip, the body says why and stops).
#define PTEST_NEEDS_FILTER(filter) \
  doctest::skip(!ptest::have_filter(filter)) * doctest::description("needs nbdkit-" filter "-filter")
#define PTEST_REQUIRE_FILTER(filter)                                                \
  do {                                                                              \
    if (!ptest::have_filter(filter)) {                                              \
      MESSAGE("SKIP: nbdkit-" filter "-filter is not installed (Debian: nbdkit)");   \
      return;                                                                       \
    }                                                                               \
  } while (0)

/// The plugin's call log in a private temporary directory.
class Log {
public:
  Log() : path_(dir_.file("calls.log")) {}
  /// The plugin parameter that turns the log on.
  std::string param() const { return "log=" + path_; }
  const std::string& path() const { return path_; }

  /// Every line, with the trailing " conn=N" removed.
  std::vector<std::string> lines() const {
    std::vector<std::string> out;
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      auto p = line.rfind(" conn=");
      if (p != std::string::npos) line.erase(p);
      out.push_back(line);
    }
    return out;
  }

  /// The lines of the data callbacks only (pread pwrite flush trim zero
  /// extents cache): what reached the plugin on the transmission phase.
  std::vector<std::string> data() const {
    std::vector<std::string> out;
    for (auto& l : lines())
      if (is_data(l)) out.push_back(l);
    return out;
  }

  /// The lines that start with NAME followed by a space.
  std::vector<std::string> named(std::string_view name) const {
    std::vector<std::string> out;
    for (auto& l : lines())
      if (l.size() > name.size() && l.compare(0, name.size(), name) == 0 && l[name.size()] == ' ')
        out.push_back(l);
    return out;
  }

  static bool is_data(const std::string& l) {
    for (const char* n : {"pread ", "pwrite ", "flush ", "trim ", "zero ", "extents ", "cache "})
      if (l.rfind(n, 0) == 0) return true;
    return false;
  }

private:
  nbdtest::TempDir dir_;
  std::string path_;
};

/// What a probe saw: calls of the callable and deaths of the live callable
/// (moved-from shells do not count).
struct Counts {
  int calls = 0;
  int destroyed = 0;
  std::vector<int> errors; // *error at each completion call
};

/// Moves its "live" mark along, so only the last owner's death counts.
struct LifeMark {
  Counts* c;
  explicit LifeMark(Counts* counts) : c(counts) {}
  LifeMark(LifeMark&& o) noexcept : c(std::exchange(o.c, nullptr)) {}
  LifeMark(const LifeMark&) = delete;
  LifeMark& operator=(const LifeMark&) = delete;
  LifeMark& operator=(LifeMark&&) = delete;
  ~LifeMark() {
    if (c) ++c->destroyed;
  }
};

/// A completion callback recording into Counts; returns ret (1 retires).
struct Completion {
  LifeMark mark;
  int ret;
  explicit Completion(Counts* c, int r = 1) : mark(c), ret(r) {}
  int operator()(int* error) {
    ++mark.c->calls;
    mark.c->errors.push_back(*error);
    return ret;
  }
};

/// A chunk callback for pread_structured recording each chunk's status.
struct Chunk {
  LifeMark mark;
  std::vector<unsigned>* statuses;
  Chunk(Counts* c, std::vector<unsigned>* s) : mark(c), statuses(s) {}
  int operator()(std::span<const std::uint8_t>, std::uint64_t, unsigned status, int*) {
    ++mark.c->calls;
    statuses->push_back(status);
    return 0;
  }
};

/// Drives h until cookie completes; returns its errno (0 on success) and
/// retires it.
inline int wait_for(nbd::Handle& h, std::uint64_t cookie) {
  for (;;) {
    std::error_code ec;
    bool done = h.aio_command_completed(cookie, ec);
    if (ec) return ec.value();
    if (done) return 0;
    h.poll(-1);
  }
}

/// Drives h until nothing is in flight.
inline void drain(nbd::Handle& h) {
  while (h.aio_in_flight() > 0 && !h.aio_is_dead() && !h.aio_is_closed()) h.poll(-1);
}

/// A cookie-spending, plugin-visible probe command: a read at offset 0 of
/// the export's minimum block size (1 byte when it has none; every export
/// here has pread and is at least that big). Returns its cookie.
inline std::uint64_t probe_read(nbd::Handle& h) {
  std::int64_t min = h.get_block_size(nbd::SIZE_MINIMUM);
  std::vector<std::uint8_t> buf(min > 0 ? static_cast<std::size_t>(min) : 1);
  std::uint64_t c = h.aio_pread(buf, 0);
  REQUIRE(wait_for(h, c) == 0);
  return c;
}

/// True for the log line of a probe_read.
inline bool is_probe(const std::string& line) { return line.rfind("pread offset=0 count=", 0) == 0; }

/// Checks that `call` (given a fresh Completion) is rejected on the client
/// side with errno want: no cookie spent (the next command's cookie is the
/// previous one + 1), the completion never ran but was destroyed exactly
/// once, and nothing reached the plugin (log unchanged but for the probe).
template <typename Call>
void expect_client_reject(nbd::Handle& h, const Log& log, int want, Call&& call) {
  std::uint64_t before = probe_read(h);
  auto lines_before = log.data();
  Counts counts;
  int got = errno_of([&] { call(Completion(&counts)); });
  CHECK_MESSAGE(got == want, "errno " << got << " (" << errname(got) << "), want " << want
                                      << " (" << errname(want) << ")");
  CHECK(counts.calls == 0);
  CHECK(counts.destroyed == 1);
  std::uint64_t after = probe_read(h);
  CHECK(after == before + 1);
  auto lines_after = log.data();
  REQUIRE(lines_after.size() == lines_before.size() + 1);
  CHECK(is_probe(lines_after.back()));
}

/// Checks that `call` (an aio_* call given a fresh Completion, returning
/// its cookie) goes on the wire and the server fails it with errno want:
/// a cookie is spent, the completion runs once with want and dies once,
/// and the synchronous form `sync` fails with nbd::Error(want) too.
template <typename Call>
std::uint64_t expect_server_error(nbd::Handle& h, int want, Call&& call) {
  std::uint64_t before = probe_read(h);
  Counts counts;
  std::uint64_t cookie = 0;
  int thrown = errno_of([&] { cookie = call(Completion(&counts)); });
  REQUIRE_MESSAGE(thrown == 0, "rejected on the client side with errno " << thrown);
  CHECK(cookie == before + 1);
  drain(h);
  CHECK(counts.calls == 1);
  CHECK(counts.destroyed == 1);
  REQUIRE(counts.errors.size() == 1);
  CHECK_MESSAGE(counts.errors[0] == want, "completion errno " << counts.errors[0] << " ("
                                                              << errname(counts.errors[0])
                                                              << "), want " << want);
  return cookie;
}

inline std::vector<std::uint8_t> bytes(std::size_t n, std::uint8_t fill = 0) {
  return std::vector<std::uint8_t>(n, fill);
}

inline bool all_equal(const std::vector<std::uint8_t>& v, std::uint8_t b) {
  for (auto x : v)
    if (x != b) return false;
  return true;
}

} // namespace ptest
