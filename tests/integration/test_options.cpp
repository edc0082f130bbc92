// SPDX-License-Identifier: BSD-3-Clause
// Option mode (set_opt_mode(true)) against nbdkit: list, info, go, abort,
// meta contexts, structured replies, and calls in the wrong state.

#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <string>
#include <vector>

using nbdtest::CallCounter;
using nbdtest::CountedCompletion;
using nbdtest::error_of;

namespace {

constexpr std::int64_t mib = 1024 * 1024;

// nbdkit's file plugin with dir= lists (and serves) one export per file;
// sizes differ so get_size() tells them apart.
struct Exports {
  nbdtest::TempDir dir;
  Exports() {
    nbdtest::make_file(dir.file("a"), 1 * mib);
    nbdtest::make_file(dir.file("b"), 2 * mib);
    nbdtest::make_file(dir.file("c"), 3 * mib);
  }
  std::vector<std::string> args() const { return {"file", "dir=" + dir.path()}; }
};

void connect_opt(nbd::Handle& h, std::vector<std::string> args) {
  h.set_opt_mode(true);
  CHECK(h.get_opt_mode());
  nbdtest::connect(h, std::move(args));
  REQUIRE(h.aio_is_negotiating());
}

} // namespace

TEST_CASE("opt_list lists the exports of nbdkit file dir=") {
  Exports ex;
  nbd::Handle h;
  connect_opt(h, ex.args());
  std::set<std::string> names;
  int n = h.opt_list([&](std::string_view name, std::string_view) {
    names.emplace(name);
    return 0;
  });
  CHECK(n == 3);
  CHECK(names == std::set<std::string>{"a", "b", "c"});
  // Listing leaves the handle negotiating. (nbdkit refuses a second
  // NBD_OPT_LIST on one connection with ERR_INVALID: an option error, not
  // the end of the negotiation.)
  CHECK(h.aio_is_negotiating());
  CHECK(error_of([&] { h.opt_list([](std::string_view, std::string_view) { return 0; }); }) ==
        EINVAL);
  CHECK(h.aio_is_negotiating());
  h.set_export_name("b");
  h.opt_go();
  CHECK(h.aio_is_ready());
  CHECK(h.get_size() == 2 * mib);
}

TEST_CASE("opt_list with a description (exportname filter)") {
  nbd::Handle h;
  connect_opt(h, {"--filter=exportname", "memory", "1M", "exportname-list=explicit",
                  "exportname=one", "exportname=two", "exportdesc=fixed:described"});
  std::vector<std::pair<std::string, std::string>> got;
  int n = h.opt_list([&](std::string_view name, std::string_view desc) {
    got.emplace_back(name, desc);
    return 0;
  });
  CHECK(n == 2);
  REQUIRE(got.size() == 2);
  CHECK(got[0].first == "one");
  CHECK(got[1].first == "two");
  for (auto& g : got) CHECK(g.second == "described");
}

TEST_CASE("opt_info, then opt_go") {
  Exports ex;
  nbd::Handle h;
  connect_opt(h, ex.args());
  // Nothing is known about the export before opt_info.
  CHECK(error_of([&] { h.get_size(); }) == ENOTCONN);
  h.set_export_name("b");
  h.opt_info();
  CHECK(h.aio_is_negotiating());
  CHECK(h.get_size() == 2 * mib);
  h.set_export_name("c");
  h.opt_info();
  CHECK(h.get_size() == 3 * mib);
  CHECK_FALSE(h.is_read_only());
  h.opt_go();
  CHECK(h.aio_is_ready());
  CHECK(h.get_size() == 3 * mib);
  std::vector<std::uint8_t> buf(4096, 1);
  h.pwrite(buf, 0);
  h.pread(buf, 0);
}

TEST_CASE("a failed opt_go or opt_info leaves the handle negotiating") {
  Exports ex;
  nbd::Handle h;
  connect_opt(h, ex.args());
  h.set_export_name("nosuch");
  CHECK(error_of([&] { h.opt_info(); }) != 0);
  CHECK(h.aio_is_negotiating());
  CHECK(error_of([&] { h.opt_go(); }) != 0);
  CHECK(h.aio_is_negotiating());
  h.set_export_name("a");
  h.opt_go();
  CHECK(h.aio_is_ready());
  CHECK(h.get_size() == 1 * mib);
}

TEST_CASE("opt_abort closes the connection") {
  nbd::Handle h;
  connect_opt(h, {"memory", "1M"});
  h.opt_abort();
  CHECK(h.aio_is_closed());
  CHECK_FALSE(h.aio_is_dead());
  std::vector<std::uint8_t> buf(512);
  CHECK(error_of([&] { h.pread(buf, 0); }) == EINVAL);
  CHECK(error_of([&] { h.opt_go(); }) == EINVAL);
}

TEST_CASE("shutdown while negotiating ends it with NBD_OPT_ABORT") {
  nbd::Handle h;
  connect_opt(h, {"memory", "1M"});
  h.shutdown();
  CHECK(h.aio_is_closed());
}

TEST_CASE("opt_list_meta_context and opt_set_meta_context with base:allocation") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect_opt(h, {"memory", "1M"});
  REQUIRE(h.get_structured_replies_negotiated());

  std::vector<std::string> listed;
  int n = h.opt_list_meta_context([&](std::string_view name) {
    listed.emplace_back(name);
    return 0;
  });
  CHECK(n == 1);
  CHECK(listed == std::vector<std::string>{"base:allocation"});

  // No queries: the server lists every context it has.
  listed.clear();
  n = h.opt_list_meta_context_queries({}, [&](std::string_view name) {
    listed.emplace_back(name);
    return 0;
  });
  CHECK(n >= 1);
  CHECK(std::find(listed.begin(), listed.end(), "base:allocation") != listed.end());
  // A namespace query.
  listed.clear();
  n = h.opt_list_meta_context_queries({"base:"}, [&](std::string_view name) {
    listed.emplace_back(name);
    return 0;
  });
  CHECK(n == 1);
  // Unknown contexts are simply not listed.
  CHECK(h.opt_list_meta_context_queries({"nosuch:ctx"}, [](std::string_view) { return 0; }) == 0);

  std::vector<std::string> set;
  n = h.opt_set_meta_context([&](std::string_view name) {
    set.emplace_back(name);
    return 0;
  });
  CHECK(n == 1);
  CHECK(set == std::vector<std::string>{"base:allocation"});
  h.opt_go();
  CHECK(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  int extents = 0;
  h.block_status(mib, 0, [&](std::string_view ctx, std::uint64_t, std::span<std::uint32_t>, int*) {
    CHECK(ctx == nbd::CONTEXT_BASE_ALLOCATION);
    ++extents;
    return 0;
  });
  CHECK(extents == 1);
}

TEST_CASE("opt_set_meta_context_queries chooses what GO uses") {
  nbd::Handle h;
  // Nothing added: the explicit query list is what counts.
  connect_opt(h, {"memory", "1M"});
  CHECK(h.opt_set_meta_context_queries({"nosuch:ctx"}, [](std::string_view) { return 0; }) == 0);
  h.opt_go();
  CHECK_FALSE(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));

  nbd::Handle h2;
  connect_opt(h2, {"memory", "1M"});
  CHECK(h2.opt_set_meta_context_queries({"base:allocation"}, [](std::string_view) { return 0; }) == 1);
  h2.opt_go();
  CHECK(h2.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
}

TEST_CASE("opt_structured_reply in option mode") {
  nbd::Handle h;
  h.set_request_structured_replies(false);
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  connect_opt(h, {"memory", "1M"});
  CHECK_FALSE(h.get_structured_replies_negotiated());
  // Meta contexts need structured replies first.
  CHECK(error_of([&] { h.opt_set_meta_context([](std::string_view) { return 0; }); }) == ENOTSUP);
  CHECK(h.opt_structured_reply());
  CHECK(h.get_structured_replies_negotiated());
  CHECK(h.opt_set_meta_context([](std::string_view) { return 0; }) == 1);
  h.opt_go();
  CHECK(h.get_structured_replies_negotiated());
  CHECK(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
}

TEST_CASE("opt_extended_headers: nbdkit 1.32 declines") {
  nbd::Handle h;
  h.set_request_extended_headers(false);
  connect_opt(h, {"memory", "1M"});
  CHECK_FALSE(h.opt_extended_headers());
  CHECK_FALSE(h.get_extended_headers_negotiated());
  CHECK(h.aio_is_negotiating());
  h.opt_go();
  CHECK(h.aio_is_ready());
}

TEST_CASE("aio_opt_* driven by the caller's poll loop") {
  Exports ex;
  nbd::Handle h;
  h.set_opt_mode(true);
  h.aio_connect_command(nbdtest::nbdkit(ex.args()));
  nbdtest::poll_loop(h, [&] { return !h.aio_is_connecting(); });
  REQUIRE(h.aio_is_negotiating());

  CallCounter c;
  int listed = 0;
  bool inside = true;
  h.aio_opt_list(
      [&](std::string_view, std::string_view) {
        CHECK_FALSE(inside);
        ++listed;
        return 0;
      },
      CountedCompletion(&c));
  inside = false;
  CHECK(c.calls == 0);
  // A second option while one is in progress is refused (libnbd: the
  // handle is connecting, so EINVAL); its callbacks are destroyed without
  // being called.
  CallCounter busy;
  CHECK(h.aio_is_connecting());
  CHECK(error_of([&] { h.aio_opt_info(CountedCompletion(&busy)); }) == EINVAL);
  CHECK(busy.calls == 0);
  CHECK(busy.destroyed == 1);

  nbdtest::poll_loop(h, [&] { return c.calls == 1; });
  CHECK(listed == 3);
  CHECK(c.errors.at(0) == 0);
  CHECK(c.destroyed == 1);
  CHECK(h.aio_is_negotiating());

  h.set_export_name("c");
  CallCounter info;
  h.aio_opt_info(CountedCompletion(&info));
  nbdtest::poll_loop(h, [&] { return info.calls == 1; });
  CHECK(info.errors.at(0) == 0);
  CHECK(h.get_size() == 3 * mib);

  // A failing option reports through the completion's *error.
  h.set_export_name("nosuch");
  CallCounter bad;
  h.aio_opt_go(CountedCompletion(&bad));
  nbdtest::poll_loop(h, [&] { return bad.calls == 1; });
  CHECK(bad.errors.at(0) != 0);
  CHECK(h.aio_is_negotiating());

  h.set_export_name("a");
  CallCounter go;
  h.aio_opt_go(CountedCompletion(&go));
  nbdtest::poll_loop(h, [&] { return go.calls == 1; });
  CHECK(go.errors.at(0) == 0);
  CHECK(go.destroyed == 1);
  CHECK(h.aio_is_ready());
  CHECK(h.get_size() == 1 * mib);
}

TEST_CASE("aio_opt_abort driven by poll") {
  nbd::Handle h;
  connect_opt(h, {"memory", "1M"});
  h.aio_opt_abort();
  nbdtest::poll_loop(h, [&] { return h.aio_is_closed(); });
  CHECK_FALSE(h.aio_is_dead());
}

TEST_CASE("option calls in the wrong state") {
  SUBCASE("before connecting: ENOTCONN") {
    nbd::Handle h;
    h.set_opt_mode(true);
    CHECK(error_of([&] { h.opt_go(); }) == ENOTCONN);
    CHECK(error_of([&] { h.opt_list([](std::string_view, std::string_view) { return 0; }); }) ==
          ENOTCONN);
    CHECK(error_of([&] { h.opt_info(); }) == ENOTCONN);
    CHECK(error_of([&] { h.opt_abort(); }) == ENOTCONN);
  }
  SUBCASE("when not in option mode (connected): EINVAL") {
    nbd::Handle h;
    nbdtest::connect(h, {"memory", "1M"});
    CHECK_FALSE(h.get_opt_mode());
    CHECK(error_of([&] { h.opt_go(); }) == EINVAL);
    CHECK(error_of([&] { h.opt_info(); }) == EINVAL);
    CHECK(error_of([&] { h.opt_abort(); }) == EINVAL);
    CHECK(error_of([&] { h.opt_structured_reply(); }) == EINVAL);
    CHECK(error_of([&] { h.opt_list([](std::string_view, std::string_view) { return 0; }); }) ==
          EINVAL);
    CHECK(error_of([&] { h.opt_list_meta_context([](std::string_view) { return 0; }); }) ==
          EINVAL);
    CallCounter c;
    CHECK(error_of([&] { h.aio_opt_go(CountedCompletion(&c)); }) == EINVAL);
    CHECK(c.calls == 0);
    CHECK(c.destroyed == 1);
    CHECK(h.aio_is_ready());
  }
  SUBCASE("commands while negotiating are refused (libnbd: EINVAL once connecting)") {
    nbd::Handle h;
    connect_opt(h, {"memory", "1M"});
    std::vector<std::uint8_t> buf(512);
    CHECK(error_of([&] { h.pread(buf, 0); }) == EINVAL);
    CHECK(error_of([&] { h.pwrite(buf, 0); }) == EINVAL);
    CHECK(error_of([&] { h.flush(); }) == EINVAL);
    CallCounter c;
    CHECK(error_of([&] { h.aio_pread(buf, 0, CountedCompletion(&c)); }) == EINVAL);
    CHECK(c.calls == 0);
    CHECK(c.destroyed == 1);
    CHECK(error_of([&] { h.aio_disconnect(); }) == EINVAL);
    CHECK(h.aio_is_negotiating());
    h.opt_go();
    h.pread(buf, 0);
  }
  SUBCASE("commands before connecting: ENOTCONN") {
    nbd::Handle h;
    std::vector<std::uint8_t> buf(512);
    CHECK(error_of([&] { h.pread(buf, 0); }) == ENOTCONN);
    CHECK(error_of([&] { h.aio_flush(); }) == ENOTCONN);
  }
}
