// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// What integration tests share: starting real servers. Every test starts
// its own nbdkit; the transport under test comes from NBDCPP_TRANSPORT,
// which meson sets to uring for one run of the suite and socket for the
// other.

#include "../common/checks.hpp" // error_of, failure_of, write_and_read_back

#include <nbdcpp/handle.hpp>

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace nbdtest {

/// True when prog is on PATH.
bool have_program(const std::string& prog);

/// Starts argv (searched on PATH) as a child process whose stdin, stdout
/// and stderr are in, out and err (-1: the test's own; the child closes the
/// originals above 2). Returns its pid; exit status 127 if exec failed.
pid_t spawn(const std::vector<std::string>& argv, int in = -1, int out = -1, int err = -1);

/// Waits for pid (through EINTR): its exit status, or -1 if it did not
/// exit normally (or could not be waited for).
int wait_exit(pid_t pid);

/// argv as one line, for messages: each word followed by a space.
std::string command_line(const std::vector<std::string>& argv);

/// nbdkit -s --exit-with-parent ARGS..., for Handle::connect_command.
std::vector<std::string> nbdkit(std::vector<std::string> args);

/// Path of a module built from tests/plugins (e.g. "nbdkit-test-plugin.so").
std::string plugin(const std::string& name = "nbdkit-test-plugin.so");

/// h.connect_command(nbdkit(args)).
void connect(nbd::Handle& h, std::vector<std::string> args);

/// A fresh private directory, removed with its contents at destruction.
class TempDir {
public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

/// A server listening on a unix socket (or TCP port) in the background,
/// for the connect forms that take an address: `nbdkit -f --exit-with-parent
/// -U SOCK -P PIDFILE ARGS...`. The constructor returns once the socket is
/// ready; the destructor stops the server.
class Server {
public:
  explicit Server(std::vector<std::string> args, bool tcp = false);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  const std::string& socket() const { return socket_; }
  const std::string& port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string uri(const std::string& export_name = "") const;

private:
  void start(const std::vector<std::string>& args, bool tcp);

  TempDir dir_;
  std::string socket_, port_;
  pid_t pid_ = -1;
};

/// A byte pattern nbdkit's pattern plugin serves: each 8-byte big-endian
/// word holds its own offset.
std::uint8_t pattern_byte(std::uint64_t offset);

// --- added for the Handle integration tests ----------------------------------

/// What Handle::get_transport_name() must report under the NBDCPP_TRANSPORT
/// this run uses: "socket" when it says socket, else "io_uring".
std::string expected_transport();

/// Drives h with the test's own ::poll() loop, the way an application's
/// event loop would: poll aio_get_fd() for aio_get_direction(), then
/// aio_notify_read() / aio_notify_write(), until done() holds. Fails the
/// test (instead of hanging) if nothing at all happens for 60 s, or if the
/// handle asks for no events while done() is still false.
void poll_loop(nbd::Handle& h, const std::function<bool()>& done);

/// Runs `nbdkit -s --exit-with-parent ARGS...` with fd as its stdin and
/// stdout (for connect_socket with one end of a socketpair). Returns its pid;
/// the caller closes its own end and calls reap().
pid_t spawn_nbdkit_on_fd(int fd, std::vector<std::string> args);

/// waitpid(pid), sending SIGTERM first if it is still running after the
/// caller closed its connection.
void reap(pid_t pid);

/// Creates (or truncates) a sparse file of the given size.
void make_file(const std::string& path, std::uint64_t size);

/// Writes text to path (truncating); throws std::runtime_error on failure.
void write_file(const std::string& path, const std::string& text);

/// The whole contents of path ("" if it cannot be read).
std::string read_file(const std::string& path);

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
std::string unused_tcp_port();

/// Counts how often a callback ran and how often the callable itself was
/// destroyed: moved-from shells do not count, so `destroyed` is exactly the
/// number of live callables that died.
struct CallCounter {
  int calls = 0;
  int destroyed = 0;
  std::vector<int> errors; // *error as each completion saw it
};

/// A completion callback that records into a CallCounter and returns ret.
struct CountedCompletion {
  CallCounter* c;
  int ret = 1;
  bool owner = true;
  CountedCompletion(CallCounter* counter, int r = 1) : c(counter), ret(r) {}
  CountedCompletion(CountedCompletion&& o) noexcept : c(o.c), ret(o.ret), owner(o.owner) {
    o.owner = false;
  }
  CountedCompletion(const CountedCompletion&) = delete;
  CountedCompletion& operator=(const CountedCompletion&) = delete;
  CountedCompletion& operator=(CountedCompletion&&) = delete;
  ~CountedCompletion() {
    if (owner) ++c->destroyed;
  }
  int operator()(int* error) {
    ++c->calls;
    c->errors.push_back(*error);
    return ret;
  }
};

} // namespace nbdtest
