// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// The protocol engine: a sans-I/O state machine for one NBD connection.
//
// The transport asks recv_target() where the next inbound bytes must land
// (a header scratch area, or the caller's read buffer at the right offset,
// so read payloads arrive with no intermediate copy) and reports them with
// commit_recv(n); a transport that reads into its own staging buffer calls
// feed() instead. send_segments() gives iovecs of what is ready to go out
// (request headers, write payloads borrowed from the caller), and
// commit_send(n) advances past bytes the socket took. Sending and receiving
// are independent, so replies are consumed while a large write is half sent.
//
// Results come out as events (take_events()); the API layer turns them into
// callbacks. The engine never calls user code and never does I/O.

#include "proto/cookie_map.hpp"
#include "proto/tls_session.hpp"
#include "proto/wire.hpp"

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace nbd::proto {

enum class Direction : unsigned { none = 0, read = 1, write = 2, both = 3 };

/// What the client asks for during negotiation (libnbd's handle settings).
struct Settings {
  std::string export_name;
  bool request_structured_replies = true;
  bool request_extended_headers = true;
  bool request_meta_context = true;
  bool request_block_size = true;
  bool full_info = false;
  bool opt_mode = false;
  std::uint32_t handshake_flags = wire::flag_fixed_newstyle | wire::flag_no_zeroes;
  std::vector<std::string> meta_contexts;
  /// 0 disable, 1 allow, 2 require (libnbd's TLS_* values).
  int tls = 0;
  /// Makes the TLS session once the server agrees to STARTTLS.
  TlsFactory make_tls;
};

/// What negotiation learned about the export.
struct ExportInfo {
  std::uint64_t size = 0;
  std::uint16_t eflags = 0;
  wire::BlockSize block_size; // all zero when the server sent none
  std::string canonical_name;
  std::string description;
  bool have_name = false, have_description = false;
};

struct MetaContext {
  std::uint32_t id;
  std::string name;
};

enum class Phase {
  idle,         // start() not called yet
  handshake,    // greeting and automatic options
  option_wait,  // option mode: waiting for the caller's next opt_*
  option_busy,  // option mode: an opt_* exchange is in progress
  transmission, // ready for commands
  disconnecting, // NBD_CMD_DISC queued or sent: no new commands
  closed,       // orderly end (ABORT, DISC, or EOF after DISC)
  dead,         // protocol violation, I/O error, or unexpected EOF
};

/// A command as the API layer hands it over, already validated.
struct CommandSpec {
  std::uint16_t type = 0;
  std::uint16_t flags = 0;
  std::uint64_t offset = 0;
  std::uint64_t count = 0;
  std::span<std::uint8_t> read_buf;        // cmd_read: where data lands
  std::span<const std::uint8_t> write_buf; // cmd_write: the payload
};

struct Event {
  enum Kind : std::uint8_t {
    command_done,   // slot, error
    read_chunk,     // slot, offset, length, status (1 data, 2 hole, 3 error), error
    extents,        // slot, context_id, [extent_begin, +extent_count) in extents()
    option_done,    // error (0 = success), text = reason
    export_listed,  // text = name, text2 = description (opt_list)
    meta_context,   // context_id, text = name (list/set meta context)
  } kind = command_done;
  std::uint32_t slot = 0;
  int error = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  int status = 0;
  std::uint32_t context_id = 0;
  std::uint32_t extent_begin = 0, extent_count = 0;
  std::string text, text2;
};

inline constexpr int read_data = 1, read_hole = 2, read_error = 3; // libnbd's values

class Engine {
public:
  Engine();

  // --- lifecycle ---------------------------------------------------------
  /// Begins the handshake on a freshly connected transport.
  void start(const Settings& settings);
  /// The transport saw EOF (or an error): an orderly close after DISC or
  /// ABORT, otherwise death with ENOTCONN for everything in flight.
  void on_eof();
  void on_io_error(int err, const std::string& what);
  /// Stops the engine: everything in flight completes with err.
  void die(int err, std::string reason);

  Phase phase() const { return phase_; }
  /// Why the engine died or failed to negotiate.
  int death_errno() const { return death_errno_; }
  const std::string& death_reason() const { return death_reason_; }

  // --- transport seam -------------------------------------------------------
  // Once TLS is on, these carry ciphertext: the engine runs the TLS
  // session between them and the plaintext machinery (engine_tls.cpp).
  std::span<std::uint8_t> recv_target();
  void commit_recv(std::size_t n);
  /// Takes bytes received into a staging buffer (copied through
  /// recv_target / commit_recv, or lent to the TLS session); returns how
  /// many were consumed (all of them unless the engine stopped receiving,
  /// e.g. after death).
  std::size_t feed(std::span<const std::uint8_t> data);
  /// Fills iov with what is ready to send; returns the count used. With
  /// TLS on, this is where queued plaintext gets encrypted.
  std::size_t send_segments(std::span<iovec> iov);
  std::size_t send_pending_bytes() const;
  void commit_send(std::size_t n);
  Direction wants() const;

  // --- option mode ----------------------------------------------------------
  // Each queues one option exchange and reports it with option_done.
  void opt_go(const Settings& s);
  void opt_info(const Settings& s);
  void opt_list();
  void opt_abort();
  void opt_structured_reply();
  void opt_extended_headers();
  void opt_list_meta_context(const Settings& s, std::vector<std::string> queries);
  void opt_set_meta_context(const Settings& s, std::vector<std::string> queries);
  /// NBD_OPT_STARTTLS, then the TLS handshake (settings' make_tls).
  void opt_starttls();

  // --- transmission ------------------------------------------------------------
  /// Queues a command; returns its slot: a free one, or slot_count() when
  /// none is free. The cookie is slot_cookie(slot). Throws only
  /// std::bad_alloc, and then changes nothing.
  std::uint32_t submit(const CommandSpec& c);
  /// Slots allocated so far (free or in use).
  std::size_t slot_count() const { return slots_.size(); }
  std::uint64_t slot_cookie(std::uint32_t slot) const { return slots_[slot].cookie; }
  std::uint64_t next_cookie() const { return next_cookie_; }
  /// The slot of a cookie not yet retired, or CookieMap::npos.
  std::uint32_t find(std::uint64_t cookie) const { return cookies_.find(cookie); }
  bool slot_done(std::uint32_t slot) const { return slots_[slot].state == SlotState::done; }
  int slot_error(std::uint32_t slot) const { return slots_[slot].error; }
  /// Queues NBD_CMD_DISC after everything already queued: no new commands;
  /// once it is sent and every reply is in, the engine is closed.
  void disconnect();
  /// Completes every command the transport has not started sending with
  /// err (shutdown with SHUTDOWN_ABANDON_PENDING).
  void abandon_unsent(int err);
  /// Releases a completed command's slot and cookie.
  void retire(std::uint32_t slot);
  /// Commands queued or awaiting replies (not yet completed).
  std::size_t in_flight() const { return in_flight_; }
  /// Read payloads at least this big are worth a receive of their own
  /// straight into the caller's buffer (below it, batching many replies
  /// per receive into a staging buffer and copying is cheaper).
  static constexpr std::size_t large_payload = 64 * 1024;
  /// Reads of at least large_payload bytes in flight. While there are any,
  /// a transport should not receive far ahead into a staging buffer: the
  /// part of such a payload that lands there costs a second copy.
  /// Under TLS always 0: ciphertext never goes straight to a read buffer.
  std::size_t large_reads_in_flight() const { return tls_ == Tls::off ? large_reads_ : 0; }
  /// Payload bytes of the reads and of the writes in flight (queued or
  /// awaiting replies): bounds on what the server may still send us and on
  /// what of ours may still sit unread in the socket.
  std::uint64_t read_bytes_in_flight() const { return read_bytes_; }
  std::uint64_t write_bytes_in_flight() const { return write_bytes_; }

  // --- results ---------------------------------------------------------------
  std::vector<Event>& events() { return events_; }
  std::span<const wire::Extent> extents() const { return extents_; }
  /// Call after handling every event: frees their storage.
  void clear_events();

  // --- what negotiation learned --------------------------------------------------
  const ExportInfo& info() const { return info_; }
  /// True once GO, INFO, EXPORT_NAME or an oldstyle greeting described the export.
  bool info_known() const { return info_known_; }
  bool structured_replies() const { return structured_; }
  bool extended_headers() const { return extended_; }
  const std::vector<MetaContext>& meta_contexts() const { return contexts_; }
  bool meta_contexts_negotiated() const { return contexts_set_; }
  /// True once the TLS handshake completed.
  bool tls_negotiated() const { return tls_ == Tls::on; }
  /// What TLS agreed on ("" without TLS), for debug messages.
  std::string tls_description() const { return tls_session_ ? tls_session_->description() : ""; }
  /// "oldstyle", "newstyle" or "newstyle-fixed" (libnbd's names).
  const char* protocol() const;
  std::uint16_t server_handshake_flags() const { return server_flags_; }
  std::uint32_t client_flags() const { return client_flags_; }
  /// True once a newstyle server's handshake flags were answered.
  bool handshake_flags_known() const { return flags_known_; }

  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::uint64_t bytes_received() const { return bytes_received_; }
  std::uint64_t chunks_sent() const { return chunks_sent_; }
  std::uint64_t chunks_received() const { return chunks_received_; }

  /// Hard limits on what a server can make us buffer.
  static constexpr std::size_t max_option_reply = 64 * 1024;
  static constexpr std::size_t max_chunk_payload = 64 * 1024 * 1024;

private:
  enum class SlotState : std::uint8_t { free, queued, in_flight, done };
  struct Slot {
    std::uint64_t cookie = 0;
    SlotState state = SlotState::free;
    bool reply_done = false; // the server finished its reply
    std::uint16_t type = 0, flags = 0;
    std::uint64_t offset = 0, count = 0;
    std::span<std::uint8_t> read_buf;
    std::span<const std::uint8_t> write_buf;
    int error = 0;           // first error seen
    std::uint64_t covered = 0; // structured read: bytes of data + holes
    // Structured read: the [begin, end) request-relative ranges data and
    // holes covered so far, sorted, disjoint, adjacent ones merged.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    std::uint32_t status_chunks = 0;
    bool large_read = false; // counted in large_reads_
    std::uint8_t header_len = 0;
    std::array<std::uint8_t, wire::max_request_size> header{};
    std::uint32_t next = none; // send queue / free list link
  };
  static constexpr std::uint32_t none = 0xffffffff;

  // Which message the bytes in flight belong to.
  enum class Recv : std::uint8_t {
    nothing,
    greeting,
    oldstyle_rest,
    handshake_flags,
    option_reply_header,
    option_reply_payload,
    export_name_reply,
    export_name_zeroes,
    abort_reply, // after ABORT: an ACK, or EOF
    reply_magic,
    reply_rest,
    simple_read_payload,
    chunk_payload,      // into scratch
    data_offset,        // OFFSET_DATA's 8-byte offset
    data_payload,       // straight into the caller's buffer
  };

  // Option exchange in progress.
  enum class Step : std::uint8_t {
    none, extended_headers, structured_reply, set_meta_context, list_meta_context,
    go, info, list, abort, export_name, starttls,
  };

  Event& push_event(Event::Kind kind);
  void expect(Recv what, std::span<std::uint8_t> where);
  void expect_header(Recv what, std::size_t n);
  void on_recv_complete();
  void fail_protocol(std::uint32_t offender, std::string reason);
  void complete(std::uint32_t slot);
  void maybe_complete(std::uint32_t slot);

  // negotiation
  void on_greeting();
  void on_handshake_flags();
  void next_auto_step();
  void queue_out(std::span<const std::uint8_t> bytes);
  void send_option(Step step, std::uint32_t option, wire::Bytes data);
  void enter_transmission();
  void on_option_reply_header();
  void on_option_reply();
  void finish_option(int err, std::string reason);
  void require_option_wait(const char* what) const;
  void begin_go(const Settings& s, Step step);

  // the plaintext side of the transport seam
  std::span<std::uint8_t> plain_recv_target();
  void plain_commit_recv(std::size_t n);
  std::size_t plain_send_segments(std::span<iovec> iov) const;
  std::size_t plain_send_pending_bytes() const;
  void plain_commit_send(std::size_t n);

  // TLS (engine_tls.cpp)
  void start_tls();
  void on_tls_established();
  std::size_t tls_feed(std::span<const std::uint8_t> data);
  void tls_pump_recv();
  void tls_pump_send();
  std::size_t tls_send_segments(std::span<iovec> iov);
  void tls_commit_send(std::size_t n);
  bool tls_wants_read() const;

  // transmission
  void on_reply_magic();
  void on_reply_header();
  void on_simple_reply();
  void on_chunk_header();
  void on_chunk_payload();
  void on_data_offset();
  void on_chunk_done();
  bool claim_range(Slot& s, std::uint64_t begin, std::uint64_t len);
  void expect_reply();
  void set_error(Slot& s, int err);
  void check_disconnected();

  Phase phase_ = Phase::idle;
  Settings settings_;
  Step step_ = Step::none;
  std::vector<Step> auto_steps_;
  std::size_t auto_step_ = 0;
  Step after_meta_ = Step::none; // GO or INFO to send once SET_META_CONTEXT is done
  std::size_t list_entries_ = 0;
  std::vector<MetaContext> pending_contexts_;
  bool got_export_info_ = false;
  ExportInfo pending_info_;

  // receive side
  Recv recv_ = Recv::nothing;
  std::span<std::uint8_t> target_;
  std::size_t filled_ = 0;
  std::array<std::uint8_t, 160> header_{};
  std::vector<std::uint8_t> scratch_;
  wire::ReplyHeader reply_{};
  wire::OptionReplyHeader opt_reply_{};
  std::uint32_t reply_slot_ = none;
  std::uint64_t data_offset_ = 0;

  // send side
  std::vector<std::uint8_t> out_;      // negotiation bytes being sent
  std::vector<std::uint8_t> out_next_; // queued behind them (see queue_out)
  std::size_t out_sent_ = 0;
  std::uint32_t send_head_ = none, send_tail_ = none;
  std::size_t head_sent_ = 0; // bytes of the head command already sent
  std::array<std::uint8_t, wire::max_request_size> disc_header_{};
  std::uint8_t disc_len_ = 0, disc_sent_ = 0;

  // commands
  std::deque<Slot> slots_; // a deque, so header bytes handed to the transport stay put
  std::uint32_t free_ = none;
  CookieMap cookies_;
  std::uint64_t next_cookie_ = 1;
  std::size_t in_flight_ = 0;
  std::size_t large_reads_ = 0;
  std::uint64_t read_bytes_ = 0, write_bytes_ = 0;

  // results
  std::vector<Event> events_;
  std::vector<wire::Extent> extents_;

  // negotiated
  ExportInfo info_;
  bool info_known_ = false;
  bool oldstyle_ = false;
  bool structured_ = false;
  bool extended_ = false;
  bool contexts_set_ = false;
  std::vector<MetaContext> contexts_;
  std::uint16_t server_flags_ = 0;
  std::uint32_t client_flags_ = 0;
  bool flags_known_ = false;

  // TLS: off until the server ACKs STARTTLS.
  enum class Tls : std::uint8_t { off, handshaking, on };
  Tls tls_ = Tls::off;
  std::unique_ptr<TlsSession> tls_session_;
  std::vector<std::uint8_t> tls_in_;       // recv_target() under TLS
  std::vector<std::uint8_t> tls_out_;      // ciphertext being sent
  std::vector<std::uint8_t> tls_out_next_; // appended to behind it (see queue_out)
  std::size_t tls_out_sent_ = 0;
  bool tls_pumping_ = false;
  bool tls_closing_ = false; // close_notify queued after NBD_CMD_DISC or NBD_OPT_ABORT
  std::size_t tls_plain_left_ = 0; // queued before STARTTLS's ACK: goes out in plaintext

  int death_errno_ = 0;
  std::string death_reason_;

  std::uint64_t bytes_sent_ = 0, bytes_received_ = 0;
  std::uint64_t chunks_sent_ = 0, chunks_received_ = 0;
};

} // namespace nbd::proto
