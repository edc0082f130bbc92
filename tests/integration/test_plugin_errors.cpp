// SPDX-License-Identifier: BSD-3-Clause
// Errors end to end: a plugin callback fails with an errno (nbdkit_set_error,
// or plain errno when the plugin says errno_is_preserved), server/plugins.c
// get_error() picks it up (EIO when there is none), nbdkit's protocol.c
// nbd_errno() maps it to an NBD error on the wire, and nbdcpp hands it to
// the completion callback as *error and to the blocking call as
// nbd::Error::errnum(). The wire mapping (tests/plugins/README.md, checked
// against nbdkit 1.32):
//   EPERM, EROFS -> EPERM      EIO -> EIO          ENOMEM -> ENOMEM
//   ENOSPC, EDQUOT, EFBIG -> ENOSPC                ESHUTDOWN -> ESHUTDOWN
//   EINVAL -> EINVAL           ENOTSUP/EOPNOTSUPP -> EINVAL (ENOTSUP on a fast zero)
//   EOVERFLOW -> EINVAL (EOVERFLOW on a read with DF)
//   anything else (EBADMSG, ...) -> EINVAL          no errno at all -> EIO

#include "plugin_common.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace ptest;

namespace {

/// A read failing with the plugin's injected errno `name` in error_mode
/// `mode` must reach the completion callback and the blocking pread as want.
void check_read_errno(const std::string& name, const std::string& mode, int want,
                      const char* which = v2) {
  Log log;
  nbd::Handle h;
  connect(h, {"error=pread:" + name + ":64K-128K", "error_mode=" + mode, log.param()}, {}, which);
  std::vector<std::uint8_t> buf(4096, 0xaa);
  // The completion callback's view.
  Counts counts;
  std::uint64_t cookie = h.aio_pread(buf, 65536, Completion(&counts, 0));
  drain(h);
  REQUIRE(counts.calls == 1);
  CHECK_MESSAGE(counts.errors[0] == want,
                name << "/" << mode << ": callback errno " << counts.errors[0] << ", want " << want);
  CHECK(counts.destroyed == 1);
  // The callback returned 0: aio_command_completed reports the errno (the
  // noexcept form through ec) and retires the command.
  std::error_code ec;
  (void)h.aio_command_completed(cookie, ec);
  CHECK(ec.value() == want);
  CHECK(errno_of([&] { (void)h.aio_command_completed(cookie); }) == EINVAL); // retired
  // The blocking call's view.
  int e = errno_of([&] { h.pread(buf, 65536); });
  CHECK_MESSAGE(e == want, name << "/" << mode << ": pread errno " << e << ", want " << want);
  // pread_initialize: the failed read left zeroes, not stale bytes.
  CHECK(all_equal(buf, 0));
  // The plugin really failed these (and logged the errno it used).
  auto d = log.named("pread");
  REQUIRE(d.size() == 2);
  CHECK(d[0].find("result=") != std::string::npos);
  CHECK(d[0].find("result=ok") == std::string::npos);
  // The connection survives a failed command.
  h.pread(buf, 0);
  CHECK(h.aio_is_ready());
}

} // namespace

#define ERRNO_CASES(NAME, WANT)                                                            \
  TEST_CASE("plugin: errors: " #NAME " -> " #WANT " (nbdkit_set_error)") {                 \
    check_read_errno(#NAME, "set_error", WANT);                                            \
  }                                                                                        \
  TEST_CASE("plugin: errors: " #NAME " -> " #WANT " (errno, errno_is_preserved)") {        \
    check_read_errno(#NAME, "errno", WANT);                                                \
  }

ERRNO_CASES(EPERM, EPERM)
ERRNO_CASES(EROFS, EPERM)
ERRNO_CASES(EIO, EIO)
ERRNO_CASES(ENOMEM, ENOMEM)
ERRNO_CASES(EINVAL, EINVAL)
ERRNO_CASES(ENOSPC, ENOSPC)
ERRNO_CASES(EDQUOT, ENOSPC)
ERRNO_CASES(EFBIG, ENOSPC)
ERRNO_CASES(EOVERFLOW, EINVAL)
ERRNO_CASES(ENOTSUP, EINVAL)
ERRNO_CASES(EOPNOTSUPP, EINVAL)
ERRNO_CASES(ESHUTDOWN, ESHUTDOWN)
ERRNO_CASES(EBADMSG, EINVAL)
ERRNO_CASES(ENOENT, EINVAL)

TEST_CASE("plugin: errors: get_error: a failure without any errno -> EIO") {
  check_read_errno("0", "set_error", EIO);
  check_read_errno("0", "errno", EIO);
}

TEST_CASE("plugin: errors: get_error: no-errno build, nbdkit_set_error still counts") {
  check_read_errno("ENOSPC", "set_error", ENOSPC, no_errno);
  check_read_errno("EPERM", "set_error", EPERM, no_errno);
}

TEST_CASE("plugin: errors: get_error: no-errno build ignores errno -> EIO") {
  // errno_is_preserved = 0: nbdkit must not trust errno, so EIO.
  check_read_errno("ENOSPC", "errno", EIO, no_errno);
  check_read_errno("EPERM", "errno", EIO, no_errno);
  check_read_errno("ESHUTDOWN", "errno", EIO, no_errno);
}

TEST_CASE("plugin: errors: get_error: a v1 plugin's errno is preserved too") {
  check_read_errno("ENOSPC", "errno", ENOSPC, v1);
  check_read_errno("EPERM", "set_error", EPERM, v1);
}

TEST_CASE("plugin: errors: simple replies carry the same errno") {
  nbd::Handle h;
  h.set_request_structured_replies(false);
  connect(h, {"error=pread:ENOSPC"});
  REQUIRE_FALSE(h.get_structured_replies_negotiated());
  auto buf = bytes(512, 0xaa);
  CHECK(errno_of([&] { h.pread(buf, 0); }) == ENOSPC);
  CHECK(all_equal(buf, 0));
}

// --- each data callback ---------------------------------------------------------------------

TEST_CASE("plugin: errors: plugin_pwrite failure") {
  nbd::Handle h;
  connect(h, {"error=pwrite:ENOSPC"});
  auto buf = bytes(4096, 1);
  CHECK(errno_of([&] { h.pwrite(buf, 0); }) == ENOSPC);
  Counts c;
  h.aio_pwrite(buf, 0, Completion(&c));
  drain(h);
  REQUIRE(c.errors.size() == 1);
  CHECK(c.errors[0] == ENOSPC);
}

TEST_CASE("plugin: errors: plugin_flush failure") {
  nbd::Handle h;
  connect(h, {"error=flush:EIO"});
  CHECK(errno_of([&] { h.flush(); }) == EIO);
  Counts c;
  h.aio_flush(Completion(&c));
  drain(h);
  REQUIRE(c.errors.size() == 1);
  CHECK(c.errors[0] == EIO);
}

TEST_CASE("plugin: errors: plugin_trim failure") {
  nbd::Handle h;
  connect(h, {"error=trim:EPERM"});
  CHECK(errno_of([&] { h.trim(4096, 0); }) == EPERM);
}

TEST_CASE("plugin: errors: plugin_zero failure (not ENOTSUP: no fallback)") {
  Log log;
  nbd::Handle h;
  connect(h, {"error=zero:ENOSPC", log.param()});
  CHECK(errno_of([&] { h.zero(4096, 0); }) == ENOSPC);
  auto d = log.data();
  REQUIRE(d.size() == 1);
  CHECK(d[0] == "zero offset=0 count=4096 flags=may_trim result=ENOSPC");
}

TEST_CASE("plugin: errors: plugin_zero ENOTSUP falls back to pwrite") {
  Log log;
  nbd::Handle h;
  connect(h, {"error=zero:ENOTSUP", log.param()});
  h.zero(4096, 0);
  auto d = log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "zero offset=0 count=4096 flags=may_trim result=ENOTSUP");
  CHECK(d[1] == "pwrite offset=0 count=4096 flags=none result=ok");
}

TEST_CASE("plugin: errors: plugin_zero ENOTSUP on a fast zero -> ENOTSUP, no fallback") {
  Log log;
  nbd::Handle h;
  connect(h, {"error=zero:EOPNOTSUPP", log.param()});
  REQUIRE(h.can_fast_zero());
  CHECK(errno_of([&] { h.zero(4096, 0, nbd::CMD_FLAG_FAST_ZERO); }) == ENOTSUP);
  auto d = log.data();
  REQUIRE(d.size() == 1);
  CHECK(d[0] == "zero offset=0 count=4096 flags=may_trim,fast_zero result=ENOTSUP");
}

TEST_CASE("plugin: errors: plugin_extents failure") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, {"error=extents:ENOMEM"});
  int calls = 0;
  CHECK(errno_of([&] {
          h.block_status(4096, 0, [&](std::string_view, std::uint64_t, std::span<std::uint32_t>, int*) {
            ++calls;
            return 0;
          });
        }) == ENOMEM);
  CHECK(calls == 0);
}

TEST_CASE("plugin: errors: plugin_extents adding no extent -> EINVAL") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect(h, {"extents=empty"});
  CHECK(errno_of([&] {
          h.block_status(4096, 0, [](std::string_view, std::uint64_t, std::span<std::uint32_t>, int*) {
            return 0;
          });
        }) == EINVAL);
}

TEST_CASE("plugin: errors: plugin_cache failure") {
  nbd::Handle h;
  connect(h, {"error=cache:EIO"});
  CHECK(errno_of([&] { h.cache(4096, 0); }) == EIO);
}

TEST_CASE("plugin: errors: emulated cache fails when its pread fails") {
  Log log;
  nbd::Handle h;
  connect(h, {"can_cache=emulate", "error=pread:ENOMEM", log.param()});
  CHECK(errno_of([&] { h.cache(4096, 0); }) == ENOMEM);
  REQUIRE(log.data().size() == 1);
  CHECK(log.data()[0].rfind("pread ", 0) == 0);
}

TEST_CASE("plugin: errors: emulated FUA fails when its flush fails") {
  Log log;
  nbd::Handle h;
  connect(h, {"can_fua=emulate", "error=flush:EIO", log.param()});
  auto buf = bytes(512, 3);
  CHECK(errno_of([&] { h.pwrite(buf, 0, nbd::CMD_FLAG_FUA); }) == EIO);
  auto d = log.data();
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "pwrite offset=0 count=512 flags=none result=ok");
  CHECK(d[1] == "flush flags=none result=EIO");
}

// --- errors at an offset ------------------------------------------------------------------------

TEST_CASE("plugin: errors: a read spanning the bad range fails, reads beside it succeed") {
  nbd::Handle h;
  connect(h, {"error=pread:EIO:64K-128K"});
  auto buf = bytes(4096);
  h.pread(buf, 0);                                            // before
  h.pread(buf, 65536 - 4096);                                 // ends exactly at the start
  CHECK(errno_of([&] { h.pread(buf, 65536 - 2048); }) == EIO); // overlaps the start
  CHECK(errno_of([&] { h.pread(buf, 65536); }) == EIO);        // inside
  CHECK(errno_of([&] { h.pread(buf, 131072 - 1); }) == EIO);   // overlaps the end
  h.pread(buf, 131072);                                       // starts exactly at the end
  h.pread(buf, 512 * 1024);                                   // well after
}

TEST_CASE("plugin: errors: a bad range on pwrite leaves reads alone") {
  nbd::Handle h;
  connect(h, {"error=pwrite:ENOSPC:1M-2M", "size=4M"});
  auto buf = bytes(4096, 5);
  h.pwrite(buf, 0);
  CHECK(errno_of([&] { h.pwrite(buf, 1024 * 1024); }) == ENOSPC);
  h.pread(buf, 1024 * 1024);
  CHECK(all_equal(buf, 0));
}

TEST_CASE("plugin: errors: an error with a COUNT fires that many times only") {
  nbd::Handle h;
  connect(h, {"error=pread:EIO:*:2"});
  auto buf = bytes(512);
  CHECK(errno_of([&] { h.pread(buf, 0); }) == EIO);
  CHECK(errno_of([&] { h.pread(buf, 0); }) == EIO);
  h.pread(buf, 0);
  h.pread(buf, 0);
}

TEST_CASE("plugin: errors: aio commands around a failing one complete independently") {
  nbd::Handle h;
  connect(h, {"error=pread:EIO:64K-128K"});
  std::vector<std::vector<std::uint8_t>> bufs(5, bytes(4096, 0xee));
  Counts c[5];
  for (int i = 0; i < 5; ++i) h.aio_pread(bufs[i], static_cast<std::uint64_t>(i) * 32768, Completion(&c[i]));
  drain(h);
  // Offsets 0, 32K ok; 64K and 96K fail; 128K ok.
  for (int i = 0; i < 5; ++i) {
    REQUIRE(c[i].calls == 1);
    CHECK(c[i].destroyed == 1);
    int want = (i == 2 || i == 3) ? EIO : 0;
    CHECK(c[i].errors[0] == want);
    CHECK(all_equal(bufs[i], 0)); // data or not: the store is empty, errors zeroed
  }
}

// --- structured replies -----------------------------------------------------------------------

TEST_CASE("plugin: errors: pread_structured: an error chunk, no data chunk") {
  // nbdkit sends NBD_REPLY_TYPE_ERROR (not ERROR_OFFSET) for a failed read:
  // there is no offset to blame, so the chunk callback never sees
  // READ_ERROR; the command fails with the errno.
  nbd::Handle h;
  connect(h, {"error=pread:ENOMEM"});
  REQUIRE(h.get_structured_replies_negotiated());
  auto buf = bytes(4096, 0xaa);
  Counts chunk_counts, done;
  std::vector<unsigned> statuses;
  h.aio_pread_structured(buf, 0, Chunk(&chunk_counts, &statuses), Completion(&done));
  drain(h);
  CHECK(chunk_counts.calls == 0);
  CHECK(chunk_counts.destroyed == 1);
  REQUIRE(done.errors.size() == 1);
  CHECK(done.errors[0] == ENOMEM);
  CHECK(all_equal(buf, 0));
  CHECK(errno_of([&] { h.pread_structured(buf, 0, Chunk(&chunk_counts, &statuses)); }) == ENOMEM);
  CHECK(statuses.empty());
}

TEST_CASE("plugin: errors: pread_structured: a good read is one READ_DATA chunk") {
  nbd::Handle h;
  connect(h, {});
  auto buf = bytes(8192, 0xaa);
  Counts chunk_counts;
  std::vector<unsigned> statuses;
  h.pread_structured(buf, 0, Chunk(&chunk_counts, &statuses));
  REQUIRE(statuses.size() == 1);
  CHECK(statuses[0] == nbd::READ_DATA);
  CHECK(chunk_counts.destroyed == 1);
  CHECK(all_equal(buf, 0));
}

TEST_CASE("plugin: errors: EOVERFLOW on a read with DF -> EOVERFLOW") {
  nbd::Handle h;
  connect(h, {"error=pread:EOVERFLOW"});
  REQUIRE(h.can_df());
  auto buf = bytes(4096);
  Counts c;
  std::vector<unsigned> s;
  CHECK(errno_of([&] { h.pread_structured(buf, 0, Chunk(&c, &s), nbd::CMD_FLAG_DF); }) == EOVERFLOW);
  // Without DF the same failure is EINVAL.
  CHECK(errno_of([&] { h.pread_structured(buf, 0, Chunk(&c, &s)); }) == EINVAL);
  CHECK(errno_of([&] { h.pread(buf, 0); }) == EINVAL);
}

TEST_CASE("plugin: errors: a chunk callback failing fails the command with its errno") {
  nbd::Handle h;
  connect(h, {});
  auto buf = bytes(4096);
  int e = errno_of([&] {
    h.pread_structured(buf, 0, [](std::span<const std::uint8_t>, std::uint64_t, unsigned, int* err) {
      *err = EBADMSG;
      return -1;
    });
  });
  CHECK(e == EBADMSG);
  h.pread(buf, 0);
}
