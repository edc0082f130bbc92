// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// Credentials for the TLS tests, made once per test process with GnuTLS's
// command-line tools (Debian gnutls-bin): certtool for an X.509 CA and the
// certificates it signs, psktool for PSK files. The files live in a
// harness TempDir, laid out as the directories the servers and the client
// read:
//
//   nbdkit --tls-certificates=DIR, qemu tls-creds-x509 dir=DIR:
//       ca-cert.pem, server-cert.pem, server-key.pem
//   Handle::set_tls_certificates(DIR), tls-certificates=DIR in a URI:
//       ca-cert.pem [, client-cert.pem, client-key.pem]
//   nbdkit --tls-psk=FILE, Handle::set_tls_psk_file(FILE):
//       "username:hexkey" lines
//   qemu tls-creds-psk dir=DIR: DIR/keys.psk
//
// Keys are ECDSA P-256: quick to make even under sanitizers.

#include "harness.hpp"

#include <memory>
#include <string>

namespace nbdtest::tls {

struct Fixtures {
  /// Server side, signed by the test CA, for "localhost" (DNS) and
  /// 127.0.0.1 (IP), valid now: ca-cert.pem, server-cert.pem, server-key.pem.
  std::string server_dir;
  /// The same CA, but the server certificate expired in 2002.
  std::string expired_server_dir;
  /// Client side: the test CA and a client certificate it signed.
  std::string client_dir;
  /// Client side: the test CA alone (no client certificate).
  std::string client_ca_only_dir;
  /// Client side: an unrelated CA (that did not sign the server), alone.
  std::string wrong_ca_dir;
  /// Client side: the test CA, and a client certificate signed by the
  /// unrelated CA (a server checking clients must refuse it).
  std::string client_wrong_signer_dir;

  /// The PSK identity in both PSK files.
  std::string psk_username = "alice";
  /// "alice:KEY1", and the directory holding it as keys.psk (for qemu).
  std::string psk_file, psk_dir;
  /// "alice:KEY2": the same user, another key; and its qemu directory.
  std::string psk_other_file, psk_other_dir;

  /// The directory everything is in.
  std::string root;
};

/// Why TLS credentials cannot be made or used here ("" when they can):
/// certtool or psktool missing, or an nbdcpp built without TLS. Computed
/// once.
const std::string& tools_unavailable_reason();
inline bool tools_available() { return tools_unavailable_reason().empty(); }

/// tools_unavailable_reason(), or else why nbdkit cannot serve TLS (not
/// installed, or built without it): the TLS tests against nbdkit need both.
const std::string& unavailable_reason();
inline bool available() { return unavailable_reason().empty(); }

/// The credentials, made on first use (certtool/psktool failing throws
/// std::runtime_error with their output) and kept for the process.
const Fixtures& fixtures();

/// Client credentials: h.set_tls(mode) and the certificate directory.
inline void use_certs(nbd::Handle& h, const std::string& dir, int mode = nbd::TLS_REQUIRE) {
  h.set_tls(mode);
  h.set_tls_certificates(dir);
}

/// Client credentials: h.set_tls(mode), the PSK file and the user in it.
inline void use_psk(nbd::Handle& h, const std::string& file, const std::string& user,
                    int mode = nbd::TLS_REQUIRE) {
  h.set_tls(mode);
  h.set_tls_psk_file(file);
  h.set_tls_username(user);
}

} // namespace nbdtest::tls

/// First statement of a test body that needs what ok says is there: when
/// it is not (a run with --no-skip), say why and return rather than fail on
/// a missing program.
#define NBDTEST_SKIP_UNLESS(ok, reason)                                        \
  do {                                                                         \
    if (!(ok)) {                                                               \
      MESSAGE("SKIP: " << (reason));                                           \
      return;                                                                  \
    }                                                                          \
  } while (0)

/// doctest decorator for the nbdkit TLS tests: skip (visibly) when the
/// tools are missing; and the first statement of their bodies.
#define NBDTEST_NEEDS_TLS doctest::skip(!nbdtest::tls::available())
#define NBDTEST_REQUIRE_TLS() NBDTEST_SKIP_UNLESS(nbdtest::tls::available(), nbdtest::tls::unavailable_reason())

/// The same for tests that need the credentials but not nbdkit (qemu-nbd).
#define NBDTEST_NEEDS_TLS_TOOLS doctest::skip(!nbdtest::tls::tools_available())
#define NBDTEST_REQUIRE_TLS_TOOLS()                                            \
  NBDTEST_SKIP_UNLESS(nbdtest::tls::tools_available(), nbdtest::tls::tools_unavailable_reason())
