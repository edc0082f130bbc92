// SPDX-License-Identifier: BSD-3-Clause
// proto::TlsSession with GnuTLS over memory buffers: the push function
// appends ciphertext to the engine's output buffer, the pull function
// reads what the engine lent (or what was kept of it), and never blocks.
// The only file that includes GnuTLS.

#include "tls/tls_config.hpp"

#include <nbdcpp/error.hpp>

#include <gnutls/gnutls.h>

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace nbd::tls {

namespace {

bool readable(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

std::string gnutls_message(const char* what, int r) {
  return std::string(what) + ": " + gnutls_strerror(r);
}

// The key of username in a psktool file ("username:hexkey" lines).
std::string lookup_psk(const std::string& file, const std::string& username) {
  std::ifstream in(file);
  if (!in) {
    int err = errno ? errno : ENOENT;
    throw Error(err, "TLS: cannot open PSK file " + file);
  }
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > username.size() + 1 && line.compare(0, username.size(), username) == 0 &&
        line[username.size()] == ':')
      return line.substr(username.size() + 1);
  }
  if (in.bad()) throw Error(EIO, "TLS: cannot read PSK file " + file);
  throw Error(EINVAL, "TLS: " + file + ": username " + username + " was not found in PSK file");
}

// The directories libnbd looks in when set_tls_certificates was not called.
std::vector<std::string> default_certificate_dirs() {
  std::vector<std::string> dirs;
  const char* home = std::getenv("HOME");
  if (::geteuid() != 0 && home) {
    dirs.push_back(std::string(home) + "/.pki/libnbd");
    dirs.push_back(std::string(home) + "/.config/pki/libnbd");
  } else if (::geteuid() == 0) {
    dirs.push_back("/etc/pki/libnbd");
  }
  return dirs;
}

class GnutlsSession final : public proto::TlsSession {
public:
  explicit GnutlsSession(const TlsConfig& cfg) {
    try {
      set_up(cfg);
    } catch (...) {
      release();
      throw;
    }
  }

  ~GnutlsSession() override { release(); }

  GnutlsSession(const GnutlsSession&) = delete;
  GnutlsSession& operator=(const GnutlsSession&) = delete;

  void set_up(const TlsConfig& cfg) {
    check(gnutls_init(&session_, GNUTLS_CLIENT | GNUTLS_NONBLOCK), "gnutls_init");
    gnutls_transport_set_ptr(session_, this);
    gnutls_transport_set_push_function(session_, &push);
    gnutls_transport_set_pull_function(session_, &pull);
    gnutls_transport_set_pull_timeout_function(session_, &pull_timeout);

    // SNI carries names only, never address literals (RFC 6066).
    in6_addr addr;
    if (!cfg.hostname.empty() && ::inet_pton(AF_INET, cfg.hostname.c_str(), &addr) != 1 &&
        ::inet_pton(AF_INET6, cfg.hostname.c_str(), &addr) != 1)
      check(gnutls_server_name_set(session_, GNUTLS_NAME_DNS, cfg.hostname.data(),
                                   cfg.hostname.size()),
            "gnutls_server_name_set");

    if (!cfg.psk_file.empty())
      use_psk(cfg);
    else
      use_certificates(cfg);
  }

  void release() {
    if (session_) gnutls_deinit(session_);
    if (psk_) gnutls_psk_free_client_credentials(psk_);
    if (x509_) gnutls_certificate_free_credentials(x509_);
    session_ = nullptr;
    psk_ = nullptr;
    x509_ = nullptr;
  }

  void set_output(std::vector<std::uint8_t>* out) override { out_ = out; }

  void lend_cipher(std::span<const std::uint8_t> data) override { lent_ = data; }

  void keep_unread() override {
    kept_.erase(kept_.begin(), kept_.begin() + static_cast<std::ptrdiff_t>(kept_pos_));
    kept_pos_ = 0;
    kept_.insert(kept_.end(), lent_.begin(), lent_.end());
    lent_ = {};
  }

  Status handshake() override {
    int r;
    do {
      starved_ = false;
      r = gnutls_handshake(session_);
      // A non-fatal result (a warning alert) with ciphertext still queued
      // is no reason to wait for more: nothing else would call again.
    } while (r != GNUTLS_E_SUCCESS && !gnutls_error_is_fatal(r) && !starved_ && available() > 0);
    if (r == GNUTLS_E_SUCCESS) return done;
    if (!gnutls_error_is_fatal(r)) return again;
    error_ = EIO;
    message_ = "TLS handshake failed: ";
    if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
      gnutls_datum_t text{};
      unsigned status = gnutls_session_get_verify_cert_status(session_);
      if (gnutls_certificate_verification_status_print(status, gnutls_certificate_type_get(session_),
                                                       &text, 0) == 0) {
        message_ += "the server's certificate did not verify: ";
        message_.append(reinterpret_cast<const char*>(text.data), text.size);
        gnutls_free(text.data);
        return failed;
      }
    }
    message_ += gnutls_strerror(r);
    if (r == GNUTLS_E_FATAL_ALERT_RECEIVED)
      message_ += std::string(" (") + gnutls_alert_get_name(gnutls_alert_get(session_)) + ")";
    return failed;
  }

  std::ptrdiff_t read(std::span<std::uint8_t> out) override {
    // GnuTLS answers GNUTLS_E_AGAIN also after a record that carried no
    // data (a TLS 1.3 session ticket or key update, a warning alert):
    // "more ciphertext needed" only if pull really ran dry. Every other
    // round consumed a record, so this ends.
    for (;;) {
      starved_ = false;
      const std::size_t before = available();
      ssize_t r = gnutls_record_recv(session_, out.data(), out.size());
      if (r >= 0) return r;
      if (gnutls_error_is_fatal(static_cast<int>(r))) {
        error_ = EIO;
        message_ = gnutls_message("TLS: receiving", static_cast<int>(r));
        return -2;
      }
      if (starved_ || available() == before) return -1;
    }
  }

  bool write(std::span<const std::uint8_t> data) override {
    if (!corked_) {
      gnutls_record_cork(session_);
      corked_ = true;
    }
    while (!data.empty()) {
      ssize_t r = gnutls_record_send(session_, data.data(), data.size());
      if (r < 0) {
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) continue;
        error_ = EIO;
        message_ = gnutls_message("TLS: sending", static_cast<int>(r));
        return false;
      }
      data = data.subspan(static_cast<std::size_t>(r));
    }
    return true;
  }

  bool flush() override {
    if (!corked_) return true;
    corked_ = false;
    // push never fails or blocks, so one call encrypts everything.
    int r = gnutls_record_uncork(session_, GNUTLS_RECORD_WAIT);
    if (r < 0) {
      error_ = EIO;
      message_ = gnutls_message("TLS: sending", r);
      return false;
    }
    return true;
  }

  void close_notify() override {
    // SHUT_WR: only our alert; the server's answer is not waited for.
    (void)gnutls_bye(session_, GNUTLS_SHUT_WR);
  }

  std::string description() const override {
    char* d = gnutls_session_get_desc(session_);
    if (!d) return "TLS";
    std::string s(d);
    gnutls_free(d);
    return s;
  }

  int error() const override { return error_; }
  const std::string& error_message() const override { return message_; }

private:
  static void check(int r, const char* what) {
    if (r < 0) throw Error(EIO, gnutls_message(what, r));
  }

  static ssize_t push(gnutls_transport_ptr_t p, const void* data, size_t len) {
    auto* self = static_cast<GnutlsSession*>(p);
    auto* b = static_cast<const std::uint8_t*>(data);
    self->out_->insert(self->out_->end(), b, b + len);
    return static_cast<ssize_t>(len);
  }

  std::size_t available() const { return kept_.size() - kept_pos_ + lent_.size(); }

  static ssize_t pull(gnutls_transport_ptr_t p, void* data, size_t len) {
    auto* self = static_cast<GnutlsSession*>(p);
    auto* dst = static_cast<std::uint8_t*>(data);
    std::size_t n = 0;
    if (self->kept_pos_ < self->kept_.size()) {
      n = std::min(len, self->kept_.size() - self->kept_pos_);
      std::memcpy(dst, self->kept_.data() + self->kept_pos_, n);
      self->kept_pos_ += n;
    }
    if (n < len && !self->lent_.empty()) {
      std::size_t k = std::min(len - n, self->lent_.size());
      std::memcpy(dst + n, self->lent_.data(), k);
      self->lent_ = self->lent_.subspan(k);
      n += k;
    }
    if (n == 0) {
      self->starved_ = true;
      gnutls_transport_set_errno(self->session_, EAGAIN);
      return -1;
    }
    return static_cast<ssize_t>(n);
  }

  // GnuTLS asks before some reads whether data is there; never wait.
  static int pull_timeout(gnutls_transport_ptr_t p, unsigned) {
    auto* self = static_cast<GnutlsSession*>(p);
    if (self->available() > 0) return 1;
    self->starved_ = true;
    gnutls_transport_set_errno(self->session_, EAGAIN);
    return -1;
  }

  void use_psk(const TlsConfig& cfg) {
    // A TLS 1.3 PSK binds the suite's hash to SHA-256, which rules out
    // NORMAL's first suite (AES-256-GCM-SHA384) and leaves ChaCha20 ahead
    // of AES-128-GCM, the fast one on CPUs with AES instructions (9x here):
    // put ChaCha20 after it, as NORMAL already does for certificates.
    check(gnutls_priority_set_direct(
              session_, "NORMAL:-CHACHA20-POLY1305:+CHACHA20-POLY1305:+ECDHE-PSK:+DHE-PSK:+PSK",
              nullptr),
          "gnutls_priority_set_direct");
    const std::string user = cfg.username.empty() ? login_name() : cfg.username;
    std::string key = lookup_psk(cfg.psk_file, user);
    check(gnutls_psk_allocate_client_credentials(&psk_), "gnutls_psk_allocate_client_credentials");
    gnutls_datum_t k{reinterpret_cast<unsigned char*>(key.data()),
                     static_cast<unsigned>(key.size())};
    int r = gnutls_psk_set_client_credentials(psk_, user.c_str(), &k, GNUTLS_PSK_KEY_HEX);
    std::fill(key.begin(), key.end(), '\0');
    if (r < 0) throw Error(EINVAL, gnutls_message(("TLS: the key of " + user + " in " +
                                                   cfg.psk_file).c_str(), r));
    check(gnutls_credentials_set(session_, GNUTLS_CRD_PSK, psk_), "gnutls_credentials_set");
  }

  // Loads dir's certificates if it has a ca-cert.pem; false if it has not.
  bool load_certificates(const std::string& dir) {
    const std::string ca = dir + "/ca-cert.pem";
    if (!readable(ca)) return false;
    check(gnutls_certificate_allocate_credentials(&x509_), "gnutls_certificate_allocate_credentials");
    int r = gnutls_certificate_set_x509_trust_file(x509_, ca.c_str(), GNUTLS_X509_FMT_PEM);
    if (r < 0) throw Error(EIO, gnutls_message(("TLS: " + ca).c_str(), r));
    const std::string cert = dir + "/client-cert.pem", key = dir + "/client-key.pem";
    if (readable(cert) && readable(key)) {
      r = gnutls_certificate_set_x509_key_file(x509_, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM);
      if (r < 0) throw Error(EIO, gnutls_message(("TLS: " + cert + ", " + key).c_str(), r));
    }
    const std::string crl = dir + "/ca-crl.pem";
    if (readable(crl)) {
      r = gnutls_certificate_set_x509_crl_file(x509_, crl.c_str(), GNUTLS_X509_FMT_PEM);
      if (r < 0) throw Error(EIO, gnutls_message(("TLS: " + crl).c_str(), r));
    }
    return true;
  }

  void use_certificates(const TlsConfig& cfg) {
    check(gnutls_set_default_priority(session_), "gnutls_set_default_priority");
    bool found = false;
    if (!cfg.certificates.empty()) {
      found = load_certificates(cfg.certificates);
    } else {
      for (const auto& dir : default_certificate_dirs())
        if ((found = load_certificates(dir))) break;
    }
    if (!found) {
      // As libnbd: no ca-cert.pem anywhere means the system's CAs.
      check(gnutls_certificate_allocate_credentials(&x509_), "gnutls_certificate_allocate_credentials");
      int r = gnutls_certificate_set_x509_system_trust(x509_);
      if (r < 0) throw Error(EIO, gnutls_message("TLS: the system's CA certificates", r));
    }
    // libnbd checks only on TCP (with a host name); we check the chain
    // always and the name when there is one.
    if (cfg.verify_peer)
      gnutls_session_set_verify_cert(session_, cfg.hostname.empty() ? nullptr : cfg.hostname.c_str(), 0);
    check(gnutls_credentials_set(session_, GNUTLS_CRD_CERTIFICATE, x509_), "gnutls_credentials_set");
  }

  gnutls_session_t session_ = nullptr;
  gnutls_certificate_credentials_t x509_ = nullptr;
  gnutls_psk_client_credentials_t psk_ = nullptr;
  std::vector<std::uint8_t>* out_ = nullptr;
  std::vector<std::uint8_t> kept_; // ciphertext lent but not yet read
  std::size_t kept_pos_ = 0;
  std::span<const std::uint8_t> lent_;
  bool corked_ = false;
  bool starved_ = false; // pull found no ciphertext since the last check
  int error_ = 0;
  std::string message_;
};

} // namespace

std::unique_ptr<proto::TlsSession> make_gnutls_session(const TlsConfig& config) {
  return std::make_unique<GnutlsSession>(config);
}

} // namespace nbd::tls
