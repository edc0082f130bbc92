// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// A stand-in for a TLS session in engine tests and fuzzers (no GnuTLS):
// the client says "CH", the server answers "SH" (anything else fails the
// handshake); afterwards every byte is XORed with tls_key, and "CN" is the
// close_notify. So a test sees exactly what went out in plaintext and what
// was "encrypted".

#include "proto/tls_session.hpp"

#include <cerrno>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace nbd::test {

inline constexpr std::uint8_t tls_key = 0x5a;

inline std::vector<std::uint8_t> xored(const std::vector<std::uint8_t>& b) {
  std::vector<std::uint8_t> r(b);
  for (auto& c : r) c ^= tls_key;
  return r;
}

class ToyTls final : public proto::TlsSession {
public:
  void set_output(std::vector<std::uint8_t>* out) override { out_ = out; }
  void lend_cipher(std::span<const std::uint8_t> d) override { lent_ = d; }
  void keep_unread() override {
    kept_.erase(kept_.begin(), kept_.begin() + static_cast<std::ptrdiff_t>(kept_pos_));
    kept_pos_ = 0;
    kept_.insert(kept_.end(), lent_.begin(), lent_.end());
    lent_ = {};
  }
  Status handshake() override {
    if (!hello_sent_) {
      out_->push_back('C');
      out_->push_back('H');
      hello_sent_ = true;
    }
    if (available() < 2) return again;
    std::uint8_t a = take(), b = take();
    if (a == 'S' && b == 'H') return done;
    error_ = EIO;
    message_ = "toy handshake refused";
    return failed;
  }
  std::ptrdiff_t read(std::span<std::uint8_t> out) override {
    if (available() == 0) return -1;
    std::size_t n = 0;
    while (n < out.size() && available() > 0) out[n++] = take() ^ tls_key;
    return static_cast<std::ptrdiff_t>(n);
  }
  bool write(std::span<const std::uint8_t> d) override {
    for (auto c : d) corked_.push_back(c ^ tls_key);
    return true;
  }
  bool flush() override {
    ++records;
    out_->insert(out_->end(), corked_.begin(), corked_.end());
    corked_.clear();
    return true;
  }
  void close_notify() override {
    out_->push_back('C');
    out_->push_back('N');
  }
  std::string description() const override { return "toy (XOR)"; }
  int error() const override { return error_; }
  const std::string& error_message() const override { return message_; }

  int records = 0;

private:
  std::size_t available() const { return kept_.size() - kept_pos_ + lent_.size(); }
  std::uint8_t take() {
    if (kept_pos_ < kept_.size()) return kept_[kept_pos_++];
    std::uint8_t c = lent_.front();
    lent_ = lent_.subspan(1);
    return c;
  }

  std::vector<std::uint8_t>* out_ = nullptr;
  std::vector<std::uint8_t> kept_, corked_;
  std::size_t kept_pos_ = 0;
  std::span<const std::uint8_t> lent_;
  bool hello_sent_ = false;
  int error_ = 0;
  std::string message_;
};

} // namespace nbd::test
