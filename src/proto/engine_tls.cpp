// SPDX-License-Identifier: BSD-3-Clause
// The engine under TLS: once the server ACKs NBD_OPT_STARTTLS, the
// transport seam carries ciphertext, and a TlsSession sits between it and
// the plaintext machinery of engine.cpp (plain_recv_target & co.).
//
// Receiving: ciphertext is lent to the session (feed) or lands in tls_in_
// (recv_target / commit_recv); GnuTLS takes it into its record buffer,
// decrypts it there and copies the plaintext into the plaintext receive
// target, which for read payloads is the caller's buffer (no copy of ours
// on top of GnuTLS's). Sending: queued plaintext (options, request headers, write
// payloads) is encrypted into tls_out_next_ when the transport asks for
// segments, in records of up to 16 KiB; tls_out_ is what the transport is
// sending and never moves until it is drained.

#include "proto/engine.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <system_error>

namespace nbd::proto {

namespace {

// What recv_target() offers under TLS: one full TLS record. Transports
// receive into their own staging buffer below Engine::large_payload
// anyway and lend it through feed().
constexpr std::size_t tls_in_size = 16 * 1024 + 512;

// Plaintext encrypted ahead of the socket at most: bounds the ciphertext
// buffered for a large write.
constexpr std::size_t tls_out_max = 256 * 1024;

} // namespace

void Engine::start_tls() {
  std::unique_ptr<TlsSession> session;
  try {
    if (settings_.make_tls) session = settings_.make_tls();
  } catch (const std::system_error& e) {
    // what() ends in ": <strerror>", which the handle's error adds again.
    std::string what = e.what();
    const std::string suffix = ": " + e.code().message();
    if (what.size() > suffix.size() && what.compare(what.size() - suffix.size(), suffix.size(), suffix) == 0)
      what.resize(what.size() - suffix.size());
    return die(e.code().value() ? e.code().value() : EIO, what);
  } catch (const std::exception& e) {
    return die(EIO, std::string("TLS: ") + e.what());
  }
  if (!session) return die(ENOTSUP, "TLS: this build of nbdcpp has no TLS support");
  tls_session_ = std::move(session);
  // The ACK can be processed before the transport reports STARTTLS itself
  // sent (completions in one batch); what was queued in plaintext still
  // goes out in plaintext, ahead of the handshake.
  tls_plain_left_ = plain_send_pending_bytes();
  tls_session_->set_output(&tls_out_next_);
  tls_in_.resize(tls_in_size);
  tls_ = Tls::handshaking;
  // The option exchange is over; the handshake owns the wire until it ends.
  recv_ = Recv::nothing;
  target_ = {};
  tls_pump_recv(); // sends the ClientHello
}

void Engine::on_tls_established() {
  tls_ = Tls::on;
  // proto.md (STARTTLS): the server forgets what was negotiated before, and
  // so must we, so that nothing a man in the middle said in plaintext
  // survives (CVE-2021-3716 was a server that did not forget).
  structured_ = extended_ = false;
  contexts_.clear();
  contexts_set_ = false;
  info_known_ = false;
  info_ = {};
  finish_option(0, {}); // option mode: opt_starttls succeeded; else the next option
}

bool Engine::tls_wants_read() const {
  if (phase_ == Phase::dead || phase_ == Phase::closed) return false;
  return tls_ == Tls::handshaking || recv_ != Recv::nothing;
}

std::size_t Engine::tls_feed(std::span<const std::uint8_t> data) {
  // Not wanted now (option mode between options, death): the transport
  // keeps the bytes, as without TLS, so a flood stays bounded.
  if (!tls_wants_read()) return 0;
  tls_session_->lend_cipher(data);
  tls_pump_recv();
  tls_session_->keep_unread();
  return data.size();
}

void Engine::tls_pump_recv() {
  if (tls_pumping_) return;
  tls_pumping_ = true;
  for (;;) {
    if (phase_ == Phase::dead || phase_ == Phase::closed) break;
    if (tls_ == Tls::handshaking) {
      auto st = tls_session_->handshake();
      if (st == TlsSession::again) break;
      if (st == TlsSession::failed) {
        die(tls_session_->error(), tls_session_->error_message());
        break;
      }
      on_tls_established();
      continue;
    }
    std::span<std::uint8_t> t = plain_recv_target();
    if (t.empty()) break;
    std::ptrdiff_t r = tls_session_->read(t);
    if (r > 0) {
      plain_commit_recv(static_cast<std::size_t>(r));
    } else if (r == -1) {
      break; // more ciphertext needed
    } else if (r == 0) {
      on_eof(); // close_notify: an orderly EOF, judged as the socket's would be
      break;
    } else {
      die(tls_session_->error(), tls_session_->error_message());
      break;
    }
  }
  tls_pumping_ = false;
}

void Engine::tls_pump_send() {
  if (tls_ != Tls::on || tls_plain_left_ > 0) return;
  bool wrote = false;
  // Corked, GnuTLS holds what it takes until flush(): count it too.
  std::size_t taken_total = 0;
  while (tls_out_next_.size() + taken_total < tls_out_max) {
    std::array<iovec, 64> iov;
    std::size_t n = plain_send_segments(iov);
    if (n == 0) break;
    std::size_t taken = 0;
    for (std::size_t i = 0; i < n && tls_out_next_.size() + taken_total + taken < tls_out_max; ++i) {
      std::size_t k =
          std::min(iov[i].iov_len, tls_out_max - tls_out_next_.size() - taken_total - taken);
      if (!tls_session_->write({static_cast<const std::uint8_t*>(iov[i].iov_base), k})) {
        die(tls_session_->error(), tls_session_->error_message());
        return;
      }
      wrote = true;
      taken += k;
      if (k < iov[i].iov_len) break;
    }
    if (taken == 0) break;
    plain_commit_send(taken);
    taken_total += taken;
  }
  if (wrote && !tls_session_->flush()) return die(tls_session_->error(), tls_session_->error_message());
  // The last thing we will say is encrypted (NBD_CMD_DISC, or NBD_OPT_ABORT
  // in option mode): end the TLS session properly behind it, in the same
  // batch of ciphertext.
  const bool said_last = (phase_ == Phase::disconnecting && disc_sent_ == disc_len_) ||
                         (step_ == Step::abort && wrote && plain_send_pending_bytes() == 0);
  if (said_last && !tls_closing_) {
    tls_closing_ = true;
    tls_session_->close_notify();
  }
}

std::size_t Engine::tls_send_segments(std::span<iovec> iov) {
  if (phase_ == Phase::dead || phase_ == Phase::closed || iov.empty()) return 0;
  if (tls_plain_left_ > 0) {
    std::size_t n = plain_send_segments(iov), left = tls_plain_left_;
    for (std::size_t i = 0; i < n; ++i) {
      if (iov[i].iov_len >= left) {
        iov[i].iov_len = left;
        return i + 1;
      }
      left -= iov[i].iov_len;
    }
    return n;
  }
  tls_pump_send();
  if (tls_out_sent_ == tls_out_.size() && !tls_out_next_.empty()) {
    // Nothing of tls_out_ is in the transport's hands: take the next batch.
    tls_out_.clear();
    tls_out_.swap(tls_out_next_);
    tls_out_sent_ = 0;
  }
  if (tls_out_sent_ == tls_out_.size()) return 0;
  iov[0] = {tls_out_.data() + tls_out_sent_, tls_out_.size() - tls_out_sent_};
  return 1;
}

void Engine::tls_commit_send(std::size_t n) {
  if (tls_plain_left_ > 0) {
    tls_plain_left_ -= n;
    plain_commit_send(n);
    return;
  }
  tls_out_sent_ += n;
  if (tls_out_sent_ == tls_out_.size()) {
    tls_out_.clear();
    tls_out_sent_ = 0;
    check_disconnected();
  }
}

} // namespace nbd::proto
