// SPDX-License-Identifier: BSD-3-Clause

#include "transport/connect.hpp"

#include <nbdcpp/error.hpp>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#if __has_include(<linux/vm_sockets.h>)
#include <linux/vm_sockets.h>
#define NBDCPP_HAVE_VSOCK 1
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>
#include <utility>

extern char** environ;

namespace nbd::transport {

namespace {

// --- Connector helpers ---------------------------------------------------

int gai_to_errno(int r, int saved_errno) {
  switch (r) {
  case EAI_SYSTEM:
    return saved_errno != 0 ? saved_errno : EIO;
  case EAI_MEMORY:
    return ENOMEM;
  case EAI_AGAIN:
    return EAGAIN;
  case EAI_FAIL:
    return EIO;
  case EAI_NONAME:
#ifdef EAI_NODATA
  case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
  case EAI_ADDRFAMILY:
#endif
    return ENOENT;
  default: // EAI_SERVICE, EAI_FAMILY, EAI_SOCKTYPE, EAI_BADFLAGS, ...
    return EINVAL;
  }
}

void set_nonblocking(int fd, const char* context) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags == -1)
    throw Error(errno, std::string(context) + ": fcntl F_GETFL");
  if ((flags & O_NONBLOCK) == 0 &&
      ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1)
    throw Error(errno, std::string(context) + ": fcntl F_SETFL");
}

// --- Child process helpers -----------------------------------------------
//
// Between fork() and exec() the child of a (possibly multithreaded) parent
// may only make async-signal-safe calls: another thread may have held the
// malloc or stdio lock at the moment of fork(), and that lock stays held
// forever in the child. So everything the child needs (argv arrays, the
// $PATH candidates, the environment) is built before fork(), and the code
// marked "child" below only uses raw syscalls and plain memory writes.

// Child. Writes a NUL-terminated string to fd 2, ignoring errors.
void child_write(const char* s) noexcept {
  std::size_t n = 0;
  while (s[n] != '\0')
    ++n;
  while (n > 0) {
    ssize_t w = ::write(2, s, n);
    if (w <= 0) {
      if (w == -1 && errno == EINTR)
        continue;
      return;
    }
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Child. Formats a non-negative number into buf (>= 21 bytes), NUL-ended.
void child_format_uint(unsigned long v, char* buf) noexcept {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (int i = 0; i < n; ++i)
    buf[i] = tmp[n - 1 - i];
  buf[n] = '\0';
}

// Child. Reports why the child could not get as far as exec and exits.
[[noreturn]] void child_fail(const char* what, int err) noexcept {
  char num[24];
  child_format_uint(static_cast<unsigned long>(err), num);
  child_write("nbdcpp: ");
  child_write(what);
  child_write(" failed in child process (errno ");
  child_write(num);
  child_write(")\n");
  ::_exit(126);
}

// Child. The new program should start with default signal handling: the
// parent's handlers are meaningless after exec anyway (exec resets them),
// but a signal arriving before exec must not run parent code in the child.
// SIGPIPE is reset even when ignored, because many applications ignore it
// and servers expect the default (as libnbd does for nbd_connect_command).
// The mask is cleared because spawn_*() blocked everything around fork().
void child_reset_signals() noexcept {
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP)
      continue;
    struct sigaction old = {};
    if (::sigaction(sig, nullptr, &old) == -1)
      continue; // e.g. signals reserved by libc
    bool caught = (old.sa_flags & SA_SIGINFO) != 0 ||
                  (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN);
    if (caught || sig == SIGPIPE)
      ::sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

// Blocks all signals in the calling thread for its lifetime, so that no
// handler can run in the child between fork() and child_reset_signals().
class BlockAllSignals {
public:
  BlockAllSignals() noexcept {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old_);
  }
  ~BlockAllSignals() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  BlockAllSignals(const BlockAllSignals&) = delete;
  BlockAllSignals& operator=(const BlockAllSignals&) = delete;

private:
  sigset_t old_;
};

// A prepared execvp(e): execvp itself is not on POSIX's async-signal-safe
// list (it may allocate while searching $PATH), so we do the $PATH search
// up front and the child only calls execve(), following glibc's execvpe
// semantics (skip ENOENT-like failures, remember EACCES, run scripts
// without a #! line with /bin/sh).
class ExecPlan {
public:
  // `env` == nullptr means "inherit environ".
  ExecPlan(const std::vector<std::string>& argv,
           const std::vector<std::string>* env)
      : args_(argv) {
    for (std::string& a : args_)
      argv_.push_back(a.data());
    argv_.push_back(nullptr);

    const std::string& prog = args_[0];
    if (prog.find('/') != std::string::npos) {
      candidates_.push_back(prog);
    } else {
      const char* path = std::getenv("PATH");
      // glibc's default when PATH is unset (confstr _CS_PATH).
      std::string_view rest = path != nullptr ? path : "/bin:/usr/bin";
      for (;;) {
        std::size_t colon = rest.find(':');
        std::string_view dir = rest.substr(0, colon);
        // An empty element means the current directory.
        candidates_.push_back(dir.empty() ? prog
                                          : std::string(dir) + "/" + prog);
        if (colon == std::string_view::npos)
          break;
        rest.remove_prefix(colon + 1);
      }
    }
    for (std::string& c : candidates_)
      candidate_ptrs_.push_back(c.data());

    sh_argv_.push_back(sh_.data());
    sh_argv_.push_back(nullptr); // child fills in the script path
    for (std::size_t i = 1; i < args_.size(); ++i)
      sh_argv_.push_back(args_[i].data());
    sh_argv_.push_back(nullptr);

    if (env != nullptr) {
      env_ = *env;
      for (std::string& e : env_)
        envp_.push_back(e.data());
      envp_.push_back(nullptr);
    }
  }

  ExecPlan(const ExecPlan&) = delete;
  ExecPlan& operator=(const ExecPlan&) = delete;

  // Writable storage of environment entry i (for in-place edits in the
  // child); the std::string buffers never move after construction.
  char* env_entry(std::size_t i) noexcept { return env_[i].data(); }

  // Child. Never returns.
  [[noreturn]] void exec() noexcept {
    char** envp = envp_.empty() ? environ : envp_.data();
    int err = ENOENT;
    bool saw_eacces = false;
    bool stop = false;
    for (std::size_t i = 0; i < candidate_ptrs_.size() && !stop; ++i) {
      ::execve(candidate_ptrs_[i], argv_.data(), envp);
      err = errno;
      switch (err) {
      case ENOEXEC:
        sh_argv_[1] = candidate_ptrs_[i];
        ::execve(sh_.data(), sh_argv_.data(), envp);
        err = errno;
        stop = true;
        break;
      case EACCES:
        saw_eacces = true;
        break;
      case ENOENT:
      case ENOTDIR:
      case ESTALE:
      case ENODEV:
      case ETIMEDOUT:
        break;
      default:
        stop = true;
        break;
      }
    }
    if (!stop && saw_eacces)
      err = EACCES;

    child_write("nbdcpp: cannot run ");
    child_write(args_[0].c_str());
    if (err == ENOENT) {
      child_write(": command not found\n");
    } else if (err == EACCES) {
      child_write(": permission denied\n");
    } else {
      char num[24];
      child_format_uint(static_cast<unsigned long>(err), num);
      child_write(": exec failed (errno ");
      child_write(num);
      child_write(")\n");
    }
    // Shell conventions: 127 = not found, 126 = found but not runnable.
    ::_exit(err == ENOENT ? 127 : 126);
  }

private:
  std::vector<std::string> args_;
  std::vector<char*> argv_;
  std::vector<std::string> candidates_;
  std::vector<char*> candidate_ptrs_;
  std::string sh_ = "/bin/sh";
  std::vector<char*> sh_argv_;
  std::vector<std::string> env_;
  std::vector<char*> envp_;
};

void check_argv(const std::vector<std::string>& argv, const char* context) {
  if (argv.empty())
    throw Error(EINVAL, std::string(context) + ": empty argv");
  if (argv[0].empty())
    throw Error(EINVAL, std::string(context) + ": empty program name");
  for (const std::string& a : argv)
    if (a.find('\0') != std::string::npos)
      throw Error(EINVAL, std::string(context) + ": NUL byte in argument");
}

// Kills and reaps a child we cannot use (after a failure in the parent).
void kill_and_reap(pid_t pid) noexcept {
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) == -1 && errno == EINTR) {
  }
}

// The private directory holding the socket-activation socket; removes
// both when it goes out of scope.
class TempSocketDir {
public:
  TempSocketDir() {
    const char* tmp = std::getenv("TMPDIR");
    if (tmp == nullptr || *tmp == '\0')
      tmp = "/tmp";
    std::string templ = std::string(tmp) + "/nbdcpp-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr)
      throw Error(errno, "connect_systemd_socket_activation: mkdtemp: " +
                             templ);
    dir_ = std::move(templ);
    sock_ = dir_ + "/sock";
  }
  ~TempSocketDir() {
    ::unlink(sock_.c_str());
    ::rmdir(dir_.c_str());
  }
  TempSocketDir(const TempSocketDir&) = delete;
  TempSocketDir& operator=(const TempSocketDir&) = delete;

  const std::string& sock() const noexcept { return sock_; }

private:
  std::string dir_;
  std::string sock_;
};

constexpr std::string_view listen_pid_prefix = "LISTEN_PID=";

bool is_listen_var(std::string_view entry) {
  for (std::string_view p : {listen_pid_prefix, std::string_view("LISTEN_FDS="),
                             std::string_view("LISTEN_FDNAMES=")})
    if (entry.substr(0, p.size()) == p)
      return true;
  return false;
}

} // namespace

// --- Connector -------------------------------------------------------------

Connector::Connector(std::string where, std::vector<Address> addrs)
    : where_(std::move(where)), addrs_(std::move(addrs)) {}

Connector Connector::unix_socket(std::string path) {
  if (path.empty())
    throw Error(EINVAL, "connect: empty unix socket path");

  // A leading NUL selects Linux's abstract namespace; such names are
  // conventionally shown with '@' (as ss(8) does).
  bool abstract = path[0] == '\0';
  std::string where = abstract ? "@" + path.substr(1) : path;
  if (path.find('\0', abstract ? 1 : 0) != std::string::npos)
    throw Error(EINVAL, "connect: NUL byte in unix socket path");

  sockaddr_un sun = {};
  sun.sun_family = AF_UNIX;
  // Abstract names are not NUL-terminated: their length is the address
  // length. Filesystem paths need room for the terminating NUL.
  std::size_t need = abstract ? path.size() : path.size() + 1;
  if (need > sizeof sun.sun_path)
    throw Error(ENAMETOOLONG, "connect: " + where + ": socket path too long");
  std::memcpy(sun.sun_path, path.data(), path.size());

  Address a = {};
  std::memcpy(&a.addr, &sun, sizeof sun);
  a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + need);
  a.family = AF_UNIX;
  a.socktype = SOCK_STREAM;
  a.protocol = 0;
  return Connector(std::move(where), {a});
}

Connector Connector::tcp(std::string host, std::string port) {
  std::string where = host.find(':') != std::string::npos
                          ? "[" + host + "]:" + port
                          : host + ":" + port;

  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  // No AI_ADDRCONFIG: glibc ignores loopback addresses when deciding what
  // is "configured", so it can make "localhost" unresolvable on hosts
  // whose only interface is lo (containers, build sandboxes).
  addrinfo* res = nullptr;
  errno = 0;
  int r = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (r != 0)
    throw Error(gai_to_errno(r, errno),
                "connect: getaddrinfo: " + where + ": " + ::gai_strerror(r));

  std::vector<Address> addrs;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage))
      continue;
    Address a = {};
    std::memcpy(&a.addr, ai->ai_addr, ai->ai_addrlen);
    a.len = ai->ai_addrlen;
    a.family = ai->ai_family;
    a.socktype = ai->ai_socktype;
    a.protocol = ai->ai_protocol;
    addrs.push_back(a);
  }
  ::freeaddrinfo(res);
  if (addrs.empty())
    throw Error(ENOENT, "connect: getaddrinfo: " + where + ": no addresses");
  return Connector(std::move(where), std::move(addrs));
}

Connector Connector::vsock(uint32_t cid, uint32_t port) {
  std::string where =
      "vsock:" + std::to_string(cid) + ":" + std::to_string(port);
#ifdef NBDCPP_HAVE_VSOCK
  sockaddr_vm svm = {};
  svm.svm_family = AF_VSOCK;
  svm.svm_cid = cid;
  svm.svm_port = port;
  Address a = {};
  std::memcpy(&a.addr, &svm, sizeof svm);
  a.len = sizeof svm;
  a.family = AF_VSOCK;
  a.socktype = SOCK_STREAM;
  a.protocol = 0;
  return Connector(std::move(where), {a});
#else
  throw Error(ENOTSUP, "connect: " + where + ": AF_VSOCK is not supported");
#endif
}

Connector Connector::existing(UniqueFd fd) {
  if (!fd)
    throw Error(EBADF, "connect_socket: invalid file descriptor");
  set_nonblocking(fd.get(), "connect_socket");
  Connector c("fd " + std::to_string(fd.get()), {});
  c.fd_ = std::move(fd);
  c.state_ = State::connected;
  return c;
}

bool Connector::advance() {
  switch (state_) {
  case State::connected:
    return true;
  case State::failed:
    fail();
  case State::in_progress:
    return finish_in_progress();
  case State::idle:
    break;
  }
  return start_next();
}

bool Connector::start_next() {
  while (next_ < addrs_.size()) {
    const Address& a = addrs_[next_++];
    UniqueFd s(::socket(a.family, a.socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        a.protocol));
    if (!s) {
      last_errno_ = errno;
      continue;
    }
    if (a.family == AF_INET || a.family == AF_INET6) {
      // NBD is request/response with many small messages (headers,
      // replies, handshake options): Nagle's algorithm would hold each
      // one back waiting for an ACK that only comes with the reply,
      // adding up to a delayed-ACK timeout (~40 ms) per round trip.
      // Best effort: a failure only costs latency.
      int one = 1;
      ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&a.addr),
                  a.len) == 0) {
      fd_ = std::move(s);
      state_ = State::connected;
      return true;
    }
    int err = errno;
    // EINTR on a non-blocking connect: the attempt carries on
    // asynchronously exactly as for EINPROGRESS (POSIX).
    if (err == EINPROGRESS || err == EINTR) {
      fd_ = std::move(s);
      state_ = State::in_progress;
      return false;
    }
    last_errno_ = err;
  }
  fail();
}

bool Connector::finish_in_progress() {
  // advance() may be called before the socket is writable (e.g. at start
  // or on a spurious wakeup), and SO_ERROR reads 0 both for "connected"
  // and for "still connecting", so first check that it really is done.
  pollfd p = {fd_.get(), POLLOUT, 0};
  int r = ::poll(&p, 1, 0);
  if (r == 0 || (r == -1 && errno == EINTR))
    return false;
  int err = 0;
  if (r == -1) {
    err = errno;
  } else {
    socklen_t len = sizeof err;
    if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) == -1)
      err = errno;
  }
  if (err == 0) {
    state_ = State::connected;
    return true;
  }
  // This address failed; move on to the next one.
  fd_.reset();
  last_errno_ = err;
  state_ = State::idle;
  return start_next();
}

void Connector::fail() {
  state_ = State::failed;
  fd_.reset();
  throw Error(last_errno_ != 0 ? last_errno_ : ECONNREFUSED,
              "connect: " + where_);
}

UniqueFd Connector::release() noexcept { return std::move(fd_); }

// --- Subprocesses ------------------------------------------------------------

Subprocess spawn_command(const std::vector<std::string>& argv) {
  static constexpr const char* context = "connect_command";
  check_argv(argv, context);
  ExecPlan plan(argv, nullptr);

  int sv[2];
  // Not SOCK_NONBLOCK: O_NONBLOCK belongs to the open file description, and
  // the child's end becomes its stdin/stdout, which programs expect to be
  // blocking. Only our end is made non-blocking, below.
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
    throw Error(errno, std::string(context) + ": socketpair");
  UniqueFd ours(sv[0]);
  UniqueFd theirs(sv[1]);
  set_nonblocking(ours.get(), context);

  pid_t pid;
  int fork_errno;
  {
    BlockAllSignals blocked;
    pid = ::fork();
    fork_errno = errno;
    if (pid == 0) {
      // Child: async-signal-safe calls only (see above).
      child_reset_signals();
      ::close(ours.get());
      int s = theirs.get();
      // dup2(fd, fd) would be a no-op that leaves FD_CLOEXEC set, so if the
      // socket already sits on 0 or 1 move it out of the way first.
      if (s <= 2) {
        s = ::fcntl(s, F_DUPFD_CLOEXEC, 3);
        if (s == -1)
          child_fail("fcntl(F_DUPFD_CLOEXEC)", errno);
      }
      if (::dup2(s, 0) == -1 || ::dup2(s, 1) == -1)
        child_fail("dup2", errno);
      // `s` itself is close-on-exec; 0 and 1 are not (dup2 clears it).
      plan.exec();
    }
  }
  if (pid == -1)
    throw Error(fork_errno, std::string(context) + ": fork");
  return Subprocess{std::move(ours), pid};
}

Subprocess spawn_socket_activation(const std::vector<std::string>& argv) {
  static constexpr const char* context = "connect_systemd_socket_activation";
  check_argv(argv, context);

  TempSocketDir dir;
  sockaddr_un sun = {};
  sun.sun_family = AF_UNIX;
  if (dir.sock().size() + 1 > sizeof sun.sun_path)
    throw Error(ENAMETOOLONG, std::string(context) + ": " + dir.sock() +
                                  ": socket path too long (check $TMPDIR)");
  std::memcpy(sun.sun_path, dir.sock().c_str(), dir.sock().size() + 1);

  // Blocking on purpose: the server owns this socket and O_NONBLOCK would
  // be shared with it through the open file description.
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener)
    throw Error(errno, std::string(context) + ": socket");
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&sun),
             sizeof sun) == -1)
    throw Error(errno, std::string(context) + ": bind: " + dir.sock());
  if (::listen(listener.get(), SOMAXCONN) == -1)
    throw Error(errno, std::string(context) + ": listen");

  // The environment: ours minus any inherited LISTEN_* variables, plus the
  // three the protocol needs. LISTEN_PID must be the child's pid, which only
  // the child knows, and setenv() is not async-signal-safe; so reserve a
  // fixed-width slot here and let the child write the digits in place.
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    if (!is_listen_var(*e))
      env.emplace_back(*e);
  const std::size_t listen_pid_index = env.size();
  env.push_back(std::string(listen_pid_prefix) + std::string(24, '0'));
  env.emplace_back("LISTEN_FDS=1");
  env.emplace_back("LISTEN_FDNAMES=nbd");
  ExecPlan plan(argv, &env);
  char* pid_slot = plan.env_entry(listen_pid_index) + listen_pid_prefix.size();

  // systemd's protocol: passed sockets start at fd 3.
  constexpr int first_fd = 3;
  pid_t pid;
  int fork_errno;
  {
    BlockAllSignals blocked;
    pid = ::fork();
    fork_errno = errno;
    if (pid == 0) {
      // Child: async-signal-safe calls only (see above).
      child_reset_signals();
      int l = listener.get();
      if (l == first_fd) {
        // dup2(3, 3) would do nothing, so clear close-on-exec by hand.
        if (::fcntl(l, F_SETFD, 0) == -1)
          child_fail("fcntl(F_SETFD)", errno);
      } else {
        // Whatever occupied fd 3 is closed by dup2; `l` itself is
        // close-on-exec, so the server sees exactly one listening socket.
        if (::dup2(l, first_fd) == -1)
          child_fail("dup2", errno);
      }
      child_format_uint(static_cast<unsigned long>(::getpid()), pid_slot);
      plan.exec();
    }
  }
  if (pid == -1)
    throw Error(fork_errno, std::string(context) + ": fork");

  // Connect while we still hold the listener, so it cannot vanish under
  // us; if the server dies we will see EOF on the connection instead. A
  // unix connect to a listening socket with room in its backlog completes
  // immediately, but tolerate EINPROGRESS anyway.
  UniqueFd sock;
  try {
    Connector c = Connector::unix_socket(dir.sock());
    while (!c.advance()) {
      pollfd p = {c.fd(), POLLOUT, 0};
      ::poll(&p, 1, 1000);
    }
    sock = c.release();
  } catch (...) {
    kill_and_reap(pid);
    throw;
  }
  // The connection outlives the socket file; the TempSocketDir destructor
  // removes the file and directory as we return.
  return Subprocess{std::move(sock), pid};
}

int reap_subprocess(pid_t pid, bool terminate, std::chrono::milliseconds grace) {
  if (pid <= 0)
    return -1;
  // The servers we start normally exit by themselves once their socket is
  // closed (nbdkit -s, qemu-nbd, or any server run with --exit-with-parent
  // whose single connection ended), and giving them a moment lets them
  // flush and clean up. Socket-activated servers keep listening, so the
  // caller asks for SIGTERM up front (as libnbd does). Either way a stuck
  // or misbehaving child must never hang the caller: after `grace` (2 s for
  // the handle), SIGKILL.
  if (terminate)
    ::kill(pid, SIGTERM);

  int status = 0;
  auto wait_for = [&](int flags) {
    for (;;) {
      pid_t r = ::waitpid(pid, &status, flags);
      if (r == -1 && errno == EINTR)
        continue;
      return r;
    }
  };

  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + grace;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    pid_t r = wait_for(WNOHANG);
    if (r == pid)
      return status;
    if (r == -1)
      return -1; // ECHILD: not our child, or already reaped
    if (clock::now() >= deadline)
      break;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  return wait_for(0) == pid ? status : -1;
}

} // namespace nbd::transport
