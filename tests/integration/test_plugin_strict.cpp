// SPDX-License-Identifier: BSD-3-Clause
// Strict mode, flag by flag, on and off, in the manner of libnbd's paired
// tests (tests/errors-client-*.c: rejected before the wire; and
// tests/errors-server-*.c: the same request with the flag off reaches the
// server, which answers with its own error).
//
// "Rejected on the client side" means (expect_client_reject): the right
// errno; no cookie spent (the next command's cookie is the previous one + 1);
// the completion callback never ran but was destroyed exactly once; nothing
// reached the plugin (its call log shows only the probe read that follows).
// "Rejected by the server" means (expect_server_error): a cookie is spent,
// the completion runs once with nbdkit's errno, and the blocking form throws
// nbd::Error with the same errno.
//
// The checks and errno values follow libnbd (lib/rw.c and its generated
// wrappers, 1.14 - 1.20): state, then STRICT_FLAGS, then STRICT_COMMANDS
// (which also gates FUA, FAST_ZERO and DF the server did not advertise),
// then ZERO_SIZE, BOUNDS (ENOSPC for write, trim and zero; EINVAL for the
// rest), ALIGN, PAYLOAD and the 64 MiB limit (ERANGE).

#include "plugin_common.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

using namespace ptest;

namespace {

constexpr std::uint64_t MiB = 1024 * 1024;
constexpr std::uint32_t all = nbd::STRICT_MASK;

/// One connection to the test plugin with a call log.
struct Conn {
  Log log;
  nbd::Handle h;
  explicit Conn(std::vector<std::string> params, std::uint32_t strict = all,
                std::vector<std::string> opts = {}, bool meta = true) {
    params.push_back(log.param());
    if (meta) h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
    connect(h, std::move(params), std::move(opts));
    h.set_strict_mode(strict);
  }
};

int extents_noop(std::string_view, std::uint64_t, std::span<std::uint32_t>, int*) { return 0; }

std::vector<std::uint8_t> buf512(512, 0x55);

} // namespace

TEST_CASE("plugin: strict: the default strict mode is libnbd's: every flag") {
  nbd::Handle h;
  CHECK(h.get_strict_mode() == nbd::STRICT_MASK);
  CHECK(nbd::STRICT_MASK == 0x7f);
}

// --- STRICT_COMMANDS --------------------------------------------------------------------------

TEST_CASE("plugin: strict: COMMANDS on: write to a read-only export -> EPERM, not sent") {
  Conn c({"can_write=false"});
  expect_client_reject(c.h, c.log, EPERM,
                       [&](Completion cb) { c.h.aio_pwrite(buf512, 0, std::move(cb)); });
  CHECK(errno_of([&] { c.h.pwrite(buf512, 0); }) == EPERM);
}

TEST_CASE("plugin: strict: COMMANDS off: write to a read-only export -> server EPERM") {
  Conn c({"can_write=false"}, all & ~nbd::STRICT_COMMANDS);
  expect_server_error(c.h, EPERM, [&](Completion cb) { return c.h.aio_pwrite(buf512, 0, std::move(cb)); });
  CHECK(errno_of([&] { c.h.pwrite(buf512, 0); }) == EPERM);
  CHECK(c.log.named("pwrite").empty()); // nbdkit refused it before the plugin
}

TEST_CASE("plugin: strict: COMMANDS on: trim on a read-only export -> EINVAL (trim unadvertised)") {
  Conn c({"can_write=false"});
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_trim(512, 0, std::move(cb)); });
}

TEST_CASE("plugin: strict: COMMANDS off: trim on a read-only export -> server EPERM") {
  Conn c({"can_write=false"}, all & ~nbd::STRICT_COMMANDS);
  expect_server_error(c.h, EPERM, [&](Completion cb) { return c.h.aio_trim(512, 0, std::move(cb)); });
  CHECK(c.log.named("trim").empty());
}

TEST_CASE("plugin: strict: COMMANDS on: zero on a read-only export -> EINVAL (can_zero first)") {
  // libnbd checks can_zero before is_read_only, so the unadvertised zero wins.
  Conn c({"can_write=false"});
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_zero(512, 0, std::move(cb)); });
}

TEST_CASE("plugin: strict: COMMANDS off: zero on a read-only export -> server EPERM") {
  Conn c({"can_write=false"}, all & ~nbd::STRICT_COMMANDS);
  expect_server_error(c.h, EPERM, [&](Completion cb) { return c.h.aio_zero(512, 0, std::move(cb)); });
  CHECK(c.log.named("zero").empty());
}

TEST_CASE("plugin: strict: COMMANDS on: flush unadvertised -> EINVAL") {
  Conn c({"can_flush=false"});
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_flush(std::move(cb)); });
  CHECK(errno_of([&] { c.h.flush(); }) == EINVAL);
}

TEST_CASE("plugin: strict: COMMANDS off: flush unadvertised -> server EINVAL") {
  Conn c({"can_flush=false"}, all & ~nbd::STRICT_COMMANDS);
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_flush(std::move(cb)); });
  CHECK(c.log.named("flush").empty());
}

TEST_CASE("plugin: strict: COMMANDS on: trim unadvertised -> EINVAL") {
  Conn c({"can_trim=false"});
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_trim(512, 0, std::move(cb)); });
}

TEST_CASE("plugin: strict: COMMANDS off: trim unadvertised -> server EINVAL") {
  Conn c({"can_trim=false"}, all & ~nbd::STRICT_COMMANDS);
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_trim(512, 0, std::move(cb)); });
  CHECK(c.log.named("trim").empty());
}

TEST_CASE("plugin: strict: COMMANDS on: cache unadvertised -> EINVAL") {
  Conn c({"can_cache=none"});
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_cache(512, 0, std::move(cb)); });
}

TEST_CASE("plugin: strict: COMMANDS off: cache unadvertised -> server EINVAL") {
  Conn c({"can_cache=none"}, all & ~nbd::STRICT_COMMANDS);
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_cache(512, 0, std::move(cb)); });
  CHECK(c.log.named("cache").empty());
}

TEST_CASE("plugin: strict: COMMANDS on: zero unadvertised (nozero filter) -> EINVAL" * PTEST_NEEDS_FILTER("nozero")) {
  PTEST_REQUIRE_FILTER("nozero");
  Conn c({"zeromode=none"}, all, {"--filter=nozero"});
  REQUIRE_FALSE(c.h.can_zero());
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_zero(512, 0, std::move(cb)); });
}

TEST_CASE("plugin: strict: COMMANDS off: zero unadvertised (nozero filter) -> server EINVAL" * PTEST_NEEDS_FILTER("nozero")) {
  PTEST_REQUIRE_FILTER("nozero");
  Conn c({"zeromode=none"}, all & ~nbd::STRICT_COMMANDS, {"--filter=nozero"});
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_zero(512, 0, std::move(cb)); });
  REQUIRE(c.log.data().size() == 1); // the probe read only
  CHECK(is_probe(c.log.data()[0]));
}

TEST_CASE("plugin: strict: COMMANDS on: FUA unadvertised -> EINVAL on write, trim, zero") {
  Conn c({"can_fua=none"});
  REQUIRE_FALSE(c.h.can_fua());
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_pwrite(buf512, 0, std::move(cb), nbd::CMD_FLAG_FUA); });
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_trim(512, 0, std::move(cb), nbd::CMD_FLAG_FUA); });
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_zero(512, 0, std::move(cb), nbd::CMD_FLAG_FUA); });
}

TEST_CASE("plugin: strict: COMMANDS gates FUA, not FLAGS") {
  // libnbd: flags a command takes but the server did not advertise are
  // STRICT_COMMANDS' business; with only STRICT_FLAGS off it still refuses.
  Conn c({"can_fua=none"}, all & ~nbd::STRICT_FLAGS);
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_pwrite(buf512, 0, std::move(cb), nbd::CMD_FLAG_FUA); });
}

TEST_CASE("plugin: strict: COMMANDS off: FUA unadvertised -> server EINVAL") {
  Conn c({"can_fua=none"}, all & ~nbd::STRICT_COMMANDS);
  expect_server_error(c.h, EINVAL, [&](Completion cb) {
    return c.h.aio_pwrite(buf512, 0, std::move(cb), nbd::CMD_FLAG_FUA);
  });
  expect_server_error(c.h, EINVAL,
                      [&](Completion cb) { return c.h.aio_trim(512, 0, std::move(cb), nbd::CMD_FLAG_FUA); });
  expect_server_error(c.h, EINVAL,
                      [&](Completion cb) { return c.h.aio_zero(512, 0, std::move(cb), nbd::CMD_FLAG_FUA); });
  CHECK(c.log.named("pwrite").empty());
}

TEST_CASE("plugin: strict: COMMANDS on: FAST_ZERO unadvertised -> EINVAL") {
  Conn c({"can_fast_zero=false"});
  REQUIRE_FALSE(c.h.can_fast_zero());
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) {
    c.h.aio_zero(512, 0, std::move(cb), nbd::CMD_FLAG_FAST_ZERO);
  });
  // The "off" half is deliberately missing: nbdkit 1.32.5 aborts the whole
  // server (backend_zero: Assertion 'c->can_fast_zero == 1') when a client
  // sends FAST_ZERO it did not negotiate, so the request is never sent here.
}

TEST_CASE("plugin: strict: COMMANDS on: DF without structured replies -> EINVAL") {
  nbd::Handle h;
  Log log;
  h.set_request_structured_replies(false);
  connect(h, {log.param()});
  REQUIRE_FALSE(h.can_df());
  std::vector<unsigned> s;
  Counts cc;
  auto buf = bytes(512);
  expect_client_reject(h, log, EINVAL, [&](Completion cb) {
    h.aio_pread_structured(buf, 0, Chunk(&cc, &s), std::move(cb), nbd::CMD_FLAG_DF);
  });
  CHECK(cc.destroyed == 1);
  CHECK(cc.calls == 0);
}

TEST_CASE("plugin: strict: COMMANDS off: DF without structured replies -> server EINVAL") {
  nbd::Handle h;
  h.set_request_structured_replies(false);
  connect(h, {});
  h.set_strict_mode(all & ~nbd::STRICT_COMMANDS);
  std::vector<unsigned> s;
  Counts cc;
  auto buf = bytes(512);
  expect_server_error(h, EINVAL, [&](Completion cb) {
    return h.aio_pread_structured(buf, 0, Chunk(&cc, &s), std::move(cb), nbd::CMD_FLAG_DF);
  });
}

TEST_CASE("plugin: strict: COMMANDS on: block_status without a meta context -> ENOTSUP") {
  Conn c({}, all, {}, false);
  expect_client_reject(c.h, c.log, ENOTSUP,
                       [&](Completion cb) { c.h.aio_block_status(512, 0, extents_noop, std::move(cb)); });
}

TEST_CASE("plugin: strict: COMMANDS off: block_status without a meta context -> server EINVAL") {
  Conn c({}, all & ~nbd::STRICT_COMMANDS, {}, false);
  expect_server_error(c.h, EINVAL, [&](Completion cb) {
    return c.h.aio_block_status(512, 0, extents_noop, std::move(cb));
  });
  CHECK(c.log.named("extents").empty());
}

TEST_CASE("plugin: strict: COMMANDS on: block_status without structured replies -> ENOTSUP") {
  nbd::Handle h;
  Log log;
  h.set_request_structured_replies(false);
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, {log.param()});
  expect_client_reject(h, log, ENOTSUP,
                       [&](Completion cb) { h.aio_block_status(512, 0, extents_noop, std::move(cb)); });
}

TEST_CASE("plugin: strict: COMMANDS off: block_status without structured replies -> server EINVAL") {
  nbd::Handle h;
  h.set_request_structured_replies(false);
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, {});
  h.set_strict_mode(all & ~nbd::STRICT_COMMANDS);
  expect_server_error(h, EINVAL,
                      [&](Completion cb) { return h.aio_block_status(512, 0, extents_noop, std::move(cb)); });
}

// --- STRICT_FLAGS ------------------------------------------------------------------------------

TEST_CASE("plugin: strict: FLAGS on: FUA on a read -> EINVAL") {
  Conn c({});
  auto buf = bytes(512);
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_pread(buf, 0, std::move(cb), nbd::CMD_FLAG_FUA); });
}

TEST_CASE("plugin: strict: FLAGS off: FUA on a read goes out, nbdkit ignores it") {
  Conn c({}, all & ~nbd::STRICT_FLAGS);
  auto buf = bytes(512);
  c.h.pread(buf, 4096, nbd::CMD_FLAG_FUA);
  auto d = c.log.data();
  REQUIRE(d.size() == 1);
  CHECK(d[0] == "pread offset=4096 count=512 flags=none result=ok");
}

TEST_CASE("plugin: strict: FLAGS on: FUA on a flush -> EINVAL") {
  Conn c({});
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_flush(std::move(cb), nbd::CMD_FLAG_FUA); });
}

TEST_CASE("plugin: strict: FLAGS off: FUA on a flush goes out, nbdkit flushes") {
  Conn c({}, all & ~nbd::STRICT_FLAGS);
  c.h.flush(nbd::CMD_FLAG_FUA);
  REQUIRE(c.log.data().size() == 1);
  CHECK(c.log.data()[0] == "flush flags=none result=ok");
}

TEST_CASE("plugin: strict: FLAGS on: NO_HOLE on a write -> EINVAL") {
  Conn c({});
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) {
    c.h.aio_pwrite(buf512, 0, std::move(cb), nbd::CMD_FLAG_NO_HOLE);
  });
}

TEST_CASE("plugin: strict: FLAGS off: NO_HOLE on a write -> server EINVAL") {
  Conn c({}, all & ~nbd::STRICT_FLAGS);
  expect_server_error(c.h, EINVAL, [&](Completion cb) {
    return c.h.aio_pwrite(buf512, 0, std::move(cb), nbd::CMD_FLAG_NO_HOLE);
  });
  CHECK(c.log.named("pwrite").empty());
}

TEST_CASE("plugin: strict: FLAGS on: NO_HOLE on a trim -> EINVAL") {
  Conn c({});
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_trim(512, 0, std::move(cb), nbd::CMD_FLAG_NO_HOLE); });
}

TEST_CASE("plugin: strict: FLAGS off: NO_HOLE on a trim -> server EINVAL") {
  Conn c({}, all & ~nbd::STRICT_FLAGS);
  expect_server_error(c.h, EINVAL,
                      [&](Completion cb) { return c.h.aio_trim(512, 0, std::move(cb), nbd::CMD_FLAG_NO_HOLE); });
}

TEST_CASE("plugin: strict: FLAGS on: REQ_ONE on a cache -> EINVAL") {
  Conn c({});
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_cache(512, 0, std::move(cb), nbd::CMD_FLAG_REQ_ONE); });
}

TEST_CASE("plugin: strict: FLAGS off: REQ_ONE on a cache -> server EINVAL") {
  Conn c({}, all & ~nbd::STRICT_FLAGS);
  expect_server_error(c.h, EINVAL, [&](Completion cb) {
    return c.h.aio_cache(512, 0, std::move(cb), nbd::CMD_FLAG_REQ_ONE);
  });
  CHECK(c.log.named("cache").empty());
}

TEST_CASE("plugin: strict: FLAGS on: FAST_ZERO on a write -> EINVAL") {
  Conn c({});
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) {
    c.h.aio_pwrite(buf512, 0, std::move(cb), nbd::CMD_FLAG_FAST_ZERO);
  });
}

TEST_CASE("plugin: strict: FLAGS off: FAST_ZERO (negotiated) on a write -> server EINVAL") {
  // Safe to send: fast zero was negotiated, so nbdkit only says the flag
  // belongs to WRITE_ZEROES (its assertion concerns unnegotiated FAST_ZERO).
  Conn c({}, all & ~nbd::STRICT_FLAGS);
  REQUIRE(c.h.can_fast_zero());
  expect_server_error(c.h, EINVAL, [&](Completion cb) {
    return c.h.aio_pwrite(buf512, 0, std::move(cb), nbd::CMD_FLAG_FAST_ZERO);
  });
}

TEST_CASE("plugin: strict: FLAGS on: DF on a plain pread -> EINVAL") {
  Conn c({});
  auto buf = bytes(512);
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_pread(buf, 0, std::move(cb), nbd::CMD_FLAG_DF); });
}

TEST_CASE("plugin: strict: FLAGS off: DF on a plain pread goes out and is honoured") {
  Conn c({}, all & ~nbd::STRICT_FLAGS);
  auto buf = bytes(512, 1);
  c.h.pread(buf, 0, nbd::CMD_FLAG_DF);
  CHECK(all_equal(buf, 0));
  CHECK(c.log.data().size() == 1);
}

TEST_CASE("plugin: strict: FLAGS on: an unknown flag (0x40) -> EINVAL") {
  Conn c({});
  auto buf = bytes(512);
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pread(buf, 0, std::move(cb), 0x40); });
}

TEST_CASE("plugin: strict: FLAGS off: an unknown flag (0x40) -> server EINVAL") {
  Conn c({}, all & ~nbd::STRICT_FLAGS);
  auto buf = bytes(512);
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_pread(buf, 0, std::move(cb), 0x40); });
  REQUIRE(c.log.named("pread").size() == 1); // the probe only
  CHECK(is_probe(c.log.named("pread")[0]));
}

TEST_CASE("plugin: strict: flags beyond 16 bits are always refused") {
  for (std::uint32_t strict : {all, all & ~nbd::STRICT_FLAGS, 0u}) {
    CAPTURE(strict);
    Conn c({}, strict);
    auto buf = bytes(512);
    expect_client_reject(c.h, c.log, EINVAL,
                         [&](Completion cb) { c.h.aio_pread(buf, 0, std::move(cb), 0x10000); });
    expect_client_reject(c.h, c.log, EINVAL,
                         [&](Completion cb) { c.h.aio_flush(std::move(cb), 0x80000000u); });
  }
}

TEST_CASE("plugin: strict: REQ_ONE on block_status is a permitted flag") {
  Conn c({});
  int n = 0;
  c.h.block_status(4096, 0, [&](std::string_view, std::uint64_t, std::span<std::uint32_t> e, int*) {
    n += static_cast<int>(e.size() / 2);
    return 0;
  }, nbd::CMD_FLAG_REQ_ONE);
  CHECK(n == 1);
}

// --- STRICT_BOUNDS -----------------------------------------------------------------------------

TEST_CASE("plugin: strict: BOUNDS on: out of bounds -> EINVAL (read, cache, block_status)") {
  Conn c({"size=1M"});
  auto buf = bytes(512);
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pread(buf, MiB, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pread(buf, MiB - 256, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_cache(512, MiB, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_block_status(512, MiB, extents_noop, std::move(cb)); });
}

TEST_CASE("plugin: strict: BOUNDS on: out of bounds -> ENOSPC (write, trim, zero)") {
  Conn c({"size=1M"});
  expect_client_reject(c.h, c.log, ENOSPC, [&](Completion cb) { c.h.aio_pwrite(buf512, MiB, std::move(cb)); });
  expect_client_reject(c.h, c.log, ENOSPC, [&](Completion cb) { c.h.aio_trim(512, MiB, std::move(cb)); });
  expect_client_reject(c.h, c.log, ENOSPC, [&](Completion cb) { c.h.aio_zero(1024, MiB - 512, std::move(cb)); });
}

TEST_CASE("plugin: strict: BOUNDS on: offsets near 2^64 do not wrap around") {
  Conn c({"size=1M"});
  auto buf = bytes(512);
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_pread(buf, UINT64_MAX - 100, std::move(cb)); });
  expect_client_reject(c.h, c.log, ENOSPC,
                       [&](Completion cb) { c.h.aio_zero(512, UINT64_MAX - 511, std::move(cb)); });
}

TEST_CASE("plugin: strict: BOUNDS on: the last byte is in bounds") {
  Conn c({"size=1M"});
  auto buf = bytes(512);
  c.h.pread(buf, MiB - 512);
  c.h.pwrite(buf, MiB - 512);
  c.h.zero(512, MiB - 512);
  c.h.trim(512, MiB - 512);
  c.h.cache(512, MiB - 512);
}

TEST_CASE("plugin: strict: BOUNDS off: out of bounds -> the server's EINVAL / ENOSPC") {
  // nbdkit: ENOSPC for write and zero, EINVAL for the rest (trim too).
  Conn c({"size=1M"}, all & ~nbd::STRICT_BOUNDS);
  auto buf = bytes(512);
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_pread(buf, MiB, std::move(cb)); });
  expect_server_error(c.h, ENOSPC, [&](Completion cb) { return c.h.aio_pwrite(buf512, MiB, std::move(cb)); });
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_trim(512, MiB, std::move(cb)); });
  expect_server_error(c.h, ENOSPC, [&](Completion cb) { return c.h.aio_zero(512, MiB, std::move(cb)); });
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_cache(512, MiB, std::move(cb)); });
  expect_server_error(c.h, EINVAL,
                      [&](Completion cb) { return c.h.aio_block_status(512, MiB, extents_noop, std::move(cb)); });
  expect_server_error(c.h, EINVAL,
                      [&](Completion cb) { return c.h.aio_pread(buf, UINT64_MAX - 100, std::move(cb)); });
  // Nothing out of bounds reached the plugin.
  for (auto& l : c.log.data()) CHECK(is_probe(l));
  CHECK(errno_of([&] { c.h.pwrite(buf512, MiB); }) == ENOSPC);
  CHECK(errno_of([&] { c.h.pread(buf, MiB); }) == EINVAL);
}

// --- STRICT_ZERO_SIZE ---------------------------------------------------------------------------

TEST_CASE("plugin: strict: ZERO_SIZE on: count 0 -> EINVAL for every ranged command") {
  Conn c({});
  std::vector<std::uint8_t> none;
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pread(none, 0, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pwrite(none, 0, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_trim(0, 0, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_zero(0, 0, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_cache(0, 0, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_block_status(0, 0, extents_noop, std::move(cb)); });
}

TEST_CASE("plugin: strict: ZERO_SIZE off: count 0 -> the server's answer") {
  // nbdkit treats a 0-length request as out of range: ENOSPC for write and
  // zero, EINVAL for the others.
  Conn c({}, all & ~nbd::STRICT_ZERO_SIZE);
  std::vector<std::uint8_t> none;
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_pread(none, 0, std::move(cb)); });
  expect_server_error(c.h, ENOSPC, [&](Completion cb) { return c.h.aio_pwrite(none, 0, std::move(cb)); });
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_trim(0, 0, std::move(cb)); });
  expect_server_error(c.h, ENOSPC, [&](Completion cb) { return c.h.aio_zero(0, 0, std::move(cb)); });
  expect_server_error(c.h, EINVAL, [&](Completion cb) { return c.h.aio_cache(0, 0, std::move(cb)); });
  expect_server_error(c.h, EINVAL,
                      [&](Completion cb) { return c.h.aio_block_status(0, 0, extents_noop, std::move(cb)); });
  for (auto& l : c.log.data()) CHECK(is_probe(l));
}

TEST_CASE("plugin: strict: ZERO_SIZE does not concern flush") {
  Conn c({});
  c.h.flush();
  CHECK(c.log.data().size() == 1);
}

// --- STRICT_ALIGN --------------------------------------------------------------------------------

TEST_CASE("plugin: strict: ALIGN on: unaligned offset or count (minimum 512) -> EINVAL") {
  Conn c({"block_size=512:4096:64K"});
  REQUIRE(c.h.get_block_size(nbd::SIZE_MINIMUM) == 512);
  auto b100 = bytes(100);
  auto b512 = bytes(512);
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pread(b512, 1, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pread(b100, 0, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pwrite(b100, 512, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_trim(512, 256, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_zero(513, 0, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_cache(1, 0, std::move(cb)); });
  expect_client_reject(c.h, c.log, EINVAL,
                       [&](Completion cb) { c.h.aio_block_status(100, 0, extents_noop, std::move(cb)); });
}

TEST_CASE("plugin: strict: ALIGN on: minimum 4096, 512-aligned is not enough") {
  Conn c({"block_size=4096:4096:1M"});
  auto b = bytes(4096);
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pread(b, 512, std::move(cb)); });
  c.h.pread(b, 8192);
  c.h.pwrite(b, 4096);
}

TEST_CASE("plugin: strict: ALIGN off: unaligned requests reach the plugin") {
  // nbdkit 1.32's core does not enforce the plugin's minimum itself.
  Conn c({"block_size=4096:4096:1M"}, all & ~nbd::STRICT_ALIGN);
  auto b = bytes(100, 9);
  c.h.pwrite(b, 1);
  c.h.pread(b, 1);
  CHECK(all_equal(b, 9));
  auto d = c.log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "pwrite offset=1 count=100 flags=none result=ok");
  CHECK(d[1] == "pread offset=1 count=100 flags=none result=ok");
}

TEST_CASE("plugin: strict: ALIGN without block size information checks nothing") {
  Conn c({"block_size=0:0:0"});
  auto b = bytes(3);
  c.h.pread(b, 7);
  CHECK(c.log.data().size() == 1);
}

// --- STRICT_PAYLOAD --------------------------------------------------------------------------------

TEST_CASE("plugin: strict: PAYLOAD on: a write above the server's maximum -> ERANGE") {
  Conn c({"block_size=512:4096:2M", "size=8M"});
  REQUIRE(c.h.get_block_size(nbd::SIZE_PAYLOAD) == 2 * MiB);
  auto big = bytes(4 * MiB);
  expect_client_reject(c.h, c.log, ERANGE, [&](Completion cb) { c.h.aio_pwrite(big, 0, std::move(cb)); });
  // Reads are not payloads the client sends.
  c.h.pread(big, 0);
}

TEST_CASE("plugin: strict: PAYLOAD off: a write above the server's maximum is sent") {
  Conn c({"block_size=512:4096:2M", "size=8M"}, all & ~nbd::STRICT_PAYLOAD);
  auto big = bytes(4 * MiB, 1);
  c.h.pwrite(big, 0);
  REQUIRE(c.log.data().size() == 1);
  CHECK(c.log.data()[0] == "pwrite offset=0 count=4194304 flags=none result=ok");
}

TEST_CASE("plugin: strict: PAYLOAD: a small server maximum still allows 1 MiB (libnbd)") {
  // proto.md lets a client send up to 1 MiB whatever the server's maximum;
  // libnbd's payload maximum is max(1M, server maximum).
  Conn c({"block_size=512:4096:64K", "size=8M"});
  CHECK(c.h.get_block_size(nbd::SIZE_MAXIMUM) == 65536);
  CHECK(c.h.get_block_size(nbd::SIZE_PAYLOAD) == static_cast<std::int64_t>(MiB));
  auto b = bytes(MiB);
  c.h.pwrite(b, 0);
  auto over = bytes(MiB + 512);
  expect_client_reject(c.h, c.log, ERANGE, [&](Completion cb) { c.h.aio_pwrite(over, 0, std::move(cb)); });
}

TEST_CASE("plugin: strict: PAYLOAD on: without a server maximum the limit is 32 MiB") {
  Conn c({"size=64M"});
  CHECK(c.h.get_block_size(nbd::SIZE_PAYLOAD) == static_cast<std::int64_t>(32 * MiB));
  auto big = bytes(32 * MiB + 4096);
  expect_client_reject(c.h, c.log, ERANGE, [&](Completion cb) { c.h.aio_pwrite(big, 0, std::move(cb)); });
  c.h.set_strict_mode(all & ~nbd::STRICT_PAYLOAD);
  c.h.pwrite(big, 0); // nbdkit takes up to 64 MiB
}

TEST_CASE("plugin: strict: more than 64 MiB is ERANGE whatever the strict mode") {
  Conn c({"size=128M"}, 0);
  auto big = bytes(64 * MiB + 512);
  expect_client_reject(c.h, c.log, ERANGE, [&](Completion cb) { c.h.aio_pwrite(big, 0, std::move(cb)); });
  expect_client_reject(c.h, c.log, ERANGE, [&](Completion cb) { c.h.aio_pread(big, 0, std::move(cb)); });
}

// --- STRICT_AUTO_FLAG ---------------------------------------------------------------------------------

TEST_CASE("plugin: strict: AUTO_FLAG on: PAYLOAD_LEN is set from the headers (here: cleared)") {
  Conn c({});
  REQUIRE_FALSE(c.h.get_extended_headers_negotiated());
  c.h.pwrite(buf512, 0, nbd::CMD_FLAG_PAYLOAD_LEN);
  REQUIRE(c.log.data().size() == 1);
  CHECK(c.log.data()[0] == "pwrite offset=0 count=512 flags=none result=ok");
}

TEST_CASE("plugin: strict: AUTO_FLAG off: PAYLOAD_LEN without extended headers -> EINVAL") {
  Conn c({}, all & ~nbd::STRICT_AUTO_FLAG);
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) {
    c.h.aio_pwrite(buf512, 0, std::move(cb), nbd::CMD_FLAG_PAYLOAD_LEN);
  });
}

TEST_CASE("plugin: strict: AUTO_FLAG, COMMANDS, FLAGS off: PAYLOAD_LEN goes out -> server EINVAL") {
  // nbdkit 1.32 knows no PAYLOAD_LEN: "unknown flag (0x20)". It skips the
  // payload, so the connection stays in step (the probe read after works).
  Conn c({}, all & ~(nbd::STRICT_AUTO_FLAG | nbd::STRICT_COMMANDS | nbd::STRICT_FLAGS));
  expect_server_error(c.h, EINVAL, [&](Completion cb) {
    return c.h.aio_pwrite(buf512, 0, std::move(cb), nbd::CMD_FLAG_PAYLOAD_LEN);
  });
  probe_read(c.h);
  CHECK(c.log.named("pwrite").empty());
}

// --- check order (libnbd's) -----------------------------------------------------------------------------

TEST_CASE("plugin: strict: order: state before flags") {
  nbd::Handle h;
  auto buf = bytes(512);
  CHECK(errno_of([&] { h.pread(buf, 0, 0x40); }) == ENOTCONN);
}

TEST_CASE("plugin: strict: order: FLAGS before COMMANDS") {
  Conn c({"can_write=false"});
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) {
    c.h.aio_pwrite(buf512, 0, std::move(cb), nbd::CMD_FLAG_NO_HOLE);
  });
}

TEST_CASE("plugin: strict: order: COMMANDS before ZERO_SIZE and BOUNDS") {
  Conn c({"can_write=false", "size=1M"});
  std::vector<std::uint8_t> none;
  expect_client_reject(c.h, c.log, EPERM, [&](Completion cb) { c.h.aio_pwrite(none, 0, std::move(cb)); });
  expect_client_reject(c.h, c.log, EPERM, [&](Completion cb) { c.h.aio_pwrite(buf512, MiB, std::move(cb)); });
}

TEST_CASE("plugin: strict: order: ZERO_SIZE before BOUNDS") {
  Conn c({"size=1M"});
  std::vector<std::uint8_t> none;
  // Out of bounds a write would be ENOSPC; the zero size is found first.
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pwrite(none, 2 * MiB, std::move(cb)); });
}

TEST_CASE("plugin: strict: order: BOUNDS before ALIGN") {
  Conn c({"size=1M", "block_size=512:4096:64K"});
  auto b = bytes(100);
  expect_client_reject(c.h, c.log, ENOSPC, [&](Completion cb) { c.h.aio_pwrite(b, MiB + 1, std::move(cb)); });
}

TEST_CASE("plugin: strict: order: ALIGN before PAYLOAD") {
  Conn c({"size=8M", "block_size=512:4096:64K"});
  auto b = bytes(2 * MiB + 1);
  expect_client_reject(c.h, c.log, EINVAL, [&](Completion cb) { c.h.aio_pwrite(b, 0, std::move(cb)); });
}

TEST_CASE("plugin: strict: order: BOUNDS before the 64 MiB limit") {
  Conn c({"size=1M"});
  auto b = bytes(64 * MiB + 512);
  expect_client_reject(c.h, c.log, ENOSPC, [&](Completion cb) { c.h.aio_pwrite(b, 0, std::move(cb)); });
}

TEST_CASE("plugin: strict: no command after aio_disconnect -> EINVAL") {
  nbd::Handle h;
  connect(h, {});
  h.aio_disconnect();
  Counts counts;
  auto buf = bytes(512);
  CHECK(errno_of([&] { h.aio_pread(buf, 0, Completion(&counts)); }) == EINVAL);
  CHECK(counts.calls == 0);
  CHECK(counts.destroyed == 1);
}

// --- pread_initialize --------------------------------------------------------------------------------

TEST_CASE("plugin: strict: pread_initialize on: a client-side rejection zeroes the buffer") {
  Conn c({"size=1M"});
  REQUIRE(c.h.get_pread_initialize());
  auto buf = bytes(512, 0xaa);
  CHECK(errno_of([&] { c.h.pread(buf, MiB); }) == EINVAL);
  CHECK(all_equal(buf, 0));
  buf.assign(512, 0xaa);
  CHECK(errno_of([&] { c.h.pread(buf, 0, nbd::CMD_FLAG_FUA); }) == EINVAL);
  CHECK(all_equal(buf, 0));
}

TEST_CASE("plugin: strict: pread_initialize off: a client-side rejection leaves the buffer") {
  Conn c({"size=1M"});
  c.h.set_pread_initialize(false);
  auto buf = bytes(512, 0xaa);
  CHECK(errno_of([&] { c.h.pread(buf, MiB); }) == EINVAL);
  CHECK(all_equal(buf, 0xaa));
  CHECK(errno_of([&] { c.h.pread(buf, 0, nbd::CMD_FLAG_FUA); }) == EINVAL);
  CHECK(all_equal(buf, 0xaa));
}

TEST_CASE("plugin: strict: pread_initialize on: a server-side failure zeroes the buffer") {
  Conn c({"error=pread:EIO"}, 0);
  auto buf = bytes(4096, 0xaa);
  CHECK(errno_of([&] { c.h.pread(buf, 0); }) == EIO);
  CHECK(all_equal(buf, 0));
  buf.assign(4096, 0xaa);
  // Out of bounds with STRICT_BOUNDS off: the server refuses it.
  CHECK(errno_of([&] { c.h.pread(buf, 2 * MiB); }) == EINVAL);
  CHECK(all_equal(buf, 0));
}

TEST_CASE("plugin: strict: pread_initialize: even before connecting") {
  nbd::Handle h;
  auto buf = bytes(64, 0xaa);
  CHECK(errno_of([&] { h.pread(buf, 0); }) == ENOTCONN);
  CHECK(all_equal(buf, 0));
  h.set_pread_initialize(false);
  buf.assign(64, 0xaa);
  CHECK(errno_of([&] { h.pread(buf, 0); }) == ENOTCONN);
  CHECK(all_equal(buf, 0xaa));
}

TEST_CASE("plugin: strict: pread_initialize off: a good read still returns the data") {
  Conn c({});
  c.h.set_pread_initialize(false);
  auto data = bytes(4096, 0x3c);
  c.h.pwrite(data, 8192);
  auto buf = bytes(4096, 0xaa);
  c.h.pread(buf, 8192);
  CHECK(all_equal(buf, 0x3c));
}
