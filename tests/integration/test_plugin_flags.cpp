// SPDX-License-Identifier: BSD-3-Clause
// Command flags and commands as the plugin sees them (its call log), after
// nbdkit's server/plugins.c: FUA passed on (native) or emulated with a flush
// (plugin_pwrite / plugin_trim / plugin_zero), zero native or emulated with
// pwrite, NO_HOLE clearing may_trim, FAST_ZERO (and the plugin refusing it
// with ENOTSUP), REQ_ONE, DF, cache native or emulated with pread, trim,
// flush; and that the data itself round-trips.

#include "plugin_common.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace ptest;

namespace {

struct Conn {
  Log log;
  nbd::Handle h;
  explicit Conn(std::vector<std::string> params, const char* which = v2) {
    params.push_back(log.param());
    h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
    connect(h, std::move(params), {}, which);
  }
};

std::vector<std::uint8_t> data(std::size_t n, std::uint8_t b) { return std::vector<std::uint8_t>(n, b); }

} // namespace

// --- FUA --------------------------------------------------------------------------------------

TEST_CASE("plugin: flags: plugin_pwrite: FUA native is passed to the plugin") {
  Conn c({"can_fua=native"});
  c.h.pwrite(data(512, 1), 0, nbd::CMD_FLAG_FUA);
  auto d = c.log.data();
  REQUIRE(d.size() == 1);
  CHECK(d[0] == "pwrite offset=0 count=512 flags=fua result=ok");
}

TEST_CASE("plugin: flags: plugin_pwrite: FUA emulated is a write then a flush") {
  Conn c({"can_fua=emulate"});
  c.h.pwrite(data(512, 1), 4096, nbd::CMD_FLAG_FUA);
  auto d = c.log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "pwrite offset=4096 count=512 flags=none result=ok");
  CHECK(d[1] == "flush flags=none result=ok");
}

TEST_CASE("plugin: flags: plugin_can_fua absent with flush: FUA emulated") {
  Conn c({"can_fua=absent"});
  c.h.pwrite(data(512, 1), 0, nbd::CMD_FLAG_FUA);
  auto d = c.log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[1] == "flush flags=none result=ok");
}

TEST_CASE("plugin: flags: a write without FUA is just a write") {
  Conn c({"can_fua=emulate"});
  c.h.pwrite(data(512, 1), 0);
  auto d = c.log.data();
  REQUIRE(d.size() == 1);
  CHECK(d[0] == "pwrite offset=0 count=512 flags=none result=ok");
}

TEST_CASE("plugin: flags: plugin_trim: FUA native and emulated") {
  {
    Conn c({"can_fua=native"});
    c.h.trim(65536, 0, nbd::CMD_FLAG_FUA);
    auto d = c.log.data();
    REQUIRE(d.size() == 1);
    CHECK(d[0] == "trim offset=0 count=65536 flags=fua result=ok");
  }
  {
    Conn c({"can_fua=emulate"});
    c.h.trim(65536, 0, nbd::CMD_FLAG_FUA);
    auto d = c.log.data();
    REQUIRE(d.size() == 2);
    CHECK(d[0] == "trim offset=0 count=65536 flags=none result=ok");
    CHECK(d[1] == "flush flags=none result=ok");
  }
}

TEST_CASE("plugin: flags: plugin_zero: FUA native and emulated") {
  {
    Conn c({"can_fua=native"});
    c.h.zero(4096, 0, nbd::CMD_FLAG_FUA);
    auto d = c.log.data();
    REQUIRE(d.size() == 1);
    CHECK(d[0] == "zero offset=0 count=4096 flags=fua,may_trim result=ok");
  }
  {
    Conn c({"can_fua=emulate"});
    c.h.zero(4096, 0, nbd::CMD_FLAG_FUA);
    auto d = c.log.data();
    REQUIRE(d.size() == 2);
    CHECK(d[0] == "zero offset=0 count=4096 flags=may_trim result=ok");
    CHECK(d[1] == "flush flags=none result=ok");
  }
}

TEST_CASE("plugin: flags: emulated zero with emulated FUA: pwrite then flush") {
  Conn c({"can_zero=false", "can_fua=emulate"});
  c.h.zero(4096, 0, nbd::CMD_FLAG_FUA);
  auto d = c.log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "pwrite offset=0 count=4096 flags=none result=ok");
  CHECK(d[1] == "flush flags=none result=ok");
}

// --- zero, NO_HOLE, FAST_ZERO ------------------------------------------------------------------

TEST_CASE("plugin: flags: plugin_zero: may_trim unless NO_HOLE") {
  Conn c({});
  c.h.zero(4096, 0);
  c.h.zero(4096, 4096, nbd::CMD_FLAG_NO_HOLE);
  auto d = c.log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "zero offset=0 count=4096 flags=may_trim result=ok");
  CHECK(d[1] == "zero offset=4096 count=4096 flags=none result=ok");
}

TEST_CASE("plugin: flags: plugin_zero: FAST_ZERO reaches a native zero") {
  Conn c({});
  REQUIRE(c.h.can_fast_zero());
  c.h.zero(4096, 0, nbd::CMD_FLAG_FAST_ZERO | nbd::CMD_FLAG_NO_HOLE);
  auto d = c.log.data();
  REQUIRE(d.size() == 1);
  CHECK(d[0] == "zero offset=0 count=4096 flags=fast_zero result=ok");
}

TEST_CASE("plugin: flags: plugin_zero: fast_zero_fails -> ENOTSUP, no pwrite fallback") {
  Conn c({"fast_zero_fails=true"});
  Counts counts;
  c.h.aio_zero(4096, 0, Completion(&counts), nbd::CMD_FLAG_FAST_ZERO);
  drain(c.h);
  REQUIRE(counts.errors.size() == 1);
  CHECK(counts.errors[0] == ENOTSUP);
  CHECK(errno_of([&] { c.h.zero(4096, 0, nbd::CMD_FLAG_FAST_ZERO); }) == ENOTSUP);
  auto d = c.log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "zero offset=0 count=4096 flags=may_trim,fast_zero result=ENOTSUP");
  // The same zero without FAST_ZERO works.
  c.h.zero(4096, 0);
  CHECK(c.log.data().back() == "zero offset=0 count=4096 flags=may_trim result=ok");
}

TEST_CASE("plugin: flags: plugin_zero: emulated zero fails FAST_ZERO at once with ENOTSUP") {
  // can_zero=absent + zero=absent: nbdkit advertises fast zero and answers
  // it with ENOTSUP without calling anything (a pwrite would not be fast).
  Conn c({"zero=absent", "can_zero=absent", "can_fast_zero=absent"});
  REQUIRE(c.h.can_fast_zero());
  CHECK(errno_of([&] { c.h.zero(4096, 0, nbd::CMD_FLAG_FAST_ZERO); }) == ENOTSUP);
  CHECK(c.log.data().empty());
  c.h.zero(4096, 0);
  REQUIRE(c.log.data().size() == 1);
  CHECK(c.log.data()[0] == "pwrite offset=0 count=4096 flags=none result=ok");
}

TEST_CASE("plugin: flags: plugin_zero: can_zero=false, fast zero advertised by the plugin -> ENOTSUP") {
  Conn c({"can_zero=false", "can_fast_zero=true"});
  REQUIRE(c.h.can_fast_zero());
  CHECK(errno_of([&] { c.h.zero(4096, 0, nbd::CMD_FLAG_FAST_ZERO); }) == ENOTSUP);
  CHECK(c.log.data().empty());
}

TEST_CASE("plugin: flags: plugin_zero: a v1 plugin's _zero_v1 gets may_trim, never fast_zero") {
  Conn c({"can_fast_zero=absent"}, v1);
  REQUIRE(c.h.can_fast_zero());
  c.h.zero(4096, 0);
  c.h.zero(4096, 0, nbd::CMD_FLAG_NO_HOLE);
  CHECK(errno_of([&] { c.h.zero(4096, 0, nbd::CMD_FLAG_FAST_ZERO); }) == ENOTSUP);
  auto d = c.log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "zero offset=0 count=4096 flags=may_trim result=ok");
  CHECK(d[1] == "zero offset=0 count=4096 flags=none result=ok");
}

TEST_CASE("plugin: flags: zero reads back as zeroes, native and emulated") {
  for (const char* mode : {"can_zero=true", "can_zero=false"}) {
    CAPTURE(mode);
    Conn c({mode});
    c.h.pwrite(data(65536 * 2, 0xab), 0);
    c.h.zero(65536 + 100, 50);
    auto back = data(65536 * 2, 0x11);
    c.h.pread(back, 0);
    for (std::size_t i = 0; i < back.size(); ++i) {
      bool zeroed = i >= 50 && i < 50 + 65536 + 100;
      if (back[i] != (zeroed ? 0 : 0xab)) {
        FAIL_CHECK("byte " << i << " is " << int(back[i]));
        break;
      }
    }
  }
}

// --- trim, flush, cache ---------------------------------------------------------------------------

TEST_CASE("plugin: flags: plugin_trim: the range reads back as zeroes") {
  Conn c({});
  c.h.pwrite(data(65536, 0xcd), 65536);
  c.h.trim(65536, 65536);
  auto back = data(65536, 0xff);
  c.h.pread(back, 65536);
  CHECK(all_equal(back, 0));
  CHECK(c.log.named("trim").size() == 1);
  CHECK(c.log.named("trim")[0] == "trim offset=65536 count=65536 flags=none result=ok");
}

TEST_CASE("plugin: flags: plugin_flush: one flush per flush") {
  Conn c({});
  c.h.flush();
  Counts counts;
  c.h.aio_flush(Completion(&counts));
  c.h.aio_flush(Completion(&counts));
  drain(c.h);
  CHECK(counts.calls == 2);
  CHECK(counts.destroyed == 2);
  CHECK(c.log.named("flush").size() == 3);
}

TEST_CASE("plugin: flags: plugin_cache: native calls the plugin's cache") {
  Conn c({"can_cache=native"});
  c.h.cache(8192, 4096);
  REQUIRE(c.log.data().size() == 1);
  CHECK(c.log.data()[0] == "cache offset=4096 count=8192 flags=none result=ok");
}

TEST_CASE("plugin: flags: plugin_cache: emulate arrives as pread") {
  Conn c({"can_cache=emulate"});
  REQUIRE(c.h.can_cache());
  c.h.cache(8192, 4096);
  auto d = c.log.data();
  REQUIRE(d.size() >= 1);
  for (auto& l : d) CHECK(l.rfind("pread ", 0) == 0);
  CHECK(c.log.named("cache").empty());
}

// --- block status: REQ_ONE ------------------------------------------------------------------------

TEST_CASE("plugin: flags: plugin_extents: extents follow the store, REQ_ONE gives one") {
  Conn c({"size=1M"});
  // Page 1 (64K-128K) holds data; the rest is a hole.
  c.h.pwrite(data(4096, 1), 65536);
  std::vector<std::uint32_t> all;
  c.h.block_status(262144, 0, [&](std::string_view ctx, std::uint64_t, std::span<std::uint32_t> e, int*) {
    CHECK(ctx == nbd::CONTEXT_BASE_ALLOCATION);
    all.assign(e.begin(), e.end());
    return 0;
  });
  REQUIRE(all.size() >= 6);
  CHECK(all[0] == 65536);
  CHECK(all[1] == (nbd::STATE_HOLE | nbd::STATE_ZERO));
  CHECK(all[2] == 65536);
  CHECK(all[3] == 0);
  CHECK(all[5] == (nbd::STATE_HOLE | nbd::STATE_ZERO));
  std::vector<std::uint32_t> one;
  c.h.block_status(262144, 0, [&](std::string_view, std::uint64_t, std::span<std::uint32_t> e, int*) {
    one.assign(e.begin(), e.end());
    return 0;
  }, nbd::CMD_FLAG_REQ_ONE);
  REQUIRE(one.size() == 2);
  CHECK(one[0] == 65536);
  auto ext = c.log.named("extents");
  REQUIRE(ext.size() == 2);
  CHECK(ext[0] == "extents offset=0 count=262144 flags=none result=ok");
  CHECK(ext[1] == "extents offset=0 count=262144 flags=req_one result=ok");
}

TEST_CASE("plugin: flags: plugin_extents: an extents_map reaches block_status_64") {
  Conn c({"extents_map=data:4K,zero:4K,hole:8K,hole-nonzero:16K", "size=64K"});
  std::vector<nbd::Extent> got;
  c.h.block_status_64(65536, 0, [&](std::string_view, std::uint64_t, std::span<const nbd::Extent> e, int*) {
    got.assign(e.begin(), e.end());
    return 0;
  });
  REQUIRE(got.size() == 5);
  CHECK(got[0].length == 4096);
  CHECK(got[0].flags == 0);
  CHECK(got[1].flags == nbd::STATE_ZERO);
  CHECK(got[2].flags == (nbd::STATE_HOLE | nbd::STATE_ZERO));
  CHECK(got[3].flags == nbd::STATE_HOLE);
  CHECK(got[4].length == 32768);
  CHECK(got[4].flags == 0);
}

// --- DF ------------------------------------------------------------------------------------------------

TEST_CASE("plugin: flags: DF: one data chunk, the plugin reads without flags") {
  Conn c({});
  c.h.pwrite(data(8192, 0x5a), 0);
  auto buf = data(8192, 0);
  Counts cc;
  std::vector<unsigned> statuses;
  c.h.pread_structured(buf, 0, Chunk(&cc, &statuses), nbd::CMD_FLAG_DF);
  REQUIRE(statuses.size() == 1);
  CHECK(statuses[0] == nbd::READ_DATA);
  CHECK(all_equal(buf, 0x5a));
  CHECK(c.log.data().back() == "pread offset=0 count=8192 flags=none result=ok");
}

// --- data round trip -------------------------------------------------------------------------------

TEST_CASE("plugin: flags: writes read back across the plugin's 64K pages") {
  Log log;
  std::vector<std::uint8_t> pattern(200000);
  for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<std::uint8_t>(i * 7 + 3);
  nbd::Handle h;
  connect(h, {log.param(), "size=1M"});
  h.pwrite(pattern, 12345);
  auto back = data(pattern.size(), 0);
  h.pread(back, 12345);
  CHECK(back == pattern);
  auto d = log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "pwrite offset=12345 count=200000 flags=none result=ok");
}
