// SPDX-License-Identifier: BSD-3-Clause
// What nbdcpp reports about an export (is_read_only, can_*, is_rotational,
// get_size, get_block_size) must be what the plugin asked for, after the
// rules of nbdkit's server/plugins.c (plugin_can_write, plugin_can_zero, ...)
// and server/backend.c (write-dependent flags are off on a read-only
// export). Each branch of those functions gets its own TEST_CASE, driven by
// the test plugin's parameters (tests/plugins/README.md: KEY=absent leaves
// the callback out, so nbdkit's own default applies).

#include "plugin_common.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

using namespace ptest;

namespace {

struct Caps {
  bool read_only, flush, fua, trim, zero, fast_zero, df, multi_conn, cache, rotational;
  bool base_allocation;
  std::int64_t size, minimum, preferred, maximum, payload;
};

Caps caps_of(nbd::Handle& h) {
  return Caps{h.is_read_only(),   h.can_flush(),      h.can_fua(),
              h.can_trim(),       h.can_zero(),       h.can_fast_zero(),
              h.can_df(),         h.can_multi_conn(), h.can_cache(),
              h.is_rotational(),  h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION),
              h.get_size(),       h.get_block_size(nbd::SIZE_MINIMUM),
              h.get_block_size(nbd::SIZE_PREFERRED), h.get_block_size(nbd::SIZE_MAXIMUM),
              h.get_block_size(nbd::SIZE_PAYLOAD)};
}

/// Connects (asking for base:allocation) and returns what the handle reports.
Caps caps(std::vector<std::string> params, std::vector<std::string> opts = {},
          const char* which = v2) {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, std::move(params), std::move(opts), which);
  return caps_of(h);
}

// How a refused connection shows: a callback failing while nbdkit answers
// NBD_OPT_GO makes it refuse the export, which libnbd (and nbdcpp) report as
// ENOENT ("server has no export named ..."); an invalid block size or a
// failing preconnect makes nbdkit drop the connection: ENOTCONN.
constexpr int refused = ENOENT;
constexpr int dropped = ENOTCONN;

/// Connecting must fail with errno want.
void expect_connect_fails(int want, std::vector<std::string> params,
                          std::vector<std::string> opts = {}) {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  int e = errno_of([&] { connect(h, params, opts); });
  CHECK_MESSAGE(e == want, "connect: errno " << e << ", want " << want);
  CHECK_FALSE(h.aio_is_ready());
}

} // namespace

// --- defaults ------------------------------------------------------------------

TEST_CASE("plugin: caps: defaults advertise everything the plugin supports") {
  Caps c = caps({});
  CHECK_FALSE(c.read_only);
  CHECK(c.flush);
  CHECK(c.fua);
  CHECK(c.trim);
  CHECK(c.zero);
  CHECK(c.fast_zero);
  CHECK(c.df); // nbdkit always offers DF with structured replies
  CHECK(c.multi_conn);
  CHECK(c.cache);
  CHECK_FALSE(c.rotational);
  CHECK(c.base_allocation);
  CHECK(c.size == 1024 * 1024);
  CHECK(c.minimum == 0);
  CHECK(c.preferred == 0);
  CHECK(c.maximum == 0);
}

// --- plugin_get_size -----------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_get_size: size=0 is an empty export") {
  CHECK(caps({"size=0"}).size == 0);
}

TEST_CASE("plugin: caps: plugin_get_size: size beyond 4G") {
  CHECK(caps({"size=4294967808"}).size == 4294967808LL);
}

TEST_CASE("plugin: caps: plugin_get_size: an odd size is reported as is") {
  CHECK(caps({"size=12345"}).size == 12345);
}

TEST_CASE("plugin: caps: plugin_get_size: a failing get_size refuses the export") {
  expect_connect_fails(refused, {"error=get_size:EIO"});
}

// --- plugin_open / plugin_preconnect --------------------------------------------------

TEST_CASE("plugin: caps: plugin_open: a failing open refuses the export") {
  expect_connect_fails(refused, {"error=open:EIO"});
}

TEST_CASE("plugin: caps: plugin_preconnect: a failing preconnect drops the connection") {
  expect_connect_fails(dropped, {"error=preconnect:EIO"});
}

TEST_CASE("plugin: caps: plugin_preconnect: absent preconnect is fine") {
  CHECK(caps({"preconnect=absent"}).size == 1024 * 1024);
}

// --- plugin_can_write ------------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_can_write: true -> writable") {
  CHECK_FALSE(caps({"can_write=true"}).read_only);
}

TEST_CASE("plugin: caps: plugin_can_write: false -> read-only, and no write-only features") {
  Caps c = caps({"can_write=false"});
  CHECK(c.read_only);
  // server/backend.c: trim, zero, fast zero and FUA need a writable export.
  CHECK_FALSE(c.trim);
  CHECK_FALSE(c.zero);
  CHECK_FALSE(c.fast_zero);
  CHECK_FALSE(c.fua);
  // Flush and cache do not.
  CHECK(c.flush);
  CHECK(c.cache);
}

TEST_CASE("plugin: caps: plugin_can_write: absent with pwrite -> writable") {
  CHECK_FALSE(caps({"can_write=absent"}).read_only);
}

TEST_CASE("plugin: caps: plugin_can_write: absent without pwrite -> read-only") {
  CHECK(caps({"can_write=absent", "pwrite=absent"}).read_only);
}

TEST_CASE("plugin: caps: plugin_can_write: nbdkit -r makes the export read-only") {
  CHECK(caps({"can_write=true"}, {"-r"}).read_only);
}

TEST_CASE("plugin: caps: plugin_pwrite: can_write=true without pwrite -> writes get EPERM") {
  nbd::Handle h;
  connect(h, {"can_write=true", "pwrite=absent", "can_zero=false"});
  CHECK_FALSE(h.is_read_only());
  auto buf = bytes(512, 1);
  // plugin_pwrite answers EROFS, which nbdkit sends as NBD_EPERM.
  CHECK(errno_of([&] { h.pwrite(buf, 0); }) == EPERM);
  CHECK(h.aio_is_ready());
}

TEST_CASE("plugin: caps: plugin_can_write: a failing can_write refuses the export") {
  expect_connect_fails(refused, {"error=can_write:EIO"});
}

// --- plugin_can_flush ----------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_can_flush: true") { CHECK(caps({"can_flush=true"}).flush); }

TEST_CASE("plugin: caps: plugin_can_flush: false") { CHECK_FALSE(caps({"can_flush=false"}).flush); }

TEST_CASE("plugin: caps: plugin_can_flush: absent with flush -> true") {
  CHECK(caps({"can_flush=absent"}).flush);
}

TEST_CASE("plugin: caps: plugin_can_flush: absent without flush -> false") {
  CHECK_FALSE(caps({"can_flush=absent", "flush=absent"}).flush);
}

TEST_CASE("plugin: caps: plugin_flush: can_flush=true without flush -> EINVAL") {
  nbd::Handle h;
  connect(h, {"can_flush=true", "flush=absent", "can_fua=none"});
  CHECK(h.can_flush());
  CHECK(errno_of([&] { h.flush(); }) == EINVAL);
  CHECK(h.aio_is_ready());
}

TEST_CASE("plugin: caps: plugin_can_flush: a failing can_flush refuses the export") {
  expect_connect_fails(refused, {"error=can_flush:EIO"});
}

// --- plugin_is_rotational ---------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_is_rotational: true") {
  CHECK(caps({"is_rotational=true"}).rotational);
}

TEST_CASE("plugin: caps: plugin_is_rotational: false") {
  CHECK_FALSE(caps({"is_rotational=false"}).rotational);
}

TEST_CASE("plugin: caps: plugin_is_rotational: absent -> false") {
  CHECK_FALSE(caps({"is_rotational=absent"}).rotational);
}

TEST_CASE("plugin: caps: plugin_is_rotational: a failing is_rotational refuses the export") {
  expect_connect_fails(refused, {"error=is_rotational:EIO"});
}

// --- plugin_can_trim -------------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_can_trim: true") { CHECK(caps({"can_trim=true"}).trim); }

TEST_CASE("plugin: caps: plugin_can_trim: false") { CHECK_FALSE(caps({"can_trim=false"}).trim); }

TEST_CASE("plugin: caps: plugin_can_trim: absent with trim -> true") {
  CHECK(caps({"can_trim=absent"}).trim);
}

TEST_CASE("plugin: caps: plugin_can_trim: absent without trim -> false") {
  CHECK_FALSE(caps({"can_trim=absent", "trim=absent"}).trim);
}

TEST_CASE("plugin: caps: plugin_trim: can_trim=true without trim -> EINVAL") {
  nbd::Handle h;
  connect(h, {"can_trim=true", "trim=absent"});
  CHECK(h.can_trim());
  CHECK(errno_of([&] { h.trim(4096, 0); }) == EINVAL);
  CHECK(h.aio_is_ready());
}

TEST_CASE("plugin: caps: plugin_can_trim: a failing can_trim refuses the export") {
  expect_connect_fails(refused, {"error=can_trim:EIO"});
}

// --- plugin_can_zero ---------------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_can_zero: true -> native zero") {
  Log log;
  nbd::Handle h;
  connect(h, {"can_zero=true", log.param()});
  CHECK(h.can_zero());
  h.zero(4096, 0);
  REQUIRE_FALSE(log.data().empty());
  CHECK(log.data().back() == "zero offset=0 count=4096 flags=may_trim result=ok");
}

TEST_CASE("plugin: caps: plugin_can_zero: false -> still advertised, emulated with pwrite") {
  Log log;
  nbd::Handle h;
  connect(h, {"can_zero=false", log.param()});
  CHECK(h.can_zero());
  h.zero(4096, 8192);
  auto d = log.data();
  REQUIRE(d.size() == 1);
  CHECK(d[0] == "pwrite offset=8192 count=4096 flags=none result=ok");
}

TEST_CASE("plugin: caps: plugin_can_zero: absent with zero -> native") {
  Log log;
  nbd::Handle h;
  connect(h, {"can_zero=absent", log.param()});
  CHECK(h.can_zero());
  h.zero(512, 0, nbd::CMD_FLAG_NO_HOLE);
  REQUIRE(log.data().size() == 1);
  CHECK(log.data()[0] == "zero offset=0 count=512 flags=none result=ok");
}

TEST_CASE("plugin: caps: plugin_can_zero: absent without zero -> emulated") {
  Log log;
  nbd::Handle h;
  connect(h, {"can_zero=absent", "zero=absent", log.param()});
  CHECK(h.can_zero());
  h.zero(512, 0);
  REQUIRE(log.data().size() == 1);
  CHECK(log.data()[0] == "pwrite offset=0 count=512 flags=none result=ok");
}

TEST_CASE("plugin: caps: plugin_can_zero: a failing can_zero refuses the export") {
  expect_connect_fails(refused, {"error=can_zero:EIO"});
}

// --- plugin_can_fast_zero -----------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_can_fast_zero: true") {
  CHECK(caps({"can_fast_zero=true"}).fast_zero);
}

TEST_CASE("plugin: caps: plugin_can_fast_zero: false") {
  CHECK_FALSE(caps({"can_fast_zero=false"}).fast_zero);
}

TEST_CASE("plugin: caps: plugin_can_fast_zero: absent, native zero -> false") {
  CHECK_FALSE(caps({"can_fast_zero=absent", "can_zero=true"}).fast_zero);
}

TEST_CASE("plugin: caps: plugin_can_fast_zero: absent without zero -> true") {
  CHECK(caps({"can_fast_zero=absent", "zero=absent"}).fast_zero);
}

TEST_CASE("plugin: caps: plugin_can_fast_zero: absent with .zero and can_zero=false -> false") {
  // plugin_can_fast_zero returns !backend_can_zero(), and can_zero=false is
  // NBDKIT_ZERO_EMULATE (1), not NONE: so no fast zero (nbdinfo agrees).
  CHECK_FALSE(caps({"can_fast_zero=absent", "can_zero=false"}).fast_zero);
}

TEST_CASE("plugin: caps: plugin_can_fast_zero: absent in a v1 plugin (only _zero_v1) -> true") {
  CHECK(caps({"can_fast_zero=absent"}, {}, v1).fast_zero);
}

TEST_CASE("plugin: caps: plugin_can_fast_zero: a failing can_fast_zero refuses the export") {
  expect_connect_fails(refused, {"error=can_fast_zero:EIO"});
}

// --- plugin_can_extents ---------------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_can_extents: true -> base:allocation from the plugin") {
  Log log;
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, {"can_extents=true", log.param()});
  CHECK(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  int entries = 0;
  h.block_status(65536, 0, [&](std::string_view, std::uint64_t, std::span<std::uint32_t> e, int*) {
    entries += static_cast<int>(e.size() / 2);
    return 0;
  });
  CHECK(entries >= 1);
  CHECK(log.named("extents").size() == 1);
}

TEST_CASE("plugin: caps: plugin_can_extents: false -> base:allocation still offered, all data") {
  Log log;
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, {"can_extents=false", log.param()});
  CHECK(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  std::vector<std::uint32_t> got;
  h.block_status(65536, 0, [&](std::string_view, std::uint64_t, std::span<std::uint32_t> e, int*) {
    got.assign(e.begin(), e.end());
    return 0;
  });
  REQUIRE(got.size() >= 2);
  CHECK(got[1] == 0); // data, not a hole: nbdkit reports what it cannot know as data
  CHECK(log.named("extents").empty());
}

TEST_CASE("plugin: caps: plugin_can_extents: absent with extents -> plugin extents") {
  Log log;
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, {"can_extents=absent", log.param()});
  h.block_status(4096, 0, [](std::string_view, std::uint64_t, std::span<std::uint32_t>, int*) { return 0; });
  CHECK(log.named("extents").size() == 1);
}

TEST_CASE("plugin: caps: plugin_can_extents: absent without extents -> all data") {
  Log log;
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, {"can_extents=absent", "extents=absent", log.param()});
  CHECK(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  std::uint32_t flags = 99;
  h.block_status(4096, 0, [&](std::string_view, std::uint64_t, std::span<std::uint32_t> e, int*) {
    if (e.size() >= 2) flags = e[1];
    return 0;
  });
  CHECK(flags == 0);
  CHECK(log.named("extents").empty());
}

TEST_CASE("plugin: caps: plugin_can_extents: a failing can_extents refuses the export") {
  expect_connect_fails(refused, {"error=can_extents:EIO"});
}

// --- plugin_can_fua ---------------------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_can_fua: none") { CHECK_FALSE(caps({"can_fua=none"}).fua); }

TEST_CASE("plugin: caps: plugin_can_fua: emulate") { CHECK(caps({"can_fua=emulate"}).fua); }

TEST_CASE("plugin: caps: plugin_can_fua: native") { CHECK(caps({"can_fua=native"}).fua); }

TEST_CASE("plugin: caps: plugin_can_fua: absent with flush -> emulated") {
  Caps c = caps({"can_fua=absent"});
  CHECK(c.fua);
}

TEST_CASE("plugin: caps: plugin_can_fua: absent with flush but can_flush=false -> still FUA") {
  // server/plugins.c: "We intend to call .flush even if .can_flush returns false."
  Caps c = caps({"can_fua=absent", "can_flush=false"});
  CHECK(c.fua);
  CHECK_FALSE(c.flush);
}

TEST_CASE("plugin: caps: plugin_can_fua: absent without flush -> none") {
  CHECK_FALSE(caps({"can_fua=absent", "flush=absent"}).fua);
}

TEST_CASE("plugin: caps: plugin_can_fua: native in a v1 plugin is lowered to emulate") {
  Log log;
  nbd::Handle h;
  connect(h, {"can_fua=native", log.param()}, {}, v1);
  CHECK(h.can_fua());
  auto buf = bytes(512, 7);
  h.pwrite(buf, 0, nbd::CMD_FLAG_FUA);
  auto d = log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "pwrite offset=0 count=512 flags=none result=ok");
  CHECK(d[1] == "flush flags=none result=ok");
}

TEST_CASE("plugin: caps: plugin_can_fua: a failing can_fua refuses the export") {
  expect_connect_fails(refused, {"error=can_fua:EIO"});
}

// --- plugin_can_multi_conn -----------------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_can_multi_conn: true") {
  CHECK(caps({"can_multi_conn=true"}).multi_conn);
}

TEST_CASE("plugin: caps: plugin_can_multi_conn: false") {
  CHECK_FALSE(caps({"can_multi_conn=false"}).multi_conn);
}

TEST_CASE("plugin: caps: plugin_can_multi_conn: absent -> false") {
  CHECK_FALSE(caps({"can_multi_conn=absent"}).multi_conn);
}

TEST_CASE("plugin: caps: plugin_can_multi_conn: a failing can_multi_conn refuses the export") {
  expect_connect_fails(refused, {"error=can_multi_conn:EIO"});
}

TEST_CASE("plugin: caps: plugin_thread_model: serialize_connections -> no multi-conn") {
  // nbdkit cannot honour multi-conn when it serializes connections.
  CHECK_FALSE(caps({"thread_model=serialize_connections", "can_multi_conn=true"}).multi_conn);
}

TEST_CASE("plugin: caps: plugin_thread_model: serialize_all_requests keeps multi-conn") {
  nbd::Handle h;
  connect(h, {"thread_model=serialize_all_requests", "can_multi_conn=true"});
  CHECK(h.can_multi_conn());
  // Requests in flight together are still all answered.
  std::vector<std::vector<std::uint8_t>> bufs(4, std::vector<std::uint8_t>(512));
  std::vector<std::uint64_t> cookies;
  for (auto& b : bufs) cookies.push_back(h.aio_pread(b, 0));
  for (auto c : cookies) CHECK(wait_for(h, c) == 0);
}

// --- plugin_can_cache --------------------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_can_cache: none") { CHECK_FALSE(caps({"can_cache=none"}).cache); }

TEST_CASE("plugin: caps: plugin_can_cache: emulate") { CHECK(caps({"can_cache=emulate"}).cache); }

TEST_CASE("plugin: caps: plugin_can_cache: native") { CHECK(caps({"can_cache=native"}).cache); }

TEST_CASE("plugin: caps: plugin_can_cache: absent with cache -> native") {
  Log log;
  nbd::Handle h;
  connect(h, {"can_cache=absent", log.param()});
  CHECK(h.can_cache());
  h.cache(4096, 0);
  REQUIRE(log.data().size() == 1);
  CHECK(log.data()[0] == "cache offset=0 count=4096 flags=none result=ok");
}

TEST_CASE("plugin: caps: plugin_can_cache: absent without cache -> none") {
  CHECK_FALSE(caps({"can_cache=absent", "cache=absent"}).cache);
}

TEST_CASE("plugin: caps: plugin_cache: native without cache -> succeeds without a call") {
  Log log;
  nbd::Handle h;
  connect(h, {"can_cache=native", "cache=absent", log.param()});
  CHECK(h.can_cache());
  h.cache(4096, 0);
  CHECK(log.data().empty());
}

TEST_CASE("plugin: caps: plugin_can_cache: a failing can_cache refuses the export") {
  expect_connect_fails(refused, {"error=can_cache:EIO"});
}

// --- plugin_block_size -----------------------------------------------------------------------

TEST_CASE("plugin: caps: plugin_block_size: 512:4096:32M") {
  Caps c = caps({"block_size=512:4096:32M"});
  CHECK(c.minimum == 512);
  CHECK(c.preferred == 4096);
  CHECK(c.maximum == 32 * 1024 * 1024);
  CHECK(c.payload == 32 * 1024 * 1024);
}

TEST_CASE("plugin: caps: plugin_block_size: 1:512:0xffffffff (maximum = no limit)") {
  Caps c = caps({"block_size=1:512:4294967295"});
  CHECK(c.minimum == 1);
  CHECK(c.preferred == 512);
  CHECK(c.maximum == 4294967295LL);
}

TEST_CASE("plugin: caps: plugin_block_size: 64K:64K:64K (largest minimum)") {
  Caps c = caps({"block_size=64K:64K:64K"});
  CHECK(c.minimum == 65536);
  CHECK(c.preferred == 65536);
  CHECK(c.maximum == 65536);
}

TEST_CASE("plugin: caps: plugin_block_size: 4096:32M:64M (largest preferred)") {
  Caps c = caps({"block_size=4096:32M:64M"});
  CHECK(c.minimum == 4096);
  CHECK(c.preferred == 32 * 1024 * 1024);
  CHECK(c.maximum == 64 * 1024 * 1024);
}

TEST_CASE("plugin: caps: plugin_block_size: 0:0:0 -> no information") {
  Caps c = caps({"block_size=0:0:0"});
  CHECK(c.minimum == 0);
  CHECK(c.preferred == 0);
  CHECK(c.maximum == 0);
  CHECK(c.payload == 32 * 1024 * 1024);
}

TEST_CASE("plugin: caps: plugin_block_size: absent -> no information") {
  Caps c = caps({"block_size=absent"});
  CHECK(c.minimum == 0);
  CHECK(c.preferred == 0);
  CHECK(c.maximum == 0);
}

TEST_CASE("plugin: caps: plugin_block_size: minimum out of 1..64K is refused") {
  expect_connect_fails(dropped, {"block_size=128K:128K:128K"});
}

TEST_CASE("plugin: caps: plugin_block_size: minimum not a power of 2 is refused") {
  expect_connect_fails(dropped, {"block_size=3:4096:32M"});
}

TEST_CASE("plugin: caps: plugin_block_size: preferred out of 512..32M is refused") {
  expect_connect_fails(dropped, {"block_size=512:64M:64M"});
  expect_connect_fails(dropped, {"block_size=1:1:1"});
}

TEST_CASE("plugin: caps: plugin_block_size: maximum not a multiple of minimum is refused") {
  expect_connect_fails(dropped, {"block_size=512:4096:5000"});
}

TEST_CASE("plugin: caps: plugin_block_size: minimum <= preferred <= maximum or refused") {
  expect_connect_fails(dropped, {"block_size=512:4096:2048"});
  expect_connect_fails(dropped, {"block_size=4096:512:32M"});
}

TEST_CASE("plugin: caps: plugin_block_size: a failing block_size refuses the export") {
  expect_connect_fails(dropped, {"error=block_size:EIO"});
}

// --- DF (nbdkit offers it whenever structured replies are on) -----------------------------------

TEST_CASE("plugin: caps: can_df needs structured replies") {
  {
    nbd::Handle h;
    connect(h, {});
    CHECK(h.get_structured_replies_negotiated());
    CHECK(h.can_df());
  }
  {
    nbd::Handle h;
    h.set_request_structured_replies(false);
    connect(h, {});
    CHECK_FALSE(h.get_structured_replies_negotiated());
    CHECK_FALSE(h.can_df());
  }
  {
    nbd::Handle h;
    connect(h, {}, {"--no-sr"});
    CHECK_FALSE(h.get_structured_replies_negotiated());
    CHECK_FALSE(h.can_df());
  }
}
