// SPDX-License-Identifier: BSD-3-Clause
#include "tls_fixtures.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace nbdtest::tls {

namespace {

// Runs argv with stdin from /dev/null (nothing may prompt: CI has no
// terminal) and stdout + stderr into log; throws with the log unless it
// exits 0.
void run(const std::vector<std::string>& argv, const std::string& log) {
  const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int status = in < 0 || out < 0 ? 126 : wait_exit(spawn(argv, in, out, out));
  if (in >= 0) ::close(in);
  if (out >= 0) ::close(out);
  if (status != 0)
    throw std::runtime_error("TLS fixtures: `" + command_line(argv) + "` failed (exit status " +
                             std::to_string(status) + "):\n" + read_file(log));
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

// certtool templates. The CAs' own validity starts in 2000 so that the
// expired server certificate (2001-2002) lies inside it: the only fault
// of that certificate is its age.
std::string ca_template(const std::string& cn) {
  return "cn = \"" + cn + "\"\n"
         "ca\n"
         "cert_signing_key\n"
         "activation_date = \"2000-01-01 00:00:00 UTC\"\n"
         "expiration_date = \"2099-01-01 00:00:00 UTC\"\n";
}

// A leaf certificate: subject lines, then its use (tls_www_server or
// tls_www_client), then validity lines.
std::string leaf_template(const std::string& subject, const std::string& use, const std::string& validity) {
  return "organization = \"nbdcpp test\"\n" + subject + use + "\n" + "encryption_key\nsigning_key\n" + validity;
}

constexpr const char* localhost = "cn = \"localhost\"\n"
                                  "dns_name = \"localhost\"\n"
                                  "ip_address = \"127.0.0.1\"\n";
constexpr const char* ten_years = "expiration_days = 3650\n";

struct Maker {
  TempDir dir;
  Fixtures f;
  std::string log = dir.file("tool.log");

  std::string work(const std::string& name) const { return dir.file("work/" + name); }

  // A new key, work/NAME-key.pem, and its certificate from tmpl,
  // work/NAME-cert.pem: self-signed when ca is "", else signed by the CA
  // work/CA-cert.pem (whose key is work/CA-key.pem).
  void cert(const std::string& name, const std::string& tmpl, const std::string& ca = "") {
    const std::string key = work(name + "-key.pem");
    run({"certtool", "--generate-privkey", "--key-type=ecdsa", "--curve=secp256r1", "--outfile", key}, log);
    write_file(work("t.tmpl"), tmpl);
    std::vector<std::string> argv{"certtool", ca.empty() ? "--generate-self-signed" : "--generate-certificate",
                                  "--load-privkey", key};
    if (!ca.empty())
      argv.insert(argv.end(),
                  {"--load-ca-certificate", work(ca + "-cert.pem"), "--load-ca-privkey", work(ca + "-key.pem")});
    argv.insert(argv.end(), {"--template", work("t.tmpl"), "--outfile", work(name + "-cert.pem")});
    run(argv, log);
  }

  // The directory NAME: the certificate of the CA (named as for cert()) as
  // ca-cert.pem and, when from is given, FROM's certificate and key as
  // ROLE-cert.pem and ROLE-key.pem.
  std::string creds(const std::string& name, const std::string& ca, const std::string& from = "",
                    const std::string& role = "") {
    const std::string d = mkdir(dir.file(name));
    copy(work(ca + "-cert.pem"), d + "/ca-cert.pem");
    if (!from.empty()) {
      copy(work(from + "-cert.pem"), d + "/" + role + "-cert.pem");
      copy(work(from + "-key.pem"), d + "/" + role + "-key.pem");
    }
    return d;
  }

  // The directory NAME holding keys.psk, a new key for f.psk_username
  // (psktool appends to an existing file; each file is new here).
  std::string psk(const std::string& name) {
    const std::string d = mkdir(dir.file(name));
    run({"psktool", "-u", f.psk_username, "-p", d + "/keys.psk"}, log);
    return d;
  }

  Maker() {
    f.root = dir.path();
    mkdir(dir.file("work"));
    cert("ca", ca_template("nbdcpp test CA"));
    cert("other-ca", ca_template("nbdcpp unrelated CA"));
    cert("server", leaf_template(localhost, "tls_www_server", ten_years), "ca");
    cert("expired",
         leaf_template(localhost, "tls_www_server",
                       "activation_date = \"2001-01-01 00:00:00 UTC\"\n"
                       "expiration_date = \"2002-01-01 00:00:00 UTC\"\n"),
         "ca");
    const std::string client = leaf_template("cn = \"nbdcpp test client\"\n", "tls_www_client", ten_years);
    cert("client", client, "ca");
    cert("stranger", client, "other-ca");

    f.server_dir = creds("server", "ca", "server", "server");
    f.expired_server_dir = creds("server-expired", "ca", "expired", "server");
    f.client_dir = creds("client", "ca", "client", "client");
    f.client_ca_only_dir = creds("client-ca-only", "ca");
    f.wrong_ca_dir = creds("client-wrong-ca", "other-ca");
    f.client_wrong_signer_dir = creds("client-wrong-signer", "ca", "stranger", "client");

    f.psk_dir = psk("psk");
    f.psk_file = f.psk_dir + "/keys.psk";
    f.psk_other_dir = psk("psk-other");
    f.psk_other_file = f.psk_other_dir + "/keys.psk";
    if (read_file(f.psk_file) == read_file(f.psk_other_file))
      throw std::runtime_error("TLS fixtures: psktool made the same key twice");
  }
};

} // namespace

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
