// SPDX-License-Identifier: BSD-3-Clause
// Hostile servers during the handshake and option negotiation.

#include "scenario.hpp"

using namespace hostile;

TEST_SUITE_BEGIN("handshake");

TEST_CASE("bad magics in the greeting") {
  SUBCASE("not NBDMAGIC") {
    check_connect_fails([](Conn& c) { c.send_u64(0x4e42444d41474943 ^ 1).send_u64(wire::ihaveopt_magic); },
                        EPROTO);
  }
  SUBCASE("neither IHAVEOPT nor the oldstyle magic") {
    check_connect_fails([](Conn& c) { c.send_u64(wire::nbd_magic).send_u64(0x1122334455667788); },
                        EPROTO);
  }
  SUBCASE("a bad option reply magic") {
    check_connect_fails(
        [](Conn& c) {
          c.greet_newstyle().expect_client_flags().expect_option(wire::opt_extended_headers);
          c.option_reply_raw(wire::opt_extended_headers, wire::rep_ack, 0, {},
                             wire::option_reply_magic ^ 0x100);
        },
        EPROTO);
  }
}

TEST_CASE("unknown handshake flags") {
  // proto.md: a client that does not know a handshake flag must not go on.
  for (std::uint16_t flag : {std::uint16_t{1u << 2}, std::uint16_t{1u << 15}}) {
    CAPTURE(flag);
    check_connect_fails(
        [flag](Conn& c) {
          c.greet_newstyle(wire::flag_fixed_newstyle | wire::flag_no_zeroes | flag);
        },
        EPROTO);
  }
}

TEST_CASE("an option reply for another option") {
  SUBCASE("during the automatic options") {
    check_connect_fails(
        [](Conn& c) {
          c.greet_newstyle().expect_client_flags().expect_option(wire::opt_extended_headers);
          c.option_reply_raw(wire::opt_go, wire::rep_ack, 0);
        },
        EPROTO);
  }
  SUBCASE("to NBD_OPT_LIST in option mode") {
    check_option_fails(
        [](Conn& c) {
          opening(c);
          c.expect_option(wire::opt_list);
          c.option_reply_raw(wire::opt_info, wire::rep_ack, 0);
        },
        opt_list_call(), EPROTO, EPROTO);
  }
}

TEST_CASE("option reply lengths up to 4 GiB are refused, not allocated") {
  for (std::uint32_t len : {std::uint32_t{64 * 1024 + 1}, std::uint32_t{1u << 30}, 0xfffffff0u,
                            0xffffffffu}) {
    CAPTURE(len);
    const std::uint64_t before = current_rss();
    {
      INFO("ACK");
      check_connect_fails(
          [len](Conn& c) {
            c.greet_newstyle().expect_client_flags().expect_option(wire::opt_extended_headers);
            c.option_reply_raw(wire::opt_extended_headers, wire::rep_ack, len);
            try {
              c.send(Bytes(1 << 16, 0xee)); // the start of the "payload"
            } catch (const ClientGone&) {
            }
          },
          EPROTO);
    }
    {
      INFO("an error reply's message");
      check_connect_fails(
          [len](Conn& c) {
            c.greet_newstyle().expect_client_flags().expect_option(wire::opt_extended_headers);
            c.option_reply_raw(wire::opt_extended_headers, wire::rep_err_unsup, len);
          },
          EPROTO);
    }
    {
      INFO("NBD_REP_SERVER in opt_list");
      check_option_fails(
          [len](Conn& c) {
            opening(c);
            c.expect_option(wire::opt_list);
            c.option_reply_raw(wire::opt_list, wire::rep_server, len);
          },
          opt_list_call(), EPROTO, EPROTO);
    }
    CHECK(current_rss() < before + (64u << 20));
  }
}

TEST_CASE("an export list that never ends") {
  // The server lists exports for as long as the client listens: the client
  // must give up after its bound (65536 entries) with EPROTO, not loop.
  int listed = 0;
  auto script = [](Conn& c) {
    opening(c);
    c.expect_option(wire::opt_list);
    Bytes batch;
    for (int i = 0; i < 256; ++i) {
      Bytes p;
      put32(p, 4);
      put(p, "disk");
      put64(batch, wire::option_reply_magic);
      put32(batch, wire::opt_list);
      put32(batch, wire::rep_server);
      put32(batch, static_cast<std::uint32_t>(p.size()));
      batch.insert(batch.end(), p.begin(), p.end());
    }
    try {
      for (int i = 0; i < 100000; ++i) c.send(batch); // 25.6M entries: "forever"
    } catch (const ClientGone&) {
      return; // the client hung up: what we want
    }
    throw ScriptError("the client listened to 25 million exports");
  };
  check_option_fails(script, opt_list_call(&listed), EPROTO, EPROTO);
  CHECK(listed == 2 * 65536); // 65536 in each form (blocking, aio)
}

TEST_CASE("NBD_REP_SERVER whose name length overruns the reply") {
  check_option_fails(
      [](Conn& c) {
        opening(c);
        c.expect_option(wire::opt_list);
        Bytes p;
        put32(p, 100); // name length 100, only 4 bytes follow
        put(p, "disk");
        c.reply(wire::rep_server, p);
        c.reply_ack();
      },
      opt_list_call(), EPROTO, EPROTO);
}

namespace {

// GO answered with one extra NBD_REP_INFO built by `info`, then a
// conforming INFO_EXPORT and ACK.
Peer::Script go_with_info(Bytes info) {
  return [info](Conn& c) {
    opening(c);
    c.expect_option(wire::opt_go);
    c.reply(wire::rep_info, info);
    c.reply_info_export(1 << 20, wire::tflag_has_flags);
    c.reply_ack();
  };
}

Bytes info_payload(std::uint16_t type, std::size_t len) {
  Bytes b;
  put16(b, type);
  b.resize(b.size() + len, 0);
  return b;
}

Bytes block_size_info(std::uint32_t min, std::uint32_t pref, std::uint32_t max) {
  Bytes b;
  put16(b, wire::info_block_size);
  put32(b, min);
  put32(b, pref);
  put32(b, max);
  return b;
}

} // namespace

TEST_CASE("NBD_REP_INFO of the wrong length") {
  struct Case {
    const char* what;
    Bytes info;
  };
  std::vector<Case> cases{
      {"INFO_EXPORT one byte short", info_payload(wire::info_export, 9)},
      {"INFO_EXPORT one byte long", info_payload(wire::info_export, 11)},
      {"INFO_BLOCK_SIZE short", info_payload(wire::info_block_size, 10)},
      {"INFO_BLOCK_SIZE long", info_payload(wire::info_block_size, 16)},
      {"INFO_NAME over 4096 bytes", info_payload(wire::info_name, 4097)},
      {"no type at all", Bytes{0}},
  };
  for (const auto& k : cases) {
    INFO(std::string(k.what));
    check_option_fails(go_with_info(k.info), opt_go_call(), EPROTO, EPROTO);
  }
}

TEST_CASE("invalid block size constraints") {
  struct Case {
    const char* what;
    std::uint32_t min, pref, max;
  };
  for (const Case& k : {Case{"minimum not a power of two", 3, 4096, 1 << 20},
                        Case{"minimum zero", 0, 4096, 1 << 20},
                        Case{"minimum over 64 KiB", 128 * 1024, 128 * 1024, 1 << 20},
                        Case{"preferred below minimum", 4096, 1024, 1 << 20},
                        Case{"preferred below 512", 1, 256, 1 << 20},
                        Case{"maximum below preferred", 512, 4096, 2048},
                        Case{"maximum not a multiple of minimum", 4096, 4096, 4096 * 3 + 512}}) {
    INFO(std::string(k.what));
    check_option_fails(go_with_info(block_size_info(k.min, k.pref, k.max)), opt_go_call(), EPROTO,
                       EPROTO);
  }
}

TEST_CASE("INFO replies that never end") {
  // Unknown info types are to be ignored (proto.md), but not forever.
  auto script = [](Conn& c) {
    opening(c);
    c.expect_option(wire::opt_info);
    Bytes one;
    Bytes p = info_payload(0x7777, 1000);
    put64(one, wire::option_reply_magic);
    put32(one, wire::opt_info);
    put32(one, wire::rep_info);
    put32(one, static_cast<std::uint32_t>(p.size()));
    one.insert(one.end(), p.begin(), p.end());
    Bytes batch;
    for (int i = 0; i < 64; ++i) batch.insert(batch.end(), one.begin(), one.end());
    try {
      for (int i = 0; i < 1000000; ++i) c.send(batch);
    } catch (const ClientGone&) {
      return;
    }
    throw ScriptError("the client read 64 million INFO replies");
  };
  check_option_fails(script, opt_info_call(), EPROTO, EPROTO);
}

TEST_CASE("ACK to NBD_OPT_GO without NBD_INFO_EXPORT") {
  check_option_fails(
      [](Conn& c) {
        opening(c);
        c.expect_option(wire::opt_go);
        c.reply_ack();
      },
      opt_go_call(), EPROTO, EPROTO);
  SUBCASE("without option mode") {
    check_connect_fails(
        [](Conn& c) {
          opening(c);
          c.expect_option(wire::opt_go);
          c.reply_ack();
        },
        EPROTO);
  }
}

TEST_CASE("export size beyond 2^63-1") {
  check_connect_fails(
      [](Conn& c) {
        opening(c);
        c.expect_option(wire::opt_go);
        c.reply_info_export(0x8000000000000000ull, wire::tflag_has_flags);
        c.reply_ack();
      },
      EPROTO);
  SUBCASE("oldstyle") {
    check_connect_fails([](Conn& c) { c.greet_oldstyle(~0ull, 1); }, EPROTO);
  }
}

TEST_CASE("unexpected reply types") {
  SUBCASE("NBD_REP_META_CONTEXT to NBD_OPT_GO") {
    Bytes m;
    put32(m, 1);
    put(m, "base:allocation");
    check_option_fails(
        [m](Conn& c) {
          opening(c);
          c.expect_option(wire::opt_go);
          c.reply(wire::rep_meta_context, m);
        },
        opt_go_call(), EPROTO, EPROTO);
  }
  SUBCASE("NBD_REP_SERVER to NBD_OPT_INFO") {
    check_option_fails(
        [](Conn& c) {
          opening(c);
          c.expect_option(wire::opt_info);
          c.reply_server("disk");
        },
        opt_info_call(), EPROTO, EPROTO);
  }
  SUBCASE("a truncated NBD_REP_META_CONTEXT") {
    check_option_fails(
        [](Conn& c) {
          opening(c);
          c.expect_option(wire::opt_set_meta_context);
          c.reply(wire::rep_meta_context, Bytes{0, 0, 1});
        },
        opt_set_meta_call(), EPROTO, EPROTO, with_base_allocation());
  }
}

TEST_CASE("EOF during the handshake") {
  SUBCASE("in the greeting") {
    check_connect_fails([](Conn& c) { c.send_u64(wire::nbd_magic).close(); }, ENOTCONN);
  }
  SUBCASE("in an option reply header") {
    check_connect_fails(
        [](Conn& c) {
          c.greet_newstyle().expect_client_flags().expect_option(wire::opt_extended_headers);
          c.send_u64(wire::option_reply_magic).send_u32(wire::opt_extended_headers);
          c.close();
        },
        ENOTCONN);
  }
  SUBCASE("in an option reply payload") {
    check_option_fails(
        [](Conn& c) {
          opening(c);
          c.expect_option(wire::opt_list);
          c.option_reply_raw(wire::opt_list, wire::rep_server, 100, Bytes(10, 0));
          c.close();
        },
        opt_list_call(), ENOTCONN, ENOTCONN);
  }
}

TEST_CASE("meta contexts that never end") {
  auto script = [](Conn& c) {
    opening(c);
    c.expect_option(wire::opt_list_meta_context);
    Bytes batch;
    for (int i = 0; i < 256; ++i) {
      Bytes p;
      put32(p, 0);
      put(p, "base:allocation");
      put64(batch, wire::option_reply_magic);
      put32(batch, wire::opt_list_meta_context);
      put32(batch, wire::rep_meta_context);
      put32(batch, static_cast<std::uint32_t>(p.size()));
      batch.insert(batch.end(), p.begin(), p.end());
    }
    for (int i = 0; i < 100000; ++i) c.send(batch); // ends at the client's hangup
    throw ScriptError("the client listened to 25 million meta contexts");
  };
  int seen = 0;
  OptCall call{[&seen](nbd::Handle& h) {
                 h.opt_list_meta_context([&seen](std::string_view) {
                   ++seen;
                   return 0;
                 });
               },
               [&seen](nbd::Handle& h, nbd::CompletionCallback cb) {
                 h.aio_opt_list_meta_context([&seen](std::string_view) {
                   ++seen;
                   return 0;
                 }, std::move(cb));
               }};
  check_option_fails(script, call, EPROTO, EPROTO, with_base_allocation());
  CHECK(seen == 2 * 65536);
}

TEST_CASE("NBD_OPT_GO unsupported, then EOF after NBD_OPT_EXPORT_NAME") {
  // The client falls back to EXPORT_NAME; a server that does not know the
  // export just hangs up (that is all the old protocol allows).
  check_connect_fails(
      [](Conn& c) {
        opening(c);
        c.expect_option(wire::opt_go).reply(wire::rep_err_unsup);
        c.expect_option(wire::opt_export_name);
        c.close();
      },
      ENOTCONN);
  {
    INFO("EOF in the 124 zero bytes of a non-fixed newstyle server");
    check_connect_fails(
        [](Conn& c) {
          c.greet_newstyle(0).expect_client_flags().expect_option(wire::opt_export_name);
          Bytes b;
          put64(b, 1 << 20);
          put16(b, wire::tflag_has_flags);
          b.resize(b.size() + 60, 0);
          c.send(b).close();
        },
        ENOTCONN);
  }
}

TEST_CASE("NBD_OPT_ABORT answered with garbage or EOF") {
  // Whatever the server does after ABORT, the handle ends closed, at once.
  for (int variant = 0; variant < 3; ++variant) {
    CAPTURE(variant);
    Peer p([variant](Conn& c) {
      opening(c);
      c.expect_option(wire::opt_abort);
      if (variant == 0) c.close();
      if (variant == 1) c.send(Bytes(64, 0xcc));
      if (variant == 2) c.option_reply_raw(wire::opt_go, wire::rep_err_invalid, 0xffffffffu);
    });
    {
      nbd::Handle h;
      h.set_opt_mode(true);
      p.connect(h);
      h.opt_abort();
      CHECK((h.aio_is_closed() || h.aio_is_dead()));
      CHECK_FALSE(h.aio_is_negotiating());
    }
    CHECK(p.finish() == "");
  }
}

TEST_SUITE_END();
