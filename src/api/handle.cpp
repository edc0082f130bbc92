// SPDX-License-Identifier: BSD-3-Clause
// nbd::Handle: construction, settings, state predicates and queries.

#include "api/handle_impl.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace nbd {

namespace {

bool env_debug() {
  const char* v = std::getenv("NBDCPP_DEBUG");
  return v && *v && std::strcmp(v, "0") != 0;
}

} // namespace

Handle::Impl::Impl() : debug(env_debug()) {}

Handle::Impl::~Impl() {
  // Commands still in flight complete with ENOTCONN, after the transport
  // stopped touching their buffers, so every completion runs exactly once.
  Lock lock(mu);
  if (transport && !quiesced) {
    if (engine.phase() != proto::Phase::dead && engine.phase() != proto::Phase::closed)
      engine.die(ENOTCONN, "handle closed");
    after_io();
  } else {
    dispatch_events();
  }
  transport.reset();
  if (pid > 0) transport::reap_subprocess(pid, true);
}

void Handle::Impl::fail(int err, const char* fn, std::string_view what) const {
  throw Error(err, fmt::format("{}: {}", fn, what));
}

void Handle::Impl::require_created(const char* fn) const {
  if (!is_created()) fail(EINVAL, fn, "invalid state: the handle must be newly created");
}

bool Handle::Impl::is_connecting() const {
  if (connector) return true;
  auto p = engine.phase();
  return p == proto::Phase::handshake || p == proto::Phase::option_busy;
}

void Handle::Impl::require_transmission(const char* fn) const {
  // libnbd: ENOTCONN only before any connection; EINVAL in every other
  // state that cannot take a command (connecting, negotiating, dead,
  // closed). After NBD_CMD_DISC, command checks say why themselves.
  if (is_transmitting()) return;
  fail(is_created() ? ENOTCONN : EINVAL, fn,
       fmt::format("invalid state: {}: the handle must be connected with the server", state_name()));
}

const char* Handle::Impl::state_name() const {
  if (is_created()) return "created";
  if (is_connecting()) return "connecting";
  if (is_negotiating()) return "negotiating";
  if (is_dead()) return "dead";
  if (is_closed()) return "closed";
  return "ready";
}

std::uint64_t Handle::Impl::payload_limit() const {
  // libnbd's payload maximum (lib/flags.c, nbd_internal_set_payload): with
  // no server maximum, the 32 MiB proto.md says a client may count on; with
  // one, the server's maximum, but not below 1 MiB (proto.md lets a client
  // send payloads that large whatever the server advertised) nor above the
  // 64 MiB a single request may carry.
  const std::uint64_t max = engine.info().block_size.maximum;
  if (max == 0) return 32 * 1024 * 1024;
  return std::min<std::uint64_t>(64 * 1024 * 1024, std::max<std::uint64_t>(1024 * 1024, max));
}

void Handle::Impl::require_negotiating(const char* fn) const {
  if (is_negotiating()) return;
  if (is_dead() || is_closed())
    fail(EINVAL, fn, "invalid state: the connection is dead or closed");
  // libnbd: ENOTCONN only before any connection; EINVAL while connecting
  // (which includes an option exchange in progress) and in every later state.
  fail(is_created() ? ENOTCONN : EINVAL, fn,
       "invalid state: the handle must be negotiating (option mode)");
}

void Handle::Impl::debug_log(std::string_view context, std::string_view msg) {
  if (!debug) return;
  if (debug_callback) {
    debug_callback(context, msg);
    return;
  }
  fmt::print(stderr, "libnbdcpp: debug: {}: {}: {}\n",
             handle_name.empty() ? "nbd" : handle_name, context, msg);
}

// --- Handle -----------------------------------------------------------------------

Handle::Handle() : impl_(std::make_unique<Impl>()) {}
Handle::~Handle() = default;
Handle::Handle(Handle&&) noexcept = default;
Handle& Handle::operator=(Handle&&) noexcept = default;

#define NBD_LOCK Impl::Lock lock(impl_->mu)

// Settings that only make sense before the connection starts.
#define NBD_SETTING(fn)                                                                            \
  NBD_LOCK;                                                                                        \
  impl_->require_created(fn)

void Handle::set_export_name(std::string_view name) {
  NBD_LOCK;
  if (!impl_->is_created() && !impl_->is_negotiating())
    impl_->fail(EINVAL, "set_export_name", "invalid state: the handle must be newly created or negotiating");
  if (name.size() > wire::max_string)
    impl_->fail(ENAMETOOLONG, "set_export_name", "export name too long (NBD limit is 4096 bytes)");
  impl_->settings.export_name = name;
}
std::string Handle::get_export_name() const {
  NBD_LOCK;
  return impl_->settings.export_name;
}

void Handle::set_request_structured_replies(bool request) {
  NBD_SETTING("set_request_structured_replies");
  impl_->settings.request_structured_replies = request;
}
bool Handle::get_request_structured_replies() const {
  NBD_LOCK;
  return impl_->settings.request_structured_replies;
}

void Handle::set_request_extended_headers(bool request) {
  NBD_SETTING("set_request_extended_headers");
  impl_->settings.request_extended_headers = request;
}
bool Handle::get_request_extended_headers() const {
  NBD_LOCK;
  return impl_->settings.request_extended_headers;
}

void Handle::set_handshake_flags(std::uint32_t flags) {
  NBD_SETTING("set_handshake_flags");
  if (flags & ~HANDSHAKE_FLAG_MASK)
    impl_->fail(EINVAL, "set_handshake_flags", "invalid handshake flags");
  impl_->settings.handshake_flags = flags;
}
std::uint32_t Handle::get_handshake_flags() const {
  NBD_LOCK;
  // Once a newstyle server answered, the flags both sides agreed on
  // (libnbd masks its own with the server's).
  if (impl_->engine.handshake_flags_known()) return impl_->engine.client_flags();
  return impl_->settings.handshake_flags;
}

void Handle::add_meta_context(std::string_view name) {
  NBD_LOCK;
  if (!impl_->is_created() && !impl_->is_negotiating())
    impl_->fail(EINVAL, "add_meta_context", "invalid state: the handle must be newly created or negotiating");
  if (name.size() > wire::max_string)
    impl_->fail(ENAMETOOLONG, "add_meta_context", "meta context name too long");
  impl_->settings.meta_contexts.emplace_back(name);
}
void Handle::clear_meta_contexts() {
  NBD_LOCK;
  if (!impl_->is_created() && !impl_->is_negotiating())
    impl_->fail(EINVAL, "clear_meta_contexts", "invalid state: the handle must be newly created or negotiating");
  impl_->settings.meta_contexts.clear();
}
std::size_t Handle::get_nr_meta_contexts() const {
  NBD_LOCK;
  return impl_->settings.meta_contexts.size();
}
std::string Handle::get_meta_context(std::size_t i) const {
  NBD_LOCK;
  if (i >= impl_->settings.meta_contexts.size())
    impl_->fail(EINVAL, "get_meta_context", "index out of range");
  return impl_->settings.meta_contexts[i];
}

void Handle::set_request_meta_context(bool request) {
  NBD_LOCK;
  if (!impl_->is_created() && !impl_->is_negotiating())
    impl_->fail(EINVAL, "set_request_meta_context", "invalid state: the handle must be newly created or negotiating");
  impl_->settings.request_meta_context = request;
}
bool Handle::get_request_meta_context() const {
  NBD_LOCK;
  return impl_->settings.request_meta_context;
}

void Handle::set_strict_mode(std::uint32_t flags) {
  NBD_LOCK;
  if (flags & ~STRICT_MASK) impl_->fail(EINVAL, "set_strict_mode", "invalid strict mode flags");
  impl_->strict = flags;
}
std::uint32_t Handle::get_strict_mode() const {
  NBD_LOCK;
  return impl_->strict;
}

void Handle::set_pread_initialize(bool zero_first) {
  NBD_LOCK;
  impl_->pread_initialize = zero_first;
}
bool Handle::get_pread_initialize() const {
  NBD_LOCK;
  return impl_->pread_initialize;
}

void Handle::set_opt_mode(bool enable) {
  NBD_SETTING("set_opt_mode");
  impl_->settings.opt_mode = enable;
}
bool Handle::get_opt_mode() const {
  NBD_LOCK;
  return impl_->settings.opt_mode;
}

void Handle::set_request_block_size(bool request) {
  NBD_LOCK;
  if (!impl_->is_created() && !impl_->is_negotiating())
    impl_->fail(EINVAL, "set_request_block_size", "invalid state: the handle must be newly created or negotiating");
  impl_->settings.request_block_size = request;
}
bool Handle::get_request_block_size() const {
  NBD_LOCK;
  return impl_->settings.request_block_size;
}

void Handle::set_full_info(bool request) {
  NBD_LOCK;
  if (!impl_->is_created() && !impl_->is_negotiating())
    impl_->fail(EINVAL, "set_full_info", "invalid state: the handle must be newly created or negotiating");
  impl_->settings.full_info = request;
}
bool Handle::get_full_info() const {
  NBD_LOCK;
  return impl_->settings.full_info;
}

void Handle::set_debug(bool enable) {
  NBD_LOCK;
  impl_->debug = enable;
}
bool Handle::get_debug() const {
  NBD_LOCK;
  return impl_->debug;
}
void Handle::set_debug_callback(DebugCallback cb) {
  NBD_LOCK;
  impl_->debug_callback = std::move(cb);
}
void Handle::clear_debug_callback() {
  NBD_LOCK;
  impl_->debug_callback.reset();
}

void Handle::set_handle_name(std::string_view name) {
  NBD_LOCK;
  impl_->handle_name = name;
}
std::string Handle::get_handle_name() const {
  NBD_LOCK;
  return impl_->handle_name;
}

std::uintptr_t Handle::set_private_data(std::uintptr_t data) {
  NBD_LOCK;
  return std::exchange(impl_->private_data, data);
}
std::uintptr_t Handle::get_private_data() const {
  NBD_LOCK;
  return impl_->private_data;
}

void Handle::set_transport(TransportKind kind) {
  NBD_SETTING("set_transport");
  impl_->transport_kind = kind;
}
void Handle::set_reply_batching(bool on) {
  NBD_LOCK;
  impl_->reply_batching = on;
  if (impl_->transport) impl_->transport->set_reply_batching(on);
}
bool Handle::get_reply_batching() const {
  NBD_LOCK;
  return impl_->reply_batching;
}
std::string Handle::get_transport_name() const {
  NBD_LOCK;
  if (!impl_->transport) return "";
  return impl_->transport->kind() == transport::Kind::uring ? "io_uring" : "socket";
}

void Handle::set_tls(int tls) {
  NBD_SETTING("set_tls");
  if (tls < TLS_DISABLE || tls > TLS_REQUIRE) impl_->fail(EINVAL, "set_tls", "invalid TLS setting");
  if (tls != TLS_DISABLE && !tls::supported())
    impl_->fail(ENOTSUP, "set_tls", "nbdcpp was built without TLS support");
  impl_->tls = tls;
}
int Handle::get_tls() const {
  NBD_LOCK;
  return impl_->tls;
}
bool Handle::supports_tls() { return tls::supported(); }
bool Handle::get_tls_negotiated() const {
  NBD_LOCK;
  if (impl_->is_created() || impl_->connector)
    impl_->fail(ENOTCONN, "get_tls_negotiated", "invalid state: not connected");
  return impl_->engine.tls_negotiated();
}
void Handle::set_tls_certificates(std::string_view dir) {
  NBD_SETTING("set_tls_certificates");
  impl_->tls_config.certificates = dir;
}
void Handle::set_tls_verify_peer(bool verify) {
  NBD_SETTING("set_tls_verify_peer");
  impl_->tls_config.verify_peer = verify;
}
bool Handle::get_tls_verify_peer() const {
  NBD_LOCK;
  return impl_->tls_config.verify_peer;
}
void Handle::set_tls_username(std::string_view username) {
  NBD_SETTING("set_tls_username");
  impl_->tls_config.username = username;
}
std::string Handle::get_tls_username() const {
  NBD_LOCK;
  if (!impl_->tls_config.username.empty()) return impl_->tls_config.username;
  return tls::login_name();
}
void Handle::set_tls_psk_file(std::string_view path) {
  NBD_SETTING("set_tls_psk_file");
  impl_->tls_config.psk_file = path;
}
void Handle::set_tls_hostname(std::string_view hostname) {
  NBD_SETTING("set_tls_hostname");
  impl_->tls_config.hostname = hostname;
}
std::string Handle::get_tls_hostname() const {
  NBD_LOCK;
  return impl_->tls_config.hostname.empty() ? impl_->tcp_host : impl_->tls_config.hostname;
}
void Handle::set_uri_allow_local_file(bool allow) {
  NBD_SETTING("set_uri_allow_local_file");
  impl_->uri_allow_local_file = allow;
}
bool Handle::get_uri_allow_local_file() const {
  NBD_LOCK;
  return impl_->uri_allow_local_file;
}

// --- state ---------------------------------------------------------------------------

bool Handle::aio_is_created() const {
  NBD_LOCK;
  return impl_->is_created();
}
bool Handle::aio_is_connecting() const {
  NBD_LOCK;
  return impl_->is_connecting();
}
bool Handle::aio_is_negotiating() const {
  NBD_LOCK;
  return impl_->is_negotiating();
}
bool Handle::aio_is_ready() const {
  NBD_LOCK;
  return impl_->engine.phase() == proto::Phase::transmission && impl_->engine.in_flight() == 0;
}
bool Handle::aio_is_processing() const {
  NBD_LOCK;
  return impl_->is_transmitting() && !aio_is_ready();
}
bool Handle::aio_is_dead() const {
  NBD_LOCK;
  return impl_->is_dead();
}
bool Handle::aio_is_closed() const {
  NBD_LOCK;
  return impl_->is_closed();
}
std::size_t Handle::aio_in_flight() const {
  NBD_LOCK;
  return impl_->engine.in_flight();
}

std::error_code Handle::get_error() const {
  NBD_LOCK;
  return impl_->error ? std::error_code(impl_->error, std::generic_category()) : std::error_code();
}
std::string Handle::get_error_message() const {
  NBD_LOCK;
  return impl_->error_message;
}

// --- queries ------------------------------------------------------------------------------

namespace {

// libnbd answers these once the export is known: in transmission, or in
// option mode after a successful opt_info.
const proto::ExportInfo& known_info(const Handle::Impl& h, const char* fn) {
  auto p = h.engine.phase();
  if (h.engine.info_known() && p != proto::Phase::dead) return h.engine.info();
  if (h.is_dead() || h.is_closed())
    h.fail(EINVAL, fn, "invalid state: the connection is dead or closed");
  h.fail(ENOTCONN, fn, "invalid state: the export is not known yet (connect first, or opt_info)");
}

bool eflag(const Handle::Impl& h, const char* fn, std::uint16_t f) {
  return (known_info(h, fn).eflags & f) != 0;
}

} // namespace

std::int64_t Handle::get_size() const {
  NBD_LOCK;
  return static_cast<std::int64_t>(known_info(*impl_, "get_size").size);
}
bool Handle::is_read_only() const {
  NBD_LOCK;
  return eflag(*impl_, "is_read_only", wire::tflag_read_only);
}
bool Handle::can_flush() const {
  NBD_LOCK;
  return eflag(*impl_, "can_flush", wire::tflag_send_flush);
}
bool Handle::can_fua() const {
  NBD_LOCK;
  return eflag(*impl_, "can_fua", wire::tflag_send_fua);
}
bool Handle::can_trim() const {
  NBD_LOCK;
  return eflag(*impl_, "can_trim", wire::tflag_send_trim);
}
bool Handle::can_zero() const {
  NBD_LOCK;
  return eflag(*impl_, "can_zero", wire::tflag_send_write_zeroes);
}
bool Handle::can_fast_zero() const {
  NBD_LOCK;
  // A fast zero is a kind of zero: meaningless without WRITE_ZEROES.
  return eflag(*impl_, "can_fast_zero", wire::tflag_send_fast_zero) &&
         eflag(*impl_, "can_fast_zero", wire::tflag_send_write_zeroes);
}
bool Handle::can_df() const {
  NBD_LOCK;
  // DF only means something with structured replies (proto.md).
  return eflag(*impl_, "can_df", wire::tflag_send_df) && impl_->engine.structured_replies();
}
bool Handle::can_multi_conn() const {
  NBD_LOCK;
  return eflag(*impl_, "can_multi_conn", wire::tflag_can_multi_conn);
}
bool Handle::can_cache() const {
  NBD_LOCK;
  return eflag(*impl_, "can_cache", wire::tflag_send_cache);
}
bool Handle::is_rotational() const {
  NBD_LOCK;
  return eflag(*impl_, "is_rotational", wire::tflag_rotational);
}
bool Handle::can_meta_context(std::string_view name) const {
  NBD_LOCK;
  known_info(*impl_, "can_meta_context");
  for (const auto& m : impl_->engine.meta_contexts())
    if (m.name == name) return true;
  return false;
}

std::int64_t Handle::get_block_size(int which) const {
  NBD_LOCK;
  const auto& bs = known_info(*impl_, "get_block_size").block_size;
  switch (which) {
  case SIZE_MINIMUM: return bs.minimum;
  case SIZE_PREFERRED: return bs.preferred;
  case SIZE_MAXIMUM: return bs.maximum;
  case SIZE_PAYLOAD: return static_cast<std::int64_t>(impl_->payload_limit());
  default: impl_->fail(EINVAL, "get_block_size", "invalid size type");
  }
}

std::string Handle::get_protocol() const {
  NBD_LOCK;
  if (impl_->is_created()) impl_->fail(ENOTCONN, "get_protocol", "invalid state: not connected");
  if (impl_->is_dead() || impl_->is_connecting())
    impl_->fail(EINVAL, "get_protocol", fmt::format("invalid state: {}", impl_->state_name()));
  return impl_->engine.protocol();
}
bool Handle::get_structured_replies_negotiated() const {
  NBD_LOCK;
  return impl_->engine.structured_replies();
}
bool Handle::get_extended_headers_negotiated() const {
  NBD_LOCK;
  return impl_->engine.extended_headers();
}
std::string Handle::get_canonical_export_name() const {
  NBD_LOCK;
  const auto& info = known_info(*impl_, "get_canonical_export_name");
  if (!info.have_name) {
    if (!impl_->settings.full_info)
      impl_->fail(ENOTSUP, "get_canonical_export_name", "server did not send a name (try set_full_info)");
    return impl_->settings.export_name;
  }
  return info.canonical_name;
}
std::string Handle::get_export_description() const {
  NBD_LOCK;
  const auto& info = known_info(*impl_, "get_export_description");
  if (!info.have_description)
    impl_->fail(ENOTSUP, "get_export_description", "server did not send a description");
  return info.description;
}

std::uint64_t Handle::stats_bytes_sent() const {
  NBD_LOCK;
  return impl_->engine.bytes_sent();
}
std::uint64_t Handle::stats_chunks_sent() const {
  NBD_LOCK;
  return impl_->engine.chunks_sent();
}
std::uint64_t Handle::stats_bytes_received() const {
  NBD_LOCK;
  return impl_->engine.bytes_received();
}
std::uint64_t Handle::stats_chunks_received() const {
  NBD_LOCK;
  return impl_->engine.chunks_received();
}

const char* get_version() { return "0.1.0"; }
const char* get_package_name() { return "nbdcpp"; }

} // namespace nbd
