// SPDX-License-Identifier: BSD-3-Clause
// Hostile servers against the client's resources: floods that must not
// grow memory without bound, and a server that stops reading.

#include "scenario.hpp"

#include <atomic>
#include <random>

using namespace hostile;

namespace {

constexpr std::uint64_t MiB = 1024 * 1024;

// Memory a flood may cost at most (generous: staging buffers, one maximal
// block status chunk decoded, allocator slack; the peer's own buffers count
// too, it runs in this process). AddressSanitizer keeps freed memory in
// quarantine instead of reusing it, which doubles what a vector that grew
// to one chunk's extents leaves behind.
#if defined(__SANITIZE_ADDRESS__)
constexpr std::uint64_t growth_bound = 128 * MiB;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr std::uint64_t growth_bound = 128 * MiB;
#else
constexpr std::uint64_t growth_bound = 64 * MiB;
#endif
#else
constexpr std::uint64_t growth_bound = 64 * MiB;
#endif

struct RssProbe {
  std::uint64_t peak0 = peak_rss(), now0 = current_rss();
  void check() const {
    const std::uint64_t peak1 = peak_rss(), now1 = current_rss();
    MESSAGE("peak RSS " << peak0 / MiB << " -> " << peak1 / MiB << " MiB, current RSS " << now0 / MiB
                        << " -> " << now1 / MiB << " MiB");
    CHECK(peak1 < peak0 + growth_bound);
    CHECK(now1 < now0 + growth_bound);
  }
};

} // namespace

TEST_SUITE_BEGIN("resources");

TEST_CASE("a flood of garbage") {
  RssProbe probe;
  std::mt19937_64 rng(42);
  Bytes garbage(1 * MiB);
  for (auto& b : garbage) b = static_cast<std::uint8_t>(rng());
  auto flood = [garbage](Conn& c) {
    for (int i = 0; i < 256; ++i) c.send(garbage); // stops at the client's hangup
    throw ScriptError("the client swallowed 256 MiB of garbage");
  };
  {
    INFO("instead of a greeting");
    check_connect_fails(flood, EPROTO);
  }
  {
    INFO("instead of an option reply");
    check_connect_fails(
        [flood](Conn& c) {
          c.greet_newstyle().expect_client_flags().expect_option(wire::opt_extended_headers);
          flood(c);
        },
        EPROTO);
  }
  {
    INFO("instead of a reply");
    check_command_fails(Export{}, [flood](Conn& c, const Request&) { flood(c); }, read_op(4096, 0),
                        ENOTCONN, EPROTO);
  }
  probe.check();
}

TEST_CASE("a flood of well-formed chunks that never finishes") {
  // Every chunk is valid on its own (ERROR_OFFSET without DONE, each
  // reported to the chunk callback), so the client keeps reading: memory
  // must stay flat while it does. After 128 MiB the server breaks the
  // protocol to end the test.
  RssProbe probe;
  std::uint64_t chunks_seen = 0;
  Peer p(
      [](Conn& c) {
        Export exp;
        if (!c.handshake(exp)) throw ScriptError("aborted");
        Request r = c.read_request();
        Bytes one;
        {
          Bytes payload;
          put32(payload, wire::nbd_eio);
          put16(payload, 8);
          put(payload, "bad disk");
          put64(payload, r.offset + 512);
          one.resize(wire::structured_reply_size);
          wire::encode_structured_reply(one, 0, wire::chunk_error_offset, r.cookie,
                                        static_cast<std::uint32_t>(payload.size()));
          one.insert(one.end(), payload.begin(), payload.end());
        }
        Bytes batch;
        while (batch.size() < 1 * MiB) batch.insert(batch.end(), one.begin(), one.end());
        for (int i = 0; i < 128; ++i) c.send(batch);
        c.send_u32(0xbadbad00).send(Bytes(16, 0));
      },
      30s, 300s);
  Counter k;
  {
    nbd::Handle h;
    p.connect(h);
    Bytes buf(4096);
    h.aio_pread_structured(
        buf, 0,
        [&](std::span<const std::uint8_t>, std::uint64_t, unsigned status, int*) {
          if (status == nbd::READ_ERROR) ++chunks_seen;
          return 0;
        },
        Counted(&k));
    CHECK(drive_until(h, [&] { return k.calls > 0; }, 280s));
    // The first error the command saw stays its error (as in libnbd).
    CHECK(k.errors == std::vector<int>{EIO});
    CHECK(h.get_error().value() == EPROTO);
  }
  CHECK(k.destroyed == 1);
  CHECK(p.finish() == "");
  MESSAGE(chunks_seen << " error chunks reported");
  CHECK(chunks_seen > 1000000);
  probe.check();
}

TEST_CASE("a flood of maximal block status chunks") {
  // Each chunk carries the most descriptors the client accepts (8 MiB):
  // decoding one is bounded work, and the next reuses the memory.
  RssProbe probe;
  constexpr std::uint64_t size = 1 << 20;
  constexpr std::size_t descriptors = (8 * MiB - 4) / 8; // the most one chunk may carry
  std::uint64_t extents_seen = 0;
  Peer p(
      [](Conn& c) {
        Export exp;
        exp.size = size;
        if (!c.handshake(exp)) throw ScriptError("aborted");
        Request r = c.read_request();
        const std::size_t n = descriptors; // of 1 byte each
        const auto len = static_cast<std::uint32_t>(4 + 8 * n);
        Bytes one(wire::structured_reply_size + len);
        wire::encode_structured_reply(one, 0, wire::chunk_block_status, r.cookie, len);
        wire::store32(one, wire::structured_reply_size, c.context_id("base:allocation"));
        for (std::size_t i = 0; i < n; ++i)
          wire::store32(one, wire::structured_reply_size + 4 + 8 * i, 1);
        for (int i = 0; i < 24; ++i) c.send(one);
        c.send_u32(0xbadbad00).send(Bytes(16, 0));
      },
      30s, 300s);
  Counter k;
  {
    nbd::Handle h;
    h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
    p.connect(h);
    h.aio_block_status_64(
        size, 0,
        [&](std::string_view, std::uint64_t, std::span<const nbd::Extent> e, int*) {
          extents_seen += e.size();
          return 0;
        },
        Counted(&k));
    CHECK(drive_until(h, [&] { return k.calls > 0; }, 280s));
    CHECK(k.errors == std::vector<int>{ENOTCONN});
    CHECK(h.get_error().value() == EPROTO);
  }
  CHECK(k.destroyed == 1);
  CHECK(p.finish() == "");
  MESSAGE(extents_seen << " extents reported");
  CHECK(extents_seen == 24 * descriptors);
  probe.check();
}

namespace {

/// A peer that reads the handshake and the first request header, then
/// stops reading until released; released, it either hangs up or resumes
/// serving (reading the rest of that first write).
struct StallingPeer {
  std::atomic<int> release{0}; // 1: hang up, 2: resume
  Export exp;
  Peer peer;

  StallingPeer()
      : peer([this](Conn& c) {
          exp.size = 64 * MiB;
          if (!c.handshake(exp)) throw ScriptError("aborted");
          Bytes h = c.recv(wire::request_size);
          auto req = wire::decode_request(h, false);
          if (!req) throw ScriptError("bad request");
          const auto until = std::chrono::steady_clock::now() + 30s;
          while (release == 0 && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(5ms);
          if (release != 2) {
            c.close();
            return;
          }
          Request r{req->flags, req->type, req->cookie, req->offset, req->length,
                    c.recv(static_cast<std::size_t>(req->length))};
          c.answer(exp, r);
          c.serve(exp);
        }) {}
};

constexpr int n_writes = 8;
constexpr std::size_t write_size = 4 * MiB;

/// Queues the writes and checks that they stall: nothing completes while
/// the server does not read.
void stall(nbd::Handle& h, std::vector<Bytes>& bufs, std::vector<Counter>& k) {
  for (int i = 0; i < n_writes; ++i)
    h.aio_pwrite(bufs[static_cast<std::size_t>(i)], static_cast<std::uint64_t>(i) * write_size,
                 Counted(&k[static_cast<std::size_t>(i)], 1));
  for (int i = 0; i < 10; ++i) h.poll(20);
  CHECK(h.aio_is_processing());
  CHECK(h.aio_in_flight() == n_writes);
  for (const auto& c : k) CHECK(c.calls == 0);
}

/// Index of the first command whose completion ran (k.size() if none).
std::size_t first_called(const std::vector<Counter>& k) {
  std::size_t i = 0;
  while (i < k.size() && k[i].calls == 0) ++i;
  for (std::size_t j = i; j < k.size(); ++j) CHECK(k[j].calls == 1); // a suffix
  return i;
}

void check_once(const std::vector<Counter>& k) {
  for (const auto& c : k) {
    CHECK(c.calls == 1);
    CHECK(c.destroyed == 1);
  }
}

} // namespace

TEST_CASE("a server that stops reading while the client writes") {
  std::vector<Bytes> bufs(n_writes, Bytes(write_size, 0x42));
  {
    INFO("the server hangs up");
    StallingPeer sp;
    std::vector<Counter> k(n_writes);
    {
      nbd::Handle h;
      sp.peer.connect(h);
      stall(h, bufs, k);
      sp.release = 1;
      CHECK(drive_until(h, [&] {
        return std::all_of(k.begin(), k.end(), [](const Counter& c) { return c.calls > 0; });
      }));
      CHECK(h.aio_is_dead());
      for (const auto& c : k) CHECK(c.errors == std::vector<int>{ENOTCONN});
    }
    check_once(k);
    CHECK(sp.peer.finish() == "");
  }
  {
    INFO("aio_disconnect(SHUTDOWN_ABANDON_PENDING), then the handle is closed");
    StallingPeer sp;
    std::vector<Counter> k(n_writes);
    {
      nbd::Handle h;
      sp.peer.connect(h);
      stall(h, bufs, k);
      h.aio_disconnect(nbd::SHUTDOWN_ABANDON_PENDING);
      // Every write not yet on the wire failed at once, with ENOTCONN; the
      // ones the kernel took (the last perhaps half) still wait for the
      // server, which does not read.
      const std::size_t on_wire = first_called(k);
      CHECK(on_wire >= 1);
      CHECK(on_wire < k.size());
      for (std::size_t i = on_wire; i < k.size(); ++i) CHECK(k[i].errors == std::vector<int>{ENOTCONN});
      for (int i = 0; i < 5; ++i) h.poll(20);
      CHECK(first_called(k) == on_wire);
    }
    // Closing the handle failed the rest.
    for (const auto& c : k) CHECK(c.errors == std::vector<int>{ENOTCONN});
    check_once(k);
    sp.release = 1;
    CHECK(sp.peer.finish() == "");
  }
  {
    INFO("shutdown(SHUTDOWN_ABANDON_PENDING) while the server resumes");
    StallingPeer sp;
    std::vector<Counter> k(n_writes);
    {
      nbd::Handle h;
      sp.peer.connect(h);
      stall(h, bufs, k);
      // The server resumes once shutdown() has abandoned the writes not on
      // the wire (the last one among them), while it waits for the others.
      std::thread resume([&] {
        const auto until = std::chrono::steady_clock::now() + 30s;
        while (k.back().calls == 0 && std::chrono::steady_clock::now() < until)
          std::this_thread::sleep_for(1ms);
        sp.release = 2;
      });
      h.shutdown(nbd::SHUTDOWN_ABANDON_PENDING);
      resume.join();
      CHECK(h.aio_is_closed());
    }
    check_once(k);
    CHECK(sp.peer.finish() == "");
    // The writes on the wire went through, the others failed.
    std::size_t ok = 0;
    while (ok < k.size() && k[ok].errors == std::vector<int>{0}) ++ok;
    CHECK(ok >= 1);
    CHECK(ok < k.size());
    for (std::size_t i = ok; i < k.size(); ++i) CHECK(k[i].errors == std::vector<int>{ENOTCONN});
    for (std::size_t i = 0; i < ok; ++i) {
      Bytes back(write_size);
      sp.exp.read(i * write_size, back);
      CHECK(back == bufs[i]);
    }
  }
  {
    INFO("the handle is closed");
    StallingPeer sp;
    std::vector<Counter> k(n_writes);
    {
      nbd::Handle h;
      sp.peer.connect(h);
      stall(h, bufs, k);
    }
    for (const auto& c : k) CHECK(c.errors == std::vector<int>{ENOTCONN});
    check_once(k);
    sp.release = 1;
    CHECK(sp.peer.finish() == "");
  }
}

TEST_SUITE_END();
