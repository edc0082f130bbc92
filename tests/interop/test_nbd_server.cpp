// SPDX-License-Identifier: BSD-3-Clause
// Interop with nbd-server (Debian nbd-server) in inetd mode: `nbd-server
// -d -C CONFIG 0` speaks NBD on its stdin/stdout, so the command connector
// runs it; the exports are named sections of a config file in a TempDir.
// nbd-server 3.24 refuses structured replies and meta contexts.

#include "interop.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>

using namespace interop;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;

/// A config with two exports: "disk" (8 MiB, writable, flush/FUA/trim)
/// and "ro" (1 MiB, read-only).
struct Config {
  TempDir dir;
  std::string disk = dir.file("disk.img"), ro = dir.file("ro.img"), path = dir.file("config");

  Config() {
    make_sparse(disk, 8 * MiB);
    make_sparse(ro, 1 * MiB);
    file_write(ro, 0, pattern(4 * KiB, 77));
    write_text(path, "[generic]\n"
                     "allowlist = true\n"
                     "[disk]\n"
                     "exportname = " + disk + "\n"
                     "flush = true\n"
                     "fua = true\n"
                     "trim = true\n"
                     "[ro]\n"
                     "exportname = " + ro + "\n"
                     "readonly = true\n");
  }
  /// -d: no daemon (stay the child of the connector); port 0: inetd mode.
  std::vector<std::string> argv() const { return {"nbd-server", "-d", "-C", path, "0"}; }
};

} // namespace

TEST_SUITE_BEGIN("nbd-server");

TEST_CASE("a named export: writes read back and land in the file") {
  Config cfg;
  const std::vector<Write> writes{{0, pattern(512, 1)},
                                  {4096, pattern(64 * KiB, 2)},
                                  {1 * MiB + 512, pattern(1 * MiB, 3)},
                                  {7 * MiB, pattern(1 * MiB, 4)}};
  {
    nbd::Handle h;
    h.set_export_name("disk");
    h.connect_command(cfg.argv());
    CHECK(h.get_transport_name() == expected_transport());
    CHECK(h.get_protocol() == "newstyle-fixed");
    CHECK_FALSE(h.get_structured_replies_negotiated());
    CHECK(h.get_size() == static_cast<std::int64_t>(8 * MiB));
    CHECK_FALSE(h.is_read_only());
    CHECK(h.can_flush());
    CHECK(h.can_fua());
    CHECK(h.can_trim());
    write_and_read_back(h, writes, nbd::CMD_FLAG_FUA);
    h.flush();
    // aio, many in flight.
    aio_round_trip(h, 3 * MiB, 100);
    if (h.can_zero()) {
      h.zero(64 * KiB, 4096);
      Bytes z(64 * KiB, 1);
      h.pread(z, 4096);
      CHECK(std::all_of(z.begin(), z.end(), [](auto x) { return x == 0; }));
    }
    h.shutdown();
    CHECK(h.aio_is_closed());
  }
  CHECK(file_read(cfg.disk, 0, 512) == writes[0].data);
  CHECK(file_read(cfg.disk, 1 * MiB + 512, 1 * MiB) == writes[2].data);
  CHECK(file_read(cfg.disk, 7 * MiB, 1 * MiB) == writes[3].data);
  CHECK(file_read(cfg.disk, 3 * MiB, 16 * KiB) == pattern(16 * KiB, 100));
}

TEST_CASE("listing exports, and an unknown one") {
  Config cfg;
  nbd::Handle h;
  h.set_opt_mode(true);
  h.connect_command(cfg.argv());
  REQUIRE(h.aio_is_negotiating());
  CHECK_FALSE(h.get_structured_replies_negotiated()); // nbd-server refused it
  std::vector<std::string> names;
  h.opt_list([&](std::string_view name, std::string_view) {
    names.emplace_back(name);
    return 0;
  });
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"disk", "ro"});

  h.set_export_name("nonexistent");
  CHECK(error_of([&] { h.opt_go(); }) == ENOENT); // NBD_REP_ERR_UNKNOWN
  REQUIRE(h.aio_is_negotiating());
  h.set_export_name("ro");
  h.opt_go();
  CHECK(h.aio_is_ready());
  CHECK(h.get_size() == static_cast<std::int64_t>(1 * MiB));
  h.shutdown();
}

TEST_CASE("a read-only export, without structured replies") {
  Config cfg;
  nbd::Handle h;
  h.set_export_name("ro");
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  h.connect_command(cfg.argv());
  CHECK(h.is_read_only());
  CHECK_FALSE(h.get_structured_replies_negotiated());
  CHECK_FALSE(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  Bytes b(4 * KiB);
  h.pread(b, 0);
  CHECK(b == pattern(4 * KiB, 77));
  CHECK(b == file_read(cfg.ro, 0, 4 * KiB));
  // Writes are refused on the client side (strict mode), block status for
  // want of a meta context.
  CHECK(error_of([&] { h.pwrite(b, 0); }) == EPERM);
  CHECK(error_of([&] {
          h.block_status(4096, 0, [](std::string_view, std::uint64_t, std::span<std::uint32_t>, int*) { return 0; });
        }) == ENOTSUP);
  // Without strict mode the write reaches the server, which refuses it.
  h.set_strict_mode(0);
  const int err = error_of([&] { h.pwrite(b, 0); });
  CHECK((err == EPERM || err == EROFS || err == EIO || err == EINVAL));
  CHECK(h.aio_is_ready());
  // A structured read still reports its one simple reply as one data chunk.
  int chunks = 0;
  h.pread_structured(b, 0, [&](std::span<const std::uint8_t> sub, std::uint64_t off, unsigned status, int*) {
    ++chunks;
    CHECK(off == 0);
    CHECK(sub.size() == b.size());
    CHECK(status == nbd::READ_DATA);
    return 0;
  });
  CHECK(chunks == 1);
  CHECK(file_read(cfg.ro, 0, 4 * KiB) == pattern(4 * KiB, 77));
  h.shutdown();
}

TEST_SUITE_END();
