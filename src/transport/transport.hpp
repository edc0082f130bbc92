// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// Transports move bytes between a connected non-blocking stream socket and
// the protocol engine. They own the socket; the engine is borrowed and must
// outlive the transport. Not thread-safe: the handle serializes all calls
// under its lock (any thread may make them).
//
// After a transport call the engine may have died or closed; a transport
// then stops I/O by itself (the io_uring transport quiesces, so that no
// kernel operation still targets a buffer the caller may free in a
// completion callback).

#include "proto/engine.hpp"
#include "transport/unique_fd.hpp"

#include <cstdint>
#include <memory>
#include <optional>

namespace nbd::transport {

enum class Kind { uring, socket };

/// libnbd's LIBNBD_AIO_DIRECTION_* values.
inline constexpr unsigned direction_read = 1, direction_write = 2, direction_both = 3;

/// Counters for benchmarks and tests (batching is only real if it shows up
/// here): system calls made, and bytes copied out of staging buffers.
struct Stats {
  std::uint64_t syscalls = 0;   // every syscall the transport makes
  std::uint64_t recv_calls = 0; // recv() / recv SQEs completed
  std::uint64_t send_calls = 0; // sendmsg() / sendmsg SQEs completed
  std::uint64_t staged_bytes = 0; // received via the staging buffer (copied once)
  std::uint64_t direct_bytes = 0; // received straight into the engine's target
  std::uint64_t batched_recvs = 0; // receives started behind a batching timer
};

class Transport {
public:
  virtual ~Transport() = default;

  virtual Kind kind() const = 0;
  /// What aio_get_fd returns: the socket, or the io_uring fd.
  virtual int poll_fd() const = 0;
  /// Which poll events on poll_fd() matter now (direction_read/write, or 0
  /// when nothing is expected). For io_uring, WRITE means "call
  /// notify_write() to submit prepared work" (the ring fd always polls
  /// writable).
  virtual unsigned direction() const = 0;
  /// poll_fd() was readable: do the I/O that can be done without blocking
  /// and drive the engine.
  virtual void notify_read() = 0;
  /// poll_fd() was writable: same.
  virtual void notify_write() = 0;
  /// New work was queued in the engine (commands, options, disconnect):
  /// get it moving. May only prepare it (batching); direction() then
  /// reports WRITE until notify_write() or wait() sends it.
  virtual void flush() = 0;
  /// Blocks until progress (bytes moved, EOF, error), timeout_ms passes
  /// (-1 = forever, 0 = don't block) or extra_fd (if >= 0) polls readable.
  /// Returns 1 if progress was made or is possible, 0 on timeout; sets
  /// extra_ready when extra_fd was readable. With nothing to wait for on
  /// the connection (engine dead, closed or idle, after quiesce()) only
  /// extra_fd is polled, and without one it returns 1 at once rather than
  /// hang. Throws nbd::Error when poll/io_uring_enter fails (EINTR is
  /// retried).
  virtual int wait(int timeout_ms, int extra_fd, bool& extra_ready) = 0;
  /// Makes the engine's send progress exact before the caller drops queued
  /// requests (SHUTDOWN_ABANDON_PENDING): a send that was only prepared is
  /// withdrawn (nothing went out), one the kernel already has is waited for
  /// and committed. Afterwards every byte the engine counts as unsent really
  /// is unsent. The socket transport never holds a send between calls.
  virtual void settle_send() {}
  /// Whether a receive may wait a little for more replies when many
  /// commands are in flight (io_uring only; see Handle::set_reply_batching).
  virtual void set_reply_batching(bool) {}
  /// Stops all I/O for good: on return no kernel operation references the
  /// engine's or the caller's buffers. Call it before completing commands
  /// on close or death (callers may free buffers in their callbacks).
  /// Idempotent; the socket is shut down, not closed (the destructor
  /// closes it).
  virtual void quiesce() = 0;

  virtual const Stats& stats() const = 0;
};

/// The portable poll()-based transport.
std::unique_ptr<Transport> make_socket_transport(UniqueFd fd, proto::Engine& engine);

/// The io_uring transport. Throws nbd::Error(errno) if the ring cannot be
/// created (ENOSYS also when the kernel lacks the features it needs, or
/// when nbdcpp was built without liburing). The fd is taken by rvalue
/// reference and moved from only on success, so that a caller can fall
/// back to the socket transport with the same socket.
std::unique_ptr<Transport> make_uring_transport(UniqueFd&& fd, proto::Engine& engine);

/// Picks a transport: an explicit preference wins, else the environment
/// variable NBDCPP_TRANSPORT=socket|uring, else io_uring. io_uring falls
/// back to the socket transport when the ring cannot be created with
/// ENOSYS, EPERM or ENOMEM (old kernels, seccomp, kernel.io_uring_disabled,
/// RLIMIT_MEMLOCK); check kind() for what was chosen. Built without
/// liburing it is always the socket transport. Throws nbd::Error(EINVAL)
/// for any other value of NBDCPP_TRANSPORT.
std::unique_ptr<Transport> make_transport(UniqueFd fd, proto::Engine& engine,
                                          std::optional<Kind> preference);

} // namespace nbd::transport
