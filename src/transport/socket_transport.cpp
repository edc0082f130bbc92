// SPDX-License-Identifier: BSD-3-Clause
// The portable transport: non-blocking recv()/sendmsg() driven by poll().
// Also home of make_transport(), which must build without liburing.

#include "transport/poll_wait.hpp"
#include "transport/transport.hpp"

#include <nbdcpp/error.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <string_view>

namespace nbd::transport {

namespace {

// Small replies (headers, 4 KiB reads) are received many per recv() into a
// staging buffer and copied once; payloads at least this big go straight
// into their destination (below 64 KiB the syscall saved by batching costs
// more than the copy). 256 KiB holds the replies of 64 queued 4 KiB reads:
// measured 1 recv() per batch instead of 3.5 with 64 KiB.
constexpr std::size_t staging_size = 256 * 1024;
constexpr std::size_t direct_threshold = proto::Engine::large_payload;
// The staging receive while a large read is in flight (see receive()).
constexpr std::size_t staging_size_large = 4096;
// Enough for 64 queued writes (header + payload each) in one sendmsg.
constexpr std::size_t max_iov = 128;
// Bound on syscalls per notify, so one busy connection cannot starve the
// caller's other work; level-triggered poll brings us back.
constexpr int max_rounds = 16;

bool is_live(const proto::Engine& e) {
  return e.phase() != proto::Phase::dead && e.phase() != proto::Phase::closed;
}

class SocketTransport final : public Transport {
public:
  SocketTransport(UniqueFd fd, proto::Engine& engine)
      : fd_(std::move(fd)), engine_(engine), staging_(new std::uint8_t[staging_size]) {}

  Kind kind() const override { return Kind::socket; }
  int poll_fd() const override { return fd_.get(); }
  const Stats& stats() const override { return stats_; }

  unsigned direction() const override {
    if (stopped_) return 0;
    unsigned d = static_cast<unsigned>(engine_.wants());
    // Leftover bytes the engine wants now are already here: the socket may
    // never poll readable for them, but it polls writable and
    // notify_write() feeds them.
    if ((d & direction_read) && stage_begin_ != stage_end_) d |= direction_write;
    return d;
  }

  void notify_read() override {
    if (stopped_) return;
    receive();
    // A reply may call for an answer (negotiation); the socket is almost
    // always writable, so try now instead of after another poll().
    if (engine_.send_pending_bytes() > 0) send();
  }

  void notify_write() override {
    if (stopped_) return;
    drain_staging();
    send();
  }

  void flush() override {
    // Sending is left to notify_write()/wait() so that commands queued
    // together leave in one sendmsg(); only bytes already received for a
    // newly started exchange (option mode) are handed over.
    if (!stopped_) drain_staging();
  }

  int wait(int timeout_ms, int extra_fd, bool& extra_ready) override {
    extra_ready = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    const std::size_t events_before = engine_.events().size();
    const proto::Phase phase_before = engine_.phase();
    auto news = [&] {
      return engine_.events().size() != events_before || engine_.phase() != phase_before;
    };

    for (;;) {
      bool read_progress = false;
      if (!stopped_) {
        read_progress = stage_begin_ != stage_end_ && drain_staging();
        // Send first: the socket is almost always writable, which saves
        // a poll() per batch of requests.
        if (engine_.send_pending_bytes() > 0) send();
      }
      if (read_progress || news()) return 1;

      short events = 0;
      if (!stopped_) {
        unsigned d = static_cast<unsigned>(engine_.wants());
        if (d & direction_read) events |= POLLIN;
        if (d & direction_write) events |= POLLOUT;
      }
      if (events == 0 && extra_fd < 0) return 1; // nothing could ever wake us
      // poll() ignores negative fds: an idle socket must not report
      // POLLHUP forever while only extra_fd matters.
      std::array<pollfd, 2> fds{{{events ? fd_.get() : -1, events, 0}, {extra_fd, POLLIN, 0}}};
      int r = poll_until(fds.data(), fds.size(), timeout_ms, deadline);
      if (r == 0) return 0;
      if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) extra_ready = true;

      short re = fds[0].revents;
      if (re & POLLNVAL) {
        engine_.on_io_error(EBADF, "poll: the socket was closed underneath the handle");
        return 1;
      }
      if ((re & (POLLOUT | POLLERR | POLLHUP)) && engine_.send_pending_bytes() > 0) send();
      if (re & (POLLIN | POLLERR | POLLHUP)) {
        receive();
        read_progress = true;
      }
      // A send alone completes nothing the caller waits for: keep waiting
      // for the reply rather than cost the caller another call.
      if (read_progress || extra_ready || news() || timeout_ms == 0) return 1;
    }
  }

  void quiesce() override {
    if (stopped_) return;
    // Nothing is ever in flight between calls here; shutting down tells
    // the server at once, as the io_uring transport does.
    stopped_ = true;
    ::shutdown(fd_.get(), SHUT_RDWR);
    ++stats_.syscalls;
  }

private:
  int poll_until(pollfd* fds, std::size_t n, int timeout_ms,
                 std::chrono::steady_clock::time_point deadline) {
    return transport::poll_until(fds, n, timeout_ms, deadline, stats_.syscalls);
  }

  // Feeds bytes an earlier recv() left over; true if any were taken.
  bool drain_staging() {
    if (stage_begin_ == stage_end_) return false;
    if (!is_live(engine_)) {
      stage_begin_ = stage_end_ = 0;
      return false;
    }
    std::size_t used =
        engine_.feed({staging_.get() + stage_begin_, stage_end_ - stage_begin_});
    stage_begin_ += used;
    if (stage_begin_ == stage_end_) stage_begin_ = stage_end_ = 0;
    return used > 0;
  }

  void receive() {
    drain_staging();
    for (int round = 0; round < max_rounds; ++round) {
      // Leftovers mean the engine stopped receiving (option mode, death).
      if (stage_begin_ != stage_end_) return;
      std::span<std::uint8_t> target = engine_.recv_target();
      if (target.empty()) return;
      const bool direct = target.size() >= direct_threshold;
      std::uint8_t* buf = direct ? target.data() : staging_.get();
      // While a large read is in flight, take little into staging: the
      // rest of its payload then goes direct instead of being copied.
      const std::size_t want = direct                                 ? target.size()
                               : engine_.large_reads_in_flight() > 0 ? staging_size_large
                                                                      : staging_size;

      ++stats_.syscalls;
      ++stats_.recv_calls;
      ssize_t n = ::recv(fd_.get(), buf, want, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) engine_.on_io_error(errno, "recv");
        return;
      }
      if (n == 0) {
        engine_.on_eof();
        return;
      }
      const auto got = static_cast<std::size_t>(n);
      if (direct) {
        stats_.direct_bytes += got;
        engine_.commit_recv(got);
      } else {
        stats_.staged_bytes += got;
        stage_begin_ = 0;
        stage_end_ = got;
        drain_staging();
      }
      // A short read means the socket is drained: skip the recv() that
      // would only say EAGAIN.
      if (got < want || !is_live(engine_)) return;
    }
  }

  void send() {
    for (int round = 0; round < max_rounds; ++round) {
      std::array<iovec, max_iov> iov;
      std::size_t n = engine_.send_segments(iov);
      if (n == 0) return;
      std::size_t total = 0;
      for (std::size_t i = 0; i < n; ++i) total += iov[i].iov_len;
      msghdr msg{};
      msg.msg_iov = iov.data();
      msg.msg_iovlen = n;
      ++stats_.syscalls;
      ++stats_.send_calls;
      ssize_t r = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) engine_.on_io_error(errno, "send");
        return;
      }
      engine_.commit_send(static_cast<std::size_t>(r));
      if (static_cast<std::size_t>(r) < total) return; // socket buffer full
    }
  }

  UniqueFd fd_;
  proto::Engine& engine_;
  std::unique_ptr<std::uint8_t[]> staging_;
  std::size_t stage_begin_ = 0, stage_end_ = 0; // bytes received, not yet fed
  bool stopped_ = false;
  Stats stats_;
};

} // namespace

std::unique_ptr<Transport> make_socket_transport(UniqueFd fd, proto::Engine& engine) {
  return std::make_unique<SocketTransport>(std::move(fd), engine);
}

#ifndef NBDCPP_HAVE_URING
std::unique_ptr<Transport> make_uring_transport(UniqueFd&&, proto::Engine&) {
  throw Error(ENOSYS, "io_uring: nbdcpp was built without liburing");
}
#endif

namespace {

// A Unix socket's send buffer bounds how much of a write payload the
// kernel takes per call (the peer's receive buffer plays no part for
// AF_UNIX): with the default ~208 KiB a batch of large writes goes out in
// many pieces, each a wakeup of both sides. Ask for 4 MiB; the kernel caps
// it at net.core.wmem_max, and only fills it as data waits. TCP sockets
// are left alone: setting SO_SNDBUF would switch off their autotuning.
void tune_socket(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 || ss.ss_family != AF_UNIX)
    return;
  int want = 4 * 1024 * 1024, have = 0;
  socklen_t hl = sizeof have;
  if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &have, &hl) == 0 && have >= want) return;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want); // best effort
}

} // namespace

std::unique_ptr<Transport> make_transport(UniqueFd fd, proto::Engine& engine,
                                          std::optional<Kind> preference) {
  tune_socket(fd.get());
  Kind kind = Kind::uring;
  if (preference) {
    kind = *preference;
  } else if (const char* env = std::getenv("NBDCPP_TRANSPORT"); env && *env) {
    std::string_view v = env;
    if (v == "socket")
      kind = Kind::socket;
    else if (v != "uring")
      throw Error(EINVAL, "NBDCPP_TRANSPORT: expected 'socket' or 'uring'");
  }
#ifdef NBDCPP_HAVE_URING
  if (kind == Kind::uring) {
    try {
      return make_uring_transport(std::move(fd), engine); // fd stays ours if this throws
    } catch (const Error& e) {
      // io_uring exists but may not be usable here (seccomp,
      // kernel.io_uring_disabled, memlock limits on old kernels).
      if (e.errnum() != ENOSYS && e.errnum() != EPERM && e.errnum() != ENOMEM) throw;
    }
  }
#else
  (void)kind; // the environment is still checked for typos
#endif
  return make_socket_transport(std::move(fd), engine);
}

} // namespace nbd::transport
