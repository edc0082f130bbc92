// SPDX-License-Identifier: BSD-3-Clause
// Callback and cookie contracts, pread_initialize, threads, and the state
// predicates through a handle's life.

#include "harness.hpp"

#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <stdexcept>
#include <thread>
#include <vector>

using nbdtest::CallCounter;
using nbdtest::CountedCompletion;
using nbdtest::error_of;

namespace {

constexpr std::uint64_t kib = 1024;

// Chunk and extent callbacks that count like CountedCompletion.
struct CountedChunk {
  CallCounter* c;
  bool owner = true;
  explicit CountedChunk(CallCounter* counter) : c(counter) {}
  CountedChunk(CountedChunk&& o) noexcept : c(o.c), owner(o.owner) { o.owner = false; }
  ~CountedChunk() {
    if (owner) ++c->destroyed;
  }
  int operator()(std::span<const std::uint8_t>, std::uint64_t, unsigned, int*) {
    ++c->calls;
    return 0;
  }
};

struct CountedExtent {
  CallCounter* c;
  bool owner = true;
  explicit CountedExtent(CallCounter* counter) : c(counter) {}
  CountedExtent(CountedExtent&& o) noexcept : c(o.c), owner(o.owner) { o.owner = false; }
  ~CountedExtent() {
    if (owner) ++c->destroyed;
  }
  int operator()(std::string_view, std::uint64_t, std::span<std::uint32_t>, int*) {
    ++c->calls;
    return 0;
  }
};

bool all_bytes(const std::vector<std::uint8_t>& v, std::uint8_t b) {
  return std::all_of(v.begin(), v.end(), [b](std::uint8_t x) { return x == b; });
}

void drain(nbd::Handle& h) {
  while (h.aio_in_flight() > 0) h.poll(-1);
}

// nbdkit with every read held back for a minute: commands stay in flight
// for as long as the test needs them to.
std::vector<std::string> stuck_reads() {
  return {"--filter=delay", "memory", "1M", "rdelay=60"};
}

} // namespace

TEST_CASE("a completion callback chains the next command: 100 reads") {
  nbd::Handle h;
  nbdtest::connect(h, {"pattern", "1M"});
  constexpr int n = 100;
  std::vector<std::vector<std::uint8_t>> bufs(n, std::vector<std::uint8_t>(4 * kib));
  int completed = 0;
  bool inside_aio = false;
  int called_inside = 0;

  struct Chain {
    nbd::Handle* h;
    std::vector<std::vector<std::uint8_t>>* bufs;
    int* completed;
    bool* inside_aio;
    int* called_inside;
    int operator()(int* err) const {
      if (*inside_aio) ++*called_inside;
      CHECK(*err == 0);
      int i = ++*completed;
      if (i < n) {
        *inside_aio = true;
        h->aio_pread((*bufs)[i], static_cast<std::uint64_t>(i) * 4 * kib, Chain(*this));
        *inside_aio = false;
      }
      return 1;
    }
  };
  inside_aio = true;
  h.aio_pread(bufs[0], 0, Chain{&h, &bufs, &completed, &inside_aio, &called_inside});
  inside_aio = false;
  while (completed < n) h.poll(-1);
  CHECK(called_inside == 0);
  CHECK(h.aio_in_flight() == 0);
  int bad = 0;
  for (int i = 0; i < n; ++i)
    for (std::uint64_t j = 0; j < 4 * kib; ++j)
      if (bufs[i][j] != nbdtest::pattern_byte(static_cast<std::uint64_t>(i) * 4 * kib + j)) ++bad;
  CHECK(bad == 0);
}

TEST_CASE("returning 1 retires the command, 0 leaves it for aio_command_completed") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "1M"});
  std::vector<std::uint8_t> buf(4 * kib);
  CallCounter retire, keep;
  auto c1 = h.aio_pread(buf, 0, CountedCompletion(&retire, 1));
  auto c2 = h.aio_pread(buf, 0, CountedCompletion(&keep, 0));
  CHECK_FALSE(h.aio_command_completed(c2)); // nothing driven yet
  drain(h);
  CHECK(retire.calls == 1);
  CHECK(keep.calls == 1);
  // The callable is gone once called, whether or not the command is retired.
  CHECK(retire.destroyed == 1);
  CHECK(keep.destroyed == 1);
  CHECK(error_of([&] { h.aio_command_completed(c1); }) == EINVAL);
  CHECK(h.aio_command_completed(c2));
  CHECK(error_of([&] { h.aio_command_completed(c2); }) == EINVAL);
  // Never-issued cookies are unknown too.
  CHECK(error_of([&] { h.aio_command_completed(0); }) == EINVAL);
  CHECK(error_of([&] { h.aio_command_completed(c2 + 100); }) == EINVAL);
  // The noexcept form says false and sets the error.
  std::error_code ec;
  CHECK_FALSE(h.aio_command_completed(c1, ec));
  CHECK(ec.value() == EINVAL);

  // Without a callback the command waits for aio_command_completed.
  auto c3 = h.aio_pread(buf, 0);
  while (!h.aio_command_completed(c3)) h.poll(-1);
  CHECK(error_of([&] { h.aio_command_completed(c3); }) == EINVAL);
}

TEST_CASE("a failed command kept by its callback reports its errno once") {
  nbd::Handle h;
  nbdtest::connect(h, {"--filter=error", "memory", "1M", "error-pread=EIO", "error-pread-rate=1"});
  std::vector<std::uint8_t> buf(4 * kib);
  CallCounter c;
  auto ck = h.aio_pread(buf, 0, CountedCompletion(&c, 0));
  drain(h);
  REQUIRE(c.calls == 1);
  CHECK(c.errors[0] == EIO);
  CHECK(h.aio_peek_command_completed() == ck);
  CHECK(error_of([&] { h.aio_command_completed(ck); }) == EIO);
  CHECK(error_of([&] { h.aio_command_completed(ck); }) == EINVAL);
  std::error_code ec;
  auto ck2 = h.aio_pread(buf, 0);
  drain(h);
  CHECK_FALSE(h.aio_command_completed(ck2, ec));
  CHECK(ec.value() == EIO);
}

TEST_CASE("cookies start at 1, increase, and a rejected call spends none") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "1M"});
  std::vector<std::uint8_t> buf(4 * kib);
  CHECK(h.aio_pread(buf, 0) == 1);
  CHECK(h.aio_pwrite(buf, 0) == 2);
  // Rejected on the client side: out of bounds, bad flag, zero length.
  CHECK(error_of([&] { h.aio_pread(buf, 1024 * kib); }) == EINVAL);
  CHECK(error_of([&] { h.aio_flush({}, nbd::CMD_FLAG_REQ_ONE); }) == EINVAL);
  CHECK(error_of([&] { h.aio_trim(0, 0); }) == EINVAL);
  std::error_code ec;
  CHECK(h.aio_pread(buf, 1024 * kib, {}, 0, ec) == 0);
  CHECK(ec.value() == EINVAL);
  CHECK(h.aio_flush() == 3);
  CHECK(h.aio_pwrite(buf, 4096, {}, 0, ec) == 4);
  CHECK_FALSE(ec);
  drain(h);
  // Blocking calls spend cookies too.
  h.pread(buf, 0);
  CHECK(h.aio_pread(buf, 0) == 6);
  drain(h);
}

TEST_CASE("a command is not completed for aio_command_completed before its own callback ran") {
  // Replies arrive in batches: while one command's completion callback
  // runs, the next one may be done in the engine with its callback still
  // queued. Asking for it from the first callback must say "not yet" (and
  // leave its slot alone), never "done" before its callback ran.
  nbd::Handle h;
  nbdtest::connect(h, {"--filter=error", "pattern", "16M", "error-pread=EIO",
                       "error-pread-rate=0.5"});
  constexpr int n = 64;
  std::vector<std::vector<std::uint8_t>> bufs(n, std::vector<std::uint8_t>(512));
  std::vector<std::uint64_t> cookies(n);
  std::vector<int> calls(n, 0), errors(n, 0);
  int early = 0, retired_by_peer = 0, wrong_result = 0;
  std::vector<bool> retired(n, false);
  for (int i = 0; i < n; ++i) {
    cookies[i] = h.aio_pread(bufs[i], static_cast<std::uint64_t>(i) * 4096, [&, i](int* err) {
      ++calls[i];
      errors[i] = *err;
      if (i % 2 == 0 && !retired[i + 1]) {
        const int j = i + 1;
        try {
          if (h.aio_command_completed(cookies[j])) {
            retired[j] = true;
            ++retired_by_peer;
            if (calls[j] == 0) ++early; // "done" before its callback ran
          }
        } catch (const nbd::Error& e) {
          // A failed peer reports its errno: it must be the one its
          // callback saw, so the callback ran first.
          retired[j] = true;
          ++retired_by_peer;
          if (calls[j] == 0) ++early;
          else if (e.errnum() != errors[j]) ++wrong_result;
        }
      }
      return 0;
    });
  }
  while (h.aio_in_flight() > 0) h.poll(-1);
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    CHECK(calls[i] == 1);
    if (!retired[i]) {
      int reported = -1;
      try {
        reported = h.aio_command_completed(cookies[i]) ? 0 : -1;
      } catch (const nbd::Error& e) {
        reported = e.errnum();
      }
      CHECK(reported == errors[i]);
    }
  }
  CHECK(early == 0);
  CHECK(wrong_result == 0);
  MESSAGE(retired_by_peer << " of " << n / 2 << " peers were done when asked");
}

TEST_CASE("aio_peek_command_completed") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "1M"});
  std::vector<std::uint8_t> buf(4 * kib);
  // Nothing in flight at all.
  CHECK(error_of([&] { h.aio_peek_command_completed(); }) == EINVAL);
  auto c1 = h.aio_pread(buf, 0);
  // In flight, not completed (nothing was driven).
  CHECK(h.aio_peek_command_completed() == 0);
  drain(h);
  CHECK(h.aio_peek_command_completed() == c1);
  CHECK(h.aio_peek_command_completed() == c1); // peeking does not retire
  auto c2 = h.aio_pread(buf, 0);
  drain(h);
  // Oldest first.
  CHECK(h.aio_peek_command_completed() == c1);
  CHECK(h.aio_command_completed(c1));
  CHECK(h.aio_peek_command_completed() == c2);
  CHECK(h.aio_command_completed(c2));
  CHECK(error_of([&] { h.aio_peek_command_completed(); }) == EINVAL);
  // Commands that retire themselves are never peeked.
  h.aio_pread(buf, 0, [](int*) { return 1; });
  drain(h);
  CHECK(error_of([&] { h.aio_peek_command_completed(); }) == EINVAL);
}

TEST_CASE("a callback never runs inside the aio_* call that queued it") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  nbdtest::connect(h, {"memory", "1M"});
  std::vector<std::uint8_t> buf(4 * kib);
  bool inside = false;
  int calls = 0, inside_calls = 0;
  auto cb = [&](int*) {
    ++calls;
    if (inside) ++inside_calls;
    return 1;
  };
  for (int round = 0; round < 20; ++round) {
    inside = true;
    h.aio_pread(buf, 0, cb);
    h.aio_pwrite(buf, 0, cb);
    h.aio_flush(cb);
    h.aio_zero(4096, 0, cb);
    h.aio_block_status(4096, 0, [&](std::string_view, std::uint64_t, std::span<std::uint32_t>,
                                    int*) {
      if (inside) ++inside_calls;
      return 0;
    }, cb);
    inside = false;
    // Let replies arrive while nobody is driving, then queue more: the
    // waiting replies must still not be dispatched inside the next call.
    if (round % 2) h.poll(0);
  }
  drain(h);
  CHECK(calls == 100);
  CHECK(inside_calls == 0);
}

TEST_CASE("every callback runs once and is destroyed once") {
  SUBCASE("normal completion, including chunk and extent callbacks") {
    CallCounter comp, chunk, ext;
    {
      nbd::Handle h;
      h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
      nbdtest::connect(h, {"memory", "1M"});
      std::vector<std::uint8_t> buf(64 * kib);
      h.aio_pread_structured(buf, 0, CountedChunk(&chunk), CountedCompletion(&comp));
      h.aio_block_status(64 * kib, 0, CountedExtent(&ext), CountedCompletion(&comp));
      h.aio_pwrite(buf, 0, CountedCompletion(&comp));
      drain(h);
      CHECK(comp.calls == 3);
      CHECK(comp.destroyed == 3);
      CHECK(chunk.calls >= 1);
      CHECK(chunk.destroyed == 1);
      CHECK(ext.calls == 1);
      CHECK(ext.destroyed == 1);
    }
    CHECK(comp.destroyed == 3);
    CHECK(chunk.destroyed == 1);
    CHECK(ext.destroyed == 1);
  }
  SUBCASE("rejected on the client side: never called, destroyed once") {
    CallCounter comp, chunk, ext;
    nbd::Handle h;
    std::vector<std::uint8_t> buf(4 * kib);
    // Not connected yet.
    CHECK(error_of([&] { h.aio_pread(buf, 0, CountedCompletion(&comp)); }) == ENOTCONN);
    nbdtest::connect(h, {"memory", "1M"});
    CHECK(error_of([&] { h.aio_pread(buf, 1024 * kib, CountedCompletion(&comp)); }) == EINVAL);
    CHECK(error_of([&] {
            h.aio_pread_structured(buf, 1024 * kib, CountedChunk(&chunk), CountedCompletion(&comp));
          }) == EINVAL);
    // No meta context was negotiated.
    CHECK(error_of([&] {
            h.aio_block_status(4096, 0, CountedExtent(&ext), CountedCompletion(&comp));
          }) == ENOTSUP);
    std::error_code ec;
    h.aio_pwrite(buf, 1024 * kib, CountedCompletion(&comp), 0, ec);
    CHECK(ec.value() == ENOSPC); // libnbd: a write out of bounds
    CHECK(comp.calls == 0);
    CHECK(comp.destroyed == 5);
    CHECK(chunk.calls == 0);
    CHECK(chunk.destroyed == 1);
    CHECK(ext.calls == 0);
    CHECK(ext.destroyed == 1);
  }
  SUBCASE("a callback that throws counts as failed, and is still destroyed once") {
    CallCounter c;
    nbd::Handle h;
    nbdtest::connect(h, {"memory", "1M"});
    std::vector<std::uint8_t> buf(4 * kib);
    struct Thrower {
      CountedCompletion inner;
      int operator()(int* err) {
        inner(err);
        throw std::runtime_error("callback failure");
      }
    };
    h.aio_pread(buf, 0, Thrower{CountedCompletion(&c)});
    drain(h);
    CHECK(c.calls == 1);
    CHECK(c.destroyed == 1);
    CHECK(h.aio_is_ready());
    h.pread(buf, 0);
  }
  SUBCASE("handle destroyed with commands in flight: ENOTCONN, once each") {
    CallCounter comp, chunk;
    std::vector<std::vector<std::uint8_t>> bufs(8, std::vector<std::uint8_t>(4 * kib, 0x77));
    {
      nbd::Handle h;
      nbdtest::connect(h, stuck_reads());
      for (int i = 0; i < 4; ++i) h.aio_pread(bufs[i], 0, CountedCompletion(&comp));
      for (int i = 4; i < 8; ++i)
        h.aio_pread_structured(bufs[i], 0, CountedChunk(&chunk), CountedCompletion(&comp));
      // Send them, so they really are in the server.
      h.poll(0);
      CHECK(h.aio_in_flight() == 8);
      CHECK(comp.calls == 0);
    }
    CHECK(comp.calls == 8);
    CHECK(comp.destroyed == 8);
    for (int e : comp.errors) CHECK(e == ENOTCONN);
    CHECK(chunk.calls == 0);
    CHECK(chunk.destroyed == 4);
    // pread_initialize: the buffers were zeroed and no data ever came.
    for (auto& b : bufs) CHECK(all_bytes(b, 0));
  }
  SUBCASE("handle destroyed before anything was sent") {
    CallCounter comp;
    std::vector<std::uint8_t> buf(4 * kib);
    {
      nbd::Handle h;
      nbdtest::connect(h, {"memory", "1M"});
      for (int i = 0; i < 4; ++i) h.aio_pread(buf, 0, CountedCompletion(&comp));
    }
    CHECK(comp.calls == 4);
    CHECK(comp.destroyed == 4);
    for (int e : comp.errors) CHECK(e == ENOTCONN);
  }
  SUBCASE("handle destroyed with an option in flight") {
    CallCounter comp;
    int listed = 0;
    {
      nbd::Handle h;
      h.set_opt_mode(true);
      nbdtest::connect(h, {"memory", "1M"});
      h.aio_opt_list([&](std::string_view, std::string_view) { return ++listed, 0; },
                     CountedCompletion(&comp));
    }
    CHECK(comp.calls == 1);
    CHECK(comp.destroyed == 1);
    CHECK(comp.errors.at(0) != 0);
  }
  SUBCASE("a moved-from handle hands its commands over") {
    CallCounter comp;
    std::vector<std::uint8_t> buf(4 * kib);
    nbd::Handle h;
    nbdtest::connect(h, {"memory", "1M"});
    h.aio_pread(buf, 0, CountedCompletion(&comp));
    nbd::Handle h2 = std::move(h);
    drain(h2);
    CHECK(comp.calls == 1);
    CHECK(comp.errors.at(0) == 0);
    CHECK(comp.destroyed == 1);
  }
}

TEST_CASE("server killed with commands in flight: ENOTCONN once each, then EINVAL") {
  nbd::Handle h;
  nbdtest::connect(h, stuck_reads());
  CallCounter comp, chunk;
  std::vector<std::vector<std::uint8_t>> bufs(6, std::vector<std::uint8_t>(4 * kib, 0x55));
  for (int i = 0; i < 3; ++i) h.aio_pread(bufs[i], 0, CountedCompletion(&comp));
  for (int i = 3; i < 6; ++i)
    h.aio_pread_structured(bufs[i], 0, CountedChunk(&chunk), CountedCompletion(&comp));
  h.poll(0);
  CHECK(h.aio_is_processing());
  h.kill_subprocess(SIGKILL);
  while (!h.aio_is_dead()) h.poll(-1);
  CHECK(comp.calls == 6);
  CHECK(comp.destroyed == 6);
  for (int e : comp.errors) CHECK(e == ENOTCONN);
  CHECK(chunk.calls == 0);
  CHECK(chunk.destroyed == 3);
  for (auto& b : bufs) CHECK(all_bytes(b, 0));
  CHECK(h.aio_in_flight() == 0);
  // Why the connection died: EOF or a reset, depending on what the dying
  // server left unread.
  CHECK(h.get_error());
  CHECK_FALSE(h.get_error_message().empty());
  CHECK_FALSE(h.aio_is_closed());
  CHECK_FALSE(h.aio_is_ready());
  CHECK_FALSE(h.aio_is_processing());

  // Everything later is refused, and callbacks of refused calls are only
  // destroyed.
  CallCounter later;
  std::vector<std::uint8_t> buf(4 * kib);
  CHECK(error_of([&] { h.aio_pread(buf, 0, CountedCompletion(&later)); }) == EINVAL);
  CHECK(error_of([&] { h.pread(buf, 0); }) == EINVAL);
  CHECK(error_of([&] { h.flush(); }) == EINVAL);
  CHECK(error_of([&] { h.aio_disconnect(); }) == EINVAL);
  CHECK(later.calls == 0);
  CHECK(later.destroyed == 1);
}

TEST_CASE("pread_initialize zeroes the buffer on failure and on rejection") {
  std::vector<std::uint8_t> buf(4 * kib);
  SUBCASE("rejected before connecting") {
    nbd::Handle h;
    CHECK(h.get_pread_initialize());
    buf.assign(buf.size(), 0xaa);
    CHECK(error_of([&] { h.aio_pread(buf, 0); }) == ENOTCONN);
    CHECK(all_bytes(buf, 0));
  }
  SUBCASE("rejected out of bounds, plain and structured") {
    nbd::Handle h;
    nbdtest::connect(h, {"memory", "1M"});
    buf.assign(buf.size(), 0xaa);
    CHECK(error_of([&] { h.pread(buf, 1024 * kib); }) == EINVAL);
    CHECK(all_bytes(buf, 0));
    buf.assign(buf.size(), 0xaa);
    CHECK(error_of([&] {
            h.pread_structured(buf, 1024 * kib, [](std::span<const std::uint8_t>, std::uint64_t,
                                                   unsigned, int*) { return 0; });
          }) == EINVAL);
    CHECK(all_bytes(buf, 0));
  }
  SUBCASE("failed by the server") {
    nbd::Handle h;
    nbdtest::connect(h, {"--filter=error", "pattern", "1M", "error-pread=EIO",
                         "error-pread-rate=1"});
    buf.assign(buf.size(), 0xaa);
    CHECK(error_of([&] { h.pread(buf, 8192); }) == EIO);
    CHECK(all_bytes(buf, 0));
    buf.assign(buf.size(), 0xaa);
    CHECK(error_of([&] {
            h.pread_structured(buf, 8192, [](std::span<const std::uint8_t>, std::uint64_t,
                                             unsigned, int*) { return 0; });
          }) == EIO);
    CHECK(all_bytes(buf, 0));
  }
  SUBCASE("failed by the server: zeroes already when the completion callback runs") {
    nbd::Handle h;
    nbdtest::connect(h, {"--filter=error", "pattern", "1M", "error-pread=EIO",
                         "error-pread-rate=1"});
    buf.assign(buf.size(), 0xaa);
    bool zero_in_callback = false;
    int error = 0;
    auto ck = h.aio_pread(buf, 0, [&](int* err) {
      error = *err;
      zero_in_callback = all_bytes(buf, 0);
      return 1;
    });
    while (h.aio_in_flight() > 0) h.poll(-1);
    CHECK(ck >= 1);
    CHECK(error == EIO);
    CHECK(zero_in_callback);
  }
  SUBCASE("a successful read over holes and data leaves no old byte") {
    // memory serves unwritten areas as holes (structured replies), so the
    // read is covered by hole chunks and data chunks, never by a memset.
    nbd::Handle h;
    nbdtest::connect(h, {"memory", "1M"});
    std::vector<std::uint8_t> data(kib, 0x5c);
    h.pwrite(data, 64 * kib + kib);
    std::vector<std::uint8_t> big(256 * kib, 0xaa);
    h.pread(big, 0);
    for (std::size_t i = 0; i < big.size(); ++i) {
      const std::uint8_t want = (i >= 65 * kib && i < 66 * kib) ? 0x5c : 0;
      if (big[i] != want) {
        FAIL_CHECK("byte " << i << " is " << int(big[i]) << ", expected " << int(want));
        break;
      }
    }
  }
  SUBCASE("off: a rejected read leaves the buffer alone") {
    nbd::Handle h;
    h.set_pread_initialize(false);
    CHECK_FALSE(h.get_pread_initialize());
    nbdtest::connect(h, {"memory", "1M"});
    buf.assign(buf.size(), 0xaa);
    CHECK(error_of([&] { h.pread(buf, 1024 * kib); }) == EINVAL);
    CHECK(all_bytes(buf, 0xaa));
  }
}

TEST_CASE("one handle, four threads issuing blocking preads at once") {
  nbd::Handle h;
  nbdtest::connect(h, {"pattern", "16M"});
  std::atomic<int> bad{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::uint8_t> buf(16 * kib);
      for (int i = 0; i < 200; ++i) {
        std::uint64_t off = (static_cast<std::uint64_t>(t) * 200 + i) * 16 * kib + 8 * t;
        try {
          h.pread(buf, off);
        } catch (const nbd::Error&) {
          ++failed;
          continue;
        }
        for (std::size_t j = 0; j < buf.size(); ++j)
          if (buf[j] != nbdtest::pattern_byte(off + j)) {
            ++bad;
            break;
          }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failed == 0);
  CHECK(bad == 0);
  CHECK(h.aio_is_ready());
}

TEST_CASE("one handle, threads mixing writes, reads and aio_ with polling") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "8M"});
  std::atomic<int> bad{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Each thread owns a 2 MiB region.
      std::vector<std::uint8_t> w(32 * kib), r(32 * kib);
      for (int i = 0; i < 50; ++i) {
        std::uint64_t off = static_cast<std::uint64_t>(t) * 2048 * kib + (i % 64) * 32 * kib;
        std::fill(w.begin(), w.end(), static_cast<std::uint8_t>(t * 50 + i));
        try {
          if (t % 2 == 0) {
            h.pwrite(w, off);
            h.pread(r, off);
          } else {
            // aio_ and completion polling from several threads at once.
            // Another thread's poll may retire this command between the
            // check and our poll, leaving nothing in flight: poll(-1) would
            // then block for good (as libnbd's does), so poll briefly.
            auto ck = h.aio_pwrite(w, off);
            while (!h.aio_command_completed(ck)) h.poll(50);
            ck = h.aio_pread(r, off);
            while (!h.aio_command_completed(ck)) h.poll(50);
          }
        } catch (const nbd::Error&) {
          ++failed;
          continue;
        }
        if (r != w) ++bad;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failed == 0);
  CHECK(bad == 0);
}

TEST_CASE("state predicates through the lifecycle") {
  struct States {
    bool created, connecting, negotiating, ready, processing, dead, closed;
  };
  auto states = [](const nbd::Handle& h) {
    return States{h.aio_is_created(),  h.aio_is_connecting(), h.aio_is_negotiating(),
                  h.aio_is_ready(),    h.aio_is_processing(), h.aio_is_dead(),
                  h.aio_is_closed()};
  };
  auto only = [&](const nbd::Handle& h, bool States::*which) {
    States s = states(h);
    int set = s.created + s.connecting + s.negotiating + s.ready + s.processing + s.dead + s.closed;
    CHECK(set == 1);
    CHECK(s.*which);
  };

  nbd::Handle h;
  only(h, &States::created);
  h.set_opt_mode(true);
  h.aio_connect_command(nbdtest::nbdkit({"memory", "1M"}));
  only(h, &States::connecting);
  nbdtest::poll_loop(h, [&] { return !h.aio_is_connecting(); });
  only(h, &States::negotiating);
  h.aio_opt_info();
  only(h, &States::connecting); // an option exchange in progress
  nbdtest::poll_loop(h, [&] { return h.aio_is_negotiating(); });
  only(h, &States::negotiating);
  h.opt_go();
  only(h, &States::ready);
  std::vector<std::uint8_t> buf(4 * kib);
  auto ck = h.aio_pread(buf, 0);
  only(h, &States::processing);
  while (!h.aio_command_completed(ck)) h.poll(-1);
  only(h, &States::ready);
  h.aio_pread(buf, 0, [](int*) { return 1; });
  h.aio_disconnect();
  only(h, &States::processing);
  nbdtest::poll_loop(h, [&] { return h.aio_is_closed(); });
  only(h, &States::closed);

  nbd::Handle d;
  nbdtest::connect(d, {"memory", "1M"});
  only(d, &States::ready);
  d.kill_subprocess(SIGKILL);
  while (!d.aio_is_dead()) d.poll(-1);
  only(d, &States::dead);

  nbd::Handle f;
  CHECK(error_of([&] { f.connect_unix("/nonexistent/socket"); }) == ENOENT);
  only(f, &States::dead);
}
