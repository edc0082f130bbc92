// SPDX-License-Identifier: BSD-3-Clause
#include "tls/tls_config.hpp"

#include <nbdcpp/error.hpp>

#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace nbd::tls {

bool supported() {
#ifdef NBDCPP_HAVE_TLS
  return true;
#else
  return false;
#endif
}

proto::TlsFactory make_factory(TlsConfig config) {
#ifdef NBDCPP_HAVE_TLS
  return [config = std::move(config)] { return make_gnutls_session(config); };
#else
  (void)config;
  return {};
#endif
}

std::string login_name() {
  std::vector<char> buf(256);
  if (::getlogin_r(buf.data(), buf.size()) == 0) return buf.data();
  // No controlling terminal (services, CI): the effective user's name.
  buf.resize(16384);
  passwd pw{};
  passwd* found = nullptr;
  int r = ::getpwuid_r(::geteuid(), &pw, buf.data(), buf.size(), &found);
  if (r == 0 && found) return found->pw_name;
  throw Error(r ? r : ENOENT, "get_tls_username: no login name (set_tls_username)");
}

} // namespace nbd::tls
