// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// A scriptable NBD server for the hostile suite. A test writes the server's
// side of the conversation as a C++ script (a function of Conn&) that runs
// on its own thread at the far end of a socketpair handed to
// Handle::connect_socket. Conn offers the building blocks (greetings,
// option replies, reply headers and chunks, encoded with nbd::wire) and a
// conforming peer (negotiate, serve) for what no installed server speaks:
// extended headers and 64-bit block status.
//
// Nothing here may hang a test: every read and write of the script times
// out (ScriptError), and Peer's watchdog hangs up on a client that is still
// busy after the deadline, then aborts the process if even that did not
// end the test.

#include "proto/wire.hpp"

#include "../common/checks.hpp"

#include <nbdcpp/handle.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace hostile {

namespace wire = nbd::wire;
using Bytes = std::vector<std::uint8_t>;
using namespace std::chrono_literals;

/// The script could not go on: a timeout, or bytes it did not expect.
struct ScriptError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// The client closed its end (EOF, EPIPE, ECONNRESET).
struct ClientGone : ScriptError {
  using ScriptError::ScriptError;
};

struct OptionRequest {
  std::uint32_t option = 0;
  Bytes data;
};

struct Request {
  std::uint16_t flags = 0, type = 0;
  std::uint64_t cookie = 0, offset = 0, length = 0;
  Bytes payload; // NBD_CMD_WRITE (and any request carrying PAYLOAD_LEN)
};

/// What the conforming peer advertises, and a sparse in-memory disk.
struct Export {
  std::string name;
  std::uint64_t size = 1 << 20;
  std::uint16_t eflags = wire::tflag_has_flags | wire::tflag_send_flush | wire::tflag_send_fua |
                         wire::tflag_send_trim | wire::tflag_send_write_zeroes |
                         wire::tflag_send_df | wire::tflag_send_cache;
  bool structured = true; // ACK NBD_OPT_STRUCTURED_REPLY
  bool extended = false;  // ACK NBD_OPT_EXTENDED_HEADERS
  std::vector<std::string> contexts{"base:allocation"}; // contexts the server knows
  std::optional<wire::BlockSize> block_size;
  /// Exports NBD_OPT_LIST reports (name, description); default: just name.
  std::vector<std::pair<std::string, std::string>> list;

  // --- the disk: 4 KiB blocks, unallocated ones read as zeroes ----------------
  static constexpr std::uint64_t block = 4096;
  std::map<std::uint64_t, Bytes> blocks; // block index -> data
  void write(std::uint64_t off, std::span<const std::uint8_t> data);
  void read(std::uint64_t off, std::span<std::uint8_t> out) const;
  /// Zeroes [off, off+len): whole blocks are deallocated (become holes).
  void zero(std::uint64_t off, std::uint64_t len);
  bool allocated(std::uint64_t off) const { return blocks.count(off / block) != 0; }
  /// base:allocation of [off, off+len): runs of data (flags 0) and holes
  /// (STATE_HOLE | STATE_ZERO), merged; the last may end before off+len
  /// only if max_extents cut the list short.
  std::vector<wire::Extent> extents(std::uint64_t off, std::uint64_t len,
                                    std::size_t max_extents = 1u << 20) const;
};

/// The server's end of one connection, for the script.
class Conn {
public:
  Conn(int fd, std::chrono::milliseconds timeout);

  // --- raw bytes -----------------------------------------------------------------
  Conn& send(std::span<const std::uint8_t> b);
  Conn& send(const Bytes& b) { return send(std::span<const std::uint8_t>(b)); }
  Conn& send_u16(std::uint16_t v);
  Conn& send_u32(std::uint32_t v);
  Conn& send_u64(std::uint64_t v);
  /// Exactly n bytes, or ScriptError (timeout) / ClientGone (EOF).
  Bytes recv(std::size_t n);
  /// Reads and discards until the client closes (true) or the timeout (false).
  bool wait_eof(std::chrono::milliseconds limit);
  /// Closes the server's end now (the client sees EOF).
  void close();
  /// How long each read or write of the script may wait for the client.
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  int fd() const { return fd_; }

  // --- handshake ---------------------------------------------------------------------
  Conn& greet_newstyle(std::uint16_t flags = wire::flag_fixed_newstyle | wire::flag_no_zeroes);
  Conn& greet_oldstyle(std::uint64_t size, std::uint16_t eflags);
  /// Reads the client's 32-bit flags (kept in client_flags()).
  Conn& expect_client_flags();
  std::uint32_t client_flags() const { return client_flags_; }
  OptionRequest read_option();
  /// Reads the next option and fails the script unless it is `option`.
  Conn& expect_option(std::uint32_t option);
  /// The last option read.
  const OptionRequest& last_option() const { return last_; }
  /// An option reply header (+ data) for any option, any length field.
  Conn& option_reply_raw(std::uint32_t option, std::uint32_t type, std::uint32_t length,
                         std::span<const std::uint8_t> data = {},
                         std::uint64_t magic = wire::option_reply_magic);
  /// A well-formed reply to the last option.
  Conn& reply(std::uint32_t type, const Bytes& data = {});
  Conn& reply_ack() { return reply(wire::rep_ack); }
  Conn& reply_info_export(std::uint64_t size, std::uint16_t eflags);
  Conn& reply_server(std::string_view name, std::string_view description = {});
  Conn& reply_meta_context(std::uint32_t id, std::string_view name);
  /// The conforming handshake after the greeting: answers options as exp
  /// says until GO / EXPORT_NAME (true) or ABORT (false).
  bool negotiate(Export& exp);
  /// greet_newstyle() + expect_client_flags() + negotiate(exp).
  bool handshake(Export& exp);
  /// Whether the negotiation agreed on these.
  bool structured() const { return structured_; }
  bool extended() const { return extended_; }
  /// Id of a meta context the last SET_META_CONTEXT selected (0 if none).
  std::uint32_t context_id(std::string_view name) const;

  // --- transmission ------------------------------------------------------------------
  /// Reads one request header (compact or extended, as negotiated) and
  /// its write payload.
  Request read_request();
  Conn& simple_reply(std::uint64_t cookie, std::uint32_t error = 0, const Bytes& payload = {});
  /// One reply chunk in the negotiated form (extended headers: 32-byte
  /// header whose offset field is `offset`; else the 20-byte structured one).
  Conn& chunk(std::uint64_t cookie, std::uint16_t flags, std::uint16_t type, const Bytes& payload,
              std::uint64_t offset = 0);
  /// A chunk header with any length, forced into one form.
  Conn& structured_header(std::uint64_t cookie, std::uint16_t flags, std::uint16_t type,
                          std::uint32_t length);
  Conn& extended_header(std::uint64_t cookie, std::uint16_t flags, std::uint16_t type,
                        std::uint64_t offset, std::uint64_t length);
  Conn& data_chunk(const Request& r, std::uint64_t offset, std::span<const std::uint8_t> data,
                   bool done);
  Conn& hole_chunk(const Request& r, std::uint64_t offset, std::uint32_t length, bool done);
  Conn& error_chunk(const Request& r, std::uint32_t nbd_error, std::string_view message, bool done,
                    std::optional<std::uint64_t> offset = std::nullopt);
  Conn& done_chunk(const Request& r);
  /// BLOCK_STATUS (compact) or BLOCK_STATUS_EXT (extended), as negotiated.
  Conn& block_status_chunk(const Request& r, std::uint32_t context_id,
                           const std::vector<wire::Extent>& extents, bool done);
  /// The conforming answer to r (reads split into data and hole chunks).
  void answer(Export& exp, const Request& r);
  /// Reads and answers requests until NBD_CMD_DISC or EOF. hook runs first
  /// for each request; returning true means it answered it itself.
  void serve(Export& exp, const std::function<bool(Conn&, const Request&)>& hook = {});

private:
  void wait_for(short events);

  int fd_;
  std::chrono::milliseconds timeout_;
  std::uint32_t client_flags_ = 0;
  OptionRequest last_;
  bool structured_ = false, extended_ = false;
  std::vector<std::pair<std::uint32_t, std::string>> contexts_;
};

/// Runs a script on a thread at the far end of a socketpair.
class Peer {
public:
  using Script = std::function<void(Conn&)>;
  /// Starts the script at once. op_timeout bounds each read / write of the
  /// script; deadline the whole test (see the file comment).
  explicit Peer(Script script, std::chrono::milliseconds op_timeout = 10s,
                std::chrono::milliseconds deadline = 60s);
  ~Peer();
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  /// h.connect_socket on the client end (which the peer then closes: the
  /// handle keeps its own duplicate).
  void connect(nbd::Handle& h);
  void aio_connect(nbd::Handle& h);
  /// Waits for the script (and its linger until the client hangs up) to
  /// end; returns its failure, or "" when it ran through.
  std::string finish();
  /// Hangs up on the client now (shutdown of the server's end).
  void hangup();

private:
  void run(Script script);

  int server_fd_ = -1, client_fd_ = -1;
  std::chrono::milliseconds op_timeout_;
  std::thread thread_, watchdog_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool finished_ = false;
  std::string error_;
};

/// Drives h with poll() until done() holds; false if limit passed first.
/// Stops early (returning done()) once the handle has nothing left to poll.
bool drive_until(nbd::Handle& h, const std::function<bool()>& done,
                 std::chrono::milliseconds limit = 30s);

/// Peak resident set size of this process so far (getrusage), in bytes.
std::uint64_t peak_rss();
/// Current resident set size (/proc/self/statm), in bytes.
std::uint64_t current_rss();

/// Counts completion callbacks and destructions of the callable; moved-from
/// shells do not count. `calls` may be watched from another thread.
struct Counter {
  std::atomic<int> calls{0};
  int destroyed = 0;
  std::vector<int> errors;
};
struct Counted {
  Counter* c;
  int ret;
  bool owner = true;
  explicit Counted(Counter* counter, int r = 0) : c(counter), ret(r) {}
  Counted(Counted&& o) noexcept : c(o.c), ret(o.ret), owner(o.owner) { o.owner = false; }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;
  Counted& operator=(Counted&&) = delete;
  ~Counted() {
    if (owner) ++c->destroyed;
  }
  int operator()(int* error) {
    ++c->calls;
    c->errors.push_back(*error);
    return ret;
  }
};

/// The errno of the nbd::Error f throws, 0 if none.
using nbdtest::error_of;

/// Big-endian helpers for building payloads.
void put16(Bytes& b, std::uint16_t v);
void put32(Bytes& b, std::uint32_t v);
void put64(Bytes& b, std::uint64_t v);
void put(Bytes& b, std::string_view s);

} // namespace hostile
