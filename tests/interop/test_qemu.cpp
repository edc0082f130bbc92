// SPDX-License-Identifier: BSD-3-Clause
// Interop with qemu-nbd (Debian qemu-utils): raw and qcow2 images made by
// qemu-img, export names and lists, structured reads with holes, block
// status (base:allocation and a qemu:dirty-bitmap), systemd socket
// activation, a unix socket and an NBD URI.

#include "interop.hpp"

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <fstream>
#include <map>

using namespace interop;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;

std::vector<std::string> qemu_nbd(std::vector<std::string> args) {
  std::vector<std::string> argv{"qemu-nbd"};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::vector<Write> some_writes() {
  return {{0, pattern(512, 1)},
          {4096, pattern(64 * KiB, 2)},
          {1 * MiB + 512, pattern(1 * MiB, 3)}, // big: the transports' direct path
          {7 * MiB, pattern(1 * MiB, 4)}};
}

// Writes, reads back through the server, then flushes.
void write_read_back_flush(nbd::Handle& h, const std::vector<Write>& writes) {
  write_and_read_back(h, writes);
  if (h.can_flush()) h.flush();
}

void check_connection(nbd::Handle& h) {
  CHECK(h.get_transport_name() == expected_transport());
  CHECK(h.get_protocol() == "newstyle-fixed");
  CHECK(h.get_structured_replies_negotiated());
  CHECK_FALSE(h.get_extended_headers_negotiated()); // qemu 7.2 has none
}

} // namespace

TEST_SUITE_BEGIN("qemu-nbd");

TEST_CASE("raw image: writes read back and land in the file") {
  TempDir dir;
  const std::string img = dir.file("disk.raw");
  must_run({"qemu-img", "create", "-q", "-f", "raw", img, "8M"});
  const auto writes = some_writes();
  {
    nbd::Handle h;
    h.set_export_name("disk");
    h.connect_systemd_socket_activation(qemu_nbd({"-f", "raw", "-x", "disk", img}));
    check_connection(h);
    CHECK(h.get_size() == static_cast<std::int64_t>(8 * MiB));
    CHECK_FALSE(h.is_read_only());
    write_read_back_flush(h, writes);
    h.shutdown();
  }
  for (const auto& w : writes) {
    CAPTURE(w.off);
    CHECK(file_read(img, w.off, w.data.size()) == w.data);
  }
}

TEST_CASE("qcow2 image: writes read back and reach the image") {
  TempDir dir;
  const std::string img = dir.file("disk.qcow2"), raw = dir.file("out.raw");
  must_run({"qemu-img", "create", "-q", "-f", "qcow2", img, "8M"});
  const auto writes = some_writes();
  {
    nbd::Handle h;
    h.connect_systemd_socket_activation(qemu_nbd({"-f", "qcow2", img}));
    check_connection(h);
    CHECK(h.get_size() == static_cast<std::int64_t>(8 * MiB));
    write_read_back_flush(h, writes);
    // aio: many in flight at once, all checked.
    aio_round_trip(h, 4 * MiB, 50);
    h.shutdown();
  }
  // The image itself, converted back to raw by qemu-img, has the data.
  must_run({"qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, raw});
  for (const auto& w : some_writes()) {
    CAPTURE(w.off);
    CHECK(file_read(raw, w.off, w.data.size()) == w.data);
  }
  CHECK(file_read(raw, 4 * MiB, 16 * KiB) == pattern(16 * KiB, 50));
}

TEST_CASE("export names and the export list") {
  TempDir dir;
  const std::string img = dir.file("disk.raw");
  make_sparse(img, 1 * MiB);
  nbd::Handle h;
  h.set_opt_mode(true);
  h.connect_systemd_socket_activation(
      qemu_nbd({"-f", "raw", "-x", "disk", "-D", "a test disk", img}));
  REQUIRE(h.aio_is_negotiating());
  std::vector<std::pair<std::string, std::string>> listed;
  int n = h.opt_list([&](std::string_view name, std::string_view desc) {
    listed.emplace_back(name, desc);
    return 0;
  });
  CHECK(n == 1);
  CHECK(listed == std::vector<std::pair<std::string, std::string>>{{"disk", "a test disk"}});

  h.set_export_name("nonexistent");
  CHECK(error_of([&] { h.opt_go(); }) == ENOENT);
  CHECK(h.aio_is_negotiating());

  h.set_export_name("disk");
  h.set_full_info(true);
  h.opt_info();
  CHECK(h.get_size() == static_cast<std::int64_t>(1 * MiB));
  CHECK(h.get_export_description() == "a test disk");
  CHECK(h.get_canonical_export_name() == "disk");
  h.opt_go();
  CHECK(h.aio_is_ready());
  Bytes b(4096);
  h.pread(b, 0);
  CHECK(std::all_of(b.begin(), b.end(), [](auto x) { return x == 0; }));
  h.shutdown();
}

TEST_CASE("structured reads with holes") {
  TempDir dir;
  const std::string img = dir.file("sparse.raw");
  make_sparse(img, 4 * MiB);
  const Bytes data = pattern(64 * KiB, 9);
  file_write(img, 1 * MiB, data);
  nbd::Handle h;
  h.connect_systemd_socket_activation(qemu_nbd({"-r", "-f", "raw", img}));
  check_connection(h);
  CHECK(h.is_read_only());

  Bytes buf(4 * MiB, 0xff);
  std::map<std::uint64_t, std::pair<std::uint64_t, unsigned>> chunks; // off -> (len, status)
  h.pread_structured(buf, 0, [&](std::span<const std::uint8_t> sub, std::uint64_t off, unsigned status, int*) {
    chunks[off] = {sub.size(), status};
    return 0;
  });
  // The chunks tile the request exactly, and include both kinds.
  std::uint64_t at = 0;
  bool hole = false, dat = false;
  for (const auto& [off, c] : chunks) {
    CHECK(off == at);
    at = off + c.first;
    hole |= c.second == nbd::READ_HOLE;
    dat |= c.second == nbd::READ_DATA;
  }
  CHECK(at == 4 * MiB);
  CHECK(hole);
  CHECK(dat);
  CHECK(buf == file_read(img, 0, 4 * MiB));

  // DF: one chunk for the whole read.
  chunks.clear();
  Bytes small(128 * KiB);
  h.pread_structured(
      small, 1 * MiB - 32 * KiB,
      [&](std::span<const std::uint8_t> sub, std::uint64_t off, unsigned status, int*) {
        chunks[off] = {sub.size(), status};
        return 0;
      },
      nbd::CMD_FLAG_DF);
  if (h.can_df()) {
    CHECK(chunks.size() == 1);
  }
  CHECK(small == file_read(img, 1 * MiB - 32 * KiB, 128 * KiB));
  h.shutdown();
}

TEST_CASE("block status: base:allocation and a qemu:dirty-bitmap") {
  TempDir dir;
  const std::string img = dir.file("disk.qcow2");
  must_run({"qemu-img", "create", "-q", "-f", "qcow2", img, "4M"});
  must_run({"qemu-img", "bitmap", "--add", img, "b0"});
  // Written while the bitmap records: these clusters become dirty.
  must_run({"qemu-io", "-f", "qcow2", "-c", "write -P 0x55 1M 64k", img});

  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  h.add_meta_context("qemu:dirty-bitmap:b0");
  h.connect_systemd_socket_activation(qemu_nbd({"-r", "-f", "qcow2", "-B", "b0", img}));
  check_connection(h);
  REQUIRE(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  REQUIRE(h.can_meta_context("qemu:dirty-bitmap:b0"));

  std::map<std::string, std::vector<std::pair<std::uint64_t, std::uint64_t>>> got;
  h.block_status(4 * MiB, 0, [&](std::string_view ctx, std::uint64_t off, std::span<std::uint32_t> e, int*) {
    CHECK(off == 0);
    auto& v = got[std::string(ctx)];
    for (std::size_t i = 0; i + 1 < e.size(); i += 2) v.emplace_back(e[i], e[i + 1]);
    return 0;
  });
  const std::uint64_t hz = nbd::STATE_HOLE | nbd::STATE_ZERO;
  CHECK(got[nbd::CONTEXT_BASE_ALLOCATION] ==
        std::vector<std::pair<std::uint64_t, std::uint64_t>>{{1 * MiB, hz}, {64 * KiB, 0}, {3 * MiB - 64 * KiB, hz}});
  CHECK(got["qemu:dirty-bitmap:b0"] ==
        std::vector<std::pair<std::uint64_t, std::uint64_t>>{{1 * MiB, 0}, {64 * KiB, 1}, {3 * MiB - 64 * KiB, 0}});

  // The same through block_status_64, from an offset inside the data.
  std::map<std::string, std::vector<nbd::Extent>> got64;
  h.block_status_64(1 * MiB, 1 * MiB + 32 * KiB,
                    [&](std::string_view ctx, std::uint64_t, std::span<const nbd::Extent> e, int*) {
                      got64[std::string(ctx)].assign(e.begin(), e.end());
                      return 0;
                    });
  REQUIRE(!got64[nbd::CONTEXT_BASE_ALLOCATION].empty());
  CHECK(got64[nbd::CONTEXT_BASE_ALLOCATION][0].length == 32 * KiB);
  CHECK(got64[nbd::CONTEXT_BASE_ALLOCATION][0].flags == 0);
  REQUIRE(!got64["qemu:dirty-bitmap:b0"].empty());
  CHECK(got64["qemu:dirty-bitmap:b0"][0].flags == 1);

  // REQ_ONE: one extent per context, within the request.
  int calls = 0;
  h.block_status(
      4 * MiB, 0,
      [&](std::string_view, std::uint64_t, std::span<std::uint32_t> e, int*) {
        ++calls;
        CHECK(e.size() == 2);
        CHECK(e[0] <= 4 * MiB);
        return 0;
      },
      nbd::CMD_FLAG_REQ_ONE);
  CHECK(calls == 2);

  Bytes b(64 * KiB);
  h.pread(b, 1 * MiB);
  CHECK(std::all_of(b.begin(), b.end(), [](auto x) { return x == 0x55; }));
  h.shutdown();
}

TEST_CASE("a unix socket and an NBD URI") {
  TempDir dir;
  const std::string img = dir.file("disk.raw"), sock = dir.file("sock"), pid = dir.file("pid");
  make_sparse(img, 2 * MiB);
  const Bytes data = pattern(8 * KiB, 7);
  file_write(img, 512 * KiB, data);
  // --fork: qemu-nbd returns once the socket listens; -t keeps it for the
  // second client, so it is killed at the end.
  must_run({"qemu-nbd", "--fork", "--pid-file=" + pid, "-e", "2", "-t", "-k", sock, "-f", "raw", "-x",
            "disk", img});
  pid_t server = 0;
  std::ifstream(pid) >> server;
  REQUIRE(server > 0);
  {
    nbd::Handle h;
    h.set_export_name("disk");
    h.connect_unix(sock);
    check_connection(h);
    Bytes b(data.size());
    h.pread(b, 512 * KiB);
    CHECK(b == data);
    h.shutdown();
  }
  {
    nbd::Handle h;
    h.connect_uri("nbd+unix:///disk?socket=" + sock);
    CHECK(h.get_export_name() == "disk");
    const Bytes w = pattern(4 * KiB, 8);
    h.pwrite(w, 0);
    h.flush();
    h.shutdown();
    CHECK(file_read(img, 0, w.size()) == w);
  }
  ::kill(server, SIGTERM);
}

TEST_CASE("the server going away mid-connection") {
  TempDir dir;
  const std::string img = dir.file("disk.raw");
  make_sparse(img, 1 * MiB);
  nbd::Handle h;
  h.connect_systemd_socket_activation(qemu_nbd({"-f", "raw", img}));
  Bytes b(4096);
  h.pread(b, 0);
  h.kill_subprocess(SIGKILL);
  int err = error_of([&] {
    for (int i = 0; i < 100; ++i) h.pread(b, 0);
  });
  CHECK((err == ENOTCONN || err == EPIPE || err == ECONNRESET || err == EINVAL));
  CHECK(h.aio_is_dead());
}

TEST_SUITE_END();
