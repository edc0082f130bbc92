// SPDX-License-Identifier: BSD-3-Clause
// The transports against a scripted peer on the other end of a socketpair:
// no NBD server, only an oldstyle greeting and simple replies built with
// the wire helpers. Every case runs on both transports (io_uring is
// skipped with a message where the kernel or the build lacks it).

#include "proto/engine.hpp"
#include "proto/wire.hpp"
#include "transport/transport.hpp"

#include <nbdcpp/error.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(NBDCPP_HAVE_URING) && NBDCPP_HAVE_URING
#define TEST_SECCOMP_FALLBACK 1
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <cstddef>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace nbd;
using transport::Kind;
using transport::Transport;
using transport::UniqueFd;

constexpr std::uint64_t export_size = 64 * 1024 * 1024;

std::uint8_t pattern(std::uint64_t offset) {
  // Differs between neighbouring 4 KiB blocks, so misplaced data shows.
  return static_cast<std::uint8_t>((offset * 7 + (offset >> 12)) % 251);
}

bool write_all(int fd, const std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool recv_all(int fd, std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

std::vector<std::uint8_t> oldstyle_greeting(std::uint64_t size) {
  std::vector<std::uint8_t> g(wire::greeting_size + wire::oldstyle_rest_size);
  wire::store64(g, 0, wire::nbd_magic);
  wire::store64(g, 8, wire::oldstyle_magic);
  wire::store64(g, 16, size);
  wire::store32(g, 24, wire::tflag_has_flags);
  return g;
}

/// A scripted server on a blocking socket, running in its own thread.
/// The default script: greet, then answer every read with pattern data,
/// many replies per write(), until EOF or NBD_CMD_DISC.
class Peer {
public:
  using Script = std::function<void(int fd)>;

  explicit Peer(Script script = serve) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    REQUIRE(::fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
    ours_.reset(sv[0]);
    theirs_.reset(sv[1]);
    thread_ = std::thread([this, script = std::move(script)] { script(theirs_.get()); });
  }
  ~Peer() { join(); }
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  UniqueFd take() { return std::move(ours_); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

  /// Reads requests and answers reads; stops after `max_requests` if set
  /// (without answering that one), on EOF or on DISC. With `first_alone`,
  /// the first reply of each write goes out on its own and the rest only
  /// once the client has taken it, so the client's next receive is armed
  /// with the others still in flight however the threads are scheduled.
  static void serve(int fd) { serve_n(fd, 0); }
  static void serve_first_alone(int fd) { serve_n(fd, 0, true); }
  static void serve_n(int fd, std::size_t max_requests, bool first_alone = false) {
    auto g = oldstyle_greeting(export_size);
    if (!write_all(fd, g.data(), g.size())) return;
    std::vector<std::uint8_t> in;
    std::vector<std::uint8_t> out;
    std::size_t seen = 0;
    std::uint8_t buf[64 * 1024];
    for (;;) {
      ssize_t r = ::recv(fd, buf, sizeof buf, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return;
      in.insert(in.end(), buf, buf + r);
      std::size_t used = 0;
      std::size_t first_end = 0;
      out.clear();
      while (in.size() - used >= wire::request_size) {
        auto req = wire::decode_request(wire::Bytes(in).subspan(used, wire::request_size), false);
        used += wire::request_size;
        if (!req || req->type == wire::cmd_disc) return;
        if (max_requests && ++seen == max_requests) return;
        std::size_t at = out.size();
        out.resize(at + wire::simple_reply_size);
        wire::encode_simple_reply(wire::MutBytes(out).subspan(at), 0, req->cookie);
        if (req->type == wire::cmd_read) {
          at = out.size();
          out.resize(at + req->length);
          for (std::uint64_t i = 0; i < req->length; ++i) out[at + i] = pattern(req->offset + i);
        }
        if (first_end == 0) first_end = out.size();
      }
      in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(used));
      std::size_t sent = 0;
      if (first_alone && first_end > 0 && first_end < out.size()) {
        if (!write_all(fd, out.data(), first_end) || !wait_until_taken(fd)) return;
        sent = first_end;
      }
      if (!write_all(fd, out.data() + sent, out.size() - sent)) return;
    }
  }

  /// Waits (up to 20 s) until the other end has read everything written.
  static bool wait_until_taken(int fd) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      int queued = 0;
      if (::ioctl(fd, SIOCOUTQ, &queued) != 0) return false;
      if (queued == 0) return true;
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

private:
  UniqueFd ours_, theirs_;
  std::thread thread_;
};

/// A peer script: greets, answers the first read only (once `release`, if
/// given, holds; up to 20 s), then reads and drops whatever comes until EOF
/// or `stop`.
void answer_first_read(int fd, const std::atomic<bool>* release, const std::atomic<bool>* stop) {
  auto g = oldstyle_greeting(export_size);
  write_all(fd, g.data(), g.size());
  std::uint8_t req[wire::request_size];
  if (!recv_all(fd, req, sizeof req)) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (release && !*release && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto rq = wire::decode_request(wire::Bytes(req), false);
  std::vector<std::uint8_t> out(wire::simple_reply_size + rq->length);
  wire::encode_simple_reply(out, 0, rq->cookie);
  for (std::uint64_t i = 0; i < rq->length; ++i) out[wire::simple_reply_size + i] = pattern(rq->offset + i);
  write_all(fd, out.data(), out.size());
  std::uint8_t buf[4096];
  while (!(stop && *stop) && ::recv(fd, buf, sizeof buf, 0) > 0) {
  }
}

std::unique_ptr<Transport> make(Kind kind, UniqueFd fd, proto::Engine& engine) {
  if (kind == Kind::socket) return transport::make_socket_transport(std::move(fd), engine);
  try {
    return transport::make_uring_transport(std::move(fd), engine);
  } catch (const Error& e) {
    MESSAGE("io_uring unavailable, case skipped: " << e.what());
    return nullptr;
  }
}

/// How the test drives the transport: the handle's own blocking wait(), or
/// a caller's poll() loop on poll_fd()/direction() with notify_*().
enum class Drive { wait, event_loop };

void step(Transport& t, Drive how) {
  if (how == Drive::wait) {
    bool extra = false;
    t.wait(1000, -1, extra);
    return;
  }
  unsigned d = t.direction();
  short ev = 0;
  if (d & transport::direction_read) ev |= POLLIN;
  if (d & transport::direction_write) ev |= POLLOUT;
  pollfd pfd{t.poll_fd(), ev, 0};
  REQUIRE(::poll(&pfd, 1, 1000) >= 0);
  if (pfd.revents & POLLOUT)
    t.notify_write();
  else if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
    t.notify_read();
}

/// Drives until pred() holds; fails (instead of hanging) after 20 s.
template <typename Pred>
void drive_until(Transport& t, Drive how, Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!pred()) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    step(t, how);
  }
}

struct Fixture {
  Fixture(Kind kind, Peer::Script script = Peer::serve) : peer(std::move(script)) {
    engine.start(proto::Settings{});
    t = make(kind, peer.take(), engine);
  }
  ~Fixture() {
    t.reset(); // quiesces and closes: the peer sees EOF
    peer.join();
  }
  void handshake(Drive how) {
    t->flush();
    drive_until(*t, how, [&] { return engine.phase() != proto::Phase::handshake; });
    REQUIRE(engine.phase() == proto::Phase::transmission);
    CHECK(engine.info().size == export_size);
    engine.clear_events();
  }
  std::uint32_t read(std::span<std::uint8_t> buf, std::uint64_t offset) {
    proto::CommandSpec c;
    c.type = wire::cmd_read;
    c.offset = offset;
    c.count = buf.size();
    c.read_buf = buf;
    return engine.submit(c);
  }

  Peer peer;
  proto::Engine engine;
  std::unique_ptr<Transport> t;
};

bool matches(std::span<const std::uint8_t> buf, std::uint64_t offset) {
  for (std::size_t i = 0; i < buf.size(); ++i)
    if (buf[i] != pattern(offset + i)) return false;
  return true;
}

std::string name(Kind k) { return k == Kind::uring ? "uring" : "socket"; }
std::string name(Drive d) { return d == Drive::wait ? "wait" : "event loop"; }

} // namespace

TEST_CASE("transport: a 1 MiB read lands byte-exact, straight in the buffer") {
  for (Kind kind : {Kind::socket, Kind::uring})
    for (Drive how : {Drive::wait, Drive::event_loop}) {
      CAPTURE(name(kind));
      CAPTURE(name(how));
      Fixture f(kind);
      if (!f.t) continue;
      CHECK(f.t->kind() == kind);
      f.handshake(how);

      std::vector<std::uint8_t> buf(1024 * 1024, 0xee);
      const std::uint64_t offset = 3 * 1024 * 1024 + 512;
      std::uint32_t slot = f.read(buf, offset);
      f.t->flush();
      drive_until(*f.t, how, [&] { return f.engine.slot_done(slot); });
      CHECK(f.engine.slot_error(slot) == 0);
      CHECK(matches(buf, offset));
      f.engine.retire(slot);
      f.engine.clear_events();
      // Most of the payload bypassed the staging copy.
      CHECK(f.t->stats().direct_bytes > buf.size() / 2);
    }
}

TEST_CASE("transport: 1000 small reads, 64 in flight, batch through staging") {
  // In rounds of 64 (not a pipeline topped up as replies come: how many
  // requests each top-up carries would depend on how the threads
  // interleave). Each round is one write by the peer, which the kernel
  // splits into socket buffers of about 8 replies each.
  for (Kind kind : {Kind::socket, Kind::uring})
    for (Drive how : {Drive::wait, Drive::event_loop}) {
      CAPTURE(name(kind));
      CAPTURE(name(how));
      Fixture f(kind);
      if (!f.t) continue;
      f.handshake(how);

      constexpr std::size_t total = 1000, depth = 64, size = 4096;
      std::vector<std::vector<std::uint8_t>> bufs(depth, std::vector<std::uint8_t>(size));
      std::vector<std::uint64_t> offsets(depth);
      std::vector<std::uint32_t> slots(depth);
      std::size_t done = 0, bad = 0, rounds = 0;
      const auto before = f.t->stats();

      while (done < total) {
        const std::size_t n = std::min(depth, total - done);
        for (std::size_t b = 0; b < n; ++b) {
          offsets[b] = ((done + b) * 7919 % 16000) * size;
          slots[b] = f.read(bufs[b], offsets[b]);
        }
        f.t->flush();
        ++rounds;
        drive_until(*f.t, how, [&] {
          return std::all_of(slots.begin(), slots.begin() + static_cast<std::ptrdiff_t>(n),
                             [&](std::uint32_t s) { return f.engine.slot_done(s); });
        });
        for (std::size_t b = 0; b < n; ++b) {
          if (f.engine.slot_error(slots[b]) != 0 || !matches(bufs[b], offsets[b])) ++bad;
          f.engine.retire(slots[b]);
        }
        done += n;
        f.engine.clear_events();
        REQUIRE(f.engine.phase() == proto::Phase::transmission);
      }
      CHECK(bad == 0);
      const auto& after = f.t->stats();
      MESSAGE(name(kind) << ", " << name(how) << ": " << after.syscalls - before.syscalls
                         << " syscalls, " << after.recv_calls - before.recv_calls << " recvs, "
                         << after.send_calls - before.send_calls << " sends for " << total
                         << " reads");
      // Batching: one send per round, and far fewer receives than replies.
      CHECK(after.send_calls - before.send_calls == rounds);
      CHECK(after.recv_calls - before.recv_calls < total / 2);
      CHECK(after.staged_bytes - before.staged_bytes > total * size / 2);
    }
}

TEST_CASE("transport: a peer closing mid-reply kills the engine") {
  for (Kind kind : {Kind::socket, Kind::uring})
    for (Drive how : {Drive::wait, Drive::event_loop}) {
      CAPTURE(name(kind));
      CAPTURE(name(how));
      Fixture f(kind, [](int fd) {
        auto g = oldstyle_greeting(export_size);
        write_all(fd, g.data(), g.size());
        std::uint8_t req[wire::request_size];
        if (!recv_all(fd, req, sizeof req)) return;
        auto rq = wire::decode_request(req, false);
        std::vector<std::uint8_t> out(wire::simple_reply_size + 100000, 0x55);
        wire::encode_simple_reply(out, 0, rq->cookie);
        write_all(fd, out.data(), out.size()); // of 256 KiB promised
        ::shutdown(fd, SHUT_RDWR);
      });
      if (!f.t) continue;
      f.handshake(how);
      std::vector<std::uint8_t> buf(256 * 1024);
      std::uint32_t slot = f.read(buf, 0);
      f.t->flush();
      drive_until(*f.t, how, [&] { return f.engine.phase() == proto::Phase::dead; });
      CHECK(f.engine.death_errno() == ENOTCONN);
      CHECK(f.engine.slot_done(slot));
      CHECK(f.engine.slot_error(slot) == ENOTCONN);
      // Nothing left to wait for, and waiting does not hang.
      CHECK(f.t->direction() == 0);
      bool extra = true;
      CHECK(f.t->wait(-1, -1, extra) == 1);
      CHECK_FALSE(extra);
    }
}

TEST_CASE("transport: quiesce with I/O in flight") {
  for (Kind kind : {Kind::socket, Kind::uring}) {
    CAPTURE(name(kind));
    std::atomic<bool> quiesced{false};
    std::atomic<int> late_write{1};
    constexpr std::size_t head = 1000; // payload bytes sent before stalling
    Fixture f(kind, [&](int fd) {
      auto g = oldstyle_greeting(export_size);
      write_all(fd, g.data(), g.size());
      std::uint8_t req[2 * wire::request_size];
      if (!recv_all(fd, req, sizeof req)) return;
      // Start the reply to the big read, then stall: the client is left
      // receiving straight into the caller's buffer.
      auto rq = wire::decode_request(wire::Bytes(req).subspan(wire::request_size), false);
      std::vector<std::uint8_t> out(wire::simple_reply_size + head, 0x55);
      wire::encode_simple_reply(out, 0, rq->cookie);
      write_all(fd, out.data(), out.size());
      while (!quiesced) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      // Too late: these bytes must not reach any buffer.
      std::vector<std::uint8_t> rest(64 * 1024, 0x66);
      late_write = write_all(fd, rest.data(), rest.size()) ? 1 : 0;
    });
    if (!f.t) continue;
    f.handshake(Drive::wait);
    std::vector<std::uint8_t> small(4096, 0xaa), big(1024 * 1024, 0xaa);
    std::uint32_t s1 = f.read(small, 0);
    std::uint32_t s2 = f.read(big, 0);
    f.t->flush();
    // Until the first payload bytes are in (then a receive of the rest is
    // armed on io_uring).
    drive_until(*f.t, Drive::wait, [&] { return f.engine.bytes_received() >= 16 + 136 + 16 + head; });
    CHECK_FALSE(f.engine.slot_done(s2));
    f.t->quiesce();
    CHECK(f.t->direction() == 0);
    f.t->quiesce(); // idempotent
    // Now the handle may complete everything with errors and free buffers.
    f.engine.die(ENOTCONN, "closed");
    CHECK(f.engine.slot_done(s1));
    CHECK(f.engine.slot_done(s2));
    quiesced = true;
    f.peer.join();
    CHECK(late_write == 0); // the socket was shut down
    f.t->notify_read();
    f.t->notify_write();
    f.t->flush();
    bool extra = true;
    CHECK(f.t->wait(-1, -1, extra) == 1);
    CHECK(std::count(small.begin(), small.end(), 0xaa) == 4096);
    CHECK(std::count(big.begin(), big.begin() + head, 0x55) == head);
    CHECK(std::count(big.begin() + head, big.end(), 0xaa) == 1024 * 1024 - head);
  }
}

TEST_CASE("transport: wait() honours extra_fd and timeouts") {
  for (Kind kind : {Kind::socket, Kind::uring}) {
    CAPTURE(name(kind));
    Fixture f(kind);
    if (!f.t) continue;
    f.handshake(Drive::wait);
    int p[2];
    REQUIRE(::pipe(p) == 0);
    UniqueFd rd(p[0]), wr(p[1]);
    bool extra = true;
    auto t0 = std::chrono::steady_clock::now();
    CHECK(f.t->wait(50, rd.get(), extra) == 0);
    CHECK_FALSE(extra);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(45));
    CHECK(f.t->wait(0, -1, extra) == 0);
    REQUIRE(::write(wr.get(), "x", 1) == 1);
    CHECK(f.t->wait(-1, rd.get(), extra) == 1);
    CHECK(extra);
  }
}

TEST_CASE("transport: io_uring batches flushed requests into one submission") {
  Fixture f(Kind::uring);
  if (!f.t) return;
  f.handshake(Drive::event_loop);
  std::vector<std::vector<std::uint8_t>> bufs(32, std::vector<std::uint8_t>(4096));
  std::vector<std::uint32_t> slots;
  const auto before = f.t->stats().syscalls;
  for (std::size_t i = 0; i < bufs.size(); ++i) {
    slots.push_back(f.read(bufs[i], i * 4096));
    f.t->flush();
  }
  // flush() made no syscall; the ring fd is to be polled for writing.
  CHECK(f.t->stats().syscalls == before);
  CHECK(f.t->direction() == transport::direction_write);
  f.t->notify_write();
  CHECK(f.t->stats().syscalls == before + 1);
  CHECK(f.t->direction() == transport::direction_read);
  drive_until(*f.t, Drive::event_loop, [&] {
    for (std::uint32_t s : slots)
      if (!f.engine.slot_done(s)) return false;
    return true;
  });
  for (std::size_t i = 0; i < bufs.size(); ++i) CHECK(matches(bufs[i], i * 4096));
}

// Reply batching needs IORING_FEAT_CQE_SKIP (5.17).
bool kernel_at_least(int major, int minor) {
  utsname u{};
  int ma = 0, mi = 0;
  if (::uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

TEST_CASE("transport: io_uring reply batching waits behind a timer only with 8+ in flight") {
  if (!kernel_at_least(5, 17)) {
    MESSAGE("kernel older than 5.17: no reply batching, case skipped");
    return;
  }
  for (Drive how : {Drive::wait, Drive::event_loop}) {
    CAPTURE(name(how));
    Fixture f(Kind::uring, Peer::serve_first_alone);
    if (!f.t) return;
    f.handshake(how);
    auto read_all = [&](std::size_t n) {
      std::vector<std::vector<std::uint8_t>> bufs(n, std::vector<std::uint8_t>(4096));
      std::vector<std::uint32_t> slots;
      for (std::size_t i = 0; i < n; ++i) slots.push_back(f.read(bufs[i], (i * 13 % 500) * 4096));
      f.t->flush();
      drive_until(*f.t, how, [&] {
        return std::all_of(slots.begin(), slots.end(), [&](std::uint32_t s) { return f.engine.slot_done(s); });
      });
      std::size_t good = 0;
      for (std::size_t i = 0; i < n; ++i) {
        good += f.engine.slot_error(slots[i]) == 0 && matches(bufs[i], (i * 13 % 500) * 4096);
        f.engine.retire(slots[i]);
      }
      f.engine.clear_events();
      return good;
    };
    CHECK(read_all(4) == 4);
    CHECK(f.t->stats().batched_recvs == 0); // few in flight: no timer
    CHECK(read_all(64) == 64);
    const auto batched = f.t->stats().batched_recvs;
    CHECK(batched > 0);
    f.t->set_reply_batching(false);
    CHECK(read_all(64) == 64);
    CHECK(f.t->stats().batched_recvs == batched);
    f.t->set_reply_batching(true);
    CHECK(read_all(64) == 64);
    CHECK(f.t->stats().batched_recvs > batched);
  }
}

TEST_CASE("transport: io_uring requests of a thread that exits are made again") {
  // The kernel cancels a task's pending io_uring requests when it exits:
  // with a handle shared by threads, the receive a thread armed before it
  // ended completes with -ECANCELED, and whoever drives next must arm it
  // again, not fail the connection.
  for (Drive how : {Drive::wait, Drive::event_loop}) {
    CAPTURE(name(how));
    std::atomic<bool> answer{false};
    Fixture f(Kind::uring, [&](int fd) { answer_first_read(fd, &answer, nullptr); });
    if (!f.t) return;
    f.handshake(how);
    std::vector<std::uint8_t> buf(4096);
    std::uint32_t slot = 0;
    const auto sends = f.t->stats().send_calls;
    std::thread([&] { // queues the read, sends it and arms the receive, then exits
      slot = f.read(buf, 5 * 4096);
      f.t->flush();
      drive_until(*f.t, how, [&] { return f.t->stats().send_calls > sends; });
    }).join();
    // The receive's cancellation (if this kernel cancels) arrives with
    // nothing in it; then the reply.
    const auto recvs = f.t->stats().recv_calls;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (f.t->stats().recv_calls == recvs && std::chrono::steady_clock::now() < until)
      step(*f.t, how);
    if (f.t->stats().recv_calls == recvs) MESSAGE("the exiting thread's receive was not cancelled");
    CHECK_FALSE(f.engine.slot_done(slot));
    answer = true;
    drive_until(*f.t, how, [&] { return f.engine.slot_done(slot); });
    CHECK(f.engine.slot_error(slot) == 0);
    CHECK(matches(buf, 5 * 4096));
    CHECK(f.engine.phase() == proto::Phase::transmission);
  }
}

TEST_CASE("transport: quiesce while a receive waits behind its batching timer") {
  for (bool submitted : {false, true}) {
    CAPTURE(submitted);
    std::atomic<bool> done{false};
    Fixture f(Kind::uring, [&](int fd) { answer_first_read(fd, nullptr, &done); });
    if (!f.t) return;
    f.handshake(Drive::wait);
    std::vector<std::vector<std::uint8_t>> bufs(64, std::vector<std::uint8_t>(4096, 0xaa));
    std::vector<std::uint32_t> slots;
    for (std::size_t i = 0; i < bufs.size(); ++i) slots.push_back(f.read(bufs[i], i * 4096));
    f.t->flush();
    // The receive armed before anything was in flight takes the first
    // reply; the next one, with 63 in flight, waits behind a timer.
    drive_until(*f.t, Drive::wait, [&] { return f.engine.slot_done(slots[0]); });
    CHECK(matches(bufs[0], 0));
    if (kernel_at_least(5, 17)) CHECK(f.t->stats().batched_recvs == 1);
    if (submitted) f.t->notify_write(); // else the timer and receive are still in the SQ
    f.t->quiesce(); // cancels the timer, and with it the receive
    CHECK(f.t->direction() == 0);
    f.engine.die(ENOTCONN, "closed");
    for (std::uint32_t s : slots) CHECK(f.engine.slot_done(s));
    done = true;
    for (std::size_t i = 1; i < bufs.size(); ++i) CHECK(std::count(bufs[i].begin(), bufs[i].end(), 0xaa) == 4096);
  }
}

TEST_CASE("transport: several threads take turns driving one connection") {
  for (Kind kind : {Kind::socket, Kind::uring}) {
    CAPTURE(name(kind));
    Fixture f(kind);
    if (!f.t) continue;
    f.handshake(Drive::wait);
    std::mutex lock; // the handle's lock
    std::atomic<std::size_t> bad{0};
    constexpr std::size_t per_thread = 300;
    auto worker = [&](std::size_t id) {
      std::vector<std::uint8_t> buf(8192);
      for (std::size_t n = 0; n < per_thread; ++n) {
        const std::uint64_t offset = (id * per_thread + n) * 8192;
        std::uint32_t slot;
        {
          std::lock_guard g(lock);
          slot = f.read(buf, offset);
          f.t->flush();
        }
        for (;;) {
          std::lock_guard g(lock);
          if (f.engine.slot_done(slot)) {
            if (f.engine.slot_error(slot) != 0 || !matches(buf, offset)) ++bad;
            f.engine.retire(slot);
            // Events are not used here; keep their storage bounded.
            f.engine.clear_events();
            break;
          }
          bool extra = false;
          f.t->wait(5, -1, extra);
        }
      }
    };
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < 4; ++i) threads.emplace_back(worker, i);
    for (auto& th : threads) th.join();
    CHECK(bad == 0);
  }
}

TEST_CASE("transport: make_transport honours the preference and NBDCPP_TRANSPORT") {
  auto pick = [](std::optional<Kind> pref) {
    Peer peer([](int fd) {
      char c;
      while (::recv(fd, &c, 1, 0) > 0) {
      }
    });
    proto::Engine engine;
    auto t = transport::make_transport(peer.take(), engine, pref);
    Kind k = t->kind();
    CHECK(t->poll_fd() >= 0);
    t.reset();
    return k;
  };
  const char* old = std::getenv("NBDCPP_TRANSPORT");
  std::string saved = old ? old : "";

  ::setenv("NBDCPP_TRANSPORT", "socket", 1);
  CHECK(pick(std::nullopt) == Kind::socket);
  CHECK(pick(Kind::socket) == Kind::socket);
  ::setenv("NBDCPP_TRANSPORT", "bogus", 1);
  CHECK_THROWS_AS(pick(std::nullopt), Error);
  ::setenv("NBDCPP_TRANSPORT", "uring", 1);
  Kind k = pick(std::nullopt); // uring, or socket where io_uring is unavailable
  MESSAGE("default transport here: " << name(k));
  // Explicit socket beats the environment.
  CHECK(pick(Kind::socket) == Kind::socket);

  if (old)
    ::setenv("NBDCPP_TRANSPORT", saved.c_str(), 1);
  else
    ::unsetenv("NBDCPP_TRANSPORT");
}

#ifdef TEST_SECCOMP_FALLBACK
TEST_CASE("transport: io_uring blocked by seccomp falls back to the socket transport") {
  // In a child: the seccomp filter cannot be removed again.
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Like Docker's default profile: io_uring_setup fails with EPERM.
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
      ::_exit(77);
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) ::_exit(5);
    int code = 0;
    try {
      proto::Engine engine;
      UniqueFd fd(sv[0]);
      try {
        transport::make_uring_transport(std::move(fd), engine);
        code = 1;
      } catch (const Error& e) {
        if (e.errnum() != EPERM) code = 2;
      }
      if (fd.get() != sv[0]) code = 3; // a failed attempt must not eat the socket
      auto t = transport::make_transport(std::move(fd), engine, Kind::uring);
      if (t->kind() != Kind::socket || t->poll_fd() != sv[0]) code = 4;
    } catch (...) {
      code = 6;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) {
    MESSAGE("seccomp unavailable, case skipped");
    return;
  }
  CHECK(WEXITSTATUS(status) == 0);
}
#endif
