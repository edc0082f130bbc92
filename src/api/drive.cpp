// SPDX-License-Identifier: BSD-3-Clause
// Driving a handle: poll / aio_notify_*, and turning engine events into
// callbacks.

#include "api/handle_impl.hpp"

#include <fmt/format.h>

#include <poll.h>

#include <algorithm>
#include <cstring>
#include <cerrno>
#include <limits>

namespace nbd {

void Handle::Impl::check_drive(const char* fn) const {
  // Driving from inside a callback would run callbacks inside callbacks and
  // reorder completions; queueing commands from a callback is fine.
  if (dispatching) fail(EDEADLK, fn, "cannot drive the handle from inside a callback");
}

int Handle::Impl::drive(int timeout, int extra_fd, bool& extra_ready) {
  extra_ready = false;
  if (connector) {
    // A non-blocking connect in progress: wait for the socket to be writable.
    pollfd fds[2] = {{connector->fd(), POLLOUT, 0}, {extra_fd, POLLIN, 0}};
    int r = ::poll(fds, extra_fd >= 0 ? 2 : 1, timeout);
    if (r < 0) {
      if (errno == EINTR) return 0;
      fail(errno, "poll", "poll failed");
    }
    if (extra_fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) extra_ready = true;
    if (fds[0].revents) notify(false);
    return r > 0 ? 1 : 0;
  }
  if (!transport || quiesced) {
    if (is_created()) fail(ENOTCONN, "poll", "invalid state: not connected");
    fail(EINVAL, "poll", fmt::format("nothing to poll for in state {}", state_name()));
  }
  int r = transport->wait(timeout, extra_fd, extra_ready);
  after_io();
  return r;
}

void Handle::Impl::notify(bool readable) {
  if (connector) {
    bool done = false;
    try {
      done = connector->advance();
    } catch (const Error& e) {
      connector.reset();
      connect_error(e.errnum(), e.what());
      throw;
    }
    if (done) {
      auto fd = connector->release();
      connector.reset();
      start_engine(std::move(fd));
    }
    return;
  }
  if (!transport || quiesced)
    fail(is_created() ? ENOTCONN : EINVAL, readable ? "aio_notify_read" : "aio_notify_write",
         fmt::format("no I/O to do in state {}", state_name()));
  if (readable)
    transport->notify_read();
  else
    transport->notify_write();
  after_io();
}

void Handle::Impl::after_io() {
  auto p = engine.phase();
  if ((p == proto::Phase::dead || p == proto::Phase::closed) && transport && !quiesced) {
    // Nothing may still be reading into or sending from a caller's buffer
    // when its completion runs: the caller may free it there.
    transport->quiesce();
    quiesced = true;
    if (p == proto::Phase::dead && !error) {
      error = engine.death_errno();
      error_message = engine.death_reason();
      debug_log("engine", fmt::format("connection died: {}", error_message));
    }
  }
  if (!tls_logged && engine.tls_negotiated()) [[unlikely]] {
    tls_logged = true;
    debug_log("tls", "TLS negotiated: " + engine.tls_description());
  }
  dispatch_events();
}

namespace {

// User callbacks may throw; the handle must stay consistent, so an
// exception counts as the callback failing with EIO... or the error it
// carries.
template <typename F>
int call_guarded(F&& f, int* err) noexcept {
  try {
    return f();
  } catch (const Error& e) {
    *err = e.errnum();
  } catch (...) {
    *err = EIO;
  }
  return -1;
}

} // namespace

void Handle::Impl::dispatch_events() {
  if (dispatching) return; // the outer dispatch loop will reach them
  dispatching = true;
  auto& events = engine.events();
  // Index loop: handlers may queue commands, which never adds events.
  for (std::size_t i = 0; i < events.size(); ++i) {
    const proto::Event& e = events[i];
    switch (e.kind) {
    case proto::Event::command_done: on_command_done(e); break;
    case proto::Event::read_chunk: on_read_chunk(e); break;
    case proto::Event::extents: on_extents(e); break;
    default: on_option_event(e); break;
    }
  }
  engine.clear_events();
  dispatching = false;
}

void Handle::Impl::on_read_chunk(const proto::Event& e) {
  CommandRecord& rec = records[e.slot];
  if (!rec.chunk) return;
  std::size_t at = static_cast<std::size_t>(e.offset - rec.offset);
  auto sub = std::span<const std::uint8_t>(rec.read_buf).subspan(at, static_cast<std::size_t>(e.length));
  int err = e.error;
  int r = call_guarded([&] { return rec.chunk(sub, e.offset, static_cast<unsigned>(e.status), &err); }, &err);
  if (r == -1 && rec.callback_error == 0) rec.callback_error = err ? err : EPROTO;
}

void Handle::Impl::on_extents(const proto::Event& e) {
  CommandRecord& rec = records[e.slot];
  std::string_view name;
  for (const auto& m : engine.meta_contexts())
    if (m.id == e.context_id) name = m.name;
  auto extents = engine.extents().subspan(e.extent_begin, e.extent_count);
  int err = 0;
  int r = 0;
  if (rec.extent64) {
    static_assert(sizeof(Extent) == sizeof(wire::Extent));
    std::span<const Extent> ents(reinterpret_cast<const Extent*>(extents.data()), extents.size());
    r = call_guarded([&] { return rec.extent64(name, rec.offset, ents, &err); }, &err);
  } else if (rec.extent) {
    // The 32-bit callback cannot say more than 4G - 512 in one extent (the
    // largest 512-aligned 32-bit length, as libnbd clamps).
    extents32.clear();
    for (const auto& x : extents) {
      extents32.push_back(x.length > 0xfffffe00u ? 0xfffffe00u : static_cast<std::uint32_t>(x.length));
      extents32.push_back(static_cast<std::uint32_t>(x.flags));
    }
    r = call_guarded([&] { return rec.extent(name, rec.offset, extents32, &err); }, &err);
  }
  if (r == -1 && rec.callback_error == 0) rec.callback_error = err ? err : EPROTO;
}

void Handle::Impl::on_command_done(const proto::Event& e) {
  CommandRecord& rec = records[e.slot];
  const std::uint64_t cookie = engine.slot_cookie(e.slot);
  int err = e.error ? e.error : rec.callback_error;
  rec.final_error = err;
  rec.dispatched = true;
  // pread_initialize for a failed read (see queue_read); the transport has
  // quiesced or finished with the buffer.
  if (err && rec.zero_on_error && !rec.read_buf.empty())
    std::memset(rec.read_buf.data(), 0, rec.read_buf.size());
  rec.chunk.reset();
  rec.extent.reset();
  rec.extent64.reset();
  if (rec.completion) {
    int cb_err = err;
    CompletionCallback cb = std::move(rec.completion);
    int r = call_guarded([&] { return cb(&cb_err); }, &cb_err);
    cb.reset();
    // As in libnbd, a callback that fails with an errno overrides the
    // command's result.
    if (r == -1 && cb_err != 0) rec.final_error = cb_err;
    // The callback may have retired the command itself through
    // aio_command_completed; only retire what is still there.
    if (r == 1) {
      if (engine.find(cookie) == e.slot) engine.retire(e.slot);
      return;
    }
  }
  if (engine.find(cookie) == e.slot) completed.push_back(cookie);
}

void Handle::Impl::on_option_event(const proto::Event& e) {
  int err = 0;
  switch (e.kind) {
  case proto::Event::export_listed:
    ++option.count;
    if (option.list) call_guarded([&] { return option.list(e.text, e.text2); }, &err);
    break;
  case proto::Event::meta_context:
    ++option.count;
    if (option.context) call_guarded([&] { return option.context(e.text); }, &err);
    break;
  case proto::Event::option_done: {
    option.done = true;
    option.error = e.error;
    option.message = e.text;
    option.list.reset();
    option.context.reset();
    if (option.completion) {
      int cb_err = e.error;
      CompletionCallback cb = std::move(option.completion);
      call_guarded([&] { return cb(&cb_err); }, &cb_err);
    }
    if (e.error == 0 && engine.phase() == proto::Phase::transmission)
      debug_log("handshake", "negotiation complete");
    break;
  }
  default: break;
  }
}

// --- Handle ---------------------------------------------------------------------------

#define NBD_LOCK Impl::Lock lock(impl_->mu)

int Handle::aio_get_fd() const {
  NBD_LOCK;
  if (impl_->connector) return impl_->connector->fd();
  if (impl_->transport && !impl_->quiesced) return impl_->transport->poll_fd();
  impl_->fail(EINVAL, "aio_get_fd", "invalid state: no connection");
}

unsigned Handle::aio_get_direction() const {
  NBD_LOCK;
  if (impl_->connector) return AIO_DIRECTION_WRITE;
  if (!impl_->transport || impl_->quiesced) return 0;
  return impl_->transport->direction();
}

void Handle::aio_notify_read() {
  NBD_LOCK;
  impl_->check_drive("aio_notify_read");
  impl_->notify(true);
}

void Handle::aio_notify_write() {
  NBD_LOCK;
  impl_->check_drive("aio_notify_write");
  impl_->notify(false);
}

void Handle::aio_notify_read(std::error_code& ec) noexcept {
  try {
    ec.clear();
    aio_notify_read();
  } catch (const Error& e) {
    ec = e.code();
  } catch (...) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  }
}

void Handle::aio_notify_write(std::error_code& ec) noexcept {
  try {
    ec.clear();
    aio_notify_write();
  } catch (const Error& e) {
    ec = e.code();
  } catch (...) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  }
}

int Handle::poll(int timeout) {
  NBD_LOCK;
  impl_->check_drive("poll");
  bool extra = false;
  return impl_->drive(timeout, -1, extra);
}

int Handle::poll(int timeout, std::error_code& ec) noexcept {
  try {
    ec.clear();
    return poll(timeout);
  } catch (const Error& e) {
    ec = e.code();
  } catch (...) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  }
  return -1;
}

int Handle::poll2(int fd, int timeout) {
  NBD_LOCK;
  impl_->check_drive("poll2");
  bool extra = false;
  int r = impl_->drive(timeout, fd, extra);
  return extra ? 1 : r;
}

} // namespace nbd
