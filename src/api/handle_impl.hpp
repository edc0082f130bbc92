// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// The state behind nbd::Handle. One recursive mutex guards it all: the
// thread that drives the handle holds it while it does I/O and runs
// callbacks, and a callback re-entering the handle on that thread (to queue
// the next command, or retire another) takes it again instead of
// deadlocking as libnbd does.

#include <nbdcpp/handle.hpp>

#include "proto/engine.hpp"
#include "tls/tls_config.hpp"
#include "transport/connect.hpp"
#include "transport/uri.hpp"
#include "transport/transport.hpp"

#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace nbd {

/// Callbacks and context of one command, kept in the slot the engine gave it.
struct CommandRecord {
  CompletionCallback completion;
  ChunkCallback chunk;
  ExtentCallback extent;
  Extent64Callback extent64;
  std::span<std::uint8_t> read_buf;
  std::uint64_t offset = 0;
  int callback_error = 0; // set by a chunk / extent callback returning -1
  int final_error = 0;    // what aio_command_completed reports
  bool zero_on_error = false; // pread_initialize: see Impl::queue_read
  // The engine finished the command and its completion was dispatched.
  // Until then it is not "completed" for aio_command_completed, even if
  // the engine is done: its event, still queued behind the one being
  // dispatched, must not find the slot retired and reused.
  bool dispatched = false;

  void release_callbacks() {
    completion.reset();
    chunk.reset();
    extent.reset();
    extent64.reset();
  }
};

/// The option-mode request in progress (at most one at a time).
struct OptionRecord {
  const char* name = "";
  CompletionCallback completion;
  ListCallback list;
  ContextCallback context;
  int count = 0;
  bool done = true;
  int error = 0;
  std::string message;
};

struct Handle::Impl {
  using Lock = std::unique_lock<std::recursive_mutex>;

  Impl();
  ~Impl();

  // settings
  proto::Settings settings;
  std::uint32_t strict = STRICT_MASK; // every check on, as libnbd defaults
  bool pread_initialize = true;
  bool debug = false;
  DebugCallback debug_callback;
  std::string handle_name;
  std::uintptr_t private_data = 0;
  TransportKind transport_kind = TransportKind::automatic;
  bool reply_batching = true;
  int tls = TLS_DISABLE;
  tls::TlsConfig tls_config;     // hostname: set_tls_hostname only
  std::string tcp_host;          // the host of connect_tcp / nbd[s]://
  bool uri_allow_local_file = false;

  // connection
  mutable std::recursive_mutex mu;
  std::optional<transport::Connector> connector; // while connecting
  proto::Engine engine;
  std::unique_ptr<transport::Transport> transport;
  bool quiesced = false;
  bool tls_logged = false; // the debug message about the TLS session went out
  pid_t pid = -1;
  bool connect_failed = false; // died before the engine started
  int error = 0;               // why the handle died / the last connect failure
  std::string error_message;

  // commands and options
  std::deque<CommandRecord> records; // indexed by engine slot
  std::deque<std::uint64_t> completed; // cookies completed but not retired
  OptionRecord option;
  bool dispatching = false;
  std::vector<std::uint32_t> extents32; // conversion scratch for block_status

  // --- state -----------------------------------------------------------------
  bool is_created() const { return !connector && engine.phase() == proto::Phase::idle && !connect_failed; }
  bool is_connecting() const;
  bool is_negotiating() const { return engine.phase() == proto::Phase::option_wait; }
  bool is_transmitting() const {
    auto p = engine.phase();
    return p == proto::Phase::transmission || p == proto::Phase::disconnecting;
  }
  bool is_dead() const { return connect_failed || engine.phase() == proto::Phase::dead; }
  bool is_closed() const { return engine.phase() == proto::Phase::closed; }

  /// Throws unless the handle can take a command: ENOTCONN before it is
  /// connected, EINVAL once it is dead or closed (libnbd's errno values).
  void require_transmission(const char* fn) const;
  void require_negotiating(const char* fn) const;
  void require_created(const char* fn) const;
  [[noreturn]] void fail(int err, const char* fn, std::string_view what) const;
  /// "created", "connecting", "negotiating", "ready", "dead", "closed".
  const char* state_name() const;

  // --- connecting ------------------------------------------------------------
  void start_connect(const char* fn, transport::Connector c);
  void start_engine(transport::UniqueFd fd);
  void connect_error(int err, std::string message);
  /// nbds* schemes and the tls-* query parameters of a URI.
  void apply_uri_tls(const char* fn, const transport::Uri& u);
  /// Runs the handle until it is no longer connecting; throws if it died.
  void wait_connected(Lock& lock, const char* fn);

  // --- driving ---------------------------------------------------------------
  void check_drive(const char* fn) const;
  int drive(int timeout, int extra_fd, bool& extra_ready);
  void notify(bool readable);
  /// After any I/O: stop the transport if the engine ended, then turn the
  /// engine's events into callbacks.
  void after_io();
  void dispatch_events();
  void on_command_done(const proto::Event& e);
  void on_read_chunk(const proto::Event& e);
  void on_extents(const proto::Event& e);
  void on_option_event(const proto::Event& e);
  /// Blocks until pred() holds (driving the handle); throws if it dies first.
  template <typename Pred>
  void run_until(Lock& lock, const char* fn, Pred pred);

  // --- commands ---------------------------------------------------------------
  std::uint64_t submit(const char* fn, const proto::CommandSpec& spec, CommandRecord rec);
  /// aio_pread and aio_pread_structured: checks, pread_initialize, submit.
  std::uint64_t queue_read(const char* fn, proto::CommandSpec& spec, std::uint32_t flags,
                           bool structured_call, CommandRecord rec);
  /// The largest write payload we send: the server's maximum block size
  /// if it gave one, else the 32 MiB proto.md says every server accepts.
  std::uint64_t payload_limit() const;
  void check_command(const char* fn, proto::CommandSpec& spec, std::uint32_t flags,
                     bool structured_read_call = false) const;
  /// Waits for cookie, retires it and throws its error, if any.
  void wait_command(Lock& lock, const char* fn, std::uint64_t cookie);
  bool command_completed(std::uint64_t cookie, int& err, std::string& why);

  // --- options ----------------------------------------------------------------
  void start_option(const char* fn, OptionRecord rec);
  void wait_option(Lock& lock);
  /// wait_option for the yes/no options: false when the server refused.
  bool wait_option_answer(Lock& lock);

  void debug_log(std::string_view context, std::string_view msg);
};

template <typename Pred>
void Handle::Impl::run_until(Lock& lock, const char* fn, Pred pred) {
  (void)lock;
  bool extra = false;
  while (!pred()) {
    if (is_dead()) fail(error ? error : ENOTCONN, fn, error_message);
    if (is_closed()) fail(ENOTCONN, fn, "the connection is closed");
    drive(-1, -1, extra);
  }
}

} // namespace nbd
