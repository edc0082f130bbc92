// SPDX-License-Identifier: BSD-3-Clause
// Every command and flag against nbdkit's memory plugin, which supports
// them all; shutdown and disconnect.

#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <string>
#include <vector>

using nbdtest::CallCounter;
using nbdtest::CountedCompletion;
using nbdtest::error_of;

namespace {

constexpr std::uint64_t kib = 1024;
constexpr std::uint64_t mib = 1024 * 1024;

std::vector<std::uint8_t> filled(std::size_t n, std::uint8_t seed) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(seed + i * 13 + (i >> 9));
  return v;
}

bool all_zero(const std::vector<std::uint8_t>& v) {
  return std::all_of(v.begin(), v.end(), [](std::uint8_t b) { return b == 0; });
}

struct Ext {
  std::uint64_t length;
  std::uint32_t flags;
};

std::vector<Ext> block_status(nbd::Handle& h, std::uint64_t count, std::uint64_t offset,
                              std::uint32_t flags = 0) {
  std::vector<Ext> out;
  h.block_status(count, offset,
                 [&](std::string_view ctx, std::uint64_t off, std::span<std::uint32_t> e, int*) {
                   CHECK(ctx == nbd::CONTEXT_BASE_ALLOCATION);
                   CHECK(off == offset);
                   REQUIRE(e.size() % 2 == 0);
                   for (std::size_t i = 0; i < e.size(); i += 2) out.push_back({e[i], e[i + 1]});
                   return 0;
                 },
                 flags);
  return out;
}

// The memory plugin with base:allocation. Serial (-t 1) where a test
// checks that commands queued before NBD_CMD_DISC succeed: a multi-threaded
// nbdkit answers ESHUTDOWN to requests it read before DISC but ran after.
void connect_memory(nbd::Handle& h, const std::string& size = "1M", bool serial = false) {
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  if (serial)
    nbdtest::connect(h, {"-t", "1", "memory", size});
  else
    nbdtest::connect(h, {"memory", size});
  REQUIRE(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
}

} // namespace

TEST_CASE("pwrite and pread, with and without FUA") {
  nbd::Handle h;
  connect_memory(h);
  REQUIRE(h.can_fua());
  auto a = filled(128 * kib, 1), b = filled(4 * kib, 99);
  h.pwrite(a, 0);
  h.pwrite(b, 512 * kib, nbd::CMD_FLAG_FUA);
  std::vector<std::uint8_t> r(128 * kib);
  h.pread(r, 0);
  CHECK(r == a);
  std::vector<std::uint8_t> r2(4 * kib);
  h.pread(r2, 512 * kib);
  CHECK(r2 == b);
  // Unwritten space reads as zeros.
  h.pread(r2, 900 * kib);
  CHECK(all_zero(r2));
  // The last byte of the export.
  std::vector<std::uint8_t> one{0xee}, got(1);
  h.pwrite(one, mib - 1);
  h.pread(got, mib - 1);
  CHECK(got == one);
  CHECK(h.stats_bytes_sent() > 128 * kib);
  CHECK(h.stats_bytes_received() > 128 * kib);
  CHECK(h.stats_chunks_sent() > 0);
  CHECK(h.stats_chunks_received() > 0);
}

TEST_CASE("pread_structured: chunks cover the request exactly once, data and holes") {
  nbd::Handle h;
  connect_memory(h);
  REQUIRE(h.get_structured_replies_negotiated());
  auto data = filled(4 * kib, 7);
  h.pwrite(data, 64 * kib);

  std::vector<std::uint8_t> buf(256 * kib, 0xcc);
  std::vector<int> seen(buf.size(), 0);
  int data_chunks = 0, hole_chunks = 0;
  h.pread_structured(buf, 0, [&](std::span<const std::uint8_t> sub, std::uint64_t off,
                                 unsigned status, int* err) {
    CHECK(*err == 0);
    REQUIRE(off + sub.size() <= buf.size());
    // The span is the caller's buffer at that offset.
    CHECK(sub.data() == buf.data() + off);
    for (std::size_t i = 0; i < sub.size(); ++i) ++seen[off + i];
    if (status == nbd::READ_DATA) {
      ++data_chunks;
    } else if (status == nbd::READ_HOLE) {
      ++hole_chunks;
      CHECK(std::all_of(sub.begin(), sub.end(), [](std::uint8_t x) { return x == 0; }));
    } else {
      FAIL("unexpected chunk status " << status);
    }
    return 0;
  });
  CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  CHECK(data_chunks >= 1);
  // nbdkit 1.32 sends every read as one OFFSET_DATA chunk (holes come from
  // other servers; the engine's unit tests and the interop suite cover them).
  CHECK(data_chunks + hole_chunks >= 1);
  CHECK(std::equal(data.begin(), data.end(), buf.begin() + 64 * kib));
  CHECK(std::all_of(buf.begin(), buf.begin() + 64 * kib, [](std::uint8_t x) { return x == 0; }));

  SUBCASE("with DF the reply is one data chunk") {
    REQUIRE(h.can_df());
    int chunks = 0;
    h.pread_structured(buf, 0, [&](std::span<const std::uint8_t> sub, std::uint64_t off,
                                   unsigned status, int*) {
      ++chunks;
      CHECK(off == 0);
      CHECK(sub.size() == buf.size());
      CHECK(status == nbd::READ_DATA);
      return 0;
    }, nbd::CMD_FLAG_DF);
    CHECK(chunks == 1);
  }
  SUBCASE("a chunk callback returning -1 fails the command with its error") {
    int err = error_of([&] {
      h.pread_structured(buf, 0, [](std::span<const std::uint8_t>, std::uint64_t, unsigned,
                                    int* e) {
        *e = EBADMSG;
        return -1;
      });
    });
    CHECK(err == EBADMSG);
    // The connection is fine.
    h.pread(buf, 0);
  }
}

TEST_CASE("flush, trim, cache") {
  nbd::Handle h;
  connect_memory(h);
  REQUIRE(h.can_flush());
  REQUIRE(h.can_trim());
  REQUIRE(h.can_cache());
  auto data = filled(256 * kib, 3);
  h.pwrite(data, 0);
  h.flush();
  h.cache(256 * kib, 0);
  h.trim(128 * kib, 64 * kib);
  h.trim(64 * kib, 512 * kib, nbd::CMD_FLAG_FUA);
  std::vector<std::uint8_t> r(256 * kib);
  h.pread(r, 0);
  // The memory plugin reads trimmed space as zeros.
  CHECK(std::equal(r.begin(), r.begin() + 64 * kib, data.begin()));
  CHECK(std::all_of(r.begin() + 64 * kib, r.begin() + 192 * kib, [](auto x) { return x == 0; }));
  CHECK(std::equal(r.begin() + 192 * kib, r.end(), data.begin() + 192 * kib));
  CHECK(error_of([&] { h.flush(nbd::CMD_FLAG_NO_HOLE); }) == EINVAL);
}

TEST_CASE("zero, with NO_HOLE and FAST_ZERO") {
  nbd::Handle h;
  connect_memory(h);
  REQUIRE(h.can_zero());
  auto data = filled(256 * kib, 5);
  std::vector<std::uint8_t> r(256 * kib);

  h.pwrite(data, 0);
  h.zero(64 * kib, 0);
  h.zero(64 * kib, 64 * kib, nbd::CMD_FLAG_NO_HOLE);
  h.zero(64 * kib, 128 * kib, nbd::CMD_FLAG_FUA);
  h.pread(r, 0);
  CHECK(std::all_of(r.begin(), r.begin() + 192 * kib, [](auto x) { return x == 0; }));
  CHECK(std::equal(r.begin() + 192 * kib, r.end(), data.begin() + 192 * kib));

  // nbdkit 1.32 aborts on FAST_ZERO it did not advertise: only send it when
  // can_fast_zero() says so. The memory plugin zeroes fast.
  REQUIRE(h.can_fast_zero());
  h.pwrite(data, 0);
  int err = error_of([&] { h.zero(64 * kib, 192 * kib, nbd::CMD_FLAG_FAST_ZERO); });
  // A server may always refuse a fast zero with ENOTSUP; memory does not.
  CHECK((err == 0 || err == ENOTSUP));
  if (err == 0) {
    h.pread(r, 0);
    CHECK(std::all_of(r.begin() + 192 * kib, r.end(), [](auto x) { return x == 0; }));
  }
}

TEST_CASE("FAST_ZERO is refused on the client side when the server lacks it") {
  nbdtest::TempDir dir;
  nbdtest::make_file(dir.file("disk"), mib);
  nbd::Handle h;
  h.set_export_name("disk");
  nbdtest::connect(h, {"file", "dir=" + dir.path()});
  REQUIRE(h.can_zero());
  REQUIRE_FALSE(h.can_fast_zero());
  CHECK(error_of([&] { h.zero(4096, 0, nbd::CMD_FLAG_FAST_ZERO); }) == EINVAL);
  // Nothing went to the server: the connection still works.
  h.zero(4096, 0);
}

TEST_CASE("block_status and block_status_64, with REQ_ONE") {
  nbd::Handle h;
  connect_memory(h);
  auto data = filled(64 * kib, 9);
  h.pwrite(data, 0);
  h.pwrite(data, 512 * kib);

  auto ext = block_status(h, mib, 0);
  REQUIRE(!ext.empty());
  std::uint64_t total = 0;
  for (auto& e : ext) total += e.length;
  CHECK(total == mib);
  CHECK(ext[0].length == 64 * kib);
  CHECK(ext[0].flags == 0);
  CHECK(ext[1].flags == (nbd::STATE_HOLE | nbd::STATE_ZERO));

  auto one = block_status(h, mib, 0, nbd::CMD_FLAG_REQ_ONE);
  REQUIRE(one.size() == 1);
  CHECK(one[0].length == 64 * kib);
  CHECK(one[0].flags == 0);
  one = block_status(h, 256 * kib, 128 * kib, nbd::CMD_FLAG_REQ_ONE);
  REQUIRE(one.size() == 1);
  CHECK(one[0].flags == (nbd::STATE_HOLE | nbd::STATE_ZERO));
  CHECK(one[0].length <= 384 * kib);

  std::vector<nbd::Extent> ext64;
  h.block_status_64(mib, 0, [&](std::string_view ctx, std::uint64_t off,
                                std::span<const nbd::Extent> e, int*) {
    CHECK(ctx == nbd::CONTEXT_BASE_ALLOCATION);
    CHECK(off == 0);
    ext64.insert(ext64.end(), e.begin(), e.end());
    return 0;
  });
  REQUIRE(ext64.size() == ext.size());
  for (std::size_t i = 0; i < ext.size(); ++i) {
    CHECK(ext64[i].length == ext[i].length);
    CHECK(ext64[i].flags == ext[i].flags);
  }
  ext64.clear();
  h.block_status_64(mib, 0, [&](std::string_view, std::uint64_t, std::span<const nbd::Extent> e,
                                int*) {
    ext64.insert(ext64.end(), e.begin(), e.end());
    return 0;
  }, nbd::CMD_FLAG_REQ_ONE);
  CHECK(ext64.size() == 1);

  // Trimmed space becomes a hole again.
  h.trim(64 * kib, 512 * kib);
  one = block_status(h, 64 * kib, 512 * kib, nbd::CMD_FLAG_REQ_ONE);
  REQUIRE(one.size() == 1);
  CHECK((one[0].flags & nbd::STATE_ZERO) != 0);

  SUBCASE("an extent callback returning -1 fails the command") {
    int err = error_of([&] {
      h.block_status(mib, 0, [](std::string_view, std::uint64_t, std::span<std::uint32_t>,
                                int* e) {
        *e = ENOMEDIUM;
        return -1;
      });
    });
    CHECK(err == ENOMEDIUM);
  }
}

TEST_CASE("aio_ forms of every command, completion callbacks with *error == 0") {
  nbd::Handle h;
  connect_memory(h);
  CallCounter c;
  auto data = filled(64 * kib, 11);
  std::vector<std::uint8_t> r(64 * kib);
  std::vector<std::uint64_t> cookies;
  cookies.push_back(h.aio_pwrite(data, 0, CountedCompletion(&c)));
  cookies.push_back(h.aio_pwrite(data, 64 * kib, CountedCompletion(&c), nbd::CMD_FLAG_FUA));
  cookies.push_back(h.aio_flush(CountedCompletion(&c)));
  cookies.push_back(h.aio_trim(4 * kib, 256 * kib, CountedCompletion(&c)));
  cookies.push_back(h.aio_cache(64 * kib, 0, CountedCompletion(&c)));
  cookies.push_back(h.aio_zero(4 * kib, 300 * kib, CountedCompletion(&c), nbd::CMD_FLAG_NO_HOLE));
  int extents = 0;
  cookies.push_back(h.aio_block_status(
      mib, 0,
      [&](std::string_view, std::uint64_t, std::span<std::uint32_t>, int*) {
        ++extents;
        return 0;
      },
      CountedCompletion(&c)));
  cookies.push_back(h.aio_block_status_64(
      mib, 0,
      [&](std::string_view, std::uint64_t, std::span<const nbd::Extent>, int*) {
        ++extents;
        return 0;
      },
      CountedCompletion(&c)));
  for (std::size_t i = 1; i < cookies.size(); ++i) CHECK(cookies[i] == cookies[i - 1] + 1);
  while (h.aio_in_flight() > 0) h.poll(-1);
  CHECK(c.calls == 8);
  CHECK(c.destroyed == 8);
  CHECK(std::all_of(c.errors.begin(), c.errors.end(), [](int e) { return e == 0; }));
  CHECK(extents == 2);
  // They retired themselves (the callbacks returned 1).
  for (auto ck : cookies) CHECK(error_of([&] { h.aio_command_completed(ck); }) == EINVAL);

  // The reads see the writes (commands on one connection: ordering is the
  // server's business, so the reads go after the writes completed).
  auto ck = h.aio_pread(r, 0);
  while (!h.aio_command_completed(ck)) h.poll(-1);
  CHECK(r == data);
  std::uint64_t covered = 0;
  ck = h.aio_pread_structured(r, 64 * kib, [&](std::span<const std::uint8_t> sub, std::uint64_t,
                                                unsigned, int*) {
    covered += sub.size();
    return 0;
  });
  while (!h.aio_command_completed(ck)) h.poll(-1);
  CHECK(covered == r.size());
  CHECK(r == data);
}

TEST_CASE("server errors reach the caller and the connection survives") {
  nbd::Handle h;
  nbdtest::connect(h, {"--filter=error", "memory", "1M", "error-pwrite=EIO",
                       "error-pwrite-rate=1", "error-trim=ENOSPC", "error-trim-rate=1"});
  std::vector<std::uint8_t> buf(4096, 1);
  CHECK(error_of([&] { h.pwrite(buf, 0); }) == EIO);
  CHECK(error_of([&] { h.trim(4096, 0); }) == ENOSPC);
  CallCounter c;
  h.aio_pwrite(buf, 0, CountedCompletion(&c));
  while (h.aio_in_flight() > 0) h.poll(-1);
  REQUIRE(c.calls == 1);
  CHECK(c.errors[0] == EIO);
  h.pread(buf, 0);
  CHECK(h.aio_is_ready());
}

TEST_CASE("shutdown waits for the commands in flight") {
  nbd::Handle h;
  connect_memory(h, "1M", true);
  CallCounter c;
  std::vector<std::vector<std::uint8_t>> bufs(16, filled(64 * kib, 1));
  for (std::size_t i = 0; i < bufs.size(); ++i)
    h.aio_pwrite(bufs[i], i * 64 * kib, CountedCompletion(&c));
  h.shutdown();
  CHECK(h.aio_is_closed());
  CHECK_FALSE(h.aio_is_dead());
  CHECK(c.calls == 16);
  CHECK(c.destroyed == 16);
  for (int e : c.errors) CHECK(e == 0);
  // Closed: commands are refused.
  CHECK(error_of([&] { h.pread(bufs[0], 0); }) == EINVAL);
  CHECK(error_of([&] { h.shutdown(0x1); }) == EINVAL);
}

TEST_CASE("shutdown(SHUTDOWN_ABANDON_PENDING) fails what was not sent") {
  // nbdkit's log filter records every write the server really did: each
  // must be one the client reported done, and each abandoned one must never
  // have reached the server.
  nbdtest::TempDir dir;
  const std::string log = dir.file("log");
  CallCounter c;
  constexpr int n = 16;
  {
    nbd::Handle h;
    // One server thread that takes 200 ms per write: while it sleeps it
    // reads nothing, so however fast the machine (or slow: 16 writes take
    // 3 s to go out), the tail of the queue is still unsent when the
    // shutdown comes.
    nbdtest::connect(h, {"-t", "1", "--filter=log", "--filter=delay", "memory", "64M",
                         "logfile=" + log, "delay-write=200ms"});
    // Big writes, so some are still unsent when the shutdown comes.
    auto data = filled(4 * mib, 2);
    for (int i = 0; i < n; ++i)
      h.aio_pwrite(data, static_cast<std::uint64_t>(i) * 4 * mib, CountedCompletion(&c));
    SUBCASE("before anything was driven: nothing goes out") {}
    SUBCASE("with the first writes on their way") { h.poll(0); }
    h.shutdown(nbd::SHUTDOWN_ABANDON_PENDING);
    CHECK(h.aio_is_closed());
    CHECK_FALSE(h.aio_is_dead());
    CHECK(c.calls == n);
    CHECK(c.destroyed == n);
  } // the handle reaps nbdkit: its log is complete
  int ok = 0, abandoned = 0;
  for (int e : c.errors) {
    if (e == 0) ++ok;
    else if (e == ENOTCONN) ++abandoned;
    else FAIL("unexpected error " << e);
  }
  CHECK(ok + abandoned == n);
  // The tail of the queue cannot have gone out.
  CHECK(abandoned > 0);
  std::ifstream in(log);
  std::string line;
  int server_writes = 0;
  while (std::getline(in, line))
    if (line.find(" Write id=") != std::string::npos) ++server_writes;
  CHECK(server_writes == ok);
}

TEST_CASE("aio_disconnect, then aio_is_closed") {
  nbd::Handle h;
  connect_memory(h, "1M", true);
  CallCounter c;
  std::vector<std::uint8_t> buf(64 * kib);
  h.aio_pread(buf, 0, CountedCompletion(&c));
  h.aio_disconnect();
  // No new commands once the disconnect is queued.
  CHECK(error_of([&] { h.aio_pread(buf, 0); }) == EINVAL);
  // A second disconnect request is harmless (libnbd).
  CHECK_NOTHROW(h.aio_disconnect());
  nbdtest::poll_loop(h, [&] { return h.aio_is_closed(); });
  CHECK(c.calls == 1);
  CHECK(c.errors.at(0) == 0);
  CHECK_FALSE(h.aio_is_dead());
  CHECK(error_of([&] { h.aio_pread(buf, 0); }) == EINVAL);
  CHECK(error_of([&] { h.aio_disconnect(); }) == EINVAL);
  CHECK(error_of([&] { h.aio_disconnect(0x2); }) == EINVAL);
}
