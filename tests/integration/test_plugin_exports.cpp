// SPDX-License-Identifier: BSD-3-Clause
// Export names, lists and descriptions as nbdkit's server/plugins.c serves
// them: plugin_list_exports (with nbdkit_use_default_export when the plugin
// has no list or no .list_exports), plugin_default_export (the name "" stands
// for), plugin_export_description (NBD_INFO_DESCRIPTION, sent when the
// client asks with set_full_info), and the canonical name (NBD_INFO_NAME).

#include "plugin_common.hpp"

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

using namespace ptest;

namespace {

using Listing = std::vector<std::pair<std::string, std::string>>;

/// opt_list in option mode; returns what the server listed (and checks the
/// count opt_list returns against it).
Listing list_exports(std::vector<std::string> params) {
  nbd::Handle h;
  h.set_opt_mode(true);
  connect(h, std::move(params));
  REQUIRE(h.aio_is_negotiating());
  Listing out;
  int n = h.opt_list([&](std::string_view name, std::string_view desc) {
    out.emplace_back(std::string(name), std::string(desc));
    return 0;
  });
  CHECK(n == static_cast<int>(out.size()));
  h.opt_abort();
  return out;
}

} // namespace

// --- plugin_export_description -------------------------------------------------------------

TEST_CASE("plugin: exports: plugin_export_description: the plugin's text, with set_full_info") {
  Log log;
  nbd::Handle h;
  h.set_full_info(true);
  connect(h, {"export_description=a test disk", log.param()});
  CHECK(h.get_export_description() == "a test disk");
  auto d = log.named("export_description");
  REQUIRE(d.size() >= 1);
  CHECK(d[0] == "export_description result=a%20test%20disk");
}

TEST_CASE("plugin: exports: plugin_export_description: from the export list entry") {
  nbd::Handle h;
  h.set_full_info(true);
  h.set_export_name("disk1");
  connect(h, {"export=disk0:first disk", "export=disk1:second disk"});
  CHECK(h.get_export_description() == "second disk");
}

TEST_CASE("plugin: exports: plugin_export_description: none without set_full_info") {
  // NBD_INFO_DESCRIPTION is only sent on request.
  nbd::Handle h;
  connect(h, {"export_description=hidden"});
  CHECK(errno_of([&] { (void)h.get_export_description(); }) == ENOTSUP);
}

TEST_CASE("plugin: exports: plugin_export_description: absent -> no description") {
  nbd::Handle h;
  h.set_full_info(true);
  connect(h, {"export_description=absent"});
  CHECK(errno_of([&] { (void)h.get_export_description(); }) == ENOTSUP);
  CHECK(h.aio_is_ready());
}

TEST_CASE("plugin: exports: plugin_export_description: NULL from the plugin -> no description") {
  // The callback exists but finds no list entry for the export: NULL.
  nbd::Handle h;
  h.set_full_info(true);
  connect(h, {});
  CHECK(errno_of([&] { (void)h.get_export_description(); }) == ENOTSUP);
}

TEST_CASE("plugin: exports: plugin_export_description: a failing callback only loses the text") {
  nbd::Handle h;
  h.set_full_info(true);
  connect(h, {"export_description=lost", "error=export_description:EIO"});
  CHECK(h.aio_is_ready());
  CHECK(errno_of([&] { (void)h.get_export_description(); }) == ENOTSUP);
}

TEST_CASE("plugin: exports: plugin_export_description: opt_info reports it before opt_go") {
  nbd::Handle h;
  h.set_opt_mode(true);
  h.set_full_info(true);
  h.set_export_name("b");
  connect(h, {"export=a:alpha", "export=b:beta", "size=64K"});
  h.opt_info();
  CHECK(h.get_export_description() == "beta");
  CHECK(h.get_size() == 65536);
  h.opt_go();
  CHECK(h.aio_is_ready());
  CHECK(h.get_export_description() == "beta");
}

// --- plugin_list_exports ---------------------------------------------------------------------

TEST_CASE("plugin: exports: plugin_list_exports: exports=N lists N generated exports") {
  Listing l = list_exports({"exports=3"});
  REQUIRE(l.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(l[i].first == "export" + std::to_string(i));
    CHECK(l[i].second == "test export " + std::to_string(i));
  }
}

TEST_CASE("plugin: exports: plugin_list_exports: export= entries, with and without description") {
  Listing l = list_exports({"export=alpha:the first", "export=beta"});
  REQUIRE(l.size() == 2);
  CHECK(l[0] == std::pair<std::string, std::string>{"alpha", "the first"});
  CHECK(l[1].first == "beta");
  CHECK(l[1].second.empty());
}

TEST_CASE("plugin: exports: plugin_list_exports: exports=0 is an empty list") {
  CHECK(list_exports({"exports=0"}).empty());
}

TEST_CASE("plugin: exports: plugin_list_exports: no list -> nbdkit_use_default_export") {
  Listing l = list_exports({"default_export=the-default"});
  REQUIRE(l.size() == 1);
  CHECK(l[0].first == "the-default");
}

TEST_CASE("plugin: exports: plugin_list_exports: absent -> the default export") {
  Listing l = list_exports({"list_exports=absent", "default_export=dflt"});
  REQUIRE(l.size() == 1);
  CHECK(l[0].first == "dflt");
}

TEST_CASE("plugin: exports: plugin_list_exports: a failing list_exports fails opt_list") {
  nbd::Handle h;
  h.set_opt_mode(true);
  connect(h, {"exports=2", "error=list_exports:EIO"});
  int calls = 0;
  int e = errno_of([&] {
    h.opt_list([&](std::string_view, std::string_view) {
      ++calls;
      return 0;
    });
  });
  CHECK(e != 0);
  CHECK(calls == 0);
  // The server is still negotiating: the connection survives the error.
  CHECK(h.aio_is_negotiating());
  h.opt_go();
  CHECK(h.aio_is_ready());
}

TEST_CASE("plugin: exports: plugin_list_exports: opt_list then opt_go to a listed export") {
  Log log;
  nbd::Handle h;
  h.set_opt_mode(true);
  connect(h, {"exports=2", "exports_strict=true", log.param()});
  std::vector<std::string> names;
  h.opt_list([&](std::string_view n, std::string_view) {
    names.emplace_back(n);
    return 0;
  });
  REQUIRE(names.size() == 2);
  h.set_export_name(names[1]);
  h.opt_go();
  CHECK(h.aio_is_ready());
  auto opens = log.named("open");
  REQUIRE(opens.size() == 1);
  CHECK(opens[0] == "open readonly=0 export=export1 result=ok");
}

// --- plugin_default_export and the canonical name -----------------------------------------------

TEST_CASE("plugin: exports: plugin_default_export: \"\" resolves to the default name") {
  Log log;
  nbd::Handle h;
  h.set_full_info(true);
  connect(h, {"default_export=main", log.param()});
  CHECK(h.get_canonical_export_name() == "main");
  auto opens = log.named("open");
  REQUIRE(opens.size() == 1);
  CHECK(opens[0] == "open readonly=0 export=main result=ok");
}

TEST_CASE("plugin: exports: plugin_default_export: absent -> \"\"") {
  nbd::Handle h;
  h.set_full_info(true);
  connect(h, {"default_export=absent"});
  CHECK(h.get_canonical_export_name().empty());
}

TEST_CASE("plugin: exports: plugin_default_export: a named export keeps its name") {
  nbd::Handle h;
  h.set_full_info(true);
  h.set_export_name("other");
  connect(h, {"default_export=main"});
  CHECK(h.get_canonical_export_name() == "other");
}

TEST_CASE("plugin: exports: plugin_default_export: a failing default_export refuses \"\"") {
  nbd::Handle h;
  CHECK(errno_of([&] { connect(h, {"error=default_export:EIO"}); }) == ENOENT);
  CHECK_FALSE(h.aio_is_ready());
}

TEST_CASE("plugin: exports: plugin_open: exports_strict refuses an unknown export name") {
  nbd::Handle h;
  h.set_export_name("nope");
  CHECK(errno_of([&] { connect(h, {"export=yes", "exports_strict=true"}); }) == ENOENT);
  nbd::Handle ok;
  ok.set_export_name("yes");
  connect(ok, {"export=yes", "exports_strict=true"});
  CHECK(ok.aio_is_ready());
}

TEST_CASE("plugin: exports: option mode: a refused opt_go can be retried with another name") {
  nbd::Handle h;
  h.set_opt_mode(true);
  h.set_full_info(true);
  h.set_export_name("missing");
  connect(h, {"export=present:here", "exports_strict=true"});
  CHECK(errno_of([&] { h.opt_go(); }) == ENOENT);
  REQUIRE(h.aio_is_negotiating());
  h.set_export_name("present");
  h.opt_go();
  CHECK(h.aio_is_ready());
  CHECK(h.get_canonical_export_name() == "present");
  CHECK(h.get_export_description() == "here");
}

TEST_CASE("plugin: exports: export names reach the plugin byte for byte") {
  Log log;
  nbd::Handle h;
  h.set_export_name("a b%c=d/\xc3\xa9");
  connect(h, {log.param()});
  auto opens = log.named("open");
  REQUIRE(opens.size() == 1);
  CHECK(opens[0] == "open readonly=0 export=a%20b%25c%3Dd/%C3%A9 result=ok");
}
