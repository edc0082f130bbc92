// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// Socket and process plumbing below the protocol engine: getting a
// connected, non-blocking stream socket to an NBD server. Nothing here
// knows about the NBD protocol.

#include "transport/unique_fd.hpp"

#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace nbd::transport {

/// One non-blocking connection attempt, driven by an event loop:
///
///   Connector c = Connector::tcp(host, port);
///   while (!c.advance())
///     wait until c.fd() is writable (POLLOUT);
///   UniqueFd sock = c.release();
///
/// When a name resolves to several addresses they are tried in turn; the
/// error reported is that of the last address. All sockets are created
/// SOCK_NONBLOCK | SOCK_CLOEXEC.
class Connector {
public:
  /// Unix domain socket at `path`. A path starting with '\0' names a
  /// socket in Linux's abstract namespace. Throws nbd::Error(EINVAL) for
  /// an empty path, ENAMETOOLONG if it does not fit in sockaddr_un.
  static Connector unix_socket(std::string path);

  /// TCP to host:port (port may be a number or a service name).
  /// Resolution uses getaddrinfo(), which BLOCKS the calling thread (it may
  /// query DNS); only the connect itself is non-blocking. Throws
  /// nbd::Error if the name cannot be resolved.
  static Connector tcp(std::string host, std::string port);

  /// AF_VSOCK to cid:port (e.g. cid 2 = the hypervisor host).
  static Connector vsock(uint32_t cid, uint32_t port);

  /// An already connected socket, e.g. from nbd_connect_socket. The fd is
  /// switched to O_NONBLOCK because the event loop depends on it.
  /// Throws nbd::Error(EBADF) for an invalid fd.
  static Connector existing(UniqueFd fd);

  Connector(Connector&&) noexcept = default;
  Connector& operator=(Connector&&) noexcept = default;
  ~Connector() = default;

  /// The fd to poll for POLLOUT while a connect is in progress, or the
  /// connected socket; -1 before the first advance() or after release().
  int fd() const noexcept { return fd_.get(); }

  /// Call once to start, and again whenever fd() is writable (spurious
  /// calls are harmless). Returns true once connected. On final failure
  /// throws nbd::Error(connect errno, "connect: WHERE"), whose what() reads
  /// "connect: WHERE: <strerror>"; later calls throw the same error again.
  bool advance();

  bool connected() const noexcept { return state_ == State::connected; }

  /// Hands over the socket (meaningful once advance() returned true).
  UniqueFd release() noexcept;

private:
  struct Address {
    sockaddr_storage addr;
    socklen_t len;
    int family;
    int socktype;
    int protocol;
  };
  enum class State { idle, in_progress, connected, failed };

  Connector(std::string where, std::vector<Address> addrs);
  bool start_next();
  bool finish_in_progress();
  [[noreturn]] void fail();

  std::string where_;
  std::vector<Address> addrs_;
  std::size_t next_ = 0;
  UniqueFd fd_;
  State state_ = State::idle;
  int last_errno_ = 0;
};

/// A child process with one end of a stream socket to it.
struct Subprocess {
  UniqueFd sock; // our end: connected, non-blocking, close-on-exec
  pid_t pid = -1;
};

/// Like libnbd's nbd_connect_command: runs argv (argv[0] is looked up in
/// $PATH like execvp) with its stdin and stdout connected to the returned
/// socket; stderr is inherited. SIGPIPE and any caught signals are reset to
/// their defaults and the signal mask is cleared in the child. If the
/// program cannot be run the child exits with 127 (not found) or 126 and
/// our end sees EOF. Throws nbd::Error(EINVAL) for an empty argv.
Subprocess spawn_command(const std::vector<std::string>& argv);

/// Like libnbd's nbd_connect_systemd_socket_activation: runs argv with a
/// listening unix socket as fd 3 and LISTEN_PID=<its pid>, LISTEN_FDS=1,
/// LISTEN_FDNAMES=nbd in its environment, then connects to that socket.
/// The socket file and its private temporary directory (under $TMPDIR or
/// /tmp) are removed before returning. Socket-activated servers keep
/// listening after our connection closes, so pass terminate=true to
/// reap_subprocess() for them.
Subprocess spawn_socket_activation(const std::vector<std::string>& argv);

/// Waits for a child started above, after its socket has been closed.
/// If `terminate`, SIGTERM is sent first. Then polls with WNOHANG for up
/// to `grace` and finally SIGKILLs it, so this never hangs. Returns the
/// waitpid status, or -1 if there was nothing to reap.
int reap_subprocess(pid_t pid, bool terminate = false,
                    std::chrono::milliseconds grace = std::chrono::seconds(2));

} // namespace nbd::transport
