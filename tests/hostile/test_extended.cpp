// SPDX-License-Identifier: BSD-3-Clause
// Extended headers (NBD_OPT_EXTENDED_HEADERS, 64-bit requests and replies,
// BLOCK_STATUS_EXT): the peer as a conforming server, end to end, since no
// installed server speaks them; then as a hostile one.

#include "scenario.hpp"

#include "../common/checks.hpp"

#include <numeric>

using namespace hostile;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB, TiB = 1024 * GiB;

Export extended_export(std::uint64_t size = 16 * TiB) {
  Export e;
  e.extended = true;
  e.size = size;
  return e;
}

Bytes pattern(std::size_t n, std::uint8_t seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(seed + i * 7 + (i >> 9));
  return b;
}

} // namespace

TEST_SUITE_BEGIN("extended");

TEST_CASE("extended headers end to end against the conforming peer") {
  Export exp = extended_export();
  Peer p([&exp](Conn& c) {
    if (!c.handshake(exp)) throw ScriptError("aborted");
    if (!c.extended()) throw ScriptError("the client did not ask for extended headers");
    c.serve(exp);
  });
  {
    nbd::Handle h;
    h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
    p.connect(h);
    CHECK(h.get_extended_headers_negotiated());
    CHECK(h.get_structured_replies_negotiated());
    CHECK(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
    CHECK(h.get_size() == static_cast<std::int64_t>(16 * TiB));

    // Writes, some past 4 GiB (their offsets need all 64 bits), some large
    // enough to take the transports' direct receive path when read back.
    const std::vector<nbdtest::Write> writes{{0, pattern(4 * KiB, 1)},
                                             {5 * GiB, pattern(1 * MiB, 2)},
                                             {8 * GiB + 4 * KiB, pattern(4 * KiB, 3)},
                                             {15 * TiB + 512, pattern(3 * KiB + 100, 4)}};
    nbdtest::write_and_read_back(h, writes);

    // A structured read over data and holes: chunks arrive as the peer
    // split them, and the bytes are right.
    {
      Bytes buf(3 * MiB);
      std::vector<std::pair<unsigned, std::uint64_t>> chunks;
      h.pread_structured(buf, 5 * GiB - 1 * MiB,
                         [&](std::span<const std::uint8_t> sub, std::uint64_t off, unsigned status, int*) {
                           chunks.emplace_back(status, off);
                           CHECK(sub.size() > 0);
                           return 0;
                         });
      CHECK(chunks == std::vector<std::pair<unsigned, std::uint64_t>>{
                          {nbd::READ_HOLE, 5 * GiB - 1 * MiB},
                          {nbd::READ_DATA, 5 * GiB},
                          {nbd::READ_HOLE, 5 * GiB + 1 * MiB}});
      CHECK(std::all_of(buf.begin(), buf.begin() + MiB, [](auto b) { return b == 0; }));
      CHECK(Bytes(buf.begin() + MiB, buf.begin() + 2 * MiB) == writes[1].data);
      CHECK(std::all_of(buf.begin() + 2 * MiB, buf.end(), [](auto b) { return b == 0; }));
    }

    // block_status_64 over the whole 16 TiB export: extents far beyond
    // 4 GiB, in one request whose length needs 64 bits.
    {
      std::vector<nbd::Extent> got;
      std::string ctx;
      std::uint64_t at = 1;
      h.block_status_64(16 * TiB, 0,
                        [&](std::string_view name, std::uint64_t off, std::span<const nbd::Extent> e, int*) {
                          ctx = name;
                          at = off;
                          got.assign(e.begin(), e.end());
                          return 0;
                        });
      const std::uint64_t hole = nbd::STATE_HOLE | nbd::STATE_ZERO;
      std::vector<std::pair<std::uint64_t, std::uint64_t>> want{
          {4 * KiB, 0},
          {5 * GiB - 4 * KiB, hole},
          {1 * MiB, 0},
          {3 * GiB - 1 * MiB + 4 * KiB, hole},
          {4 * KiB, 0},
          {15 * TiB - 8 * GiB - 8 * KiB, hole},
          {4 * KiB, 0}, // 15 TiB + 512 .. + 3 KiB + 612 lies in one block
          {1 * TiB - 4 * KiB, hole},
      };
      std::vector<std::pair<std::uint64_t, std::uint64_t>> have;
      for (const auto& e : got) have.emplace_back(e.length, e.flags);
      CHECK(ctx == nbd::CONTEXT_BASE_ALLOCATION);
      CHECK(at == 0);
      CHECK(have == want);
      std::uint64_t sum = 0;
      for (const auto& e : got) sum += e.length;
      CHECK(sum == 16 * TiB);
      CHECK(std::any_of(got.begin(), got.end(), [](const nbd::Extent& e) { return e.length > 4 * GiB; }));
    }

    // The 32-bit callback on the same connection sees lengths clamped
    // below 4 GiB, as libnbd does.
    {
      std::vector<std::uint32_t> got;
      h.block_status(8 * GiB, 4 * KiB,
                     [&](std::string_view, std::uint64_t, std::span<std::uint32_t> e, int*) {
                       got.assign(e.begin(), e.end());
                       return 0;
                     });
      REQUIRE(got.size() >= 2);
      CHECK(got[0] == 0xfffffe00u);
    }

    // REQ_ONE: a single extent, not past the request.
    {
      std::vector<nbd::Extent> got;
      h.block_status_64(
          6 * GiB, 5 * GiB + 4 * KiB,
          [&](std::string_view, std::uint64_t, std::span<const nbd::Extent> e, int*) {
            got.assign(e.begin(), e.end());
            return 0;
          },
          nbd::CMD_FLAG_REQ_ONE);
      REQUIRE(got.size() == 1);
      CHECK(got[0].length == 1 * MiB - 4 * KiB);
      CHECK(got[0].flags == 0);
    }

    // Commands without payload (answered with NONE chunks) and a zero over
    // more than 4 GiB, whose length only an extended request can carry.
    h.flush();
    h.cache(64 * KiB, 0);
    h.trim(4 * KiB, 0);
    h.zero(6 * GiB, 4 * GiB);
    Bytes back(1 * MiB);
    h.pread(back, 5 * GiB);
    CHECK(std::all_of(back.begin(), back.end(), [](auto b) { return b == 0; }));
    Bytes first(4 * KiB);
    h.pread(first, 0);
    CHECK(std::all_of(first.begin(), first.end(), [](auto b) { return b == 0; }));

    // aio forms, many in flight at once.
    {
      std::vector<Bytes> bufs;
      for (int i = 0; i < 32; ++i) bufs.push_back(pattern(64 * KiB, static_cast<std::uint8_t>(i)));
      Counter k;
      for (int i = 0; i < 32; ++i)
        h.aio_pwrite(bufs[static_cast<std::size_t>(i)], 6 * TiB + static_cast<std::uint64_t>(i) * 64 * KiB,
                     Counted(&k, 1));
      CHECK(drive_until(h, [&] { return k.calls == 32; }));
      CHECK(k.errors == std::vector<int>(32, 0));
      std::vector<Bytes> rd(32, Bytes(64 * KiB));
      Counter kr;
      for (int i = 0; i < 32; ++i)
        h.aio_pread(rd[static_cast<std::size_t>(i)], 6 * TiB + static_cast<std::uint64_t>(i) * 64 * KiB,
                    Counted(&kr, 1));
      CHECK(drive_until(h, [&] { return kr.calls == 32; }));
      CHECK(rd == bufs);
    }
    h.shutdown();
    CHECK(h.aio_is_closed());
  }
  CHECK(p.finish() == "");
}

TEST_CASE("extended headers in option mode") {
  Export exp = extended_export(1 * GiB);
  Peer p([&exp](Conn& c) {
    c.greet_newstyle().expect_client_flags();
    if (!c.negotiate(exp)) return;
    c.serve(exp);
  });
  {
    nbd::Handle h;
    h.set_opt_mode(true);
    h.set_request_extended_headers(false);
    h.set_request_structured_replies(false);
    p.connect(h);
    CHECK_FALSE(h.get_extended_headers_negotiated());
    CHECK(h.opt_extended_headers());
    CHECK(h.get_extended_headers_negotiated());
    CHECK(h.get_structured_replies_negotiated());
    h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
    h.opt_go();
    CHECK(h.aio_is_ready());
    CHECK(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
    Bytes w = pattern(8 * KiB, 9), r(8 * KiB);
    h.pwrite(w, 1 * GiB - 8 * KiB, nbd::CMD_FLAG_FUA);
    h.pread(r, 1 * GiB - 8 * KiB);
    CHECK(r == w);
    h.shutdown();
  }
  CHECK(p.finish() == "");
}

TEST_CASE("extended headers refused: the client falls back") {
  Export exp; // structured, not extended
  Peer p([&exp](Conn& c) {
    if (!c.handshake(exp)) return;
    c.serve(exp);
  });
  {
    nbd::Handle h;
    p.connect(h);
    CHECK_FALSE(h.get_extended_headers_negotiated());
    CHECK(h.get_structured_replies_negotiated());
    Bytes w = pattern(4 * KiB, 5), r(4 * KiB);
    h.pwrite(w, 0);
    h.pread(r, 0);
    CHECK(r == w);
    h.shutdown();
  }
  CHECK(p.finish() == "");
}

TEST_CASE("hostile extended replies") {
  const Export exp = extended_export(1 * TiB);
  auto offender = [&](const std::function<void(Conn&, const Request&)>& m, const Op& op,
                      const Setup& setup = {}) { check_command_fails(exp, m, op, EPROTO, EPROTO, setup); };
  auto no_offender = [&](const std::function<void(Conn&, const Request&)>& m, const Op& op) {
    check_command_fails(exp, m, op, ENOTCONN, EPROTO);
  };
  {
    INFO("a reply header whose offset is not the request's");
    offender([](Conn& c, const Request& r) {
      c.extended_header(r.cookie, wire::reply_flag_done, wire::chunk_none, r.offset + 1, 0);
    }, flush_op());
    offender([](Conn& c, const Request& r) {
      Bytes p;
      put64(p, r.offset);
      p.resize(8 + 4096);
      c.chunk(r.cookie, wire::reply_flag_done, wire::chunk_offset_data, p, r.offset ^ (1ull << 35));
    }, read_op(4096, 8 * GiB));
  }
  {
    INFO("a simple reply after extended headers were negotiated");
    no_offender([](Conn& c, const Request& r) { c.simple_reply(r.cookie); }, flush_op());
  }
  {
    INFO("a compact structured reply after extended headers were negotiated");
    no_offender([](Conn& c, const Request& r) {
      c.structured_header(r.cookie, wire::reply_flag_done, wire::chunk_none, 0);
    }, flush_op());
  }
  {
    INFO("a compact BLOCK_STATUS chunk after extended headers were negotiated");
    offender([](Conn& c, const Request& r) {
      Bytes p;
      put32(p, 1);
      put32(p, 4096);
      put32(p, 0);
      c.chunk(r.cookie, wire::reply_flag_done, wire::chunk_block_status, p, r.offset);
    }, block_status64_op(4096, 0), with_base_allocation());
  }
  {
    INFO("BLOCK_STATUS_EXT whose count does not match its length");
    offender([](Conn& c, const Request& r) {
      Bytes p;
      put32(p, 1);
      put32(p, 3); // says 3, carries 1
      put64(p, 4096);
      put64(p, 0);
      c.chunk(r.cookie, wire::reply_flag_done, wire::chunk_block_status_ext, p, r.offset);
    }, block_status64_op(4096, 0), with_base_allocation());
  }
  {
    INFO("64-bit extents past the end of the export");
    offender([](Conn& c, const Request& r) {
      c.block_status_chunk(r, 1, {{512 * GiB, 0}, {600 * GiB, 3}}, true);
    }, block_status64_op(1 * TiB, 0), with_base_allocation());
  }
  {
    INFO("a zero-length 64-bit extent");
    offender([](Conn& c, const Request& r) { c.block_status_chunk(r, 1, {{0, 0}}, true); },
             block_status64_op(1 * TiB, 0), with_base_allocation());
  }
  {
    INFO("chunk lengths up to 2^64-1 are refused, not allocated");
    const std::uint64_t before = current_rss();
    for (std::uint64_t len : {std::uint64_t{1} << 32, std::uint64_t{1} << 40, ~std::uint64_t{0}}) {
      CAPTURE(len);
      offender([len](Conn& c, const Request& r) {
        c.extended_header(r.cookie, wire::reply_flag_done, wire::chunk_offset_data, r.offset, len);
      }, read_op(4096, 0));
      offender([len](Conn& c, const Request& r) {
        c.extended_header(r.cookie, wire::reply_flag_done, wire::chunk_block_status_ext, r.offset,
                          len - (len - 8) % 16);
      }, block_status64_op(4096, 0), with_base_allocation());
      offender([len](Conn& c, const Request& r) {
        c.extended_header(r.cookie, wire::reply_flag_done, wire::chunk_error, r.offset, len);
      }, read_op(4096, 0));
    }
    CHECK(current_rss() < before + 64 * MiB);
  }
}

TEST_SUITE_END();
