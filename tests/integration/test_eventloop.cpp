// SPDX-License-Identifier: BSD-3-Clause
// Driving a handle from the caller's own event loop: aio_get_fd,
// aio_get_direction, aio_notify_read / aio_notify_write, poll and poll2.
// Must work on both transports (for io_uring the fd is the ring's).

#include "harness.hpp"

#include <doctest/doctest.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <string>
#include <thread>
#include <vector>

using nbdtest::CallCounter;
using nbdtest::CountedCompletion;
using nbdtest::error_of;

namespace {

constexpr std::uint64_t kib = 1024;

std::string fd_target(int fd) {
  char buf[PATH_MAX];
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

struct EventFd {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  EventFd() { REQUIRE(fd >= 0); }
  ~EventFd() { ::close(fd); }
  void signal() const {
    std::uint64_t one = 1;
    REQUIRE(::write(fd, &one, sizeof one) == static_cast<ssize_t>(sizeof one));
  }
  bool drain() const {
    std::uint64_t v = 0;
    return ::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v);
  }
};

} // namespace

TEST_CASE("a whole connection driven by the caller's poll() loop") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  // No connection yet: no fd, no direction.
  CHECK(error_of([&] { h.aio_get_fd(); }) != 0);
  CHECK(h.aio_get_direction() == 0);

  h.aio_connect_command(nbdtest::nbdkit({"memory", "8M"}));
  nbdtest::poll_loop(h, [&] { return !h.aio_is_connecting(); });
  REQUIRE(h.aio_is_ready());

  // The fd is what the transport polls on: the ring for io_uring.
  int fd = h.aio_get_fd();
  REQUIRE(fd >= 0);
  if (nbdtest::expected_transport() == "io_uring")
    CHECK(fd_target(fd) == "anon_inode:[io_uring]");
  else
    CHECK(fd_target(fd).rfind("socket:", 0) == 0);

  // 100 writes, then 100 reads of what they wrote, all in flight at once.
  constexpr int n = 100;
  std::vector<std::vector<std::uint8_t>> wbufs(n), rbufs(n);
  CallCounter writes, reads;
  for (int i = 0; i < n; ++i) {
    wbufs[i].assign(8 * kib, static_cast<std::uint8_t>(i + 1));
    h.aio_pwrite(wbufs[i], static_cast<std::uint64_t>(i) * 8 * kib, CountedCompletion(&writes));
  }
  CHECK(h.aio_is_processing());
  // Queued work is waiting to go out.
  CHECK((h.aio_get_direction() & nbd::AIO_DIRECTION_WRITE) != 0);
  nbdtest::poll_loop(h, [&] { return writes.calls == n; });
  CHECK(h.aio_is_ready());
  for (int i = 0; i < n; ++i) {
    rbufs[i].assign(8 * kib, 0);
    h.aio_pread(rbufs[i], static_cast<std::uint64_t>(i) * 8 * kib, CountedCompletion(&reads));
  }
  int extents = 0;
  h.aio_block_status(8 * 1024 * kib, 0, [&](std::string_view, std::uint64_t,
                                            std::span<std::uint32_t>, int*) {
    ++extents;
    return 0;
  });
  nbdtest::poll_loop(h, [&] { return reads.calls == n && h.aio_in_flight() == 0; });
  CHECK(extents == 1);
  for (int i = 0; i < n; ++i) CHECK(rbufs[i] == wbufs[i]);
  for (int e : writes.errors) CHECK(e == 0);
  for (int e : reads.errors) CHECK(e == 0);

  // Idle: only a read matters (a reply, or the server hanging up).
  CHECK(h.aio_get_direction() == nbd::AIO_DIRECTION_READ);

  h.aio_disconnect();
  nbdtest::poll_loop(h, [&] { return h.aio_is_closed(); });
  CHECK(h.aio_get_direction() == 0);
}

TEST_CASE("spurious notifications are harmless") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "1M"});
  for (int i = 0; i < 10; ++i) {
    h.aio_notify_read();
    h.aio_notify_write();
  }
  std::error_code ec;
  h.aio_notify_read(ec);
  CHECK_FALSE(ec);
  h.aio_notify_write(ec);
  CHECK_FALSE(ec);
  CHECK(h.aio_is_ready());
  std::vector<std::uint8_t> buf(4096);
  h.pread(buf, 0);
  // poll(0) never blocks; with nothing to do it reports a timeout or
  // harmless progress.
  CHECK(h.poll(0) >= 0);
  CHECK(h.poll(0, ec) >= 0);
  CHECK_FALSE(ec);
}

TEST_CASE("poll2 returns when the extra fd is readable") {
  EventFd efd;
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "1M"});

  SUBCASE("already readable, nothing in flight") {
    efd.signal();
    CHECK(h.poll2(efd.fd, -1) == 1);
    CHECK(efd.drain());
  }
  SUBCASE("connection progress also returns, with the extra fd quiet") {
    std::vector<std::uint8_t> buf(64 * kib);
    CallCounter c;
    h.aio_pread(buf, 0, CountedCompletion(&c));
    while (c.calls == 0) h.poll2(efd.fd, -1);
    CHECK(c.errors.at(0) == 0);
    CHECK_FALSE(efd.drain());
  }
}

TEST_CASE("poll2 wakes on the extra fd while a command is stuck in the server") {
  EventFd efd;
  CallCounter c;
  std::vector<std::uint8_t> buf(4096, 0xff);
  {
    nbd::Handle h;
    // The delay filter keeps the read in the server far longer than the test.
    nbdtest::connect(h, {"--filter=delay", "memory", "1M", "rdelay=60"});
    h.aio_pread(buf, 0, CountedCompletion(&c));
    std::thread t([&] { efd.signal(); });
    int r = 0;
    do {
      r = h.poll2(efd.fd, -1);
    } while (!efd.drain());
    t.join();
    CHECK(r == 1);
    CHECK(c.calls == 0);
    CHECK(h.aio_is_processing());
    // Destroying the handle completes the stuck read with ENOTCONN.
  }
  CHECK(c.calls == 1);
  CHECK(c.errors.at(0) == ENOTCONN);
  CHECK(c.destroyed == 1);
}

TEST_CASE("driving the handle from inside a callback is refused (EDEADLK)") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "1M"});
  std::vector<std::uint8_t> buf(4096);
  int poll_err = -1, notify_err = -1;
  bool called = false;
  h.aio_pread(buf, 0, [&](int*) {
    called = true;
    poll_err = error_of([&] { h.poll(0); });
    notify_err = error_of([&] { h.aio_notify_read(); });
    return 1;
  });
  while (!called) h.poll(-1);
  CHECK(poll_err == EDEADLK);
  CHECK(notify_err == EDEADLK);
  CHECK(h.aio_is_ready());
}

TEST_CASE("option mode driven by the caller's poll() loop") {
  nbd::Handle h;
  h.set_opt_mode(true);
  h.aio_connect_command(nbdtest::nbdkit({"memory", "1M"}));
  nbdtest::poll_loop(h, [&] { return !h.aio_is_connecting(); });
  REQUIRE(h.aio_is_negotiating());
  CallCounter c;
  h.aio_opt_go(CountedCompletion(&c));
  nbdtest::poll_loop(h, [&] { return c.calls == 1; });
  CHECK(c.errors.at(0) == 0);
  CHECK(h.aio_is_ready());
}
