// SPDX-License-Identifier: BSD-3-Clause
// Fuzz target: option mode (set_opt_mode(true)).
//
// Input: [variant] [split seed] [server bytes...]. The client negotiates in
// option mode and, each time the engine waits for the caller, makes the next
// call of one of four sequences (LIST, INFO, LIST/SET_META_CONTEXT, GO,
// STRUCTURED_REPLY, EXTENDED_HEADERS, ABORT); after a successful GO it
// submits a block status and a read, then NBD_CMD_DISC. Variant bits:
//   0-1  the sequence              2  request extended headers
//   3    request structured replies  4  full info
//   5    export name "a" (else "")
// The corpus holds conversations recorded from nbdkit (exportname filter)
// and qemu-nbd. See docs/fuzzing.md.

#include "fuzz_driver.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace {

using nbdfuzz::Client;
namespace proto = nbd::proto;
namespace wire = nbd::wire;

struct Call {
  enum Kind { go, info, list, abort, structured_reply, extended_headers, list_meta, set_meta };
  Kind kind;
  std::string name;                 // export name for go / info / meta
  std::vector<std::string> queries; // meta context queries
  bool full_info = false;
};

struct Run {
  proto::Settings settings;
  std::vector<Call> calls;
  std::size_t next = 0;
  bool submitted = false;
  Client client;

  static proto::Settings make_settings(std::uint8_t v) {
    proto::Settings s;
    s.opt_mode = true;
    s.request_extended_headers = v & 4;
    s.request_structured_replies = v & 8;
    s.full_info = v & 16;
    s.export_name = v & 32 ? "a" : "";
    s.meta_contexts = {"base:allocation"};
    return s;
  }

  static std::vector<Call> make_calls(std::uint8_t v) {
    const std::string name = v & 32 ? "a" : "";
    const bool full = v & 16;
    switch (v & 3) {
    case 0:
      return {{Call::list, {}, {}},
              {Call::info, name, {}, true},
              {Call::list_meta, name, {"base:"}},
              {Call::set_meta, name, {"base:allocation"}},
              {Call::go, name, {}, full}};
    case 1:
      return {{Call::list_meta, name, {}},
              {Call::structured_reply, {}, {}},
              {Call::extended_headers, {}, {}},
              {Call::info, name, {}, full},
              {Call::abort, {}, {}}};
    case 2:
      return {{Call::info, "nope", {}, full},
              {Call::go, "nope", {}, full},
              {Call::list, {}, {}},
              {Call::info, name, {}, full},
              {Call::go, name, {}, full}};
    default:
      return {{Call::set_meta, name, {"base:allocation", "qemu:allocation-depth"}},
              {Call::info, name, {}, true},
              {Call::list_meta, name, {"qemu:"}},
              {Call::go, name, {}, full}};
    }
  }

  Run(std::uint8_t variant, std::uint8_t seed)
      : settings(make_settings(variant)), calls(make_calls(variant)), client(settings, seed) {
    client.hook = [this](Client& c) { act(c); };
  }

  void act(Client& c) {
    proto::Engine& e = c.engine();
    if (e.phase() == proto::Phase::transmission && !submitted) {
      submitted = true;
      // As the API layer: block status needs a negotiated meta context.
      if (!e.meta_contexts().empty()) c.submit({wire::cmd_block_status, 0, 0, 65536});
      c.submit({wire::cmd_read, 0, 0, 512});
      e.disconnect();
      return;
    }
    if (e.phase() != proto::Phase::option_wait || c.option_pending()) return;
    while (next < calls.size()) {
      const Call& k = calls[next++];
      proto::Settings s = settings;
      s.export_name = k.name;
      s.full_info = k.full_info;
      // The API layer refuses SET_META_CONTEXT without structured replies.
      if (k.kind == Call::set_meta && !e.structured_replies()) continue;
      c.opt_started();
      switch (k.kind) {
      case Call::go: e.opt_go(s); break;
      case Call::info: e.opt_info(s); break;
      case Call::list: e.opt_list(); break;
      case Call::abort: e.opt_abort(); break;
      case Call::structured_reply: e.opt_structured_reply(); break;
      case Call::extended_headers: e.opt_extended_headers(); break;
      case Call::list_meta: e.opt_list_meta_context(s, k.queries); break;
      case Call::set_meta: e.opt_set_meta_context(s, k.queries); break;
      }
      return;
    }
  }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return nbdfuzz::run_scripted<Run>(data, size);
}
