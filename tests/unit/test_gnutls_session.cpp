// SPDX-License-Identifier: BSD-3-Clause

// The GnuTLS session behind the engine, against a GnuTLS server in the
// same process: both sides on memory buffers, no sockets. What real
// servers do that nbdkit and qemu-nbd do not: TLS 1.3 session tickets
// arriving in the same bytes as the first data.

#include "tls/tls_config.hpp"

#include <doctest/doctest.h>
#include <gnutls/gnutls.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Buf = std::vector<std::uint8_t>;

const char* const psk_hex = "0123456789abcdef0123456789abcdef";

// A GnuTLS server on memory buffers: reads what the client sent from
// `in`, appends what it sends to `out`.
struct Server {
  gnutls_session_t s = nullptr;
  gnutls_psk_server_credentials_t cred = nullptr;
  gnutls_datum_t ticket_key{};
  Buf in, out;
  std::size_t in_pos = 0;

  Server() {
    REQUIRE(gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK) == 0);
    REQUIRE(gnutls_psk_allocate_server_credentials(&cred) == 0);
    gnutls_psk_set_server_credentials_function(
        cred, [](gnutls_session_t, const char* user, gnutls_datum_t* key) -> int {
          if (std::strcmp(user, "alice") != 0) return -1;
          gnutls_datum_t hex{reinterpret_cast<unsigned char*>(const_cast<char*>(psk_hex)),
                             static_cast<unsigned>(std::strlen(psk_hex))};
          std::size_t size = 16;
          key->data = static_cast<unsigned char*>(gnutls_malloc(size));
          if (gnutls_hex_decode(&hex, key->data, &size) < 0) return -1;
          key->size = static_cast<unsigned>(size);
          return 0;
        });
    REQUIRE(gnutls_credentials_set(s, GNUTLS_CRD_PSK, cred) == 0);
    REQUIRE(gnutls_priority_set_direct(s, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", nullptr) == 0);
    // Session tickets: the server sends NewSessionTicket right after the
    // handshake, as OpenSSL, Go and rustls servers do by default.
    REQUIRE(gnutls_session_ticket_key_generate(&ticket_key) == 0);
    REQUIRE(gnutls_session_ticket_enable_server(s, &ticket_key) == 0);
    gnutls_transport_set_ptr(s, this);
    gnutls_transport_set_push_function(s, [](gnutls_transport_ptr_t p, const void* d, size_t n) {
      auto* self = static_cast<Server*>(p);
      auto* b = static_cast<const std::uint8_t*>(d);
      self->out.insert(self->out.end(), b, b + n);
      return static_cast<ssize_t>(n);
    });
    gnutls_transport_set_pull_function(s, [](gnutls_transport_ptr_t p, void* d, size_t n) {
      auto* self = static_cast<Server*>(p);
      std::size_t k = std::min(n, self->in.size() - self->in_pos);
      if (k == 0) {
        gnutls_transport_set_errno(self->s, EAGAIN);
        return static_cast<ssize_t>(-1);
      }
      std::memcpy(d, self->in.data() + self->in_pos, k);
      self->in_pos += k;
      return static_cast<ssize_t>(k);
    });
  }
  ~Server() {
    gnutls_deinit(s);
    gnutls_psk_free_server_credentials(cred);
    gnutls_free(ticket_key.data);
  }
};

} // namespace

TEST_CASE("gnutls session: data right behind TLS 1.3 session tickets is read, not waited for") {
  char path[] = "/tmp/nbdcpp-psk-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  std::string line = std::string("alice:") + psk_hex + "\n";
  REQUIRE(::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()));
  ::close(fd);

  nbd::tls::TlsConfig cfg;
  cfg.psk_file = path;
  cfg.username = "alice";
  auto client = nbd::tls::make_gnutls_session(cfg);
  ::unlink(path);
  Server server;
  Buf c2s;
  client->set_output(&c2s);

  // Shuttle the handshake between the two.
  bool client_done = false, server_done = false;
  for (int round = 0; round < 20 && !(client_done && server_done); ++round) {
    if (!client_done) {
      auto st = client->handshake();
      REQUIRE(st != nbd::proto::TlsSession::failed);
      client_done = st == nbd::proto::TlsSession::done;
    }
    server.in.insert(server.in.end(), c2s.begin(), c2s.end());
    c2s.clear();
    if (!server_done) {
      int r = gnutls_handshake(server.s);
      REQUIRE((r == 0 || !gnutls_error_is_fatal(r)));
      server_done = r == 0;
    }
    if (!server.out.empty()) {
      client->lend_cipher(server.out);
      if (!client_done) {
        auto st = client->handshake();
        REQUIRE(st != nbd::proto::TlsSession::failed);
        client_done = st == nbd::proto::TlsSession::done;
      }
      client->keep_unread();
      server.out.clear();
    }
  }
  REQUIRE(client_done);
  REQUIRE(server_done);

  // The tickets (sent when the server's handshake finished, or now) and
  // the first data reach the client in one piece.
  const char msg[] = "first reply";
  REQUIRE(gnutls_record_send(server.s, msg, sizeof msg) == static_cast<ssize_t>(sizeof msg));
  client->lend_cipher(server.out);
  Buf got(64);
  std::ptrdiff_t n = client->read(got);
  client->keep_unread();
  REQUIRE(n == static_cast<std::ptrdiff_t>(sizeof msg));
  CHECK(std::memcmp(got.data(), msg, sizeof msg) == 0);
  CHECK(client->description().find("TLS1.3") != std::string::npos);
}
