// SPDX-License-Identifier: BSD-3-Clause
// Commands: argument and strict-mode checks in libnbd's order, cookies,
// aio_* and their blocking forms.

#include "api/handle_impl.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <limits>

namespace nbd {

namespace {

// libnbd's limit on one read or write payload.
constexpr std::uint64_t max_request_size = 64 * 1024 * 1024;

// The flags each call takes (libnbd's permitted flags per call).
std::uint32_t permitted_flags(std::uint16_t type, bool structured_read) {
  switch (type) {
  case wire::cmd_read: return structured_read ? CMD_FLAG_DF : 0;
  case wire::cmd_write: return CMD_FLAG_FUA | CMD_FLAG_PAYLOAD_LEN;
  case wire::cmd_trim: return CMD_FLAG_FUA;
  case wire::cmd_write_zeroes: return CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO;
  case wire::cmd_block_status: return CMD_FLAG_REQ_ONE;
  default: return 0; // flush, cache
  }
}

// A request out of bounds is ENOSPC for the calls that write (as a full
// local disk would say) and EINVAL for the others, as in libnbd.
int bounds_errno(std::uint16_t type) {
  return (type == wire::cmd_write || type == wire::cmd_trim || type == wire::cmd_write_zeroes)
             ? ENOSPC
             : EINVAL;
}

} // namespace

// The checks run in libnbd's order (its generated wrappers, then lib/rw.c):
// state, flags, the command against what the server advertised, then the
// range, then the size limits. The first failure wins.
void Handle::Impl::check_command(const char* fn, proto::CommandSpec& spec, std::uint32_t flags,
                                 bool structured_read_call) const {
  // flags is the caller's 32-bit value: spec.flags (16 bits, what goes on
  // the wire) is only set once the checks passed, so that bits beyond 16
  // are refused instead of silently cut off.
  require_transmission(fn);
  const auto& info = engine.info();
  const std::uint16_t type = spec.type;
  auto has = [&](std::uint16_t f) { return (info.eflags & f) != 0; };

  // Flags the call does not take: an error under STRICT_FLAGS, and always
  // for bits the 16-bit wire field cannot carry.
  if ((flags & ~permitted_flags(type, structured_read_call)) &&
      ((strict & STRICT_FLAGS) || flags > 0xffff))
    fail(EINVAL, fn, fmt::format("flags: invalid value for flag: {:#x}", flags));

  // PAYLOAD_LEN is ours to set under STRICT_AUTO_FLAG, from whether
  // extended headers are in use; otherwise the caller's value goes out.
  if (type == wire::cmd_write && (strict & STRICT_AUTO_FLAG)) {
    flags &= ~CMD_FLAG_PAYLOAD_LEN;
    if (engine.extended_headers()) flags |= CMD_FLAG_PAYLOAD_LEN;
  }

  // STRICT_COMMANDS: commands and flags the server did not advertise.
  if (strict & STRICT_COMMANDS) {
    auto need_fua = [&] {
      if ((flags & CMD_FLAG_FUA) && !has(wire::tflag_send_fua))
        fail(EINVAL, fn, "server does not support the FUA flag");
    };
    auto need_writable = [&] {
      if (has(wire::tflag_read_only)) fail(EPERM, fn, "server does not support write operations");
    };
    switch (type) {
    case wire::cmd_read:
      if ((flags & CMD_FLAG_DF) && !(has(wire::tflag_send_df) && engine.structured_replies()))
        fail(EINVAL, fn, "server does not support the DF flag");
      break;
    case wire::cmd_write:
      need_writable();
      need_fua();
      if (!(strict & STRICT_AUTO_FLAG) &&
          ((flags & CMD_FLAG_PAYLOAD_LEN) != 0) != engine.extended_headers())
        fail(EINVAL, fn, engine.extended_headers()
                             ? "PAYLOAD_LEN flag is required with extended headers"
                             : "PAYLOAD_LEN flag needs extended headers");
      break;
    case wire::cmd_flush:
      if (!has(wire::tflag_send_flush)) fail(EINVAL, fn, "server does not support flush operations");
      break;
    case wire::cmd_trim:
      if (!has(wire::tflag_send_trim)) fail(EINVAL, fn, "server does not support trim operations");
      need_writable();
      need_fua();
      break;
    case wire::cmd_cache:
      if (!has(wire::tflag_send_cache)) fail(EINVAL, fn, "server does not support cache operations");
      break;
    case wire::cmd_write_zeroes:
      if (!has(wire::tflag_send_write_zeroes)) fail(EINVAL, fn, "server does not support zero operations");
      need_writable();
      need_fua();
      if ((flags & CMD_FLAG_FAST_ZERO) && !has(wire::tflag_send_fast_zero))
        fail(EINVAL, fn, "server does not support the fast zero flag");
      break;
    case wire::cmd_block_status:
      if (!engine.structured_replies())
        fail(ENOTSUP, fn, "server does not support structured replies");
      if (engine.meta_contexts().empty())
        fail(ENOTSUP, fn, "did not negotiate any metadata contexts, either you did not call "
                          "add_meta_context before connecting or the server does not support it");
      break;
    default: break;
    }
  }
  spec.flags = static_cast<std::uint16_t>(flags);

  if (engine.phase() == proto::Phase::disconnecting)
    fail(EINVAL, fn, "cannot request more commands after NBD_CMD_DISC");

  // Range checks; flush has no range.
  if (type != wire::cmd_flush) {
    if ((strict & STRICT_ZERO_SIZE) && spec.count == 0) fail(EINVAL, fn, "count cannot be 0");
    if ((strict & STRICT_BOUNDS) && (spec.offset > info.size || spec.count > info.size - spec.offset))
      fail(bounds_errno(type), fn, "request out of bounds");
    if ((strict & STRICT_ALIGN) && info.block_size.minimum &&
        ((spec.offset | spec.count) & (info.block_size.minimum - 1)))
      fail(EINVAL, fn, "request is unaligned");
  }

  // Size limits: payloads up to 64 MiB, or under STRICT_PAYLOAD what the
  // server takes (get_block_size(SIZE_PAYLOAD)); other lengths up to what
  // the request header can carry.
  if (type == wire::cmd_read || type == wire::cmd_write) {
    std::uint64_t limit = max_request_size;
    if ((strict & STRICT_PAYLOAD) && type == wire::cmd_write) limit = payload_limit();
    if (spec.count > limit)
      fail(ERANGE, fn, fmt::format("request too large: maximum request size is {}", limit));
  } else if (!engine.extended_headers() && spec.count > std::numeric_limits<std::uint32_t>::max()) {
    fail(ERANGE, fn, "request too large: maximum request size is 4294967295");
  }
}

std::uint64_t Handle::Impl::submit(const char* fn, const proto::CommandSpec& spec,
                                   CommandRecord rec) {
  (void)fn;
  // Room for the record first: once the engine has the command it goes to
  // the wire, and its completion needs the record. The engine hands out a
  // free slot or the next new one.
  if (records.size() <= engine.slot_count()) records.resize(engine.slot_count() + 1);
  std::uint32_t slot = engine.submit(spec);
  rec.read_buf = spec.read_buf;
  rec.offset = spec.offset;
  records[slot] = std::move(rec);
  transport->flush();
  return engine.slot_cookie(slot);
}

bool Handle::Impl::command_completed(std::uint64_t cookie, int& err, std::string& why) {
  std::uint32_t slot = engine.find(cookie);
  if (slot == proto::CookieMap::npos) {
    err = EINVAL;
    why = fmt::format("invalid cookie {}: unknown or already retired", cookie);
    return true;
  }
  if (!engine.slot_done(slot) || !records[slot].dispatched) return false;
  err = records[slot].final_error;
  if (err) why = "command failed";
  engine.retire(slot);
  return true;
}

void Handle::Impl::wait_command(Lock& lock, const char* fn, std::uint64_t cookie) {
  run_until(lock, fn, [&] {
    auto slot = engine.find(cookie);
    return slot == proto::CookieMap::npos || (engine.slot_done(slot) && records[slot].dispatched);
  });
  int err = 0;
  std::string why;
  command_completed(cookie, err, why);
  if (err) fail(err, fn, err == ENOTCONN && !error_message.empty() ? error_message : why);
}

#define NBD_LOCK Impl::Lock lock(impl_->mu)

namespace {

template <typename F>
std::uint64_t noexcept_form(std::error_code& ec, F&& f) noexcept {
  try {
    ec.clear();
    return f();
  } catch (const Error& e) {
    ec = e.code();
  } catch (const std::bad_alloc&) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  } catch (...) {
    ec = std::make_error_code(std::errc::io_error);
  }
  return 0;
}

} // namespace

// --- aio_* ------------------------------------------------------------------------------

std::uint64_t Handle::Impl::queue_read(const char* fn, proto::CommandSpec& spec, std::uint32_t flags,
                                       bool structured_call, CommandRecord rec) {
  // pread_initialize: a read that is rejected or fails never leaves stale
  // memory in the buffer for the caller to mistake for data. A rejected
  // one is zeroed here; a failed one when it completes (on_command_done),
  // once nothing can still write into it. A successful one was written
  // whole (data, and zeroes for holes: the engine checks the coverage), so
  // it needs no memset, the cost libnbd pays on every read.
  auto zero = [&] {
    // An empty span may have a null data(): memset(nullptr, 0, 0) is UB.
    if (pread_initialize && !spec.read_buf.empty())
      std::memset(spec.read_buf.data(), 0, spec.read_buf.size());
  };
  try {
    check_command(fn, spec, flags, structured_call);
  } catch (...) {
    zero();
    throw;
  }
  rec.zero_on_error = pread_initialize;
  try {
    return submit(fn, spec, std::move(rec));
  } catch (...) {
    zero(); // out of memory: not queued either
    throw;
  }
}

std::uint64_t Handle::aio_pread(std::span<std::uint8_t> buf, std::uint64_t offset,
                                CompletionCallback cb, std::uint32_t flags) {
  NBD_LOCK;
  proto::CommandSpec spec{wire::cmd_read, static_cast<std::uint16_t>(flags), offset, buf.size(), buf, {}};
  return impl_->queue_read("aio_pread", spec, flags, false, CommandRecord{.completion = std::move(cb)});
}

std::uint64_t Handle::aio_pread(std::span<std::uint8_t> buf, std::uint64_t offset,
                                CompletionCallback cb, std::uint32_t flags,
                                std::error_code& ec) noexcept {
  return noexcept_form(ec, [&] { return aio_pread(buf, offset, std::move(cb), flags); });
}

std::uint64_t Handle::aio_pread_structured(std::span<std::uint8_t> buf, std::uint64_t offset,
                                           ChunkCallback chunk, CompletionCallback cb,
                                           std::uint32_t flags) {
  NBD_LOCK;
  proto::CommandSpec spec{wire::cmd_read, static_cast<std::uint16_t>(flags), offset, buf.size(), buf, {}};
  // Without structured replies the whole read arrives as one simple reply;
  // the chunk callback still sees it, as one data chunk (libnbd does this).
  return impl_->queue_read("aio_pread_structured", spec, flags, true,
                           CommandRecord{.completion = std::move(cb), .chunk = std::move(chunk)});
}

std::uint64_t Handle::aio_pwrite(std::span<const std::uint8_t> buf, std::uint64_t offset,
                                 CompletionCallback cb, std::uint32_t flags) {
  NBD_LOCK;
  proto::CommandSpec spec{wire::cmd_write, static_cast<std::uint16_t>(flags), offset, buf.size(), {}, buf};
  impl_->check_command("aio_pwrite", spec, flags);
  return impl_->submit("aio_pwrite", spec, CommandRecord{.completion = std::move(cb)});
}

std::uint64_t Handle::aio_pwrite(std::span<const std::uint8_t> buf, std::uint64_t offset,
                                 CompletionCallback cb, std::uint32_t flags,
                                 std::error_code& ec) noexcept {
  return noexcept_form(ec, [&] { return aio_pwrite(buf, offset, std::move(cb), flags); });
}

std::uint64_t Handle::aio_flush(CompletionCallback cb, std::uint32_t flags) {
  NBD_LOCK;
  proto::CommandSpec spec{wire::cmd_flush, static_cast<std::uint16_t>(flags), 0, 0, {}, {}};
  impl_->check_command("aio_flush", spec, flags);
  return impl_->submit("aio_flush", spec, CommandRecord{.completion = std::move(cb)});
}

std::uint64_t Handle::aio_trim(std::uint64_t count, std::uint64_t offset, CompletionCallback cb,
                               std::uint32_t flags) {
  NBD_LOCK;
  proto::CommandSpec spec{wire::cmd_trim, static_cast<std::uint16_t>(flags), offset, count, {}, {}};
  impl_->check_command("aio_trim", spec, flags);
  return impl_->submit("aio_trim", spec, CommandRecord{.completion = std::move(cb)});
}

std::uint64_t Handle::aio_cache(std::uint64_t count, std::uint64_t offset, CompletionCallback cb,
                                std::uint32_t flags) {
  NBD_LOCK;
  proto::CommandSpec spec{wire::cmd_cache, static_cast<std::uint16_t>(flags), offset, count, {}, {}};
  impl_->check_command("aio_cache", spec, flags);
  return impl_->submit("aio_cache", spec, CommandRecord{.completion = std::move(cb)});
}

std::uint64_t Handle::aio_zero(std::uint64_t count, std::uint64_t offset, CompletionCallback cb,
                               std::uint32_t flags) {
  NBD_LOCK;
  proto::CommandSpec spec{wire::cmd_write_zeroes, static_cast<std::uint16_t>(flags), offset, count, {}, {}};
  impl_->check_command("aio_zero", spec, flags);
  return impl_->submit("aio_zero", spec, CommandRecord{.completion = std::move(cb)});
}

std::uint64_t Handle::aio_block_status(std::uint64_t count, std::uint64_t offset,
                                       ExtentCallback extent, CompletionCallback cb,
                                       std::uint32_t flags) {
  NBD_LOCK;
  proto::CommandSpec spec{wire::cmd_block_status, static_cast<std::uint16_t>(flags), offset, count, {}, {}};
  impl_->check_command("aio_block_status", spec, flags);
  return impl_->submit("aio_block_status", spec,
                       CommandRecord{.completion = std::move(cb), .extent = std::move(extent)});
}

std::uint64_t Handle::aio_block_status_64(std::uint64_t count, std::uint64_t offset,
                                          Extent64Callback extent, CompletionCallback cb,
                                          std::uint32_t flags) {
  NBD_LOCK;
  proto::CommandSpec spec{wire::cmd_block_status, static_cast<std::uint16_t>(flags), offset, count, {}, {}};
  impl_->check_command("aio_block_status_64", spec, flags);
  return impl_->submit("aio_block_status_64", spec,
                       CommandRecord{.completion = std::move(cb), .extent64 = std::move(extent)});
}

void Handle::aio_disconnect(std::uint32_t flags) {
  NBD_LOCK;
  if (flags & ~SHUTDOWN_MASK) impl_->fail(EINVAL, "aio_disconnect", "invalid flags");
  impl_->require_transmission("aio_disconnect");
  if (flags & SHUTDOWN_ABANDON_PENDING) {
    // Only what the transport has not handed to the kernel may be dropped.
    impl_->transport->settle_send();
    impl_->engine.abandon_unsent(ENOTCONN);
  }
  impl_->engine.disconnect();
  impl_->transport->flush();
  impl_->after_io(); // abandoned commands complete now, on this thread
}

// --- completion ----------------------------------------------------------------------------

bool Handle::aio_command_completed(std::uint64_t cookie) {
  NBD_LOCK;
  int err = 0;
  std::string why;
  if (!impl_->command_completed(cookie, err, why)) return false;
  if (err) impl_->fail(err, "aio_command_completed", why);
  return true;
}

bool Handle::aio_command_completed(std::uint64_t cookie, std::error_code& ec) noexcept {
  return noexcept_form(ec, [&]() -> std::uint64_t { return aio_command_completed(cookie); }) != 0;
}

std::uint64_t Handle::aio_peek_command_completed() {
  NBD_LOCK;
  auto& done = impl_->completed;
  while (!done.empty()) {
    std::uint64_t cookie = done.front();
    if (impl_->engine.find(cookie) != proto::CookieMap::npos) return cookie;
    done.pop_front(); // already retired through aio_command_completed
  }
  if (impl_->engine.in_flight() == 0)
    impl_->fail(EINVAL, "aio_peek_command_completed", "no commands are in flight");
  return 0;
}

// --- blocking forms --------------------------------------------------------------------------

void Handle::pread(std::span<std::uint8_t> buf, std::uint64_t offset, std::uint32_t flags) {
  NBD_LOCK;
  impl_->wait_command(lock, "pread", aio_pread(buf, offset, {}, flags));
}

void Handle::pread_structured(std::span<std::uint8_t> buf, std::uint64_t offset,
                              ChunkCallback chunk, std::uint32_t flags) {
  NBD_LOCK;
  impl_->wait_command(lock, "pread_structured",
                      aio_pread_structured(buf, offset, std::move(chunk), {}, flags));
}

void Handle::pwrite(std::span<const std::uint8_t> buf, std::uint64_t offset, std::uint32_t flags) {
  NBD_LOCK;
  impl_->wait_command(lock, "pwrite", aio_pwrite(buf, offset, {}, flags));
}

void Handle::flush(std::uint32_t flags) {
  NBD_LOCK;
  impl_->wait_command(lock, "flush", aio_flush({}, flags));
}

void Handle::trim(std::uint64_t count, std::uint64_t offset, std::uint32_t flags) {
  NBD_LOCK;
  impl_->wait_command(lock, "trim", aio_trim(count, offset, {}, flags));
}

void Handle::cache(std::uint64_t count, std::uint64_t offset, std::uint32_t flags) {
  NBD_LOCK;
  impl_->wait_command(lock, "cache", aio_cache(count, offset, {}, flags));
}

void Handle::zero(std::uint64_t count, std::uint64_t offset, std::uint32_t flags) {
  NBD_LOCK;
  impl_->wait_command(lock, "zero", aio_zero(count, offset, {}, flags));
}

void Handle::block_status(std::uint64_t count, std::uint64_t offset, ExtentCallback extent,
                          std::uint32_t flags) {
  NBD_LOCK;
  impl_->wait_command(lock, "block_status",
                      aio_block_status(count, offset, std::move(extent), {}, flags));
}

void Handle::block_status_64(std::uint64_t count, std::uint64_t offset, Extent64Callback extent,
                             std::uint32_t flags) {
  NBD_LOCK;
  impl_->wait_command(lock, "block_status_64",
                      aio_block_status_64(count, offset, std::move(extent), {}, flags));
}

void Handle::shutdown(std::uint32_t flags) {
  NBD_LOCK;
  if (flags & ~SHUTDOWN_MASK) impl_->fail(EINVAL, "shutdown", "flags: invalid value for flag");
  bool extra = false;
  if (impl_->is_negotiating()) {
    // Nothing to flush yet: end the negotiation politely instead.
    aio_opt_abort();
  } else {
    impl_->require_transmission("shutdown");
    if (impl_->engine.phase() == proto::Phase::transmission) aio_disconnect(flags);
  }
  while (!impl_->is_closed() && !impl_->is_dead()) impl_->drive(-1, -1, extra);
}

} // namespace nbd
