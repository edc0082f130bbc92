// SPDX-License-Identifier: BSD-3-Clause

// The protocol engine, driven without sockets: recorded nbdkit
// conversations (transcripts/), conversations built from proto.md, and
// every protocol violation a server can commit.

#include "proto/engine.hpp"

#include "engine_harness.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <limits>
#include <tuple>
#include <string>
#include <vector>

#ifndef NBDCPP_TRANSCRIPTS
#error "tests/meson.build must define NBDCPP_TRANSCRIPTS"
#endif

using namespace nbd::test;
using nbd::proto::Engine;
using nbd::proto::Event;
using nbd::proto::Phase;
using nbd::proto::Settings;
namespace w = nbd::wire;

namespace {

// --- running conversations ---------------------------------------------------------------

/// Runs a conversation fed whole, one byte per commit_recv, and split in
/// two at every byte boundary; every run must end the same way. Returns the
/// outcome of the whole feed. (Engine::feed is checked separately: fed a
/// whole conversation at once, it would take replies before the client
/// could submit the commands they answer.)
Outcome check_all_splits(const Script& script, const Buf& server, bool eof = false) {
  const Outcome whole = run(script, server, FeedMode::whole, eof);
  const Outcome bytewise = run(script, server, FeedMode::bytewise, eof);
  CHECK_MESSAGE(bytewise == whole,
                "bytewise:\n" << describe(bytewise) << "whole:\n" << describe(whole));
  std::size_t bad = 0, first_bad = 0;
  for (std::size_t k = 0; k <= server.size(); ++k) {
    if (!(run(script, server, FeedMode::split, eof, k) == whole)) {
      if (bad++ == 0) first_bad = k;
    }
  }
  CHECK_MESSAGE(bad == 0, bad << " split points differ, the first at " << first_bad << ":\n"
                              << describe(run(script, server, FeedMode::split, eof, first_bad))
                              << "whole:\n"
                              << describe(whole));
  return whole;
}

std::vector<EventRec> of_kind(const Outcome& o, Event::Kind k) {
  std::vector<EventRec> v;
  for (const auto& e : o.events)
    if (e.kind == k) v.push_back(e);
  return v;
}

const EventRec* done_event(const Outcome& o, std::uint32_t slot) {
  for (const auto& e : o.events)
    if (e.kind == Event::command_done && e.slot == slot) return &e;
  return nullptr;
}

int done_error(const Outcome& o, std::uint32_t slot) {
  auto* e = done_event(o, slot);
  REQUIRE_MESSAGE(e, "no command_done for slot " << slot << "\n" << describe(o));
  return e->error;
}

Buf slice(const Buf& b, std::size_t from, std::size_t n = static_cast<std::size_t>(-1)) {
  n = std::min(n, b.size() - from);
  return Buf(b.begin() + static_cast<std::ptrdiff_t>(from),
             b.begin() + static_cast<std::ptrdiff_t>(from + n));
}

// --- a standard negotiation -------------------------------------------------------------------

// A fixed newstyle server (FIXED_NEWSTYLE | NO_ZEROES) that accepts what it
// is asked for; the client asks for no block size and no extra infos.
struct Neg {
  bool sr = false;   // STRUCTURED_REPLY requested and accepted
  bool ext = false;  // EXTENDED_HEADERS requested and accepted
  bool meta = false; // base:allocation (id 7) and x-test:ctx (id 9) set
  std::uint64_t size = 1 << 20;
  std::uint16_t eflags = 0x0d6d;
};

constexpr std::uint32_t ctx_alloc = 7, ctx_test = 9;

Settings neg_settings(const Neg& n) {
  Settings s = plain_settings();
  s.request_structured_replies = n.sr;
  s.request_extended_headers = n.ext;
  if (n.meta) {
    s.request_meta_context = true;
    s.meta_contexts = {"base:allocation", "x-test:ctx"};
  }
  return s;
}

Script neg_script(const Neg& n, std::vector<Cmd> cmds = {}, bool disc = false) {
  Script s;
  s.settings = neg_settings(n);
  s.cmds = std::move(cmds);
  s.disconnect = disc;
  return s;
}

Buf neg_server(const Neg& n) {
  Buf b = srv::greeting(3);
  if (n.ext)
    put(b, srv::ack(w::opt_extended_headers));
  else if (n.sr)
    put(b, srv::ack(w::opt_structured_reply));
  if (n.meta && (n.sr || n.ext)) {
    put(b, srv::rep_meta(w::opt_set_meta_context, ctx_alloc, "base:allocation"));
    put(b, srv::rep_meta(w::opt_set_meta_context, ctx_test, "x-test:ctx"));
    put(b, srv::ack(w::opt_set_meta_context));
  }
  put(b, srv::info_export(w::opt_go, n.size, n.eflags));
  put(b, srv::ack(w::opt_go));
  return b;
}

/// What the client sends for neg_server's negotiation.
Buf neg_client(const Neg& n) {
  Buf b = cli::flags(3);
  if (n.ext) put(b, cli::option(w::opt_extended_headers));
  if (n.sr && !n.ext) put(b, cli::option(w::opt_structured_reply));
  if (n.meta && (n.sr || n.ext))
    put(b, cli::option(w::opt_set_meta_context,
                       cli::meta_data("", {"base:allocation", "x-test:ctx"})));
  put(b, cli::option(w::opt_go, cli::go_data("", {})));
  return b;
}

/// A driver past a standard negotiation, with cmds submitted (cookies
/// 1, 2, ... in order).
struct Tx {
  Neg neg;
  Driver d;
  explicit Tx(const Neg& n, std::vector<Cmd> cmds = {}, bool auto_send = true, bool disc = false)
      : neg(n), d(neg_script(n, std::move(cmds), disc)) {
    d.auto_send = auto_send;
    d.start();
    Buf hs = neg_server(n);
    REQUIRE(d.feed(hs) == hs.size());
    // Without auto_send, only the handshake's bytes go out.
    if (!auto_send) REQUIRE(d.send(neg_client(n).size()) == neg_client(n).size());
    REQUIRE(slice(d.sent(), 0, neg_client(n).size()) == neg_client(n));
    REQUIRE((d.engine().phase() == Phase::transmission ||
             d.engine().phase() == Phase::disconnecting));
    REQUIRE(d.submitted());
  }
  std::uint32_t slot(std::size_t i) const { return d.slots().at(i); }
  Outcome out() const { return d.outcome(); }
  int err(std::size_t i) const {
    auto* e = d.done_of(i);
    REQUIRE_MESSAGE(e, "no command_done for command " << i << "\n" << describe(d.outcome()));
    return e->error;
  }
  bool done(std::size_t i) const { return d.done_of(i) != nullptr; }
  /// Client bytes after the handshake.
  Buf tx_sent() const { return slice(d.sent(), neg_client(neg).size()); }
};

/// The engine died of a protocol violation: EPROTO for the offending
/// command (if any), ENOTCONN for everything else still in flight.
void check_violation(Tx& t, int offender, std::initializer_list<int> others = {}) {
  Outcome o = t.out();
  INFO(describe(o));
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == EPROTO);
  CHECK_FALSE(o.death_reason.empty());
  if (offender >= 0) CHECK(t.err(static_cast<std::size_t>(offender)) == EPROTO);
  for (int i : others) CHECK(t.err(static_cast<std::size_t>(i)) == ENOTCONN);
  CHECK(t.d.engine().in_flight() == 0);
  CHECK(t.d.engine().wants() == nbd::proto::Direction::none);
  iovec iov[4];
  CHECK(t.d.engine().send_segments(iov) == 0);
  // Nothing more is taken in.
  Buf more = srv::simple(0, 1);
  CHECK(t.d.feed(more) == 0);
}

/// A handshake violation: dead with EPROTO.
void check_handshake_violation(const Script& s, const Buf& server, std::size_t consumed) {
  Outcome o = run(s, server, FeedMode::whole, false);
  INFO(describe(o));
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == EPROTO);
  CHECK(o.consumed == consumed);
  // And the same however it arrives.
  check_all_splits(s, server);
}

Buf transcript(const std::string& name) {
  return read_hex_file(std::string(NBDCPP_TRANSCRIPTS) + "/" + name + ".hex");
}
Buf transcript_client(const std::string& name) {
  return read_hex_file(std::string(NBDCPP_TRANSCRIPTS) + "/" + name + ".client.hex");
}

Recorded recorded(const std::string& name) {
  for (auto& r : recorded_conversations())
    if (r.name == name) return r;
  FAIL("no recorded conversation " << name);
  return {};
}

/// Replays a recorded nbdkit conversation: the engine must send exactly the
/// bytes nbdkit was answering, and end the same way however the server's
/// bytes arrive.
Outcome replay(const std::string& name) {
  Recorded r = recorded(name);
  Buf server = transcript(name);
  Buf client = transcript_client(name);
  Outcome o = check_all_splits(r.script, server, true);
  CHECK(o.consumed == server.size());
  CHECK_MESSAGE(o.sent == client, "the engine's bytes no longer match the transcript; re-record "
                                  "it (transcripts/README.md)");
  return o;
}

} // namespace

// =====================================================================================
// Recorded conversations with nbdkit
// =====================================================================================

TEST_SUITE("engine") {

TEST_CASE("engine transcript: nbdkit memory, fixed newstyle, structured, base:allocation") {
  Outcome o = replay("nbdkit_memory");
  CHECK(o.phase == Phase::closed);
  CHECK(o.protocol == "newstyle-fixed");
  CHECK(o.size == 1048576);
  CHECK((o.eflags & w::tflag_has_flags));
  CHECK(o.structured);
  CHECK_FALSE(o.extended); // nbdkit 1.32 answers EXTENDED_HEADERS with ERR_UNSUP
  REQUIRE(o.contexts.size() == 1);
  CHECK(o.contexts[0].second == "base:allocation");
  // The client's handshake, by hand from proto.md.
  Buf hs = cat({cli::flags(3), cli::option(w::opt_extended_headers),
                cli::option(w::opt_structured_reply),
                cli::option(w::opt_set_meta_context, cli::meta_data("", {"base:allocation"})),
                cli::option(w::opt_go, cli::go_data("", {w::info_block_size}))});
  CHECK(slice(o.sent, 0, hs.size()) == hs);
  // The first request: a write with cookie 1.
  CHECK(slice(o.sent, hs.size(), 28) == cli::request(0, w::cmd_write, 1, 0, 4096));
  // Every command completed once, in order of the server's replies.
  auto done = of_kind(o, Event::command_done);
  REQUIRE(done.size() == 11);
  for (std::uint32_t i = 0; i < 11; ++i) CHECK(done_event(o, i));
  CHECK(done_error(o, 0) == 0);
  CHECK(done_error(o, 1) == 0);
  // Reads see what the writes wrote, and zeroes where nothing was written.
  CHECK(o.read_bufs[2] == pattern(4096, 1));
  CHECK(slice(o.read_bufs[3], 0, 512) == Buf(512, 0));
  CHECK(slice(o.read_bufs[3], 512) == pattern(512, 2));
  // Block status: extents for base:allocation covering the request; REQ_ONE: one.
  auto ex = of_kind(o, Event::extents);
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].context_id == o.contexts[0].first);
  std::uint64_t total = 0;
  for (auto [len, flags] : ex[0].extents) total += len;
  CHECK(total == 1048576);
  CHECK(ex[1].extents.size() == 1);
  // The out-of-range read: EINVAL from an error chunk.
  CHECK(done_error(o, 9) == EINVAL);
}

TEST_CASE("engine transcript: nbdkit pattern, read-only, NAME and DESCRIPTION asked for") {
  Outcome o = replay("nbdkit_pattern");
  CHECK(o.phase == Phase::closed);
  CHECK((o.eflags & w::tflag_read_only));
  // nbdkit's pattern plugin: each 8-byte word holds its own offset.
  Buf want;
  for (std::uint64_t off = 8192; off < 8192 + 4096; off += 8) put64(want, off);
  CHECK(o.read_bufs[0] == want);
  Buf unaligned;
  for (std::uint64_t off = 1000 - 1000 % 8; off < 1104; off += 8) put64(unaligned, off);
  CHECK(o.read_bufs[1] == slice(unaligned, 1000 % 8, 100));
  CHECK(done_error(o, 2) == 0);
  CHECK(done_error(o, 3) == EPERM); // write to a read-only export
  // full_info asks for NAME and DESCRIPTION after BLOCK_SIZE.
  Buf go = cli::option(w::opt_go, cli::go_data("", {w::info_block_size, w::info_name,
                                                   w::info_description}));
  CHECK(std::search(o.sent.begin(), o.sent.end(), go.begin(), go.end()) != o.sent.end());
}

TEST_CASE("engine transcript: nbdkit oldstyle, simple replies") {
  Outcome o = replay("nbdkit_oldstyle");
  CHECK(o.phase == Phase::closed);
  CHECK(o.protocol == "oldstyle");
  CHECK(o.size == 1048576);
  CHECK(o.eflags == 0x0d6d);
  CHECK_FALSE(o.structured);
  // Oldstyle: the client says nothing before its first request.
  CHECK(slice(o.sent, 0, 28) == cli::request(0, w::cmd_write, 1, 0, 512));
  CHECK(o.read_bufs[1] == pattern(512, 4));
  CHECK(done_error(o, 0) == 0);
  CHECK(done_error(o, 3) == EINVAL);
  // A simple read reply is reported as one data chunk, as libnbd does.
  auto rc = of_kind(o, Event::read_chunk);
  REQUIRE(rc.size() == 1);
  CHECK(rc[0].slot == 1);
  CHECK(rc[0].offset == 0);
  CHECK(rc[0].length == 512);
  CHECK(rc[0].status == nbd::proto::read_data);
}

TEST_CASE("engine transcript: nbdkit --no-sr, structured replies refused") {
  Outcome o = replay("nbdkit_nosr");
  CHECK(o.phase == Phase::closed);
  CHECK_FALSE(o.structured);
  CHECK(o.contexts.empty()); // no SET_META_CONTEXT without structured replies
  Buf hs = cat({cli::flags(3), cli::option(w::opt_extended_headers),
                cli::option(w::opt_structured_reply),
                cli::option(w::opt_go, cli::go_data("", {w::info_block_size}))});
  CHECK(slice(o.sent, 0, hs.size()) == hs);
  Buf want(2048, 0);
  Buf p = pattern(1024, 5);
  std::copy(p.begin(), p.end(), want.begin() + 512);
  CHECK(o.read_bufs[1] == want);
  CHECK(done_error(o, 2) == EINVAL);
  CHECK(done_error(o, 3) == 0);
  CHECK(done_error(o, 4) == 0);
}

TEST_CASE("engine transcript: nbdkit non-fixed newstyle, EXPORT_NAME and 124 zeroes") {
  Outcome o = replay("nbdkit_nonfixed");
  CHECK(o.phase == Phase::closed);
  CHECK(o.protocol == "newstyle");
  CHECK(o.size == 1048576);
  CHECK(slice(o.sent, 0, 20) == cat({cli::flags(0), cli::option(w::opt_export_name)}));
  CHECK(o.read_bufs[1] == pattern(512, 6));
}

TEST_CASE("engine transcript: nbdkit non-fixed newstyle with NO_ZEROES") {
  Outcome o = replay("nbdkit_nonfixed_nozeroes");
  CHECK(o.phase == Phase::closed);
  CHECK(o.protocol == "newstyle");
  CHECK(slice(o.sent, 0, 20) == cat({cli::flags(2), cli::option(w::opt_export_name)}));
  CHECK(done_error(o, 0) == 0);
  CHECK(o.read_bufs[0] == Buf(512, 0));
}

TEST_CASE("engine transcript: nbdkit, the client declines NO_ZEROES") {
  Outcome o = replay("nbdkit_zeroes_declined");
  CHECK(o.phase == Phase::closed);
  CHECK(slice(o.sent, 0, 4) == cli::flags(1));
  CHECK(done_error(o, 0) == 0);
}

TEST_CASE("engine transcript: nbdkit option mode, LIST INFO GO META_CONTEXT") {
  Outcome o = replay("nbdkit_optmode");
  CHECK(o.phase == Phase::closed);
  auto listed = of_kind(o, Event::export_listed);
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].text == "a");
  CHECK(listed[0].text2 == "an export");
  CHECK(listed[1].text == "b");
  auto od = of_kind(o, Event::option_done);
  REQUIRE(od.size() == 8);
  CHECK(od[0].error == 0);      // LIST
  CHECK(od[1].error == 0);      // INFO a
  CHECK(od[2].error == ENOENT); // INFO nope: ERR_UNKNOWN
  CHECK(od[3].error == ENOENT); // GO nope: ERR_UNKNOWN, still in option mode
  CHECK(od[4].error == 0);      // LIST_META_CONTEXT base:
  CHECK(od[5].error == 0);      // LIST_META_CONTEXT (all)
  CHECK(od[6].error == 0);      // SET_META_CONTEXT
  CHECK(od[7].error == 0);      // GO a
  CHECK(o.canonical_name == "a");
  CHECK(o.description == "an export");
  REQUIRE(o.contexts.size() == 1);
  auto ex = of_kind(o, Event::extents);
  REQUIRE(ex.size() == 1);
  CHECK(ex[0].context_id == o.contexts[0].first);
  CHECK(done_error(o, 0) == 0);
  CHECK(done_error(o, 1) == 0);
}

TEST_CASE("engine transcript: nbdkit option mode, LIST then ABORT") {
  Outcome o = replay("nbdkit_abort");
  CHECK(o.phase == Phase::closed);
  auto od = of_kind(o, Event::option_done);
  REQUIRE(od.size() == 2);
  CHECK(od[1].error == 0);
  CHECK(slice(o.sent, o.sent.size() - 16) == cli::option(w::opt_abort));
}

TEST_CASE("engine transcript: nbdkit refuses GO to an unknown export") {
  Outcome o = replay("nbdkit_go_unknown");
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == ENOENT);
  CHECK(of_kind(o, Event::option_done).empty()); // not option mode: no option event
}

TEST_CASE("engine transcript: nbdkit blocksize-policy, NBD_INFO_BLOCK_SIZE") {
  Outcome o = replay("nbdkit_blocksize");
  CHECK(o.phase == Phase::closed);
  CHECK(o.block_size.minimum == 512);
  CHECK(o.block_size.preferred == 4096);
  CHECK(o.block_size.maximum == 65536);
}

TEST_CASE("engine transcript: every recorded conversation has its files") {
  for (const auto& r : recorded_conversations()) {
    CAPTURE(r.name);
    CHECK_FALSE(transcript(r.name).empty());
    CHECK_FALSE(transcript_client(r.name).empty());
  }
}

// =====================================================================================
// Negotiation (built from proto.md)
// =====================================================================================

TEST_CASE("engine negotiation: oldstyle") {
  Script s;
  s.settings = plain_settings();
  s.disconnect = false;
  Outcome o = check_all_splits(s, srv::oldstyle(0x123456789, 0x00000d6d));
  CHECK(o.phase == Phase::transmission);
  CHECK(o.protocol == "oldstyle");
  CHECK(o.size == 0x123456789);
  CHECK(o.eflags == 0x0d6d);
  CHECK(o.sent.empty());
}

TEST_CASE("engine negotiation: fixed newstyle with NO_ZEROES, GO") {
  Neg n;
  Outcome o = check_all_splits(neg_script(n), neg_server(n));
  CHECK(o.phase == Phase::transmission);
  CHECK(o.protocol == "newstyle-fixed");
  CHECK(o.sent == neg_client(n));
  CHECK(o.size == 1 << 20);
  CHECK(o.eflags == 0x0d6d);
  CHECK_FALSE(o.structured);
  CHECK(o.events.empty());
}

TEST_CASE("engine negotiation: fixed newstyle without NO_ZEROES: GO never pads") {
  Script s = neg_script(Neg{});
  Buf server = cat({srv::greeting(1), srv::info_export(7, 4096, 1), srv::ack(7)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  CHECK(slice(o.sent, 0, 4) == cli::flags(1));
  CHECK(o.size == 4096);
}

TEST_CASE("engine negotiation: GO -> ERR_UNSUP -> EXPORT_NAME fallback, with zeroes") {
  Script s = neg_script(Neg{});
  s.settings.export_name = "disk";
  Buf server = cat({srv::greeting(1), srv::err(7, w::rep_err_unsup, "what is GO?"),
                    srv::export_name_reply(8192, 0x0003, true)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  CHECK(o.size == 8192);
  CHECK(o.eflags == 3);
  CHECK(o.sent == cat({cli::flags(1), cli::option(7, cli::go_data("disk", {})),
                       cli::option(1, Buf{'d', 'i', 's', 'k'})}));
}

TEST_CASE("engine negotiation: GO -> ERR_UNSUP -> EXPORT_NAME fallback, NO_ZEROES") {
  Script s = neg_script(Neg{});
  Buf server = cat({srv::greeting(3), srv::err(7, w::rep_err_unsup),
                    srv::export_name_reply(8192, 0x0001, false)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  CHECK(o.size == 8192);
  CHECK(o.consumed == server.size());
}

TEST_CASE("engine negotiation: non-fixed newstyle, EXPORT_NAME with and without zeroes") {
  for (bool nz : {false, true}) {
    CAPTURE(nz);
    Script s = neg_script(Neg{});
    s.settings.export_name = "x";
    Buf server = cat({srv::greeting(nz ? 2 : 0), srv::export_name_reply(512, 1, !nz)});
    Outcome o = check_all_splits(s, server);
    CHECK(o.phase == Phase::transmission);
    CHECK(o.protocol == "newstyle");
    CHECK(o.sent == cat({cli::flags(nz ? 2 : 0), cli::option(1, Buf{'x'})}));
    CHECK(o.size == 512);
    CHECK(o.consumed == server.size());
  }
}

TEST_CASE("engine negotiation: EXTENDED_HEADERS accepted implies structured replies") {
  Neg n;
  n.ext = true;
  n.sr = true;
  Outcome o = check_all_splits(neg_script(n), neg_server(n));
  CHECK(o.phase == Phase::transmission);
  CHECK(o.extended);
  CHECK(o.structured);
  // No STRUCTURED_REPLY after EXTENDED_HEADERS was accepted.
  CHECK(o.sent == cat({cli::flags(3), cli::option(w::opt_extended_headers),
                       cli::option(w::opt_go, cli::go_data("", {}))}));
}

TEST_CASE("engine negotiation: EXTENDED_HEADERS refused, STRUCTURED_REPLY accepted") {
  Script s = neg_script(Neg{true, true, false});
  Buf server = cat({srv::greeting(3), srv::err(w::opt_extended_headers, w::rep_err_unsup),
                    srv::ack(w::opt_structured_reply), srv::info_export(7, 1024, 1), srv::ack(7)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  CHECK_FALSE(o.extended);
  CHECK(o.structured);
  CHECK(o.sent == cat({cli::flags(3), cli::option(w::opt_extended_headers),
                       cli::option(w::opt_structured_reply),
                       cli::option(w::opt_go, cli::go_data("", {}))}));
}

TEST_CASE("engine negotiation: STRUCTURED_REPLY refused") {
  Script s = neg_script(Neg{true, false, true});
  Buf server = cat({srv::greeting(3), srv::err(w::opt_structured_reply, w::rep_err_unsup),
                    srv::info_export(7, 1024, 1), srv::ack(7)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  CHECK_FALSE(o.structured);
  CHECK(o.contexts.empty());
  // No SET_META_CONTEXT without structured replies.
  CHECK(o.sent == cat({cli::flags(3), cli::option(w::opt_structured_reply),
                       cli::option(w::opt_go, cli::go_data("", {}))}));
}

TEST_CASE("engine negotiation: SET_META_CONTEXT with base:allocation") {
  Neg n{true, false, true};
  Outcome o = check_all_splits(neg_script(n), neg_server(n));
  CHECK(o.phase == Phase::transmission);
  CHECK(o.sent == neg_client(n));
  REQUIRE(o.contexts.size() == 2);
  CHECK(o.contexts[0] == std::pair<std::uint32_t, std::string>(ctx_alloc, "base:allocation"));
  CHECK(o.contexts[1] == std::pair<std::uint32_t, std::string>(ctx_test, "x-test:ctx"));
  auto mc = of_kind(o, Event::meta_context);
  REQUIRE(mc.size() == 2);
  CHECK(mc[0].text == "base:allocation");
  CHECK(mc[0].context_id == ctx_alloc);
}

TEST_CASE("engine negotiation: SET_META_CONTEXT refused, GO goes on without contexts") {
  Script s = neg_script(Neg{true, false, true});
  Buf server = cat({srv::greeting(3), srv::ack(8),
                    srv::err(w::opt_set_meta_context, w::rep_err_policy, "no"),
                    srv::info_export(7, 1024, 1), srv::ack(7)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  CHECK(o.contexts.empty());
}

TEST_CASE("engine negotiation: GO with INFO EXPORT, NAME, DESCRIPTION, BLOCK_SIZE, unknown") {
  Script s = neg_script(Neg{});
  s.settings.export_name = "a";
  s.settings.request_block_size = true;
  s.settings.full_info = true;
  Buf server = cat({srv::greeting(3), srv::info_raw(7, 0x7777, Buf{1, 2, 3}), // unknown: ignored
                    srv::info_text(7, w::info_name, "canonical-a"),
                    srv::info_block_size(7, 512, 4096, 32 << 20),
                    srv::info_text(7, w::info_description, "the description"),
                    srv::info_raw(7, 0x0004, {}), // unknown, empty
                    srv::info_export(7, 0x7fffffffffffffff, 0x0101), srv::ack(7)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  CHECK(o.size == 0x7fffffffffffffff); // INT64_MAX itself is fine
  CHECK(o.eflags == 0x0101);
  CHECK(o.canonical_name == "canonical-a");
  CHECK(o.description == "the description");
  CHECK(o.block_size.minimum == 512);
  CHECK(o.block_size.preferred == 4096);
  CHECK(o.block_size.maximum == 32u << 20);
  CHECK(o.sent == cat({cli::flags(3), cli::option(7, cli::go_data("a", {3, 1, 2}))}));
}

TEST_CASE("engine negotiation: GO refused with each ERR_* in automatic mode -> dead") {
  const std::pair<std::uint32_t, int> cases[] = {
      {w::rep_err_policy, ENOTSUP},       {w::rep_err_invalid, EINVAL},
      {w::rep_err_platform, ENOTSUP},     {w::rep_err_tls_reqd, ENOTSUP},
      {w::rep_err_unknown, ENOENT},       {w::rep_err_shutdown, ESHUTDOWN},
      {w::rep_err_block_size_reqd, EINVAL}, {w::rep_err_too_big, EINVAL},
      {w::rep_err_ext_header_reqd, EINVAL}, {w::rep_err_bit | 0x1234, ENOTSUP},
  };
  for (const auto& c : cases) {
    const std::uint32_t type = c.first;
    const int err = c.second;
    CAPTURE(type);
    Script s = neg_script(Neg{});
    Buf server = cat({srv::greeting(3), srv::info_export(7, 1024, 1), // info before an error
                      srv::err(7, type, "refused")});
    Outcome o = check_all_splits(s, server);
    CHECK(o.phase == Phase::dead);
    CHECK(o.death_errno == err);
    CHECK(o.death_reason.find("refused") != std::string::npos);
    CHECK(o.events.empty());
  }
}

TEST_CASE("engine negotiation: GO refused in option mode -> option_done, then GO again") {
  const std::pair<std::uint32_t, int> cases[] = {
      {w::rep_err_policy, ENOTSUP},   {w::rep_err_invalid, EINVAL},
      {w::rep_err_platform, ENOTSUP}, {w::rep_err_tls_reqd, ENOTSUP},
      {w::rep_err_unknown, ENOENT},   {w::rep_err_shutdown, ESHUTDOWN},
      {w::rep_err_block_size_reqd, EINVAL}, {w::rep_err_too_big, EINVAL},
  };
  for (const auto& c : cases) {
    const std::uint32_t type = c.first;
    const int err = c.second;
    CAPTURE(type);
    Script s = neg_script(Neg{});
    s.settings.opt_mode = true;
    s.opts = {{OptAction::go, plain_settings(), {}}, {OptAction::go, plain_settings(), {}}};
    Buf server = cat({srv::greeting(3), srv::err(7, type), srv::info_export(7, 2048, 1),
                      srv::ack(7)});
    Outcome o = check_all_splits(s, server);
    CHECK(o.phase == Phase::transmission);
    auto od = of_kind(o, Event::option_done);
    REQUIRE(od.size() == 2);
    CHECK(od[0].error == err);
    CHECK(od[1].error == 0);
    CHECK(o.size == 2048);
  }
}

TEST_CASE("engine negotiation: option mode stops in option_wait after the automatic steps") {
  Script s = neg_script(Neg{true, false, false});
  s.settings.opt_mode = true;
  Driver d(s);
  d.start();
  Buf server = cat({srv::greeting(3), srv::ack(8)});
  CHECK(d.feed(server) == server.size());
  CHECK(d.engine().phase() == Phase::option_wait);
  CHECK(d.engine().structured_replies());
  CHECK(d.engine().wants() == nbd::proto::Direction::none);
  CHECK(d.engine().recv_target().empty());
}

TEST_CASE("engine negotiation: option mode LIST") {
  Script s = neg_script(Neg{});
  s.settings.opt_mode = true;
  s.opts = {{OptAction::list, {}, {}}};
  Buf server = cat({srv::greeting(3), srv::rep_server("", ""), srv::rep_server("disk1", "first"),
                    srv::rep_server("disk2"), srv::ack(3)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::option_wait);
  auto l = of_kind(o, Event::export_listed);
  REQUIRE(l.size() == 3);
  CHECK(l[1].text == "disk1");
  CHECK(l[1].text2 == "first");
  CHECK(l[2].text == "disk2");
  CHECK(l[2].text2.empty());
  auto od = of_kind(o, Event::option_done);
  REQUIRE(od.size() == 1);
  CHECK(od[0].error == 0);
  CHECK(o.sent == cat({cli::flags(3), cli::option(w::opt_list)}));
}

TEST_CASE("engine negotiation: option mode LIST refused") {
  Script s = neg_script(Neg{});
  s.settings.opt_mode = true;
  s.opts = {{OptAction::list, {}, {}}};
  Buf server = cat({srv::greeting(3), srv::err(3, w::rep_err_policy, "no listing")});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::option_wait);
  auto od = of_kind(o, Event::option_done);
  REQUIRE(od.size() == 1);
  CHECK(od[0].error == ENOTSUP);
  CHECK(od[0].text.find("no listing") != std::string::npos);
}

TEST_CASE("engine negotiation: option mode INFO, then GO") {
  Script s = neg_script(Neg{});
  s.settings.opt_mode = true;
  Settings a = plain_settings();
  a.export_name = "a";
  a.full_info = true;
  s.opts = {{OptAction::info, a, {}}, {OptAction::go, a, {}}};
  Buf server = cat({srv::greeting(3), srv::info_export(6, 4096, 3),
                    srv::info_text(6, w::info_description, "desc"), srv::ack(6),
                    srv::info_export(7, 8192, 1), srv::ack(7)});
  Driver d(s);
  d.start();
  // Stop after INFO: still option mode, info known.
  Buf info_part = slice(server, 0, server.size() - 32 - 20);
  d.feed(info_part);
  CHECK(d.engine().phase() == Phase::option_busy); // GO was sent at once
  CHECK(d.engine().info().size == 4096);
  CHECK(d.engine().info().description == "desc");
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  CHECK(o.size == 8192); // GO's answer wins
  CHECK(o.sent == cat({cli::flags(3), cli::option(6, cli::go_data("a", {1, 2})),
                       cli::option(7, cli::go_data("a", {1, 2}))}));
}

TEST_CASE("engine negotiation: option mode LIST_META_CONTEXT") {
  Script s = neg_script(Neg{true, false, false});
  s.settings.opt_mode = true;
  s.opts = {{OptAction::list_meta, plain_settings(), {"base:", "qemu:"}}};
  Buf server = cat({srv::greeting(3), srv::ack(8), srv::rep_meta(9, 0, "base:allocation"),
                    srv::rep_meta(9, 0, "qemu:dirty-bitmap:x"), srv::ack(9)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::option_wait);
  auto mc = of_kind(o, Event::meta_context);
  REQUIRE(mc.size() == 2);
  CHECK(mc[1].text == "qemu:dirty-bitmap:x");
  CHECK(o.contexts.empty()); // listing selects nothing
  CHECK(slice(o.sent, 20) == cli::option(9, cli::meta_data("", {"base:", "qemu:"})));
}

TEST_CASE("engine negotiation: option mode SET_META_CONTEXT, then GO without another SET") {
  Script s = neg_script(Neg{true, false, false});
  s.settings.opt_mode = true;
  Settings g = plain_settings();
  g.meta_contexts = {"base:allocation"};
  g.request_meta_context = true;
  s.opts = {{OptAction::set_meta, plain_settings(), {"base:allocation"}},
            {OptAction::go, g, {}}};
  Buf server = cat({srv::greeting(3), srv::ack(8), srv::rep_meta(10, 3, "base:allocation"),
                    srv::ack(10), srv::info_export(7, 4096, 1), srv::ack(7)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  REQUIRE(o.contexts.size() == 1);
  CHECK(o.contexts[0].first == 3);
  CHECK(o.sent == cat({cli::flags(3), cli::option(8),
                       cli::option(10, cli::meta_data("", {"base:allocation"})),
                       cli::option(7, cli::go_data("", {}))}));
}

TEST_CASE("engine negotiation: option mode STRUCTURED_REPLY and EXTENDED_HEADERS") {
  Script s = neg_script(Neg{});
  s.settings.opt_mode = true;
  s.opts = {{OptAction::structured_reply, {}, {}}, {OptAction::extended_headers, {}, {}},
            {OptAction::extended_headers, {}, {}}};
  Buf server = cat({srv::greeting(3), srv::ack(8), srv::err(11, w::rep_err_unsup),
                    srv::ack(11)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::option_wait);
  auto od = of_kind(o, Event::option_done);
  REQUIRE(od.size() == 3);
  CHECK(od[0].error == 0);
  CHECK(od[1].error == ENOTSUP);
  CHECK(od[2].error == 0);
  CHECK(o.structured);
  CHECK(o.extended);
}

TEST_CASE("engine negotiation: option mode ABORT with an ACK -> closed") {
  Script s = neg_script(Neg{});
  s.settings.opt_mode = true;
  s.opts = {{OptAction::abort, {}, {}}};
  Buf server = cat({srv::greeting(3), srv::ack(2)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::closed);
  CHECK(o.sent == cat({cli::flags(3), cli::option(2)}));
  auto od = of_kind(o, Event::option_done);
  REQUIRE(od.size() == 1);
  CHECK(od[0].error == 0);
}

TEST_CASE("engine negotiation: option mode ABORT answered by EOF -> closed") {
  Script s = neg_script(Neg{});
  s.settings.opt_mode = true;
  s.opts = {{OptAction::abort, {}, {}}};
  Outcome o = check_all_splits(s, srv::greeting(3), true);
  CHECK(o.phase == Phase::closed);
  CHECK(o.death_errno == 0);
  REQUIRE(of_kind(o, Event::option_done).size() == 1);
}

TEST_CASE("engine negotiation: EOF in the handshake -> dead ENOTCONN") {
  Outcome o = check_all_splits(neg_script(Neg{}), slice(srv::greeting(3), 0, 10), true);
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == ENOTCONN);
  // And EOF where NBD_OPT_EXPORT_NAME is refused by closing.
  Outcome e = check_all_splits(neg_script(Neg{}), srv::greeting(0), true);
  CHECK(e.phase == Phase::dead);
  CHECK(e.death_errno == ENOTCONN);
  CHECK(e.death_reason.find("EXPORT_NAME") != std::string::npos);
}

TEST_CASE("engine negotiation: EOF in option mode mid-option -> option_done ENOTCONN") {
  Script s = neg_script(Neg{});
  s.settings.opt_mode = true;
  s.opts = {{OptAction::list, {}, {}}};
  Outcome o = check_all_splits(s, cat({srv::greeting(3), srv::rep_server("a")}), true);
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == ENOTCONN);
  auto od = of_kind(o, Event::option_done);
  REQUIRE(od.size() == 1);
  CHECK(od[0].error == ENOTCONN);
}

// =====================================================================================
// Transmission
// =====================================================================================

namespace {

Cmd flush() { return cmd_other(w::cmd_flush, 0, 0); }
Cmd bstatus(std::uint64_t off, std::uint64_t len, std::uint16_t flags = 0) {
  return cmd_other(w::cmd_block_status, off, len, flags);
}
Buf bytes_of(std::initializer_list<std::uint8_t> l) { return Buf(l); }

/// Feeds a server's violation to a fresh transmission and checks the death.
void violate(const Neg& n, std::vector<Cmd> cmds, const Buf& reply, int offender,
             std::initializer_list<int> others) {
  Tx t(n, std::move(cmds));
  t.d.feed(reply);
  check_violation(t, offender, others);
}

} // namespace

TEST_CASE("engine transmission: every command encoded byte-exact, compact, cookies 1, 2, 3...") {
  Tx t(Neg{}, {cmd_read(0, 512), cmd_write(512, bytes_of({1, 2, 3, 4}), w::cmd_flag_fua), flush(),
               cmd_other(w::cmd_trim, 1024, 4096), cmd_other(w::cmd_cache, 0, 8192),
               cmd_other(w::cmd_write_zeroes, 4096, 512,
                         w::cmd_flag_no_hole | w::cmd_flag_fast_zero),
               bstatus(0, 65536, w::cmd_flag_req_one)},
       true, true);
  // C: 0x25609513, flags, type, cookie, offset, 32-bit length (+ write payload)
  CHECK(t.tx_sent() == cat({cli::request(0, 0, 1, 0, 512), cli::request(1, 1, 2, 512, 4),
                            bytes_of({1, 2, 3, 4}), cli::request(0, 3, 3, 0, 0),
                            cli::request(0, 4, 4, 1024, 4096), cli::request(0, 5, 5, 0, 8192),
                            cli::request(0x12, 6, 6, 4096, 512),
                            cli::request(0x08, 7, 7, 0, 65536),
                            cli::request(0, 2, 0, 0, 0)})); // NBD_CMD_DISC, no reply
  for (std::size_t i = 0; i < 7; ++i) CHECK(t.d.engine().slot_cookie(t.slot(i)) == i + 1);
  CHECK(t.d.engine().next_cookie() == 8);
  CHECK(t.d.engine().in_flight() == 7);
  CHECK(t.d.engine().phase() == Phase::disconnecting);
}

TEST_CASE("engine transmission: every command encoded byte-exact, extended headers") {
  Neg n;
  n.ext = true;
  n.size = 1ull << 40;
  Tx t(n, {cmd_read(0, 512), cmd_write(512, bytes_of({9, 8}), w::cmd_flag_fua), flush(),
           cmd_other(w::cmd_trim, 0, 0x100000000), cmd_other(w::cmd_cache, 0, 8192),
           cmd_other(w::cmd_write_zeroes, 1ull << 33, 1ull << 34, w::cmd_flag_fast_zero),
           bstatus(0, 0x200000000)},
       true, true);
  // C: 0x21e41c71, flags, type, cookie, offset, 64-bit length (+ write payload)
  CHECK(t.tx_sent() == cat({cli::xrequest(0, 0, 1, 0, 512), cli::xrequest(1, 1, 2, 512, 2),
                            bytes_of({9, 8}), cli::xrequest(0, 3, 3, 0, 0),
                            cli::xrequest(0, 4, 4, 0, 0x100000000),
                            cli::xrequest(0, 5, 5, 0, 8192),
                            cli::xrequest(0x10, 6, 6, 1ull << 33, 1ull << 34),
                            cli::xrequest(0, 7, 7, 0, 0x200000000),
                            cli::xrequest(0, 2, 0, 0, 0)}));
}

TEST_CASE("engine transmission: simple replies, payload into the caller's buffer, errors mapped") {
  Neg n;
  Script s = neg_script(n, {cmd_read(0, 8), cmd_write(8, pattern(4, 1)), cmd_read(16, 4),
                            flush(), cmd_other(w::cmd_trim, 0, 512)});
  Buf server = cat({neg_server(n), srv::simple(0, 1, bytes_of({1, 2, 3, 4, 5, 6, 7, 8})),
                    srv::simple(5, 2), srv::simple(22, 3), srv::simple(13, 4),
                    srv::simple(0, 5)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  CHECK(o.read_bufs[0] == bytes_of({1, 2, 3, 4, 5, 6, 7, 8}));
  CHECK(done_error(o, 0) == 0);
  CHECK(done_error(o, 1) == EIO);
  CHECK(done_error(o, 2) == EINVAL);
  CHECK(o.read_bufs[2] == Buf(4, 0xee)); // no payload after an error
  CHECK(done_error(o, 3) == EINVAL);     // EACCES (13) is not an NBD error
  CHECK(done_error(o, 4) == 0);
}

TEST_CASE("engine transmission: a simple read reply is one data chunk (as libnbd reports it)") {
  Neg n;
  Script s = neg_script(n, {cmd_read(4096, 4)});
  Outcome o = check_all_splits(s, cat({neg_server(n), srv::simple(0, 1, bytes_of({1, 2, 3, 4}))}));
  auto rc = of_kind(o, Event::read_chunk);
  REQUIRE(rc.size() == 1);
  CHECK(rc[0].offset == 4096);
  CHECK(rc[0].length == 4);
  CHECK(rc[0].status == nbd::proto::read_data);
  CHECK(rc[0].error == 0);
  // Reported before the command completes.
  CHECK(o.events.back().kind == Event::command_done);
}

TEST_CASE("engine transmission: structured OFFSET_DATA in several chunks, out of order") {
  Neg n;
  n.sr = true;
  Script s = neg_script(n, {cmd_read(1000, 300)});
  Buf a = pattern(100, 1), b = pattern(100, 2), c = pattern(100, 3);
  Buf server = cat({neg_server(n), srv::chunk(0, srv::t_data, 1, srv::offset_data(1200, c)),
                    srv::chunk(0, srv::t_data, 1, srv::offset_data(1000, a)),
                    srv::chunk(srv::done, srv::t_data, 1, srv::offset_data(1100, b))});
  Outcome o = check_all_splits(s, server);
  CHECK(o.read_bufs[0] == cat({a, b, c}));
  CHECK(done_error(o, 0) == 0);
  auto rc = of_kind(o, Event::read_chunk);
  REQUIRE(rc.size() == 3);
  CHECK(rc[0].offset == 1200);
  CHECK(rc[1].offset == 1000);
  CHECK(rc[2].offset == 1100);
  for (auto& e : rc) {
    CHECK(e.length == 100);
    CHECK(e.status == nbd::proto::read_data);
  }
}

TEST_CASE("engine transmission: OFFSET_HOLE zeroes the buffer") {
  Neg n;
  n.sr = true;
  Script s = neg_script(n, {cmd_read(512, 96)});
  Buf d = pattern(32, 4);
  Buf server = cat({neg_server(n), srv::chunk(0, srv::t_hole, 1, srv::offset_hole(512, 32)),
                    srv::chunk(0, srv::t_data, 1, srv::offset_data(544, d)),
                    srv::chunk(srv::done, srv::t_hole, 1, srv::offset_hole(576, 32))});
  Outcome o = check_all_splits(s, server);
  CHECK(o.read_bufs[0] == cat({Buf(32, 0), d, Buf(32, 0)}));
  CHECK(done_error(o, 0) == 0);
  auto rc = of_kind(o, Event::read_chunk);
  REQUIRE(rc.size() == 3);
  CHECK(rc[0].status == nbd::proto::read_hole);
  CHECK(rc[0].offset == 512);
  CHECK(rc[0].length == 32);
  CHECK(rc[2].status == nbd::proto::read_hole);
}

TEST_CASE("engine transmission: NBD_REPLY_TYPE_NONE ends a reply") {
  Neg n;
  n.sr = true;
  Script s = neg_script(n, {cmd_write(0, pattern(16, 1)), cmd_read(0, 16), flush()});
  Buf d = pattern(16, 2);
  Buf server = cat({neg_server(n), srv::chunk(srv::done, srv::t_none, 1),
                    srv::chunk(0, srv::t_data, 2, srv::offset_data(0, d)),
                    srv::chunk(srv::done, srv::t_none, 2),
                    srv::simple(0, 3)}); // simple replies stay allowed for non-reads
  Outcome o = check_all_splits(s, server);
  CHECK(done_error(o, 0) == 0);
  CHECK(done_error(o, 1) == 0);
  CHECK(done_error(o, 2) == 0);
  CHECK(o.read_bufs[1] == d);
}

TEST_CASE("engine transmission: BLOCK_STATUS, one chunk per context") {
  Neg n{true, false, true};
  Script s = neg_script(n, {bstatus(4096, 65536)});
  Buf server = cat({neg_server(n),
                    srv::chunk(0, srv::t_bs, 1,
                               srv::block_status(ctx_alloc, {{4096, 0}, {57344, 3}, {8192, 1}})),
                    srv::chunk(srv::done, srv::t_bs, 1, srv::block_status(ctx_test, {{512, 7}}))});
  Outcome o = check_all_splits(s, server);
  CHECK(done_error(o, 0) == 0);
  auto ex = of_kind(o, Event::extents);
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].context_id == ctx_alloc);
  CHECK(ex[0].extents ==
        std::vector<std::pair<std::uint64_t, std::uint64_t>>{{4096, 0}, {57344, 3}, {8192, 1}});
  CHECK(ex[1].context_id == ctx_test);
  CHECK(ex[1].extents == std::vector<std::pair<std::uint64_t, std::uint64_t>>{{512, 7}});
}

TEST_CASE("engine transmission: BLOCK_STATUS_EXT with extended headers, 64-bit lengths") {
  Neg n{true, true, true};
  n.size = 1ull << 40;
  Script s = neg_script(n, {bstatus(0, 0x300000000)});
  Buf server =
      cat({neg_server(n),
           srv::xchunk(0, srv::t_bs_ext, 1, 0,
                       srv::block_status_ext(ctx_alloc, {{0x200000000, 3}, {0x200000000, 0}})),
           srv::xchunk(srv::done, srv::t_bs_ext, 1, 0,
                       srv::block_status_ext(ctx_test, {{4096, 0x100000001}}))});
  Outcome o = check_all_splits(s, server);
  CHECK(done_error(o, 0) == 0);
  auto ex = of_kind(o, Event::extents);
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].extents == std::vector<std::pair<std::uint64_t, std::uint64_t>>{
                             {0x200000000, 3}, {0x200000000, 0}});
  CHECK(ex[1].extents ==
        std::vector<std::pair<std::uint64_t, std::uint64_t>>{{4096, 0x100000001}});
}

TEST_CASE("engine transmission: extended replies to reads and writes") {
  Neg n;
  n.ext = true;
  Script s = neg_script(n, {cmd_read(4096, 64), cmd_write(0, pattern(8, 1))});
  Buf d1 = pattern(32, 5), d2 = pattern(32, 6);
  Buf server = cat({neg_server(n), srv::xchunk(0, srv::t_data, 1, 4096, srv::offset_data(4128, d2)),
                    srv::xchunk(srv::done, srv::t_data, 1, 4096, srv::offset_data(4096, d1)),
                    srv::xchunk(srv::done, srv::t_error, 2, 0, srv::error_payload(28, "full"))});
  Outcome o = check_all_splits(s, server);
  CHECK(o.read_bufs[0] == cat({d1, d2}));
  CHECK(done_error(o, 0) == 0);
  CHECK(done_error(o, 1) == ENOSPC);
}

TEST_CASE("engine transmission: ERROR and ERROR_OFFSET chunks") {
  Neg n;
  n.sr = true;
  Script s = neg_script(n, {cmd_write(0, pattern(512, 1)), cmd_read(0, 1024), flush()});
  Buf d = pattern(512, 7);
  Buf server =
      cat({neg_server(n), srv::chunk(srv::done, srv::t_error, 1, srv::error_payload(5, "disk on fire")),
           srv::chunk(0, srv::t_data, 2, srv::offset_data(0, d)),
           srv::chunk(0, srv::t_error_offset, 2, srv::error_offset_payload(5, "bad sector", 512)),
           srv::chunk(srv::done, srv::t_none, 2),
           srv::chunk(srv::done, srv::t_error, 3, srv::error_payload(108, ""))});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission); // errors are not violations
  CHECK(done_error(o, 0) == EIO);
  CHECK(done_error(o, 1) == EIO); // not covering the request is fine after an error
  CHECK(done_error(o, 2) == ESHUTDOWN);
  CHECK(slice(o.read_bufs[1], 0, 512) == d);
  auto rc = of_kind(o, Event::read_chunk);
  REQUIRE(rc.size() == 2);
  CHECK(rc[1].status == nbd::proto::read_error);
  CHECK(rc[1].offset == 512);
  CHECK(rc[1].error == EIO);
}

TEST_CASE("engine transmission: unknown chunk types with the error bit are errors") {
  Neg n;
  n.sr = true;
  Script s = neg_script(n, {cmd_write(0, pattern(8, 1)), flush()});
  Buf p = srv::error_payload(28, "x");
  put(p, bytes_of({1, 2, 3, 4, 5})); // a field this client does not know
  Buf server = cat({neg_server(n), srv::chunk(0, 0x8123, 1, p),
                    srv::chunk(srv::done, srv::t_none, 1),
                    srv::chunk(srv::done, 0xffff, 2, srv::error_payload(1234, ""))});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::transmission);
  CHECK(done_error(o, 0) == ENOSPC);
  CHECK(done_error(o, 1) == EINVAL); // an error value NBD does not define
}

TEST_CASE("engine transmission: replies out of order, chunks interleaved") {
  Neg n;
  n.sr = true;
  Script s = neg_script(n, {cmd_read(0, 64), cmd_write(0, pattern(4, 1)), cmd_read(64, 64),
                            flush()});
  Buf a1 = pattern(32, 1), a2 = pattern(32, 2), c = pattern(64, 3);
  Buf server = cat({neg_server(n), srv::simple(0, 4),
                    srv::chunk(0, srv::t_data, 1, srv::offset_data(32, a2)),
                    srv::chunk(srv::done, srv::t_data, 3, srv::offset_data(64, c)),
                    srv::simple(0, 2),
                    srv::chunk(srv::done, srv::t_data, 1, srv::offset_data(0, a1))});
  Outcome o = check_all_splits(s, server);
  auto done = of_kind(o, Event::command_done);
  REQUIRE(done.size() == 4);
  CHECK(done[0].slot == 3);
  CHECK(done[1].slot == 2);
  CHECK(done[2].slot == 1);
  CHECK(done[3].slot == 0);
  CHECK(o.read_bufs[0] == cat({a1, a2}));
  CHECK(o.read_bufs[2] == c);
}

TEST_CASE("engine transmission: a reply is consumed while a large write is half sent") {
  Buf big = pattern(1 << 20, 9);
  Tx t(Neg{}, {cmd_read(0, 4), cmd_write(0, big), flush()}, false);
  auto& e = t.d.engine();
  CHECK(e.wants() == nbd::proto::Direction::both);
  CHECK(e.send_pending_bytes() == 28 + 28 + big.size() + 28);
  // The read's header and a part of the write go out.
  CHECK(t.d.send(28 + 28 + 1000) == 28 + 28 + 1000);
  Buf reply = srv::simple(0, 1, bytes_of({4, 3, 2, 1}));
  CHECK(t.d.feed(reply) == reply.size());
  REQUIRE(t.done(0));
  CHECK(t.err(0) == 0);
  CHECK(t.d.read_buf(0) == bytes_of({4, 3, 2, 1}));
  CHECK_FALSE(t.done(1));
  CHECK(e.wants() == nbd::proto::Direction::both);
  // The iovecs point into the caller's buffer, where sending stopped.
  iovec iov[4];
  REQUIRE(e.send_segments(iov) >= 1);
  CHECK(iov[0].iov_base == t.d.write_buf(1).data() + 1000);
  CHECK(iov[0].iov_len == big.size() - 1000);
  CHECK(t.d.send() == big.size() - 1000 + 28);
  CHECK(e.wants() == nbd::proto::Direction::read);
  Buf rest = cat({srv::simple(0, 3), srv::simple(0, 2)});
  CHECK(t.d.feed(rest) == rest.size());
  CHECK(t.err(1) == 0);
  CHECK(t.err(2) == 0);
  CHECK(t.tx_sent() == cat({cli::request(0, 0, 1, 0, 4), cli::request(0, 1, 2, 0, 1 << 20), big,
                            cli::request(0, 3, 3, 0, 0)}));
}

TEST_CASE("engine transmission: a reply before its command is fully sent completes it later") {
  Buf big = pattern(65536, 3);
  Tx t(Neg{}, {cmd_write(0, big)}, false);
  CHECK(t.d.send(28 + 100) == 128);
  Buf reply = srv::simple(0, 1);
  CHECK(t.d.feed(reply) == reply.size());
  // The caller may not reuse its buffer yet: no completion.
  CHECK_FALSE(t.done(0));
  CHECK(t.d.engine().in_flight() == 1);
  t.d.send(1000);
  CHECK_FALSE(t.done(0));
  t.d.send();
  REQUIRE(t.done(0));
  CHECK(t.err(0) == 0);
  CHECK(t.d.engine().in_flight() == 0);
}

TEST_CASE("engine transmission: the send side in pieces of every size") {
  for (std::size_t piece : {1u, 3u, 27u, 28u, 29u, 100u}) {
    CAPTURE(piece);
    Tx t(Neg{}, {cmd_write(0, pattern(77, 1)), flush(), cmd_write(5, pattern(5, 2))}, false,
         true);
    while (t.d.send(piece) > 0) {
    }
    CHECK(t.tx_sent() == cat({cli::request(0, 1, 1, 0, 77), pattern(77, 1),
                              cli::request(0, 3, 2, 0, 0), cli::request(0, 1, 3, 5, 5),
                              pattern(5, 2), cli::request(0, 2, 0, 0, 0)}));
    CHECK(t.d.engine().send_pending_bytes() == 0);
  }
}

TEST_CASE("engine transmission: disconnect -> DISC sent -> closed") {
  Tx t(Neg{}, {cmd_read(0, 4)}, false);
  auto& e = t.d.engine();
  e.disconnect();
  CHECK(e.phase() == Phase::disconnecting);
  t.d.send();
  CHECK(slice(t.tx_sent(), 28) == cli::request(0, 2, 0, 0, 0));
  CHECK(e.phase() == Phase::disconnecting); // the read's reply is still due
  CHECK(e.wants() == nbd::proto::Direction::read);
  Buf reply = srv::simple(0, 1, bytes_of({1, 2, 3, 4}));
  CHECK(t.d.feed(reply) == reply.size());
  CHECK(t.err(0) == 0);
  CHECK(e.phase() == Phase::closed);
  CHECK(e.wants() == nbd::proto::Direction::none);
  t.d.eof();
  CHECK(e.phase() == Phase::closed);
  CHECK(e.death_errno() == 0);
}

TEST_CASE("engine transmission: disconnect with nothing in flight closes once DISC is out") {
  Tx t(Neg{}, {}, false);
  auto& e = t.d.engine();
  e.disconnect();
  CHECK(e.wants() == nbd::proto::Direction::both);
  CHECK(t.d.send(10) == 10);
  CHECK(e.phase() == Phase::disconnecting);
  t.d.send();
  CHECK(e.phase() == Phase::closed);
  CHECK(t.tx_sent() == cli::request(0, 2, 0, 0, 0));
}

TEST_CASE("engine transmission: EOF after DISC -> closed, unanswered commands ENOTCONN") {
  Tx t(Neg{}, {cmd_read(0, 4), flush()}, true, true);
  CHECK(t.d.engine().phase() == Phase::disconnecting);
  t.d.eof();
  CHECK(t.d.engine().phase() == Phase::closed);
  CHECK(t.d.engine().death_errno() == 0);
  CHECK(t.err(0) == ENOTCONN);
  CHECK(t.err(1) == ENOTCONN);
}

TEST_CASE("engine transmission: retire, and cookies are never reused") {
  Tx t(Neg{}, {flush(), flush(), flush()});
  auto& e = t.d.engine();
  Buf r = cat({srv::simple(0, 1), srv::simple(0, 2), srv::simple(0, 3)});
  CHECK(t.d.feed(r) == r.size());
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(e.slot_done(t.slot(i)));
    CHECK(e.find(i + 1) == t.slot(i));
    e.retire(t.slot(i));
    CHECK(e.find(i + 1) == nbd::proto::CookieMap::npos);
  }
  // Slots are reused, cookies are not.
  for (int i = 0; i < 3; ++i) t.d.submit(flush());
  t.d.send();
  for (std::size_t i = 3; i < 6; ++i) {
    CHECK(e.slot_cookie(t.slot(i)) == i + 1);
    CHECK(t.slot(i) < 3);
  }
  CHECK(slice(t.tx_sent(), 3 * 28) == cat({cli::request(0, 3, 4, 0, 0),
                                           cli::request(0, 3, 5, 0, 0),
                                           cli::request(0, 3, 6, 0, 0)}));
  // A reply to a retired cookie is a reply to an unknown cookie.
  t.d.feed(srv::simple(0, 2));
  check_violation(t, -1, {3, 4, 5});
}

TEST_CASE("engine transmission: Engine::feed (staging buffer) matches recv_target delivery") {
  Neg n;
  n.sr = true;
  std::vector<Cmd> cmds = {cmd_read(0, 64), cmd_write(0, pattern(4, 1)), cmd_read(64, 64)};
  Buf replies = cat({srv::chunk(srv::done, srv::t_data, 3, srv::offset_data(64, pattern(64, 1))),
                     srv::simple(0, 2),
                     srv::chunk(0, srv::t_hole, 1, srv::offset_hole(0, 32)),
                     srv::chunk(srv::done, srv::t_data, 1, srv::offset_data(32, pattern(32, 2)))});
  Tx a(n, cmds), b(n, cmds);
  CHECK(a.d.feed(replies) == replies.size());
  CHECK(b.d.feed_staged(replies) == replies.size());
  CHECK(a.out() == b.out());
  CHECK(b.err(0) == 0);
  // After death, feed takes nothing more.
  Buf junk = srv::simple(0, 77);
  CHECK(b.d.feed_staged(junk) == junk.size()); // the magic and header: then death
  CHECK(b.d.engine().phase() == Phase::dead);
  CHECK(b.d.engine().feed(junk) == 0);
}

TEST_CASE("engine transmission: wants() follows the state") {
  Engine e;
  CHECK(e.wants() == nbd::proto::Direction::none);
  Driver d(neg_script(Neg{}, {cmd_read(0, 4)}));
  d.auto_send = false;
  d.start();
  CHECK(d.engine().wants() == nbd::proto::Direction::read); // the greeting
  Buf g = srv::greeting(3);
  d.feed(g);
  CHECK(d.engine().wants() == nbd::proto::Direction::both); // options to send, replies due
  d.send();
  CHECK(d.engine().wants() == nbd::proto::Direction::read);
}

// =====================================================================================
// Protocol violations: each one kills the connection
// =====================================================================================

TEST_CASE("engine violation: bad greeting magic") {
  Buf g = srv::greeting(3);
  g[3] ^= 1;
  check_handshake_violation(neg_script(Neg{}), g, 16);
  Buf o = srv::oldstyle(1024, 1);
  o[15] ^= 1;
  check_handshake_violation(neg_script(Neg{}), o, 16);
}

TEST_CASE("engine violation: unknown handshake flags") {
  check_handshake_violation(neg_script(Neg{}), srv::greeting(3 | 4), 18);
  check_handshake_violation(neg_script(Neg{}), srv::greeting(0x8000), 18);
}

TEST_CASE("engine violation: bad option reply magic") {
  Buf r = srv::ack(w::opt_go);
  r[7] ^= 1;
  check_handshake_violation(neg_script(Neg{}), cat({srv::greeting(3), r}), 38);
}

TEST_CASE("engine violation: option reply for another option") {
  check_handshake_violation(neg_script(Neg{true, false, false}),
                            cat({srv::greeting(3), srv::ack(w::opt_go)}), 38);
  check_handshake_violation(neg_script(Neg{}),
                            cat({srv::greeting(3), srv::info_export(6, 1024, 1)}), 38);
}

TEST_CASE("engine violation: option reply longer than max_option_reply") {
  for (std::uint32_t len : {static_cast<std::uint32_t>(Engine::max_option_reply + 1), 0x7fffffffu,
                            0xffffffffu}) {
    CAPTURE(len);
    Buf h;
    put64(h, srv::rep_magic);
    put32(h, w::opt_go);
    put32(h, w::rep_info);
    put32(h, len);
    // Dead straight after the header: nothing of the payload is awaited.
    check_handshake_violation(neg_script(Neg{}), cat({srv::greeting(3), h}), 38);
  }
  // The limit itself is fine for an error message.
  Buf msg(Engine::max_option_reply, 'x');
  Outcome o = run(neg_script(Neg{}),
                  cat({srv::greeting(3), srv::opt_reply(7, w::rep_err_policy, msg)}),
                  FeedMode::whole, false);
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == ENOTSUP);
}

TEST_CASE("engine violation: endless export list") {
  Script s = neg_script(Neg{});
  s.settings.opt_mode = true;
  s.opts = {{OptAction::list, {}, {}}};
  Buf server = srv::greeting(3);
  Buf one = srv::rep_server("");
  for (int i = 0; i < 65537; ++i) put(server, one);
  put(server, srv::ack(3));
  Outcome o = run(s, server, FeedMode::whole, false);
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == EPROTO);
  CHECK(o.consumed == 18 + 65537 * one.size());
  CHECK(of_kind(o, Event::export_listed).size() == 65536);
  auto od = of_kind(o, Event::option_done);
  REQUIRE(od.size() == 1);
  CHECK(od[0].error == EPROTO);
}

TEST_CASE("engine violation: endless meta context list") {
  Script s = neg_script(Neg{true, false, false});
  s.settings.opt_mode = true;
  s.opts = {{OptAction::list_meta, plain_settings(), {}}};
  Buf server = cat({srv::greeting(3), srv::ack(8)});
  Buf one = srv::rep_meta(9, 0, "x:y");
  for (int i = 0; i < 65537; ++i) put(server, one);
  Outcome o = run(s, server, FeedMode::whole, false);
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == EPROTO);
  CHECK(of_kind(o, Event::meta_context).size() == 65536);
}

TEST_CASE("engine violation: NBD_REP_INFO of the wrong length") {
  check_handshake_violation(neg_script(Neg{}),
                            cat({srv::greeting(3), srv::info_raw(7, 0, Buf(11, 0))}), 18 + 33);
  check_handshake_violation(neg_script(Neg{}),
                            cat({srv::greeting(3), srv::info_raw(7, 3, Buf(13, 0))}), 18 + 35);
  check_handshake_violation(neg_script(Neg{}),
                            cat({srv::greeting(3), srv::info_raw(7, 1, Buf(4097, 'n'))}),
                            18 + 20 + 2 + 4097);
  // A reply too short to hold an info type.
  check_handshake_violation(neg_script(Neg{}), cat({srv::greeting(3), srv::opt_reply(7, 3, {0})}),
                            18 + 21);
}

TEST_CASE("engine violation: invalid block size constraints") {
  for (const auto& c : {std::tuple{3u, 4096u, 0xffffffffu}, std::tuple{512u, 256u, 4096u},
                        std::tuple{512u, 4096u, 1000u}}) {
    const std::uint32_t mn = std::get<0>(c), pref = std::get<1>(c), mx = std::get<2>(c);
    CAPTURE(mn);
    CAPTURE(pref);
    check_handshake_violation(
        neg_script(Neg{}), cat({srv::greeting(3), srv::info_block_size(7, mn, pref, mx)}), 18 + 34);
  }
}

TEST_CASE("engine violation: ACK to GO without NBD_INFO_EXPORT") {
  check_handshake_violation(neg_script(Neg{}), cat({srv::greeting(3), srv::ack(7)}), 38);
  check_handshake_violation(
      neg_script(Neg{}),
      cat({srv::greeting(3), srv::info_text(7, w::info_name, "x"), srv::ack(7)}), 18 + 23 + 20);
}

TEST_CASE("engine violation: unexpected option reply type") {
  check_handshake_violation(neg_script(Neg{}),
                            cat({srv::greeting(3), srv::opt_reply(7, w::rep_server, Buf(5, 0))}),
                            18 + 25);
  check_handshake_violation(neg_script(Neg{true, false, false}),
                            cat({srv::greeting(3), srv::rep_meta(8, 1, "a:b")}), 18 + 27);
  check_handshake_violation(neg_script(Neg{}), cat({srv::greeting(3), srv::opt_reply(7, 77)}),
                            38);
}

TEST_CASE("engine violation: export size larger than INT64_MAX (GO)") {
  Buf server = cat({srv::greeting(3), srv::info_export(7, 0x8000000000000000, 1), srv::ack(7)});
  check_handshake_violation(neg_script(Neg{}), server, server.size());
}

TEST_CASE("engine violation: export size larger than INT64_MAX (EXPORT_NAME, oldstyle)") {
  Buf en = cat({srv::greeting(0), srv::export_name_reply(0xffffffffffffffff, 1, true)});
  check_handshake_violation(neg_script(Neg{}), en, en.size());
  Buf old = srv::oldstyle(0x8000000000000001, 1);
  check_handshake_violation(neg_script(Neg{}), old, old.size());
}

TEST_CASE("engine violation: export size larger than INT64_MAX (option mode GO)") {
  Script s = neg_script(Neg{});
  s.settings.opt_mode = true;
  s.opts = {{OptAction::go, plain_settings(), {}}};
  Buf server = cat({srv::greeting(3), srv::info_export(7, 0x8000000000000000, 1), srv::ack(7)});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == EPROTO);
  // The caller's opt_go completes, with the error.
  auto od = of_kind(o, Event::option_done);
  REQUIRE(od.size() == 1);
  CHECK(od[0].error == EPROTO);
}

TEST_CASE("engine violation: reply with an unknown cookie") {
  violate(Neg{}, {cmd_read(0, 4), flush()}, srv::simple(0, 99), -1, {0, 1});
}

TEST_CASE("engine violation: reply with an unknown cookie, structured") {
  Neg n;
  n.sr = true;
  violate(n, {cmd_read(0, 4), flush()}, srv::chunk(srv::done, srv::t_none, 0), -1, {0, 1});
}

TEST_CASE("engine violation: duplicate reply") {
  Tx t(Neg{}, {cmd_read(0, 4), flush()});
  t.d.feed(srv::simple(0, 2));
  REQUIRE(t.err(1) == 0);
  t.d.feed(srv::simple(0, 2));
  check_violation(t, -1, {0});
}

TEST_CASE("engine violation: a second reply after a structured reply was DONE") {
  Neg n;
  n.sr = true;
  Tx t(n, {cmd_write(0, pattern(4, 1)), flush()});
  t.d.feed(srv::chunk(srv::done, srv::t_none, 1));
  REQUIRE(t.err(0) == 0);
  t.d.feed(srv::chunk(srv::done, srv::t_error, 1, srv::error_payload(5, "")));
  check_violation(t, -1, {1});
}

TEST_CASE("engine violation: structured reply not negotiated") {
  violate(Neg{}, {cmd_read(0, 4), flush()}, srv::chunk(srv::done, srv::t_none, 1), -1, {0, 1});
}

TEST_CASE("engine violation: extended reply not negotiated") {
  Neg n;
  n.sr = true;
  violate(n, {cmd_read(0, 4), flush()}, srv::xchunk(srv::done, srv::t_none, 1, 0), -1, {0, 1});
}

TEST_CASE("engine violation: simple reply after extended headers were negotiated") {
  Neg n;
  n.ext = true;
  violate(n, {flush(), cmd_read(0, 4)}, srv::simple(0, 1), -1, {0, 1});
}

TEST_CASE("engine violation: compact chunk after extended headers were negotiated") {
  Neg n;
  n.ext = true;
  violate(n, {flush(), cmd_read(0, 4)}, srv::chunk(srv::done, srv::t_none, 1), -1, {0, 1});
}

TEST_CASE("engine violation: bad reply magic") {
  Buf r = srv::simple(0, 1);
  r[0] = 0x96; // the historic, reserved NBD_REPLY_MAGIC 0x96744668
  r[1] = 0x74;
  r[2] = 0x46;
  r[3] = 0x68;
  violate(Neg{}, {flush(), cmd_read(0, 4)}, r, -1, {0, 1});
}

TEST_CASE("engine violation: simple reply to a read after structured replies were negotiated") {
  Neg n;
  n.sr = true;
  violate(n, {cmd_read(0, 4), flush()}, srv::simple(0, 1, bytes_of({1, 2, 3, 4})), 0, {1});
}

TEST_CASE("engine violation: simple reply to a block status request") {
  Neg n{true, false, true};
  violate(n, {bstatus(0, 512), flush()}, srv::simple(0, 1), 0, {1});
}

TEST_CASE("engine violation: extended reply whose offset is not the request's") {
  Neg n;
  n.ext = true;
  violate(n, {cmd_read(4096, 8), flush()},
          srv::xchunk(srv::done, srv::t_data, 1, 0, srv::offset_data(4096, pattern(8, 1))), 0,
          {1});
}

TEST_CASE("engine violation: OFFSET_DATA outside the request, buffer untouched") {
  Neg n;
  n.sr = true;
  for (std::uint64_t off : {4096ull + 256, 4096ull - 8, 0ull, 4096ull + 512, 0xfffffffffffffff8ull}) {
    CAPTURE(off);
    Tx t(n, {cmd_read(4096, 512), flush()});
    t.d.feed(srv::chunk(srv::done, srv::t_data, 1, srv::offset_data(off, pattern(512, 1))));
    CHECK(t.d.read_buf(0) == Buf(512, 0xee));
    check_violation(t, 0, {1});
  }
}

TEST_CASE("engine violation: OFFSET_DATA longer than the request, buffer untouched") {
  Neg n;
  n.sr = true;
  Tx t(n, {cmd_read(0, 512), flush()});
  t.d.feed(srv::chunk(srv::done, srv::t_data, 1, srv::offset_data(0, pattern(600, 1))));
  CHECK(t.d.read_buf(0) == Buf(512, 0xee));
  check_violation(t, 0, {1});
}

TEST_CASE("engine violation: OFFSET_DATA too short") {
  Neg n;
  n.sr = true;
  violate(n, {cmd_read(0, 512), flush()}, srv::chunk(srv::done, srv::t_data, 1, Buf(8, 0)), 0,
          {1});
}

TEST_CASE("engine violation: OFFSET_DATA to a command that is not a read") {
  Neg n;
  n.sr = true;
  violate(n, {cmd_write(0, pattern(8, 1)), flush()},
          srv::chunk(srv::done, srv::t_data, 1, srv::offset_data(0, pattern(8, 1))), 0, {1});
}

TEST_CASE("engine violation: overlapping data chunks") {
  Neg n;
  n.sr = true;
  Tx t(n, {cmd_read(0, 1024), flush()});
  Buf first = pattern(512, 1);
  t.d.feed(srv::chunk(0, srv::t_data, 1, srv::offset_data(0, first)));
  REQUIRE(t.d.engine().phase() == Phase::transmission);
  t.d.feed(srv::chunk(0, srv::t_data, 1, srv::offset_data(256, pattern(256, 2))));
  // Refused before a byte of the second chunk landed.
  CHECK(slice(t.d.read_buf(0), 0, 512) == first);
  check_violation(t, 0, {1});
}

TEST_CASE("engine violation: overlapping data chunks that add up to the request") {
  // 512 + 512 bytes for a 1024-byte read, but both at offset 0: the
  // second half was never sent, the reply must not count as success.
  Neg n;
  n.sr = true;
  Tx t(n, {cmd_read(0, 1024), flush()});
  t.d.feed(srv::chunk(0, srv::t_data, 1, srv::offset_data(0, pattern(512, 1))));
  t.d.feed(srv::chunk(srv::done, srv::t_data, 1, srv::offset_data(0, pattern(512, 2))));
  check_violation(t, 0, {1});
}

TEST_CASE("engine violation: a hole overlapping data") {
  Neg n;
  n.sr = true;
  Tx t(n, {cmd_read(0, 1024), flush()});
  Buf first = pattern(512, 1);
  t.d.feed(srv::chunk(0, srv::t_data, 1, srv::offset_data(0, first)));
  t.d.feed(srv::chunk(srv::done, srv::t_hole, 1, srv::offset_hole(0, 1024 - 512)));
  CHECK(slice(t.d.read_buf(0), 0, 512) == first); // not zeroed
  check_violation(t, 0, {1});
}

TEST_CASE("engine violation: OFFSET_HOLE outside the request, zero-length, wrong length") {
  Neg n;
  n.sr = true;
  violate(n, {cmd_read(0, 512), flush()},
          srv::chunk(srv::done, srv::t_hole, 1, srv::offset_hole(256, 512)), 0, {1});
  violate(n, {cmd_read(0, 512), flush()},
          srv::chunk(srv::done, srv::t_hole, 1, srv::offset_hole(0, 0)), 0, {1});
  Buf p = srv::offset_hole(0, 512);
  p.push_back(0);
  violate(n, {cmd_read(0, 512), flush()}, srv::chunk(srv::done, srv::t_hole, 1, p), 0, {1});
}

TEST_CASE("engine violation: successful read reply not covering the request") {
  Neg n;
  n.sr = true;
  violate(n, {cmd_read(0, 1024), flush()},
          srv::chunk(srv::done, srv::t_data, 1, srv::offset_data(0, pattern(512, 1))), 0, {1});
  violate(n, {cmd_read(0, 1024), flush()}, srv::chunk(srv::done, srv::t_none, 1), 0, {1});
}

TEST_CASE("engine violation: NONE with a nonzero length") {
  Neg n;
  n.sr = true;
  violate(n, {flush(), cmd_read(0, 4)}, srv::chunk(srv::done, srv::t_none, 1, Buf(4, 0)), 0,
          {1});
}

TEST_CASE("engine violation: NONE without DONE") {
  Neg n;
  n.sr = true;
  violate(n, {flush(), cmd_read(0, 4)}, srv::chunk(0, srv::t_none, 1), 0, {1});
}

TEST_CASE("engine violation: error chunk whose message overruns it") {
  Neg n;
  n.sr = true;
  Buf p = srv::error_payload(5, "oops");
  p[5] = 10; // message length 10, 4 bytes present
  violate(n, {flush(), cmd_read(0, 4)}, srv::chunk(srv::done, srv::t_error, 1, p), 0, {1});
  // ERROR_OFFSET with the message eating into the offset.
  Buf q = srv::error_offset_payload(5, "oops", 0);
  q[5] = 8;
  violate(n, {flush(), cmd_read(0, 4)}, srv::chunk(srv::done, srv::t_error_offset, 1, q), 0, {1});
}

TEST_CASE("engine violation: error chunk too short for its fields") {
  Neg n;
  n.sr = true;
  violate(n, {flush(), cmd_read(0, 4)}, srv::chunk(srv::done, srv::t_error, 1, Buf{0, 0, 0, 5}),
          0, {1});
}

TEST_CASE("engine violation: error chunk with error 0") {
  Neg n;
  n.sr = true;
  violate(n, {flush(), cmd_read(0, 4)},
          srv::chunk(srv::done, srv::t_error, 1, srv::error_payload(0, "fine?")), 0, {1});
}

TEST_CASE("engine violation: error chunk longer than any message allows") {
  Neg n;
  n.sr = true;
  // The header alone is refused: no 64K payload is awaited.
  Tx t(n, {flush(), cmd_read(0, 4)});
  t.d.feed(srv::chunk_header(srv::done, srv::t_error, 1, 65536));
  check_violation(t, 0, {1});
}

TEST_CASE("engine violation: ERROR_OFFSET outside the request") {
  Neg n;
  n.sr = true;
  violate(n, {cmd_read(4096, 512), flush()},
          srv::chunk(srv::done, srv::t_error_offset, 1, srv::error_offset_payload(5, "", 4096 + 512)),
          0, {1});
}

TEST_CASE("engine violation: block status with a zero-length extent") {
  Neg n{true, false, true};
  violate(n, {bstatus(0, 65536), flush()},
          srv::chunk(srv::done, srv::t_bs, 1, srv::block_status(ctx_alloc, {{4096, 0}, {0, 0}})),
          0, {1});
}

TEST_CASE("engine violation: block status extents beyond the request") {
  Neg n{true, false, true};
  // The first N-1 extents must stay below the requested length.
  violate(n, {bstatus(0, 65536), flush()},
          srv::chunk(srv::done, srv::t_bs, 1,
                     srv::block_status(ctx_alloc, {{65536, 0}, {4096, 0}})),
          0, {1});
}

TEST_CASE("engine: block status, the last extent may reach past the request") {
  Neg n{true, false, true};
  Tx t(n, {bstatus(0, 65536)});
  t.d.feed(srv::chunk(0, srv::t_bs, 1, srv::block_status(ctx_alloc, {{4096, 0}, {131072, 1}})));
  t.d.feed(srv::chunk(srv::done, srv::t_bs, 1, srv::block_status(ctx_test, {{1 << 20, 0}})));
  CHECK(t.err(0) == 0);
}

TEST_CASE("engine violation: block status extents beyond the export") {
  Neg n{true, false, true};
  violate(n, {bstatus(1 << 19, 4096), flush()},
          srv::chunk(srv::done, srv::t_bs, 1, srv::block_status(ctx_alloc, {{(1 << 19) + 1, 0}})),
          0, {1});
}

TEST_CASE("engine violation: block status for an unknown context id") {
  Neg n{true, false, true};
  violate(n, {bstatus(0, 4096), flush()},
          srv::chunk(srv::done, srv::t_bs, 1, srv::block_status(55, {{4096, 0}})), 0, {1});
}

TEST_CASE("engine violation: block status with REQ_ONE and more than one extent") {
  Neg n{true, false, true};
  violate(n, {bstatus(0, 65536, w::cmd_flag_req_one), flush()},
          srv::chunk(srv::done, srv::t_bs, 1,
                     srv::block_status(ctx_alloc, {{4096, 0}, {4096, 1}})),
          0, {1});
}

TEST_CASE("engine violation: block status with REQ_ONE and an extent longer than the request") {
  // proto.md: with REQ_ONE "that descriptor MUST NOT exceed the length of
  // the original request".
  Neg n{true, false, true};
  violate(n, {bstatus(0, 4096, w::cmd_flag_req_one), flush()},
          srv::chunk(srv::done, srv::t_bs, 1, srv::block_status(ctx_alloc, {{8192, 0}})), 0, {1});
}

TEST_CASE("engine violation: block status of a bad length") {
  Neg n{true, false, true};
  Buf p = srv::block_status(ctx_alloc, {{4096, 0}});
  p.pop_back();
  violate(n, {bstatus(0, 4096), flush()}, srv::chunk(srv::done, srv::t_bs, 1, p), 0, {1});
  violate(n, {bstatus(0, 4096), flush()},
          srv::chunk(srv::done, srv::t_bs, 1, srv::block_status(ctx_alloc, {})), 0, {1});
  // Far too many extents: refused at the header.
  Tx t(n, {bstatus(0, 4096), flush()});
  t.d.feed(srv::chunk_header(srv::done, srv::t_bs, 1, 4 + 8 * (16u << 20)));
  check_violation(t, 0, {1});
}

TEST_CASE("engine violation: a block status reply without any extents") {
  Neg n{true, false, true};
  violate(n, {bstatus(0, 4096), flush()}, srv::chunk(srv::done, srv::t_none, 1), 0, {1});
}

TEST_CASE("engine violation: block status to a command that is not block status") {
  Neg n{true, false, true};
  violate(n, {cmd_read(0, 4096), flush()},
          srv::chunk(srv::done, srv::t_bs, 1, srv::block_status(ctx_alloc, {{4096, 0}})), 0, {1});
}

TEST_CASE("engine violation: BLOCK_STATUS_EXT without extended headers") {
  Neg n{true, false, true};
  violate(n, {bstatus(0, 4096), flush()},
          srv::chunk(srv::done, srv::t_bs_ext, 1, srv::block_status_ext(ctx_alloc, {{4096, 0}})),
          0, {1});
}

TEST_CASE("engine violation: compact BLOCK_STATUS after extended headers were negotiated") {
  // proto.md: with extended headers the server MUST use BLOCK_STATUS_EXT.
  Neg n{true, true, true};
  violate(n, {bstatus(0, 4096), flush()},
          srv::xchunk(srv::done, srv::t_bs, 1, 0, srv::block_status(ctx_alloc, {{4096, 0}})), 0,
          {1});
}

TEST_CASE("engine violation: BLOCK_STATUS_EXT whose descriptor count does not match") {
  Neg n{true, true, true};
  for (std::int64_t count : {0ll, 2ll, 0xffffffffll}) {
    CAPTURE(count);
    violate(n, {bstatus(0, 4096), flush()},
            srv::xchunk(srv::done, srv::t_bs_ext, 1, 0,
                        srv::block_status_ext(ctx_alloc, {{4096, 0}}, count)),
            0, {1});
  }
}

TEST_CASE("engine violation: unknown chunk type without the error bit") {
  Neg n;
  n.sr = true;
  for (std::uint16_t type : {3, 4, 7, 100, 0x7fff}) {
    CAPTURE(type);
    violate(n, {cmd_read(0, 4), flush()}, srv::chunk(srv::done, type, 1, Buf(12, 0)), 0, {1});
  }
}

TEST_CASE("engine violation: EOF in the middle of a reply header") {
  Tx t(Neg{}, {cmd_read(0, 4), flush()});
  Buf r = srv::simple(0, 1);
  t.d.feed(slice(r, 0, 9));
  t.d.eof();
  CHECK(t.d.engine().phase() == Phase::dead);
  CHECK(t.d.engine().death_errno() == ENOTCONN);
  CHECK(t.err(0) == ENOTCONN);
  CHECK(t.err(1) == ENOTCONN);
}

TEST_CASE("engine violation: EOF in the middle of a read payload") {
  Neg n;
  n.sr = true;
  Tx t(n, {cmd_read(0, 512), flush()});
  Buf r = srv::chunk(srv::done, srv::t_data, 1, srv::offset_data(0, pattern(512, 1)));
  t.d.feed(slice(r, 0, 20 + 8 + 100));
  t.d.eof();
  CHECK(t.d.engine().phase() == Phase::dead);
  CHECK(t.d.engine().death_errno() == ENOTCONN);
  CHECK(t.err(0) == ENOTCONN);
  CHECK(t.err(1) == ENOTCONN);
}

TEST_CASE("engine violation: EOF with nothing in flight, before DISC") {
  Tx t(Neg{});
  t.d.eof();
  CHECK(t.d.engine().phase() == Phase::dead);
  CHECK(t.d.engine().death_errno() == ENOTCONN);
}

TEST_CASE("engine violation: the transport's I/O error") {
  Tx t(Neg{}, {cmd_read(0, 4)});
  t.d.engine().on_io_error(ECONNRESET, "recv");
  t.d.collect();
  CHECK(t.d.engine().phase() == Phase::dead);
  CHECK(t.d.engine().death_errno() == ECONNRESET);
  CHECK(t.err(0) == ENOTCONN);
}

TEST_CASE("engine transmission: many tiny data chunks in order are fine") {
  Neg n;
  n.sr = true;
  Tx t(n, {cmd_read(0, 8192)});
  Buf all = pattern(8192, 5);
  Buf replies;
  for (std::size_t i = 0; i < all.size(); ++i)
    put(replies, srv::chunk(i + 1 == all.size() ? srv::done : 0, srv::t_data, 1,
                            srv::offset_data(i, slice(all, i, 1))));
  CHECK(t.d.feed(replies) == replies.size());
  CHECK(t.err(0) == 0);
  CHECK(t.d.read_buf(0) == all);
}

TEST_CASE("engine violation: too many scattered data chunks") {
  // Tracking which bytes arrived is bounded: a server scattering more than
  // 4096 disjoint pieces over one read is refused (servers send in order).
  Neg n;
  n.sr = true;
  Tx t(n, {cmd_read(0, 2 * 4097 + 2), flush()});
  Buf replies;
  for (std::size_t i = 0; i < 4097; ++i)
    put(replies, srv::chunk(0, srv::t_data, 1, srv::offset_data(2 * i, bytes_of({7}))));
  t.d.feed(replies);
  check_violation(t, 0, {1});
  // The first 4096 pieces landed, the last one did not.
  CHECK(t.d.read_buf(0)[2 * 4095] == 7);
  CHECK(t.d.read_buf(0)[2 * 4096] == 0xee);
}

TEST_CASE("engine violation: extended chunk lengths beyond any limit are refused at the header") {
  Neg n;
  n.ext = true;
  for (std::uint16_t type : {srv::t_data, srv::t_error, srv::t_bs_ext, srv::t_hole}) {
    CAPTURE(type);
    Tx t(n, {cmd_read(0, 512), flush()});
    Buf h;
    put32(h, 0x6e8a278c);
    put16(h, srv::done);
    put16(h, type);
    put64(h, 1);
    put64(h, 0);
    put64(h, 0x8000000000000000);
    CHECK(t.d.feed(h) == h.size());
    check_violation(t, 0, {1});
  }
}

TEST_CASE("engine transmission: negotiation bytes stay in place while a send is in flight") {
  // An io_uring send may still be reading out_ when a reply makes the
  // engine queue the next option: the bytes handed out must not move.
  Script s = neg_script(Neg{true, false, false});
  Driver d(s);
  d.auto_send = false;
  d.start();
  Buf g = srv::greeting(3);
  d.feed(g);
  iovec iov[4];
  REQUIRE(d.engine().send_segments(iov) == 1);
  const Buf first(static_cast<const std::uint8_t*>(iov[0].iov_base),
                  static_cast<const std::uint8_t*>(iov[0].iov_base) + iov[0].iov_len);
  const Buf all = cat({cli::flags(3), cli::option(8), cli::option(7, cli::go_data("", {}))});
  CHECK(slice(all, 0, first.size()) == first);
  const void* base = iov[0].iov_base;
  // The server answers before the send completed (a fast server, a slow
  // completion): GO is queued meanwhile.
  Buf ack = srv::ack(8);
  d.feed(ack);
  REQUIRE(d.engine().send_segments(iov) >= 1);
  CHECK(iov[0].iov_base == base);
  CHECK(Buf(static_cast<const std::uint8_t*>(base),
            static_cast<const std::uint8_t*>(base) + first.size()) == first);
  d.send();
  CHECK(d.sent() == all);
}

TEST_CASE("engine violation: endless NBD_REP_INFO replies") {
  Script s = neg_script(Neg{});
  Buf server = srv::greeting(3);
  Buf one = srv::info_raw(7, 0x1234, {});
  for (int i = 0; i < 65537; ++i) put(server, one);
  Outcome o = run(s, server, FeedMode::whole, false);
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == EPROTO);
  CHECK(o.consumed == 18 + 65537 * one.size());
}

TEST_CASE("engine violation: every byte of a bad reply, split anywhere, ends the same") {
  // A whole conversation ending in a violation, checked at every split.
  Neg n;
  n.sr = true;
  Script s = neg_script(n, {cmd_read(0, 64), flush()});
  Buf server = cat({neg_server(n), srv::simple(0, 2),
                    srv::chunk(0, srv::t_data, 1, srv::offset_data(0, pattern(32, 1))),
                    srv::chunk(srv::done, srv::t_data, 1, srv::offset_data(16, pattern(32, 2)))});
  Outcome o = check_all_splits(s, server);
  CHECK(o.phase == Phase::dead);
  CHECK(o.death_errno == EPROTO);
  CHECK(done_error(o, 0) == EPROTO);
  CHECK(done_error(o, 1) == 0);
  CHECK(o.consumed == server.size() - 32); // the overlapping data is never taken
}

} // TEST_SUITE
