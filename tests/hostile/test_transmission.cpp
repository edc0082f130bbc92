// SPDX-License-Identifier: BSD-3-Clause
// Hostile servers in the transmission phase: replies and chunks that break
// the protocol, and connections that end too early.

#include "scenario.hpp"

using namespace hostile;

namespace {

constexpr std::uint16_t done = wire::reply_flag_done;

Export structured_export() { return Export{}; }
Export simple_export() {
  Export e;
  e.structured = false;
  return e;
}

/// The server answers the first request with a protocol error only the
/// offending command can be blamed for.
void offender(const std::function<void(Conn&, const Request&)>& m, const Op& op,
              const Setup& setup = {}, const Export& exp = structured_export()) {
  check_command_fails(exp, m, op, EPROTO, EPROTO, setup);
}

/// A violation that names no command we know of (bad magic, unknown
/// cookie): every command fails with ENOTCONN, the handle dies of EPROTO.
void no_offender(const std::function<void(Conn&, const Request&)>& m, const Op& op,
                 const Export& exp = structured_export()) {
  check_command_fails(exp, m, op, ENOTCONN, EPROTO);
}

/// The connection ends early: ENOTCONN everywhere.
void eof(const std::function<void(Conn&, const Request&)>& m, const Op& op,
         const Export& exp = structured_export()) {
  check_command_fails(exp, m, op, ENOTCONN, ENOTCONN);
}

Bytes zeros(std::size_t n) { return Bytes(n, 0); }

} // namespace

TEST_SUITE_BEGIN("transmission");

TEST_CASE("a reply with a bad magic") {
  no_offender([](Conn& c, const Request&) { c.send_u32(0xdeadbeef).send(zeros(28)); },
              read_op(512, 0));
  {
    INFO("a request magic sent back as a reply");
    no_offender([](Conn& c, const Request& r) {
      Bytes b(wire::request_size);
      wire::encode_request(b, {0, 0, r.cookie, 0, 512}, false);
      c.send(b);
    }, flush_op());
  }
}

TEST_CASE("replies with unknown cookies") {
  {
    INFO("simple reply");
    no_offender([](Conn& c, const Request& r) { c.simple_reply(r.cookie + 1000); }, flush_op(),
                simple_export());
  }
  {
    INFO("structured chunk");
    no_offender([](Conn& c, const Request& r) {
      c.structured_header(r.cookie ^ 0xffff000000000000ull, done, wire::chunk_none, 0);
    }, read_op(512, 0));
  }
  {
    INFO("cookie 0");
    no_offender([](Conn& c, const Request&) { c.simple_reply(0); }, flush_op());
  }
}

TEST_CASE("duplicate replies") {
  // The first reply completes the command; the second names a cookie that
  // is no longer in flight.
  struct Form {
    const char* what;
    std::function<void(Conn&, const Request&)> reply;
  };
  for (const Form& f :
       {Form{"simple reply twice", [](Conn& c, const Request& r) { c.simple_reply(r.cookie).simple_reply(r.cookie); }},
        Form{"a chunk after DONE", [](Conn& c, const Request& r) {
               c.done_chunk(r);
               c.done_chunk(r);
             }}}) {
    INFO(std::string(f.what));
    auto script = [&f](Conn& c) {
      Export exp;
      if (!c.handshake(exp)) throw ScriptError("aborted");
      Request r1 = c.read_request();
      Request r2 = c.read_request(); // the aio form queues both at once
      f.reply(c, r1);
      (void)r2;
    };
    {
      INFO("blocking: the next call meets the duplicate");
      Peer p([&f](Conn& c) {
        Export exp;
        if (!c.handshake(exp)) throw ScriptError("aborted");
        Request r1 = c.read_request();
        f.reply(c, r1);
        c.read_request(); // the second flush, never answered
      });
      {
        nbd::Handle h;
        p.connect(h);
        h.flush();
        // The duplicate may arrive with the first reply (the handle is then
        // dead already: EINVAL) or wait for the next call (ENOTCONN).
        const bool dead_already = h.aio_is_dead();
        CHECK(error_of([&] { h.flush(); }) == (dead_already ? EINVAL : ENOTCONN));
        CHECK(h.aio_is_dead());
        CHECK(h.get_error().value() == EPROTO);
      }
      CHECK(p.finish() == "");
    }
    {
      INFO("aio");
      Peer p(script);
      Counter k1, k2;
      {
        nbd::Handle h;
        p.connect(h);
        h.aio_flush(Counted(&k1, 1));
        h.aio_flush(Counted(&k2, 1));
        CHECK(drive_until(h, [&] { return k1.calls && k2.calls; }));
        CHECK(k1.errors == std::vector<int>{0});
        CHECK(k2.errors == std::vector<int>{ENOTCONN});
        CHECK(h.get_error().value() == EPROTO);
      }
      CHECK(k1.destroyed == 1);
      CHECK(k2.destroyed == 1);
      CHECK(p.finish() == "");
    }
  }
}

TEST_CASE("a structured reply when none was negotiated") {
  no_offender([](Conn& c, const Request& r) { c.structured_header(r.cookie, done, wire::chunk_none, 0); },
              read_op(512, 0), simple_export());
}

TEST_CASE("an extended reply header when none was negotiated") {
  {
    INFO("with structured replies");
    no_offender([](Conn& c, const Request& r) {
      c.extended_header(r.cookie, done, wire::chunk_none, r.offset, 0);
    }, read_op(512, 0));
  }
  {
    INFO("with simple replies only");
    no_offender([](Conn& c, const Request& r) {
      c.extended_header(r.cookie, done, wire::chunk_none, r.offset, 0);
    }, flush_op(), simple_export());
  }
}

TEST_CASE("a simple reply to NBD_CMD_READ after structured replies were negotiated") {
  offender([](Conn& c, const Request& r) { c.simple_reply(r.cookie, 0, zeros(512)); }, read_op(512, 0));
  {
    INFO("even an error");
    offender([](Conn& c, const Request& r) { c.simple_reply(r.cookie, wire::nbd_eio); }, read_op(512, 0));
  }
}

TEST_CASE("data chunks outside the request") {
  struct Case {
    const char* what;
    std::uint64_t offset;
    std::size_t len;
  };
  // The request is 4096 bytes at 8192.
  for (const Case& k : {Case{"before the request", 4096, 512}, Case{"after the request", 8192 + 4096, 512},
                        Case{"straddling the end", 8192 + 4000, 512},
                        Case{"straddling the start", 8192 - 8, 512},
                        Case{"offset wrapping around 2^64", ~0ull - 100, 512}}) {
    INFO(std::string(k.what));
    offender([k](Conn& c, const Request& r) { c.data_chunk(r, k.offset, zeros(k.len), true); },
             read_op(4096, 8192));
  }
  {
    INFO("a hole outside the request");
    offender([](Conn& c, const Request& r) { c.hole_chunk(r, r.offset + r.length, 512, true); },
             read_op(4096, 8192));
  }
  {
    INFO("an error offset outside the request");
    offender([](Conn& c, const Request& r) {
      c.error_chunk(r, wire::nbd_eio, "bad sector", true, r.offset + r.length);
    }, read_op(4096, 8192));
  }
}

TEST_CASE("chunk lengths far beyond the request are refused, not allocated") {
  const std::uint64_t before = current_rss();
  for (std::uint32_t len : {std::uint32_t{4096 + 8 + 1}, std::uint32_t{64u << 20},
                            std::uint32_t{0x7fffffff}, 0xffffffffu}) {
    CAPTURE(len);
    {
      INFO("OFFSET_DATA");
      offender([len](Conn& c, const Request& r) {
        c.structured_header(r.cookie, done, wire::chunk_offset_data, len);
        c.send_u64(r.offset);
      }, read_op(4096, 0));
    }
    {
      INFO("OFFSET_HOLE");
      offender([len](Conn& c, const Request& r) {
        c.structured_header(r.cookie, done, wire::chunk_offset_hole, len);
      }, read_op(4096, 0));
    }
    if (len > wire::error_prefix + wire::max_string + wire::error_offset_suffix) {
      INFO("ERROR");
      offender([len](Conn& c, const Request& r) {
        c.structured_header(r.cookie, done, wire::chunk_error, len);
      }, read_op(4096, 0));
    }
    if (len > 8u << 20) { // the client's bound on block status payloads
      INFO("BLOCK_STATUS");
      offender([len](Conn& c, const Request& r) {
        c.structured_header(r.cookie, done, wire::chunk_block_status, len - (len - 4) % 8);
      }, block_status_op(4096, 0), with_base_allocation());
    }
    {
      INFO("a hole claiming that many bytes");
      offender([len](Conn& c, const Request& r) { c.hole_chunk(r, r.offset, len, true); },
               read_op(4096, 0));
    }
  }
  CHECK(current_rss() < before + (64u << 20));
}

TEST_CASE("overlapping content chunks") {
  {
    INFO("two data chunks at the same offset that add up to the request");
    offender([](Conn& c, const Request& r) {
      c.data_chunk(r, r.offset, zeros(2048), false);
      c.data_chunk(r, r.offset, zeros(2048), true);
    }, read_op(4096, 0));
  }
  {
    INFO("a data chunk overlapping the tail of the previous one");
    offender([](Conn& c, const Request& r) {
      c.data_chunk(r, r.offset, zeros(2048), false);
      c.data_chunk(r, r.offset + 2047, zeros(512), false);
      c.done_chunk(r);
    }, read_op(4096, 0));
  }
  {
    INFO("a hole over data");
    offender([](Conn& c, const Request& r) {
      c.data_chunk(r, r.offset + 1024, zeros(1024), false);
      c.hole_chunk(r, r.offset, 4096, true);
    }, read_op(4096, 0));
  }
  {
    INFO("out of order, then overlapping");
    offender([](Conn& c, const Request& r) {
      c.data_chunk(r, r.offset + 3072, zeros(1024), false);
      c.data_chunk(r, r.offset, zeros(1024), false);
      c.hole_chunk(r, r.offset + 1024, 2048 + 1, true);
    }, read_op(4096, 0));
  }
}

TEST_CASE("a read reply that does not cover the request") {
  offender([](Conn& c, const Request& r) { c.data_chunk(r, r.offset, zeros(4000), true); },
           read_op(4096, 0));
  {
    INFO("DONE alone");
    offender([](Conn& c, const Request& r) { c.done_chunk(r); }, read_op(4096, 0));
  }
}

TEST_CASE("no DONE chunk before EOF") {
  eof([](Conn& c, const Request& r) {
    c.data_chunk(r, r.offset, zeros(4096), false);
    c.close();
  }, read_op(4096, 0));
  {
    // The command keeps the first error it saw (libnbd does the same).
    INFO("an error chunk without DONE, then EOF");
    check_command_fails(Export{}, [](Conn& c, const Request& r) {
      c.error_chunk(r, wire::nbd_eio, "io error", false);
      c.close();
    }, read_op(4096, 0), EIO, ENOTCONN);
  }
}

TEST_CASE("malformed chunks") {
  {
    INFO("an error chunk whose message overruns the chunk");
    offender([](Conn& c, const Request& r) {
      Bytes p;
      put32(p, wire::nbd_eio);
      put16(p, 200); // 200-byte message, 10 bytes present
      put(p, "0123456789");
      c.chunk(r.cookie, done, wire::chunk_error, p);
    }, read_op(512, 0));
  }
  {
    INFO("ERROR_OFFSET without room for its offset");
    offender([](Conn& c, const Request& r) {
      Bytes p;
      put32(p, wire::nbd_eio);
      put16(p, 4);
      put(p, "oops");
      put32(p, 0); // half an offset
      c.chunk(r.cookie, done, wire::chunk_error_offset, p);
    }, read_op(512, 0));
  }
  {
    INFO("an error chunk with error value 0");
    offender([](Conn& c, const Request& r) { c.error_chunk(r, 0, "no error", true); }, read_op(512, 0));
  }
  {
    INFO("an error chunk shorter than its fixed part");
    offender([](Conn& c, const Request& r) { c.chunk(r.cookie, done, wire::chunk_error, Bytes{0, 0, 0, 5}); },
             read_op(512, 0));
  }
  {
    INFO("an unknown non-error chunk type");
    offender([](Conn& c, const Request& r) { c.chunk(r.cookie, done, 0x77, zeros(8)); }, read_op(512, 0));
  }
  {
    INFO("NONE with a payload");
    offender([](Conn& c, const Request& r) { c.chunk(r.cookie, done, wire::chunk_none, zeros(4)); },
             flush_op());
  }
  {
    INFO("NONE without DONE");
    offender([](Conn& c, const Request& r) { c.chunk(r.cookie, 0, wire::chunk_none, {}); }, flush_op());
  }
  {
    INFO("OFFSET_DATA with no data");
    offender([](Conn& c, const Request& r) { c.data_chunk(r, r.offset, {}, true); }, read_op(512, 0));
  }
  {
    INFO("a zero-length hole");
    offender([](Conn& c, const Request& r) { c.hole_chunk(r, r.offset, 0, true); }, read_op(512, 0));
  }
  {
    INFO("OFFSET_DATA in reply to a write");
    offender([](Conn& c, const Request& r) { c.data_chunk(r, r.offset, zeros(512), true); },
             write_op(512, 0));
  }
  {
    INFO("BLOCK_STATUS in reply to a read");
    offender([](Conn& c, const Request& r) { c.block_status_chunk(r, 1, {{512, 0}}, true); },
             read_op(512, 0), with_base_allocation());
  }
}

TEST_CASE("bad block status replies") {
  struct Case {
    const char* what;
    std::vector<wire::Extent> extents;
    std::uint32_t flags = 0;
  };
  // The request: 64 KiB at 1 MiB - 128 KiB, in a 1 MiB export.
  const std::uint64_t off = (1 << 20) - (128 << 10), len = 64 << 10;
  for (const Case& k : {
           Case{"a zero-length extent", {{4096, 0}, {0, 3}, {len - 4096, 0}}},
           Case{"a zero-length extent alone", {{0, 0}}},
           Case{"extents past the end of the export", {{len, 0}, {128 << 10, 3}}},
           Case{"one extent past the end of the export", {{(128 << 10) + 4096, 0}}},
           Case{"an extent before the last one ending past the request", {{len + 4096, 0}, {4096, 3}}},
           Case{"two extents despite REQ_ONE", {{4096, 0}, {4096, 3}}, nbd::CMD_FLAG_REQ_ONE},
           Case{"one extent longer than the request despite REQ_ONE", {{len + 4096, 0}}, nbd::CMD_FLAG_REQ_ONE},
       }) {
    INFO(std::string(k.what));
    offender([k](Conn& c, const Request& r) { c.block_status_chunk(r, 1, k.extents, true); },
             block_status_op(len, off, k.flags), with_base_allocation());
  }
  {
    INFO("an unknown context id");
    offender([](Conn& c, const Request& r) { c.block_status_chunk(r, 99, {{4096, 0}}, true); },
             block_status_op(4096, 0), with_base_allocation());
  }
  {
    INFO("a payload that is not 4 + 8n bytes");
    offender([](Conn& c, const Request& r) {
      Bytes p;
      put32(p, 1);
      put32(p, 4096);
      put32(p, 0);
      put16(p, 0);
      c.chunk(r.cookie, done, wire::chunk_block_status, p);
    }, block_status_op(4096, 0), with_base_allocation());
  }
  {
    INFO("no descriptors at all");
    offender([](Conn& c, const Request& r) { c.block_status_chunk(r, 1, {}, true); },
             block_status_op(4096, 0), with_base_allocation());
  }
  {
    INFO("a simple reply");
    offender([](Conn& c, const Request& r) { c.simple_reply(r.cookie); }, block_status_op(4096, 0),
             with_base_allocation());
  }
  {
    INFO("DONE without any extents");
    offender([](Conn& c, const Request& r) { c.done_chunk(r); }, block_status_op(4096, 0),
             with_base_allocation());
  }
  {
    INFO("BLOCK_STATUS_EXT without extended headers");
    offender([](Conn& c, const Request& r) {
      Bytes p;
      put32(p, 1);
      put32(p, 1);
      put64(p, 4096);
      put64(p, 0);
      c.chunk(r.cookie, done, wire::chunk_block_status_ext, p);
    }, block_status64_op(4096, 0), with_base_allocation());
  }
}

TEST_CASE("EOF mid-header and mid-payload") {
  {
    INFO("in a simple reply header");
    eof([](Conn& c, const Request& r) {
      Bytes b(wire::simple_reply_size);
      wire::encode_simple_reply(b, 0, r.cookie);
      c.send(std::span<const std::uint8_t>(b).first(9));
      c.close();
    }, flush_op(), simple_export());
  }
  {
    INFO("after the reply magic");
    eof([](Conn& c, const Request&) {
      c.send_u32(wire::structured_reply_magic);
      c.close();
    }, read_op(512, 0));
  }
  {
    INFO("in a simple read's payload");
    eof([](Conn& c, const Request& r) {
      c.simple_reply(r.cookie, 0, zeros(100 * 1024));
      c.close();
    }, read_op(256 * 1024, 0), simple_export());
  }
  {
    INFO("in an OFFSET_DATA chunk's offset");
    eof([](Conn& c, const Request& r) {
      c.structured_header(r.cookie, done, wire::chunk_offset_data, 8 + 4096);
      c.send_u32(0);
      c.close();
    }, read_op(4096, 0));
  }
  {
    INFO("in an OFFSET_DATA chunk's data");
    eof([](Conn& c, const Request& r) {
      c.structured_header(r.cookie, done, wire::chunk_offset_data, 8 + 200000);
      c.send_u64(r.offset);
      c.send(zeros(70000));
      c.close();
    }, read_op(200000, 0));
  }
  {
    INFO("in an error chunk");
    eof([](Conn& c, const Request& r) {
      c.structured_header(r.cookie, done, wire::chunk_error, 6 + 100);
      c.send_u32(wire::nbd_eio).send_u16(100).send(zeros(50));
      c.close();
    }, read_op(512, 0));
  }
  {
    INFO("before any reply");
    eof([](Conn& c, const Request&) { c.close(); }, write_op(4096, 0));
  }
}

TEST_CASE("the server's own errors reach the caller with their errno") {
  // Not violations: the command fails with the server's errno and the
  // connection carries on.
  struct Case {
    const char* what;
    std::function<void(Conn&, const Request&)> reply;
    Op op;
    int want;
  };
  std::vector<Case> cases{
      {"simple reply EPERM", [](Conn& c, const Request& r) { c.simple_reply(r.cookie, wire::nbd_eperm); },
       write_op(512, 0), EPERM},
      {"ERROR chunk ENOSPC",
       [](Conn& c, const Request& r) { c.error_chunk(r, wire::nbd_enospc, "disk full", true); },
       read_op(512, 0), ENOSPC},
      {"ERROR_OFFSET chunk EIO, then DONE",
       [](Conn& c, const Request& r) {
         c.data_chunk(r, r.offset, zeros(512), false);
         c.error_chunk(r, wire::nbd_eio, "bad sector", false, r.offset + 512);
         c.done_chunk(r);
       },
       read_op(1024, 0), EIO},
      {"an unknown error value maps to EINVAL",
       [](Conn& c, const Request& r) { c.simple_reply(r.cookie, 0x1234); }, flush_op(), EINVAL},
      {"an unknown error chunk type still carries its error",
       [](Conn& c, const Request& r) {
         Bytes p;
         put32(p, wire::nbd_eshutdown);
         put16(p, 0);
         c.chunk(r.cookie, done, wire::chunk_error_bit | 0x55, p);
       },
       read_op(512, 0), ESHUTDOWN},
  };
  for (const Case& k : cases) {
    INFO(std::string(k.what));
    auto script = [&k](Conn& c) {
      Export exp;
      if (!c.handshake(exp)) throw ScriptError("aborted");
      Request r = c.read_request();
      k.reply(c, r);
      c.serve(exp);
    };
    {
      INFO("blocking");
      Peer p(script);
      {
        nbd::Handle h;
        p.connect(h);
        CHECK(error_of([&] { k.op.blocking(h); }) == k.want);
        CHECK(h.aio_is_ready());
        Bytes buf(512);
        h.pread(buf, 0); // the connection still works
        h.shutdown();
      }
      CHECK(p.finish() == "");
    }
    {
      INFO("aio");
      Peer p(script);
      Counter k1, k2;
      Bytes buf(512);
      {
        nbd::Handle h;
        p.connect(h);
        k.op.aio(h, Counted(&k1, 1));
        h.aio_pread(buf, 0, Counted(&k2, 1));
        CHECK(drive_until(h, [&] { return k1.calls && k2.calls; }));
        CHECK(k1.errors == std::vector<int>{k.want});
        CHECK(k2.errors == std::vector<int>{0});
        CHECK(h.aio_is_ready());
        h.shutdown();
      }
      CHECK(k1.destroyed == 1);
      CHECK(k2.destroyed == 1);
      CHECK(p.finish() == "");
    }
  }
}

TEST_CASE("an early reply to a write whose payload is still on its way") {
  // The server answers from the request header alone (an error), then
  // reads the payload. The command completes once, after its payload went
  // out, and the connection carries on.
  auto script = [](Conn& c) {
    Export exp;
    exp.size = 64 << 20;
    if (!c.handshake(exp)) throw ScriptError("aborted");
    Bytes h = c.recv(wire::request_size);
    auto r = wire::decode_request(h, false);
    if (!r || r->type != wire::cmd_write) throw ScriptError("expected a write");
    c.simple_reply(r->cookie, wire::nbd_enospc);
    c.recv(static_cast<std::size_t>(r->length));
    c.serve(exp);
  };
  Bytes big(8 << 20, 0x33);
  {
    INFO("blocking");
    Peer p(script);
    {
      nbd::Handle h;
      p.connect(h);
      CHECK(error_of([&] { h.pwrite(big, 0); }) == ENOSPC);
      CHECK(h.aio_is_ready());
      Bytes b(512);
      h.pread(b, 0);
      h.shutdown();
    }
    CHECK(p.finish() == "");
  }
  {
    INFO("aio");
    Peer p(script);
    Counter k;
    {
      nbd::Handle h;
      p.connect(h);
      h.aio_pwrite(big, 0, Counted(&k, 1));
      CHECK(drive_until(h, [&] { return k.calls > 0; }));
      CHECK(k.errors == std::vector<int>{ENOSPC});
      CHECK(h.aio_in_flight() == 0);
      h.shutdown();
    }
    CHECK(k.calls == 1);
    CHECK(k.destroyed == 1);
    CHECK(p.finish() == "");
  }
}

TEST_CASE("scattered chunks beyond the client's bound on tracked ranges") {
  // 1-byte data chunks at every other offset: each is a new disjoint range.
  offender([](Conn& c, const Request& r) {
    Bytes batch;
    for (std::uint64_t i = 0; i < 8192; ++i) {
      Bytes p;
      put64(p, r.offset + 2 * i);
      p.push_back(0xab);
      Bytes hdr(wire::structured_reply_size);
      wire::encode_structured_reply(hdr, 0, wire::chunk_offset_data, r.cookie,
                                    static_cast<std::uint32_t>(p.size()));
      batch.insert(batch.end(), hdr.begin(), hdr.end());
      batch.insert(batch.end(), p.begin(), p.end());
    }
    c.send(batch);
  }, read_op(64 * 1024, 0));
}

TEST_CASE("callbacks of a dying handle may call into it") {
  // A completion that runs because the server broke the protocol tries to
  // queue a new command: refused (EINVAL, the handle is dead), no crash,
  // and every completion still runs exactly once.
  Peer p([](Conn& c) {
    Export exp;
    if (!c.handshake(exp)) throw ScriptError("aborted");
    Request r = c.read_request();
    c.data_chunk(r, r.offset + 100000, Bytes(16), true); // outside the request
  });
  Counter k1, k2;
  std::vector<int> requeue;
  Bytes b1(512), b2(512), b3(512);
  {
    nbd::Handle h;
    p.connect(h);
    auto requeueing = [&](Counter* k) {
      return [&, k](int* err) {
        ++k->calls;
        k->errors.push_back(*err);
        std::error_code ec;
        h.aio_pread(b3, 0, {}, 0, ec);
        requeue.push_back(ec.value());
        CHECK(error_of([&] { h.poll(0); }) == EDEADLK);
        return 1;
      };
    };
    h.aio_pread(b1, 0, requeueing(&k1));
    h.aio_pread(b2, 0, requeueing(&k2));
    CHECK(drive_until(h, [&] { return k1.calls && k2.calls; }));
    CHECK(h.aio_is_dead());
  }
  CHECK(k1.errors == std::vector<int>{EPROTO});
  CHECK(k2.errors == std::vector<int>{ENOTCONN});
  CHECK(requeue == std::vector<int>{EINVAL, EINVAL});
  CHECK(p.finish() == "");
}

TEST_SUITE_END();
