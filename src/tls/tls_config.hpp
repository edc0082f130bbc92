// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// What a handle's set_tls_* settings say, and the TLS sessions made from
// them when a server agrees to STARTTLS.

#include "proto/tls_session.hpp"

#include <string>

namespace nbd::tls {

struct TlsConfig {
  std::string certificates; // directory: ca-cert.pem, client-cert.pem, ...
  bool verify_peer = true;
  std::string username;     // PSK identity; "" = the login name
  std::string psk_file;     // "" = certificates
  std::string hostname;     // checked against the certificate, sent as SNI
};

/// True when nbdcpp was built with GnuTLS.
bool supported();

/// A factory for the engine; the session (and any error loading the
/// credentials) comes when it is called. Without GnuTLS it makes nothing,
/// which the engine reports as ENOTSUP.
proto::TlsFactory make_factory(TlsConfig config);

/// The login name (getlogin_r, else the password entry of the effective
/// uid). Throws nbd::Error with the errno when there is none.
std::string login_name();

#ifdef NBDCPP_HAVE_TLS
/// gnutls_session.cpp. Throws nbd::Error when the credentials cannot be
/// loaded.
std::unique_ptr<proto::TlsSession> make_gnutls_session(const TlsConfig& config);
#endif

} // namespace nbd::tls
