// SPDX-License-Identifier: BSD-3-Clause
// The io_uring transport: the only file in nbdcpp that includes liburing.h.
//
// One ring per handle, at most one recv and one sendmsg in flight. The gain
// over recv()/sendmsg() is fewer system calls per command, so everything is
// batched: flush() only prepares SQEs, and one io_uring_enter submits the
// queued requests, re-arms the receive and waits for completions.
//
// Buffers named in SQEs (staging, the engine's recv target, the iovecs and
// what they point at) must stay valid until their CQE is reaped, also when
// the connection dies: close() does not cancel io_uring requests, so
// quiesce() shuts the socket down, cancels, and reaps every CQE.

#include "transport/poll_wait.hpp"
#include "transport/reply_batching.hpp"
#include "transport/transport.hpp"

#include <nbdcpp/error.hpp>

#include <liburing.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>

namespace nbd::transport {

namespace {

// At most a recv (or its poll fallback), a sendmsg (or its poll), the
// batching timer and a cancel for each: 8 is ample, and the CQ (twice the
// size) can never overflow.
constexpr unsigned ring_entries = 8;
// One staging recv can carry dozens of small replies (64 x 4 KiB reads).
constexpr std::size_t staging_size = 256 * 1024;
// Payloads at least this big are received in place, no copy.
constexpr std::size_t direct_threshold = proto::Engine::large_payload;
// While a large read is in flight a staging recv takes at most this much,
// so that little of its payload lands in staging (and is copied again):
// the reply header and a few small replies, then the payload goes direct.
constexpr std::size_t staging_size_large = 4096;
// Waiting for a send's CQE and a reply's in one io_uring_enter (see
// pair_wait()) is safe within these bounds.
constexpr std::size_t pair_send_max = 16 * 1024;
constexpr std::uint64_t pair_bytes_max = 128 * 1024;
constexpr std::size_t pair_commands_max = 64;
// 64 queued writes need 128 iovecs; the kernel allows 1024 (UIO_MAXIOV).
constexpr std::size_t max_iov = 256;
// An SQE's length is 32 bits.
constexpr std::size_t max_recv_len = std::size_t{1} << 30;

enum Tag : std::uint64_t {
  tag_recv = 1,
  tag_send,
  tag_recv_poll, // POLL_ADD standing in for recv after -EAGAIN
  tag_send_poll,
  tag_cancel,
  tag_delay, // the timer a batched receive is linked behind
};

bool is_live(const proto::Engine& e) {
  return e.phase() != proto::Phase::dead && e.phase() != proto::Phase::closed;
}

class UringTransport final : public Transport {
public:
  UringTransport(UniqueFd&& fd, proto::Engine& engine)
      : engine_(engine), staging_(new std::uint8_t[staging_size]) {
    setup_ring(); // throws before fd is taken; nothing after it throws
    fd_ = std::move(fd);
    // Optional features: failures only cost speed.
    io_uring_ring_dontfork(&ring_); // the handle may fork a server
    const int sock = fd_.get();
    sockaddr_storage ss{};
    socklen_t sslen = sizeof ss;
    unix_socket_ = ::getsockname(sock, reinterpret_cast<sockaddr*>(&ss), &sslen) == 0 &&
                   ss.ss_family == AF_UNIX;
    batching_.set_enabled(can_batch_);
    if (io_uring_register_files(&ring_, &sock, 1) == 0) {
      file_ = 0; // index in the registered file table
      sqe_flags_ = IOSQE_FIXED_FILE;
    } else {
      file_ = sock;
    }
  }

  ~UringTransport() override {
    quiesce();
    io_uring_queue_exit(&ring_);
  }

  UringTransport(const UringTransport&) = delete;
  UringTransport& operator=(const UringTransport&) = delete;

  Kind kind() const override { return Kind::uring; }
  int poll_fd() const override { return ring_.ring_fd; }
  const Stats& stats() const override { return stats_; }

  unsigned direction() const override {
    if (stopped_) return 0;
    // Prepared work only moves when notify_write() submits it; the ring fd
    // always polls writable, so WRITE means "call notify_write()".
    if (io_uring_sq_ready(&ring_) > 0 || needs_arm()) return direction_write;
    return inflight_ > 0 ? direction_read : 0;
  }

  void notify_read() override {
    if (stopped_) return;
    reap();
    advance(true);
  }

  void notify_write() override {
    if (stopped_) return;
    advance(true);
  }

  void flush() override {
    if (stopped_) return;
    advance(false);
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
      recv_progress_ = false;
      if (!stopped_) advance(false);
      if (recv_progress_ || news()) return 1;
      if (stopped_ || inflight_ == 0) return wait_extra_only(timeout_ms, extra_fd, extra_ready);

      bool timed_out = false;
      if (timeout_ms == 0) {
        // Don't block: submit what is prepared and take what is there.
        bool submitted = submit() > 0;
        bool reaped = reap() > 0;
        if (!stopped_) advance(false);
        return submitted || reaped ? 1 : 0;
      }
      if (extra_fd < 0) {
        // A batching timer being submitted posts a CQE before the receive
        // behind it can: wait for both.
        const unsigned want = (pair_wait() ? 2 : 1) + (batch_in_sq_ ? 1 : 0);
        timed_out = submit_and_wait(timeout_ms, deadline, want);
      } else {
        submit();
        std::array<pollfd, 2> fds{{{ring_.ring_fd, POLLIN, 0}, {extra_fd, POLLIN, 0}}};
        timed_out = poll_until(fds.data(), fds.size(), timeout_ms, deadline) == 0;
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) extra_ready = true;
      }
      reap();
      if (!stopped_) advance(false);
      // A completed send alone finishes nothing the caller waits for: keep
      // waiting for the reply instead of costing the caller another call.
      if (recv_progress_ || extra_ready || news()) return 1;
      if (timed_out) return 0;
    }
  }

  void set_reply_batching(bool on) override { batching_.set_enabled(on && can_batch_); }

  void settle_send() override {
    if (stopped_ || send_op_ != Op::sendmsg) return;
    // Still in the SQ, never submitted: turn it into a NOP whose CQE is
    // ignored, so none of those bytes ever reach the server.
    for (unsigned i = *ring_.sq.khead; i != ring_.sq.sqe_tail; ++i) {
      io_uring_sqe* sqe = &ring_.sq.sqes[i & ring_.sq.ring_mask];
      if (sqe->user_data == tag_send && sqe->opcode == IORING_OP_SENDMSG) {
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, tag_cancel);
        send_op_ = Op::none;
        send_in_sq_ = false;
        return;
      }
    }
    // The kernel has it. Waiting for it to finish could take forever (a
    // server that stopped reading), so cancel it: the CQE of a cancelled
    // send carries the bytes it did send (io_sendrecv_fail, kernel 6.0+),
    // or -ECANCELED when none went out. Receive meanwhile, as usual.
    cancel(tag_send);
    while (!stopped_ && send_op_ == Op::sendmsg) {
      arm();
      submit_and_wait(-1, std::chrono::steady_clock::now());
      reap();
      stop_if_dead();
    }
  }

  void quiesce() override {
    if (stopped_) return;
    stopped_ = true;
    // Wakes a recv or send parked on the socket (EOF / EPIPE) even if the
    // cancel below raced with its completion.
    ::shutdown(fd_.get(), SHUT_RDWR);
    ++stats_.syscalls;
    // Prepared but never submitted: turn into NOPs (same user_data), so no
    // new I/O starts on buffers about to be released.
    for (unsigned i = *ring_.sq.khead; i != ring_.sq.sqe_tail; ++i) {
      io_uring_sqe* sqe = &ring_.sq.sqes[i & ring_.sq.ring_mask];
      const std::uint64_t data = sqe->user_data;
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, data);
    }
    // A receive still behind its batch timer is not cancellable itself;
    // cancelling the timer cancels it.
    if (batch_armed_) cancel(tag_delay);
    if (recv_op_ != Op::none) cancel(recv_op_ == Op::poll ? tag_recv_poll : tag_recv);
    if (send_op_ != Op::none) cancel(send_op_ == Op::poll ? tag_send_poll : tag_send);
    // Every CQE, cancels included: until then the kernel may still write
    // into staging or the caller's buffer.
    while (inflight_ > 0) {
      ++stats_.syscalls;
      int r = io_uring_submit_and_wait(&ring_, 1);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) break; // no sane ring fails here
      reap();
    }
    stage_begin_ = stage_end_ = 0;
  }

private:
  enum class Op : std::uint8_t { none, staging, direct, sendmsg, poll };

  void setup_ring() {
    // Newest first; -EINVAL means the kernel predates a flag. COOP_TASKRUN
    // (5.19) spares us IPIs; DEFER_TASKRUN would need SINGLE_ISSUER, which
    // a handle driven from several threads cannot promise.
    static constexpr unsigned attempts[] = {
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int r = -EINVAL;
    io_uring_params p{};
    for (unsigned flags : attempts) {
      p = {};
      p.flags = flags;
      ++stats_.syscalls;
      r = io_uring_queue_init_params(ring_entries, &ring_, &p);
      if (r != -EINVAL) break;
    }
    if (r < 0) throw Error(-r, "io_uring_setup");
    // Reply batching needs IORING_TIMEOUT_ETIME_SUCCESS (5.16), which has
    // no feature bit; FEAT_CQE_SKIP (5.17) stands in for it.
    can_batch_ = (p.features & IORING_FEAT_CQE_SKIP) != 0;
    // EXT_ARG (5.11) makes a timed wait one syscall without timeout SQEs
    // whose CQEs we would have to filter; FAST_POLL (5.7) keeps socket
    // I/O off worker threads. Older kernels get the socket transport.
    constexpr unsigned needed = IORING_FEAT_EXT_ARG | IORING_FEAT_FAST_POLL | IORING_FEAT_NODROP;
    if ((p.features & needed) != needed) {
      io_uring_queue_exit(&ring_);
      throw Error(ENOSYS, "io_uring: kernel too old (needs 5.11)");
    }
  }

  // Whether the engine wants I/O the ring has not been given yet.
  bool needs_arm() const {
    if (!is_live(engine_)) return false;
    if (send_op_ == Op::none && engine_.send_pending_bytes() > 0) return true;
    unsigned d = static_cast<unsigned>(engine_.wants());
    return (d & direction_read) && (stage_begin_ != stage_end_ || recv_op_ == Op::none);
  }

  io_uring_sqe* get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) { // cannot happen with <= 4 ops in flight, but be safe
      submit();
      sqe = io_uring_get_sqe(&ring_);
      if (!sqe) throw Error(EBUSY, "io_uring: submission queue full");
    }
    ++inflight_;
    return sqe;
  }

  // Moves the engine's new work into the ring (submitting only if asked);
  // stops for good once the engine is dead or closed.
  void advance(bool submit_now) {
    stop_if_dead();
    if (stopped_) return;
    arm();
    stop_if_dead(); // feeding leftovers may have killed it
    if (!stopped_ && submit_now) submit();
  }

  // Prepares (without submitting) whatever the engine wants moved.
  void arm() {
    drain_staging();
    if (!is_live(engine_)) return;
    // The request goes first in the SQ: the recv after it may then find
    // its reply without a trip through poll.
    if (send_op_ == Op::none && engine_.send_pending_bytes() > 0)
      arm_send();
    else if (send_in_sq_)
      refresh_send();
    if (recv_op_ == Op::none && stage_begin_ == stage_end_) arm_recv();
  }

  // The sendmsg is prepared but not submitted yet, and more was queued
  // since (commands queued one by one before the next poll): the kernel
  // reads msg_ and iov_ only when the SQE is submitted, so widen them to
  // everything pending. One sendmsg per batch instead of two.
  void refresh_send() {
    std::size_t n = engine_.send_segments(iov_);
    if (n == 0) return;
    msg_.msg_iovlen = n;
    send_in_sq_bytes_ = 0;
    for (std::size_t i = 0; i < n; ++i) send_in_sq_bytes_ += iov_[i].iov_len;
  }

  void arm_send() {
    std::size_t n = engine_.send_segments(iov_);
    if (n == 0) return;
    msg_ = {};
    msg_.msg_iov = iov_.data();
    msg_.msg_iovlen = n;
    io_uring_sqe* sqe = get_sqe();
    // MSG_WAITALL: the kernel retries partial sends itself (5.19+; older
    // kernels ignore it and we resubmit the rest).
    io_uring_prep_sendmsg(sqe, file_, &msg_, MSG_NOSIGNAL | MSG_WAITALL);
    sqe->flags |= sqe_flags_;
    io_uring_sqe_set_data64(sqe, tag_send);
    send_op_ = Op::sendmsg;
    send_in_sq_ = true;
    send_in_sq_bytes_ = 0;
    for (std::size_t i = 0; i < n; ++i) send_in_sq_bytes_ += iov_[i].iov_len;
  }

  void arm_recv() {
    std::span<std::uint8_t> t = engine_.recv_target();
    if (t.empty()) return;
    const bool direct = t.size() >= direct_threshold;
    const bool delayed = !direct && arm_batch_delay();
    if (!direct) chunks_at_arm_ = engine_.chunks_received();
    io_uring_sqe* sqe = get_sqe();
    if (direct) {
      // The payload is wanted whole anyway: MSG_WAITALL saves a CQE and a
      // resubmission per socket-buffer's worth.
      io_uring_prep_recv(sqe, file_, t.data(), std::min(t.size(), max_recv_len), MSG_WAITALL);
      recv_op_ = Op::direct;
    } else {
      const std::size_t len =
          engine_.large_reads_in_flight() > 0 ? staging_size_large : staging_size;
      io_uring_prep_recv(sqe, file_, staging_.get(), len, 0);
      recv_op_ = Op::staging;
    }
    // Nothing waiting in the socket (the last recv drained it): arm the
    // poll at once instead of a receive attempt bound to fail (5.19+).
    // (After a delay the replies are probably there.)
    if (poll_first_ && !sock_nonempty_ && !delayed) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    sqe->flags |= sqe_flags_;
    io_uring_sqe_set_data64(sqe, tag_recv);
  }

  // Queues the timer a staging receive is linked behind when ReplyBatching
  // says so; returns whether it did.
  bool arm_batch_delay() {
    // With TLS, decrypting costs a reply more than the wakeups batching
    // saves: bench/compare measured no CPU gained and throughput lost.
    if (engine_.phase() != proto::Phase::transmission || engine_.tls_negotiated()) return false;
    const long ns =
        batching_.arm(engine_.in_flight(), engine_.read_bytes_in_flight(), staging_size);
    if (ns == 0) return false;
    io_uring_sqe* sqe = get_sqe();
    batch_ts_.tv_sec = 0;
    batch_ts_.tv_nsec = ns;
    // ETIME_SUCCESS: the timer expiring does not cancel the receive linked
    // to it. If the timer fails (cancelled by quiesce() or by the exit of
    // the thread that submitted it) the receive ends with -ECANCELED. Not
    // CQE_SKIP_SUCCESS: when the head of a link fails, that flag also
    // drops the CQEs of the requests linked to it.
    io_uring_prep_timeout(sqe, &batch_ts_, 0, IORING_TIMEOUT_ETIME_SUCCESS);
    sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe_set_data64(sqe, tag_delay);
    batch_armed_ = true;
    batch_in_sq_ = true;
    ++stats_.batched_recvs;
    return true;
  }

  // After -EAGAIN (kernels that honour O_NONBLOCK for io_uring sockets):
  // wait for readiness through the ring rather than spin.
  void arm_poll(Tag tag, unsigned events) {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_poll_add(sqe, file_, events);
    sqe->flags |= sqe_flags_;
    io_uring_sqe_set_data64(sqe, tag);
    (tag == tag_recv_poll ? recv_op_ : send_op_) = Op::poll;
  }

  void cancel(Tag target) {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel64(sqe, target, 0);
    io_uring_sqe_set_data64(sqe, tag_cancel);
  }

  // Returns how many SQEs were submitted.
  int submit() {
    if (io_uring_sq_ready(&ring_) == 0) return 0;
    ++stats_.syscalls;
    int r = io_uring_submit(&ring_);
    send_in_sq_ = batch_in_sq_ = false;
    if (r >= 0) return r;
    // Transient shortage: the SQEs stay queued and direction() says WRITE.
    if (r == -EINTR || r == -EAGAIN || r == -EBUSY) return 0;
    throw Error(-r, "io_uring_enter");
  }

  // A request about to be submitted with a receive armed: the send's CQE
  // is posted during the very enter that submits it, so waiting for one CQE
  // would return at once and cost a second io_uring_enter for the reply the
  // caller waits for. Waiting for two is safe only if both surely come:
  // - the send carries everything pending and the engine is transmitting,
  //   so the server has all it needs to answer, and answers something;
  // - the send cannot block: a Unix socket whose buffer (>= 208 KiB by
  //   default) holds at most our bounded unread requests and write
  //   payloads, so it completes at submission (TCP may not: not paired);
  // - the server cannot be blocked on writing to us, which would stop it
  //   reading: what it still owes us is bounded well below its buffer.
  // A failed send means a dead connection, whose receive then ends too.
  bool pair_wait() const {
    return unix_socket_ && send_in_sq_ && recv_op_ != Op::none &&
           io_uring_cq_ready(&ring_) == 0 && engine_.phase() == proto::Phase::transmission &&
           send_in_sq_bytes_ <= pair_send_max &&
           send_in_sq_bytes_ == engine_.send_pending_bytes() &&
           engine_.in_flight() <= pair_commands_max &&
           engine_.read_bytes_in_flight() <= pair_bytes_max &&
           engine_.write_bytes_in_flight() <= pair_bytes_max;
  }

  // Submits and blocks for want CQEs in one syscall; true on timeout.
  bool submit_and_wait(int timeout_ms, std::chrono::steady_clock::time_point deadline,
                       unsigned want = 1) {
    for (;;) {
      __kernel_timespec ts{};
      if (timeout_ms > 0) {
        auto left = std::max(deadline - std::chrono::steady_clock::now(),
                             std::chrono::steady_clock::duration::zero());
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
        ts.tv_sec = ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
      }
      io_uring_cqe* cqe = nullptr;
      ++stats_.syscalls;
      int r = io_uring_submit_and_wait_timeout(&ring_, &cqe, want, timeout_ms < 0 ? nullptr : &ts,
                                               nullptr);
      send_in_sq_ = batch_in_sq_ = false;
      if (r >= 0) return false;
      if (r == -ETIME) return true;
      if (r != -EINTR && r != -EAGAIN && r != -EBUSY) throw Error(-r, "io_uring_enter");
    }
  }

  int poll_until(pollfd* fds, std::size_t n, int timeout_ms,
                 std::chrono::steady_clock::time_point deadline) {
    return transport::poll_until(fds, n, timeout_ms, deadline, stats_.syscalls);
  }

  // Nothing in flight: only the caller's fd can wake us.
  int wait_extra_only(int timeout_ms, int extra_fd, bool& extra_ready) {
    if (extra_fd < 0) return 1;
    pollfd pfd{extra_fd, POLLIN, 0};
    int r = poll_until(&pfd, 1, timeout_ms, std::chrono::steady_clock::now() +
                                                std::chrono::milliseconds(timeout_ms));
    extra_ready = r > 0;
    return r > 0 ? 1 : 0;
  }

  // Takes every available CQE without blocking and drives the engine.
  unsigned reap() {
    unsigned total = 0;
    for (;;) {
      // With TASKRUN_FLAG liburing enters the kernel to run pending task
      // work; count that syscall too.
      if (io_uring_cq_ready(&ring_) == 0 &&
          (IO_URING_READ_ONCE(*ring_.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)))
        ++stats_.syscalls;
      std::array<io_uring_cqe*, 2 * ring_entries> cqes;
      unsigned n = io_uring_peek_batch_cqe(&ring_, cqes.data(), cqes.size());
      if (n == 0) return total;
      // Copy out and release the CQ slots first: handlers may quiesce,
      // which reaps on its own.
      std::array<io_uring_cqe, 2 * ring_entries> batch;
      for (unsigned i = 0; i < n; ++i) batch[i] = *cqes[i];
      io_uring_cq_advance(&ring_, n);
      for (unsigned i = 0; i < n; ++i) on_cqe(batch[i]);
      total += n;
    }
  }

  void on_cqe(const io_uring_cqe& cqe) {
    --inflight_;
    switch (cqe.user_data) {
    case tag_recv: on_recv(cqe.res, cqe.flags); break;
    case tag_send: on_send(cqe.res); break;
    case tag_recv_poll: recv_op_ = Op::none; break; // readable (or error): retry the recv
    case tag_send_poll: send_op_ = Op::none; break;
    case tag_delay:
      // -EINVAL: a kernel without ETIME_SUCCESS (its receive was cancelled
      // and is re-armed); batch no more.
      if (cqe.res == -EINVAL) {
        can_batch_ = false;
        batching_.set_enabled(false);
      }
      break;
    default: break; // cancels: the cancelled op reports on its own
    }
  }

  void on_recv(int res, unsigned flags) {
    const Op op = recv_op_;
    recv_op_ = Op::none;
    batch_armed_ = false;
    ++stats_.recv_calls;
    if (stopped_ || !is_live(engine_)) return; // the bytes go nowhere
    if (res > 0) {
      recv_progress_ = true;
      sock_nonempty_ = (flags & IORING_CQE_F_SOCK_NONEMPTY) != 0;
      const auto got = static_cast<std::size_t>(res);
      if (op == Op::direct) {
        stats_.direct_bytes += got;
        engine_.commit_recv(got);
      } else {
        stats_.staged_bytes += got;
        stage_begin_ = 0;
        stage_end_ = got;
        drain_staging();
        batching_.received(engine_.chunks_received() - chunks_at_arm_);
      }
      return;
    }
    sock_nonempty_ = true; // unknown: try the recv before polling
    switch (-res) {
    case 0:
      recv_progress_ = true;
      engine_.on_eof();
      break;
    case EINTR: break; // re-armed by arm()
    // The kernel cancels a task's pending requests when the task exits:
    // with a handle shared by threads, the thread that armed this receive
    // may be gone. Nothing was received; arm() asks again.
    case ECANCELED: break;
    case EAGAIN: arm_poll(tag_recv_poll, POLLIN); break;
    case EINVAL:
      if (poll_first_) { // a kernel that rejects POLL_FIRST: retry without
        poll_first_ = false;
        break;
      }
      [[fallthrough]];
    default:
      recv_progress_ = true;
      engine_.on_io_error(-res, "recv");
    }
  }

  void on_send(int res) {
    send_op_ = Op::none;
    ++stats_.send_calls;
    if (stopped_ || !is_live(engine_)) return;
    if (res >= 0) {
      engine_.commit_send(static_cast<std::size_t>(res));
      return;
    }
    switch (-res) {
    case EINTR: break;
    // settle_send withdrew it, or the thread that submitted it exited (see
    // on_recv), before any byte went out; arm() sends it again if needed.
    case ECANCELED: break;
    case EAGAIN: arm_poll(tag_send_poll, POLLOUT); break;
    default: engine_.on_io_error(-res, "send");
    }
  }

  // Feeds bytes an earlier recv left over (the engine had stopped
  // receiving, e.g. option mode between options).
  void drain_staging() {
    if (stage_begin_ == stage_end_) return;
    if (!is_live(engine_)) {
      stage_begin_ = stage_end_ = 0;
      return;
    }
    std::size_t used = engine_.feed({staging_.get() + stage_begin_, stage_end_ - stage_begin_});
    stage_begin_ += used;
    if (stage_begin_ == stage_end_) stage_begin_ = stage_end_ = 0;
  }

  // The engine died or closed: it will complete commands with errors, and
  // their callbacks may free buffers an op in flight still targets.
  void stop_if_dead() {
    if (!stopped_ && !is_live(engine_)) quiesce();
  }

  io_uring ring_{};
  UniqueFd fd_;
  proto::Engine& engine_;
  int file_ = -1;               // registered index, or the socket
  std::uint8_t sqe_flags_ = 0;  // IOSQE_FIXED_FILE when registered
  unsigned inflight_ = 0;       // SQEs prepared whose CQE is not reaped
  Op recv_op_ = Op::none, send_op_ = Op::none;
  bool stopped_ = false;
  bool poll_first_ = true;
  bool sock_nonempty_ = true;   // the greeting is probably waiting already
  bool recv_progress_ = false;  // set by on_recv for wait()
  bool send_in_sq_ = false;     // the sendmsg is prepared, not yet submitted
  bool unix_socket_ = false;    // AF_UNIX (see pair_wait)
  std::size_t send_in_sq_bytes_ = 0;
  bool can_batch_ = false;      // the kernel has what arm_batch_delay() needs
  ReplyBatching batching_;
  std::uint64_t chunks_at_arm_ = 0; // the engine's count when the staging receive was armed
  bool batch_armed_ = false;    // a receive is linked behind the timer
  bool batch_in_sq_ = false;    // that timer is prepared, not yet submitted
  __kernel_timespec batch_ts_{}; // read by the kernel at submission
  std::unique_ptr<std::uint8_t[]> staging_;
  std::size_t stage_begin_ = 0, stage_end_ = 0;
  std::array<iovec, max_iov> iov_{}; // referenced by the sendmsg in flight
  msghdr msg_{};
  Stats stats_;
};

} // namespace

std::unique_ptr<Transport> make_uring_transport(UniqueFd&& fd, proto::Engine& engine) {
  return std::make_unique<UringTransport>(std::move(fd), engine);
}

} // namespace nbd::transport
