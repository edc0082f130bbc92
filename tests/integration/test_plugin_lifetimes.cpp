// SPDX-License-Identifier: BSD-3-Clause
// Callback lifetimes and the end of a connection: every completion runs
// exactly once and every callable (completion, chunk, extent, list) is
// destroyed exactly once: when the command retires, when the call is
// rejected on the client side, when the server dies under it (ENOTCONN),
// when the handle shuts down or is destroyed with commands in flight. The
// plugin's delay=pread:MS (nbdkit_nanosleep) or the delay filter keeps
// commands in flight: where a test kills or drops the server under them the
// delay is far longer than the test, so no assertion depends on timing.

#include "plugin_common.hpp"

#include <doctest/doctest.h>

#include <signal.h>

#include <memory>
#include <string>
#include <vector>

using namespace ptest;

namespace {

/// Drives h until it is dead or closed (each poll makes progress or
/// throws when there is nothing left to wait for).
void run_until_gone(nbd::Handle& h) {
  while (!h.aio_is_dead() && !h.aio_is_closed()) h.poll(-1);
}

/// An extent callback probe.
struct Extents {
  LifeMark mark;
  explicit Extents(Counts* c) : mark(c) {}
  int operator()(std::string_view, std::uint64_t, std::span<std::uint32_t>, int*) {
    ++mark.c->calls;
    return 0;
  }
};

} // namespace

// --- retiring ------------------------------------------------------------------------------------

TEST_CASE("plugin: lifetimes: a completion returning 1 runs once, dies at once, retires") {
  nbd::Handle h;
  connect(h, {});
  auto buf = bytes(512);
  Counts c;
  std::uint64_t cookie = h.aio_pread(buf, 0, Completion(&c, 1));
  CHECK(c.destroyed == 0); // still needed while the command is in flight
  drain(h);
  CHECK(c.calls == 1);
  CHECK(c.destroyed == 1);
  CHECK(c.errors == std::vector<int>{0});
  CHECK(errno_of([&] { (void)h.aio_command_completed(cookie); }) == EINVAL); // already retired
}

TEST_CASE("plugin: lifetimes: a completion returning 0 dies after its call; the cookie waits") {
  nbd::Handle h;
  connect(h, {});
  auto buf = bytes(512);
  Counts c;
  std::uint64_t cookie = h.aio_pread(buf, 0, Completion(&c, 0));
  drain(h);
  CHECK(c.calls == 1);
  CHECK(c.destroyed == 1); // never called again, so released already
  CHECK(h.aio_peek_command_completed() == cookie);
  CHECK(h.aio_command_completed(cookie));
  CHECK(c.calls == 1);
  CHECK(c.destroyed == 1);
}

TEST_CASE("plugin: lifetimes: chunk and completion of pread_structured die once each") {
  nbd::Handle h;
  connect(h, {});
  auto buf = bytes(4096);
  Counts chunk, done;
  std::vector<unsigned> statuses;
  h.aio_pread_structured(buf, 0, Chunk(&chunk, &statuses), Completion(&done));
  drain(h);
  CHECK(chunk.calls == 1);
  CHECK(chunk.destroyed == 1);
  CHECK(done.calls == 1);
  CHECK(done.destroyed == 1);
}

TEST_CASE("plugin: lifetimes: extent and completion of block_status die once each") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, {});
  Counts ext, done;
  h.aio_block_status(65536, 0, Extents(&ext), Completion(&done));
  drain(h);
  CHECK(ext.calls == 1);
  CHECK(ext.destroyed == 1);
  CHECK(done.calls == 1);
  CHECK(done.destroyed == 1);
}

TEST_CASE("plugin: lifetimes: a failed command's callables die once too") {
  nbd::Handle h;
  connect(h, {"error=pread:EIO"});
  auto buf = bytes(4096);
  Counts chunk, done;
  std::vector<unsigned> statuses;
  h.aio_pread_structured(buf, 0, Chunk(&chunk, &statuses), Completion(&done));
  drain(h);
  CHECK(chunk.destroyed == 1);
  CHECK(done.calls == 1);
  CHECK(done.destroyed == 1);
  CHECK(done.errors == std::vector<int>{EIO});
}

// --- client-side rejection ------------------------------------------------------------------------

TEST_CASE("plugin: lifetimes: rejected calls destroy every callable, call none") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, {"size=1M"});
  auto buf = bytes(512);
  const std::uint64_t past = 2 * 1024 * 1024;
  Counts done, chunk, ext;
  std::vector<unsigned> s;
  CHECK(errno_of([&] { h.aio_pread(buf, past, Completion(&done)); }) == EINVAL);
  CHECK(errno_of([&] { h.aio_pread_structured(buf, past, Chunk(&chunk, &s), Completion(&done)); }) == EINVAL);
  CHECK(errno_of([&] { h.aio_pwrite(buf, past, Completion(&done)); }) == ENOSPC);
  CHECK(errno_of([&] { h.aio_flush(Completion(&done), 0x40); }) == EINVAL);
  CHECK(errno_of([&] { h.aio_trim(0, 0, Completion(&done)); }) == EINVAL);
  CHECK(errno_of([&] { h.aio_cache(512, past, Completion(&done)); }) == EINVAL);
  CHECK(errno_of([&] { h.aio_zero(512, past, Completion(&done)); }) == ENOSPC);
  CHECK(errno_of([&] { h.aio_block_status(512, past, Extents(&ext), Completion(&done)); }) == EINVAL);
  CHECK(done.calls == 0);
  CHECK(done.destroyed == 8);
  CHECK(chunk.calls == 0);
  CHECK(chunk.destroyed == 1);
  CHECK(ext.calls == 0);
  CHECK(ext.destroyed == 1);
  CHECK(h.aio_in_flight() == 0);
}

TEST_CASE("plugin: lifetimes: calls before connecting destroy their callables") {
  nbd::Handle h;
  auto buf = bytes(512);
  Counts done;
  CHECK(errno_of([&] { h.aio_pread(buf, 0, Completion(&done)); }) == ENOTCONN);
  CHECK(errno_of([&] { h.aio_flush(Completion(&done)); }) == ENOTCONN);
  CHECK(done.calls == 0);
  CHECK(done.destroyed == 2);
}

// --- chaining ------------------------------------------------------------------------------------------

TEST_CASE("plugin: lifetimes: a completion may queue the next command on the same handle") {
  Log log;
  nbd::Handle h;
  connect(h, {log.param()});
  auto buf = bytes(512);
  Counts first, second;
  std::uint64_t second_cookie = 0;
  h.aio_pread(buf, 0, [&, mark = LifeMark(&first)](int* err) {
    ++first.calls;
    CHECK(*err == 0);
    second_cookie = h.aio_pread(buf, 512, Completion(&second));
    return 1;
  });
  drain(h);
  CHECK(first.calls == 1);
  CHECK(first.destroyed == 1);
  CHECK(second_cookie == 2);
  CHECK(second.calls == 1);
  CHECK(second.destroyed == 1);
  CHECK(log.named("pread").size() == 2);
}

// --- server death ---------------------------------------------------------------------------------------

TEST_CASE("plugin: lifetimes: SIGKILL with commands held by delay=pread -> ENOTCONN, once each") {
  nbd::Handle h;
  connect(h, {"delay=pread:10000"}); // far longer than the test: killed first
  constexpr int n = 6;
  std::vector<std::vector<std::uint8_t>> bufs(n, bytes(4096, 0xaa));
  Counts c[n];
  Counts chunk;
  std::vector<unsigned> s;
  for (int i = 0; i < n - 1; ++i) h.aio_pread(bufs[i], static_cast<std::uint64_t>(i) * 4096, Completion(&c[i]));
  h.aio_pread_structured(bufs[n - 1], 0, Chunk(&chunk, &s), Completion(&c[n - 1]));
  CHECK(h.aio_in_flight() == n);
  h.kill_subprocess(SIGKILL);
  run_until_gone(h);
  CHECK(h.aio_is_dead());
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    CHECK(c[i].calls == 1);
    CHECK(c[i].destroyed == 1);
    REQUIRE(c[i].errors.size() == 1);
    CHECK(c[i].errors[0] == ENOTCONN);
    CHECK(all_equal(bufs[i], 0)); // pread_initialize: no stale bytes
  }
  CHECK(chunk.calls == 0);
  CHECK(chunk.destroyed == 1);
  CHECK(h.aio_in_flight() == 0);
  // A dead handle refuses new commands (and still frees their callables).
  Counts late;
  CHECK(errno_of([&] { h.aio_pread(bufs[0], 0, Completion(&late)); }) == EINVAL);
  CHECK(late.destroyed == 1);
  CHECK(late.calls == 0);
}

TEST_CASE("plugin: lifetimes: SIGKILL under the delay filter -> ENOTCONN for reads and writes" *
          PTEST_NEEDS_FILTER("delay")) {
  PTEST_REQUIRE_FILTER("delay");
  nbd::Handle h;
  connect(h, {"delay-read=10", "delay-write=10"}, {"--filter=delay"}); // seconds: killed first
  auto rbuf = bytes(4096, 0xaa);
  auto wbuf = bytes(4096, 0x11);
  Counts r, w;
  h.aio_pread(rbuf, 0, Completion(&r));
  h.aio_pwrite(wbuf, 8192, Completion(&w));
  h.kill_subprocess(SIGKILL);
  run_until_gone(h);
  CHECK(r.errors == std::vector<int>{ENOTCONN});
  CHECK(w.errors == std::vector<int>{ENOTCONN});
  CHECK(r.destroyed == 1);
  CHECK(w.destroyed == 1);
  // The blocking form reports the death too.
  CHECK(errno_of([&] { h.pread(rbuf, 0); }) != 0);
}

TEST_CASE("plugin: lifetimes: a blocking call in progress when the server dies -> ENOTCONN") {
  nbd::Handle h;
  connect(h, {"delay=pread:10000"}); // killed long before
  auto buf = bytes(4096, 0xaa);
  Counts bg;
  // One command in flight to kill the server under; the kill happens from
  // the completion of a fast command (flush), while pread waits.
  h.aio_flush([&h, mark = LifeMark(&bg)](int*) {
    h.kill_subprocess(SIGKILL);
    return 1;
  });
  int e = errno_of([&] { h.pread(buf, 0); });
  CHECK(e == ENOTCONN);
  CHECK(bg.destroyed == 1);
  CHECK(all_equal(buf, 0));
}

// --- shutdown -----------------------------------------------------------------------------------------

TEST_CASE("plugin: lifetimes: shutdown() lets commands in flight finish first") {
  Log log;
  nbd::Handle h;
  connect(h, {"delay=pread:200", log.param()});
  constexpr int n = 4;
  std::vector<std::vector<std::uint8_t>> bufs(n, bytes(512));
  Counts c[n];
  for (int i = 0; i < n; ++i) h.aio_pread(bufs[i], 0, Completion(&c[i]));
  h.shutdown();
  CHECK(h.aio_is_closed());
  // NBD_CMD_DISC follows the reads at once (as in libnbd). nbdkit answers
  // ESHUTDOWN to a request one of its threads had read but not yet started
  // when another thread read the DISC: rare, and the server's choice. What
  // the client owes: every command completes once, with the server's answer.
  std::size_t ok = 0;
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    REQUIRE(c[i].errors.size() == 1);
    CHECK((c[i].errors[0] == 0 || c[i].errors[0] == ESHUTDOWN));
    ok += c[i].errors[0] == 0;
    CHECK(c[i].destroyed == 1);
  }
  CHECK(log.named("pread").size() == ok);
}

TEST_CASE("plugin: lifetimes: shutdown(SHUTDOWN_ABANDON_PENDING): once each, 0 or ENOTCONN") {
  // Some commands go out (the poll pushes them), more are queued after; the
  // abandoned ones must be exactly those the plugin never saw.
  Log log;
  nbd::Handle h;
  connect(h, {"delay=pread:200", log.param()});
  constexpr int n = 16;
  std::vector<std::vector<std::uint8_t>> bufs(n, bytes(65536));
  Counts c[n];
  for (int i = 0; i < n / 2; ++i) h.aio_pread(bufs[i], 0, Completion(&c[i]));
  h.poll(0);
  for (int i = n / 2; i < n; ++i) h.aio_pread(bufs[i], 0, Completion(&c[i]));
  h.shutdown(nbd::SHUTDOWN_ABANDON_PENDING);
  CHECK((h.aio_is_closed() || h.aio_is_dead()));
  std::size_t ok = 0;
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    CHECK(c[i].calls == 1);
    CHECK(c[i].destroyed == 1);
    REQUIRE(c[i].errors.size() == 1);
    // ENOTCONN: abandoned before it was sent. ESHUTDOWN: sent, but a
    // multi-threaded nbdkit read NBD_CMD_DISC before it ran the request,
    // and refuses requests once shutting down.
    CHECK((c[i].errors[0] == 0 || c[i].errors[0] == ENOTCONN || c[i].errors[0] == ESHUTDOWN));
    if (c[i].errors[0] == 0) ++ok;
  }
  CHECK(log.named("pread").size() == ok);
  CHECK(h.aio_in_flight() == 0);
}

TEST_CASE("plugin: lifetimes: after shutdown commands are refused, callables freed") {
  nbd::Handle h;
  connect(h, {});
  h.shutdown();
  auto buf = bytes(512);
  Counts c;
  CHECK(errno_of([&] { h.aio_pread(buf, 0, Completion(&c)); }) == EINVAL);
  CHECK(c.calls == 0);
  CHECK(c.destroyed == 1);
}

TEST_CASE("plugin: lifetimes: aio_disconnect, then the handle drains and closes") {
  nbd::Handle h;
  connect(h, {"delay=pread:100"});
  auto buf = bytes(512);
  Counts c;
  h.aio_pread(buf, 0, Completion(&c));
  h.aio_disconnect();
  run_until_gone(h);
  CHECK(h.aio_is_closed());
  // A multi-threaded nbdkit may read NBD_CMD_DISC before its worker runs
  // the delayed read, which it then refuses with ESHUTDOWN.
  REQUIRE(c.errors.size() == 1);
  CHECK((c.errors[0] == 0 || c.errors[0] == ESHUTDOWN));
  CHECK(c.destroyed == 1);
}

// --- handle destruction -----------------------------------------------------------------------------

TEST_CASE("plugin: lifetimes: destroying the handle with commands in flight -> ENOTCONN, once") {
  constexpr int n = 5;
  Counts c[n], chunk, ext;
  std::vector<unsigned> s;
  std::vector<std::vector<std::uint8_t>> bufs(n, bytes(4096, 0xaa));
  {
    auto h = std::make_unique<nbd::Handle>();
    h->add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
    connect(*h, {"delay=pread:10000", "delay=extents:10000"}); // closed long before
    for (int i = 0; i < n - 2; ++i) h->aio_pread(bufs[i], 0, Completion(&c[i]));
    h->aio_pread_structured(bufs[n - 2], 0, Chunk(&chunk, &s), Completion(&c[n - 2]));
    h->aio_block_status(4096, 0, Extents(&ext), Completion(&c[n - 1]));
    h.reset();
  }
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    CHECK(c[i].calls == 1);
    CHECK(c[i].destroyed == 1);
    CHECK(c[i].errors == std::vector<int>{ENOTCONN});
  }
  CHECK(chunk.destroyed == 1);
  CHECK(ext.destroyed == 1);
  CHECK(ext.calls == 0);
}

TEST_CASE("plugin: lifetimes: destroying the handle after completions, before retiring") {
  Counts c;
  {
    nbd::Handle h;
    connect(h, {});
    auto buf = bytes(512);
    h.aio_pread(buf, 0, Completion(&c, 0));
    drain(h);
    CHECK(c.calls == 1);
  }
  CHECK(c.calls == 1); // not called again by the destructor
  CHECK(c.destroyed == 1);
}

// --- option callbacks --------------------------------------------------------------------------------

TEST_CASE("plugin: lifetimes: opt_list and aio_opt_go callables die once") {
  nbd::Handle h;
  h.set_opt_mode(true);
  connect(h, {"exports=3"});
  Counts list;
  struct Lister {
    LifeMark mark;
    int operator()(std::string_view, std::string_view) {
      ++mark.c->calls;
      return 0;
    }
  };
  CHECK(h.opt_list(Lister{LifeMark(&list)}) == 3);
  CHECK(list.calls == 3);
  CHECK(list.destroyed == 1);
  Counts go;
  h.aio_opt_go(Completion(&go));
  while (!h.aio_is_ready() && !h.aio_is_dead()) h.poll(-1);
  CHECK(go.calls == 1);
  CHECK(go.destroyed == 1);
  CHECK(go.errors == std::vector<int>{0});
}
