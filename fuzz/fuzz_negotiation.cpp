// SPDX-License-Identifier: BSD-3-Clause
// Fuzz target: everything a server says, from its very first byte.
//
// Input: [variant] [split seed] [server bytes...]. The variant picks the
// client: one of the conversations recorded from nbdkit in
// tests/unit/transcripts (its settings, option-mode calls and commands, so
// a recorded transcript replays all the way through transmission), or a few
// more settings (meta contexts, plain, option mode). The split seed picks
// how the bytes are cut into pieces (0: whole). See docs/fuzzing.md.

#include "fuzz_driver.hpp"

#include "engine_harness.hpp"
#include "toy_tls.hpp"

#include <cstddef>
#include <cstdint>

namespace {

using nbdfuzz::Client;
namespace test = nbd::test;
namespace proto = nbd::proto;
namespace wire = nbd::wire;

std::vector<test::Script> make_scripts() {
  std::vector<test::Script> v;
  for (auto& r : test::recorded_conversations()) v.push_back(r.script);
  { // Two meta contexts, full info.
    test::Script s;
    s.settings.meta_contexts = {"base:allocation", "qemu:allocation-depth"};
    s.settings.full_info = true;
    s.cmds = {test::cmd_read(0, 4096), test::cmd_other(wire::cmd_block_status, 0, 65536)};
    v.push_back(s);
  }
  { // Nothing extra: simple replies.
    test::Script s;
    s.settings = test::plain_settings();
    s.cmds = {test::cmd_write(0, test::pattern(1024, 1)), test::cmd_read(0, 1024)};
    v.push_back(s);
  }
  { // Extended headers without asking for structured replies (implied).
    test::Script s;
    s.settings.request_structured_replies = false;
    s.settings.meta_contexts = {"base:allocation"};
    s.cmds = {test::cmd_read(512, 512), test::cmd_other(wire::cmd_block_status, 0, 4096),
              test::cmd_other(wire::cmd_write_zeroes, 0, 512)};
    v.push_back(s);
  }
  { // Option mode: every option once.
    test::Script s;
    s.settings.opt_mode = true;
    proto::Settings a;
    a.export_name = "a";
    a.full_info = true;
    a.meta_contexts = {"base:allocation"};
    s.opts = {
        {test::OptAction::structured_reply, {}, {}},
        {test::OptAction::extended_headers, {}, {}},
        {test::OptAction::list, {}, {}},
        {test::OptAction::list_meta, a, {"base:"}},
        {test::OptAction::set_meta, a, {"base:allocation"}},
        {test::OptAction::info, a, {}},
        {test::OptAction::go, a, {}},
    };
    s.cmds = {test::cmd_other(wire::cmd_block_status, 0, 65536), test::cmd_read(0, 512)};
    v.push_back(s);
  }
  { // TLS required (a toy session: tests/unit/toy_tls.hpp), then
    // structured replies, meta contexts and commands through it.
    test::Script s;
    s.settings.tls = 2;
    s.settings.make_tls = [] { return std::make_unique<test::ToyTls>(); };
    s.settings.meta_contexts = {"base:allocation"};
    s.cmds = {test::cmd_read(0, 4096), test::cmd_write(0, test::pattern(512, 3)),
              test::cmd_other(wire::cmd_block_status, 0, 65536)};
    s.disconnect = true;
    v.push_back(s);
  }
  { // TLS allowed: a refusal carries on in plaintext.
    test::Script s;
    s.settings = test::plain_settings();
    s.settings.tls = 1;
    s.settings.make_tls = [] { return std::make_unique<test::ToyTls>(); };
    s.cmds = {test::cmd_read(0, 512)};
    v.push_back(s);
  }
  { // Fixed newstyle, no block size request, full info, no meta contexts.
    test::Script s;
    s.settings.request_block_size = false;
    s.settings.request_meta_context = false;
    s.settings.full_info = true;
    s.settings.export_name = "export";
    s.cmds = {test::cmd_other(wire::cmd_flush, 0, 0), test::cmd_read(0, 1)};
    v.push_back(s);
  }
  return v;
}

const std::vector<test::Script>& scripts() {
  static const std::vector<test::Script> s = make_scripts();
  return s;
}

/// One run: the variant's client, acting as its script says.
struct Run {
  const test::Script& script;
  Client client;
  std::size_t next_opt = 0;
  bool submitted = false;

  Run(std::uint8_t variant, std::uint8_t seed)
      : script(scripts()[variant % scripts().size()]), client(script.settings, seed) {
    client.hook = [this](Client& c) { act(c); };
  }

  void act(Client& cl) {
    proto::Engine& e = cl.engine();
    if (e.phase() == proto::Phase::option_wait && !cl.option_pending() &&
        next_opt < script.opts.size()) {
      const test::OptAction* next = &script.opts[next_opt++];
      // The API layer refuses SET_META_CONTEXT without structured replies.
      while (next->kind == test::OptAction::set_meta && !e.structured_replies()) {
        if (next_opt == script.opts.size()) return;
        next = &script.opts[next_opt++];
      }
      const test::OptAction& a = *next;
      cl.opt_started();
      switch (a.kind) {
      case test::OptAction::go: e.opt_go(a.settings); break;
      case test::OptAction::info: e.opt_info(a.settings); break;
      case test::OptAction::list: e.opt_list(); break;
      case test::OptAction::abort: e.opt_abort(); break;
      case test::OptAction::structured_reply: e.opt_structured_reply(); break;
      case test::OptAction::extended_headers: e.opt_extended_headers(); break;
      case test::OptAction::list_meta: e.opt_list_meta_context(a.settings, a.queries); break;
      case test::OptAction::set_meta: e.opt_set_meta_context(a.settings, a.queries); break;
      }
    } else if (e.phase() == proto::Phase::transmission && !submitted) {
      submitted = true;
      for (const auto& cmd : script.cmds) {
        // As the API layer: compact requests carry 32-bit lengths.
        if (!e.extended_headers() && cmd.count > 0xffffffffu) continue;
        cl.submit({cmd.type, cmd.flags, cmd.offset, cmd.count});
      }
      if (script.disconnect) e.disconnect();
    }
  }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return nbdfuzz::run_scripted<Run>(data, size);
}
