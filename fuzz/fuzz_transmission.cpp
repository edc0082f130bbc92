// SPDX-License-Identifier: BSD-3-Clause
// Fuzz target: replies to a fixed mix of commands.
//
// Input: [variant] [split seed] [server bytes after the handshake...]. The
// target feeds a valid handshake itself (built from the variant), submits
// pread, pread_structured (DF), pwrite (FUA), flush, trim, zero, cache, two
// block_status (one REQ_ONE) and two edge reads, then feeds the input as the
// server's replies. Variant bits:
//   0  extended headers (else compact)      1  no structured replies
//   2  meta context ids start at 1 (else 0) 3  two meta contexts
//   4  NBD_CMD_DISC right after the commands
//   5  abandon unsent commands (SHUTDOWN_ABANDON_PENDING) halfway through
// The corpus holds replies recorded from nbdkit and qemu-nbd (compact) and
// the same replies rewritten with extended headers. See docs/fuzzing.md.

#include "fuzz_driver.hpp"

#include "engine_harness.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace {

using nbdfuzz::Client;
using nbdfuzz::Cmd;
namespace test = nbd::test;
namespace proto = nbd::proto;
namespace wire = nbd::wire;

constexpr std::uint64_t export_size = 1024 * 1024;

/// The commands, in submission order (cookies 1, 2, ...).
const std::vector<Cmd>& command_mix() {
  static const std::vector<Cmd> mix = {
      {wire::cmd_read, 0, 0, 4096},
      {wire::cmd_read, wire::cmd_flag_df, 4096, 65536}, // pread_structured
      {wire::cmd_write, wire::cmd_flag_fua, 8192, 4096},
      {wire::cmd_flush, 0, 0, 0},
      {wire::cmd_trim, 0, 16384, 4096},
      {wire::cmd_write_zeroes, 0, 32768, 8192},
      {wire::cmd_cache, 0, 0, 4096},
      {wire::cmd_block_status, 0, 0, export_size},
      {wire::cmd_block_status, wire::cmd_flag_req_one, 0, 65536},
      {wire::cmd_read, 0, export_size - 1, 1},
      {wire::cmd_read, 0, export_size, 512}, // past the end: servers refuse it
  };
  return mix;
}

struct Variant {
  bool extended, structured, two_contexts, disconnect, abandon;
  std::uint32_t first_id;
  explicit Variant(std::uint8_t v)
      : extended(v & 1), structured(extended || !(v & 2)), two_contexts(v & 8),
        disconnect(v & 16), abandon(v & 32), first_id(v & 4 ? 1 : 0) {}

  proto::Settings settings() const {
    proto::Settings s;
    s.request_extended_headers = extended;
    s.request_structured_replies = structured;
    s.meta_contexts = {"base:allocation"};
    if (two_contexts) s.meta_contexts.push_back("qemu:allocation-depth");
    return s;
  }

  /// What a server says from its greeting to the end of NBD_OPT_GO.
  test::Buf handshake() const {
    using namespace test::srv;
    test::Buf b = greeting(3);
    if (extended)
      test::put(b, ack(wire::opt_extended_headers));
    else if (structured)
      test::put(b, ack(wire::opt_structured_reply));
    if (structured) {
      std::uint32_t id = first_id;
      for (const auto& name : settings().meta_contexts)
        test::put(b, rep_meta(wire::opt_set_meta_context, id++, name));
      test::put(b, ack(wire::opt_set_meta_context));
    }
    const std::uint16_t eflags =
        wire::tflag_has_flags | wire::tflag_send_flush | wire::tflag_send_fua |
        wire::tflag_send_trim | wire::tflag_send_write_zeroes | wire::tflag_send_df |
        wire::tflag_can_multi_conn | wire::tflag_send_cache | wire::tflag_send_fast_zero;
    test::put(b, info_export(wire::opt_go, export_size, eflags));
    test::put(b, info_block_size(wire::opt_go, 1, 4096, 32 * 1024 * 1024));
    test::put(b, ack(wire::opt_go));
    return b;
  }
};

/// One run: the client with its commands queued once transmission starts.
struct Run {
  Variant v;
  Client client;
  bool submitted = false;

  Run(std::uint8_t variant, std::uint8_t seed) : v(variant), client(v.settings(), seed) {
    client.hook = [this](Client& c) {
      proto::Engine& e = c.engine();
      if (e.phase() != proto::Phase::transmission || submitted) return;
      submitted = true;
      for (const auto& cmd : command_mix()) c.submit(cmd);
      if (v.disconnect) e.disconnect();
    };
  }

  /// Connects through the built-in handshake.
  void start() {
    client.start();
    test::Buf hs = v.handshake();
    FUZZ_CHECK(client.feed(hs) == hs.size());
    proto::Engine& e = client.engine();
    FUZZ_CHECK(e.phase() == proto::Phase::transmission ||
               e.phase() == proto::Phase::disconnecting);
    FUZZ_CHECK(e.extended_headers() == v.extended && e.structured_replies() == v.structured);
    FUZZ_CHECK(e.meta_contexts().size() == (v.structured ? v.settings().meta_contexts.size() : 0));
    FUZZ_CHECK(submitted);
  }

  void replies(std::span<const std::uint8_t> data) {
    if (!v.abandon) {
      client.feed(data);
      return;
    }
    const std::size_t half = data.size() / 2;
    std::size_t used = client.feed(data.first(half));
    // nbd_shutdown(SHUTDOWN_ABANDON_PENDING) as the API layer does it.
    proto::Engine& e = client.engine();
    if (e.phase() == proto::Phase::transmission) {
      e.abandon_unsent(ENOTCONN);
      e.disconnect();
      client.step();
    }
    if (used == half) client.feed(data.subspan(half));
  }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  Run r(data[0], data[1]);
  r.start();
  r.replies({data + 2, size - 2});
  r.client.finish();
  return 0;
}
