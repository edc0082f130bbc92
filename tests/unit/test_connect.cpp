// SPDX-License-Identifier: BSD-3-Clause

// Tests of the connection layer with real local sockets and processes
// (no NBD protocol, except for checking nbdkit's greeting if installed).

#include "transport/connect.hpp"

#include <nbdcpp/error.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

using nbd::transport::Connector;
using nbd::transport::reap_subprocess;
using nbd::transport::spawn_command;
using nbd::transport::spawn_socket_activation;
using nbd::transport::Subprocess;
using nbd::transport::UniqueFd;

namespace {

using Clock = std::chrono::steady_clock;

// For children expected to exit by themselves: reap_subprocess's default
// 2 s before SIGKILL is for the handle; a loaded machine may need longer.
constexpr std::chrono::milliseconds patient = std::chrono::seconds(30);

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A private scratch directory, removed (with its files) at scope exit.
class ScratchDir {
public:
  ScratchDir() {
    std::string templ = "/tmp/nbdcpp-test-XXXXXX";
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path_ = templ;
  }
  ~ScratchDir() {
    std::string cmd = "rm -rf '" + path_ + "'";
    (void)std::system(cmd.c_str());
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

private:
  std::string path_;
};

// Sets (or unsets, for nullopt) an environment variable for a scope.
class ScopedEnv {
public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name))
      old_ = old;
    if (value)
      ::setenv(name, value->c_str(), 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

private:
  const char* name_;
  std::optional<std::string> old_;
};

UniqueFd make_unix_listener(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd);
  sockaddr_un sun = {};
  sun.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof sun.sun_path);
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0);
  REQUIRE(::listen(fd.get(), 16) == 0);
  return fd;
}

// A TCP socket on 127.0.0.1 with a kernel-chosen port; listening or just
// bound (a SYN to a bound, non-listening port gets a RST: ECONNREFUSED).
UniqueFd make_tcp_socket(bool listening, std::string& port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd);
  sockaddr_in sin = {};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = 0;
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
  if (listening)
    REQUIRE(::listen(fd.get(), 16) == 0);
  socklen_t len = sizeof sin;
  REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sin), &len) ==
          0);
  port = std::to_string(ntohs(sin.sin_port));
  return fd;
}

// Drives a Connector as an event loop would, with a safety timeout.
UniqueFd drive(Connector& c) {
  const auto start = Clock::now();
  while (!c.advance()) {
    REQUIRE(c.fd() >= 0);
    REQUIRE(seconds_since(start) < 10);
    pollfd p = {c.fd(), POLLOUT, 0};
    ::poll(&p, 1, 1000);
  }
  return c.release();
}

int drive_expecting_error(Connector c, std::string* what = nullptr) {
  try {
    drive(c);
  } catch (const nbd::Error& e) {
    if (what != nullptr)
      *what = e.what();
    return e.errnum();
  }
  FAIL("connection unexpectedly succeeded");
  return 0;
}

template <typename F> int error_of(F&& f) {
  try {
    f();
  } catch (const nbd::Error& e) {
    return e.errnum();
  }
  return 0;
}

bool write_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t w = ::write(fd, data.data() + off, data.size() - off);
    if (w == -1 && errno == EAGAIN) {
      pollfd p = {fd, POLLOUT, 0};
      ::poll(&p, 1, 1000);
      continue;
    }
    if (w <= 0)
      return false;
    off += static_cast<std::size_t>(w);
  }
  return true;
}

// Reads from a (non-blocking) socket until `want` bytes arrived, EOF or
// the timeout. Sets *eof when the peer closed (or reset) the connection.
std::string read_some(int fd, std::size_t want, bool* eof = nullptr,
                      int timeout_ms = 10000) {
  std::string out;
  if (eof != nullptr)
    *eof = false;
  const auto start = Clock::now();
  while (out.size() < want) {
    int left = timeout_ms - static_cast<int>(seconds_since(start) * 1000);
    if (left <= 0)
      break;
    pollfd p = {fd, POLLIN, 0};
    if (::poll(&p, 1, left) <= 0)
      continue;
    char buf[4096];
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r > 0) {
      out.append(buf, static_cast<std::size_t>(r));
    } else if (r == 0 || errno == ECONNRESET) {
      if (eof != nullptr)
        *eof = true;
      break;
    } else if (errno != EAGAIN && errno != EINTR) {
      FAIL("read: " << std::strerror(errno));
    }
  }
  return out;
}

std::string read_to_eof(int fd) { return read_some(fd, SIZE_MAX); }

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

bool in_path(const std::string& prog) {
  const char* path = std::getenv("PATH");
  if (path == nullptr)
    return false;
  std::istringstream in(path);
  for (std::string dir; std::getline(in, dir, ':');)
    if (!dir.empty() && ::access((dir + "/" + prog).c_str(), X_OK) == 0)
      return true;
  return false;
}

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

void check_fd_flags(int fd) {
  CHECK((::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
  CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
}

} // namespace

TEST_SUITE("connect") {

TEST_CASE("UniqueFd owns, moves, releases and resets") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  {
    UniqueFd a(sv[0]);
    CHECK(static_cast<bool>(a));
    UniqueFd b(std::move(a));
    CHECK_FALSE(static_cast<bool>(a));
    CHECK(b.get() == sv[0]);
    UniqueFd c;
    CHECK(c.get() == -1);
    c = std::move(b);
    CHECK(c.get() == sv[0]);
    CHECK(fd_is_open(sv[0]));
  }
  CHECK_FALSE(fd_is_open(sv[0]));

  UniqueFd d(sv[1]);
  int raw = d.release();
  CHECK(raw == sv[1]);
  CHECK_FALSE(static_cast<bool>(d));
  CHECK(fd_is_open(raw));
  d.reset(raw);
  CHECK(d.get() == raw);
  d.reset();
  CHECK_FALSE(fd_is_open(raw));
}

TEST_CASE("unix socket: connects to a listening socket") {
  ScratchDir dir;
  std::string path = dir.file("sock");
  UniqueFd listener = make_unix_listener(path);

  Connector c = Connector::unix_socket(path);
  CHECK(c.fd() == -1);
  UniqueFd sock = drive(c);
  REQUIRE(sock);
  check_fd_flags(sock.get());

  UniqueFd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  REQUIRE(server);
  REQUIRE(write_all(sock.get(), "ping"));
  char buf[4];
  REQUIRE(::read(server.get(), buf, 4) == 4);
  CHECK(std::string(buf, 4) == "ping");
}

TEST_CASE("unix socket: missing path gives ENOENT") {
  ScratchDir dir;
  std::string path = dir.file("nonexistent");
  std::string what;
  CHECK(drive_expecting_error(Connector::unix_socket(path), &what) == ENOENT);
  CHECK(what.rfind("connect: " + path + ": ", 0) == 0);
  CHECK(what.find(std::strerror(ENOENT)) != std::string::npos);
}

TEST_CASE("unix socket: stale socket file gives ECONNREFUSED") {
  ScratchDir dir;
  std::string path = dir.file("stale");
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sun = {};
    sun.sun_family = AF_UNIX;
    std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) ==
            0);
  } // closed without listening; the file stays
  CHECK(drive_expecting_error(Connector::unix_socket(path)) == ECONNREFUSED);
}

TEST_CASE("unix socket: bad paths are rejected up front") {
  CHECK(error_of([] { Connector::unix_socket(""); }) == EINVAL);
  CHECK(error_of([] { Connector::unix_socket(std::string(200, 'x')); }) ==
        ENAMETOOLONG);
  CHECK(error_of([] { Connector::unix_socket(std::string("a\0b", 3)); }) ==
        EINVAL);
}

TEST_CASE("unix socket: abstract namespace") {
  std::string name = std::string(1, '\0') + "nbdcpp-test-" +
                     std::to_string(::getpid());
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sun = {};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path, name.data(), name.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) +
                                    name.size());
  REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&sun), len) == 0);
  REQUIRE(::listen(listener.get(), 4) == 0);

  Connector c = Connector::unix_socket(name);
  UniqueFd sock = drive(c);
  CHECK(sock);
  // A different abstract name is not found.
  std::string what;
  CHECK(drive_expecting_error(Connector::unix_socket(name + "-other"),
                              &what) == ECONNREFUSED);
  CHECK(what.find("@nbdcpp-test-") != std::string::npos);
}

TEST_CASE("tcp: connects to a listening port with TCP_NODELAY") {
  std::string port;
  UniqueFd listener = make_tcp_socket(true, port);
  Connector c = Connector::tcp("127.0.0.1", port);
  UniqueFd sock = drive(c);
  REQUIRE(sock);
  check_fd_flags(sock.get());
  int nodelay = 0;
  socklen_t len = sizeof nodelay;
  REQUIRE(::getsockopt(sock.get(), IPPROTO_TCP, TCP_NODELAY, &nodelay, &len) ==
          0);
  CHECK(nodelay != 0);
  UniqueFd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  CHECK(server);
}

TEST_CASE("tcp: closed port gives ECONNREFUSED") {
  std::string port;
  UniqueFd bound = make_tcp_socket(false, port);
  std::string what;
  CHECK(drive_expecting_error(Connector::tcp("127.0.0.1", port), &what) ==
        ECONNREFUSED);
  CHECK(what.rfind("connect: 127.0.0.1:" + port + ": ", 0) == 0);
}

TEST_CASE("tcp: tries every address of a name") {
  // "localhost" usually resolves to ::1 and 127.0.0.1; we only listen on
  // the latter, so if ::1 comes first it must fail over to 127.0.0.1.
  std::string port;
  UniqueFd listener = make_tcp_socket(true, port);
  Connector c = Connector::tcp("localhost", port);
  UniqueFd sock = drive(c);
  CHECK(sock);
}

TEST_CASE("tcp: IPv6 literal, if IPv6 loopback works") {
  UniqueFd l6(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in6 sin6 = {};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_addr = in6addr_loopback;
  if (!l6 ||
      ::bind(l6.get(), reinterpret_cast<sockaddr*>(&sin6), sizeof sin6) != 0 ||
      ::listen(l6.get(), 4) != 0) {
    MESSAGE("no IPv6 loopback; skipped");
    return;
  }
  socklen_t len = sizeof sin6;
  REQUIRE(::getsockname(l6.get(), reinterpret_cast<sockaddr*>(&sin6), &len) ==
          0);
  Connector c = Connector::tcp("::1", std::to_string(ntohs(sin6.sin6_port)));
  CHECK(drive(c));
}

TEST_CASE("tcp: resolution errors") {
  std::string what;
  try {
    Connector::tcp("127.0.0.1", "no-such-service-name");
    FAIL("expected an error");
  } catch (const nbd::Error& e) {
    CHECK(e.errnum() == EINVAL);
    what = e.what();
  }
  CHECK(what.find("getaddrinfo") != std::string::npos);
  // RFC 2606 reserves .invalid; whether DNS is reachable or not, this fails.
  CHECK_THROWS_AS(Connector::tcp("nbdcpp.invalid", "10809"), nbd::Error);
}

TEST_CASE("advance() keeps reporting the final state") {
  ScratchDir dir;
  Connector bad = Connector::unix_socket(dir.file("missing"));
  CHECK(error_of([&] { bad.advance(); }) == ENOENT);
  CHECK(error_of([&] { bad.advance(); }) == ENOENT);
  CHECK(bad.fd() == -1);

  UniqueFd listener = make_unix_listener(dir.file("sock"));
  Connector good = Connector::unix_socket(dir.file("sock"));
  CHECK(good.advance());
  CHECK(good.advance());
  CHECK(good.connected());
}

TEST_CASE("existing: adopts a connected socket and makes it non-blocking") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd other(sv[1]);
  Connector c = Connector::existing(UniqueFd(sv[0]));
  CHECK(c.connected());
  CHECK(c.advance());
  CHECK(c.fd() == sv[0]);
  UniqueFd sock = c.release();
  CHECK(sock.get() == sv[0]);
  CHECK((::fcntl(sock.get(), F_GETFL) & O_NONBLOCK) != 0);

  CHECK(error_of([] { Connector::existing(UniqueFd()); }) == EBADF);
}

TEST_CASE("vsock: an attempt starts or fails cleanly") {
  // Whether AF_VSOCK works here depends on the kernel, and an attempt to
  // an absent peer may take seconds to time out; so only check that the
  // first step is a non-blocking start or an nbd::Error, never a hang.
  Connector c = Connector::vsock(1, 1); // CID 1: local loopback
  try {
    if (!c.advance()) {
      CHECK(c.fd() >= 0);
      check_fd_flags(c.fd());
    }
  } catch (const nbd::Error& e) {
    MESSAGE("vsock: " << std::string(e.what()));
    CHECK(e.errnum() != 0);
  }
}

TEST_CASE("spawn_command: cat echoes through stdin/stdout") {
  Subprocess p = spawn_command({"cat"});
  REQUIRE(p.sock);
  CHECK(p.pid > 0);
  check_fd_flags(p.sock.get());
  std::string msg = "hello through cat\n";
  REQUIRE(write_all(p.sock.get(), msg));
  CHECK(read_some(p.sock.get(), msg.size()) == msg);
  p.sock.reset(); // cat sees EOF on stdin and exits
  int status = reap_subprocess(p.pid, false, patient);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("spawn_command: the child reads stdin and writes stdout") {
  Subprocess p = spawn_command(
      {"sh", "-c", "read x; echo \"got $x\"; test -t 0 || echo notty", "sh"});
  REQUIRE(write_all(p.sock.get(), "abc\n"));
  CHECK(read_to_eof(p.sock.get()) == "got abc\nnotty\n");
  int status = reap_subprocess(p.pid, false, patient);
  CHECK(WIFEXITED(status));
}

TEST_CASE("spawn_command: a program that cannot run gives EOF") {
  ScratchDir dir;
  std::string noexec = dir.file("noexec");
  { std::ofstream(noexec) << "#!/bin/sh\necho should not run\n"; }
  ::chmod(noexec.c_str(), 0644);

  struct Case {
    std::string prog;
    int code;
  };
  for (const Case& k : {Case{"/nonexistent/nbdcpp-program", 127},
                        Case{"nbdcpp-no-such-program-in-path", 127},
                        Case{noexec, 126}}) {
    CAPTURE(k.prog);
    Subprocess p = spawn_command({k.prog, "arg"});
    bool eof = false;
    CHECK(read_some(p.sock.get(), 1, &eof).empty());
    CHECK(eof);
    int status = reap_subprocess(p.pid, false, patient);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == k.code);
  }
}

TEST_CASE("spawn_command: a script without #! runs with /bin/sh") {
  ScratchDir dir;
  std::string script = dir.file("script");
  { std::ofstream(script) << "echo \"script $1\"\n"; }
  ::chmod(script.c_str(), 0755);
  Subprocess p = spawn_command({script, "ran"});
  CHECK(read_to_eof(p.sock.get()) == "script ran\n");
  reap_subprocess(p.pid);
}

TEST_CASE("spawn_command: SIGPIPE is default and no signal is blocked") {
  struct sigaction ign = {}, old_pipe = {};
  ign.sa_handler = SIG_IGN;
  REQUIRE(::sigaction(SIGPIPE, &ign, &old_pipe) == 0);
  sigset_t usr1, old_mask;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  REQUIRE(::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask) == 0);

  // grep reads its own status: the shell itself blocks signals while it
  // waits for a child, so /proc/$$ would show the shell's mask, not ours.
  Subprocess p = spawn_command(
      {"sh", "-c", "exec grep -E '^Sig(Ign|Blk):' /proc/self/status"});
  std::string out = read_to_eof(p.sock.get());
  reap_subprocess(p.pid);

  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);

  CAPTURE(out);
  unsigned long long ign_mask = ~0ULL, blk_mask = ~0ULL;
  for (const std::string& line : lines_of(out)) {
    if (line.rfind("SigIgn:", 0) == 0)
      ign_mask = std::strtoull(line.c_str() + 7, nullptr, 16);
    if (line.rfind("SigBlk:", 0) == 0)
      blk_mask = std::strtoull(line.c_str() + 7, nullptr, 16);
  }
  REQUIRE(ign_mask != ~0ULL);
  CHECK((ign_mask & (1ULL << (SIGPIPE - 1))) == 0);
  CHECK(blk_mask == 0);
}

TEST_CASE("spawn_command: bad argv") {
  CHECK(error_of([] { spawn_command({}); }) == EINVAL);
  CHECK(error_of([] { spawn_command({""}); }) == EINVAL);
  CHECK(error_of([] { spawn_socket_activation({}); }) == EINVAL);
}

TEST_CASE("spawn_socket_activation: LISTEN_* and fd 3") {
  // The script reports its environment and what fd 3 is, using only sh
  // and /proc: the inode behind fd 3, looked up in /proc/net/unix, whose
  // Flags column is 00010000 (__SO_ACCEPTCON) for listening sockets.
  const char* script = R"(
ino=$(readlink /proc/$$/fd/3)
ino=${ino#socket:[}
ino=${ino%]}
info=none
while read num ref proto flags type st inode path; do
  if [ "$inode" = "$ino" ]; then info="$flags $type $path"; fi
done < /proc/net/unix
n=$(env | grep -c '^LISTEN_FDS=')
printf '%s\n' "$LISTEN_PID" "$LISTEN_FDS" "$LISTEN_FDNAMES" "$$" "$n" \
  "$info" > "$1.tmp"
mv "$1.tmp" "$1"
)";
  ScratchDir dir;
  std::string out = dir.file("out");
  // An inherited LISTEN_FDS must be replaced, not duplicated.
  ScopedEnv env("LISTEN_FDS", "7");

  auto run = [&] {
    Subprocess p = spawn_socket_activation({"sh", "-c", script, "sh", out});
    REQUIRE(p.sock);
    check_fd_flags(p.sock.get());
    // The connection works although the socket file is already gone.
    int status = reap_subprocess(p.pid, false, patient);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    bool eof = false;
    read_some(p.sock.get(), 1, &eof);
    CHECK(eof); // the server exited without accepting

    std::vector<std::string> l = lines_of(slurp(out));
    ::unlink(out.c_str());
    REQUIRE(l.size() == 6);
    CHECK(l[0] == std::to_string(p.pid)); // LISTEN_PID
    CHECK(l[0] == l[3]);                  // == $$
    CHECK(l[1] == "1");                   // LISTEN_FDS
    CHECK(l[2] == "nbd");                 // LISTEN_FDNAMES
    CHECK(l[4] == "1");                   // no duplicate LISTEN_FDS
    std::istringstream info(l[5]);
    std::string flags, type, path;
    info >> flags >> type >> path;
    CHECK(flags == "00010000"); // listening
    CHECK(type == "0001");      // SOCK_STREAM
    CAPTURE(path);
    REQUIRE(path.size() > 5);
    CHECK(path.substr(path.size() - 5) == "/sock");
    // The socket file and its private directory were removed.
    struct stat st;
    CHECK(::stat(path.c_str(), &st) == -1);
    CHECK(::stat(path.substr(0, path.size() - 5).c_str(), &st) == -1);
  };

  // If fd 3 is free here, the listening socket itself gets fd 3 and the
  // child must clear its close-on-exec flag rather than dup2 it.
  SUBCASE("fd 3 as it is in this process") { run(); }
  SUBCASE("fd 3 occupied by something else") {
    if (fd_is_open(3)) {
      run();
    } else {
      int null = ::open("/dev/null", O_RDONLY); // not close-on-exec
      REQUIRE(null >= 0);
      REQUIRE(::dup2(null, 3) == 3);
      ::close(null);
      run();
      ::close(3);
    }
  }
}

TEST_CASE("spawn_socket_activation: $TMPDIR is honoured") {
  ScratchDir dir;
  ScopedEnv env("TMPDIR", dir.path());
  std::string out = dir.file("out");
  Subprocess p = spawn_socket_activation(
      {"sh", "-c", "readlink /proc/$$/fd/3 > \"$1\"; ls -A \"$2\" >> \"$1\"",
       "sh", out, dir.path()});
  CHECK(WIFEXITED(reap_subprocess(p.pid, false, patient)));
  std::vector<std::string> l = lines_of(slurp(out));
  REQUIRE(!l.empty());
  CHECK(l[0].rfind("socket:[", 0) == 0);
  // After connecting, only our own "out" file remains in $TMPDIR.
  std::string cmd = "ls -A '" + dir.path() + "'";
  FILE* ls = ::popen(cmd.c_str(), "r");
  REQUIRE(ls != nullptr);
  char buf[256] = {};
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, ls);
  ::pclose(ls);
  CHECK(std::string(buf, n) == "out\n");
}

TEST_CASE("spawn_socket_activation: over-long $TMPDIR") {
  ScratchDir dir;
  std::string deep = dir.path() + "/" + std::string(100, 'd');
  REQUIRE(::mkdir(deep.c_str(), 0700) == 0);
  ScopedEnv env("TMPDIR", deep);
  CHECK(error_of([] { spawn_socket_activation({"true"}); }) == ENAMETOOLONG);
  // The temporary directory was cleaned up again.
  std::string cmd = "test -z \"$(ls -A '" + deep + "')\"";
  CHECK(std::system(cmd.c_str()) == 0);
}

TEST_CASE("reap_subprocess") {
  SUBCASE("nothing to reap") {
    CHECK(reap_subprocess(-1) == -1);
    CHECK(reap_subprocess(0) == -1);
  }
  SUBCASE("a child that ignores EOF is killed after about 2 s") {
    Subprocess p = spawn_command({"sleep", "30"});
    p.sock.reset();
    const auto start = Clock::now();
    int status = reap_subprocess(p.pid);
    double t = seconds_since(start);
    CHECK(t > 1.5);
    CHECK(t < 5);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
    CHECK(reap_subprocess(p.pid) == -1); // already reaped
  }
  SUBCASE("terminate=true sends SIGTERM first") {
    Subprocess p = spawn_command({"sleep", "30"});
    int status = reap_subprocess(p.pid, true, patient);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGTERM);
  }
}

TEST_CASE("nbdkit, if installed, greets over both kinds of subprocess") {
  if (!in_path("nbdkit")) {
    MESSAGE("nbdkit not installed; skipped");
    return;
  }
  SUBCASE("spawn_command with nbdkit -s") {
    Subprocess p = spawn_command(
        {"nbdkit", "-s", "--exit-with-parent", "memory", "1M"});
    CHECK(read_some(p.sock.get(), 8).substr(0, 8) == "NBDMAGIC");
    p.sock.reset(); // nbdkit -s exits when its connection closes
    int status = reap_subprocess(p.pid, false, patient);
    CHECK(WIFEXITED(status));
  }
  SUBCASE("spawn_socket_activation") {
    Subprocess p = spawn_socket_activation(
        {"nbdkit", "--exit-with-parent", "memory", "1M"});
    CHECK(read_some(p.sock.get(), 8).substr(0, 8) == "NBDMAGIC");
    p.sock.reset();
    // A socket-activated server keeps listening: terminate it (it
    // exits on SIGTERM, long before SIGKILL would come).
    int status = reap_subprocess(p.pid, true, patient);
    CHECK_FALSE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
  }
}

} // TEST_SUITE
