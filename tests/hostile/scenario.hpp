// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// The shapes most hostile tests share: a misbehaving handshake, option or
// reply, tried with the blocking call (nbd::Error's errno) and then with the
// aio call (the completion callback's *error, exactly once, its callable
// destroyed exactly once), each against a fresh peer. (Not SUBCASEs: the
// helpers are called in loops, where doctest would skip repeated subcases.) Protocol violations must leave the handle dead with EPROTO; the
// command that caused one fails with EPROTO and every other one in flight
// with ENOTCONN.

#include "peer.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

namespace hostile {

using Setup = std::function<void(nbd::Handle&)>;

/// The client's automatic options in option mode or before GO: answered
/// conformingly (EXTENDED_HEADERS refused unless extended, STRUCTURED_REPLY
/// accepted unless told otherwise).
inline void opening(Conn& c, bool structured = true, bool extended = false) {
  c.greet_newstyle().expect_client_flags();
  c.expect_option(wire::opt_extended_headers);
  if (extended) {
    c.reply_ack();
    return;
  }
  c.reply(wire::rep_err_unsup);
  c.expect_option(wire::opt_structured_reply);
  c.reply(structured ? wire::rep_ack : wire::rep_err_unsup);
}

/// A connection that must fail: blocking connect_socket throws want, and
/// the aio form leaves the handle dead with want.
inline void check_connect_fails(const Peer::Script& script, int want, const Setup& setup = {}) {
  {
    INFO("form: blocking connect");
    Peer p(script);
    {
      nbd::Handle h;
      if (setup) setup(h);
      CHECK(error_of([&] { p.connect(h); }) == want);
      CHECK(h.aio_is_dead());
      CHECK(h.get_error().value() == want);
      CHECK(error_of([&] { h.get_size(); }) != 0);
    }
    CHECK(p.finish() == "");
  }
  {
    INFO("form: aio connect");
    Peer p(script);
    {
      nbd::Handle h;
      if (setup) setup(h);
      p.aio_connect(h);
      CHECK(drive_until(h, [&] { return !h.aio_is_connecting(); }));
      CHECK(h.aio_is_dead());
      CHECK(h.get_error().value() == want);
    }
    CHECK(p.finish() == "");
  }
}

/// An option-mode call, both forms.
struct OptCall {
  std::function<void(nbd::Handle&)> blocking;
  std::function<void(nbd::Handle&, nbd::CompletionCallback)> aio;
};

inline OptCall opt_list_call(int* listed = nullptr) {
  return {[listed](nbd::Handle& h) {
            h.opt_list([listed](std::string_view, std::string_view) {
              if (listed) ++*listed;
              return 0;
            });
          },
          [listed](nbd::Handle& h, nbd::CompletionCallback cb) {
            h.aio_opt_list(
                [listed](std::string_view, std::string_view) {
                  if (listed) ++*listed;
                  return 0;
                },
                std::move(cb));
          }};
}
inline OptCall opt_go_call() {
  return {[](nbd::Handle& h) { h.opt_go(); },
          [](nbd::Handle& h, nbd::CompletionCallback cb) { h.aio_opt_go(std::move(cb)); }};
}
inline OptCall opt_info_call() {
  return {[](nbd::Handle& h) { h.opt_info(); },
          [](nbd::Handle& h, nbd::CompletionCallback cb) { h.aio_opt_info(std::move(cb)); }};
}
inline OptCall opt_set_meta_call() {
  return {[](nbd::Handle& h) { h.opt_set_meta_context([](std::string_view) { return 0; }); },
          [](nbd::Handle& h, nbd::CompletionCallback cb) {
            h.aio_opt_set_meta_context([](std::string_view) { return 0; }, std::move(cb));
          }};
}

/// In option mode, after `opening`, the server misbehaves in reply to call:
/// the call fails with want, the handle dies with want_death (EPROTO for
/// a violation, ENOTCONN for an early EOF).
inline void check_option_fails(const Peer::Script& script, const OptCall& call, int want,
                               int want_death, const Setup& setup = {},
                               std::chrono::milliseconds op_timeout = 10s) {
  auto connect = [&](Peer& p, nbd::Handle& h) {
    h.set_opt_mode(true);
    if (setup) setup(h);
    p.connect(h);
    REQUIRE(h.aio_is_negotiating());
  };
  {
    INFO("form: blocking option call");
    Peer p(script, op_timeout);
    {
      nbd::Handle h;
      connect(p, h);
      CHECK(error_of([&] { call.blocking(h); }) == want);
      CHECK(h.aio_is_dead());
      CHECK(h.get_error().value() == want_death);
    }
    CHECK(p.finish() == "");
  }
  {
    INFO("form: aio option call");
    Peer p(script, op_timeout);
    Counter k;
    {
      nbd::Handle h;
      connect(p, h);
      call.aio(h, Counted(&k));
      CHECK(drive_until(h, [&] { return k.calls > 0; }));
      CHECK(k.calls == 1);
      CHECK(k.errors == std::vector<int>{want});
      CHECK(h.aio_is_dead());
      CHECK(h.get_error().value() == want_death);
    }
    CHECK(k.calls == 1);
    CHECK(k.destroyed == 1);
    CHECK(p.finish() == "");
  }
}

/// One command, both forms. Buffers live in the Op, so they outlive the
/// handle.
struct Op {
  std::function<void(nbd::Handle&)> blocking;
  std::function<std::uint64_t(nbd::Handle&, nbd::CompletionCallback)> aio;
};

inline Op read_op(std::size_t len, std::uint64_t off) {
  auto buf = std::make_shared<Bytes>(len);
  return {[buf, off](nbd::Handle& h) { h.pread(*buf, off); },
          [buf, off](nbd::Handle& h, nbd::CompletionCallback cb) {
            return h.aio_pread(*buf, off, std::move(cb));
          }};
}
inline Op write_op(std::size_t len, std::uint64_t off) {
  auto buf = std::make_shared<Bytes>(len, 0x5a);
  return {[buf, off](nbd::Handle& h) { h.pwrite(*buf, off); },
          [buf, off](nbd::Handle& h, nbd::CompletionCallback cb) {
            return h.aio_pwrite(*buf, off, std::move(cb));
          }};
}
inline Op flush_op() {
  return {[](nbd::Handle& h) { h.flush(); },
          [](nbd::Handle& h, nbd::CompletionCallback cb) { return h.aio_flush(std::move(cb)); }};
}
inline Op block_status_op(std::uint64_t len, std::uint64_t off, std::uint32_t flags = 0) {
  auto cb32 = [](std::string_view, std::uint64_t, std::span<std::uint32_t>, int*) { return 0; };
  return {[=](nbd::Handle& h) { h.block_status(len, off, cb32, flags); },
          [=](nbd::Handle& h, nbd::CompletionCallback cb) {
            return h.aio_block_status(len, off, cb32, std::move(cb), flags);
          }};
}
inline Op block_status64_op(std::uint64_t len, std::uint64_t off, std::uint32_t flags = 0) {
  auto cb64 = [](std::string_view, std::uint64_t, std::span<const nbd::Extent>, int*) { return 0; };
  return {[=](nbd::Handle& h) { h.block_status_64(len, off, cb64, flags); },
          [=](nbd::Handle& h, nbd::CompletionCallback cb) {
            return h.aio_block_status_64(len, off, cb64, std::move(cb), flags);
          }};
}

inline Setup with_base_allocation() {
  return [](nbd::Handle& h) { h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION); };
}

/// Whether the handle's error is want. A connection the server closed
/// (want ENOTCONN) may also show as EPIPE / ECONNRESET, when a send meets
/// the closed socket before the receive sees the EOF.
inline bool death_is(const nbd::Handle& h, int want) {
  const int e = h.get_error().value();
  if (want == ENOTCONN) return e == ENOTCONN || e == EPIPE || e == ECONNRESET;
  return e == want;
}

/// After a conforming handshake with exp, the peer answers the first
/// request with misbehave. The command fails with want (blocking: the
/// nbd::Error; aio: the completion, once); a second command queued behind
/// it (aio form) fails with ENOTCONN; the handle is dead with want_death.
inline void check_command_fails(const Export& exp,
                                const std::function<void(Conn&, const Request&)>& misbehave,
                                const Op& op, int want, int want_death = EPROTO,
                                const Setup& setup = {}) {
  auto script = [exp = Export(exp), misbehave](Conn& c) mutable {
    if (!c.handshake(exp)) throw ScriptError("the client aborted the handshake");
    Request r = c.read_request();
    misbehave(c, r);
  };
  auto connect = [&](Peer& p, nbd::Handle& h) {
    if (setup) setup(h);
    p.connect(h);
    REQUIRE(h.aio_is_ready());
  };
  {
    INFO("form: blocking command");
    Peer p(script);
    {
      nbd::Handle h;
      connect(p, h);
      CHECK(error_of([&] { op.blocking(h); }) == want);
      CHECK(h.aio_is_dead());
      CHECK(death_is(h, want_death));
      CHECK(h.aio_in_flight() == 0);
    }
    CHECK(p.finish() == "");
  }
  {
    INFO("form: aio command");
    Peer p(script);
    Counter k1, k2;
    Bytes other(512);
    {
      nbd::Handle h;
      connect(p, h);
      std::uint64_t c1 = op.aio(h, Counted(&k1));
      std::uint64_t c2 = h.aio_pread(other, 0, Counted(&k2));
      CHECK(drive_until(h, [&] { return k1.calls > 0 && k2.calls > 0; }));
      CHECK(k1.calls == 1);
      CHECK(k1.errors == std::vector<int>{want});
      CHECK(k2.calls == 1);
      CHECK(k2.errors == std::vector<int>{ENOTCONN});
      // The callbacks returned 0: the commands wait to be retired.
      CHECK(error_of([&] { h.aio_command_completed(c1); }) == want);
      CHECK(error_of([&] { h.aio_command_completed(c2); }) == ENOTCONN);
      CHECK(h.aio_is_dead());
      CHECK(death_is(h, want_death));
      CHECK(h.aio_in_flight() == 0);
    }
    CHECK(k1.calls == 1);
    CHECK(k2.calls == 1);
    CHECK(k1.destroyed == 1);
    CHECK(k2.destroyed == 1);
    CHECK(p.finish() == "");
  }
}

} // namespace hostile
