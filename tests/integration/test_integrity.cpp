// SPDX-License-Identifier: BSD-3-Clause
// Data integrity: many random reads and writes in flight against nbdkit's
// memory plugin, checked against a shadow copy; large requests that take
// the direct-receive path.

#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

using nbdtest::error_of;

namespace {

constexpr std::uint64_t kib = 1024;
constexpr std::uint64_t mib = 1024 * 1024;

struct Op {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  bool write = false;
  bool done = false;
  int error = 0;
  std::vector<std::uint8_t> buf;
};

bool overlaps(const Op& a, std::uint64_t off, std::uint64_t len) {
  return a.offset < off + len && off < a.offset + a.length;
}

// Runs `total` random operations with up to `depth` in flight. An operation
// never overlaps one in flight unless both are reads, so every read has
// exactly one right answer: the shadow at the time it was issued.
void random_io(nbd::Handle& h, std::uint64_t size, int total, int depth, std::uint32_t seed,
               bool structured_reads) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> shadow(size, 0);
  std::vector<std::unique_ptr<Op>> inflight;
  int issued = 0, reads = 0, writes = 0, mismatches = 0;

  auto reap = [&] {
    for (auto it = inflight.begin(); it != inflight.end();) {
      Op& op = **it;
      if (!op.done) {
        ++it;
        continue;
      }
      REQUIRE(op.error == 0);
      if (!op.write &&
          std::memcmp(op.buf.data(), shadow.data() + op.offset, op.length) != 0)
        ++mismatches;
      it = inflight.erase(it);
    }
  };

  while (issued < total || !inflight.empty()) {
    reap();
    if (inflight.empty() && issued == total) break;
    if (issued == total || static_cast<int>(inflight.size()) >= depth) {
      h.poll(-1);
      continue;
    }
    auto op = std::make_unique<Op>();
    op->length = 1 + rng() % (256 * kib);
    op->offset = rng() % (size - op->length + 1);
    op->write = (rng() & 1) != 0;
    // Wait for conflicting operations rather than draw again, so the
    // sequence of operations depends on the seed alone.
    auto conflict = [&] {
      return std::any_of(inflight.begin(), inflight.end(), [&](const auto& o) {
        return (o->write || op->write) && overlaps(*o, op->offset, op->length);
      });
    };
    while (conflict()) {
      h.poll(-1);
      reap();
    }
    Op* p = op.get();
    auto done = [p](int* err) {
      p->done = true;
      p->error = *err;
      return 1;
    };
    if (op->write) {
      op->buf.resize(op->length);
      for (auto& b : op->buf) b = static_cast<std::uint8_t>(rng());
      std::memcpy(shadow.data() + op->offset, op->buf.data(), op->length);
      h.aio_pwrite(op->buf, op->offset, done);
      ++writes;
    } else {
      op->buf.assign(op->length, 0xa5);
      if (structured_reads) {
        h.aio_pread_structured(op->buf, op->offset,
                               [p](std::span<const std::uint8_t> sub, std::uint64_t off,
                                   unsigned status, int*) {
                                 // Each chunk lies inside the request, in the caller's buffer.
                                 CHECK(off >= p->offset);
                                 CHECK(off + sub.size() <= p->offset + p->length);
                                 CHECK(sub.data() == p->buf.data() + (off - p->offset));
                                 CHECK((status == nbd::READ_DATA || status == nbd::READ_HOLE));
                                 return 0;
                               },
                               done);
      } else {
        h.aio_pread(op->buf, op->offset, done);
      }
      ++reads;
    }
    inflight.push_back(std::move(op));
    ++issued;
  }
  CHECK(mismatches == 0);
  CHECK(reads > 0);
  CHECK(writes > 0);

  // Finally the whole disk, in 4 MiB pieces, against the shadow.
  std::vector<std::uint8_t> buf(4 * mib);
  for (std::uint64_t off = 0; off < size; off += buf.size()) {
    h.pread(buf, off);
    CHECK(std::memcmp(buf.data(), shadow.data() + off, buf.size()) == 0);
  }
}

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; i += 4) {
    std::uint32_t x = rng();
    std::memcpy(v.data() + i, &x, std::min<std::size_t>(4, n - i));
  }
  return v;
}

} // namespace

TEST_CASE("random reads and writes, 64 in flight, against a shadow copy") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "64M"});
  REQUIRE(h.get_size() == static_cast<std::int64_t>(64 * mib));
  random_io(h, 64 * mib, 1500, 64, 0x6e6264u, false);
}

TEST_CASE("reply batching: on by default, switchable while connected, same data either way") {
  nbd::Handle h;
  CHECK(h.get_reply_batching());
  h.set_reply_batching(false);
  CHECK_FALSE(h.get_reply_batching());
  nbdtest::connect(h, {"memory", "64M"});
  random_io(h, 64 * mib, 400, 64, 0x626174u, false);
  h.set_reply_batching(true); // takes effect with the next receive
  CHECK(h.get_reply_batching());
  h.zero(64 * mib, 0); // random_io's shadow starts all zero
  random_io(h, 64 * mib, 400, 64, 0x636874u, false);
}

TEST_CASE("random structured reads and writes, 64 in flight") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "64M"});
  REQUIRE(h.get_structured_replies_negotiated());
  random_io(h, 64 * mib, 800, 64, 0x637070u, true);
}

TEST_CASE("random reads and writes with simple replies only") {
  nbd::Handle h;
  h.set_request_structured_replies(false);
  nbdtest::connect(h, {"memory", "64M"});
  REQUIRE_FALSE(h.get_structured_replies_negotiated());
  random_io(h, 64 * mib, 800, 64, 0x73696du, false);
}

TEST_CASE("32 MiB writes and reads (the direct-receive path)") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "96M"});
  auto a = random_bytes(32 * mib, 1), b = random_bytes(32 * mib, 2);
  h.pwrite(a, 0);
  // Unaligned offset: the payload lands in the caller's buffer wherever it is.
  h.pwrite(b, 32 * mib + 4097);
  std::vector<std::uint8_t> r(32 * mib, 0);
  h.pread(r, 0);
  CHECK(r == a);
  h.pread(r, 32 * mib + 4097);
  CHECK(r == b);

  // The same, as structured reads.
  std::fill(r.begin(), r.end(), 0);
  std::uint64_t covered = 0;
  h.pread_structured(r, 0, [&](std::span<const std::uint8_t> sub, std::uint64_t off, unsigned,
                               int*) {
    CHECK(sub.data() == r.data() + off);
    covered += sub.size();
    return 0;
  });
  CHECK(covered == r.size());
  CHECK(r == a);

  // Several big ones in flight at once, reads and writes interleaved.
  std::vector<std::uint8_t> r2(32 * mib);
  int done = 0;
  auto cb = [&](int* err) {
    CHECK(*err == 0);
    ++done;
    return 1;
  };
  auto c = random_bytes(16 * mib, 3);
  std::fill(r.begin(), r.end(), 0);
  h.aio_pread(r, 0, cb);
  h.aio_pwrite(c, 80 * mib, cb);
  h.aio_pread(r2, 32 * mib + 4097, cb);
  while (done < 3) h.poll(-1);
  CHECK(r == a);
  CHECK(r2 == b);
  std::vector<std::uint8_t> rc(16 * mib);
  h.pread(rc, 80 * mib);
  CHECK(rc == c);

  // Past the end is refused, not sent.
  CHECK(error_of([&] { h.pread(r, 64 * mib + 1); }) == EINVAL);
  CHECK(h.aio_is_ready());
}

TEST_CASE("many small reads batched: 4 KiB x 1024 in flight") {
  nbd::Handle h;
  nbdtest::connect(h, {"pattern", "8M"});
  std::vector<std::uint8_t> buf(4 * mib);
  int done = 0;
  for (std::uint64_t i = 0; i < 1024; ++i)
    h.aio_pread(std::span<std::uint8_t>(buf).subspan(i * 4 * kib, 4 * kib), i * 4 * kib + 512,
                [&](int* err) {
                  CHECK(*err == 0);
                  ++done;
                  return 1;
                });
  while (done < 1024) h.poll(-1);
  int bad = 0;
  for (std::uint64_t i = 0; i < buf.size(); ++i)
    if (buf[i] != nbdtest::pattern_byte(i + 512)) ++bad;
  CHECK(bad == 0);
}
