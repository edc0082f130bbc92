// SPDX-License-Identifier: BSD-3-Clause
#include "proto/engine.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

namespace nbd::proto {

using namespace nbd::wire;

namespace {

// Where in header_ the 8-byte offset of an OFFSET_DATA chunk lands, clear
// of the reply header that is still being looked at.
constexpr std::size_t data_offset_at = 64;

// A server that keeps sending list, meta context or info replies must not
// keep the client busy (or its callbacks running) forever.
constexpr std::size_t max_list_entries = 65536;

// Block status payloads beyond this are refused: 1M 32-bit descriptors is
// far more than any server sends for one request.
constexpr std::size_t max_block_status_payload = 8 * 1024 * 1024;

// An error chunk carries at most a 4096-byte message (the NBD string limit).
constexpr std::size_t max_error_payload = error_prefix + max_string + error_offset_suffix;

} // namespace

Engine::Engine() { events_.reserve(64); }

Event& Engine::push_event(Event::Kind kind) {
  Event& e = events_.emplace_back();
  e.kind = kind;
  return e;
}

// --- lifecycle -------------------------------------------------------------------

void Engine::start(const Settings& settings) {
  settings_ = settings;
  phase_ = Phase::handshake;
  expect_header(Recv::greeting, greeting_size);
}

void Engine::on_eof() {
  if (phase_ == Phase::dead || phase_ == Phase::closed) return;
  if (phase_ == Phase::disconnecting || step_ == Step::abort) {
    // The orderly end: whatever is still waiting will never be answered.
    phase_ = Phase::closed;
    recv_ = Recv::nothing;
    target_ = {};
    for (std::uint32_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].state == SlotState::queued || slots_[i].state == SlotState::in_flight) {
        set_error(slots_[i], ENOTCONN);
        complete(i);
      }
    send_head_ = send_tail_ = none;
    if (step_ == Step::abort) finish_option(0, {});
    return;
  }
  if (tls_ == Tls::handshaking)
    // GnuTLS servers drop the connection, rather than alert, on a wrong
    // PSK key or user name.
    return die(EIO, "TLS handshake failed: the server closed the connection (a wrong PSK key or "
                    "user name, or credentials it refused?)");
  std::string what = "server closed the connection";
  if (phase_ == Phase::handshake || phase_ == Phase::option_busy) {
    what += " during ";
    what += step_ == Step::none ? "the handshake" : "negotiation";
    if (step_ == Step::export_name) what += " (NBD_OPT_EXPORT_NAME: unknown export?)";
  }
  die(ENOTCONN, what);
}

void Engine::on_io_error(int err, const std::string& what) { die(err, what); }

void Engine::die(int err, std::string reason) {
  if (phase_ == Phase::dead || phase_ == Phase::closed) return;
  bool was_option = phase_ == Phase::option_busy;
  phase_ = Phase::dead;
  death_errno_ = err;
  death_reason_ = std::move(reason);
  recv_ = Recv::nothing;
  target_ = {};
  out_.clear();
  out_next_.clear();
  out_sent_ = 0;
  for (std::uint32_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (s.state == SlotState::queued || s.state == SlotState::in_flight) {
      set_error(s, ENOTCONN);
      complete(i);
    }
  }
  send_head_ = send_tail_ = none;
  head_sent_ = 0;
  if (was_option) {
    {
      Event& e = push_event(Event::option_done);
      e.error = err;
      e.text = death_reason_;
    }
    step_ = Step::none;
  }
}

void Engine::fail_protocol(std::uint32_t offender, std::string reason) {
  if (offender != none && (slots_[offender].state == SlotState::queued ||
                           slots_[offender].state == SlotState::in_flight))
    set_error(slots_[offender], EPROTO);
  die(EPROTO, std::move(reason));
}

// --- receive machinery --------------------------------------------------------

void Engine::expect(Recv what, std::span<std::uint8_t> where) {
  recv_ = what;
  target_ = where;
  filled_ = 0;
}

void Engine::expect_header(Recv what, std::size_t n) {
  expect(what, std::span<std::uint8_t>(header_.data(), n));
}

std::span<std::uint8_t> Engine::recv_target() {
  if (tls_ != Tls::off) [[unlikely]] {
    if (!tls_wants_read()) return {};
    return tls_in_;
  }
  return plain_recv_target();
}

void Engine::commit_recv(std::size_t n) {
  if (tls_ != Tls::off) [[unlikely]] {
    tls_feed(std::span<const std::uint8_t>(tls_in_.data(), n));
    return;
  }
  plain_commit_recv(n);
}

std::span<std::uint8_t> Engine::plain_recv_target() {
  if (recv_ == Recv::nothing) return {};
  return target_.subspan(filled_);
}

void Engine::plain_commit_recv(std::size_t n) {
  bytes_received_ += n;
  filled_ += n;
  while (recv_ != Recv::nothing && filled_ == target_.size()) on_recv_complete();
}

std::size_t Engine::feed(std::span<const std::uint8_t> data) {
  // Lent to the TLS session rather than copied into tls_in_.
  if (tls_ != Tls::off) [[unlikely]]
    return tls_feed(data);
  std::size_t used = 0;
  while (used < data.size()) {
    auto t = recv_target();
    if (t.empty()) break;
    std::size_t k = std::min(t.size(), data.size() - used);
    std::memcpy(t.data(), data.data() + used, k);
    used += k;
    commit_recv(k);
  }
  return used;
}

void Engine::on_recv_complete() {
  switch (recv_) {
  case Recv::nothing: break;
  case Recv::greeting: on_greeting(); break;
  case Recv::oldstyle_rest: {
    if (settings_.tls == 2)
      return die(ENOTSUP, "handshake: server is oldstyle, but handle TLS setting is 'require' (2)");
    auto b = decode_oldstyle_rest(header_);
    pending_info_.size = b.size;
    pending_info_.eflags = b.eflags;
    oldstyle_ = true;
    enter_transmission();
    break;
  }
  case Recv::handshake_flags: on_handshake_flags(); break;
  case Recv::option_reply_header:
  case Recv::abort_reply: on_option_reply_header(); break;
  case Recv::option_reply_payload: on_option_reply(); break;
  case Recv::export_name_reply: {
    auto b = decode_export_name_reply(header_);
    pending_info_.size = b.size;
    pending_info_.eflags = b.eflags;
    if (client_flags_ & flag_no_zeroes)
      enter_transmission();
    else
      expect_header(Recv::export_name_zeroes, export_name_zeroes);
    break;
  }
  case Recv::export_name_zeroes: enter_transmission(); break;
  case Recv::reply_magic: on_reply_magic(); break;
  case Recv::reply_rest: on_reply_header(); break;
  case Recv::simple_read_payload: {
    Slot& s = slots_[reply_slot_];
    s.covered = s.count;
    s.reply_done = true;
    {
      // libnbd reports a simple read reply to the chunk callback as one
      // data chunk covering the whole request.
      Event& e = push_event(Event::read_chunk);
      e.slot = reply_slot_;
      e.offset = s.offset;
      e.length = s.count;
      e.status = read_data;
    }
    maybe_complete(reply_slot_);
    expect_reply();
    break;
  }
  case Recv::chunk_payload: on_chunk_payload(); break;
  case Recv::data_offset: on_data_offset(); break;
  case Recv::data_payload: {
    Slot& s = slots_[reply_slot_];
    std::uint64_t len = reply_.length - offset_data_prefix;
    s.covered += len;
    {
      Event& e = push_event(Event::read_chunk);
      e.slot = reply_slot_;
      e.offset = data_offset_;
      e.length = len;
      e.status = read_data;
    }
    on_chunk_done();
    break;
  }
  }
}

// --- handshake ---------------------------------------------------------------------

void Engine::on_greeting() {
  auto style = decode_greeting(header_);
  if (!style) return fail_protocol(none, "handshake: server sent a bad greeting magic");
  if (*style == Style::oldstyle)
    expect_header(Recv::oldstyle_rest, oldstyle_rest_size);
  else
    expect_header(Recv::handshake_flags, handshake_flags_size);
}

void Engine::on_handshake_flags() {
  server_flags_ = load16(header_, 0);
  // proto.md: a client that does not recognise a handshake flag the server
  // set cannot know what the server expects, so it must not continue.
  if (server_flags_ & ~known_handshake_flags)
    return fail_protocol(none, "handshake: server set unknown handshake flags");
  client_flags_ = server_flags_ & settings_.handshake_flags & known_handshake_flags;
  flags_known_ = true;
  std::uint8_t b[client_flags_size];
  encode_client_flags(b, client_flags_);
  queue_out(std::span<const std::uint8_t>(b, sizeof b));

  if (!(client_flags_ & flag_fixed_newstyle)) {
    // Without fixed newstyle there is no STARTTLS to ask for.
    if (settings_.tls == 2)
      return die(ENOTSUP, "handshake: server is not using fixed newstyle, but handle TLS "
                          "setting is 'require' (2)");
    // Non-fixed newstyle: NBD_OPT_EXPORT_NAME is the only option such a
    // server is sure to understand, and it has no option reply.
    send_option(Step::export_name, opt_export_name,
                export_name_data(settings_.export_name));
    return;
  }
  auto_steps_.clear();
  auto_step_ = 0;
  // STARTTLS first: nothing negotiated in plaintext would survive it.
  if (settings_.tls != 0) auto_steps_.push_back(Step::starttls);
  if (settings_.request_extended_headers) auto_steps_.push_back(Step::extended_headers);
  if (settings_.request_structured_replies) auto_steps_.push_back(Step::structured_reply);
  if (!settings_.opt_mode) auto_steps_.push_back(Step::go);
  next_auto_step();
}

void Engine::next_auto_step() {
  while (auto_step_ < auto_steps_.size()) {
    Step s = auto_steps_[auto_step_++];
    switch (s) {
    case Step::starttls: send_option(s, wire::opt_starttls, {}); return;
    case Step::extended_headers: send_option(s, wire::opt_extended_headers, {}); return;
    case Step::structured_reply:
      if (structured_) continue; // extended headers imply structured replies
      send_option(s, wire::opt_structured_reply, {});
      return;
    case Step::go: begin_go(settings_, Step::go); return;
    default: return;
    }
  }
  // Automatic steps done in option mode: the caller takes over.
  phase_ = Phase::option_wait;
  recv_ = Recv::nothing;
}

void Engine::send_option(Step step, std::uint32_t option, Bytes data) {
  step_ = step;
  std::vector<std::uint8_t> msg;
  append_option(msg, option, data);
  queue_out(msg);
  ++chunks_sent_;
  if (step == Step::export_name)
    expect_header(Recv::export_name_reply, export_name_reply_size);
  else
    expect_header(step == Step::abort ? Recv::abort_reply : Recv::option_reply_header,
                  option_reply_header_size);
  // The TLS session may already hold what the server sent next.
  if (tls_ == Tls::on && !tls_pumping_) tls_pump_recv();
}

void Engine::queue_out(std::span<const std::uint8_t> bytes) {
  // The transport may still be sending from out_ (an io_uring send in
  // flight), so out_ must not move until it is drained: later bytes wait
  // in out_next_.
  auto& buf = out_.empty() ? out_ : out_next_;
  buf.insert(buf.end(), bytes.begin(), bytes.end());
}

void Engine::begin_go(const Settings& s, Step step) {
  list_entries_ = 0; // counts the meta contexts, then the INFO replies
  settings_.export_name = s.export_name;
  settings_.request_block_size = s.request_block_size;
  settings_.full_info = s.full_info;
  // libnbd (1.16 on): GO and INFO first set the requested meta contexts
  // unless the caller already did, so block status works after opt_go.
  bool want_meta = s.request_meta_context && !s.meta_contexts.empty() && structured_ &&
                   !contexts_set_;
  if (want_meta && after_meta_ == Step::none) {
    after_meta_ = step;
    pending_contexts_.clear();
    send_option(Step::set_meta_context, wire::opt_set_meta_context,
                meta_context_data(s.export_name, s.meta_contexts));
    return;
  }
  after_meta_ = Step::none;
  std::vector<std::uint16_t> infos;
  if (s.request_block_size) infos.push_back(info_block_size);
  if (s.full_info) {
    infos.push_back(info_name);
    infos.push_back(info_description);
  }
  got_export_info_ = false;
  pending_info_ = ExportInfo{};
  send_option(step, step == Step::go ? wire::opt_go : wire::opt_info, info_data(s.export_name, infos));
}

void Engine::enter_transmission() {
  // Checked while still negotiating, so that in option mode the caller's
  // opt_go completes (with EPROTO) like any other failed option.
  if (pending_info_.size > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    return fail_protocol(none, "handshake: export size is larger than 2^63-1");
  info_ = pending_info_;
  info_known_ = true;
  step_ = Step::none;
  bool from_option_mode = phase_ == Phase::option_busy;
  phase_ = Phase::transmission;
  expect_reply();
  if (from_option_mode) push_event(Event::option_done);
}

void Engine::on_option_reply_header() {
  opt_reply_ = decode_option_reply_header(header_);
  if (opt_reply_.magic != option_reply_magic)
    return fail_protocol(none, "handshake: bad option reply magic");
  std::uint32_t sent = 0;
  switch (step_) {
  case Step::extended_headers: sent = wire::opt_extended_headers; break;
  case Step::structured_reply: sent = wire::opt_structured_reply; break;
  case Step::set_meta_context: sent = wire::opt_set_meta_context; break;
  case Step::list_meta_context: sent = wire::opt_list_meta_context; break;
  case Step::go: sent = wire::opt_go; break;
  case Step::info: sent = wire::opt_info; break;
  case Step::list: sent = wire::opt_list; break;
  case Step::abort: sent = wire::opt_abort; break;
  case Step::starttls: sent = wire::opt_starttls; break;
  default: break;
  }
  if (opt_reply_.option != sent)
    return fail_protocol(none, std::string("handshake: server replied to option ") +
                                   option_name(opt_reply_.option) + " but NBD_OPT_" +
                                   option_name(sent) + " was sent");
  if (opt_reply_.length > max_option_reply)
    return fail_protocol(none, "handshake: option reply length " +
                                   std::to_string(opt_reply_.length) + " is too large");
  scratch_.resize(opt_reply_.length);
  expect(Recv::option_reply_payload, scratch_);
}

void Engine::on_option_reply() {
  const std::uint32_t type = opt_reply_.type;
  Bytes payload = scratch_;

  if (step_ == Step::abort) {
    // Whatever the server says to ABORT, the conversation is over.
    phase_ = Phase::closed;
    recv_ = Recv::nothing;
    finish_option(0, {});
    return;
  }

  if (type & rep_err_bit) {
    std::string msg(payload.begin(), payload.end());
    std::string reason = std::string("server replied ") + option_reply_name(type) + " to NBD_OPT_" +
                         option_name(opt_reply_.option) + (msg.empty() ? "" : ": " + msg);
    const int err = errno_of_option_error(type);
    if (type == rep_err_tls_reqd && step_ != Step::starttls)
      reason = "handshake: server requires TLS encryption first (see set_tls): " + reason;
    switch (step_) {
    case Step::starttls:
      if (phase_ == Phase::handshake) {
        // proto.md: a client that requires TLS must not carry on in
        // plaintext once the server declines it.
        if (settings_.tls == 2)
          return die(ENOTSUP, "handshake: server refused TLS, but handle TLS setting is "
                              "'require' (2): " + reason);
        return next_auto_step();
      }
      return finish_option(err, reason);
    case Step::extended_headers:
    case Step::structured_reply:
      if (phase_ == Phase::handshake) return next_auto_step();
      return finish_option(err, reason);
    case Step::set_meta_context:
      contexts_.clear();
      contexts_set_ = true;
      if (after_meta_ != Step::none) {
        // The contexts are optional; carry on to GO / INFO without them.
        Step next = after_meta_;
        return begin_go(settings_, next);
      }
      return finish_option(err, reason);
    case Step::go:
      if (type == rep_err_unsup && !extended_) {
        // Old servers know no GO: fall back to NBD_OPT_EXPORT_NAME (which
        // proto.md forbids once extended headers are negotiated).
        return send_option(Step::export_name, opt_export_name,
                           export_name_data(settings_.export_name));
      }
      if (phase_ == Phase::handshake) return die(err, reason);
      return finish_option(err, reason);
    default: return finish_option(err, reason);
    }
  }

  switch (type) {
  case rep_ack:
    switch (step_) {
    case Step::starttls: return start_tls();
    case Step::extended_headers:
      extended_ = structured_ = true;
      if (phase_ == Phase::handshake) return next_auto_step();
      return finish_option(0, {});
    case Step::structured_reply:
      structured_ = true;
      if (phase_ == Phase::handshake) return next_auto_step();
      return finish_option(0, {});
    case Step::set_meta_context:
      contexts_ = std::move(pending_contexts_);
      pending_contexts_.clear();
      contexts_set_ = true;
      if (after_meta_ != Step::none) return begin_go(settings_, after_meta_);
      return finish_option(0, {});
    case Step::list_meta_context:
    case Step::list: return finish_option(0, {});
    case Step::go:
    case Step::info:
      if (!got_export_info_)
        return fail_protocol(none, "handshake: server sent ACK to NBD_OPT_" +
                                       std::string(option_name(opt_reply_.option)) +
                                       " without NBD_INFO_EXPORT");
      if (step_ == Step::go) return enter_transmission();
      if (pending_info_.size > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return fail_protocol(none, "handshake: export size is larger than 2^63-1");
      info_ = pending_info_;
      info_known_ = true;
      return finish_option(0, {});
    default: break;
    }
    break;
  case rep_server:
    if (step_ == Step::list) {
      auto entry = decode_rep_server(payload);
      if (!entry) return fail_protocol(none, "handshake: invalid NBD_REP_SERVER reply");
      if (++list_entries_ > max_list_entries)
        return fail_protocol(none, "handshake: server sent too many exports");
      {
      Event& e = push_event(Event::export_listed);
      e.text = std::move(entry->name);
      e.text2 = std::move(entry->description);
    }
      return expect_header(Recv::option_reply_header, option_reply_header_size);
    }
    break;
  case rep_info:
    if (step_ == Step::go || step_ == Step::info) {
      // Unknown info types are ignored (proto.md), but not without end.
      if (++list_entries_ > max_list_entries)
        return fail_protocol(none, "handshake: server sent too many NBD_REP_INFO replies");
      auto r = decode_rep_info(payload);
      if (!r)
        return fail_protocol(none, "handshake: NBD_REP_INFO of the wrong length for its type");
      switch (r->type) {
      case info_export:
        pending_info_.size = r->basics.size;
        pending_info_.eflags = r->basics.eflags;
        got_export_info_ = true;
        break;
      case info_name:
        pending_info_.canonical_name = std::move(r->text);
        pending_info_.have_name = true;
        break;
      case info_description:
        pending_info_.description = std::move(r->text);
        pending_info_.have_description = true;
        break;
      case info_block_size:
        if (!block_size_valid(r->block_size))
          return fail_protocol(none, "handshake: server sent invalid block size constraints");
        pending_info_.block_size = r->block_size;
        break;
      default: break; // proto.md: clients ignore info types they do not know
      }
      return expect_header(Recv::option_reply_header, option_reply_header_size);
    }
    break;
  case rep_meta_context:
    if (step_ == Step::set_meta_context || step_ == Step::list_meta_context) {
      auto m = decode_rep_meta_context(payload);
      if (!m) return fail_protocol(none, "handshake: invalid NBD_REP_META_CONTEXT reply");
      if (++list_entries_ > max_list_entries)
        return fail_protocol(none, "handshake: server sent too many meta contexts");
      if (step_ == Step::set_meta_context) pending_contexts_.push_back({m->id, m->name});
      {
      Event& e = push_event(Event::meta_context);
      e.context_id = m->id;
      e.text = std::move(m->name);
    }
      return expect_header(Recv::option_reply_header, option_reply_header_size);
    }
    break;
  default: break;
  }
  fail_protocol(none, std::string("handshake: unexpected reply ") + option_reply_name(type) +
                          " to NBD_OPT_" + option_name(opt_reply_.option));
}

void Engine::finish_option(int err, std::string reason) {
  step_ = Step::none;
  after_meta_ = Step::none;
  list_entries_ = 0;
  if (phase_ == Phase::option_busy) {
    phase_ = Phase::option_wait;
    recv_ = Recv::nothing;
  }
  if (phase_ == Phase::option_wait || phase_ == Phase::closed)
    {
      Event& e = push_event(Event::option_done);
      e.error = err;
      e.text = std::move(reason);
    }
  else if (phase_ == Phase::handshake)
    next_auto_step();
}

// --- option mode ----------------------------------------------------------------------

void Engine::require_option_wait(const char* what) const {
  (void)what;
  // The API layer checks the state before calling; this is a backstop.
  if (phase_ != Phase::option_wait) std::abort();
}

void Engine::opt_go(const Settings& s) {
  require_option_wait("opt_go");
  phase_ = Phase::option_busy;
  begin_go(s, Step::go);
}

void Engine::opt_info(const Settings& s) {
  require_option_wait("opt_info");
  phase_ = Phase::option_busy;
  begin_go(s, Step::info);
}

void Engine::opt_list() {
  require_option_wait("opt_list");
  phase_ = Phase::option_busy;
  list_entries_ = 0;
  send_option(Step::list, wire::opt_list, {});
}

void Engine::opt_abort() {
  require_option_wait("opt_abort");
  phase_ = Phase::option_busy;
  send_option(Step::abort, wire::opt_abort, {});
}

void Engine::opt_starttls() {
  require_option_wait("opt_starttls");
  phase_ = Phase::option_busy;
  send_option(Step::starttls, wire::opt_starttls, {});
}

void Engine::opt_structured_reply() {
  require_option_wait("opt_structured_reply");
  phase_ = Phase::option_busy;
  send_option(Step::structured_reply, wire::opt_structured_reply, {});
}

void Engine::opt_extended_headers() {
  require_option_wait("opt_extended_headers");
  phase_ = Phase::option_busy;
  send_option(Step::extended_headers, wire::opt_extended_headers, {});
}

void Engine::opt_list_meta_context(const Settings& s, std::vector<std::string> queries) {
  require_option_wait("opt_list_meta_context");
  phase_ = Phase::option_busy;
  list_entries_ = 0;
  send_option(Step::list_meta_context, wire::opt_list_meta_context,
              meta_context_data(s.export_name, queries));
}

void Engine::opt_set_meta_context(const Settings& s, std::vector<std::string> queries) {
  require_option_wait("opt_set_meta_context");
  phase_ = Phase::option_busy;
  list_entries_ = 0;
  after_meta_ = Step::none;
  pending_contexts_.clear();
  send_option(Step::set_meta_context, wire::opt_set_meta_context,
              meta_context_data(s.export_name, queries));
}

// --- transmission: requests ---------------------------------------------------------

std::uint32_t Engine::submit(const CommandSpec& c) {
  // Both allocations first, undone if the second fails: a submit that
  // throws (bad_alloc) leaves the engine as it was.
  const bool reuse = free_ != none;
  const std::uint32_t slot = reuse ? free_ : static_cast<std::uint32_t>(slots_.size());
  if (!reuse) slots_.emplace_back();
  try {
    cookies_.insert(next_cookie_, slot);
  } catch (...) {
    if (!reuse) slots_.pop_back();
    throw;
  }
  if (reuse) free_ = slots_[slot].next;
  Slot& s = slots_[slot];
  s.cookie = next_cookie_++;
  s.state = SlotState::queued;
  s.reply_done = false;
  s.type = c.type;
  s.flags = c.flags;
  s.offset = c.offset;
  s.count = c.count;
  s.read_buf = c.read_buf;
  s.write_buf = c.write_buf;
  s.error = 0;
  s.covered = 0;
  s.ranges.clear();
  s.status_chunks = 0;
  s.large_read = c.type == cmd_read && c.count >= large_payload;
  if (s.large_read) ++large_reads_;
  if (c.type == cmd_read) read_bytes_ += c.count;
  write_bytes_ += c.write_buf.size();
  s.next = none;
  s.header_len = static_cast<std::uint8_t>(
      encode_request(s.header, {c.flags, c.type, s.cookie, c.offset, c.count}, extended_));
  if (send_tail_ == none)
    send_head_ = slot;
  else
    slots_[send_tail_].next = slot;
  send_tail_ = slot;
  ++in_flight_;
  return slot;
}

void Engine::disconnect() {
  if (phase_ != Phase::transmission) return;
  phase_ = Phase::disconnecting;
  disc_len_ = static_cast<std::uint8_t>(
      encode_request(disc_header_, {0, cmd_disc, 0, 0, 0}, extended_));
  disc_sent_ = 0;
  check_disconnected();
}

void Engine::abandon_unsent(int err) {
  // The head may be partly on the wire already; it has to go out whole.
  std::uint32_t keep = head_sent_ > 0 ? send_head_ : none;
  std::uint32_t i = keep == none ? send_head_ : slots_[keep].next;
  // A reply being received for a command that never went out means the
  // server guessed its cookie (the transport settled its sends first).
  // Completing that command now would let the rest of the payload land in
  // a buffer its caller may already have freed, so stop the connection
  // instead: die() ends the receive before anything completes. (Found by
  // fuzz/fuzz_transmission; corpus: abandon-mid-reply.)
  const bool mid_payload = recv_ == Recv::simple_read_payload || recv_ == Recv::chunk_payload ||
                           recv_ == Recv::data_offset || recv_ == Recv::data_payload;
  if (mid_payload)
    for (std::uint32_t j = i; j != none; j = slots_[j].next)
      if (j == reply_slot_)
        return fail_protocol(j, "server replied to a command that was never sent");
  while (i != none) {
    std::uint32_t next = slots_[i].next;
    slots_[i].next = none;
    slots_[i].state = SlotState::in_flight; // never sent, so nothing to wait for
    set_error(slots_[i], err);
    complete(i);
    i = next;
  }
  if (keep == none) {
    send_head_ = send_tail_ = none;
  } else {
    slots_[keep].next = none;
    send_tail_ = keep;
  }
}

void Engine::check_disconnected() {
  // After NBD_CMD_DISC has gone out and every reply is in, the server will
  // close its end; nothing more is expected from it.
  // Under TLS, "gone out" means its ciphertext too (and the close_notify).
  if (phase_ == Phase::disconnecting && disc_sent_ == disc_len_ && send_head_ == none &&
      in_flight_ == 0 &&
      (tls_ == Tls::off ||
       (tls_closing_ && tls_out_sent_ == tls_out_.size() && tls_out_next_.empty()))) {
    phase_ = Phase::closed;
    recv_ = Recv::nothing;
    target_ = {};
  }
}

std::size_t Engine::send_pending_bytes() const {
  if (tls_ != Tls::off) [[unlikely]] {
    if (phase_ == Phase::dead || phase_ == Phase::closed) return 0;
    return tls_out_.size() - tls_out_sent_ + tls_out_next_.size() + plain_send_pending_bytes();
  }
  return plain_send_pending_bytes();
}

std::size_t Engine::send_segments(std::span<iovec> iov) {
  if (tls_ != Tls::off) [[unlikely]]
    return tls_send_segments(iov);
  return plain_send_segments(iov);
}

void Engine::commit_send(std::size_t n) {
  if (tls_ != Tls::off) [[unlikely]]
    return tls_commit_send(n);
  plain_commit_send(n);
}

std::size_t Engine::plain_send_pending_bytes() const {
  if (phase_ == Phase::dead || phase_ == Phase::closed) return 0;
  std::size_t n = out_.size() - out_sent_ + out_next_.size();
  for (std::uint32_t i = send_head_; i != none; i = slots_[i].next)
    n += slots_[i].header_len + slots_[i].write_buf.size();
  n -= head_sent_;
  if (phase_ == Phase::disconnecting) n += disc_len_ - disc_sent_;
  return n;
}

std::size_t Engine::plain_send_segments(std::span<iovec> iov) const {
  if (phase_ == Phase::dead || phase_ == Phase::closed || iov.empty()) return 0;
  std::size_t n = 0;
  if (out_sent_ < out_.size()) {
    iov[n++] = {const_cast<std::uint8_t*>(out_.data()) + out_sent_, out_.size() - out_sent_};
    return n;
  }
  std::size_t skip = head_sent_;
  for (std::uint32_t i = send_head_; i != none && n < iov.size(); i = slots_[i].next) {
    const Slot& s = slots_[i];
    if (skip < s.header_len) {
      iov[n++] = {const_cast<std::uint8_t*>(s.header.data()) + skip, s.header_len - skip};
      skip = 0;
    } else {
      skip -= s.header_len;
    }
    if (!s.write_buf.empty() && n < iov.size()) {
      iov[n++] = {const_cast<std::uint8_t*>(s.write_buf.data()) + skip,
                  s.write_buf.size() - skip};
    }
    skip = 0;
  }
  if (phase_ == Phase::disconnecting && send_head_ == none && disc_sent_ < disc_len_ &&
      n < iov.size())
    iov[n++] = {const_cast<std::uint8_t*>(disc_header_.data()) + disc_sent_,
                std::size_t{disc_len_} - disc_sent_};
  return n;
}

void Engine::plain_commit_send(std::size_t n) {
  bytes_sent_ += n;
  if (out_sent_ < out_.size()) {
    out_sent_ += n;
    if (out_sent_ == out_.size()) {
      out_.clear();
      out_.swap(out_next_);
      out_sent_ = 0;
    }
    return;
  }
  while (n > 0 && send_head_ != none) {
    std::uint32_t slot = send_head_;
    Slot& s = slots_[slot];
    std::size_t left = s.header_len + s.write_buf.size() - head_sent_;
    if (n < left) {
      head_sent_ += n;
      return;
    }
    n -= left;
    head_sent_ = 0;
    send_head_ = s.next;
    if (send_head_ == none) send_tail_ = none;
    s.next = none;
    s.state = SlotState::in_flight;
    ++chunks_sent_;
    maybe_complete(slot);
  }
  if (n > 0 && phase_ == Phase::disconnecting) {
    disc_sent_ = static_cast<std::uint8_t>(disc_sent_ + std::min<std::size_t>(n, disc_len_ - disc_sent_));
    if (disc_sent_ == disc_len_) ++chunks_sent_;
  }
  check_disconnected();
}

Direction Engine::wants() const {
  unsigned d = 0;
  if (tls_ != Tls::off ? tls_wants_read() : recv_ != Recv::nothing)
    d |= static_cast<unsigned>(Direction::read);
  if (send_pending_bytes() > 0) d |= static_cast<unsigned>(Direction::write);
  return static_cast<Direction>(d);
}

void Engine::retire(std::uint32_t slot) {
  Slot& s = slots_[slot];
  cookies_.erase(s.cookie);
  s.state = SlotState::free;
  s.read_buf = {};
  s.write_buf = {};
  s.next = free_;
  free_ = slot;
}

void Engine::clear_events() {
  events_.clear();
  extents_.clear();
}

const char* Engine::protocol() const {
  if (phase_ == Phase::idle) return "";
  if (oldstyle_) return "oldstyle";
  // What both sides agreed on (libnbd): a client that declines fixed
  // newstyle talks plain newstyle even to a fixed-newstyle server.
  return (client_flags_ & flag_fixed_newstyle) ? "newstyle-fixed" : "newstyle";
}

// --- transmission: replies ----------------------------------------------------------

void Engine::set_error(Slot& s, int err) {
  if (s.error == 0) s.error = err;
}

void Engine::maybe_complete(std::uint32_t slot) {
  // A command is complete once its reply is in AND the transport has
  // finished sending it: only then may its caller reuse the write buffer.
  Slot& s = slots_[slot];
  if (s.reply_done && s.state == SlotState::in_flight) complete(slot);
  check_disconnected();
}

void Engine::complete(std::uint32_t slot) {
  Slot& s = slots_[slot];
  s.state = SlotState::done;
  --in_flight_;
  if (s.large_read) {
    s.large_read = false;
    --large_reads_;
  }
  if (s.type == cmd_read) read_bytes_ -= s.count;
  write_bytes_ -= s.write_buf.size();
  {
      Event& e = push_event(Event::command_done);
      e.slot = slot;
      e.error = s.error;
    }
}

void Engine::expect_reply() {
  if (phase_ == Phase::transmission || phase_ == Phase::disconnecting)
    expect_header(Recv::reply_magic, reply_magic_size);
}

void Engine::on_reply_magic() {
  std::uint32_t magic = load32(header_, 0);
  std::size_t size = 0;
  switch (magic) {
  case simple_reply_magic:
    if (extended_)
      return fail_protocol(none, "server sent a simple reply after extended headers were negotiated");
    size = simple_reply_size;
    break;
  case structured_reply_magic:
    if (!structured_)
      return fail_protocol(none, "server sent a structured reply that was not negotiated");
    if (extended_)
      return fail_protocol(none, "server sent a compact structured reply after extended headers were negotiated");
    size = structured_reply_size;
    break;
  case extended_reply_magic:
    if (!extended_)
      return fail_protocol(none, "server sent an extended reply header that was not negotiated");
    size = extended_reply_size;
    break;
  default: return fail_protocol(none, "server sent a reply with a bad magic");
  }
  expect(Recv::reply_rest, std::span<std::uint8_t>(header_.data() + reply_magic_size,
                                                   size - reply_magic_size));
}

void Engine::on_reply_header() {
  std::uint32_t magic = load32(header_, 0);
  if (magic == simple_reply_magic)
    reply_ = decode_simple_reply(header_);
  else if (magic == structured_reply_magic)
    reply_ = decode_structured_reply(header_);
  else
    reply_ = decode_extended_reply(header_);
  ++chunks_received_;

  std::uint32_t slot = cookies_.find(reply_.cookie);
  if (slot == CookieMap::npos || slots_[slot].state == SlotState::done ||
      slots_[slot].reply_done)
    return fail_protocol(none, "server sent a reply with an unknown cookie " +
                                   std::to_string(reply_.cookie));
  reply_slot_ = slot;
  if (magic == simple_reply_magic)
    on_simple_reply();
  else
    on_chunk_header();
}

void Engine::on_simple_reply() {
  Slot& s = slots_[reply_slot_];
  // proto.md: once structured replies are negotiated the server "MUST NOT
  // use a simple reply for NBD_CMD_READ (even for the case of an early
  // NBD_EINVAL due to bad flags)".
  if (s.type == cmd_read && structured_)
    return fail_protocol(reply_slot_, "server sent a simple reply to NBD_CMD_READ after "
                                      "structured replies were negotiated");
  if (reply_.error != 0) {
    set_error(s, errno_of_nbd_error(reply_.error));
  } else if (s.type == cmd_read && s.count > 0) {
    return expect(Recv::simple_read_payload, s.read_buf.first(s.count));
  } else if (s.type == cmd_block_status) {
    return fail_protocol(reply_slot_, "server sent a simple reply to NBD_CMD_BLOCK_STATUS");
  }
  s.covered = s.count;
  s.reply_done = true;
  maybe_complete(reply_slot_);
  expect_reply();
}

void Engine::on_chunk_header() {
  Slot& s = slots_[reply_slot_];
  const std::uint64_t len = reply_.length;
  const char* name = chunk_name(reply_.type);
  auto bad = [&](const std::string& why) {
    fail_protocol(reply_slot_, std::string("server sent a bad ") + name + " chunk to " +
                                   command_name(s.type) + ": " + why);
  };
  if (load32(header_, 0) == extended_reply_magic && reply_.offset != s.offset)
    return bad("reply offset does not match the request");

  switch (reply_.type) {
  case chunk_none:
    if (len != 0) return bad("nonzero length");
    if (!(reply_.flags & reply_flag_done)) return bad("NONE without the DONE flag");
    return on_chunk_done();
  case chunk_offset_data:
    if (s.type != cmd_read) return bad("not a read");
    if (len <= offset_data_prefix) return bad("too short");
    if (len - offset_data_prefix > s.count - s.covered)
      return bad("more data than the request has room for");
    return expect(Recv::data_offset,
                  std::span<std::uint8_t>(header_.data() + data_offset_at, offset_data_prefix));
  case chunk_offset_hole:
    if (s.type != cmd_read) return bad("not a read");
    if (len != offset_hole_size) return bad("length is not 12");
    break;
  case chunk_block_status:
    // proto.md: with extended headers the server MUST use BLOCK_STATUS_EXT
    // (and without them MUST NOT), so either mismatch is a violation.
    if (extended_) return bad("compact block status after extended headers were negotiated");
    if (s.type != cmd_block_status) return bad("not a block status request");
    if (len < block_status_prefix + block_status_descriptor ||
        (len - block_status_prefix) % block_status_descriptor != 0)
      return bad("length is not 4 + a positive multiple of 8");
    if (len > max_block_status_payload) return bad("too many extents");
    break;
  case chunk_block_status_ext:
    if (!extended_) return bad("extended block status without extended headers");
    if (s.type != cmd_block_status) return bad("not a block status request");
    if (len < block_status_ext_prefix + block_status_ext_descriptor ||
        (len - block_status_ext_prefix) % block_status_ext_descriptor != 0)
      return bad("length is not 8 + a positive multiple of 16");
    if (len > max_block_status_payload) return bad("too many extents");
    break;
  default:
    if (!(reply_.type & chunk_error_bit)) return bad("unknown chunk type");
    if (len < error_prefix) return bad("too short for an error chunk");
    if (len > max_error_payload) return bad("error message too long");
    break;
  }
  scratch_.resize(static_cast<std::size_t>(len));
  expect(Recv::chunk_payload, scratch_);
}

void Engine::on_data_offset() {
  Slot& s = slots_[reply_slot_];
  const std::uint64_t off = load64(header_, data_offset_at);
  const std::uint64_t len = reply_.length - offset_data_prefix;
  if (off < s.offset || off - s.offset > s.count || len > s.count - (off - s.offset))
    return fail_protocol(reply_slot_, "server sent an OFFSET_DATA chunk outside the request");
  if (!claim_range(s, off - s.offset, len))
    return fail_protocol(reply_slot_, "server sent an OFFSET_DATA chunk overlapping an earlier "
                                      "chunk (or too many scattered chunks)");
  data_offset_ = off;
  expect(Recv::data_payload, s.read_buf.subspan(off - s.offset, len));
}

bool Engine::claim_range(Slot& s, std::uint64_t begin, std::uint64_t len) {
  // proto.md: content chunks "MUST NOT overlap with the bounds of any
  // earlier content chunk". The running byte total cannot see overlaps that
  // still add up to the request (two halves both at offset 0), so track
  // the ranges themselves. Servers send in order (one range) or nearly so;
  // a server scattering more disjoint pieces than this is refused rather
  // than allowed to make us track them without bound.
  constexpr std::size_t max_ranges = 4096;
  const std::uint64_t end = begin + len;
  auto& r = s.ranges;
  auto next = std::upper_bound(r.begin(), r.end(), begin,
                               [](std::uint64_t v, const auto& x) { return v < x.first; });
  if (next != r.begin() && std::prev(next)->second > begin) return false;
  if (next != r.end() && next->first < end) return false;
  const bool join_prev = next != r.begin() && std::prev(next)->second == begin;
  const bool join_next = next != r.end() && next->first == end;
  if (join_prev && join_next) {
    std::prev(next)->second = next->second;
    r.erase(next);
  } else if (join_prev) {
    std::prev(next)->second = end;
  } else if (join_next) {
    next->first = begin;
  } else {
    if (r.size() >= max_ranges) return false;
    r.insert(next, {begin, end});
  }
  return true;
}

void Engine::on_chunk_payload() {
  Slot& s = slots_[reply_slot_];
  Bytes p = scratch_;
  auto bad = [&](const std::string& why) {
    fail_protocol(reply_slot_, std::string("server sent a bad ") + chunk_name(reply_.type) +
                                   " chunk to " + command_name(s.type) + ": " + why);
  };

  switch (reply_.type) {
  case chunk_offset_hole: {
    std::uint64_t off = load64(p, 0);
    std::uint64_t len = load32(p, 8);
    if (len == 0) return bad("zero-length hole");
    if (off < s.offset || off - s.offset > s.count || len > s.count - (off - s.offset))
      return bad("hole outside the request");
    if (len > s.count - s.covered || !claim_range(s, off - s.offset, len))
      return bad("chunks overlap (or too many scattered chunks)");
    std::memset(s.read_buf.data() + (off - s.offset), 0, static_cast<std::size_t>(len));
    s.covered += len;
    {
      Event& e = push_event(Event::read_chunk);
      e.slot = reply_slot_;
      e.offset = off;
      e.length = len;
      e.status = read_hole;
    }
    break;
  }
  case chunk_block_status:
  case chunk_block_status_ext: {
    const bool ext = reply_.type == chunk_block_status_ext;
    std::uint32_t id = load32(p, 0);
    auto ctx = std::find_if(contexts_.begin(), contexts_.end(),
                            [id](const MetaContext& m) { return m.id == id; });
    if (ctx == contexts_.end()) return bad("unknown meta context id " + std::to_string(id));
    Bytes d = p.subspan(ext ? block_status_ext_prefix : block_status_prefix);
    if (ext) {
      // The count must describe exactly the descriptors that follow.
      std::uint32_t count = load32(p, 4);
      if (count != d.size() / block_status_ext_descriptor)
        return bad("descriptor count does not match the length");
    }
    auto begin = extents_.size();
    decode_extents(d, ext, extents_);
    std::uint64_t sum = 0;
    for (auto i = begin; i < extents_.size(); ++i) {
      if (extents_[i].length == 0) return bad("zero-length extent");
      // Only the last extent may reach past the request, and none past
      // the end of the export.
      if (i + 1 < extents_.size() && extents_[i].length >= s.count - std::min(sum, s.count))
        return bad("extents beyond the request");
      sum += extents_[i].length;
      if (sum > info_.size - std::min(s.offset, info_.size)) return bad("extents beyond the export");
    }
    if ((s.flags & cmd_flag_req_one) && extents_.size() - begin != 1)
      return bad("more than one extent despite REQ_ONE");
    // proto.md: with REQ_ONE "that descriptor MUST NOT exceed the length of
    // the original request".
    if ((s.flags & cmd_flag_req_one) && extents_[begin].length > s.count)
      return bad("extent longer than the request despite REQ_ONE");
    ++s.status_chunks;
    {
      Event& e = push_event(Event::extents);
      e.slot = reply_slot_;
      e.context_id = id;
      e.extent_begin = static_cast<std::uint32_t>(begin);
      e.extent_count = static_cast<std::uint32_t>(extents_.size() - begin);
    }
    break;
  }
  default: { // error chunks, known or not
    const bool with_offset = reply_.type == chunk_error_offset;
    auto e = decode_error_chunk(p, with_offset);
    if (!e) return bad("message length overruns the chunk");
    if (e->error == 0) return bad("error value is zero");
    int err = errno_of_nbd_error(e->error);
    std::uint64_t off = s.offset;
    if (e->offset) {
      off = *e->offset;
      if (off < s.offset || off - s.offset >= std::max<std::uint64_t>(s.count, 1))
        return bad("error offset outside the request");
    }
    set_error(s, err);
    // libnbd calls the chunk callback with READ_ERROR only for an error tied
    // to an offset (ERROR_OFFSET), never for a generic error chunk.
    if (s.type == cmd_read && with_offset)
      {
      Event& e = push_event(Event::read_chunk);
      e.slot = reply_slot_;
      e.error = err;
      e.offset = off;
      e.length = 0;
      e.status = read_error;
    }
    break;
  }
  }
  on_chunk_done();
}

void Engine::on_chunk_done() {
  Slot& s = slots_[reply_slot_];
  if (reply_.flags & reply_flag_done) {
    if (s.error == 0) {
      // A successful read must have covered every byte exactly once (the
      // running total already refused any excess), and a successful block
      // status must have said something.
      if (s.type == cmd_read && s.covered != s.count)
        return fail_protocol(reply_slot_, "server's read reply does not cover the whole request");
      if (s.type == cmd_block_status && s.status_chunks == 0)
        return fail_protocol(reply_slot_, "server's block status reply has no extents");
    }
    s.reply_done = true;
    maybe_complete(reply_slot_);
  }
  expect_reply();
}

} // namespace nbd::proto
