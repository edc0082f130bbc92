// SPDX-License-Identifier: BSD-3-Clause
#include "harness.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace nbdtest {

bool have_program(const std::string& prog) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= p.size()) {
    std::size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (!dir.empty() && ::access((dir + "/" + prog).c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

pid_t spawn(const std::vector<std::string>& argv, int in, int out, int err) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int fds[3] = {in, out, err};
    for (int i = 0; i < 3; ++i)
      if (fds[i] >= 0 && fds[i] != i) ::dup2(fds[i], i);
    for (int fd : fds)
      if (fd > 2) ::close(fd); // twice when out == err: EBADF, harmless
    ::execvp(cargv[0], cargv.data());
    ::_exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const auto& a : argv) cmd += a + " ";
  return cmd;
}

std::vector<std::string> nbdkit(std::vector<std::string> args) {
  std::vector<std::string> argv{"nbdkit", "-s", "--exit-with-parent"};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::string plugin(const std::string& name) { return std::string(NBDCPP_PLUGIN_DIR) + "/" + name; }

void connect(nbd::Handle& h, std::vector<std::string> args) { h.connect_command(nbdkit(std::move(args))); }

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "nbdcpp-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Server::Server(std::vector<std::string> args, bool tcp) {
  // Port 0 is not accepted by nbdkit; take a port the kernel just said was
  // free, and retry on the rare collision with another process.
  for (int attempt = 0;; ++attempt) {
    try {
      start(args, tcp);
      return;
    } catch (const std::runtime_error&) {
      if (!tcp || attempt >= 9) throw;
    }
  }
}

void Server::start(const std::vector<std::string>& args, bool tcp) {
  std::string pidfile = dir_.file("pid");
  std::vector<std::string> argv{"nbdkit", "-f", "--exit-with-parent", "-P", pidfile};
  if (tcp) {
    port_ = unused_tcp_port();
    argv.insert(argv.end(), {"-i", "127.0.0.1", "-p", port_});
  } else {
    socket_ = dir_.file("sock");
    argv.insert(argv.end(), {"-U", socket_});
  }
  argv.insert(argv.end(), args.begin(), args.end());
  pid_ = spawn(argv);
  // nbdkit writes the pid file once it is listening.
  for (int i = 0; i < 1000; ++i) {
    struct stat st;
    if (::stat(pidfile.c_str(), &st) == 0 && st.st_size > 0) return;
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("nbdkit exited before it was ready");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("nbdkit did not start within 10 s");
}

Server::~Server() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status;
    ::waitpid(pid_, &status, 0);
  }
}

std::string Server::uri(const std::string& export_name) const {
  if (!socket_.empty()) return "nbd+unix:///" + export_name + "?socket=" + socket_;
  return "nbd://127.0.0.1:" + port_ + "/" + export_name;
}

std::uint8_t pattern_byte(std::uint64_t offset) {
  std::uint64_t word = offset & ~std::uint64_t{7};
  return static_cast<std::uint8_t>(word >> (8 * (7 - (offset & 7))));
}

std::string expected_transport() {
  const char* t = std::getenv("NBDCPP_TRANSPORT");
  return t && std::string(t) == "socket" ? "socket" : "io_uring";
}

void poll_loop(nbd::Handle& h, const std::function<bool()>& done) {
  int idle_rounds = 0;
  while (!done()) {
    unsigned dir = h.aio_get_direction();
    REQUIRE_MESSAGE(dir != 0, "poll_loop: the handle waits for nothing but the test is not done");
    pollfd p{h.aio_get_fd(), 0, 0};
    if (dir & nbd::AIO_DIRECTION_READ) p.events |= POLLIN;
    if (dir & nbd::AIO_DIRECTION_WRITE) p.events |= POLLOUT;
    int r = ::poll(&p, 1, 1000);
    if (r < 0 && errno == EINTR) continue;
    REQUIRE(r >= 0);
    if (r == 0) {
      REQUIRE_MESSAGE(++idle_rounds < 60, "poll_loop: no progress for 60 s");
      continue;
    }
    idle_rounds = 0;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) h.aio_notify_read();
    if ((p.revents & POLLOUT) && !done()) h.aio_notify_write();
  }
}

pid_t spawn_nbdkit_on_fd(int fd, std::vector<std::string> args) { return spawn(nbdkit(std::move(args)), fd, fd); }

void reap(pid_t pid) {
  if (pid <= 0) return;
  int status;
  // nbdkit -s exits once its connection closes; give it a moment, then insist.
  for (int i = 0; i < 200; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGTERM);
  ::waitpid(pid, &status, 0);
}

void make_file(const std::string& path, std::uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path);
  int r = ::ftruncate(fd, static_cast<off_t>(size));
  ::close(fd);
  if (r != 0) throw std::runtime_error("cannot size " + path);
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string unused_tcp_port() {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) throw std::runtime_error("socket failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(s);
    throw std::runtime_error("bind failed");
  }
  ::close(s);
  return std::to_string(ntohs(a.sin_port));
}

} // namespace nbdtest
