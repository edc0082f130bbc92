// SPDX-License-Identifier: BSD-3-Clause
// Negotiation against nbdkit: the three handshake styles, structured
// replies, full info, meta contexts and export selection.

#include "harness.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <string>
#include <vector>

using nbdtest::error_of;

namespace {

constexpr std::int64_t one_mib = 1024 * 1024;

// A round trip that works with simple and structured replies alike.
void check_io(nbd::Handle& h) {
  std::vector<std::uint8_t> w(65536), r(65536);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<std::uint8_t>(i * 7 + 3);
  h.pwrite(w, 4096);
  h.pread(r, 4096);
  CHECK(r == w);
  // pread_structured works without structured replies too: one data chunk.
  std::uint64_t covered = 0;
  h.pread_structured(r, 4096, [&](std::span<const std::uint8_t> sub, std::uint64_t off,
                                  unsigned status, int*) {
    CHECK(status == nbd::READ_DATA);
    CHECK(off >= 4096);
    covered += sub.size();
    return 0;
  });
  CHECK(covered == r.size());
  CHECK(r == w);
}

} // namespace

TEST_CASE("newstyle-fixed: structured replies, handshake flags, base:allocation") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  CHECK(error_of([&] { h.get_protocol(); }) == ENOTCONN);
  CHECK(error_of([&] { h.get_size(); }) == ENOTCONN);
  nbdtest::connect(h, {"memory", "1M"});
  CHECK(h.get_protocol() == "newstyle-fixed");
  CHECK(h.get_size() == one_mib);
  CHECK(h.get_handshake_flags() ==
        (nbd::HANDSHAKE_FLAG_FIXED_NEWSTYLE | nbd::HANDSHAKE_FLAG_NO_ZEROES));
  CHECK(h.get_structured_replies_negotiated());
  // nbdkit 1.32 knows no extended headers: asked for, and declined.
  CHECK(h.get_request_extended_headers());
  CHECK_FALSE(h.get_extended_headers_negotiated());
  CHECK(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  CHECK_FALSE(h.can_meta_context("qemu:dirty-bitmap:x"));
  CHECK(h.can_df());
  CHECK_FALSE(h.is_read_only());
  CHECK(h.can_flush());
  CHECK(h.can_fua());
  CHECK(h.can_trim());
  CHECK(h.can_zero());
  CHECK(h.can_fast_zero());
  CHECK(h.can_cache());
  CHECK(h.can_multi_conn());
  CHECK_FALSE(h.is_rotational());
  check_io(h);
}

TEST_CASE("oldstyle (nbdkit -o)") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  nbdtest::connect(h, {"-o", "memory", "1M"});
  CHECK(h.get_protocol() == "oldstyle");
  CHECK(h.get_size() == one_mib);
  CHECK_FALSE(h.get_structured_replies_negotiated());
  CHECK_FALSE(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  CHECK_FALSE(h.can_df());
  // No meta context: block status is refused on the client side.
  CHECK(error_of([&] {
          h.block_status(4096, 0, [](std::string_view, std::uint64_t, std::span<std::uint32_t>,
                                     int*) { return 0; });
        }) == ENOTSUP);
  check_io(h);
}

TEST_CASE("newstyle, not fixed (nbdkit --mask-handshake=0)") {
  nbd::Handle h;
  nbdtest::connect(h, {"--mask-handshake=0", "memory", "1M"});
  CHECK(h.get_protocol() == "newstyle");
  // libnbd: once connected, the flags client and server agreed on.
  CHECK(h.get_handshake_flags() == 0);
  CHECK(h.get_size() == one_mib);
  CHECK_FALSE(h.get_structured_replies_negotiated());
  check_io(h);
}

TEST_CASE("client refuses fixed newstyle: set_handshake_flags(0)") {
  nbd::Handle h;
  h.set_handshake_flags(0);
  nbdtest::connect(h, {"memory", "1M"});
  CHECK(h.get_protocol() == "newstyle");
  CHECK(h.get_handshake_flags() == 0);
  CHECK_FALSE(h.get_structured_replies_negotiated());
  check_io(h);
}

TEST_CASE("handshake flags: only what both sides agree on") {
  nbd::Handle h;
  h.set_handshake_flags(nbd::HANDSHAKE_FLAG_FIXED_NEWSTYLE);
  CHECK(h.get_handshake_flags() == nbd::HANDSHAKE_FLAG_FIXED_NEWSTYLE);
  nbdtest::connect(h, {"memory", "1M"});
  CHECK(h.get_handshake_flags() == nbd::HANDSHAKE_FLAG_FIXED_NEWSTYLE);
  CHECK(h.get_protocol() == "newstyle-fixed");
  check_io(h);

  nbd::Handle h2;
  CHECK(error_of([&] { h2.set_handshake_flags(0x100); }) == EINVAL);
}

TEST_CASE("set_request_structured_replies(false)") {
  nbd::Handle h;
  h.set_request_structured_replies(false);
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  CHECK_FALSE(h.get_request_structured_replies());
  nbdtest::connect(h, {"memory", "1M"});
  CHECK(h.get_protocol() == "newstyle-fixed");
  CHECK_FALSE(h.get_structured_replies_negotiated());
  // Meta contexts need structured replies, so none were negotiated.
  CHECK_FALSE(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  CHECK_FALSE(h.can_df());
  std::vector<std::uint8_t> buf(4096);
  CHECK(error_of([&] {
          h.pread_structured(buf, 0, [](std::span<const std::uint8_t>, std::uint64_t, unsigned,
                                        int*) { return 0; },
                             nbd::CMD_FLAG_DF);
        }) == EINVAL);
  check_io(h);
}

TEST_CASE("set_request_meta_context(false) negotiates no context") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  h.set_request_meta_context(false);
  nbdtest::connect(h, {"memory", "1M"});
  CHECK(h.get_structured_replies_negotiated());
  CHECK_FALSE(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
}

TEST_CASE("meta context settings") {
  nbd::Handle h;
  CHECK(h.get_nr_meta_contexts() == 0);
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  h.add_meta_context("qemu:nosuch");
  CHECK(h.get_nr_meta_contexts() == 2);
  CHECK(h.get_meta_context(0) == nbd::CONTEXT_BASE_ALLOCATION);
  CHECK(h.get_meta_context(1) == "qemu:nosuch");
  CHECK(error_of([&] { h.get_meta_context(2); }) == EINVAL);
  nbdtest::connect(h, {"memory", "1M"});
  // The server knows one of the two.
  CHECK(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  CHECK_FALSE(h.can_meta_context("qemu:nosuch"));

  nbd::Handle h2;
  h2.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  h2.clear_meta_contexts();
  CHECK(h2.get_nr_meta_contexts() == 0);
  nbdtest::connect(h2, {"memory", "1M"});
  CHECK_FALSE(h2.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
}

TEST_CASE("full info: canonical name and description") {
  // The exportname filter gives the default export a name and every export
  // a description.
  std::vector<std::string> args{"--filter=exportname", "memory", "1M", "default-export=canon",
                                "exportdesc=fixed:a memory disk"};
  SUBCASE("with set_full_info") {
    nbd::Handle h;
    h.set_full_info(true);
    CHECK(h.get_full_info());
    nbdtest::connect(h, args);
    CHECK(h.get_canonical_export_name() == "canon");
    CHECK(h.get_export_description() == "a memory disk");
    CHECK(h.get_export_name() == "");
  }
  SUBCASE("explicit export name") {
    nbd::Handle h;
    h.set_full_info(true);
    h.set_export_name("other");
    nbdtest::connect(h, args);
    CHECK(h.get_canonical_export_name() == "other");
    CHECK(h.get_export_description() == "a memory disk");
  }
}

TEST_CASE("block size constraints") {
  nbd::Handle h;
  nbdtest::connect(h, {"--filter=blocksize-policy", "memory", "1M", "blocksize-minimum=512",
                       "blocksize-preferred=4096", "blocksize-maximum=65536"});
  CHECK(h.get_block_size(nbd::SIZE_MINIMUM) == 512);
  CHECK(h.get_block_size(nbd::SIZE_PREFERRED) == 4096);
  CHECK(h.get_block_size(nbd::SIZE_MAXIMUM) == 65536);
  // libnbd's payload limit follows the server's maximum, within bounds of
  // its own (never below 1 MiB, never above 64 MiB).
  CHECK(h.get_block_size(nbd::SIZE_PAYLOAD) >= 65536);
  CHECK(h.get_block_size(nbd::SIZE_PAYLOAD) <= 64 * one_mib);
  CHECK(error_of([&] { h.get_block_size(7); }) == EINVAL);

  nbd::Handle h2;
  h2.set_request_block_size(false);
  CHECK_FALSE(h2.get_request_block_size());
  nbdtest::connect(h2, {"--filter=blocksize-policy", "memory", "1M", "blocksize-minimum=512",
                        "blocksize-preferred=4096", "blocksize-maximum=65536"});
  // Not asked for: nbdkit may still send it (it does when it has
  // constraints), so only check that the call works.
  CHECK(h2.get_block_size(nbd::SIZE_PREFERRED) >= 0);
}

TEST_CASE("export name selects the export") {
  nbdtest::TempDir dir;
  nbdtest::make_file(dir.file("small"), one_mib);
  nbdtest::make_file(dir.file("large"), 4 * one_mib);
  SUBCASE("fixed newstyle (NBD_OPT_GO)") {
    nbd::Handle h;
    h.set_export_name("large");
    CHECK(h.get_export_name() == "large");
    nbdtest::connect(h, {"file", "dir=" + dir.path()});
    CHECK(h.get_size() == 4 * one_mib);
    check_io(h);
  }
  SUBCASE("non-fixed newstyle (NBD_OPT_EXPORT_NAME)") {
    nbd::Handle h;
    h.set_export_name("small");
    nbdtest::connect(h, {"--mask-handshake=0", "file", "dir=" + dir.path()});
    CHECK(h.get_protocol() == "newstyle");
    CHECK(h.get_size() == one_mib);
  }
  SUBCASE("an unknown export fails the connect") {
    nbd::Handle h;
    h.set_export_name("nosuch");
    int err = error_of([&] { nbdtest::connect(h, {"file", "dir=" + dir.path()}); });
    CHECK(err != 0);
    CHECK(h.aio_is_dead());
    CHECK_FALSE(h.get_error_message().empty());
  }
  SUBCASE("an unknown export over NBD_OPT_EXPORT_NAME: the server hangs up") {
    nbd::Handle h;
    h.set_export_name("nosuch");
    int err = error_of([&] {
      nbdtest::connect(h, {"--mask-handshake=0", "file", "dir=" + dir.path()});
    });
    CHECK(err != 0);
    CHECK(h.aio_is_dead());
  }
}

TEST_CASE("nbdkit -e names the default export") {
  nbd::Handle h;
  h.set_full_info(true);
  nbdtest::connect(h, {"-e", "exp", "memory", "1M"});
  CHECK(h.get_size() == one_mib);
  // nbdkit 1.32 keeps -e for compatibility only: the default export is
  // still "" unless a plugin or filter names it.
  CHECK(h.get_canonical_export_name() == "");
}

TEST_CASE("read-only server (nbdkit -r)") {
  nbd::Handle h;
  nbdtest::connect(h, {"-r", "memory", "1M"});
  CHECK(h.is_read_only());
  CHECK_FALSE(h.can_trim());
  CHECK_FALSE(h.can_zero());
  std::vector<std::uint8_t> buf(512);
  CHECK(error_of([&] { h.pwrite(buf, 0); }) == EPERM);
  h.pread(buf, 0);
}

TEST_CASE("the debug callback sees the negotiation") {
  nbd::Handle h;
  std::vector<std::string> lines;
  h.set_debug(true);
  h.set_debug_callback([&](std::string_view ctx, std::string_view msg) {
    lines.emplace_back(std::string(ctx) + ": " + std::string(msg));
    return 0;
  });
  nbdtest::connect(h, {"memory", "1M"});
  CHECK_FALSE(lines.empty());
  h.clear_debug_callback();
  h.set_debug(false);
}
