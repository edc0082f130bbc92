// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// A small harness for driving proto::Engine without sockets.
//
// - Byte helpers build what a server says (from proto.md, by hand, never
//   through the wire codec under test) and read/write hex transcripts.
// - A Script says what the client does: its Settings, the opt_* calls to
//   make each time the engine waits in option mode, and the commands to
//   submit once transmission starts (then NBD_CMD_DISC).
// - A Driver runs a Script against an Engine: it feeds server bytes (in one
//   piece, split anywhere, or one byte at a time through recv_target /
//   commit_recv), drains what the engine sends via send_segments /
//   commit_send, and records every event, so runs can be compared.
//
// This header does not include doctest: the transcript recorder (a
// throwaway program, see transcripts/README.md) uses it too.

#include "proto/engine.hpp"

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace nbd::test {

using Buf = std::vector<std::uint8_t>;

// --- byte helpers -----------------------------------------------------------------

inline void put8(Buf& b, std::uint8_t v) { b.push_back(v); }
inline void put16(Buf& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
inline void put32(Buf& b, std::uint32_t v) {
  put16(b, static_cast<std::uint16_t>(v >> 16));
  put16(b, static_cast<std::uint16_t>(v));
}
inline void put64(Buf& b, std::uint64_t v) {
  put32(b, static_cast<std::uint32_t>(v >> 32));
  put32(b, static_cast<std::uint32_t>(v));
}
inline void put(Buf& b, std::string_view s) {
  // resize + memcpy rather than insert: g++ 12 warns (-Wstringop-overread)
  // about insert from an empty literal.
  if (s.empty()) return;
  std::size_t at = b.size();
  b.resize(at + s.size());
  std::memcpy(b.data() + at, s.data(), s.size());
}
inline void put(Buf& b, const Buf& more) { b.insert(b.end(), more.begin(), more.end()); }
inline void zeroes(Buf& b, std::size_t n) { b.insert(b.end(), n, 0); }

inline Buf cat(std::initializer_list<Buf> parts) {
  Buf out;
  for (const auto& p : parts) put(out, p);
  return out;
}

/// Parses hex text: whitespace is ignored, '#' starts a comment to the end
/// of the line.
inline Buf from_hex(std::string_view text) {
  Buf out;
  int hi = -1;
  bool comment = false;
  for (char c : text) {
    if (comment) {
      if (c == '\n') comment = false;
      continue;
    }
    if (c == '#') {
      comment = true;
      continue;
    }
    int v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v = c - 'A' + 10;
    else if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
      continue;
    else
      throw std::runtime_error(std::string("from_hex: bad character '") + c + "'");
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<std::uint8_t>(hi * 16 + v));
      hi = -1;
    }
  }
  if (hi >= 0) throw std::runtime_error("from_hex: odd number of digits");
  return out;
}

inline std::string to_hex(std::span<const std::uint8_t> b, std::size_t per_line = 32) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < b.size(); ++i) {
    s += digits[b[i] >> 4];
    s += digits[b[i] & 15];
    s += (i + 1) % per_line == 0 || i + 1 == b.size() ? '\n' : ' ';
  }
  return s;
}

inline Buf read_hex_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return from_hex(ss.str());
}

/// Deterministic, position-dependent bytes for write payloads.
inline Buf pattern(std::size_t n, std::uint8_t seed) {
  Buf b(n);
  for (std::size_t i = 0; i < n; ++i)
    b[i] = static_cast<std::uint8_t>((i * 31 + seed * 7 + (i >> 8)) & 0xff);
  return b;
}

// --- what a server says (proto.md, built by hand) --------------------------------------

namespace srv {

inline constexpr std::uint64_t nbdmagic = 0x4e42444d41474943;
inline constexpr std::uint64_t ihaveopt = 0x49484156454f5054;
inline constexpr std::uint64_t cliserv = 0x00420281861253;
inline constexpr std::uint64_t rep_magic = 0x3e889045565a9;

inline Buf greeting(std::uint16_t handshake_flags) {
  Buf b;
  put64(b, nbdmagic);
  put64(b, ihaveopt);
  put16(b, handshake_flags);
  return b;
}
inline Buf oldstyle(std::uint64_t size, std::uint32_t flags) {
  Buf b;
  put64(b, nbdmagic);
  put64(b, cliserv);
  put64(b, size);
  put32(b, flags);
  zeroes(b, 124);
  return b;
}
/// Reply to NBD_OPT_EXPORT_NAME.
inline Buf export_name_reply(std::uint64_t size, std::uint16_t eflags, bool with_zeroes) {
  Buf b;
  put64(b, size);
  put16(b, eflags);
  if (with_zeroes) zeroes(b, 124);
  return b;
}
inline Buf opt_reply(std::uint32_t option, std::uint32_t type, const Buf& payload = {}) {
  Buf b;
  put64(b, rep_magic);
  put32(b, option);
  put32(b, type);
  put32(b, static_cast<std::uint32_t>(payload.size()));
  put(b, payload);
  return b;
}
inline Buf ack(std::uint32_t option) { return opt_reply(option, 1); }
inline Buf err(std::uint32_t option, std::uint32_t type, std::string_view msg = {}) {
  Buf p;
  put(p, msg);
  return opt_reply(option, type, p);
}
inline Buf rep_server(std::string_view name, std::string_view desc = {}) {
  Buf p;
  put32(p, static_cast<std::uint32_t>(name.size()));
  put(p, name);
  put(p, desc);
  return opt_reply(3, 2, p);
}
inline Buf rep_meta(std::uint32_t option, std::uint32_t id, std::string_view name) {
  Buf p;
  put32(p, id);
  put(p, name);
  return opt_reply(option, 4, p);
}
inline Buf info_raw(std::uint32_t option, std::uint16_t type, const Buf& rest) {
  Buf p;
  put16(p, type);
  put(p, rest);
  return opt_reply(option, 3, p);
}
inline Buf info_export(std::uint32_t option, std::uint64_t size, std::uint16_t eflags) {
  Buf r;
  put64(r, size);
  put16(r, eflags);
  return info_raw(option, 0, r);
}
inline Buf info_text(std::uint32_t option, std::uint16_t type, std::string_view s) {
  Buf r;
  put(r, s);
  return info_raw(option, type, r);
}
inline Buf info_block_size(std::uint32_t option, std::uint32_t min, std::uint32_t pref,
                           std::uint32_t max) {
  Buf r;
  put32(r, min);
  put32(r, pref);
  put32(r, max);
  return info_raw(option, 3, r);
}

// Transmission.
inline Buf simple(std::uint32_t error, std::uint64_t cookie, const Buf& payload = {}) {
  Buf b;
  put32(b, 0x67446698);
  put32(b, error);
  put64(b, cookie);
  put(b, payload);
  return b;
}
inline Buf chunk(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie,
                 const Buf& payload = {}) {
  Buf b;
  put32(b, 0x668e33ef);
  put16(b, flags);
  put16(b, type);
  put64(b, cookie);
  put32(b, static_cast<std::uint32_t>(payload.size()));
  put(b, payload);
  return b;
}
inline Buf xchunk(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie,
                  std::uint64_t offset, const Buf& payload = {}) {
  Buf b;
  put32(b, 0x6e8a278c);
  put16(b, flags);
  put16(b, type);
  put64(b, cookie);
  put64(b, offset);
  put64(b, payload.size());
  put(b, payload);
  return b;
}
/// Chunk header claiming `length` bytes, without the payload.
inline Buf chunk_header(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie,
                        std::uint32_t length) {
  Buf b;
  put32(b, 0x668e33ef);
  put16(b, flags);
  put16(b, type);
  put64(b, cookie);
  put32(b, length);
  return b;
}

inline constexpr std::uint16_t done = 1;
inline constexpr std::uint16_t t_none = 0, t_data = 1, t_hole = 2, t_bs = 5, t_bs_ext = 6,
                               t_error = 0x8001, t_error_offset = 0x8002;

inline Buf offset_data(std::uint64_t offset, const Buf& data) {
  Buf p;
  put64(p, offset);
  put(p, data);
  return p;
}
inline Buf offset_hole(std::uint64_t offset, std::uint32_t len) {
  Buf p;
  put64(p, offset);
  put32(p, len);
  return p;
}
struct Ext {
  std::uint64_t length, flags;
};
inline Buf block_status(std::uint32_t id, std::initializer_list<Ext> ex) {
  Buf p;
  put32(p, id);
  for (auto e : ex) {
    put32(p, static_cast<std::uint32_t>(e.length));
    put32(p, static_cast<std::uint32_t>(e.flags));
  }
  return p;
}
inline Buf block_status_ext(std::uint32_t id, std::initializer_list<Ext> ex,
                            std::int64_t count = -1) {
  Buf p;
  put32(p, id);
  put32(p, count < 0 ? static_cast<std::uint32_t>(ex.size()) : static_cast<std::uint32_t>(count));
  for (auto e : ex) {
    put64(p, e.length);
    put64(p, e.flags);
  }
  return p;
}
inline Buf error_payload(std::uint32_t error, std::string_view msg) {
  Buf p;
  put32(p, error);
  put16(p, static_cast<std::uint16_t>(msg.size()));
  put(p, msg);
  return p;
}
inline Buf error_offset_payload(std::uint32_t error, std::string_view msg, std::uint64_t off) {
  Buf p = error_payload(error, msg);
  put64(p, off);
  return p;
}

} // namespace srv

// --- what the client says (proto.md, built by hand) --------------------------------------

namespace cli {

inline Buf flags(std::uint32_t f) {
  Buf b;
  put32(b, f);
  return b;
}
inline Buf option(std::uint32_t opt, const Buf& data = {}) {
  Buf b;
  put64(b, srv::ihaveopt);
  put32(b, opt);
  put32(b, static_cast<std::uint32_t>(data.size()));
  put(b, data);
  return b;
}
inline Buf go_data(std::string_view name, std::initializer_list<std::uint16_t> infos) {
  Buf b;
  put32(b, static_cast<std::uint32_t>(name.size()));
  put(b, name);
  put16(b, static_cast<std::uint16_t>(infos.size()));
  for (auto i : infos) put16(b, i);
  return b;
}
inline Buf meta_data(std::string_view name, std::initializer_list<std::string_view> queries) {
  Buf b;
  put32(b, static_cast<std::uint32_t>(name.size()));
  put(b, name);
  put32(b, static_cast<std::uint32_t>(queries.size()));
  for (auto q : queries) {
    put32(b, static_cast<std::uint32_t>(q.size()));
    put(b, q);
  }
  return b;
}
inline Buf request(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie,
                   std::uint64_t offset, std::uint32_t length) {
  Buf b;
  put32(b, 0x25609513);
  put16(b, flags);
  put16(b, type);
  put64(b, cookie);
  put64(b, offset);
  put32(b, length);
  return b;
}
inline Buf xrequest(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie,
                    std::uint64_t offset, std::uint64_t length) {
  Buf b;
  put32(b, 0x21e41c71);
  put16(b, flags);
  put16(b, type);
  put64(b, cookie);
  put64(b, offset);
  put64(b, length);
  return b;
}

} // namespace cli

// --- client scripts ----------------------------------------------------------------------

struct OptAction {
  enum Kind { go, info, list, abort, structured_reply, extended_headers, list_meta, set_meta };
  Kind kind = go;
  proto::Settings settings{};
  std::vector<std::string> queries{};
};

struct Cmd {
  std::uint16_t type = 0;
  std::uint16_t flags = 0;
  std::uint64_t offset = 0;
  std::uint64_t count = 0;
  Buf write_data{}; // cmd_write payload (count = its size)
};

inline Cmd cmd_read(std::uint64_t off, std::uint64_t count, std::uint16_t flags = 0) {
  return {wire::cmd_read, flags, off, count, {}};
}
inline Cmd cmd_write(std::uint64_t off, Buf data, std::uint16_t flags = 0) {
  std::uint64_t n = data.size();
  return {wire::cmd_write, flags, off, n, std::move(data)};
}
inline Cmd cmd_other(std::uint16_t type, std::uint64_t off, std::uint64_t count,
                     std::uint16_t flags = 0) {
  return {type, flags, off, count, {}};
}

struct Script {
  proto::Settings settings{};
  std::vector<OptAction> opts{};   // one per option_wait, in order
  std::vector<Cmd> cmds{};         // submitted when transmission starts
  bool disconnect = true;          // then NBD_CMD_DISC
};

/// Settings with no automatic extras: the smallest conversation.
inline proto::Settings plain_settings() {
  proto::Settings s;
  s.request_structured_replies = false;
  s.request_extended_headers = false;
  s.request_meta_context = false;
  s.request_block_size = false;
  return s;
}

// --- running a script --------------------------------------------------------------------

struct EventRec {
  proto::Event::Kind kind;
  std::uint32_t slot;
  int error;
  std::uint64_t offset, length;
  int status;
  std::uint32_t context_id;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> extents;
  std::string text, text2;
  bool operator==(const EventRec&) const = default;
};

inline std::string describe(const EventRec& e) {
  static const char* names[] = {"command_done", "read_chunk", "extents",
                                "option_done", "export_listed", "meta_context"};
  std::string s = names[e.kind];
  s += " slot=" + std::to_string(e.slot) + " err=" + std::to_string(e.error);
  if (e.kind == proto::Event::read_chunk)
    s += " off=" + std::to_string(e.offset) + " len=" + std::to_string(e.length) +
         " status=" + std::to_string(e.status);
  if (e.kind == proto::Event::extents || e.kind == proto::Event::meta_context)
    s += " ctx=" + std::to_string(e.context_id);
  for (auto [l, f] : e.extents) s += " [" + std::to_string(l) + "," + std::to_string(f) + "]";
  if (!e.text.empty()) s += " text=" + e.text;
  if (!e.text2.empty()) s += " text2=" + e.text2;
  return s;
}

struct BlockSizes {
  std::uint32_t minimum = 0, preferred = 0, maximum = 0;
  bool operator==(const BlockSizes&) const = default;
};

struct Outcome {
  proto::Phase phase{};
  int death_errno = 0;
  std::string death_reason;
  std::uint64_t size = 0;
  std::uint16_t eflags = 0;
  BlockSizes block_size{};
  std::string canonical_name, description;
  bool structured = false, extended = false;
  std::vector<std::pair<std::uint32_t, std::string>> contexts;
  std::vector<EventRec> events;
  std::vector<Buf> read_bufs;
  Buf sent;
  std::size_t consumed = 0;
  std::string protocol;
  bool operator==(const Outcome&) const = default;
};

inline std::string describe(const Outcome& o) {
  std::string s = "phase=" + std::to_string(static_cast<int>(o.phase)) +
                  " errno=" + std::to_string(o.death_errno) + " (" + o.death_reason + ")" +
                  " size=" + std::to_string(o.size) + " eflags=" + std::to_string(o.eflags) +
                  " consumed=" + std::to_string(o.consumed) + " sent=" +
                  std::to_string(o.sent.size()) + "\n";
  for (const auto& e : o.events) s += "  " + describe(e) + "\n";
  return s;
}

class Driver {
public:
  /// read_fill: what read buffers hold before the reply (to see what the
  /// engine wrote and what it left alone).
  explicit Driver(Script script, std::uint8_t read_fill = 0xee)
      : script_(std::move(script)), read_fill_(read_fill) {}

  proto::Engine& engine() { return eng_; }
  const std::vector<EventRec>& events() const { return events_; }
  const Buf& sent() const { return sent_; }
  const std::vector<std::uint32_t>& slots() const { return slots_; }
  Buf& read_buf(std::size_t i) { return bufs_[i]; }
  /// The payload the engine borrows for the i-th command (a write).
  const Buf& write_buf(std::size_t i) const { return writes_[i]; }
  /// Whether the script's commands have been submitted.
  bool submitted() const { return submitted_; }
  /// Drain the engine's output automatically (default) or leave it to the test.
  bool auto_send = true;

  void start() {
    eng_.start(script_.settings);
    pump();
  }

  /// Feeds through recv_target / commit_recv in the largest pieces the
  /// engine accepts; returns how many bytes were consumed.
  std::size_t feed(std::span<const std::uint8_t> data) {
    std::size_t used = 0;
    while (used < data.size()) {
      auto t = eng_.recv_target();
      if (t.empty()) break;
      std::size_t k = std::min(t.size(), data.size() - used);
      std::memcpy(t.data(), data.data() + used, k);
      used += k;
      eng_.commit_recv(k);
      pump();
    }
    consumed_ += used;
    return used;
  }

  /// One byte per commit_recv.
  std::size_t feed_bytewise(std::span<const std::uint8_t> data) {
    std::size_t used = 0;
    while (used < data.size()) {
      auto t = eng_.recv_target();
      if (t.empty()) break;
      t[0] = data[used++];
      eng_.commit_recv(1);
      pump();
    }
    consumed_ += used;
    return used;
  }

  /// Feeds through Engine::feed (the staging-buffer path).
  /// Bytes the engine does not take (it waits for the caller, e.g. in
  /// option mode) are offered again after the hooks ran, as a transport
  /// keeps them staged.
  std::size_t feed_staged(std::span<const std::uint8_t> data) {
    std::size_t used = 0;
    while (used < data.size()) {
      std::size_t n = eng_.feed(data.subspan(used));
      used += n;
      pump();
      if (n == 0 && eng_.recv_target().empty()) break;
    }
    consumed_ += used;
    return used;
  }

  void eof() {
    eng_.on_eof();
    pump();
  }

  /// Sends at most n bytes (all when n is npos); returns how many.
  std::size_t send(std::size_t n = static_cast<std::size_t>(-1)) {
    std::size_t total = 0;
    for (;;) {
      iovec iov[8];
      std::size_t cnt = eng_.send_segments(iov);
      if (cnt == 0 || total == n) break;
      std::size_t step = 0;
      for (std::size_t i = 0; i < cnt && total + step < n; ++i) {
        std::size_t k = std::min(iov[i].iov_len, n - total - step);
        auto* p = static_cast<const std::uint8_t*>(iov[i].iov_base);
        sent_.insert(sent_.end(), p, p + k);
        step += k;
        if (k < iov[i].iov_len) break;
      }
      if (step == 0) break;
      eng_.commit_send(step);
      total += step;
      collect();
    }
    return total;
  }

  /// Runs the script's hooks, drains output and collects events until
  /// nothing changes.
  void pump() {
    for (;;) {
      bool acted = false;
      if (eng_.phase() == proto::Phase::option_wait && next_opt_ < script_.opts.size()) {
        run_opt(script_.opts[next_opt_++]);
        acted = true;
      } else if (eng_.phase() == proto::Phase::transmission && !submitted_) {
        submitted_ = true;
        for (const auto& c : script_.cmds) submit(c);
        if (script_.disconnect) eng_.disconnect();
        acted = true;
      }
      if (auto_send) send();
      collect();
      if (!acted) break;
    }
  }

  /// Submits one command outside the script; returns its index.
  std::size_t submit(const Cmd& c) {
    collect();
    first_event_.push_back(events_.size()); // slots are reused: look from here
    bufs_.emplace_back();
    writes_.emplace_back(c.write_data);
    Buf& rb = bufs_.back();
    proto::CommandSpec spec;
    spec.type = c.type;
    spec.flags = c.flags;
    spec.offset = c.offset;
    spec.count = c.count;
    if (c.type == wire::cmd_read) {
      rb.assign(static_cast<std::size_t>(c.count), read_fill_);
      spec.read_buf = rb;
    }
    if (c.type == wire::cmd_write) spec.write_buf = writes_.back();
    slots_.push_back(eng_.submit(spec));
    return slots_.size() - 1;
  }

  void collect() {
    for (const auto& e : eng_.events()) {
      EventRec r{e.kind, e.slot, e.error, e.offset, e.length, e.status, e.context_id, {},
                 e.text, e.text2};
      if (e.kind == proto::Event::extents)
        for (const auto& x : eng_.extents().subspan(e.extent_begin, e.extent_count))
          r.extents.emplace_back(x.length, x.flags);
      events_.push_back(std::move(r));
    }
    eng_.clear_events();
  }

  Outcome outcome() const {
    Outcome o;
    o.phase = eng_.phase();
    o.death_errno = eng_.death_errno();
    o.death_reason = eng_.death_reason();
    o.size = eng_.info().size;
    o.eflags = eng_.info().eflags;
    o.block_size.minimum = eng_.info().block_size.minimum;
    o.block_size.preferred = eng_.info().block_size.preferred;
    o.block_size.maximum = eng_.info().block_size.maximum;
    o.canonical_name = eng_.info().canonical_name;
    o.description = eng_.info().description;
    o.structured = eng_.structured_replies();
    o.extended = eng_.extended_headers();
    for (const auto& m : eng_.meta_contexts()) o.contexts.emplace_back(m.id, m.name);
    o.events = events_;
    o.read_bufs = bufs_;
    o.sent = sent_;
    o.consumed = consumed_;
    o.protocol = eng_.protocol();
    return o;
  }

  /// Events of one kind.
  std::vector<EventRec> events_of(proto::Event::Kind k) const {
    std::vector<EventRec> v;
    for (const auto& e : events_)
      if (e.kind == k) v.push_back(e);
    return v;
  }
  /// The command_done event of the i-th submitted command, if any.
  const EventRec* done_of(std::size_t i) const {
    for (std::size_t k = first_event_.at(i); k < events_.size(); ++k)
      if (events_[k].kind == proto::Event::command_done && events_[k].slot == slots_.at(i))
        return &events_[k];
    return nullptr;
  }

private:
  void run_opt(const OptAction& a) {
    switch (a.kind) {
    case OptAction::go: eng_.opt_go(a.settings); break;
    case OptAction::info: eng_.opt_info(a.settings); break;
    case OptAction::list: eng_.opt_list(); break;
    case OptAction::abort: eng_.opt_abort(); break;
    case OptAction::structured_reply: eng_.opt_structured_reply(); break;
    case OptAction::extended_headers: eng_.opt_extended_headers(); break;
    case OptAction::list_meta: eng_.opt_list_meta_context(a.settings, a.queries); break;
    case OptAction::set_meta: eng_.opt_set_meta_context(a.settings, a.queries); break;
    }
  }

  Script script_;
  std::uint8_t read_fill_;
  proto::Engine eng_;
  std::size_t next_opt_ = 0;
  bool submitted_ = false;
  std::vector<std::uint32_t> slots_;
  std::vector<std::size_t> first_event_;
  std::vector<Buf> bufs_;
  std::vector<Buf> writes_;
  std::vector<EventRec> events_;
  Buf sent_;
  std::size_t consumed_ = 0;
};

// --- conversations recorded from nbdkit (transcripts/README.md) --------------------------

/// A real server conversation: the nbdkit command line it was recorded
/// from, and the client script that was run against it (and is replayed).
struct Recorded {
  std::string name;
  std::vector<std::string> nbdkit_args; // after "nbdkit -s --exit-with-parent"
  Script script;
};

inline std::vector<Recorded> recorded_conversations() {
  using wire::cmd_flag_fua;
  using wire::cmd_flag_req_one;
  std::vector<Recorded> v;

  { // Fixed newstyle with everything libnbd asks for by default.
    Script s;
    s.settings.meta_contexts = {"base:allocation"};
    s.cmds = {
        cmd_write(0, pattern(4096, 1)),
        cmd_write(65536, pattern(512, 2), cmd_flag_fua),
        cmd_read(0, 4096),
        cmd_read(65024, 1024),
        cmd_other(wire::cmd_flush, 0, 0),
        cmd_other(wire::cmd_trim, 8192, 4096),
        cmd_other(wire::cmd_write_zeroes, 131072, 4096),
        cmd_other(wire::cmd_block_status, 0, 1048576),
        cmd_other(wire::cmd_block_status, 0, 65536, cmd_flag_req_one),
        cmd_read(1048576, 512), // beyond the end: the server refuses it
        cmd_other(wire::cmd_cache, 0, 4096), // not advertised: refused
    };
    v.push_back({"nbdkit_memory", {"-t", "1", "memory", "1M"}, s});
  }
  { // A read-only plugin, NAME and DESCRIPTION requested.
    Script s;
    s.settings.meta_contexts = {"base:allocation"};
    s.settings.full_info = true;
    s.cmds = {
        cmd_read(8192, 4096),
        cmd_read(1000, 100),
        cmd_other(wire::cmd_block_status, 0, 65536),
        cmd_write(0, pattern(512, 3)), // read-only export: refused
    };
    v.push_back({"nbdkit_pattern", {"-t", "1", "pattern", "1M"}, s});
  }
  { // Oldstyle: simple replies only.
    Script s;
    s.cmds = {
        cmd_write(0, pattern(512, 4)),
        cmd_read(0, 512),
        cmd_other(wire::cmd_flush, 0, 0),
        cmd_read(1048576, 512),
    };
    v.push_back({"nbdkit_oldstyle", {"-o", "-t", "1", "memory", "1M"}, s});
  }
  { // Fixed newstyle, structured replies refused: simple replies after GO.
    Script s;
    s.settings.meta_contexts = {"base:allocation"};
    s.cmds = {
        cmd_write(512, pattern(1024, 5)),
        cmd_read(0, 2048),
        cmd_read(2097152, 512),
        cmd_other(wire::cmd_trim, 0, 512),
        cmd_other(wire::cmd_flush, 0, 0),
    };
    v.push_back({"nbdkit_nosr", {"--no-sr", "-t", "1", "memory", "1M"}, s});
  }
  { // Non-fixed newstyle: NBD_OPT_EXPORT_NAME, 124 zeroes.
    Script s;
    s.cmds = {cmd_write(0, pattern(512, 6)), cmd_read(0, 512)};
    v.push_back({"nbdkit_nonfixed", {"--mask-handshake", "0", "-t", "1", "memory", "1M"}, s});
  }
  { // Non-fixed newstyle with NO_ZEROES.
    Script s;
    s.cmds = {cmd_read(0, 512)};
    v.push_back(
        {"nbdkit_nonfixed_nozeroes", {"--mask-handshake", "2", "-t", "1", "memory", "1M"}, s});
  }
  { // Fixed newstyle, the client declines NO_ZEROES (GO never pads).
    Script s;
    s.settings.handshake_flags = wire::flag_fixed_newstyle;
    s.settings.request_extended_headers = false;
    s.cmds = {cmd_read(0, 512)};
    v.push_back({"nbdkit_zeroes_declined", {"-t", "1", "memory", "1M"}, s});
  }
  { // Option mode against named exports.
    Script s;
    s.settings.opt_mode = true;
    proto::Settings a;
    a.export_name = "a";
    a.full_info = true;
    proto::Settings nope;
    nope.export_name = "nope";
    s.opts = {
        {OptAction::list, {}, {}},
        {OptAction::info, a, {}},
        {OptAction::info, nope, {}},
        {OptAction::go, nope, {}},
        {OptAction::list_meta, a, {"base:"}},
        {OptAction::list_meta, a, {}},
        {OptAction::set_meta, a, {"base:allocation"}},
        {OptAction::go, a, {}},
    };
    s.cmds = {cmd_other(wire::cmd_block_status, 0, 1048576), cmd_read(0, 512)};
    v.push_back({"nbdkit_optmode",
                 {"-t", "1", "--filter=exportname", "memory", "1M", "exportname=a",
                  "exportname=b", "exportname-list=explicit", "exportdesc=fixed:an export",
                  "exportname-strict=true"},
                 s});
  }
  { // Option mode: LIST, then ABORT.
    Script s;
    s.settings.opt_mode = true;
    s.opts = {{OptAction::list, {}, {}}, {OptAction::abort, {}, {}}};
    v.push_back({"nbdkit_abort", {"-t", "1", "memory", "1M"}, s});
  }
  { // GO to an export the server does not have: the handshake fails.
    Script s;
    s.settings.export_name = "nope";
    s.settings.meta_contexts = {"base:allocation"};
    v.push_back({"nbdkit_go_unknown",
                 {"-t", "1", "--filter=exportname", "memory", "1M", "exportname=a",
                  "exportname-strict=true"},
                 s});
  }
  { // Block size constraints in the GO reply.
    Script s;
    s.settings.meta_contexts = {"base:allocation"};
    s.cmds = {cmd_read(0, 4096)};
    v.push_back({"nbdkit_blocksize",
                 {"-t", "1", "--filter=blocksize-policy", "memory", "1M",
                  "blocksize-minimum=512", "blocksize-preferred=4096",
                  "blocksize-maximum=65536"},
                 s});
  }
  return v;
}

enum class FeedMode { whole, split, bytewise, staged };

/// Runs script against server bytes; split_at is used with FeedMode::split.
/// EOF is signalled at the end when eof is set.
inline Outcome run(const Script& script, std::span<const std::uint8_t> server, FeedMode mode,
                   bool eof, std::size_t split_at = 0) {
  Driver d(script);
  d.start();
  switch (mode) {
  case FeedMode::whole: d.feed(server); break;
  case FeedMode::split:
    d.feed(server.first(split_at));
    // Bytes the engine refused in the first piece are not offered again,
    // as a transport would not either; the outcome records consumed.
    d.feed(server.subspan(split_at));
    break;
  case FeedMode::bytewise: d.feed_bytewise(server); break;
  case FeedMode::staged: d.feed_staged(server); break;
  }
  if (eof) d.eof();
  return d.outcome();
}

} // namespace nbd::test
