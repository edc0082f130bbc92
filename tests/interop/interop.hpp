// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// Shared by the interop tests: real servers (qemu-nbd, nbd-server) on real
// files, the data checked against the files themselves. The transport
// under test comes from NBDCPP_TRANSPORT (meson runs each suite twice).

#include <nbdcpp/handle.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace interop {

using Bytes = std::vector<std::uint8_t>;

/// True when prog is on PATH.
bool have_program(const std::string& prog);

/// Runs argv (searched on PATH), output to /dev/null unless it fails;
/// returns its exit status (-1 if it did not exit normally).
int run(const std::vector<std::string>& argv);
/// run(), failing the test (and throwing) unless it exits 0.
void must_run(const std::vector<std::string>& argv);

/// A fresh private directory, removed with its contents at destruction.
class TempDir {
public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

/// n bytes of a pattern that differs per seed and per 512-byte sector.
Bytes pattern(std::size_t n, std::uint8_t seed);
/// Sparse file of the given size (truncate).
void make_sparse(const std::string& path, std::uint64_t size);
/// pwrite / pread on a plain file.
void file_write(const std::string& path, std::uint64_t off, const Bytes& data);
Bytes file_read(const std::string& path, std::uint64_t off, std::size_t len);
void write_text(const std::string& path, const std::string& text);

/// What NBDCPP_TRANSPORT asks for: "socket", or "io_uring" otherwise.
std::string expected_transport();

} // namespace interop
