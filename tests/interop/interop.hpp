// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// Shared by the interop tests: real servers (qemu-nbd, nbd-server) on real
// files, the data checked against the files themselves. The transport
// under test comes from NBDCPP_TRANSPORT (meson runs each suite twice).

#include "harness.hpp"

#include <nbdcpp/handle.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace interop {

using Bytes = std::vector<std::uint8_t>;

// From the integration harness (tests/integration/harness.hpp).
using nbdtest::error_of;
using nbdtest::expected_transport;
using nbdtest::Failure;
using nbdtest::failure_of;
using nbdtest::have_program;
using nbdtest::TempDir;
using nbdtest::write_and_read_back;
using nbdtest::Write;

/// Runs argv (searched on PATH), output to /dev/null unless it fails;
/// returns its exit status (-1 if it did not exit normally).
int run(const std::vector<std::string>& argv);
/// run(), failing the test (and throwing) unless it exits 0.
void must_run(const std::vector<std::string>& argv);

/// n bytes of a pattern that differs per seed and per 512-byte sector.
Bytes pattern(std::size_t n, std::uint8_t seed);
/// 32 aio_pwrite of 16 KiB, pattern(16 KiB, seed + i) at base + i * 16 KiB,
/// all in flight at once, then 32 aio_pread of the same: checks that every
/// completion succeeded and every byte came back.
void aio_round_trip(nbd::Handle& h, std::uint64_t base, std::uint8_t seed);
/// Sparse file of the given size (truncate).
void make_sparse(const std::string& path, std::uint64_t size);
/// pwrite / pread on a plain file.
void file_write(const std::string& path, std::uint64_t off, const Bytes& data);
Bytes file_read(const std::string& path, std::uint64_t off, std::size_t len);
void write_text(const std::string& path, const std::string& text);

} // namespace interop
