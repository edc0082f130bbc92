// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// What the fuzz targets share: a client that drives proto::Engine with
// server bytes, the way a transport and the API layer would, and checks the
// engine's contracts after every step.
//
// - Server bytes go in through recv_target / commit_recv in pieces whose
//   sizes come from the input (a seeded generator); what the engine wants
//   to send is drained in input-sized pieces too, interleaved with the
//   receiving, so replies also arrive while a write is half sent.
// - Every read and write buffer is its own exact-size heap block, freed the
//   moment its command completes: a write past a read buffer, or into (or a
//   send from) the buffer of a command that already completed, is a heap
//   overflow or use-after-free that ASan reports.
// - Invariants (checked, abort()ing so the fuzzer records a crash): every
//   submitted command completes exactly once, by EOF at the latest; no event
//   names a command that is not live or reaches outside its request;
//   in_flight() matches; a successful read was covered exactly; the engine
//   never waits for nothing while something is outstanding (a hang); what it
//   asks the transport to receive or buffer stays bounded.
//
// The same code runs under libFuzzer (clang, -Dfuzz=enabled) and, through
// standalone_main.cpp, as ordinary tests replaying the corpus.

#include "proto/engine.hpp"

#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace nbdfuzz {

namespace proto = nbd::proto;
namespace wire = nbd::wire;

[[noreturn]] inline void violated(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz invariant violated: %s (%s:%d)\n", what, file, line);
  std::fflush(stderr);
  std::abort();
}
#define FUZZ_CHECK(cond)                                                                            \
  do {                                                                                              \
    if (!(cond)) ::nbdfuzz::violated(#cond, __FILE__, __LINE__);                                    \
  } while (0)

/// splitmix64: the piece sizes of one run, from one input byte.
class Rng {
public:
  explicit Rng(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(next() % n); }

private:
  std::uint64_t s_;
};

/// A command of a fuzz script.
struct Cmd {
  std::uint16_t type = 0;
  std::uint16_t flags = 0;
  std::uint64_t offset = 0;
  std::uint64_t count = 0;
};

/// The largest span the engine may ask a transport to fill outside a read
/// buffer (an option reply, a chunk payload into its scratch area).
inline constexpr std::size_t max_scratch_target =
    std::max(proto::Engine::max_option_reply, std::size_t{8 * 1024 * 1024});

class Client {
public:
  /// split_seed 0 feeds every piece whole and sends everything at once
  /// (the plain replay of a recorded conversation).
  Client(const proto::Settings& settings, std::uint64_t split_seed)
      : settings_(settings), rng_(split_seed), split_(split_seed != 0) {}
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  proto::Engine& engine() { return eng_; }

  /// Runs after every step: the target's chance to call opt_* in option
  /// mode, or to submit its commands once transmission starts.
  std::function<void(Client&)> hook;
  /// When set, what the engine sends is appended here (a recorder talking
  /// to a real server forwards it).
  std::vector<std::uint8_t>* sent = nullptr;

  void start() {
    eng_.start(settings_);
    step();
  }

  /// Queues one command the way the API layer does, after its checks
  /// (call it from the hook: the step that runs the hook drains it).
  void submit(const Cmd& c) {
    FUZZ_CHECK(eng_.phase() == proto::Phase::transmission);
    Live l;
    l.type = c.type;
    l.offset = c.offset;
    l.count = c.count;
    proto::CommandSpec spec;
    spec.type = c.type;
    spec.flags = c.flags;
    spec.offset = c.offset;
    spec.count = c.count;
    if (c.type == wire::cmd_read || c.type == wire::cmd_write) {
      l.len = static_cast<std::size_t>(c.count);
      l.buf.reset(new std::uint8_t[l.len]);
      for (std::size_t i = 0; i < l.len; ++i) l.buf[i] = static_cast<std::uint8_t>(i * 7 + 1);
      if (c.type == wire::cmd_read)
        spec.read_buf = {l.buf.get(), l.len};
      else
        spec.write_buf = {l.buf.get(), l.len};
    }
    std::uint64_t expect_cookie = eng_.next_cookie();
    l.slot = eng_.submit(spec);
    l.cookie = eng_.slot_cookie(l.slot);
    FUZZ_CHECK(l.cookie == expect_cookie && l.cookie >= 1);
    FUZZ_CHECK(!eng_.slot_done(l.slot));
    for (const auto& o : live_) FUZZ_CHECK(o.slot != l.slot);
    live_.push_back(std::move(l));
    ++submitted_;
  }

  void opt_started() { option_pending_ = true; }
  bool option_pending() const { return option_pending_; }
  std::size_t options_done() const { return options_done_; }
  bool transmission_seen() const { return transmission_seen_; }

  /// Feeds server bytes until they are used up or the engine stops taking
  /// any; returns how many it took.
  std::size_t feed(std::span<const std::uint8_t> data) {
    std::size_t used = 0;
    while (used < data.size()) {
      if (split_ && rng_.below(4) == 0) {
        // A transport that receives into its own staging buffer: one
        // Engine::feed over many messages before the events are handled.
        std::size_t k = std::min(data.size() - used, piece());
        std::size_t n = eng_.feed(data.subspan(used, k));
        FUZZ_CHECK(n <= k);
        used += n;
        step();
        if (n < k && eng_.recv_target().empty()) break;
        continue;
      }
      auto t = eng_.recv_target();
      if (t.empty()) break;
      std::size_t k = std::min(t.size(), data.size() - used);
      if (split_) k = std::min(k, piece());
      std::memcpy(t.data(), data.data() + used, k);
      used += k;
      eng_.commit_recv(k);
      step();
    }
    return used;
  }

  /// One step of a transport and the API layer: send something, handle the
  /// events, let the target act, check the invariants.
  void step() {
    for (int guard = 0;; ++guard) {
      FUZZ_CHECK(guard < 100000);
      if (split_)
        send(rng_.below(3) == 0 ? 0 : piece());
      else
        send(static_cast<std::size_t>(-1));
      collect();
      std::size_t before = submitted_ + options_started_count();
      auto phase = eng_.phase();
      if (hook) hook(*this);
      collect();
      check();
      if (submitted_ + options_started_count() == before && phase == eng_.phase()) break;
    }
  }

  /// The server hangs up: everything still outstanding must complete now.
  void finish() {
    if (split_ && rng_.below(2)) send(static_cast<std::size_t>(-1));
    eng_.on_eof();
    step();
    FUZZ_CHECK(eng_.phase() == proto::Phase::closed || eng_.phase() == proto::Phase::dead);
    FUZZ_CHECK(live_.empty());
    FUZZ_CHECK(completed_ == submitted_);
    FUZZ_CHECK(eng_.in_flight() == 0);
    FUZZ_CHECK(!option_pending_);
    FUZZ_CHECK(eng_.recv_target().empty());
    FUZZ_CHECK(eng_.wants() == proto::Direction::none);
    // A dead engine ignores whatever else happens to it.
    eng_.on_eof();
    eng_.die(EIO, "again");
    FUZZ_CHECK(eng_.events().empty());
  }

private:
  struct Live {
    std::uint32_t slot = 0;
    std::uint64_t cookie = 0;
    std::uint16_t type = 0;
    std::uint64_t offset = 0, count = 0;
    std::unique_ptr<std::uint8_t[]> buf;
    std::size_t len = 0;
    std::uint64_t covered = 0; // read: bytes of data and hole chunks reported
    std::size_t extent_events = 0;
  };

  std::size_t piece() {
    switch (rng_.below(4)) {
    case 0: return 1;
    case 1: return 1 + rng_.below(16);
    case 2: return 1 + rng_.below(4096);
    default: return static_cast<std::size_t>(-1);
    }
  }

  Live* live(std::uint32_t slot) {
    for (auto& l : live_)
      if (l.slot == slot) return &l;
    return nullptr;
  }

  /// Sends up to n bytes of what the engine has queued, reading every byte
  /// of every segment (so a freed or short write buffer shows up in ASan).
  void send(std::size_t n) {
    while (n > 0) {
      iovec iov[64];
      std::size_t cnt = eng_.send_segments(iov);
      if (cnt == 0) {
        FUZZ_CHECK(eng_.send_pending_bytes() == 0);
        break;
      }
      std::size_t total = 0;
      for (std::size_t i = 0; i < cnt; ++i) {
        FUZZ_CHECK(iov[i].iov_len > 0);
        total += iov[i].iov_len;
      }
      // Touch exactly the bytes a transport would send now.
      const std::size_t k = std::min(total, n);
      std::size_t left = k;
      for (std::size_t i = 0; i < cnt && left > 0; ++i) {
        auto* p = static_cast<const std::uint8_t*>(iov[i].iov_base);
        std::size_t m = std::min(left, iov[i].iov_len);
        for (std::size_t j = 0; j < m; ++j) sink_ = static_cast<std::uint8_t>(sink_ + p[j]);
        if (sent) sent->insert(sent->end(), p, p + m);
        left -= m;
      }
      // The segments are a prefix of what is pending (negotiation bytes
      // come alone, NBD_CMD_DISC only once every command is out).
      FUZZ_CHECK(total <= eng_.send_pending_bytes());
      eng_.commit_send(k);
      n -= k;
      collect();
    }
  }

  std::size_t options_started_count() const { return options_done_ + (option_pending_ ? 1 : 0); }

  void collect() {
    if (eng_.phase() == proto::Phase::transmission || eng_.phase() == proto::Phase::disconnecting)
      transmission_seen_ = true;
    auto& events = eng_.events();
    FUZZ_CHECK(events.size() < 1000000);
    std::vector<std::uint32_t> retire;
    for (const auto& e : events) {
      switch (e.kind) {
      case proto::Event::command_done: {
        Live* l = live(e.slot);
        FUZZ_CHECK(l != nullptr); // exactly once, and only for live commands
        FUZZ_CHECK(eng_.slot_done(e.slot));
        FUZZ_CHECK(eng_.slot_cookie(e.slot) == l->cookie);
        FUZZ_CHECK(eng_.find(l->cookie) == e.slot);
        FUZZ_CHECK(e.error == eng_.slot_error(e.slot));
        switch (e.error) {
        case 0: case EPERM: case EIO: case ENOMEM: case EINVAL: case ENOSPC: case EOVERFLOW:
        case ENOTSUP: case ESHUTDOWN: case EPROTO: case ENOTCONN: break;
        default: FUZZ_CHECK(!"unexpected errno in a completion");
        }
        if (e.error == 0 && l->type == wire::cmd_read) FUZZ_CHECK(l->covered == l->count);
        if (e.error == 0 && l->type == wire::cmd_block_status) FUZZ_CHECK(l->extent_events > 0);
        retire.push_back(e.slot);
        // The buffer goes away now: the engine must not touch it again.
        live_.erase(live_.begin() + (l - live_.data()));
        ++completed_;
        break;
      }
      case proto::Event::read_chunk: {
        Live* l = live(e.slot);
        FUZZ_CHECK(l != nullptr);
        FUZZ_CHECK(l->type == wire::cmd_read);
        FUZZ_CHECK(e.offset >= l->offset && e.offset - l->offset <= l->count);
        FUZZ_CHECK(e.length <= l->count - (e.offset - l->offset));
        if (e.status == proto::read_error) {
          FUZZ_CHECK(e.error != 0 && e.length == 0);
          break;
        }
        FUZZ_CHECK(e.status == proto::read_data || e.status == proto::read_hole);
        FUZZ_CHECK(e.length > 0 || l->count == 0);
        l->covered += e.length;
        FUZZ_CHECK(l->covered <= l->count);
        if (e.status == proto::read_hole) {
          const std::uint8_t* p = l->buf.get() + (e.offset - l->offset);
          for (std::uint64_t i = 0; i < e.length; ++i) FUZZ_CHECK(p[i] == 0);
        }
        break;
      }
      case proto::Event::extents: {
        Live* l = live(e.slot);
        FUZZ_CHECK(l != nullptr);
        FUZZ_CHECK(l->type == wire::cmd_block_status);
        FUZZ_CHECK(e.extent_count > 0);
        FUZZ_CHECK(std::size_t{e.extent_begin} + e.extent_count <= eng_.extents().size());
        bool known = false;
        for (const auto& m : eng_.meta_contexts()) known |= m.id == e.context_id;
        FUZZ_CHECK(known);
        ++l->extent_events;
        break;
      }
      case proto::Event::option_done:
        FUZZ_CHECK(option_pending_);
        option_pending_ = false;
        ++options_done_;
        break;
      case proto::Event::export_listed:
        FUZZ_CHECK(option_pending_);
        FUZZ_CHECK(e.text.size() <= wire::max_string && e.text2.size() <= 65536);
        break;
      case proto::Event::meta_context:
        // Also reported while GO sets the contexts during the handshake.
        FUZZ_CHECK(e.text.size() <= wire::max_string);
        break;
      }
    }
    eng_.clear_events();
    for (auto slot : retire) {
      eng_.retire(slot);
      FUZZ_CHECK(eng_.find(eng_.slot_cookie(slot)) == proto::CookieMap::npos);
    }
  }

  void check() {
    const auto phase = eng_.phase();
    FUZZ_CHECK(eng_.in_flight() == live_.size());
    const auto t = eng_.recv_target();
    const unsigned w = static_cast<unsigned>(eng_.wants());
    FUZZ_CHECK(((w & 1) != 0) == !t.empty());
    if (phase == proto::Phase::dead || phase == proto::Phase::closed) {
      FUZZ_CHECK(live_.empty());
      FUZZ_CHECK(t.empty());
      FUZZ_CHECK(eng_.send_pending_bytes() == 0);
      FUZZ_CHECK(!option_pending_);
      if (phase == proto::Phase::dead) FUZZ_CHECK(eng_.death_errno() != 0);
      return;
    }
    // Never wait for nothing while something is outstanding.
    if (!live_.empty() || option_pending_ || phase == proto::Phase::handshake ||
        phase == proto::Phase::option_busy)
      FUZZ_CHECK(w != 0);
    if (phase == proto::Phase::option_wait) FUZZ_CHECK(!option_pending_);
    if (t.empty()) return;
    // The target is a live read's buffer (inside it), or the engine's own
    // storage of bounded size.
    const std::uint8_t* b = t.data();
    for (const auto& l : live_) {
      if (l.type != wire::cmd_read || l.len == 0) continue;
      const std::uint8_t* lb = l.buf.get();
      if (b + t.size() > lb && b < lb + l.len) {
        FUZZ_CHECK(b >= lb && b + t.size() <= lb + l.len);
        return;
      }
    }
    FUZZ_CHECK(t.size() <= max_scratch_target);
  }

  proto::Settings settings_;
  Rng rng_;
  bool split_;
  proto::Engine eng_;
  std::vector<Live> live_;
  std::size_t submitted_ = 0, completed_ = 0;
  bool option_pending_ = false;
  std::size_t options_done_ = 0;
  bool transmission_seen_ = false;
  volatile std::uint8_t sink_ = 0; // keeps the reads of sent bytes
};

/// The input framing every scripted target shares: [variant] [split seed]
/// [server bytes...]. Run is built from the first two bytes and owns a
/// Client named `client`; the rest is what the server says, then EOF.
template <typename Run>
int run_scripted(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  Run r(data[0], data[1]);
  r.client.start();
  r.client.feed({data + 2, size - 2});
  r.client.finish();
  return 0;
}

} // namespace nbdfuzz
