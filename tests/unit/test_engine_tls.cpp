// SPDX-License-Identifier: BSD-3-Clause

// STARTTLS in the protocol engine, without sockets and without GnuTLS: a
// toy TLS session (a two-message "handshake", then every byte XORed) stands
// in for the real one, so the tests see exactly which bytes went out in
// plaintext, which were encrypted, and what the engine decides when the
// server refuses, fails or lies.

#include "proto/engine.hpp"

#include "engine_harness.hpp"
#include "toy_tls.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

using namespace nbd::test;
using nbd::proto::Engine;
using nbd::proto::Event;
using nbd::proto::Phase;
using nbd::proto::Settings;
using nbd::proto::TlsSession;
using nbd::test::ToyTls;
using nbd::test::xored;
namespace w = nbd::wire;

namespace {

struct Client {
  Engine e;
  Buf sent; // everything the client sent, as on the wire
  int sessions = 0;

  explicit Client(int tls, bool opt_mode = false, bool sr = false) {
    Settings s = plain_settings();
    s.tls = tls;
    s.opt_mode = opt_mode;
    s.request_structured_replies = sr;
    s.make_tls = [this] {
      ++sessions;
      return std::make_unique<ToyTls>();
    };
    e.start(s);
  }

  void send_all() {
    for (;;) {
      iovec iov[16];
      std::size_t n = e.send_segments(iov);
      if (n == 0) return;
      std::size_t total = 0;
      for (std::size_t i = 0; i < n; ++i) {
        auto* p = static_cast<const std::uint8_t*>(iov[i].iov_base);
        sent.insert(sent.end(), p, p + iov[i].iov_len);
        total += iov[i].iov_len;
      }
      e.commit_send(total);
    }
  }

  // Server bytes, fed as a transport's staging buffer would, in pieces of
  // `piece` bytes (0: whole), sending whatever the client has after each.
  void recv(const Buf& b, std::size_t piece = 0) {
    send_all();
    if (piece == 0) piece = b.size();
    for (std::size_t i = 0; i < b.size(); i += piece) {
      std::size_t n = std::min(piece, b.size() - i);
      e.feed({b.data() + i, n});
      send_all();
    }
  }

  // The same through recv_target / commit_recv, a byte at a time.
  void recv_bytewise(const Buf& b) {
    send_all();
    for (auto c : b) {
      auto t = e.recv_target();
      REQUIRE(!t.empty());
      t[0] = c;
      e.commit_recv(1);
      send_all();
    }
  }
};

Buf hello() {
  Buf b;
  put(b, std::string_view("SH"));
  return b;
}

// A server that accepts STARTTLS and then GO with an export of 1 MiB.
Buf go_replies(std::uint64_t size = 1 << 20) {
  return cat({srv::info_export(w::opt_go, size, 0x0001), srv::ack(w::opt_go)});
}

Buf plaintext_prefix() { return cat({cli::flags(3), cli::option(w::opt_starttls)}); }

} // namespace

TEST_CASE("tls: STARTTLS first, then everything encrypted, through to DISC and close_notify") {
  for (std::size_t piece : {0, 1, 3, 7}) {
    CAPTURE(piece);
    Client c(2, false, true);
    c.recv(cat({srv::greeting(3), srv::ack(w::opt_starttls)}), piece);
    CHECK(c.sessions == 1);
    // Plaintext went out up to STARTTLS, then the toy ClientHello only.
    CHECK(c.sent == cat({plaintext_prefix(), Buf{'C', 'H'}}));
    CHECK(c.e.wants() == nbd::proto::Direction::read);
    const std::size_t before = c.sent.size();
    c.recv(cat({hello(), xored(srv::ack(w::opt_structured_reply)), xored(go_replies())}), piece);
    REQUIRE(c.e.phase() == Phase::transmission);
    CHECK(c.e.tls_negotiated());
    CHECK(c.e.structured_replies());
    CHECK(c.e.info().size == 1 << 20);
    // After the handshake: STRUCTURED_REPLY and GO, encrypted.
    Buf after(c.sent.begin() + static_cast<std::ptrdiff_t>(before), c.sent.end());
    CHECK(xored(after) == cat({cli::option(w::opt_structured_reply),
                               cli::option(w::opt_go, cli::go_data("", {}))}));

    // A read over TLS: the reply is decrypted into the caller's buffer.
    Buf data = pattern(4096, 9), buf(4096);
    nbd::proto::CommandSpec spec;
    spec.type = w::cmd_read;
    spec.count = 4096;
    spec.offset = 8192;
    spec.read_buf = buf;
    std::uint32_t slot = c.e.submit(spec);
    c.send_all();
    std::uint64_t cookie = c.e.slot_cookie(slot);
    c.recv(xored(srv::chunk(w::reply_flag_done, w::chunk_offset_data, cookie,
                            srv::offset_data(8192, data))), piece);
    REQUIRE(c.e.slot_done(slot));
    CHECK(c.e.slot_error(slot) == 0);
    CHECK(buf == data);

    // DISC goes out encrypted, followed by close_notify; only once both
    // left (commit_send) is the engine closed.
    const std::size_t before_disc = c.sent.size();
    c.e.retire(slot);
    c.e.disconnect();
    CHECK(c.e.phase() == Phase::disconnecting);
    iovec iov[4];
    std::size_t n = c.e.send_segments(iov);
    REQUIRE(n == 1);
    CHECK(c.e.phase() == Phase::disconnecting); // encrypted, not yet sent
    c.e.commit_send(iov[0].iov_len - 1);
    CHECK(c.e.phase() == Phase::disconnecting);
    c.e.commit_send(1);
    CHECK(c.e.phase() == Phase::closed);
    auto* p = static_cast<const std::uint8_t*>(iov[0].iov_base);
    Buf tail(p, p + iov[0].iov_len);
    CHECK(before_disc == c.sent.size());
    Buf disc = cli::request(0, w::cmd_disc, 0, 0, 0);
    REQUIRE(tail.size() == disc.size() + 2);
    CHECK(xored(Buf(tail.begin(), tail.end() - 2)) == disc);
    CHECK(Buf(tail.end() - 2, tail.end()) == Buf{'C', 'N'});
  }
}

TEST_CASE("tls: ciphertext through recv_target / commit_recv, one byte at a time") {
  Client c(2);
  c.recv_bytewise(cat({srv::greeting(3), srv::ack(w::opt_starttls), hello(), xored(go_replies())}));
  CHECK(c.e.phase() == Phase::transmission);
  CHECK(c.e.tls_negotiated());
}

TEST_CASE("tls: small requests share one encryption batch") {
  Client c(2);
  c.recv(cat({srv::greeting(3), srv::ack(w::opt_starttls), hello(), xored(go_replies())}));
  REQUIRE(c.e.phase() == Phase::transmission);
  std::vector<Buf> bufs(20, Buf(512));
  for (auto& b : bufs) {
    nbd::proto::CommandSpec spec;
    spec.type = w::cmd_read;
    spec.count = 512;
    spec.read_buf = b;
    c.e.submit(spec);
  }
  iovec iov[4];
  CHECK(c.e.send_segments(iov) == 1);
  CHECK(iov[0].iov_len == 20 * 28);
}

TEST_CASE("tls: require never falls back to plaintext") {
  SUBCASE("server refuses STARTTLS") {
    Client c(2);
    c.recv(srv::greeting(3));
    c.recv(srv::err(w::opt_starttls, w::rep_err_policy, "no TLS here"));
    CHECK(c.e.phase() == Phase::dead);
    CHECK(c.e.death_errno() == ENOTSUP);
    CHECK(c.e.death_reason().find("server refused TLS") != std::string::npos);
    CHECK(c.sent == plaintext_prefix()); // no GO, no export name in plaintext
  }
  SUBCASE("server answers STARTTLS with something other than ACK") {
    Client c(2);
    c.recv(srv::greeting(3));
    c.recv(srv::rep_server("x"));
    CHECK(c.e.phase() == Phase::dead);
    CHECK(c.e.death_errno() == EPROTO);
    CHECK(c.sent == plaintext_prefix());
  }
  SUBCASE("non-fixed newstyle server") {
    Client c(2);
    c.recv(srv::greeting(0));
    CHECK(c.e.phase() == Phase::dead);
    CHECK(c.e.death_errno() == ENOTSUP);
    CHECK(c.e.death_reason().find("fixed newstyle") != std::string::npos);
    CHECK(c.sent.empty());
  }
  SUBCASE("oldstyle server") {
    Client c(2);
    c.recv(srv::oldstyle(1 << 20, 1));
    CHECK(c.e.phase() == Phase::dead);
    CHECK(c.e.death_errno() == ENOTSUP);
    CHECK(c.e.death_reason().find("oldstyle") != std::string::npos);
  }
  SUBCASE("handshake fails") {
    Client c(2);
    c.recv(srv::greeting(3));
    c.recv(srv::ack(w::opt_starttls));
    c.recv(Buf{'N', 'O'});
    CHECK(c.e.phase() == Phase::dead);
    CHECK(c.e.death_errno() == EIO);
    CHECK(c.e.death_reason() == "toy handshake refused");
    CHECK(c.sent == cat({plaintext_prefix(), Buf{'C', 'H'}}));
  }
  SUBCASE("EOF during the handshake") {
    Client c(2);
    c.recv(cat({srv::greeting(3), srv::ack(w::opt_starttls), Buf{'S'}}));
    c.e.on_eof();
    CHECK(c.e.phase() == Phase::dead);
    CHECK(c.e.death_errno() == EIO);
    CHECK(c.e.death_reason().find("TLS handshake failed") != std::string::npos);
  }
}

TEST_CASE("tls: credentials that cannot be loaded kill the handshake with their errno") {
  Engine e;
  Settings s = plain_settings();
  s.tls = 1;
  s.make_tls = []() -> std::unique_ptr<TlsSession> {
    throw std::system_error(EINVAL, std::generic_category(), "username bob was not found in PSK file");
  };
  e.start(s);
  Buf b = cat({srv::greeting(3), srv::ack(w::opt_starttls)});
  e.feed(b);
  CHECK(e.phase() == Phase::dead);
  CHECK(e.death_errno() == EINVAL);
  CHECK(e.death_reason() == "username bob was not found in PSK file"); // no ": Invalid argument"
}

TEST_CASE("tls: allow falls back to plaintext when the server declines") {
  Client c(1);
  c.recv(cat({srv::greeting(3), srv::err(w::opt_starttls, w::rep_err_unsup), go_replies()}));
  CHECK(c.e.phase() == Phase::transmission);
  CHECK_FALSE(c.e.tls_negotiated());
  CHECK(c.sessions == 0);
  CHECK(c.sent == cat({plaintext_prefix(), cli::option(w::opt_go, cli::go_data("", {}))}));
}

TEST_CASE("tls: allow against a non-fixed newstyle server carries on without STARTTLS") {
  Client c(1);
  c.recv(srv::greeting(0));
  CHECK(c.e.phase() == Phase::handshake);
  CHECK(c.sent == cat({cli::flags(0), cli::option(w::opt_export_name)}));
}

TEST_CASE("tls: a server that requires TLS, with TLS disabled, names the cause") {
  Client c(0);
  c.recv(cat({srv::greeting(3), srv::err(w::opt_go, w::rep_err_tls_reqd, "TLS first")}));
  CHECK(c.e.phase() == Phase::dead);
  CHECK(c.e.death_errno() == ENOTSUP);
  CHECK(c.e.death_reason().find("requires TLS") != std::string::npos);
  CHECK(c.sessions == 0);
}

TEST_CASE("tls: opt_starttls forgets what was negotiated in plaintext") {
  Client c(0, true);
  c.recv(srv::greeting(3));
  REQUIRE(c.e.phase() == Phase::option_wait);
  c.e.opt_structured_reply();
  c.recv(srv::ack(w::opt_structured_reply));
  REQUIRE(c.e.structured_replies());
  c.e.clear_events();
  c.e.opt_starttls();
  c.recv(cat({srv::ack(w::opt_starttls), hello()}));
  CHECK(c.e.phase() == Phase::option_wait);
  CHECK(c.e.tls_negotiated());
  CHECK_FALSE(c.e.structured_replies());
  REQUIRE(c.e.events().size() == 1);
  CHECK(c.e.events()[0].kind == Event::option_done);
  CHECK(c.e.events()[0].error == 0);
  c.e.clear_events();

  // Option mode goes on, encrypted.
  c.e.opt_structured_reply();
  c.recv(xored(srv::ack(w::opt_structured_reply)));
  CHECK(c.e.structured_replies());
}

TEST_CASE("tls: opt_abort under TLS ends the session with close_notify") {
  for (bool server_acks : {true, false}) {
    CAPTURE(server_acks);
    Client c(0, true);
    c.recv(srv::greeting(3));
    c.e.opt_starttls();
    c.recv(cat({srv::ack(w::opt_starttls), hello()}));
    REQUIRE(c.e.tls_negotiated());
    c.e.clear_events();
    const std::size_t before = c.sent.size();
    c.e.opt_abort();
    c.send_all();
    // NBD_OPT_ABORT encrypted, then the close_notify, in one batch.
    Buf after(c.sent.begin() + static_cast<std::ptrdiff_t>(before), c.sent.end());
    const Buf abort = cli::option(w::opt_abort);
    REQUIRE(after.size() == abort.size() + 2);
    CHECK(xored(Buf(after.begin(), after.end() - 2)) == abort);
    CHECK(Buf(after.end() - 2, after.end()) == Buf{'C', 'N'});
    // Whether the server acknowledges or just hangs up, that is the end.
    if (server_acks)
      c.recv(xored(srv::ack(w::opt_abort)));
    else
      c.e.on_eof();
    CHECK(c.e.phase() == Phase::closed);
    REQUIRE(c.e.events().size() == 1);
    CHECK(c.e.events()[0].kind == Event::option_done);
    CHECK(c.e.events()[0].error == 0);
    c.send_all();
    CHECK(c.sent.size() == before + after.size()); // nothing after it
  }
}

TEST_CASE("tls: opt_starttls refused leaves the connection in plaintext") {
  Client c(0, true);
  c.recv(srv::greeting(3));
  c.e.opt_starttls();
  c.recv(srv::err(w::opt_starttls, w::rep_err_policy));
  CHECK(c.e.phase() == Phase::option_wait);
  CHECK_FALSE(c.e.tls_negotiated());
  REQUIRE(c.e.events().size() == 1);
  CHECK(c.e.events()[0].error != 0);
}

TEST_CASE("tls: between options, ciphertext waits in the transport (bounded)") {
  Client c(0, true);
  c.recv(srv::greeting(3));
  c.e.opt_starttls();
  c.recv(cat({srv::ack(w::opt_starttls), hello()}));
  REQUIRE(c.e.phase() == Phase::option_wait);
  Buf junk(1000, 0x11);
  CHECK(c.e.feed(junk) == 0); // nothing asked: not taken
  CHECK(c.e.recv_target().empty());
}
