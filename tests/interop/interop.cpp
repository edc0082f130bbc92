// SPDX-License-Identifier: BSD-3-Clause
#include "interop.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace interop {

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

int run(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) ::dup2(null, 1);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void must_run(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const auto& a : argv) cmd += a + " ";
  INFO("command: " << cmd);
  int status = run(argv);
  REQUIRE(status == 0);
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "nbdcpp-interop-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Bytes pattern(std::size_t n, std::uint8_t seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i)
    b[i] = static_cast<std::uint8_t>(seed * 31 + (i >> 9) * 7 + i);
  return b;
}

void make_sparse(const std::string& path, std::uint64_t size) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
  ::close(fd);
}

void file_write(const std::string& path, std::uint64_t off, const Bytes& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off)) ==
          static_cast<ssize_t>(data.size()));
  ::close(fd);
}

Bytes file_read(const std::string& path, std::uint64_t off, std::size_t len) {
  Bytes b(len);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::pread(fd, b.data(), len, static_cast<off_t>(off)) == static_cast<ssize_t>(len));
  ::close(fd);
  return b;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  REQUIRE(f.good());
}

std::string expected_transport() {
  const char* t = std::getenv("NBDCPP_TRANSPORT");
  return (t && std::string(t) == "socket") ? "socket" : "io_uring";
}

} // namespace interop
