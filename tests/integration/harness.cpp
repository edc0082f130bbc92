// SPDX-License-Identifier: BSD-3-Clause
#include "harness.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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
  std::string pidfile = dir_.file("pid");
  std::vector<std::string> argv{"nbdkit", "-f", "--exit-with-parent", "-P", pidfile};
  if (tcp) {
    // Port 0 is not accepted by nbdkit; pick a free one from a range the
    // test owns by pid, and retry on collision.
    port_ = std::to_string(20000 + (::getpid() * 7 + std::rand()) % 20000);
    argv.insert(argv.end(), {"-i", "127.0.0.1", "-p", port_});
  } else {
    socket_ = dir_.file("sock");
    argv.insert(argv.end(), {"-U", socket_});
  }
  argv.insert(argv.end(), args.begin(), args.end());

  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::execvp(cargv[0], cargv.data());
    ::_exit(127);
  }
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

} // namespace nbdtest
