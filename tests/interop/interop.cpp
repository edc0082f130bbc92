// SPDX-License-Identifier: BSD-3-Clause
#include "interop.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <fstream>

namespace interop {

int run(const std::vector<std::string>& argv) {
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  const pid_t pid = nbdtest::spawn(argv, -1, null);
  if (null >= 0) ::close(null);
  return nbdtest::wait_exit(pid);
}

void must_run(const std::vector<std::string>& argv) {
  INFO("command: " << nbdtest::command_line(argv));
  int status = run(argv);
  REQUIRE(status == 0);
}

Bytes pattern(std::size_t n, std::uint8_t seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i)
    b[i] = static_cast<std::uint8_t>(seed * 31 + (i >> 9) * 7 + i);
  return b;
}

void aio_round_trip(nbd::Handle& h, std::uint64_t base, std::uint8_t seed) {
  constexpr std::size_t n = 32, len = 16 * 1024;
  std::vector<Bytes> bufs, back(n, Bytes(len));
  for (std::size_t i = 0; i < n; ++i) bufs.push_back(pattern(len, static_cast<std::uint8_t>(seed + i)));
  std::size_t done = 0;
  int failed = 0;
  auto cb = [&](int* err) {
    ++done;
    failed += *err != 0;
    return 1;
  };
  for (std::size_t i = 0; i < n; ++i) h.aio_pwrite(bufs[i], base + i * len, cb);
  while (done < n) h.poll(-1);
  for (std::size_t i = 0; i < n; ++i) h.aio_pread(back[i], base + i * len, cb);
  while (done < 2 * n) h.poll(-1);
  CHECK(failed == 0);
  CHECK(back == bufs);
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

} // namespace interop
