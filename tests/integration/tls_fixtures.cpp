// SPDX-License-Identifier: BSD-3-Clause
#include "tls_fixtures.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace nbdtest::tls {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs argv with stdin from /dev/null (nothing may prompt: CI has no
// terminal) and stdout + stderr into log; throws with the log unless it
// exits 0.
void run(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int in = ::open("/dev/null", O_RDONLY);
    int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || out < 0) ::_exit(126);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw std::runtime_error("waitpid failed");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    throw std::runtime_error("TLS fixtures: `" + cmd + "` failed (status " + std::to_string(status) +
                             "):\n" + read_file(log));
  }
}

void copy(const std::string& from, const std::string& to) {
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
}

std::string mkdir(const std::string& path) {
  std::filesystem::create_directory(path);
  return path;
}

bool nbdkit_has_tls() {
  FILE* p = ::popen("nbdkit --dump-config 2>/dev/null", "r");
  if (!p) return false;
  std::string out;
  char buf[512];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return ("\n" + out).find("\ntls=yes\n") != std::string::npos;
}

// certtool templates. The CA's own validity starts in 2000 so that the
// expired server certificate (2001-2002) lies inside it: the only fault
// of that certificate is its age.
constexpr const char* ca_template = R"(cn = "nbdcpp test CA"
ca
cert_signing_key
activation_date = "2000-01-01 00:00:00 UTC"
expiration_date = "2099-01-01 00:00:00 UTC"
)";

constexpr const char* other_ca_template = R"(cn = "nbdcpp unrelated CA"
ca
cert_signing_key
activation_date = "2000-01-01 00:00:00 UTC"
expiration_date = "2099-01-01 00:00:00 UTC"
)";

constexpr const char* server_template = R"(organization = "nbdcpp test"
cn = "localhost"
dns_name = "localhost"
ip_address = "127.0.0.1"
tls_www_server
encryption_key
signing_key
expiration_days = 3650
)";

constexpr const char* expired_template = R"(organization = "nbdcpp test"
cn = "localhost"
dns_name = "localhost"
ip_address = "127.0.0.1"
tls_www_server
encryption_key
signing_key
activation_date = "2001-01-01 00:00:00 UTC"
expiration_date = "2002-01-01 00:00:00 UTC"
)";

constexpr const char* client_template = R"(organization = "nbdcpp test"
cn = "nbdcpp test client"
tls_www_client
encryption_key
signing_key
expiration_days = 3650
)";

struct Maker {
  TempDir dir;
  Fixtures f;
  std::string log = dir.file("tool.log");

  std::string work(const std::string& name) const { return dir.file("work/" + name); }

  void key(const std::string& out) {
    run({"certtool", "--generate-privkey", "--key-type=ecdsa", "--curve=secp256r1", "--outfile", out}, log);
  }
  // A self-signed CA certificate for key.
  void self_signed(const std::string& key_file, const std::string& tmpl, const std::string& out) {
    write_file(work("t.tmpl"), tmpl);
    run({"certtool", "--generate-self-signed", "--load-privkey", key_file, "--template", work("t.tmpl"),
         "--outfile", out},
        log);
  }
  // A certificate for key, signed by the CA (ca_cert, ca_key).
  void signed_by(const std::string& key_file, const std::string& ca_cert, const std::string& ca_key,
                 const std::string& tmpl, const std::string& out) {
    write_file(work("t.tmpl"), tmpl);
    run({"certtool", "--generate-certificate", "--load-privkey", key_file, "--load-ca-certificate", ca_cert,
         "--load-ca-privkey", ca_key, "--template", work("t.tmpl"), "--outfile", out},
        log);
  }

  Maker() {
    f.root = dir.path();
    mkdir(dir.file("work"));
    const std::string ca_key = work("ca-key.pem"), ca_cert = work("ca-cert.pem");
    const std::string other_key = work("other-ca-key.pem"), other_cert = work("other-ca-cert.pem");
    key(ca_key);
    self_signed(ca_key, ca_template, ca_cert);
    key(other_key);
    self_signed(other_key, other_ca_template, other_cert);

    key(work("server-key.pem"));
    signed_by(work("server-key.pem"), ca_cert, ca_key, server_template, work("server-cert.pem"));
    key(work("expired-key.pem"));
    signed_by(work("expired-key.pem"), ca_cert, ca_key, expired_template, work("expired-cert.pem"));
    key(work("client-key.pem"));
    signed_by(work("client-key.pem"), ca_cert, ca_key, client_template, work("client-cert.pem"));
    key(work("stranger-key.pem"));
    signed_by(work("stranger-key.pem"), other_cert, other_key, client_template, work("stranger-cert.pem"));

    f.server_dir = mkdir(dir.file("server"));
    copy(ca_cert, f.server_dir + "/ca-cert.pem");
    copy(work("server-cert.pem"), f.server_dir + "/server-cert.pem");
    copy(work("server-key.pem"), f.server_dir + "/server-key.pem");

    f.expired_server_dir = mkdir(dir.file("server-expired"));
    copy(ca_cert, f.expired_server_dir + "/ca-cert.pem");
    copy(work("expired-cert.pem"), f.expired_server_dir + "/server-cert.pem");
    copy(work("expired-key.pem"), f.expired_server_dir + "/server-key.pem");

    f.client_dir = mkdir(dir.file("client"));
    copy(ca_cert, f.client_dir + "/ca-cert.pem");
    copy(work("client-cert.pem"), f.client_dir + "/client-cert.pem");
    copy(work("client-key.pem"), f.client_dir + "/client-key.pem");

    f.client_ca_only_dir = mkdir(dir.file("client-ca-only"));
    copy(ca_cert, f.client_ca_only_dir + "/ca-cert.pem");

    f.wrong_ca_dir = mkdir(dir.file("client-wrong-ca"));
    copy(other_cert, f.wrong_ca_dir + "/ca-cert.pem");

    f.client_wrong_signer_dir = mkdir(dir.file("client-wrong-signer"));
    copy(ca_cert, f.client_wrong_signer_dir + "/ca-cert.pem");
    copy(work("stranger-cert.pem"), f.client_wrong_signer_dir + "/client-cert.pem");
    copy(work("stranger-key.pem"), f.client_wrong_signer_dir + "/client-key.pem");

    // psktool appends to an existing file; each file is new here.
    f.psk_dir = mkdir(dir.file("psk"));
    f.psk_file = f.psk_dir + "/keys.psk";
    run({"psktool", "-u", f.psk_username, "-p", f.psk_file}, log);
    f.psk_other_dir = mkdir(dir.file("psk-other"));
    f.psk_other_file = f.psk_other_dir + "/keys.psk";
    run({"psktool", "-u", f.psk_username, "-p", f.psk_other_file}, log);
    if (read_file(f.psk_file) == read_file(f.psk_other_file))
      throw std::runtime_error("TLS fixtures: psktool made the same key twice");
  }
};

} // namespace

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("cannot write " + path);
}

const std::string& tools_unavailable_reason() {
  static const std::string reason = []() -> std::string {
    if (!have_program("certtool")) return "certtool is not installed (Debian: gnutls-bin)";
    if (!have_program("psktool")) return "psktool is not installed (Debian: gnutls-bin)";
    if (!nbd::Handle::supports_tls()) return "nbdcpp was built without TLS (Debian: libgnutls28-dev)";
    return {};
  }();
  return reason;
}

const std::string& unavailable_reason() {
  static const std::string reason = []() -> std::string {
    if (!tools_available()) return tools_unavailable_reason();
    if (!have_program("nbdkit")) return "nbdkit is not installed (Debian: nbdkit)";
    if (!nbdkit_has_tls()) return "nbdkit was built without TLS (nbdkit --dump-config has no tls=yes)";
    return {};
  }();
  return reason;
}

const Fixtures& fixtures() {
  // Made once, kept (with its TempDir) until the process exits.
  static const std::unique_ptr<Maker> maker = std::make_unique<Maker>();
  return maker->f;
}

} // namespace nbdtest::tls
