// SPDX-License-Identifier: BSD-3-Clause
// TLS against nbdkit (--tls=require / --tls=on, with X.509 certificates or
// PSK), on the transport NBDCPP_TRANSPORT names: negotiation, data
// integrity with many requests in flight, URIs, option mode, ALLOW's
// fallback, and every way the handshake can fail. The credentials come
// from tls_fixtures (certtool, psktool); without those tools, or without
// TLS in nbdkit or nbdcpp, the cases that need them are skipped visibly.

#include "harness.hpp"
#include "tls_fixtures.hpp"

#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using nbdtest::CallCounter;
using nbdtest::CountedCompletion;
using nbdtest::error_of;
using nbdtest::Failure;
using nbdtest::failure_of;

namespace {

namespace tls = nbdtest::tls;
using Bytes = std::vector<std::uint8_t>;

constexpr std::uint64_t kib = 1024, mib = 1024 * kib;

// --- servers and client set-ups ----------------------------------------------

std::vector<std::string> cert_server(const std::string& dir, std::vector<std::string> extra = {},
                                     std::string size = "1M") {
  std::vector<std::string> a{"--tls=require", "--tls-certificates=" + dir};
  a.insert(a.end(), extra.begin(), extra.end());
  a.insert(a.end(), {"memory", size});
  return a;
}

std::vector<std::string> psk_server(const std::string& file, std::string size = "1M") {
  return {"--tls=require", "--tls-psk=" + file, "memory", size};
}

using tls::use_certs;
using tls::use_psk;

// h in option mode with PSK credentials, connected to nbdkit ARGS: still
// negotiating.
void connect_opt_mode(nbd::Handle& h, const std::string& psk_file, const std::string& user, int mode,
                      const std::vector<std::string>& args) {
  h.set_opt_mode(true);
  use_psk(h, psk_file, user, mode);
  nbdtest::connect(h, args);
  REQUIRE(h.aio_is_negotiating());
}

// --- errors ------------------------------------------------------------------------

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool mentions(const std::string& text, std::initializer_list<const char*> any_of) {
  const std::string t = lower(text);
  return std::any_of(any_of.begin(), any_of.end(), [&](const char* w) { return t.find(lower(w)) != std::string::npos; });
}

// A handle whose connection failed: dead, keeping the error, refusing
// commands and polls.
void check_dead(nbd::Handle& h, const Failure& f) {
  CHECK(h.aio_is_dead());
  CHECK_FALSE(h.aio_is_ready());
  CHECK_FALSE(h.aio_is_negotiating());
  CHECK(h.get_error().value() == f.err);
  Bytes b(512);
  const int e = error_of([&] { h.aio_pread(b, 0); });
  CHECK((e == EINVAL || e == ENOTCONN));
  CHECK(error_of([&] { h.poll(0); }) == EINVAL);
}

// Connects to nbdkit ARGS with a handle set up by setup, expecting the
// connection to fail: once with the blocking connect_command and once with
// aio_connect_command driven by the test's own poll loop. Both must fail,
// with the same errno, and leave the handle dead. Returns the first.
Failure connect_fails(const std::function<void(nbd::Handle&)>& setup, const std::vector<std::string>& args) {
  Failure f;
  {
    nbd::Handle h;
    setup(h);
    f = failure_of([&] { nbdtest::connect(h, args); });
    REQUIRE_MESSAGE(f.err != 0, "the connection succeeded");
    check_dead(h, f);
    CHECK_FALSE(h.get_error_message().empty());
  }
  {
    nbd::Handle h;
    setup(h);
    h.aio_connect_command(nbdtest::nbdkit(args));
    int rounds = 0;
    while (h.aio_is_connecting()) {
      REQUIRE_MESSAGE(++rounds < 60, "aio connect: neither connected nor failed after 60 s");
      (void)error_of([&] { h.poll(1000); });
    }
    CHECK(h.aio_is_dead());
    CHECK(h.get_error().value() == f.err);
    check_dead(h, {h.get_error().value(), {}});
  }
  return f;
}

// connect_fails, with the handshake's EIO and a message that mentions one
// of words.
void handshake_fails(const std::function<void(nbd::Handle&)>& setup, const std::vector<std::string>& args,
                     std::initializer_list<const char*> words) {
  const Failure fl = connect_fails(setup, args);
  CHECK_MESSAGE(fl.err == EIO, fl.what);
  CHECK_MESSAGE(mentions(fl.what, words), fl.what);
}

// --- data ----------------------------------------------------------------------------

Bytes random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes v(n);
  for (std::size_t i = 0; i < n; i += 4) {
    std::uint32_t x = rng();
    std::memcpy(v.data() + i, &x, std::min<std::size_t>(4, n - i));
  }
  return v;
}

// A small write and read back: the connection carries data.
void check_io(nbd::Handle& h) {
  CHECK(h.get_transport_name() == nbdtest::expected_transport());
  const Bytes w = random_bytes(64 * kib + 3, 7);
  Bytes r(w.size(), 0);
  h.pwrite(w, 4097);
  h.pread(r, 4097);
  CHECK(r == w);
}

// The connection negotiated TLS, and carries data.
void check_tls_io(nbd::Handle& h) {
  CHECK(h.get_tls_negotiated());
  check_io(h);
}

// The same, and the host name the server's certificate was checked against.
void check_tls_io(nbd::Handle& h, const std::string& hostname) {
  CHECK(h.get_tls_negotiated());
  CHECK(h.get_tls_hostname() == hostname);
  check_io(h);
}

enum class Drive { handle_poll, own_loop };

void drive(nbd::Handle& h, Drive d, const std::function<bool()>& done) {
  if (d == Drive::own_loop) {
    nbdtest::poll_loop(h, done);
    return;
  }
  while (!done()) h.poll(-1);
}

// Counts completions, keeping the errors (*error != 0) they saw.
struct Completions {
  int done = 0;
  std::vector<int> errors;
  auto callback() {
    return [this](int* e) {
      ++done;
      if (*e != 0) errors.push_back(*e);
      return 1;
    };
  }
};

struct Region {
  std::uint64_t off;
  Bytes data;
};

// Writes every region at once, then reads them all back at once; checks
// the count in flight, every completion and every byte.
void write_then_read(nbd::Handle& h, Drive d, const std::vector<Region>& regions) {
  const int n = static_cast<int>(regions.size());
  Completions c;
  auto cb = c.callback();
  for (const auto& r : regions) h.aio_pwrite(r.data, r.off, cb);
  CHECK(h.aio_in_flight() == regions.size());
  drive(h, d, [&] { return c.done == n; });
  std::vector<Bytes> back;
  for (const auto& r : regions) back.emplace_back(r.data.size(), 0xee);
  for (std::size_t i = 0; i < regions.size(); ++i) h.aio_pread(back[i], regions[i].off, cb);
  CHECK(h.aio_in_flight() == regions.size());
  drive(h, d, [&] { return c.done == 2 * n; });
  CHECK(c.errors.empty());
  int mismatches = 0;
  for (std::size_t i = 0; i < regions.size(); ++i) mismatches += back[i] != regions[i].data;
  CHECK(mismatches == 0);
  CHECK(h.aio_in_flight() == 0);
}

// Data integrity over an encrypted connection to nbdkit memory 64M: 64
// writes of distinct patterns and sizes in flight, then 64 reads; reads of
// old regions interleaved with writes of new ones; 1-4 MiB requests, each
// many TLS records long.
void integrity(nbd::Handle& h, Drive d) {
  REQUIRE(h.get_tls_negotiated());
  REQUIRE(h.get_size() == static_cast<std::int64_t>(64 * mib));

  std::vector<Region> small;
  for (std::uint32_t i = 0; i < 64; ++i) {
    const std::size_t len = 512 + (i * 7919u) % (192 * kib);
    small.push_back({i * 256 * kib + (i % 7) * 512 + i, random_bytes(len, i + 1)});
  }
  write_then_read(h, d, small);

  // 32 reads of those regions and 32 writes elsewhere, alternating, all in
  // flight together.
  {
    std::vector<Region> fresh;
    std::vector<Bytes> back;
    for (std::uint32_t i = 0; i < 32; ++i) {
      fresh.push_back({16 * mib + i * 128 * kib + i * 3, random_bytes(100 * kib + i, 1000 + i)});
      back.emplace_back(small[2 * i].data.size(), 0);
    }
    Completions c;
    auto cb = c.callback();
    for (std::size_t i = 0; i < 32; ++i) {
      h.aio_pread(back[i], small[2 * i].off, cb);
      h.aio_pwrite(fresh[i].data, fresh[i].off, cb);
    }
    CHECK(h.aio_in_flight() == 64);
    drive(h, d, [&] { return c.done == 64; });
    CHECK(c.errors.empty());
    int mismatches = 0;
    for (std::size_t i = 0; i < 32; ++i) mismatches += back[i] != small[2 * i].data;
    CHECK(mismatches == 0);
    for (const auto& r : fresh) {
      Bytes b(r.data.size());
      h.pread(b, r.off);
      mismatches += b != r.data;
    }
    CHECK(mismatches == 0);
  }

  // Large requests, unaligned, in flight together.
  write_then_read(h, d,
                  {{32 * mib, random_bytes(4 * mib, 100)},
                   {40 * mib + 3, random_bytes(1 * mib + 1, 101)},
                   {48 * mib + 4097, random_bytes(3 * mib + 12345, 102)},
                   {56 * mib, random_bytes(2 * mib, 103)}});

  // And a blocking 4 MiB round trip.
  const Bytes big = random_bytes(4 * mib, 104);
  Bytes back(big.size(), 0);
  h.pwrite(big, 60 * mib - 1);
  h.pread(back, 60 * mib - 1);
  CHECK(back == big);
}

// --- a man in the middle ------------------------------------------------------

// nbdkit -s on one socketpair, the client's socket on another, and two
// threads copying bytes between them, recording each direction: what an
// observer on the wire sees. Destroy (or at least disconnect) the client
// before calling finish().
class Relay {
public:
  explicit Relay(std::vector<std::string> nbdkit_args) {
    int c[2], s[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c) == 0);
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) == 0);
    client_fd_ = c[0];
    near_client_ = c[1];
    near_server_ = s[0];
    pid_ = nbdtest::spawn_nbdkit_on_fd(s[1], std::move(nbdkit_args));
    ::close(s[1]);
    up_ = std::thread(pump, near_client_, near_server_, &to_server_);
    down_ = std::thread(pump, near_server_, near_client_, &to_client_);
  }
  ~Relay() {
    if (client_fd_ >= 0) ::close(client_fd_);
    ::shutdown(near_client_, SHUT_RDWR);
    ::shutdown(near_server_, SHUT_RDWR);
    join();
    ::close(near_client_);
    ::close(near_server_);
    nbdtest::reap(pid_);
  }
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  /// The client's end, for connect_socket (which duplicates it).
  int client_fd() const { return client_fd_; }
  /// Closes the test's copy of the client's end (the handle has its own).
  void close_client_fd() {
    ::close(client_fd_);
    client_fd_ = -1;
  }
  /// Waits for both directions to end (the client closed its socket).
  void finish() { join(); }
  const Bytes& to_server() const { return to_server_; }
  const Bytes& to_client() const { return to_client_; }

private:
  static void pump(int from, int to, Bytes* log) {
    Bytes buf(64 * kib);
    for (;;) {
      ssize_t n = ::read(from, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      log->insert(log->end(), buf.begin(), buf.begin() + n);
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::send(to, buf.data() + off, static_cast<std::size_t>(n - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          ::shutdown(to, SHUT_WR);
          return;
        }
        off += w;
      }
    }
    ::shutdown(to, SHUT_WR);
  }
  void join() {
    if (up_.joinable()) up_.join();
    if (down_.joinable()) down_.join();
  }

  int client_fd_ = -1, near_client_ = -1, near_server_ = -1;
  pid_t pid_ = -1;
  Bytes to_server_, to_client_;
  std::thread up_, down_;
};

bool contains(const Bytes& haystack, const std::string& needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) != haystack.end();
}

std::uint64_t be(const Bytes& b, std::size_t at, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = v << 8 | b.at(at + i);
  return v;
}
std::uint64_t be64(const Bytes& b, std::size_t at) { return be(b, at, 8); }
std::uint32_t be32(const Bytes& b, std::size_t at) { return static_cast<std::uint32_t>(be(b, at, 4)); }

constexpr std::uint64_t ihaveopt = 0x49484156454F5054ull;
constexpr std::uint32_t opt_abort = 2, opt_starttls = 5;

} // namespace

// --- settings ----------------------------------------------------------------------------

TEST_CASE("tls: settings, their defaults and argument checks") {
  // meson says whether it found GnuTLS; the library must agree.
  CHECK(nbd::Handle::supports_tls() == static_cast<bool>(NBDCPP_TEST_HAVE_GNUTLS));
  nbd::Handle h;
  CHECK(h.get_tls() == nbd::TLS_DISABLE);
  CHECK(h.get_tls_verify_peer());
  CHECK_FALSE(h.get_uri_allow_local_file());
  CHECK(h.get_tls_hostname().empty());
  CHECK(error_of([&] { (void)h.get_tls_negotiated(); }) == ENOTCONN);
  CHECK(error_of([&] { h.set_tls(3); }) == EINVAL);
  CHECK(error_of([&] { h.set_tls(-1); }) == EINVAL);
  CHECK(h.get_tls() == nbd::TLS_DISABLE);
  if (!nbd::Handle::supports_tls()) {
    CHECK(error_of([&] { h.set_tls(nbd::TLS_ALLOW); }) == ENOTSUP);
    CHECK(error_of([&] { h.set_tls(nbd::TLS_REQUIRE); }) == ENOTSUP);
    CHECK(h.get_tls() == nbd::TLS_DISABLE);
    return;
  }
  h.set_tls(nbd::TLS_ALLOW);
  CHECK(h.get_tls() == nbd::TLS_ALLOW);
  h.set_tls(nbd::TLS_REQUIRE);
  CHECK(h.get_tls() == nbd::TLS_REQUIRE);
  h.set_tls(nbd::TLS_DISABLE);
  CHECK(h.get_tls() == nbd::TLS_DISABLE);
  h.set_tls_verify_peer(false);
  CHECK_FALSE(h.get_tls_verify_peer());
  h.set_tls_username("alice");
  CHECK(h.get_tls_username() == "alice");
  h.set_tls_hostname("nbd.example.com");
  CHECK(h.get_tls_hostname() == "nbd.example.com");
  h.set_uri_allow_local_file(true);
  CHECK(h.get_uri_allow_local_file());
  h.set_tls_certificates("/nonexistent/dir"); // only stored: nothing is read yet
  h.set_tls_psk_file("/nonexistent/keys.psk");

  // After connecting (in plaintext), TLS can no longer be changed.
  nbdtest::connect(h, {"memory", "1M"});
  CHECK_FALSE(h.get_tls_negotiated());
  CHECK(error_of([&] { h.set_tls(nbd::TLS_REQUIRE); }) == EINVAL);
  CHECK(error_of([&] { h.set_tls_certificates("/tmp"); }) == EINVAL);
  CHECK(error_of([&] { h.set_tls_psk_file("/tmp/x"); }) == EINVAL);
  CHECK(error_of([&] { h.set_tls_username("bob"); }) == EINVAL);
  CHECK(error_of([&] { h.set_tls_verify_peer(true); }) == EINVAL);
  CHECK(h.get_tls() == nbd::TLS_DISABLE);
  CHECK(h.get_tls_username() == "alice");
}

// --- connecting -------------------------------------------------------------------------

TEST_CASE("tls: X.509 certificates through connect_command (no host name: the chain is checked)" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  nbd::Handle h;
  use_certs(h, f.client_dir);
  nbdtest::connect(h, cert_server(f.server_dir));
  CHECK(h.aio_is_ready());
  CHECK(h.get_tls_negotiated());
  CHECK(h.get_tls_hostname().empty());
  CHECK(h.get_protocol() == "newstyle-fixed");
  CHECK(h.get_structured_replies_negotiated());
  CHECK(h.get_size() == static_cast<std::int64_t>(1 * mib));
  check_io(h);
  h.shutdown();
  CHECK(h.aio_is_closed());
}

TEST_CASE("tls: X.509 over TCP: nbds://localhost:PORT checks the host name, client certificate sent" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  // --tls-verify-peer: nbdkit insists on a client certificate from its CA.
  nbdtest::Server srv(cert_server(f.server_dir, {"--tls-verify-peer"}), true);
  const std::string port = srv.port();

  SUBCASE("nbds://localhost URI with tls-certificates=") {
    nbd::Handle h;
    h.set_uri_allow_local_file(true);
    h.connect_uri("nbds://localhost:" + port + "/?tls-certificates=" + f.client_dir);
    CHECK(h.get_tls() == nbd::TLS_REQUIRE);
    check_tls_io(h, "localhost");
    h.shutdown();
  }
  SUBCASE("nbds://127.0.0.1: the certificate's IP address matches") {
    nbd::Handle h;
    h.set_uri_allow_local_file(true);
    h.connect_uri("nbds://127.0.0.1:" + port + "/?tls-certificates=" + f.client_dir);
    check_tls_io(h);
  }
  SUBCASE("connect_tcp(localhost) with TLS_REQUIRE") {
    nbd::Handle h;
    use_certs(h, f.client_dir);
    h.connect_tcp("localhost", port);
    check_tls_io(h, "localhost");
  }
  SUBCASE("set_tls_hostname(localhost) on a TCP connection by address") {
    nbd::Handle h;
    use_certs(h, f.client_dir);
    h.set_tls_hostname("localhost");
    h.connect_tcp("127.0.0.1", port);
    check_tls_io(h, "localhost");
  }
  SUBCASE("a host name the certificate does not carry fails, EIO, naming the cause") {
    nbd::Handle h;
    use_certs(h, f.client_dir);
    h.set_tls_hostname("wrong.example");
    const Failure fl = failure_of([&] { h.connect_tcp("localhost", port); });
    CHECK_MESSAGE(fl.err == EIO, fl.what);
    CHECK_MESSAGE(mentions(fl.what, {"certificate", "host", "name", "verif"}), fl.what);
    check_dead(h, fl);
  }
  SUBCASE("the same host name in a URI (tls-hostname=) fails the same way") {
    nbd::Handle h;
    h.set_uri_allow_local_file(true);
    const Failure fl = failure_of([&] {
      h.connect_uri("nbds://127.0.0.1:" + port + "/?tls-hostname=wrong.example&tls-certificates=" + f.client_dir);
    });
    CHECK_MESSAGE(fl.err == EIO, fl.what);
    check_dead(h, fl);
  }
  SUBCASE("set_tls_verify_peer(false) accepts the wrong name and an unknown CA") {
    nbd::Handle h;
    h.set_tls(nbd::TLS_REQUIRE);
    // The client certificate is still needed by the server; the client
    // itself trusts nothing it can check.
    h.set_tls_certificates(f.client_dir);
    h.set_tls_hostname("wrong.example");
    h.set_tls_verify_peer(false);
    h.connect_tcp("localhost", port);
    check_tls_io(h);
  }
}

TEST_CASE("tls: PSK through connect_command and over a unix socket" * NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  SUBCASE("connect_command") {
    nbd::Handle h;
    use_psk(h, f.psk_file, f.psk_username);
    nbdtest::connect(h, psk_server(f.psk_file));
    CHECK(h.get_tls_negotiated());
    CHECK(h.get_tls_username() == "alice");
    check_io(h);
    h.shutdown();
    CHECK(h.aio_is_closed());
  }
  SUBCASE("connect_unix") {
    nbdtest::Server srv(psk_server(f.psk_file));
    nbd::Handle h;
    use_psk(h, f.psk_file, f.psk_username);
    h.connect_unix(srv.socket());
    check_tls_io(h);
    h.shutdown();
  }
  SUBCASE("aio_connect_command, driven by the test's poll loop") {
    nbd::Handle h;
    use_psk(h, f.psk_file, f.psk_username);
    h.aio_connect_command(nbdtest::nbdkit(psk_server(f.psk_file)));
    nbdtest::poll_loop(h, [&] { return !h.aio_is_connecting(); });
    REQUIRE(h.aio_is_ready());
    check_tls_io(h);
  }
}

TEST_CASE("tls: the bytes on the wire are encrypted (a recording relay)" * NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  const std::string marker = "nbdcpp-plaintext-marker-";
  Bytes data;
  while (data.size() < 64 * kib) data.insert(data.end(), marker.begin(), marker.end());
  const std::string export_name = "export-name-in-the-clear";

  auto run = [&](Relay& relay, bool with_tls) {
    {
      nbd::Handle h;
      if (with_tls) use_psk(h, f.psk_file, f.psk_username);
      h.set_export_name(export_name);
      h.connect_socket(relay.client_fd());
      relay.close_client_fd();
      CHECK(h.get_tls_negotiated() == with_tls);
      h.pwrite(data, 8192);
      Bytes back(data.size());
      h.pread(back, 8192);
      CHECK(back == data);
      h.shutdown();
    }
    relay.finish();
  };

  // The control: in plaintext, the relay sees the data both ways and the
  // export name (so the check below can fail).
  {
    Relay relay({"memory", "1M"});
    run(relay, false);
    CHECK(contains(relay.to_server(), marker));
    CHECK(contains(relay.to_client(), marker));
    CHECK(contains(relay.to_server(), export_name));
  }
  // Under TLS it sees none of them.
  {
    Relay relay(psk_server(f.psk_file));
    run(relay, true);
    CHECK(relay.to_server().size() > data.size()); // the data did go through it
    CHECK(relay.to_client().size() > data.size());
    CHECK_FALSE(contains(relay.to_server(), marker));
    CHECK_FALSE(contains(relay.to_client(), marker));
    CHECK_FALSE(contains(relay.to_server(), export_name));
  }
}

// --- data integrity ---------------------------------------------------------------------

TEST_CASE("tls: data integrity, 64 requests in flight and 1-4 MiB requests" * NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  SUBCASE("X.509, driven by Handle::poll") {
    nbd::Handle h;
    use_certs(h, f.client_dir);
    nbdtest::connect(h, cert_server(f.server_dir, {}, "64M"));
    integrity(h, Drive::handle_poll);
    h.shutdown();
  }
  SUBCASE("PSK, driven by the test's own poll loop (aio_notify_*)") {
    nbd::Handle h;
    use_psk(h, f.psk_file, f.psk_username);
    nbdtest::connect(h, psk_server(f.psk_file, "64M"));
    integrity(h, Drive::own_loop);
    h.shutdown();
  }
  SUBCASE("X.509 over TCP, structured replies off") {
    nbdtest::Server srv(cert_server(f.server_dir, {}, "64M"), true);
    nbd::Handle h;
    use_certs(h, f.client_dir);
    h.set_request_structured_replies(false);
    h.connect_tcp("localhost", srv.port());
    CHECK_FALSE(h.get_structured_replies_negotiated());
    integrity(h, Drive::handle_poll);
    h.shutdown();
  }
}

TEST_CASE("tls: the server dying with 64 commands in flight completes each callback once" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  nbd::Handle h;
  use_psk(h, f.psk_file, f.psk_username);
  // Reads wait 10 s in the delay filter: none can complete before the kill.
  nbdtest::connect(h, {"--tls=require", "--tls-psk=" + f.psk_file, "--filter=delay", "memory", "64M",
                       "delay-read=10"});
  REQUIRE(h.get_tls_negotiated());
  CallCounter counter;
  std::vector<Bytes> bufs(64, Bytes(64 * kib));
  for (std::size_t i = 0; i < bufs.size(); ++i) h.aio_pread(bufs[i], i * 64 * kib, CountedCompletion(&counter));
  CHECK(h.aio_in_flight() == 64);
  // Let them reach the server, then kill it.
  for (int i = 0; i < 5; ++i) (void)error_of([&] { h.poll(20); });
  CHECK(counter.calls == 0);
  h.kill_subprocess(SIGKILL);
  int rounds = 0;
  while (!h.aio_is_dead()) {
    REQUIRE_MESSAGE(++rounds < 60, "the handle did not notice the server died");
    (void)error_of([&] { h.poll(1000); });
  }
  CHECK(counter.calls == 64);
  CHECK(counter.destroyed == 64);
  CHECK(std::all_of(counter.errors.begin(), counter.errors.end(), [](int e) { return e != 0; }));
  CHECK(h.aio_in_flight() == 0);
}

// --- URIs ---------------------------------------------------------------------------------

TEST_CASE("tls: nbds+unix URIs: tls-psk-file, tls-username, user@, tls-certificates, EPERM" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  nbdtest::Server psk(psk_server(f.psk_file));
  nbdtest::Server certs(cert_server(f.server_dir));
  const std::string psk_uri = "nbds+unix:///?socket=" + psk.socket() + "&tls-psk-file=" + f.psk_file;
  const std::string cert_uri = "nbds+unix:///?socket=" + certs.socket() + "&tls-certificates=" + f.client_dir;

  SUBCASE("local files are refused (EPERM) until set_uri_allow_local_file(true)") {
    nbd::Handle h;
    CHECK(error_of([&] { h.connect_uri(psk_uri + "&tls-username=alice"); }) == EPERM);
    CHECK(h.aio_is_created());
    CHECK(error_of([&] { h.aio_connect_uri(cert_uri); }) == EPERM);
    CHECK(h.aio_is_created());
    // The same handle connects once allowed.
    h.set_uri_allow_local_file(true);
    h.connect_uri(cert_uri);
    CHECK(h.get_tls_negotiated());
  }
  SUBCASE("tls-psk-file and tls-username") {
    nbd::Handle h;
    h.set_uri_allow_local_file(true);
    h.connect_uri(psk_uri + "&tls-username=alice");
    CHECK(h.get_tls() == nbd::TLS_REQUIRE);
    CHECK(h.get_tls_username() == "alice");
    check_tls_io(h);
    h.shutdown();
  }
  SUBCASE("the user name as user@") {
    nbd::Handle h;
    h.set_uri_allow_local_file(true);
    h.connect_uri("nbds+unix://alice@/?socket=" + psk.socket() + "&tls-psk-file=" + f.psk_file);
    CHECK(h.get_tls_username() == "alice");
    check_tls_io(h);
  }
  SUBCASE("aio_connect_uri with an export name") {
    nbd::Handle h;
    h.set_uri_allow_local_file(true);
    h.aio_connect_uri("nbds+unix:///some-export?socket=" + psk.socket() + "&tls-psk-file=" + f.psk_file +
                      "&tls-username=alice");
    nbdtest::poll_loop(h, [&] { return !h.aio_is_connecting(); });
    REQUIRE(h.aio_is_ready());
    CHECK(h.get_export_name() == "some-export");
    check_tls_io(h);
  }
  SUBCASE("tls-certificates") {
    nbd::Handle h;
    h.set_uri_allow_local_file(true);
    h.connect_uri(cert_uri);
    CHECK(h.get_tls() == nbd::TLS_REQUIRE);
    check_tls_io(h);
  }
  SUBCASE("a PSK file with the wrong key, by URI, fails the handshake") {
    nbd::Handle h;
    h.set_uri_allow_local_file(true);
    const Failure fl = failure_of([&] {
      h.connect_uri("nbds+unix:///?socket=" + psk.socket() + "&tls-psk-file=" + f.psk_other_file +
                    "&tls-username=alice");
    });
    CHECK_MESSAGE(fl.err == EIO, fl.what);
    check_dead(h, fl);
  }
  SUBCASE("nbds+unix to a plaintext server: ENOTSUP") {
    nbdtest::Server plain({"memory", "1M"});
    nbd::Handle h;
    const Failure fl = failure_of([&] { h.connect_uri("nbds+unix:///?socket=" + plain.socket()); });
    CHECK_MESSAGE(fl.err == ENOTSUP, fl.what);
    CHECK_MESSAGE(mentions(fl.what, {"TLS"}), fl.what);
    check_dead(h, fl);
  }
}

// --- option mode --------------------------------------------------------------------------

TEST_CASE("tls: option mode: TLS is negotiated while connecting, then options run encrypted" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  nbd::Handle h;
  connect_opt_mode(h, f.psk_file, f.psk_username, nbd::TLS_REQUIRE,
                   {"--tls=require", "--tls-psk=" + f.psk_file, "--filter=exportname", "memory", "2M",
                    "exportname-list=explicit", "exportname=one", "exportname=two"});
  CHECK(h.get_tls_negotiated());
  // STARTTLS again on a TLS connection is the client's error.
  CHECK(error_of([&] { h.opt_starttls(); }) == EINVAL);
  CHECK(h.aio_is_negotiating());
  std::vector<std::string> names;
  CHECK(h.opt_list([&](std::string_view name, std::string_view) {
    names.emplace_back(name);
    return 0;
  }) == 2);
  CHECK(names == std::vector<std::string>{"one", "two"});
  h.set_export_name("two");
  h.opt_go();
  CHECK(h.aio_is_ready());
  CHECK(h.get_size() == static_cast<std::int64_t>(2 * mib));
  check_io(h);
}

TEST_CASE("tls: option mode with TLS_DISABLE: plaintext options are refused, then opt_starttls and opt_go" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  nbd::Handle h;
  // libnbd: TLS_DISABLE in option mode leaves STARTTLS to the caller
  // (the protocol's SELECTIVETLS dance); the credentials are still used.
  connect_opt_mode(h, f.psk_file, f.psk_username, nbd::TLS_DISABLE, psk_server(f.psk_file, "2M"));
  CHECK_FALSE(h.get_tls_negotiated());
  // nbdkit --tls=require answers options before STARTTLS with ERR_TLS_REQD.
  CHECK(error_of([&] { h.opt_info(); }) == ENOTSUP);
  REQUIRE(h.aio_is_negotiating());
  SUBCASE("opt_starttls") {
    CHECK(h.opt_starttls());
  }
  SUBCASE("aio_opt_starttls") {
    CallCounter c;
    h.aio_opt_starttls(CountedCompletion(&c));
    nbdtest::poll_loop(h, [&] { return c.calls > 0; });
    CHECK(c.calls == 1);
    CHECK(c.errors == std::vector<int>{0});
    CHECK(c.destroyed == 1);
  }
  REQUIRE(h.aio_is_negotiating());
  CHECK(h.get_tls_negotiated());
  CHECK(error_of([&] { h.opt_starttls(); }) == EINVAL);
  // What was negotiated in the clear is forgotten; ask again, encrypted.
  CHECK(h.opt_structured_reply());
  h.opt_info();
  CHECK(h.get_size() == static_cast<std::int64_t>(2 * mib));
  h.opt_go();
  CHECK(h.aio_is_ready());
  CHECK(h.get_structured_replies_negotiated());
  check_io(h);
}

TEST_CASE("tls: option mode with TLS_ALLOW against a plaintext server: STARTTLS declined, plaintext goes on" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  nbd::Handle h;
  connect_opt_mode(h, f.psk_file, f.psk_username, nbd::TLS_ALLOW, {"memory", "1M"});
  CHECK_FALSE(h.get_tls_negotiated());
  // Asking again is allowed (TLS is not on) and declined again.
  CHECK_FALSE(h.opt_starttls());
  CHECK(h.aio_is_negotiating());
  CallCounter c;
  h.aio_opt_starttls(CountedCompletion(&c));
  nbdtest::poll_loop(h, [&] { return c.calls > 0; });
  CHECK(c.errors == std::vector<int>{ENOTSUP});
  CHECK(c.destroyed == 1);
  CHECK(h.aio_is_negotiating());
  CHECK_FALSE(h.get_tls_negotiated());
  h.opt_go();
  CHECK(h.aio_is_ready());
  check_io(h);
}

TEST_CASE("tls: option mode: a handshake failure in aio_opt_starttls calls its callback once, kills the handle" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  nbd::Handle h;
  connect_opt_mode(h, f.psk_other_file, f.psk_username, nbd::TLS_DISABLE, psk_server(f.psk_file));
  CallCounter c;
  h.aio_opt_starttls(CountedCompletion(&c));
  int rounds = 0;
  while (c.calls == 0 && !h.aio_is_dead()) {
    REQUIRE_MESSAGE(++rounds < 60, "the handshake neither finished nor failed");
    (void)error_of([&] { h.poll(1000); });
  }
  CHECK(h.aio_is_dead());
  CHECK(c.calls == 1);
  CHECK(c.destroyed == 1);
  CHECK(c.errors == std::vector<int>{EIO});
  CHECK(h.get_error().value() == EIO);
  check_dead(h, {EIO, {}});
}

// --- TLS_ALLOW ----------------------------------------------------------------------------

TEST_CASE("tls: TLS_ALLOW negotiates when the server offers TLS, and falls back to plaintext" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  SUBCASE("--tls=require server, certificates") {
    nbd::Handle h;
    use_certs(h, f.client_dir, nbd::TLS_ALLOW);
    nbdtest::connect(h, cert_server(f.server_dir));
    CHECK(h.get_tls() == nbd::TLS_ALLOW);
    check_tls_io(h);
  }
  SUBCASE("--tls=on server (TLS optional), PSK") {
    nbd::Handle h;
    use_psk(h, f.psk_file, f.psk_username, nbd::TLS_ALLOW);
    nbdtest::connect(h, {"--tls=on", "--tls-psk=" + f.psk_file, "memory", "1M"});
    check_tls_io(h);
  }
  SUBCASE("plaintext server") {
    nbd::Handle h;
    use_psk(h, f.psk_file, f.psk_username, nbd::TLS_ALLOW);
    nbdtest::connect(h, {"memory", "1M"});
    CHECK(h.aio_is_ready());
    CHECK_FALSE(h.get_tls_negotiated());
    check_io(h);
  }
  SUBCASE("TLS_DISABLE with a --tls=on server stays plaintext") {
    nbd::Handle h;
    nbdtest::connect(h, {"--tls=on", "--tls-psk=" + f.psk_file, "memory", "1M"});
    CHECK_FALSE(h.get_tls_negotiated());
    check_io(h);
  }
  SUBCASE("a failed handshake is an error under TLS_ALLOW too, not a fallback") {
    const Failure fl = connect_fails([&](nbd::Handle& h) { use_psk(h, f.psk_other_file, f.psk_username, nbd::TLS_ALLOW); },
                                     {"--tls=on", "--tls-psk=" + f.psk_file, "memory", "1M"});
    CHECK_MESSAGE(fl.err == EIO, fl.what);
  }
}

// --- failures -----------------------------------------------------------------------------

TEST_CASE("tls: TLS_REQUIRE against a plaintext server: ENOTSUP, and only the handshake was in the clear" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  const std::string export_name = "secret-export-name";
  Relay relay({"memory", "1M"});
  {
    nbd::Handle h;
    use_psk(h, f.psk_file, f.psk_username);
    h.set_export_name(export_name);
    const Failure fl = failure_of([&] { h.connect_socket(relay.client_fd()); });
    relay.close_client_fd();
    CHECK_MESSAGE(fl.err == ENOTSUP, fl.what);
    CHECK_MESSAGE(mentions(fl.what, {"TLS"}), fl.what);
    CHECK_MESSAGE(mentions(fl.what, {"refused", "declined", "require"}), fl.what);
    check_dead(h, fl);
  }
  relay.finish();
  // What the client sent: its 4 handshake flags, then option headers, the
  // first STARTTLS, and none but STARTTLS or ABORT, none with a payload.
  const Bytes& up = relay.to_server();
  REQUIRE(up.size() >= 4 + 16);
  std::size_t at = 4;
  std::vector<std::uint32_t> options;
  while (at + 16 <= up.size()) {
    CHECK(be64(up, at) == ihaveopt);
    options.push_back(be32(up, at + 8));
    CHECK(be32(up, at + 12) == 0);
    at += 16;
  }
  CHECK(at == up.size());
  REQUIRE_FALSE(options.empty());
  CHECK(options[0] == opt_starttls);
  for (auto o : options) CHECK((o == opt_starttls || o == opt_abort));
  CHECK_FALSE(contains(up, export_name));
}

TEST_CASE("tls: TLS_DISABLE against a TLS-only server: ENOTSUP saying the server requires TLS" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  SUBCASE("PSK server") {
    const Failure fl = connect_fails([](nbd::Handle&) {}, psk_server(f.psk_file));
    CHECK_MESSAGE(fl.err == ENOTSUP, fl.what);
    CHECK_MESSAGE(mentions(fl.what, {"TLS"}), fl.what);
    CHECK_MESSAGE(mentions(fl.what, {"require"}), fl.what);
  }
  SUBCASE("certificate server, by URI") {
    nbdtest::Server srv(cert_server(f.server_dir));
    nbd::Handle h;
    const Failure fl = failure_of([&] { h.connect_uri(srv.uri()); });
    CHECK_MESSAGE(fl.err == ENOTSUP, fl.what);
    CHECK_MESSAGE(mentions(fl.what, {"require"}), fl.what);
    check_dead(h, fl);
  }
}

TEST_CASE("tls: a server certificate from another CA fails the handshake (EIO)" * NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  handshake_fails([&](nbd::Handle& h) { use_certs(h, f.wrong_ca_dir); }, cert_server(f.server_dir),
                  {"certificate", "verif", "trust", "signer"});
}

TEST_CASE("tls: an expired server certificate fails the handshake (EIO)" * NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  handshake_fails([&](nbd::Handle& h) { use_certs(h, f.client_dir); }, cert_server(f.expired_server_dir),
                  {"expired"});
}

TEST_CASE("tls: a server checking clients (--tls-verify-peer) refuses a missing or foreign client certificate" *
          NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  const auto args = cert_server(f.server_dir, {"--tls-verify-peer"});
  // With TLS 1.3 the client may finish its half of the handshake before
  // the server rejects it; the rejection then arrives with the first
  // reply. Either way the connection fails.
  SUBCASE("no client certificate") {
    const Failure fl = connect_fails([&](nbd::Handle& h) { use_certs(h, f.client_ca_only_dir); }, args);
    CHECK_MESSAGE(fl.err != 0, fl.what);
  }
  SUBCASE("a client certificate signed by another CA") {
    const Failure fl = connect_fails([&](nbd::Handle& h) { use_certs(h, f.client_wrong_signer_dir); }, args);
    CHECK_MESSAGE(fl.err != 0, fl.what);
  }
  SUBCASE("the right one connects") {
    nbd::Handle h;
    use_certs(h, f.client_dir);
    nbdtest::connect(h, args);
    check_tls_io(h);
  }
}

TEST_CASE("tls: the wrong PSK key fails the handshake (EIO)" * NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  handshake_fails([&](nbd::Handle& h) { use_psk(h, f.psk_other_file, f.psk_username); }, psk_server(f.psk_file),
                  {"TLS", "handshake"});
}

TEST_CASE("tls: a PSK user the server does not know fails the handshake (EIO)" * NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  // The client's file has bob (with alice's key); the server's only alice.
  nbdtest::TempDir dir;
  std::string line = nbdtest::read_file(f.psk_file);
  REQUIRE(line.rfind("alice:", 0) == 0);
  const std::string bob_file = dir.file("bob.psk");
  nbdtest::write_file(bob_file, "bob:" + line.substr(6));
  handshake_fails([&](nbd::Handle& h) { use_psk(h, bob_file, "bob"); }, psk_server(f.psk_file), {"TLS", "handshake"});
}

TEST_CASE("tls: a user missing from the client's own PSK file is EINVAL, naming the user" * NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  const Failure fl =
      connect_fails([&](nbd::Handle& h) { use_psk(h, f.psk_file, "nobody-here"); }, psk_server(f.psk_file));
  CHECK_MESSAGE(fl.err == EINVAL, fl.what);
  CHECK_MESSAGE(fl.what.find("nobody-here") != std::string::npos, fl.what);
}

TEST_CASE("tls: missing credentials fail the connection" * NBDTEST_NEEDS_TLS) {
  NBDTEST_REQUIRE_TLS();
  const auto& f = tls::fixtures();
  nbdtest::TempDir dir;
  SUBCASE("a PSK file that does not exist") {
    const std::string missing = dir.file("missing.psk");
    const Failure fl =
        connect_fails([&](nbd::Handle& h) { use_psk(h, missing, f.psk_username); }, psk_server(f.psk_file));
    CHECK_MESSAGE(fl.err == ENOENT, fl.what);
    CHECK_MESSAGE(fl.what.find("missing.psk") != std::string::npos, fl.what);
  }
  SUBCASE("a certificate directory without ca-cert.pem") {
    // Either refused for the missing file, or (libnbd's way) the system's
    // CAs are used instead, which never signed the test CA: no connection.
    const Failure fl =
        connect_fails([&](nbd::Handle& h) { use_certs(h, dir.path()); }, cert_server(f.server_dir));
    CHECK_MESSAGE(fl.err != 0, fl.what);
    CHECK_MESSAGE(mentions(fl.what, {"ca-cert.pem", "certificate"}), fl.what);
  }
}
