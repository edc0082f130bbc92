// SPDX-License-Identifier: BSD-3-Clause

#include "transport/uri.hpp"

#include <nbdcpp/error.hpp>

#include <doctest/doctest.h>

#include <cerrno>
#include <string>

using nbd::transport::parse_uri;
using nbd::transport::Uri;

namespace {

// Asserts that parsing fails with EINVAL and a "connect_uri:" message that
// mentions `needle`.
void check_invalid(const std::string& uri, const std::string& needle) {
  CAPTURE(uri);
  try {
    parse_uri(uri);
    FAIL("expected nbd::Error for " << uri);
  } catch (const nbd::Error& e) {
    CHECK(e.errnum() == EINVAL);
    std::string what = e.what();
    CAPTURE(what);
    CHECK(what.rfind("connect_uri: ", 0) == 0);
    CHECK(what.find(needle) != std::string::npos);
  }
}

} // namespace

TEST_SUITE("uri") {

TEST_CASE("doc/uri.md export name table") {
  CHECK(parse_uri("nbd://example.com/disk").export_name == "disk");
  CHECK(parse_uri("nbd+unix:///disk?socket=sock").export_name == "disk");
  CHECK(parse_uri("nbd://example.com/").export_name == "");
  CHECK(parse_uri("nbd://example.com").export_name == "");
  CHECK(parse_uri("nbd://example.com//disk").export_name == "/disk");
  CHECK(parse_uri("nbd://example.com/hello%20world").export_name ==
        "hello world");
}

TEST_CASE("nbd:// plain TCP with defaults") {
  Uri u = parse_uri("nbd://example.com");
  CHECK(u.kind == Uri::Kind::tcp);
  CHECK_FALSE(u.tls);
  CHECK(u.host == "example.com");
  CHECK(u.port == "10809");
  CHECK(u.export_name == "");
  CHECK(u.tls_username == "");
  CHECK(u.query.empty());
  CHECK_FALSE(u.tls_verify_peer.has_value());
}

TEST_CASE("nbds:// requires TLS") {
  Uri u = parse_uri("nbds://example.com:1234/exp");
  CHECK(u.kind == Uri::Kind::tcp);
  CHECK(u.tls);
  CHECK(u.host == "example.com");
  CHECK(u.port == "1234");
  CHECK(u.export_name == "exp");
}

TEST_CASE("missing host defaults to localhost, like libnbd") {
  CHECK(parse_uri("nbd:///").host == "localhost");
  CHECK(parse_uri("nbd://").host == "localhost");
  Uri u = parse_uri("nbd://:5000/x");
  CHECK(u.host == "localhost");
  CHECK(u.port == "5000");
}

TEST_CASE("ports") {
  CHECK(parse_uri("nbd://h:1/").port == "1");
  CHECK(parse_uri("nbd://h:65535/").port == "65535");
  CHECK(parse_uri("nbd://h:010809/").port == "10809");
  // RFC 3986 allows an empty port: it means the default.
  CHECK(parse_uri("nbd://h:/").port == "10809");
  check_invalid("nbd://h:0/", "invalid TCP port");
  check_invalid("nbd://h:65536/", "invalid TCP port");
  check_invalid("nbd://h:99999999999999999999/", "invalid TCP port");
  check_invalid("nbd://h:-1/", "invalid TCP port");
  check_invalid("nbd://h:port/", "invalid TCP port");
  check_invalid("nbd://h:12ab/", "invalid TCP port");
  check_invalid("nbd://h: 1/", "invalid character");
}

TEST_CASE("IPv4 and IPv6 literals") {
  Uri v4 = parse_uri("nbd://192.0.2.1:10810/e");
  CHECK(v4.host == "192.0.2.1");
  CHECK(v4.port == "10810");

  Uri v6 = parse_uri("nbd://[::1]/e");
  CHECK(v6.host == "::1");
  CHECK(v6.port == "10809");
  CHECK(v6.export_name == "e");

  Uri v6p = parse_uri("nbds://[2001:db8::1]:1234");
  CHECK(v6p.host == "2001:db8::1");
  CHECK(v6p.port == "1234");
  CHECK(v6p.export_name == "");

  CHECK(parse_uri("nbd://[::ffff:192.0.2.1]/").host == "::ffff:192.0.2.1");

  // RFC 6874 zone ID: "%25" is the encoded '%'.
  CHECK(parse_uri("nbd://[fe80::1%25eth0]:99/").host == "fe80::1%eth0");

  check_invalid("nbd://::1/", "brackets");
  check_invalid("nbd://[::1/", "unterminated");
  check_invalid("nbd://[::1]x/", "after ']'");
  check_invalid("nbd://[not-an-address]/", "invalid IPv6 address");
  check_invalid("nbd://[]/", "invalid IPv6 address");
  check_invalid("nbd://[192.0.2.1]/", "invalid IPv6 address");
  check_invalid("nbd://[fe80::1%eth0]/", "percent-encoding");
  check_invalid("nbd://[fe80::1%41]/", "zone ID");
  check_invalid("nbd://[fe80::1%25]/", "zone ID");
  check_invalid("nbd://[v1.fe]/", "IPvFuture");
  check_invalid("nbd://ho[st/", "'[' or ']'");
}

TEST_CASE("userinfo becomes the TLS username") {
  CHECK(parse_uri("nbds://alice@example.com/").tls_username == "alice");
  CHECK(parse_uri("nbds://al%69ce@example.com/").tls_username == "alice");
  Uri u = parse_uri("nbds+unix://alice@/?socket=/tmp/nbd.sock"
                    "&tls-certificates=certs");
  CHECK(u.kind == Uri::Kind::unix_socket);
  CHECK(u.tls);
  CHECK(u.tls_username == "alice");
  CHECK(u.socket_path == "/tmp/nbd.sock");
  CHECK(u.query_value("tls-certificates") == "certs");
  // Empty userinfo: no user name.
  CHECK(parse_uri("nbd://@example.com/").tls_username == "");
  CHECK(parse_uri("nbd://@example.com/").host == "example.com");
}

TEST_CASE("percent-decoding") {
  CHECK(parse_uri("nbd://h/%2Fabs%2fpath").export_name == "/abs/path");
  CHECK(parse_uri("nbd://h/a%25b").export_name == "a%b");
  CHECK(parse_uri("nbd://h/caf%C3%A9").export_name == "caf\xC3\xA9");
  // '+' is not a space outside HTML forms.
  CHECK(parse_uri("nbd://h/a+b").export_name == "a+b");
  CHECK(parse_uri("nbd://h/a:b@c;d=e,f!$'()*").export_name ==
        "a:b@c;d=e,f!$'()*");
  CHECK(parse_uri("nbd://ex%61mple.com/").host == "example.com");
  check_invalid("nbd://h/a%2", "percent-encoding");
  check_invalid("nbd://h/a%", "percent-encoding");
  check_invalid("nbd://h/a%zz", "percent-encoding");
  check_invalid("nbd://h/a%00b", "NUL byte in the export name");
  check_invalid("nbd://h/hello world", "invalid character ' '");
  check_invalid("nbd://h/a\"b", "invalid character");
  check_invalid("nbd://h/caf\xC3\xA9", "byte 0xc3");
  check_invalid("nbd://h/a\nb", "byte 0x0a");
  check_invalid("nbd://h/a[b", "'[' or ']' in the export name");
}

TEST_CASE("nbd+unix and nbds+unix") {
  Uri u = parse_uri("nbd+unix:///foo?socket=/tmp/nbd.sock");
  CHECK(u.kind == Uri::Kind::unix_socket);
  CHECK_FALSE(u.tls);
  CHECK(u.socket_path == "/tmp/nbd.sock");
  CHECK(u.export_name == "foo");
  REQUIRE(u.query.size() == 1);
  CHECK(u.query[0].first == "socket");
  CHECK(u.query[0].second == "/tmp/nbd.sock");

  CHECK(parse_uri("nbds+unix:///?socket=s").tls);
  // Empty authority and no path at all.
  CHECK(parse_uri("nbd+unix://?socket=nbd.sock").socket_path == "nbd.sock");
  CHECK(parse_uri("nbd+unix://?socket=nbd.sock").export_name == "");
  // Encoded characters in the socket path.
  CHECK(parse_uri("nbd+unix:///?socket=/tmp/a%20b%26c").socket_path ==
        "/tmp/a b&c");
  // Abstract socket (doc/uri.md).
  Uri abs = parse_uri("nbd+unix:///?socket=%00/abstract");
  CHECK(abs.socket_path == std::string("\0/abstract", 10));

  check_invalid("nbd+unix:///foo", "require a socket= query parameter");
  check_invalid("nbds+unix:///foo?tls-type=x509",
                "require a socket= query parameter");
  check_invalid("nbd+unix:///?socket=", "must not be empty");
  check_invalid("nbd+unix:///?socket", "must not be empty");
  check_invalid("nbd+unix:///?socket=a&socket=b", "more than once");
  check_invalid("nbd+unix:///?socket=/a%00b", "NUL byte inside");
  check_invalid("nbd+unix://localhost/?socket=s", "must not contain a host");
  check_invalid("nbd+unix://:10809/?socket=s", "must not contain a host");
}

TEST_CASE("socket= is rejected for TCP and vsock") {
  check_invalid("nbd://h/?socket=/tmp/s", "socket= is only valid");
  check_invalid("nbds://h/?socket=/tmp/s", "socket= is only valid");
  check_invalid("nbd+vsock:///?socket=/tmp/s", "socket= is only valid");
}

TEST_CASE("nbd+vsock and nbds+vsock") {
  Uri d = parse_uri("nbd+vsock:///");
  CHECK(d.kind == Uri::Kind::vsock);
  CHECK_FALSE(d.tls);
  CHECK(d.vsock_cid == 2);
  CHECK(d.vsock_port == 10809);

  Uri u = parse_uri("nbds+vsock://3:4000/exp");
  CHECK(u.tls);
  CHECK(u.vsock_cid == 3);
  CHECK(u.vsock_port == 4000);
  CHECK(u.export_name == "exp");

  CHECK(parse_uri("nbd+vsock://4294967295/").vsock_cid == 4294967295u);
  CHECK(parse_uri("nbd+vsock://:70000").vsock_port == 70000);
  check_invalid("nbd+vsock://host/", "invalid vsock CID");
  check_invalid("nbd+vsock://4294967296/", "invalid vsock CID");
  check_invalid("nbd+vsock://-1/", "invalid vsock CID");
  check_invalid("nbd+vsock://2:x/", "invalid vsock port");
  check_invalid("nbd+vsock://2:0/", "invalid vsock port");
  check_invalid("nbd+vsock://[::1]/", "numeric CID");
}

TEST_CASE("query parameters") {
  Uri u = parse_uri("nbds://h/e?tls-certificates=/etc/pki/nbd"
                    "&tls-psk-file=/tmp/keys.psk&tls-hostname=server.example"
                    "&tls-type=psk&tls-verify-peer=0&x-experimental=1"
                    "&unknown=ignored&flag");
  CHECK(u.export_name == "e");
  REQUIRE(u.query.size() == 8);
  CHECK(u.query_value("tls-certificates") == "/etc/pki/nbd");
  CHECK(u.query_value("tls-psk-file") == "/tmp/keys.psk");
  CHECK(u.query_value("tls-hostname") == "server.example");
  CHECK(u.query_value("tls-type") == "psk");
  CHECK(u.query_value("x-experimental") == "1");
  CHECK(u.query_value("unknown") == "ignored");
  CHECK(u.query_value("flag") == "");
  CHECK_FALSE(u.query_value("absent").has_value());
  REQUIRE(u.tls_verify_peer.has_value());
  CHECK_FALSE(*u.tls_verify_peer);

  CHECK(parse_uri("nbds://h/?tls-verify-peer=1").tls_verify_peer == true);
  CHECK(parse_uri("nbds://h/?tls-verify-peer=true").tls_verify_peer == true);
  check_invalid("nbds://h/?tls-verify-peer=maybe", "tls-verify-peer");

  // Encoded names and values; the last duplicate wins in query_value.
  Uri e = parse_uri("nbd://h/?a%2Db=c%3Dd&a-b=x%26y");
  CHECK(e.query.size() == 2);
  CHECK(e.query_value("a-b") == "x&y");
  CHECK(e.query[0].second == "c=d");
  // '=' inside a value is kept; '/' and '?' are legal in queries.
  CHECK(parse_uri("nbd://h/?k=a=b/c?d").query_value("k") == "a=b/c?d");
  // Empty segments and "=value" segments are skipped, as in libnbd.
  Uri s = parse_uri("nbd://h/?&&=v&k=1&");
  REQUIRE(s.query.size() == 1);
  CHECK(s.query[0].first == "k");
  // An empty query.
  CHECK(parse_uri("nbd://h/x?").query.empty());
  // Query without a path.
  CHECK(parse_uri("nbd://h?tls-type=x509").query_value("tls-type") == "x509");
  CHECK(parse_uri("nbd://h?tls-type=x509").export_name == "");
  check_invalid("nbd://h/?k=a%00b", "NUL byte in the value");
}

TEST_CASE("fragments are ignored") {
  Uri u = parse_uri("nbd://h/exp?k=v#frag");
  CHECK(u.export_name == "exp");
  CHECK(u.query_value("k") == "v");
  CHECK(parse_uri("nbd://h/exp#a?b").export_name == "exp");
  check_invalid("nbd://h/exp#a#b", "fragment");
}

TEST_CASE("schemes") {
  CHECK(parse_uri("NBD://h/").kind == Uri::Kind::tcp);
  CHECK(parse_uri("NBDS+Unix:///?socket=s").kind == Uri::Kind::unix_socket);
  check_invalid("http://example.com/", "unknown URI scheme 'http'");
  check_invalid("nbd+tcp://example.com/", "unknown URI scheme");
  check_invalid("nbd+ssh://example.com/", "unknown URI scheme");
  check_invalid("nbdunix:///?socket=s", "unknown URI scheme");
  check_invalid("", "empty URI");
  check_invalid("example.com", "missing URI scheme");
  check_invalid("://example.com", "missing URI scheme");
  check_invalid("1nbd://example.com", "missing URI scheme");
  check_invalid("/tmp/sock", "missing URI scheme");
  check_invalid("nbd:export", "must begin with 'nbd://'");
  check_invalid("nbd:/export", "must begin with 'nbd://'");
  check_invalid("nbd+unix:/?socket=s", "must begin with 'nbd+unix://'");
  check_invalid(" nbd://h/", "invalid character");
  check_invalid("nbd://h/ ", "invalid character");
}

} // TEST_SUITE
