// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <nbdcpp/callback.hpp>
#include <nbdcpp/error.hpp>
#include <nbdcpp/export.hpp>
#include <nbdcpp/flags.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace nbd {

/// An extent of block_status_64 (libnbd's nbd_extent).
struct Extent {
  std::uint64_t length;
  std::uint64_t flags;
};

/// Completion of an aio_* command or option: called exactly once with the
/// command's errno in *error (0 on success). Return 1 to retire the command
/// at once (aio_command_completed then no longer knows its cookie), 0 to
/// leave it for aio_command_completed. It never runs inside the aio_* call
/// that queued it; it may queue new commands on the same handle.
using CompletionCallback = Callback<int(int* error)>;
/// pread_structured: one call per chunk; status is READ_DATA, READ_HOLE or
/// READ_ERROR. Returning -1 (after setting *error) fails the command.
using ChunkCallback =
    Callback<int(std::span<const std::uint8_t> subbuf, std::uint64_t offset, unsigned status,
                 int* error)>;
/// block_status: entries are (length, flags) pairs as in libnbd.
using ExtentCallback = Callback<int(std::string_view metacontext, std::uint64_t offset,
                                    std::span<std::uint32_t> entries, int* error)>;
using Extent64Callback = Callback<int(std::string_view metacontext, std::uint64_t offset,
                                      std::span<const Extent> entries, int* error)>;
/// opt_list: one call per export.
using ListCallback = Callback<int(std::string_view name, std::string_view description)>;
/// opt_list_meta_context / opt_set_meta_context: one call per context.
using ContextCallback = Callback<int(std::string_view name)>;
/// set_debug_callback.
using DebugCallback = Callback<int(std::string_view context, std::string_view message)>;

/// Which transport carries the connection.
enum class TransportKind { automatic, uring, socket };

/// One connection to an NBD server, mirroring libnbd's struct nbd_handle.
///
/// Every libnbd call nbd_X(h, ...) is h.X(...) here. Failures throw
/// nbd::Error (errno + a message naming the call); calls on the per-command
/// path also have noexcept forms taking std::error_code&. A handle may be
/// used from several threads; callbacks run on the thread that drives it
/// (poll, aio_notify_*, or a blocking call).
class NBDCPP_API Handle {
public:
  Handle();
  ~Handle();
  Handle(Handle&&) noexcept;
  Handle& operator=(Handle&&) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  // --- settings (before connecting unless noted) ----------------------------
  void set_export_name(std::string_view name);
  std::string get_export_name() const;
  void set_request_structured_replies(bool request);
  bool get_request_structured_replies() const;
  void set_request_extended_headers(bool request);
  bool get_request_extended_headers() const;
  void set_handshake_flags(std::uint32_t flags);
  std::uint32_t get_handshake_flags() const;
  void add_meta_context(std::string_view name);
  void clear_meta_contexts();
  std::size_t get_nr_meta_contexts() const;
  std::string get_meta_context(std::size_t i) const;
  void set_request_meta_context(bool request);
  bool get_request_meta_context() const;
  void set_strict_mode(std::uint32_t flags);
  std::uint32_t get_strict_mode() const;
  void set_pread_initialize(bool zero_first);
  bool get_pread_initialize() const;
  void set_opt_mode(bool enable);
  bool get_opt_mode() const;
  void set_request_block_size(bool request);
  bool get_request_block_size() const;
  void set_full_info(bool request);
  bool get_full_info() const;
  void set_debug(bool enable);
  bool get_debug() const;
  void set_debug_callback(DebugCallback cb);
  void clear_debug_callback();
  void set_handle_name(std::string_view name);
  std::string get_handle_name() const;
  /// Returns the previous value, like libnbd.
  std::uintptr_t set_private_data(std::uintptr_t data);
  std::uintptr_t get_private_data() const;
  /// Choose the transport (default: automatic = io_uring with a fallback to
  /// the poll()-based socket transport; NBDCPP_TRANSPORT=uring|socket in the
  /// environment overrides automatic).
  void set_transport(TransportKind kind);
  /// "io_uring", "socket", or "" before a connection exists.
  std::string get_transport_name() const;
  void set_tls(int tls);
  int get_tls() const;

  // --- connecting ------------------------------------------------------------
  void connect_uri(std::string_view uri);
  void connect_unix(std::string_view path);
  void connect_tcp(std::string_view host, std::string_view port);
  void connect_command(const std::vector<std::string>& argv);
  void connect_systemd_socket_activation(const std::vector<std::string>& argv);
  /// fd stays the caller's: nbdcpp uses a duplicate.
  void connect_socket(int fd);
  void aio_connect_uri(std::string_view uri);
  void aio_connect_unix(std::string_view path);
  void aio_connect_tcp(std::string_view host, std::string_view port);
  void aio_connect_command(const std::vector<std::string>& argv);
  void aio_connect_systemd_socket_activation(const std::vector<std::string>& argv);
  void aio_connect_socket(int fd);
  /// Signal the server started by connect_command / socket activation.
  void kill_subprocess(int signum);
  int get_subprocess_pid() const;

  // --- option mode (set_opt_mode(true)) ---------------------------------------
  void opt_go();
  void opt_abort();
  /// Returns how many exports the server listed.
  int opt_list(ListCallback cb);
  void opt_info();
  int opt_list_meta_context(ContextCallback cb);
  int opt_list_meta_context_queries(const std::vector<std::string>& queries, ContextCallback cb);
  int opt_set_meta_context(ContextCallback cb);
  int opt_set_meta_context_queries(const std::vector<std::string>& queries, ContextCallback cb);
  /// True if the server agreed, false if it declined.
  bool opt_structured_reply();
  bool opt_extended_headers();
  void aio_opt_go(CompletionCallback cb = {});
  void aio_opt_abort();
  void aio_opt_list(ListCallback list, CompletionCallback cb = {});
  void aio_opt_info(CompletionCallback cb = {});
  void aio_opt_list_meta_context(ContextCallback ctx, CompletionCallback cb = {});
  void aio_opt_list_meta_context_queries(const std::vector<std::string>& queries,
                                         ContextCallback ctx, CompletionCallback cb = {});
  void aio_opt_set_meta_context(ContextCallback ctx, CompletionCallback cb = {});
  void aio_opt_set_meta_context_queries(const std::vector<std::string>& queries,
                                        ContextCallback ctx, CompletionCallback cb = {});
  void aio_opt_structured_reply(CompletionCallback cb = {});
  void aio_opt_extended_headers(CompletionCallback cb = {});

  // --- commands, blocking ---------------------------------------------------------
  void pread(std::span<std::uint8_t> buf, std::uint64_t offset, std::uint32_t flags = 0);
  void pread_structured(std::span<std::uint8_t> buf, std::uint64_t offset, ChunkCallback chunk,
                        std::uint32_t flags = 0);
  void pwrite(std::span<const std::uint8_t> buf, std::uint64_t offset, std::uint32_t flags = 0);
  void flush(std::uint32_t flags = 0);
  void trim(std::uint64_t count, std::uint64_t offset, std::uint32_t flags = 0);
  void cache(std::uint64_t count, std::uint64_t offset, std::uint32_t flags = 0);
  void zero(std::uint64_t count, std::uint64_t offset, std::uint32_t flags = 0);
  void block_status(std::uint64_t count, std::uint64_t offset, ExtentCallback extent,
                    std::uint32_t flags = 0);
  void block_status_64(std::uint64_t count, std::uint64_t offset, Extent64Callback extent,
                       std::uint32_t flags = 0);
  /// Sends NBD_CMD_DISC after the commands in flight (or, with
  /// SHUTDOWN_ABANDON_PENDING, fails those not yet sent) and waits for the
  /// connection to close.
  void shutdown(std::uint32_t flags = 0);

  // --- commands, asynchronous: each returns a cookie >= 1 -----------------------
  std::uint64_t aio_pread(std::span<std::uint8_t> buf, std::uint64_t offset,
                          CompletionCallback cb = {}, std::uint32_t flags = 0);
  std::uint64_t aio_pread(std::span<std::uint8_t> buf, std::uint64_t offset,
                          CompletionCallback cb, std::uint32_t flags,
                          std::error_code& ec) noexcept;
  std::uint64_t aio_pread_structured(std::span<std::uint8_t> buf, std::uint64_t offset,
                                     ChunkCallback chunk, CompletionCallback cb = {},
                                     std::uint32_t flags = 0);
  std::uint64_t aio_pwrite(std::span<const std::uint8_t> buf, std::uint64_t offset,
                           CompletionCallback cb = {}, std::uint32_t flags = 0);
  std::uint64_t aio_pwrite(std::span<const std::uint8_t> buf, std::uint64_t offset,
                           CompletionCallback cb, std::uint32_t flags,
                           std::error_code& ec) noexcept;
  std::uint64_t aio_flush(CompletionCallback cb = {}, std::uint32_t flags = 0);
  std::uint64_t aio_trim(std::uint64_t count, std::uint64_t offset, CompletionCallback cb = {},
                         std::uint32_t flags = 0);
  std::uint64_t aio_cache(std::uint64_t count, std::uint64_t offset, CompletionCallback cb = {},
                          std::uint32_t flags = 0);
  std::uint64_t aio_zero(std::uint64_t count, std::uint64_t offset, CompletionCallback cb = {},
                         std::uint32_t flags = 0);
  std::uint64_t aio_block_status(std::uint64_t count, std::uint64_t offset, ExtentCallback extent,
                                 CompletionCallback cb = {}, std::uint32_t flags = 0);
  std::uint64_t aio_block_status_64(std::uint64_t count, std::uint64_t offset,
                                    Extent64Callback extent, CompletionCallback cb = {},
                                    std::uint32_t flags = 0);
  void aio_disconnect(std::uint32_t flags = 0);

  // --- driving the handle -----------------------------------------------------------
  /// The fd to poll: the io_uring ring fd or the socket. -1 (error) before
  /// connecting.
  int aio_get_fd() const;
  /// AIO_DIRECTION_READ / WRITE / BOTH: which events on aio_get_fd matter.
  unsigned aio_get_direction() const;
  void aio_notify_read();
  void aio_notify_write();
  void aio_notify_read(std::error_code& ec) noexcept;
  void aio_notify_write(std::error_code& ec) noexcept;
  /// Waits up to timeout ms (-1 forever) and makes progress. Returns 1 if
  /// something happened, 0 on timeout.
  int poll(int timeout);
  int poll(int timeout, std::error_code& ec) noexcept;
  /// As poll, also returning when fd polls readable.
  int poll2(int fd, int timeout);

  bool aio_is_created() const;
  bool aio_is_connecting() const;
  bool aio_is_negotiating() const;
  bool aio_is_ready() const;
  bool aio_is_processing() const;
  bool aio_is_dead() const;
  bool aio_is_closed() const;
  /// Commands queued or awaiting replies.
  std::size_t aio_in_flight() const;
  /// false while the command is in flight; true once it completed
  /// successfully (it is then retired); throws nbd::Error with the
  /// command's errno if it failed (also retiring it), and EINVAL for a
  /// cookie that is unknown or already retired.
  bool aio_command_completed(std::uint64_t cookie);
  bool aio_command_completed(std::uint64_t cookie, std::error_code& ec) noexcept;
  /// The cookie of a completed command not yet retired, or 0 if there is none
  /// (throws EINVAL when nothing is in flight either, like libnbd).
  std::uint64_t aio_peek_command_completed();

  // --- what the server told us ---------------------------------------------------------
  std::int64_t get_size() const;
  bool is_read_only() const;
  bool can_flush() const;
  bool can_fua() const;
  bool can_trim() const;
  bool can_zero() const;
  bool can_fast_zero() const;
  bool can_df() const;
  bool can_multi_conn() const;
  bool can_cache() const;
  bool can_meta_context(std::string_view name) const;
  bool is_rotational() const;
  std::int64_t get_block_size(int which) const;
  std::string get_protocol() const;
  bool get_structured_replies_negotiated() const;
  bool get_extended_headers_negotiated() const;
  std::string get_canonical_export_name() const;
  std::string get_export_description() const;
  std::uint64_t stats_bytes_sent() const;
  std::uint64_t stats_chunks_sent() const;
  std::uint64_t stats_bytes_received() const;
  std::uint64_t stats_chunks_received() const;

  /// Why the handle died (errno and message), if it did.
  std::error_code get_error() const;
  std::string get_error_message() const;

  struct Impl;

private:
  std::unique_ptr<Impl> impl_;
};

/// libnbd's nbd_get_version / nbd_get_package_name.
NBDCPP_API const char* get_version();
NBDCPP_API const char* get_package_name();

} // namespace nbd
