// SPDX-License-Identifier: BSD-3-Clause
// nbdkit filters stacked on the test plugin change what the client sees:
// capabilities (nozero, noextents, fua, multi-conn, noparallel,
// blocksize-policy), errors (error, blocksize-policy with
// blocksize-error-policy=error), and where requests go (cow, readahead,
// delay). Each TEST_CASE needing a filter is skipped, visibly (doctest
// reports it as skipped), when the filter is not installed.

#include "plugin_common.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace ptest;

#define NEEDS(filter) PTEST_NEEDS_FILTER(filter)
#define REQUIRE_FILTER(filter) PTEST_REQUIRE_FILTER(filter)

namespace {

struct Conn {
  Log log;
  nbd::Handle h;
  Conn(std::vector<std::string> filters, std::vector<std::string> params, std::uint32_t strict = nbd::STRICT_MASK) {
    std::vector<std::string> opts;
    for (auto& f : filters) opts.push_back("--filter=" + f);
    params.push_back(log.param());
    h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
    connect(h, std::move(params), std::move(opts));
    h.set_strict_mode(strict);
  }
};

} // namespace

// --- error ------------------------------------------------------------------------------------------

TEST_CASE("plugin: filters: error: error-rate=100% fails every request before the plugin" * NEEDS("error")) {
  REQUIRE_FILTER("error");
  Conn c({"error"}, {"error=ENOSPC", "error-rate=100%"});
  auto buf = bytes(512, 0xaa);
  CHECK(errno_of([&] { c.h.pread(buf, 0); }) == ENOSPC);
  CHECK(all_equal(buf, 0));
  CHECK(errno_of([&] { c.h.pwrite(buf, 0); }) == ENOSPC);
  CHECK(errno_of([&] { c.h.zero(512, 0); }) == ENOSPC);
  CHECK(errno_of([&] { c.h.trim(512, 0); }) == ENOSPC);
  CHECK(c.log.data().empty());
}

TEST_CASE("plugin: filters: error: error-pread-rate=100% fails reads only" * NEEDS("error")) {
  REQUIRE_FILTER("error");
  Conn c({"error"}, {"error-pread=EIO", "error-pread-rate=100%"});
  auto buf = bytes(512, 1);
  Counts counts;
  c.h.aio_pread(buf, 0, Completion(&counts));
  drain(c.h);
  CHECK(counts.errors == std::vector<int>{EIO});
  c.h.pwrite(buf, 0);
  c.h.flush();
  auto d = c.log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0].rfind("pwrite ", 0) == 0);
}

TEST_CASE("plugin: filters: error: ESHUTDOWN and EPERM travel as themselves" * NEEDS("error")) {
  REQUIRE_FILTER("error");
  {
    Conn c({"error"}, {"error-pwrite=ESHUTDOWN", "error-pwrite-rate=1"});
    auto buf = bytes(512);
    CHECK(errno_of([&] { c.h.pwrite(buf, 0); }) == ESHUTDOWN);
  }
  {
    Conn c({"error"}, {"error-trim=EPERM", "error-trim-rate=1"});
    CHECK(errno_of([&] { c.h.trim(512, 0); }) == EPERM);
  }
}

TEST_CASE("plugin: filters: error: error-extents-rate=100% fails block status" * NEEDS("error")) {
  REQUIRE_FILTER("error");
  Conn c({"error"}, {"error-extents=ENOMEM", "error-extents-rate=100%"});
  CHECK(errno_of([&] {
          c.h.block_status(4096, 0, [](std::string_view, std::uint64_t, std::span<std::uint32_t>, int*) {
            return 0;
          });
        }) == ENOMEM);
}

// --- delay --------------------------------------------------------------------------------------------

TEST_CASE("plugin: filters: delay: delayed requests all complete, in any order" * NEEDS("delay")) {
  REQUIRE_FILTER("delay");
  Conn c({"delay"}, {"delay-read=50ms", "delay-write=30ms"});
  constexpr int n = 8;
  std::vector<std::vector<std::uint8_t>> bufs(n, bytes(4096, 0x77));
  Counts counts[n];
  for (int i = 0; i < n; ++i) {
    if (i % 2)
      c.h.aio_pwrite(bufs[i], static_cast<std::uint64_t>(i) * 4096, Completion(&counts[i]));
    else
      c.h.aio_pread(bufs[i], static_cast<std::uint64_t>(i) * 4096, Completion(&counts[i]));
  }
  drain(c.h);
  for (int i = 0; i < n; ++i) {
    CHECK(counts[i].errors == std::vector<int>{0});
    CHECK(counts[i].destroyed == 1);
  }
  CHECK(c.log.data().size() == n);
}

// --- blocksize-policy -------------------------------------------------------------------------------

TEST_CASE("plugin: filters: blocksize-policy: the filter's sizes reach get_block_size" * NEEDS("blocksize-policy")) {
  REQUIRE_FILTER("blocksize-policy");
  Conn c({"blocksize-policy"}, {"blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=1M"});
  CHECK(c.h.get_block_size(nbd::SIZE_MINIMUM) == 4096);
  CHECK(c.h.get_block_size(nbd::SIZE_PREFERRED) == 65536);
  CHECK(c.h.get_block_size(nbd::SIZE_MAXIMUM) == 1024 * 1024);
  CHECK(c.h.get_block_size(nbd::SIZE_PAYLOAD) == 1024 * 1024);
}

TEST_CASE("plugin: filters: blocksize-policy: overrides the plugin's own block_size" * NEEDS("blocksize-policy")) {
  REQUIRE_FILTER("blocksize-policy");
  Conn c({"blocksize-policy"}, {"block_size=512:4096:32M", "blocksize-minimum=4096"});
  CHECK(c.h.get_block_size(nbd::SIZE_MINIMUM) == 4096);
}

TEST_CASE("plugin: filters: blocksize-policy: error policy, STRICT_ALIGN on -> client EINVAL" * NEEDS("blocksize-policy")) {
  REQUIRE_FILTER("blocksize-policy");
  Conn c({"blocksize-policy"}, {"blocksize-error-policy=error", "blocksize-minimum=4096",
                                "blocksize-preferred=4096", "blocksize-maximum=64K"});
  auto buf = bytes(512);
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pread(buf, 0, std::move(cb)); });
}

TEST_CASE("plugin: filters: blocksize-policy: error policy, STRICT_ALIGN off -> server EINVAL" * NEEDS("blocksize-policy")) {
  REQUIRE_FILTER("blocksize-policy");
  Conn c({"blocksize-policy"},
         {"blocksize-error-policy=error", "blocksize-minimum=4096", "blocksize-preferred=4096",
          "blocksize-maximum=64K", "size=4M"},
         nbd::STRICT_MASK & ~(nbd::STRICT_ALIGN | nbd::STRICT_PAYLOAD));
  auto small = bytes(512);
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_pread(small, 0, std::move(cb)); });
  auto big = bytes(2 * 1024 * 1024);
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_pwrite(big, 0, std::move(cb)); });
  for (auto& l : c.log.data()) CHECK(is_probe(l)); // the plugin saw only the probes
}

TEST_CASE("plugin: filters: blocksize-policy: allow policy passes unaligned requests on" * NEEDS("blocksize-policy")) {
  REQUIRE_FILTER("blocksize-policy");
  Conn c({"blocksize-policy"}, {"blocksize-error-policy=allow", "blocksize-minimum=4096",
                                "blocksize-preferred=4096", "blocksize-maximum=64K"},
         nbd::STRICT_MASK & ~nbd::STRICT_ALIGN);
  auto buf = bytes(512);
  c.h.pread(buf, 512);
  REQUIRE(c.log.data().size() == 1);
  CHECK(c.log.data()[0] == "pread offset=512 count=512 flags=none result=ok");
}

// --- nozero --------------------------------------------------------------------------------------------

TEST_CASE("plugin: filters: nozero: zeromode=none -> no zero, no fast zero" * NEEDS("nozero")) {
  REQUIRE_FILTER("nozero");
  Conn c({"nozero"}, {"zeromode=none"});
  CHECK_FALSE(c.h.can_zero());
  CHECK_FALSE(c.h.can_fast_zero());
  CHECK(errno_of([&] { c.h.zero(512, 0); }) == EINVAL);
}

TEST_CASE("plugin: filters: nozero: zeromode=emulate -> zero arrives as pwrite" * NEEDS("nozero")) {
  REQUIRE_FILTER("nozero");
  Conn c({"nozero"}, {"zeromode=emulate"});
  CHECK(c.h.can_zero());
  c.h.zero(4096, 0);
  REQUIRE(c.log.data().size() == 1);
  CHECK(c.log.data()[0] == "pwrite offset=0 count=4096 flags=none result=ok");
  if (c.h.can_fast_zero()) {
    CHECK(errno_of([&] { c.h.zero(4096, 0, nbd::CMD_FLAG_FAST_ZERO); }) == ENOTSUP);
    CHECK(c.log.data().size() == 1);
  }
}

TEST_CASE("plugin: filters: nozero: zeromode=notrim -> the plugin never sees may_trim" * NEEDS("nozero")) {
  REQUIRE_FILTER("nozero");
  Conn c({"nozero"}, {"zeromode=notrim"});
  c.h.zero(4096, 0);
  REQUIRE(c.log.data().size() == 1);
  CHECK(c.log.data()[0] == "zero offset=0 count=4096 flags=none result=ok");
}

TEST_CASE("plugin: filters: nozero: fastzeromode=none hides fast zero" * NEEDS("nozero")) {
  REQUIRE_FILTER("nozero");
  Conn c({"nozero"}, {"zeromode=plugin", "fastzeromode=none"});
  CHECK(c.h.can_zero());
  CHECK_FALSE(c.h.can_fast_zero());
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) {
    c.h.aio_zero(512, 0, std::move(cb), nbd::CMD_FLAG_FAST_ZERO);
  });
}

TEST_CASE("plugin: filters: nozero: fastzeromode=slow -> fast zeroes fail with ENOTSUP" * NEEDS("nozero")) {
  REQUIRE_FILTER("nozero");
  Conn c({"nozero"}, {"zeromode=plugin", "fastzeromode=slow"});
  REQUIRE(c.h.can_fast_zero());
  CHECK(errno_of([&] { c.h.zero(512, 0, nbd::CMD_FLAG_FAST_ZERO); }) == ENOTSUP);
  CHECK(c.log.data().empty());
}

// --- noextents -------------------------------------------------------------------------------------------

TEST_CASE("plugin: filters: noextents: base:allocation says all data, plugin not asked" * NEEDS("noextents")) {
  REQUIRE_FILTER("noextents");
  Conn c({"noextents"}, {"extents_map=hole:64K"});
  CHECK(c.h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  std::vector<std::uint32_t> got;
  c.h.block_status(65536, 0, [&](std::string_view, std::uint64_t, std::span<std::uint32_t> e, int*) {
    got.assign(e.begin(), e.end());
    return 0;
  });
  REQUIRE(got.size() >= 2);
  CHECK(got[0] >= 65536);
  CHECK(got[1] == 0);
  CHECK(c.log.named("extents").empty());
}

TEST_CASE("plugin: filters: without noextents the same map shows the hole") {
  Conn c({}, {"extents_map=hole:64K"});
  std::vector<std::uint32_t> got;
  c.h.block_status(65536, 0, [&](std::string_view, std::uint64_t, std::span<std::uint32_t> e, int*) {
    got.assign(e.begin(), e.end());
    return 0;
  });
  REQUIRE(got.size() >= 2);
  CHECK(got[1] == (nbd::STATE_HOLE | nbd::STATE_ZERO));
}

// --- noparallel ------------------------------------------------------------------------------------------

TEST_CASE("plugin: filters: noparallel: serialized requests all complete" * NEEDS("noparallel")) {
  REQUIRE_FILTER("noparallel");
  Conn c({"noparallel"}, {"serialize=requests", "delay=pread:10"});
  CHECK(c.h.can_multi_conn());
  constexpr int n = 8;
  std::vector<std::vector<std::uint8_t>> bufs(n, bytes(512));
  Counts counts[n];
  for (int i = 0; i < n; ++i) c.h.aio_pread(bufs[i], 0, Completion(&counts[i]));
  drain(c.h);
  for (auto& k : counts) CHECK(k.errors == std::vector<int>{0});
  CHECK(c.log.named("pread").size() == n);
}

TEST_CASE("plugin: filters: noparallel: serialize=connections -> no multi-conn" * NEEDS("noparallel")) {
  REQUIRE_FILTER("noparallel");
  Conn c({"noparallel"}, {"serialize=connections"});
  CHECK_FALSE(c.h.can_multi_conn());
}

// --- cow -----------------------------------------------------------------------------------------------

TEST_CASE("plugin: filters: cow: a read-only plugin becomes writable, writes stay above" * NEEDS("cow")) {
  REQUIRE_FILTER("cow");
  Conn c({"cow"}, {"can_write=false"});
  CHECK_FALSE(c.h.is_read_only());
  auto data = bytes(4096, 0x42);
  c.h.pwrite(data, 8192);
  auto back = bytes(4096, 0);
  c.h.pread(back, 8192);
  CHECK(all_equal(back, 0x42));
  CHECK(c.log.named("pwrite").empty());
}

TEST_CASE("plugin: filters: cow: trim stays above, zero is not offered" * NEEDS("cow")) {
  REQUIRE_FILTER("cow");
  // nbdkit 1.32's cow filter has its own trim but advertises no zero (nbdinfo
  // agrees), whatever the plugin can do.
  Conn c({"cow"}, {});
  CHECK(c.h.can_trim());
  CHECK_FALSE(c.h.can_zero());
  c.h.pwrite(bytes(8192, 0x42), 0);
  c.h.trim(4096, 4096);
  auto back = bytes(8192, 0xff);
  c.h.pread(back, 0);
  CHECK(std::vector<std::uint8_t>(back.begin(), back.begin() + 4096) == bytes(4096, 0x42));
  CHECK(std::vector<std::uint8_t>(back.begin() + 4096, back.end()) == bytes(4096, 0));
  CHECK(c.log.named("pwrite").empty());
  CHECK(c.log.named("trim").empty());
}

// --- fua ------------------------------------------------------------------------------------------------

TEST_CASE("plugin: filters: fua: the default mode (none) -> no FUA" * NEEDS("fua")) {
  REQUIRE_FILTER("fua");
  // nbdkit 1.32.5 refuses the literal "fuamode=none" its manual documents
  // ("unknown fuamode"), so the default stands in for it.
  Conn c({"fua"}, {"can_fua=native"});
  CHECK_FALSE(c.h.can_fua());
  CHECK(c.h.can_flush());
}

TEST_CASE("plugin: filters: fua: fuamode=emulate -> write then flush" * NEEDS("fua")) {
  REQUIRE_FILTER("fua");
  Conn c({"fua"}, {"fuamode=emulate", "can_fua=native"});
  CHECK(c.h.can_fua());
  c.h.pwrite(bytes(512, 1), 0, nbd::CMD_FLAG_FUA);
  auto d = c.log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "pwrite offset=0 count=512 flags=none result=ok");
  CHECK(d[1] == "flush flags=none result=ok");
}

TEST_CASE("plugin: filters: fua: fuamode=native -> fua passed on" * NEEDS("fua")) {
  REQUIRE_FILTER("fua");
  Conn c({"fua"}, {"fuamode=native"});
  c.h.pwrite(bytes(512, 1), 0, nbd::CMD_FLAG_FUA);
  REQUIRE(c.log.data().size() == 1);
  CHECK(c.log.data()[0] == "pwrite offset=0 count=512 flags=fua result=ok");
}

TEST_CASE("plugin: filters: fua: fuamode=force -> every write has fua, flush is a no-op" * NEEDS("fua")) {
  REQUIRE_FILTER("fua");
  Conn c({"fua"}, {"fuamode=force"});
  c.h.pwrite(bytes(512, 1), 0);
  c.h.flush();
  auto d = c.log.data();
  REQUIRE(d.size() == 1);
  CHECK(d[0] == "pwrite offset=0 count=512 flags=fua result=ok");
}

TEST_CASE("plugin: filters: fua: fuamode=discard -> no fua, no flush" * NEEDS("fua")) {
  REQUIRE_FILTER("fua");
  Conn c({"fua"}, {"fuamode=discard"});
  CHECK(c.h.can_fua());
  c.h.pwrite(bytes(512, 1), 0, nbd::CMD_FLAG_FUA);
  c.h.flush();
  auto d = c.log.data();
  REQUIRE(d.size() == 1);
  CHECK(d[0] == "pwrite offset=0 count=512 flags=none result=ok");
}

TEST_CASE("plugin: filters: fua: fuamode=pass -> as the plugin says" * NEEDS("fua")) {
  REQUIRE_FILTER("fua");
  Conn c({"fua"}, {"fuamode=pass", "can_fua=none"});
  CHECK_FALSE(c.h.can_fua());
}

// --- multi-conn ---------------------------------------------------------------------------------------

TEST_CASE("plugin: filters: multi-conn: disable hides the plugin's multi-conn" * NEEDS("multi-conn")) {
  REQUIRE_FILTER("multi-conn");
  Conn c({"multi-conn"}, {"multi-conn-mode=disable", "can_multi_conn=true"});
  CHECK_FALSE(c.h.can_multi_conn());
}

TEST_CASE("plugin: filters: multi-conn: unsafe advertises it anyway" * NEEDS("multi-conn")) {
  REQUIRE_FILTER("multi-conn");
  Conn c({"multi-conn"}, {"multi-conn-mode=unsafe", "can_multi_conn=false"});
  CHECK(c.h.can_multi_conn());
}

TEST_CASE("plugin: filters: multi-conn: emulate advertises it and flushes" * NEEDS("multi-conn")) {
  REQUIRE_FILTER("multi-conn");
  Conn c({"multi-conn"}, {"multi-conn-mode=emulate", "can_multi_conn=false"});
  CHECK(c.h.can_multi_conn());
  c.h.pwrite(bytes(512, 1), 0);
  c.h.flush();
  CHECK(c.log.named("flush").size() >= 1);
}

TEST_CASE("plugin: filters: multi-conn: plugin mode follows the plugin" * NEEDS("multi-conn")) {
  REQUIRE_FILTER("multi-conn");
  {
    Conn c({"multi-conn"}, {"multi-conn-mode=plugin", "can_multi_conn=false"});
    CHECK_FALSE(c.h.can_multi_conn());
  }
  {
    Conn c({"multi-conn"}, {"multi-conn-mode=plugin", "can_multi_conn=true"});
    CHECK(c.h.can_multi_conn());
  }
}

// --- readahead ------------------------------------------------------------------------------------------

TEST_CASE("plugin: filters: readahead: sequential reads return the data" * NEEDS("readahead")) {
  REQUIRE_FILTER("readahead");
  std::vector<std::uint8_t> pattern(256 * 1024);
  for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<std::uint8_t>(i / 512 + i);
  Conn c({"readahead"}, {});
  c.h.pwrite(pattern, 0);
  std::vector<std::uint8_t> back(pattern.size());
  for (std::size_t off = 0; off < back.size(); off += 16384)
    c.h.pread(std::span<std::uint8_t>(back).subspan(off, 16384), off);
  CHECK(back == pattern);
  // What reached the plugin covers at least what was asked (the filter may
  // read ahead, or ask the plugin to cache).
  CHECK(c.log.named("pread").size() + c.log.named("cache").size() >= 1);
}
