// SPDX-License-Identifier: BSD-3-Clause
// TLS interop with qemu-nbd (Debian qemu-utils): X.509 certificates
// (tls-creds-x509, which checks client certificates by default) by systemd
// socket activation, and PSK (tls-creds-psk) on a unix socket through an
// nbds+unix URI; data checked against the image file; the failures a
// qemu-nbd user meets first (wrong key, no client certificate, no TLS).
// Credentials come from tests/integration/tls_fixtures (certtool, psktool).

#include "interop.hpp"
#include "tls_fixtures.hpp"

#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <fstream>

using namespace interop;
namespace tls = nbdtest::tls;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;

std::vector<std::string> x509_args(const std::string& dir) {
  return {"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + dir, "--tls-creds", "tls0"};
}
std::vector<std::string> psk_args(const std::string& dir) {
  return {"--object", "tls-creds-psk,id=tls0,endpoint=server,dir=" + dir, "--tls-creds", "tls0"};
}

std::vector<std::string> qemu_nbd(std::vector<std::string> tls_args, std::vector<std::string> rest) {
  std::vector<std::string> argv{"qemu-nbd"};
  argv.insert(argv.end(), tls_args.begin(), tls_args.end());
  argv.insert(argv.end(), rest.begin(), rest.end());
  return argv;
}

void check_tls_connection(nbd::Handle& h, std::uint64_t size) {
  CHECK(h.aio_is_ready());
  CHECK(h.get_tls_negotiated());
  CHECK(h.get_transport_name() == expected_transport());
  CHECK(h.get_protocol() == "newstyle-fixed");
  CHECK(h.get_structured_replies_negotiated());
  CHECK(h.get_size() == static_cast<std::int64_t>(size));
}

// Blocking writes of 512 B to 3 MiB (many TLS records each), then 64
// writes in flight at once, all read back (64 reads in flight), flushed.
// Returns every write made, for checking the file afterwards.
std::vector<Write> exercise(nbd::Handle& h) {
  std::vector<Write> writes{{0, pattern(512, 1)},
                            {4096 + 3, pattern(64 * KiB + 1, 2)},
                            {1 * MiB, pattern(3 * MiB, 3)},
                            {5 * MiB - 17, pattern(1 * MiB, 4)}};
  write_and_read_back(h, writes);

  std::vector<Write> many;
  for (int i = 0; i < 64; ++i)
    many.push_back({8 * MiB + static_cast<std::uint64_t>(i) * 64 * KiB,
                    pattern(32 * KiB + static_cast<std::size_t>(i) * 512, static_cast<std::uint8_t>(40 + i))});
  int done = 0, failed = 0;
  auto cb = [&](int* err) {
    ++done;
    failed += *err != 0;
    return 1;
  };
  for (const auto& w : many) h.aio_pwrite(w.data, w.off, cb);
  CHECK(h.aio_in_flight() == 64);
  while (done < 64) h.poll(-1);
  std::vector<Bytes> back;
  for (const auto& w : many) back.emplace_back(w.data.size(), 0xee);
  for (std::size_t i = 0; i < many.size(); ++i) h.aio_pread(back[i], many[i].off, cb);
  CHECK(h.aio_in_flight() == 64);
  while (done < 128) h.poll(-1);
  CHECK(failed == 0);
  int mismatches = 0;
  for (std::size_t i = 0; i < many.size(); ++i) mismatches += back[i] != many[i].data;
  CHECK(mismatches == 0);
  if (h.can_flush()) h.flush();
  writes.insert(writes.end(), many.begin(), many.end());
  return writes;
}

void check_file(const std::string& img, const std::vector<Write>& writes) {
  int mismatches = 0;
  for (const auto& w : writes) mismatches += file_read(img, w.off, w.data.size()) != w.data;
  CHECK(mismatches == 0);
}

// qemu-nbd --fork on a unix socket, killed at the end of the scope.
class ForkedServer {
public:
  ForkedServer(const TempDir& dir, std::vector<std::string> tls_args, const std::string& img)
      : sock_(dir.file("sock")) {
    const std::string pidfile = dir.file("qemu-nbd.pid");
    must_run(qemu_nbd(std::move(tls_args),
                      {"--fork", "--pid-file=" + pidfile, "-t", "-k", sock_, "-f", "raw", "-x", "disk", img}));
    std::ifstream(pidfile) >> pid_;
    REQUIRE(pid_ > 0);
  }
  ~ForkedServer() {
    if (pid_ > 0) ::kill(pid_, SIGTERM);
  }
  ForkedServer(const ForkedServer&) = delete;
  ForkedServer& operator=(const ForkedServer&) = delete;
  const std::string& socket() const { return sock_; }

private:
  std::string sock_;
  pid_t pid_ = 0;
};

} // namespace

TEST_SUITE_BEGIN("qemu-nbd");

TEST_CASE("TLS with X.509 certificates (socket activation): data reaches the image" * NBDTEST_NEEDS_TLS_TOOLS) {
  NBDTEST_REQUIRE_TLS_TOOLS();
  const auto& f = tls::fixtures();
  TempDir dir;
  const std::string img = dir.file("disk.raw");
  make_sparse(img, 16 * MiB);
  const auto argv = qemu_nbd(x509_args(f.server_dir), {"-f", "raw", "-x", "disk", img});
  // A client requiring TLS with the credentials in certs, whose connection
  // must fail (and leave the handle dead).
  auto connect_fails = [&](const std::string& certs) {
    nbd::Handle h;
    tls::use_certs(h, certs);
    h.set_export_name("disk");
    const Failure fl = failure_of([&] { h.connect_systemd_socket_activation(argv); });
    CHECK(h.aio_is_dead());
    return fl;
  };
  SUBCASE("writes and reads, 64 in flight") {
    std::vector<Write> writes;
    {
      nbd::Handle h;
      // tls-creds-x509 checks clients by default: this directory has a
      // client certificate from the same CA.
      tls::use_certs(h, f.client_dir);
      h.set_export_name("disk");
      h.connect_systemd_socket_activation(argv);
      check_tls_connection(h, 16 * MiB);
      writes = exercise(h);
      h.shutdown();
    }
    check_file(img, writes);
  }

  SUBCASE("without a client certificate qemu-nbd refuses the client") {
    const Failure fl = connect_fails(f.client_ca_only_dir);
    CHECK_MESSAGE(fl.err != 0, fl.what);
  }
  SUBCASE("a CA that did not sign qemu-nbd's certificate: EIO") {
    const Failure fl = connect_fails(f.wrong_ca_dir);
    CHECK_MESSAGE(fl.err == EIO, fl.what);
  }
}

TEST_CASE("TLS with PSK (unix socket, nbds+unix URI): data reaches the image; wrong key, no TLS" *
          NBDTEST_NEEDS_TLS_TOOLS) {
  NBDTEST_REQUIRE_TLS_TOOLS();
  const auto& f = tls::fixtures();
  TempDir dir;
  const std::string img = dir.file("disk.raw");
  make_sparse(img, 16 * MiB);
  // qemu reads DIR/keys.psk.
  ForkedServer server(dir, psk_args(f.psk_dir), img);
  const std::string uri = "nbds+unix://" + f.psk_username + "@/disk?socket=" + server.socket();

  std::vector<Write> writes;
  {
    nbd::Handle h;
    h.set_uri_allow_local_file(true);
    h.connect_uri(uri + "&tls-psk-file=" + f.psk_file);
    CHECK(h.get_tls() == nbd::TLS_REQUIRE);
    CHECK(h.get_tls_username() == f.psk_username);
    CHECK(h.get_export_name() == "disk");
    check_tls_connection(h, 16 * MiB);
    writes = exercise(h);
    h.shutdown();
  }
  check_file(img, writes);

  {
    // Another user's key under alice's name: the handshake fails.
    nbd::Handle h;
    h.set_uri_allow_local_file(true);
    const Failure fl = failure_of([&] { h.connect_uri(uri + "&tls-psk-file=" + f.psk_other_file); });
    CHECK_MESSAGE(fl.err == EIO, fl.what);
    CHECK(h.aio_is_dead());
  }
  {
    // No TLS at all: qemu-nbd answers ERR_TLS_REQD.
    nbd::Handle h;
    h.set_export_name("disk");
    const Failure fl = failure_of([&] { h.connect_unix(server.socket()); });
    CHECK_MESSAGE(fl.err == ENOTSUP, fl.what);
    CHECK_MESSAGE(fl.what.find("TLS") != std::string::npos, fl.what);
    CHECK(h.aio_is_dead());
  }
  {
    // And the server is still fine for a good client, with TLS_ALLOW.
    nbd::Handle h;
    tls::use_psk(h, f.psk_file, f.psk_username, nbd::TLS_ALLOW);
    h.set_export_name("disk");
    h.connect_unix(server.socket());
    CHECK(h.get_tls_negotiated());
    Bytes b(writes[1].data.size());
    h.pread(b, writes[1].off);
    CHECK(b == writes[1].data);
    h.shutdown();
  }
}

TEST_SUITE_END();
