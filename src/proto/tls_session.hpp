// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// A TLS session over memory buffers, as the engine sees it: ciphertext in
// from the transport, plaintext out to the engine's receive target, and
// plaintext from the engine encrypted into ciphertext for the transport.
// No I/O, so the engine stays sans-I/O and both transports get TLS
// unchanged. src/tls/ implements it with GnuTLS; unit tests use a trivial
// cipher.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace nbd::proto {

class TlsSession {
public:
  virtual ~TlsSession() = default;

  /// Where ciphertext to send goes: appended to *out, which the engine
  /// keeps (and swaps, so the vector object must stay the same one).
  virtual void set_output(std::vector<std::uint8_t>* out) = 0;
  /// Lends ciphertext from the server to the next handshake() / read()
  /// calls, which take it without copying; keep_unread() must follow
  /// before the span goes away, and copies what is left inside.
  virtual void lend_cipher(std::span<const std::uint8_t> data) = 0;
  virtual void keep_unread() = 0;

  enum Status : int { done = 0, again = 1, failed = -1 };
  /// Advances the handshake with the ciphertext queued so far. On failed,
  /// error() and error_message() say why.
  virtual Status handshake() = 0;
  /// Decrypts into out. Returns the bytes written (> 0), 0 when the server
  /// closed the TLS session, -1 when more ciphertext is needed, -2 on an
  /// error (see error()).
  virtual std::ptrdiff_t read(std::span<std::uint8_t> out) = 0;
  /// Takes all of data for encryption; it may be buffered until flush(),
  /// so that many small requests share a record. False on an error.
  virtual bool write(std::span<const std::uint8_t> data) = 0;
  /// Encrypts what write() buffered into the output. False on an error.
  virtual bool flush() = 0;
  /// Queues the close_notify alert (after the last request).
  virtual void close_notify() = 0;
  /// The protocol, key exchange and cipher agreed, for debug messages.
  virtual std::string description() const = 0;

  virtual int error() const = 0;
  virtual const std::string& error_message() const = 0;
};

/// Makes a session when the server agrees to STARTTLS. Throws
/// std::system_error (nbd::Error) when the credentials cannot be loaded.
using TlsFactory = std::function<std::unique_ptr<TlsSession>()>;

} // namespace nbd::proto
