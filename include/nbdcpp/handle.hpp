// SPDX-License-Identifier: BSD-3-Clause
#pragma once

/// @file
/// nbd::Handle, the one class of nbdcpp's API, and its callback types.
///
/// Conventions used in every function's description below:
/// - **States** names the handle states the call is valid in, as the
///   `aio_is_...` predicates report them: *created* (new, not connecting yet),
///   *connecting*, *negotiating* (option mode), *ready* / *processing*
///   (connected: transmission phase), *dead*, *closed*. A call made in
///   another state throws nbd::Error with the errno given.
/// - **Errors** lists the errno values nbd::Error carries (Error::errnum(),
///   or the std::error_code of a noexcept form).
/// - **libnbd** names the C call it mirrors; where behaviour differs, the
///   description says so.

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

/// One extent of block_status_64 (libnbd's nbd_extent): @p length bytes
/// described by @p flags (STATE_HOLE, STATE_ZERO for base:allocation).
struct Extent {
  std::uint64_t length; ///< bytes described
  std::uint64_t flags;  ///< the context's flags for them
};

/// Completion of an `aio_...` command or option: called exactly once with the
/// command's errno in *error (0 on success). Return 1 to retire the command
/// at once (aio_command_completed then no longer knows its cookie), 0 to
/// leave it for aio_command_completed, or -1 after setting *error to make
/// the command fail with that errno (libnbd's rule). It never runs inside
/// the `aio_...` call that queued it; it may queue new commands on the same
/// handle. libnbd: nbd_completion_callback.
using CompletionCallback = Callback<int(int* error)>;
/// pread_structured: one call per chunk; status is READ_DATA, READ_HOLE or
/// READ_ERROR, subbuf the part of the caller's buffer the chunk covers and
/// offset its offset in the export. Returning -1 (after setting *error)
/// fails the command. libnbd: nbd_chunk_callback.
using ChunkCallback =
    Callback<int(std::span<const std::uint8_t> subbuf, std::uint64_t offset, unsigned status,
                 int* error)>;
/// block_status: called once per meta context the server answers for;
/// entries are (length, flags) pairs starting at offset, as in libnbd.
/// Returning -1 (after setting *error) fails the command. libnbd:
/// nbd_extent_callback.
using ExtentCallback = Callback<int(std::string_view metacontext, std::uint64_t offset,
                                    std::span<std::uint32_t> entries, int* error)>;
/// block_status_64: as ExtentCallback with 64-bit extents. libnbd 1.18+:
/// nbd_extent64_callback.
using Extent64Callback = Callback<int(std::string_view metacontext, std::uint64_t offset,
                                      std::span<const Extent> entries, int* error)>;
/// opt_list: one call per export the server lists. libnbd: nbd_list_callback.
using ListCallback = Callback<int(std::string_view name, std::string_view description)>;
/// opt_list_meta_context / opt_set_meta_context: one call per context.
/// libnbd: nbd_context_callback.
using ContextCallback = Callback<int(std::string_view name)>;
/// set_debug_callback: context is the function or subsystem, message the
/// text. libnbd: nbd_debug_callback.
using DebugCallback = Callback<int(std::string_view context, std::string_view message)>;

/// Which transport carries the connection (see set_transport).
enum class TransportKind {
  automatic, ///< io_uring, falling back to socket where io_uring is unavailable
  uring,     ///< io_uring only (connecting fails where it is unavailable)
  socket     ///< the portable poll()-based transport
};

/// One connection to an NBD server, mirroring libnbd's struct nbd_handle.
///
/// Every libnbd call nbd_X(h, ...) is h.X(...) here. Failures throw
/// nbd::Error (errno + a message naming the call); calls on the per-command
/// path also have noexcept forms taking std::error_code&. A handle may be
/// used from several threads; callbacks run on the thread that drives it
/// (poll, aio_notify_*, or a blocking call).
///
/// Construction is libnbd's nbd_create; destruction is nbd_close: commands
/// still in flight complete with ENOTCONN (their callbacks run), the
/// connection is dropped without NBD_CMD_DISC (call shutdown() first for a
/// polite exit) and a server subprocess is reaped.
class NBDCPP_API Handle {
public:
  /// A new handle, state *created*. libnbd: nbd_create.
  Handle();
  /// Closes the handle (see the class description). libnbd: nbd_close.
  ~Handle();
  /// Handles move; the moved-from handle may only be destroyed or assigned.
  Handle(Handle&&) noexcept;
  /// Closes this handle (as the destructor does), then takes other's.
  Handle& operator=(Handle&&) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  /// @name Settings
  /// Most settings shape the handshake, so they must be made before
  /// connecting; the getters work in every state. Settings marked
  /// "created or negotiating" may also change in option mode, before
  /// opt_go / opt_info / opt_list_meta_context use them.
  ///@{

  /// The export to ask for (default ""). States: created or negotiating.
  /// Errors: EINVAL (other states), ENAMETOOLONG (over 4096 bytes).
  /// connect_uri sets it from the URI's path. libnbd: nbd_set_export_name.
  void set_export_name(std::string_view name);
  /// The export name set. Any state. libnbd: nbd_get_export_name.
  std::string get_export_name() const;
  /// Whether to negotiate structured replies (default true), which
  /// pread_structured chunks, block status, DF and error offsets need.
  /// States: created. Errors: EINVAL. libnbd:
  /// nbd_set_request_structured_replies.
  void set_request_structured_replies(bool request);
  /// Any state. libnbd: nbd_get_request_structured_replies.
  bool get_request_structured_replies() const;
  /// Whether to negotiate extended headers (64-bit lengths; default true).
  /// States: created. Errors: EINVAL. libnbd 1.18+:
  /// nbd_set_request_extended_headers.
  void set_request_extended_headers(bool request);
  /// Any state. libnbd 1.18+: nbd_get_request_extended_headers.
  bool get_request_extended_headers() const;
  /// The client handshake flags (HANDSHAKE_FLAG_FIXED_NEWSTYLE |
  /// HANDSHAKE_FLAG_NO_ZEROES by default); clearing them is for testing
  /// servers. States: created. Errors: EINVAL (other states, or bits
  /// outside HANDSHAKE_FLAG_MASK). libnbd: nbd_set_handshake_flags.
  void set_handshake_flags(std::uint32_t flags);
  /// Before connecting, the flags set; once a newstyle server answered, the
  /// flags both sides agreed on. Any state. libnbd: nbd_get_handshake_flags.
  std::uint32_t get_handshake_flags() const;
  /// Adds a meta context to request during negotiation (e.g.
  /// CONTEXT_BASE_ALLOCATION), needed for block_status. States: created or
  /// negotiating. Errors: EINVAL, ENAMETOOLONG. libnbd:
  /// nbd_add_meta_context.
  void add_meta_context(std::string_view name);
  /// Removes every requested meta context. States: created or negotiating.
  /// Errors: EINVAL. libnbd: nbd_clear_meta_contexts.
  void clear_meta_contexts();
  /// How many meta contexts were requested. Any state. libnbd:
  /// nbd_get_nr_meta_contexts.
  std::size_t get_nr_meta_contexts() const;
  /// The i-th requested meta context. Any state. Errors: EINVAL (i out of
  /// range). libnbd: nbd_get_meta_context.
  std::string get_meta_context(std::size_t i) const;
  /// Whether opt_go / opt_info also send NBD_OPT_SET_META_CONTEXT for the
  /// requested contexts (default true). States: created or negotiating.
  /// Errors: EINVAL. libnbd 1.16+: nbd_set_request_meta_context.
  void set_request_meta_context(bool request);
  /// Any state. libnbd 1.16+: nbd_get_request_meta_context.
  bool get_request_meta_context() const;
  /// Which client-side checks commands get (`STRICT_...` flags; default
  /// STRICT_MASK, every check, as in libnbd). See
  /// docs/errors-and-strict-mode.md. Any state. Errors:
  /// EINVAL (bits outside STRICT_MASK). libnbd: nbd_set_strict_mode.
  void set_strict_mode(std::uint32_t flags);
  /// Any state. libnbd: nbd_get_strict_mode.
  std::uint32_t get_strict_mode() const;
  /// Whether reads guarantee the buffer never keeps stale memory (default
  /// true): a rejected read zeroes it at once, a failed one before its
  /// completion runs, and a successful one was written whole. Unlike
  /// libnbd, a successful read costs no memset; a failed one keeps no
  /// partial data. See docs/pread-initialize.md. Any state; applies to
  /// reads queued afterwards. libnbd: nbd_set_pread_initialize.
  void set_pread_initialize(bool zero_first);
  /// Any state. libnbd: nbd_get_pread_initialize.
  bool get_pread_initialize() const;
  /// Option mode (default off): connecting stops in state *negotiating* so
  /// that `opt_...` calls can run before opt_go. States: created. Errors:
  /// EINVAL. libnbd: nbd_set_opt_mode.
  void set_opt_mode(bool enable);
  /// Any state. libnbd: nbd_get_opt_mode.
  bool get_opt_mode() const;
  /// Whether to ask the server for its block size constraints (default
  /// true). States: created or negotiating. Errors: EINVAL. libnbd:
  /// nbd_set_request_block_size.
  void set_request_block_size(bool request);
  /// Any state. libnbd: nbd_get_request_block_size.
  bool get_request_block_size() const;
  /// Whether to ask for the export's canonical name and description
  /// (NBD_INFO_NAME / NBD_INFO_DESCRIPTION; default false). States: created
  /// or negotiating. Errors: EINVAL. libnbd: nbd_set_full_info.
  void set_full_info(bool request);
  /// Any state. libnbd: nbd_get_full_info.
  bool get_full_info() const;
  /// Debug messages on (default: on when NBDCPP_DEBUG is set and not "0").
  /// Any state. libnbd: nbd_set_debug (which reads LIBNBD_DEBUG).
  void set_debug(bool enable);
  /// Any state. libnbd: nbd_get_debug.
  bool get_debug() const;
  /// Sends debug messages to cb instead of stderr (only while debug is on).
  /// Any state. libnbd: nbd_set_debug_callback.
  void set_debug_callback(DebugCallback cb);
  /// Back to stderr. Any state. libnbd: nbd_clear_debug_callback.
  void clear_debug_callback();
  /// A name for debug messages. Any state. libnbd: nbd_set_handle_name.
  void set_handle_name(std::string_view name);
  /// The name set, or "" (libnbd makes up "nbd1", "nbd2", ...; nbdcpp
  /// prints "nbd" in debug messages instead). Any state. libnbd:
  /// nbd_get_handle_name.
  std::string get_handle_name() const;
  /// Stores a value for the caller; returns the previous one, like libnbd.
  /// Any state. libnbd: nbd_set_private_data.
  std::uintptr_t set_private_data(std::uintptr_t data);
  /// Any state. libnbd: nbd_get_private_data.
  std::uintptr_t get_private_data() const;
  /// Choose the transport (default: automatic = io_uring with a fallback to
  /// the poll()-based socket transport; NBDCPP_TRANSPORT=uring|socket in the
  /// environment overrides automatic). States: created. Errors: EINVAL.
  /// nbdcpp only.
  void set_transport(TransportKind kind);
  /// "io_uring", "socket", or "" before a connection exists. Any state.
  /// nbdcpp only.
  std::string get_transport_name() const;
  /// Reply batching (default on; io_uring only, kernel 5.17+). With 8 or
  /// more commands in flight whose read payloads are small (together at
  /// most 256 KiB), the receive waits a short time, 0.75 us per command in
  /// flight and at most 50 us, then takes whatever replies have arrived,
  /// instead of waking for each one. Against nbdkit at QD 64 this costs
  /// 30 % less CPU per command at the same throughput; at QD 16, 20 % less
  /// CPU for 20 % fewer commands per second (docs/performance.md). It
  /// pauses by itself while waiting gathers few more replies than not
  /// waiting would (qemu-nbd), and is not used with TLS. A reply may
  /// complete up to 50 us later: turn it off when each reply's latency
  /// matters more than CPU. Any state; takes effect with the next receive.
  /// nbdcpp only.
  void set_reply_batching(bool on);
  /// Any state. nbdcpp only.
  bool get_reply_batching() const;
  /// Whether to use TLS: TLS_DISABLE (the default), TLS_ALLOW (use it if
  /// the server agrees to NBD_OPT_STARTTLS, else carry on in plaintext) or
  /// TLS_REQUIRE (fail rather than speak plaintext; nbds:// URIs set it).
  /// States: created. Errors: EINVAL (not a TLS_* value), ENOTSUP (a value
  /// other than TLS_DISABLE in a build without TLS: see supports_tls).
  /// libnbd: nbd_set_tls.
  void set_tls(int tls);
  /// Any state. libnbd: nbd_get_tls.
  int get_tls() const;
  /// True if this build of nbdcpp has TLS (GnuTLS). libnbd: nbd_supports_tls.
  static bool supports_tls();
  /// True once a TLS session was set up with the server (in option mode,
  /// after opt_starttls; otherwise once connected). Errors: ENOTCONN
  /// before a connection exists. libnbd: nbd_get_tls_negotiated.
  bool get_tls_negotiated() const;
  /// A directory holding ca-cert.pem (the CA that signed the server's
  /// certificate), and optionally client-cert.pem + client-key.pem (for
  /// servers that check the client) and ca-crl.pem. Without one, nbdcpp
  /// looks in $HOME/.pki/libnbd, $HOME/.config/pki/libnbd (or, as root,
  /// /etc/pki/libnbd) like libnbd, then falls back to the system's CAs.
  /// Unused when a PSK file is set. States: created. libnbd:
  /// nbd_set_tls_certificates.
  void set_tls_certificates(std::string_view dir);
  /// Whether to check the server's certificate (default true). nbdcpp
  /// checks the chain against the CA always, and the server's name when
  /// one is known (set_tls_hostname, else the TCP host name); libnbd skips
  /// the check entirely on Unix sockets. States: created. libnbd:
  /// nbd_set_tls_verify_peer.
  void set_tls_verify_peer(bool verify);
  /// Any state. libnbd: nbd_get_tls_verify_peer.
  bool get_tls_verify_peer() const;
  /// The PSK identity looked up in the PSK file (default: the login name).
  /// States: created. libnbd: nbd_set_tls_username.
  void set_tls_username(std::string_view username);
  /// The name set, else the login name. Errors: the errno of getlogin_r /
  /// getpwuid when there is none. libnbd: nbd_get_tls_username.
  std::string get_tls_username() const;
  /// Use TLS-PSK with this file of "username:hexkey" lines (psktool's
  /// format) instead of certificates. States: created. libnbd:
  /// nbd_set_tls_psk_file.
  void set_tls_psk_file(std::string_view path);
  /// The name to check the server's certificate against and to send as
  /// SNI (default: the host name of connect_tcp / nbds://). States:
  /// created. libnbd 1.22+: nbd_set_tls_hostname.
  void set_tls_hostname(std::string_view hostname);
  /// The name set, else the TCP host name once connecting, else "". Any
  /// state. libnbd 1.22+: nbd_get_tls_hostname.
  std::string get_tls_hostname() const;
  /// Whether connect_uri may read local files named in the URI
  /// (tls-psk-file=, tls-certificates=); default false, as in libnbd.
  /// States: created. libnbd: nbd_set_uri_allow_local_file.
  void set_uri_allow_local_file(bool allow);
  /// Any state. libnbd: nbd_get_uri_allow_local_file.
  bool get_uri_allow_local_file() const;
  ///@}

  /// @name Connecting
  /// Every connect call needs state *created* and throws EINVAL in any
  /// other. The blocking forms return once the handle is *ready* (or
  /// *negotiating* in option mode) and throw the connection's or the
  /// handshake's errno otherwise (e.g. ECONNREFUSED, ENOENT, EPROTO,
  /// ENOTSUP when the server refuses the export); the handle is then dead.
  /// The aio_ forms only start: drive the handle (poll, aio_notify_*) until
  /// aio_is_connecting() is false; failures then show in aio_is_dead() and
  /// get_error().
  ///@{

  /// Connects to an NBD URI: nbd://host[:port]/export, nbd+unix:///export?socket=PATH,
  /// nbd+vsock://cid[:port]/export, and the nbds* forms, which require TLS.
  /// Query parameters: socket=, tls-certificates=DIR, tls-psk-file=FILE
  /// (both need set_uri_allow_local_file(true)), tls-username=,
  /// tls-hostname=, tls-verify-peer=; a user@ in the authority sets the TLS
  /// username. Errors: EINVAL (bad URI), EPERM (a local file parameter not
  /// allowed), ENOTSUP (nbds:// in a build without TLS), plus the above.
  /// Resolving a host name blocks, as in libnbd. libnbd: nbd_connect_uri.
  void connect_uri(std::string_view uri);
  /// Connects to a Unix domain socket. libnbd: nbd_connect_unix.
  void connect_unix(std::string_view path);
  /// Connects over TCP; port is a number or a service name. Name
  /// resolution (getaddrinfo) blocks. libnbd: nbd_connect_tcp.
  void connect_tcp(std::string_view host, std::string_view port);
  /// Runs argv (searched on PATH) as a subprocess speaking NBD on its
  /// stdin/stdout (e.g. nbdkit -s --exit-with-parent). Errors:
  /// EINVAL (empty argv), the errno of fork/exec. libnbd:
  /// nbd_connect_command.
  void connect_command(const std::vector<std::string>& argv);
  /// Runs argv as a subprocess with systemd socket activation (LISTEN_PID,
  /// LISTEN_FDS=1, the listening socket on fd 3) and connects to it; for
  /// servers such as qemu-nbd and nbdkit. Errors: EINVAL (empty argv), the
  /// errno of socket/fork/exec. libnbd: nbd_connect_systemd_socket_activation.
  void connect_systemd_socket_activation(const std::vector<std::string>& argv);
  /// Uses an already connected socket. fd stays the caller's: nbdcpp uses a
  /// duplicate. Errors: EBADF and the errno of fcntl(F_DUPFD_CLOEXEC).
  /// libnbd: nbd_connect_socket (which takes ownership of fd).
  void connect_socket(int fd);
  /// Starts connect_uri. libnbd: nbd_aio_connect_uri.
  void aio_connect_uri(std::string_view uri);
  /// Starts connect_unix. libnbd: nbd_aio_connect_unix.
  void aio_connect_unix(std::string_view path);
  /// Starts connect_tcp (resolving the name blocks). libnbd:
  /// nbd_aio_connect_tcp.
  void aio_connect_tcp(std::string_view host, std::string_view port);
  /// Starts connect_command (the subprocess starts at once). libnbd:
  /// nbd_aio_connect_command.
  void aio_connect_command(const std::vector<std::string>& argv);
  /// Starts connect_systemd_socket_activation. libnbd:
  /// nbd_aio_connect_systemd_socket_activation.
  void aio_connect_systemd_socket_activation(const std::vector<std::string>& argv);
  /// Starts connect_socket. libnbd: nbd_aio_connect_socket.
  void aio_connect_socket(int fd);
  /// Sends signum (0 means SIGTERM) to the server started by
  /// connect_command / socket activation. Any state. Errors: ESRCH (no
  /// subprocess), the errno of kill(2). libnbd: nbd_kill_subprocess.
  void kill_subprocess(int signum);
  /// The subprocess's pid. Any state. Errors: ESRCH (no subprocess).
  /// libnbd (after 1.14): nbd_get_subprocess_pid.
  int get_subprocess_pid() const;
  ///@}

  /// @name Option mode
  /// After set_opt_mode(true), connecting stops in state *negotiating* and
  /// these send one NBD_OPT_* each. All need state *negotiating*: ENOTCONN
  /// while *created* or *connecting*, EINVAL in any other state, EBUSY
  /// while another option is in progress. The server's refusal arrives as
  /// an errno: ENOTSUP (unsupported, refused by policy, platform, TLS
  /// required), ENOENT (unknown export), EINVAL (invalid, block size
  /// required, too big), ESHUTDOWN; a broken reply as EPROTO, a lost
  /// connection as ENOTCONN. The `aio_opt_...` forms return at once and report
  /// through the completion callback (once, with *error set on failure).
  ///@{

  /// NBD_OPT_GO with the export name and meta contexts set: on success the
  /// handle is *ready*; on a refusal it stays *negotiating*. libnbd:
  /// nbd_opt_go.
  void opt_go();
  /// NBD_OPT_ABORT, then waits for the connection to close (state
  /// *closed*). libnbd: nbd_opt_abort.
  void opt_abort();
  /// NBD_OPT_LIST: calls cb once per export. Returns how many exports the
  /// server listed. libnbd: nbd_opt_list.
  int opt_list(ListCallback cb);
  /// NBD_OPT_INFO for the export name set: afterwards get_size, `can_...` and
  /// friends answer for that export while the handle stays *negotiating*.
  /// libnbd: nbd_opt_info.
  void opt_info();
  /// NBD_OPT_LIST_META_CONTEXT for the contexts added with
  /// add_meta_context; cb gets each one the server has. Returns the count.
  /// libnbd: nbd_opt_list_meta_context.
  int opt_list_meta_context(ContextCallback cb);
  /// As opt_list_meta_context with explicit queries. libnbd 1.16+:
  /// nbd_opt_list_meta_context_queries.
  int opt_list_meta_context_queries(const std::vector<std::string>& queries, ContextCallback cb);
  /// NBD_OPT_SET_META_CONTEXT for the added contexts; the ones the server
  /// selects are what block_status reports. Errors also: ENOTSUP (no
  /// structured replies). Returns the count. libnbd 1.16+:
  /// nbd_opt_set_meta_context.
  int opt_set_meta_context(ContextCallback cb);
  /// As opt_set_meta_context with explicit queries. libnbd 1.16+:
  /// nbd_opt_set_meta_context_queries.
  int opt_set_meta_context_queries(const std::vector<std::string>& queries, ContextCallback cb);
  /// NBD_OPT_STRUCTURED_REPLY: true if the server agreed, false if it
  /// declined (a refusal is an answer, not an error). libnbd 1.16+:
  /// nbd_opt_structured_reply.
  bool opt_structured_reply();
  /// NBD_OPT_EXTENDED_HEADERS: true if the server agreed, false if it
  /// declined. libnbd 1.18+: nbd_opt_extended_headers.
  bool opt_extended_headers();
  /// NBD_OPT_STARTTLS, then the TLS handshake with the set_tls_*
  /// credentials: true if the connection is now encrypted, false if the
  /// server declined (the connection stays plaintext and usable). What was
  /// negotiated before (structured replies, meta contexts, export info) is
  /// forgotten, as proto.md requires. Works whatever set_tls says. Errors
  /// also: EINVAL (TLS already negotiated), ENOTSUP (a build without TLS),
  /// EIO and the credential errors (a failed handshake kills the handle).
  /// libnbd 1.16+: nbd_opt_starttls.
  bool opt_starttls();
  /// Starts opt_go. libnbd: nbd_aio_opt_go.
  void aio_opt_go(CompletionCallback cb = {});
  /// Starts opt_abort. libnbd: nbd_aio_opt_abort.
  void aio_opt_abort();
  /// Starts opt_list. libnbd: nbd_aio_opt_list.
  void aio_opt_list(ListCallback list, CompletionCallback cb = {});
  /// Starts opt_info. libnbd: nbd_aio_opt_info.
  void aio_opt_info(CompletionCallback cb = {});
  /// Starts opt_list_meta_context. libnbd: nbd_aio_opt_list_meta_context.
  void aio_opt_list_meta_context(ContextCallback ctx, CompletionCallback cb = {});
  /// Starts opt_list_meta_context_queries. libnbd 1.16+:
  /// nbd_aio_opt_list_meta_context_queries.
  void aio_opt_list_meta_context_queries(const std::vector<std::string>& queries,
                                         ContextCallback ctx, CompletionCallback cb = {});
  /// Starts opt_set_meta_context. libnbd 1.16+: nbd_aio_opt_set_meta_context.
  void aio_opt_set_meta_context(ContextCallback ctx, CompletionCallback cb = {});
  /// Starts opt_set_meta_context_queries. libnbd 1.16+:
  /// nbd_aio_opt_set_meta_context_queries.
  void aio_opt_set_meta_context_queries(const std::vector<std::string>& queries,
                                        ContextCallback ctx, CompletionCallback cb = {});
  /// Starts opt_structured_reply (a refusal arrives as *error).
  /// libnbd 1.16+: nbd_aio_opt_structured_reply.
  void aio_opt_structured_reply(CompletionCallback cb = {});
  /// Starts opt_extended_headers. libnbd 1.18+:
  /// nbd_aio_opt_extended_headers.
  void aio_opt_extended_headers(CompletionCallback cb = {});
  /// Starts opt_starttls (a refusal arrives as *error = ENOTSUP). libnbd
  /// 1.16+: nbd_aio_opt_starttls.
  void aio_opt_starttls(CompletionCallback cb = {});
  ///@}

  /// @name Commands, blocking
  /// Each queues the command (exactly like its aio_ form, with the same
  /// checks and errors: see "Commands, asynchronous"), drives the handle
  /// until it completes, and throws the command's errno if it failed.
  /// Calling one from inside a callback throws EDEADLK.
  ///@{

  /// Reads buf.size() bytes at offset into buf. libnbd: nbd_pread.
  void pread(std::span<std::uint8_t> buf, std::uint64_t offset, std::uint32_t flags = 0);
  /// Reads with structured replies, calling chunk for each piece. libnbd:
  /// nbd_pread_structured.
  void pread_structured(std::span<std::uint8_t> buf, std::uint64_t offset, ChunkCallback chunk,
                        std::uint32_t flags = 0);
  /// Writes buf at offset. libnbd: nbd_pwrite.
  void pwrite(std::span<const std::uint8_t> buf, std::uint64_t offset, std::uint32_t flags = 0);
  /// NBD_CMD_FLUSH. libnbd: nbd_flush.
  void flush(std::uint32_t flags = 0);
  /// NBD_CMD_TRIM of count bytes at offset. libnbd: nbd_trim.
  void trim(std::uint64_t count, std::uint64_t offset, std::uint32_t flags = 0);
  /// NBD_CMD_CACHE (prefetch). libnbd: nbd_cache.
  void cache(std::uint64_t count, std::uint64_t offset, std::uint32_t flags = 0);
  /// NBD_CMD_WRITE_ZEROES. libnbd: nbd_zero.
  void zero(std::uint64_t count, std::uint64_t offset, std::uint32_t flags = 0);
  /// NBD_CMD_BLOCK_STATUS, reporting 32-bit extents. libnbd:
  /// nbd_block_status.
  void block_status(std::uint64_t count, std::uint64_t offset, ExtentCallback extent,
                    std::uint32_t flags = 0);
  /// NBD_CMD_BLOCK_STATUS, reporting 64-bit extents. libnbd 1.18+:
  /// nbd_block_status_64.
  void block_status_64(std::uint64_t count, std::uint64_t offset, Extent64Callback extent,
                       std::uint32_t flags = 0);
  /// Sends NBD_CMD_DISC after the commands in flight (or, with
  /// SHUTDOWN_ABANDON_PENDING, fails those not yet sent) and waits for the
  /// connection to close. In option mode it sends NBD_OPT_ABORT instead.
  /// On a handle that is not connected, dead or closed it does nothing.
  /// Errors: EINVAL (flags outside SHUTDOWN_MASK). libnbd: nbd_shutdown.
  void shutdown(std::uint32_t flags = 0);
  ///@}

  /// @name Commands, asynchronous
  /// Each checks its arguments, queues one command and returns its cookie
  /// (>= 1, increasing per handle, never spent on a rejected call) at once.
  /// The completion callback, if any, runs exactly once, later, on the
  /// thread driving the handle; buffers must stay valid until then.
  ///
  /// States: *ready* or *processing*. Errors, in the order checked: ENOTCONN
  /// (not connected yet), EINVAL (dead, closed or shutting down); EINVAL
  /// (flags outside CMD_FLAG_MASK); with STRICT_COMMANDS: EPERM (a write,
  /// trim or zero on a read-only export), EINVAL (the server lacks flush,
  /// trim, cache or zero), ENOTSUP (block status without a negotiated meta
  /// context); with STRICT_FLAGS: EINVAL (a flag the command does not take
  /// or the server did not advertise); with STRICT_ZERO_SIZE: EINVAL
  /// (count 0); with STRICT_BOUNDS: ENOSPC (pwrite, zero) or EINVAL (the
  /// others) past the end of the export; with STRICT_ALIGN: EINVAL
  /// (unaligned to the minimum block size); ERANGE (a read or write over
  /// 64 MiB, or with STRICT_PAYLOAD a write over get_block_size(SIZE_PAYLOAD)).
  /// The command's own result arrives in the completion: the server's error
  /// mapped to errno (EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW,
  /// ENOTSUP, ESHUTDOWN), EPROTO for a protocol violation, ENOTCONN when
  /// the connection dies or the handle is closed first.
  ///@{

  /// Reads buf.size() bytes at offset into buf (all zeroes if it fails,
  /// unless set_pread_initialize(false)). Flags: none. libnbd: nbd_aio_pread.
  std::uint64_t aio_pread(std::span<std::uint8_t> buf, std::uint64_t offset,
                          CompletionCallback cb = {}, std::uint32_t flags = 0);
  /// aio_pread without exceptions: returns 0 and sets ec instead.
  std::uint64_t aio_pread(std::span<std::uint8_t> buf, std::uint64_t offset,
                          CompletionCallback cb, std::uint32_t flags,
                          std::error_code& ec) noexcept;
  /// A read reporting each structured reply chunk to chunk (one data chunk
  /// when structured replies are off). Flags: CMD_FLAG_DF. libnbd:
  /// nbd_aio_pread_structured.
  std::uint64_t aio_pread_structured(std::span<std::uint8_t> buf, std::uint64_t offset,
                                     ChunkCallback chunk, CompletionCallback cb = {},
                                     std::uint32_t flags = 0);
  /// Writes buf at offset; buf is sent straight from the caller's memory.
  /// Flags: CMD_FLAG_FUA. libnbd: nbd_aio_pwrite.
  std::uint64_t aio_pwrite(std::span<const std::uint8_t> buf, std::uint64_t offset,
                           CompletionCallback cb = {}, std::uint32_t flags = 0);
  /// aio_pwrite without exceptions: returns 0 and sets ec instead.
  std::uint64_t aio_pwrite(std::span<const std::uint8_t> buf, std::uint64_t offset,
                           CompletionCallback cb, std::uint32_t flags,
                           std::error_code& ec) noexcept;
  /// NBD_CMD_FLUSH. Flags: none. libnbd: nbd_aio_flush.
  std::uint64_t aio_flush(CompletionCallback cb = {}, std::uint32_t flags = 0);
  /// NBD_CMD_TRIM. Flags: CMD_FLAG_FUA. libnbd: nbd_aio_trim.
  std::uint64_t aio_trim(std::uint64_t count, std::uint64_t offset, CompletionCallback cb = {},
                         std::uint32_t flags = 0);
  /// NBD_CMD_CACHE. Flags: none. libnbd: nbd_aio_cache.
  std::uint64_t aio_cache(std::uint64_t count, std::uint64_t offset, CompletionCallback cb = {},
                          std::uint32_t flags = 0);
  /// NBD_CMD_WRITE_ZEROES. Flags: CMD_FLAG_FUA, CMD_FLAG_NO_HOLE,
  /// CMD_FLAG_FAST_ZERO (a server that cannot zero fast fails with
  /// ENOTSUP). libnbd: nbd_aio_zero.
  std::uint64_t aio_zero(std::uint64_t count, std::uint64_t offset, CompletionCallback cb = {},
                         std::uint32_t flags = 0);
  /// NBD_CMD_BLOCK_STATUS; extent runs once per meta context answered.
  /// Flags: CMD_FLAG_REQ_ONE. libnbd: nbd_aio_block_status.
  std::uint64_t aio_block_status(std::uint64_t count, std::uint64_t offset, ExtentCallback extent,
                                 CompletionCallback cb = {}, std::uint32_t flags = 0);
  /// NBD_CMD_BLOCK_STATUS with 64-bit extents. Flags: CMD_FLAG_REQ_ONE.
  /// libnbd 1.18+: nbd_aio_block_status_64.
  std::uint64_t aio_block_status_64(std::uint64_t count, std::uint64_t offset,
                                    Extent64Callback extent, CompletionCallback cb = {},
                                    std::uint32_t flags = 0);
  /// Queues NBD_CMD_DISC: no command may be queued after it; the server
  /// closes once the commands before it are answered. With
  /// SHUTDOWN_ABANDON_PENDING, commands not yet sent complete with ENOTCONN
  /// now. States: *ready* or *processing*. Errors: EINVAL (flags), ENOTCONN /
  /// EINVAL (state, as for commands). libnbd: nbd_aio_disconnect.
  void aio_disconnect(std::uint32_t flags = 0);
  ///@}

  /// @name Driving the handle
  /// See docs/event-loops.md. The aio_notify_* calls and poll run
  /// callbacks; calling them from inside a callback throws EDEADLK.
  ///@{

  /// The fd to poll: the io_uring ring fd or the socket (while connecting,
  /// the socket being connected). It can change between calls; ask again
  /// each time. States: connecting to closed. Errors: EINVAL (no connection:
  /// created, or after the connection ended). libnbd: nbd_aio_get_fd.
  int aio_get_fd() const;
  /// AIO_DIRECTION_READ / WRITE / BOTH: which events on aio_get_fd matter,
  /// or 0 when the handle waits for nothing. With io_uring, WRITE means
  /// "call aio_notify_write() to submit the queued batch" (the ring fd
  /// always polls writable) and READ "completions are due". Any state.
  /// libnbd: nbd_aio_get_direction.
  unsigned aio_get_direction() const;
  /// aio_get_fd polled readable (or hung up): receive and process what
  /// arrived, running callbacks. Errors: EDEADLK, errors of the connection
  /// (the handle dies: see get_error). libnbd: nbd_aio_notify_read.
  void aio_notify_read();
  /// aio_get_fd polled writable: send (socket) or submit (io_uring) what
  /// is queued. Errors as aio_notify_read. libnbd: nbd_aio_notify_write.
  void aio_notify_write();
  /// aio_notify_read without exceptions.
  void aio_notify_read(std::error_code& ec) noexcept;
  /// aio_notify_write without exceptions.
  void aio_notify_write(std::error_code& ec) noexcept;
  /// Waits up to timeout ms (-1 forever) and makes progress. Returns 1 if
  /// something happened, 0 on timeout. States: connecting, negotiating,
  /// ready, processing. Errors: ENOTCONN (created), EINVAL (dead or closed:
  /// nothing to poll for, as in libnbd), EDEADLK (called from a callback),
  /// the errno of poll / io_uring_enter. libnbd: nbd_poll.
  int poll(int timeout);
  /// poll without exceptions: returns -1 and sets ec instead.
  int poll(int timeout, std::error_code& ec) noexcept;
  /// As poll, also returning (with 1) when fd polls readable, so a loop can
  /// wait for the handle and one more fd. libnbd (after 1.14): nbd_poll2.
  int poll2(int fd, int timeout);

  /// True while *created*. libnbd: nbd_aio_is_created.
  bool aio_is_created() const;
  /// True while connecting or in the handshake. libnbd:
  /// nbd_aio_is_connecting.
  bool aio_is_connecting() const;
  /// True in option mode, waiting for an `opt_...` call. libnbd:
  /// nbd_aio_is_negotiating.
  bool aio_is_negotiating() const;
  /// True when connected with no command in flight. libnbd:
  /// nbd_aio_is_ready.
  bool aio_is_ready() const;
  /// True when connected with commands in flight. libnbd:
  /// nbd_aio_is_processing.
  bool aio_is_processing() const;
  /// True once the connection failed; get_error says why. libnbd:
  /// nbd_aio_is_dead.
  bool aio_is_dead() const;
  /// True once the connection closed cleanly (shutdown, opt_abort).
  /// libnbd: nbd_aio_is_closed.
  bool aio_is_closed() const;
  /// Commands queued or awaiting replies (not those completed but not yet
  /// retired). Any state. libnbd: nbd_aio_in_flight.
  std::size_t aio_in_flight() const;
  /// false while the command is in flight; true once it completed
  /// successfully (it is then retired); throws nbd::Error with the
  /// command's errno if it failed (also retiring it), and EINVAL for a
  /// cookie that is unknown or already retired (libnbd keeps answering
  /// "not finished" there). Any state. libnbd: nbd_aio_command_completed.
  bool aio_command_completed(std::uint64_t cookie);
  /// aio_command_completed without exceptions: false with ec set on error.
  bool aio_command_completed(std::uint64_t cookie, std::error_code& ec) noexcept;
  /// The cookie of a completed command not yet retired, or 0 if there is none
  /// (throws EINVAL when nothing is in flight either, like libnbd). Any
  /// state. libnbd: nbd_aio_peek_command_completed.
  std::uint64_t aio_peek_command_completed();
  ///@}

  /// @name What the server told us
  /// The export's properties, known once connected, or in option mode
  /// after a successful opt_info. Errors: ENOTCONN (not known yet), EINVAL
  /// (dead or closed).
  ///@{

  /// The export size in bytes. libnbd: nbd_get_size.
  std::int64_t get_size() const;
  /// The export is read-only (writes, trims and zeroes fail). libnbd:
  /// nbd_is_read_only.
  bool is_read_only() const;
  /// The server takes NBD_CMD_FLUSH. libnbd: nbd_can_flush.
  bool can_flush() const;
  /// The server takes CMD_FLAG_FUA. libnbd: nbd_can_fua.
  bool can_fua() const;
  /// The server takes NBD_CMD_TRIM. libnbd: nbd_can_trim.
  bool can_trim() const;
  /// The server takes NBD_CMD_WRITE_ZEROES. libnbd: nbd_can_zero.
  bool can_zero() const;
  /// The server takes CMD_FLAG_FAST_ZERO. libnbd: nbd_can_fast_zero.
  bool can_fast_zero() const;
  /// The server takes CMD_FLAG_DF (and structured replies are on). libnbd:
  /// nbd_can_df.
  bool can_df() const;
  /// Several connections to this export see one another's writes (after
  /// a flush), so they may be used in parallel. libnbd: nbd_can_multi_conn.
  bool can_multi_conn() const;
  /// The server takes NBD_CMD_CACHE. libnbd: nbd_can_cache.
  bool can_cache() const;
  /// The server agreed to meta context name (e.g. base:allocation).
  /// libnbd: nbd_can_meta_context.
  bool can_meta_context(std::string_view name) const;
  /// The server says the export is rotational media (seeks are slow).
  /// libnbd: nbd_is_rotational.
  bool is_rotational() const;
  /// The server's block size constraint: SIZE_MINIMUM, SIZE_PREFERRED,
  /// SIZE_MAXIMUM (0 if not advertised), or SIZE_PAYLOAD (the largest write
  /// payload STRICT_PAYLOAD lets through: 32 MiB when the server states no
  /// maximum, else its maximum kept within 1 MiB .. 64 MiB, libnbd's rule). Errors also: EINVAL (unknown which). libnbd:
  /// nbd_get_block_size.
  std::int64_t get_block_size(int which) const;
  /// "oldstyle", "newstyle" or "newstyle-fixed". Errors: ENOTCONN
  /// before the handshake. libnbd: nbd_get_protocol.
  std::string get_protocol() const;
  /// Whether structured replies are in use. Any state. libnbd:
  /// nbd_get_structured_replies_negotiated.
  bool get_structured_replies_negotiated() const;
  /// Whether extended headers are in use. Any state. libnbd 1.18+:
  /// nbd_get_extended_headers_negotiated.
  bool get_extended_headers_negotiated() const;
  /// The name the server gave the export (servers send it when
  /// set_full_info(true) asked; without one, the name requested is
  /// returned if full info was asked for). Errors also: ENOTSUP (no name
  /// sent and full info not requested). libnbd:
  /// nbd_get_canonical_export_name.
  std::string get_canonical_export_name() const;
  /// The server's description of the export (with set_full_info(true)).
  /// Errors also: ENOTSUP (the server sent none). libnbd:
  /// nbd_get_export_description.
  std::string get_export_description() const;
  /// Bytes sent to the server so far. Any state. libnbd 1.16+:
  /// nbd_stats_bytes_sent.
  std::uint64_t stats_bytes_sent() const;
  /// Protocol messages (requests and options) sent. libnbd 1.16+:
  /// nbd_stats_chunks_sent.
  std::uint64_t stats_chunks_sent() const;
  /// Bytes received. libnbd 1.16+: nbd_stats_bytes_received.
  std::uint64_t stats_bytes_received() const;
  /// Replies and reply chunks received. libnbd 1.16+:
  /// nbd_stats_chunks_received.
  std::uint64_t stats_chunks_received() const;

  /// Why the handle died (its errno), or an empty error_code. Any state.
  /// In libnbd the last error is per thread (nbd_get_errno); in nbdcpp
  /// each failed call's errno is in its nbd::Error, and this keeps the
  /// connection's.
  std::error_code get_error() const;
  /// The message that goes with get_error(). libnbd: nbd_get_error.
  std::string get_error_message() const;
  ///@}

  struct Impl;

private:
  std::unique_ptr<Impl> impl_;
};

/// The library version, "MAJOR.MINOR.PATCH". libnbd: nbd_get_version.
NBDCPP_API const char* get_version();
/// "nbdcpp". libnbd: nbd_get_package_name.
NBDCPP_API const char* get_package_name();

} // namespace nbd
