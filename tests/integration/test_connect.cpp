// SPDX-License-Identifier: BSD-3-Clause
// Every connect form, blocking and aio_, against a real nbdkit.

#include "harness.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

using nbdtest::error_of;

namespace {

constexpr std::int64_t one_mib = 1024 * 1024;

// A connected handle is ready, knows its export and moves data.
void check_ready(nbd::Handle& h, std::int64_t size = one_mib) {
  CHECK(h.aio_is_ready());
  CHECK_FALSE(h.aio_is_connecting());
  CHECK_FALSE(h.aio_is_created());
  CHECK(h.get_size() == size);
  CHECK(h.get_transport_name() == nbdtest::expected_transport());
  std::vector<std::uint8_t> w(4096, 0x5a), r(4096, 0);
  if (!h.is_read_only()) {
    h.pwrite(w, 8192);
    h.pread(r, 8192);
    CHECK(r == w);
  } else {
    h.pread(r, 0);
  }
}

// An export directory whose files differ in size, so get_size() proves
// which export the server opened.
struct Exports {
  nbdtest::TempDir dir;
  Exports() {
    nbdtest::make_file(dir.file("a"), 1 * one_mib);
    nbdtest::make_file(dir.file("b"), 2 * one_mib);
    nbdtest::make_file(dir.file("c"), 3 * one_mib);
  }
  std::string arg() const { return "dir=" + dir.path(); }
};

void aio_wait_connected(nbd::Handle& h) {
  nbdtest::poll_loop(h, [&] { return !h.aio_is_connecting(); });
}

// A unix socket connected to srv by hand, for connect_socket.
int connect_by_hand(const nbdtest::Server& srv) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(s >= 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  REQUIRE(srv.socket().size() < sizeof a.sun_path);
  std::memcpy(a.sun_path, srv.socket().c_str(), srv.socket().size() + 1);
  REQUIRE(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return s;
}

} // namespace

TEST_CASE("connect_command") {
  nbd::Handle h;
  CHECK(h.aio_is_created());
  CHECK(h.get_transport_name().empty());
  nbdtest::connect(h, {"memory", "1M"});
  check_ready(h);
  CHECK(h.get_subprocess_pid() > 0);
  h.shutdown();
  CHECK(h.aio_is_closed());
}

TEST_CASE("aio_connect_command driven by poll()") {
  nbd::Handle h;
  h.aio_connect_command(nbdtest::nbdkit({"memory", "1M"}));
  // The handshake cannot be done yet: nothing has been driven.
  CHECK(h.aio_is_connecting());
  aio_wait_connected(h);
  check_ready(h);
}

TEST_CASE("connect_unix and aio_connect_unix") {
  nbdtest::Server srv({"memory", "1M"});
  SUBCASE("blocking") {
    nbd::Handle h;
    h.connect_unix(srv.socket());
    check_ready(h);
  }
  SUBCASE("aio") {
    nbd::Handle h;
    h.aio_connect_unix(srv.socket());
    aio_wait_connected(h);
    check_ready(h);
  }
}

TEST_CASE("connect_tcp and aio_connect_tcp") {
  nbdtest::Server srv({"memory", "1M"}, true);
  SUBCASE("blocking") {
    nbd::Handle h;
    h.connect_tcp("127.0.0.1", srv.port());
    check_ready(h);
  }
  SUBCASE("aio") {
    nbd::Handle h;
    h.aio_connect_tcp("127.0.0.1", srv.port());
    aio_wait_connected(h);
    check_ready(h);
  }
}

TEST_CASE("connect_uri nbd+unix:// with socket= and the export name from the path") {
  Exports ex;
  nbdtest::Server srv({"file", ex.arg()});
  SUBCASE("blocking") {
    nbd::Handle h;
    h.connect_uri(srv.uri("b"));
    CHECK(h.get_export_name() == "b");
    check_ready(h, 2 * one_mib);
  }
  SUBCASE("aio") {
    nbd::Handle h;
    h.aio_connect_uri(srv.uri("c"));
    aio_wait_connected(h);
    CHECK(h.get_export_name() == "c");
    check_ready(h, 3 * one_mib);
  }
}

TEST_CASE("connect_uri nbd://127.0.0.1:PORT/export over TCP") {
  Exports ex;
  nbdtest::Server srv({"file", ex.arg()}, true);
  SUBCASE("blocking") {
    nbd::Handle h;
    h.connect_uri("nbd://127.0.0.1:" + srv.port() + "/c");
    CHECK(h.get_export_name() == "c");
    check_ready(h, 3 * one_mib);
  }
  SUBCASE("aio") {
    nbd::Handle h;
    h.aio_connect_uri("nbd://127.0.0.1:" + srv.port() + "/a");
    aio_wait_connected(h);
    CHECK(h.get_export_name() == "a");
    check_ready(h, 1 * one_mib);
  }
}

TEST_CASE("connect_uri nbds:// to a server without TLS is a clear ENOTSUP, never plaintext") {
  // With TLS built in, the server refuses STARTTLS; without it, nbdcpp
  // refuses the URI before connecting. ENOTSUP naming TLS either way.
  nbdtest::Server srv({"memory", "1M"}, true);
  nbd::Handle h;
  try {
    h.connect_uri("nbds://127.0.0.1:" + srv.port() + "/");
    FAIL("nbds:// connected in plaintext");
  } catch (const nbd::Error& e) {
    CHECK(e.errnum() == ENOTSUP);
    CHECK(std::string(e.what()).find("TLS") != std::string::npos);
  }
  CHECK(h.aio_is_dead());
  nbd::Handle h2;
  CHECK(error_of([&] { h2.aio_connect_uri("nbds+unix:///?socket=/nonexistent"); }) ==
        (nbd::Handle::supports_tls() ? ENOENT : ENOTSUP));
}

TEST_CASE("connect_systemd_socket_activation and its aio_ form") {
  // Without -s: nbdkit picks up LISTEN_FDS and serves the activated socket.
  std::vector<std::string> argv{"nbdkit", "--exit-with-parent", "memory", "1M"};
  SUBCASE("blocking") {
    nbd::Handle h;
    h.connect_systemd_socket_activation(argv);
    CHECK(h.get_subprocess_pid() > 0);
    check_ready(h);
    h.shutdown();
  }
  SUBCASE("aio") {
    nbd::Handle h;
    h.aio_connect_systemd_socket_activation(argv);
    aio_wait_connected(h);
    check_ready(h);
  }
}

TEST_CASE("connect_socket with a connected unix socket") {
  nbdtest::Server srv({"memory", "1M"});
  int s = connect_by_hand(srv);
  {
    nbd::Handle h;
    h.connect_socket(s);
    check_ready(h);
    h.shutdown();
  }
  // The fd stays the caller's: the handle used a duplicate.
  CHECK(::fcntl(s, F_GETFD) != -1);
  ::close(s);
}

TEST_CASE("aio_connect_socket with one end of a socketpair") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  pid_t pid = nbdtest::spawn_nbdkit_on_fd(sv[1], {"memory", "1M"});
  ::close(sv[1]);
  {
    nbd::Handle h;
    h.aio_connect_socket(sv[0]);
    aio_wait_connected(h);
    check_ready(h);
    h.shutdown();
    CHECK(h.aio_is_closed());
  }
  ::close(sv[0]);
  nbdtest::reap(pid);
}

TEST_CASE("connect_socket with a bad fd is EBADF") {
  nbd::Handle h;
  CHECK(error_of([&] { h.connect_socket(-1); }) == EBADF);
}

TEST_CASE("connecting to a missing unix socket is ENOENT, and the handle is dead") {
  nbdtest::TempDir dir;
  SUBCASE("blocking") {
    nbd::Handle h;
    CHECK(error_of([&] { h.connect_unix(dir.file("nosuch.sock")); }) == ENOENT);
    CHECK(h.aio_is_dead());
    CHECK(h.get_error().value() == ENOENT);
    CHECK_FALSE(h.get_error_message().empty());
  }
  SUBCASE("aio") {
    nbd::Handle h;
    int err = error_of([&] {
      h.aio_connect_unix(dir.file("nosuch.sock"));
      aio_wait_connected(h);
    });
    CHECK(err == ENOENT);
    CHECK(h.aio_is_dead());
  }
  SUBCASE("uri") {
    nbd::Handle h;
    CHECK(error_of([&] { h.connect_uri("nbd+unix:///?socket=" + dir.file("nosuch.sock")); }) == ENOENT);
    CHECK(h.aio_is_dead());
  }
}

TEST_CASE("connecting to a closed TCP port is ECONNREFUSED") {
  std::string port = nbdtest::unused_tcp_port();
  SUBCASE("blocking") {
    nbd::Handle h;
    CHECK(error_of([&] { h.connect_tcp("127.0.0.1", port); }) == ECONNREFUSED);
    CHECK(h.aio_is_dead());
  }
  SUBCASE("aio") {
    nbd::Handle h;
    // A non-blocking connect to loopback may fail at once or on the first
    // notify: either way the errno is the connect's.
    int err = error_of([&] {
      h.aio_connect_tcp("127.0.0.1", port);
      aio_wait_connected(h);
    });
    CHECK(err == ECONNREFUSED);
    CHECK(h.aio_is_dead());
    CHECK_FALSE(h.aio_is_connecting());
  }
  SUBCASE("uri") {
    nbd::Handle h;
    CHECK(error_of([&] { h.connect_uri("nbd://127.0.0.1:" + port + "/"); }) == ECONNREFUSED);
  }
}

TEST_CASE("a command that is not an NBD server fails the connect") {
  nbd::Handle h;
  int err = error_of([&] { h.connect_command({"/nonexistent/nbd-server-binary"}); });
  CHECK(err != 0);
  CHECK(h.aio_is_dead());
}

TEST_CASE("connecting twice is EINVAL") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "1M"});
  CHECK(error_of([&] { nbdtest::connect(h, {"memory", "1M"}); }) == EINVAL);
  CHECK(error_of([&] { h.aio_connect_command(nbdtest::nbdkit({"memory", "1M"})); }) == EINVAL);
  CHECK(error_of([&] { h.connect_unix("/nonexistent"); }) == EINVAL);
  CHECK(error_of([&] { h.connect_tcp("127.0.0.1", "1"); }) == EINVAL);
  CHECK(error_of([&] { h.connect_uri("nbd://127.0.0.1:1/"); }) == EINVAL);
  CHECK(error_of([&] { h.connect_socket(0); }) == EINVAL);
  CHECK(error_of([&] { h.connect_systemd_socket_activation({"nbdkit", "memory", "1M"}); }) == EINVAL);
  // The first connection is unharmed.
  check_ready(h);

  SUBCASE("also while the first connect is still in progress") {
    nbd::Handle h2;
    h2.aio_connect_command(nbdtest::nbdkit({"memory", "1M"}));
    CHECK(error_of([&] { h2.aio_connect_command(nbdtest::nbdkit({"memory", "1M"})); }) == EINVAL);
    aio_wait_connected(h2);
    check_ready(h2);
  }
  SUBCASE("and after a failed connect") {
    nbd::Handle h3;
    CHECK(error_of([&] { h3.connect_unix("/nonexistent/sock"); }) == ENOENT);
    CHECK(error_of([&] { nbdtest::connect(h3, {"memory", "1M"}); }) == EINVAL);
  }
}

TEST_CASE("settings are refused once connected") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "1M"});
  CHECK(error_of([&] { h.set_opt_mode(true); }) == EINVAL);
  CHECK(error_of([&] { h.set_request_structured_replies(false); }) == EINVAL);
  CHECK(error_of([&] { h.set_handshake_flags(0); }) == EINVAL);
  CHECK(error_of([&] { h.set_export_name("x"); }) == EINVAL);
}

TEST_CASE("kill_subprocess ends the server of connect_command") {
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "1M"});
  // SIGKILL, not SIGTERM: nbdkit -s may sit in a blocking read of the next
  // request and never act on SIGTERM while the client stays idle.
  h.kill_subprocess(SIGKILL);
  // The server's end closes: the handle sees EOF and dies.
  while (!h.aio_is_dead()) h.poll(-1);
  CHECK(h.get_error());
  std::vector<std::uint8_t> buf(512);
  CHECK(error_of([&] { h.pread(buf, 0); }) == EINVAL);
}
