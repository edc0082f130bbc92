// SPDX-License-Identifier: BSD-3-Clause

#include "transport/uri.hpp"

#include <nbdcpp/error.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <limits>
#include <system_error>

namespace nbd::transport {

namespace {

constexpr uint32_t default_port = 10809; // IANA-assigned NBD port
constexpr uint32_t vmaddr_cid_host = 2;  // AF_VSOCK: the hypervisor

[[noreturn]] void invalid(const std::string& reason) {
  throw Error(EINVAL, "connect_uri: " + reason);
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int hex_value(char c) {
  if (is_digit(c))
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return c - 'A' + 10;
}

// RFC 3986 section 2: the only characters that may appear in a URI
// literally. Anything else (space, quotes, non-ASCII, controls) must be
// percent-encoded.
bool is_uri_char(char c) {
  if (is_alpha(c) || is_digit(c))
    return true;
  switch (c) {
  case '-': case '.': case '_': case '~':                      // unreserved
  case ':': case '/': case '?': case '#': case '[': case ']':  // gen-delims
  case '@':
  case '!': case '$': case '&': case '\'': case '(': case ')': // sub-delims
  case '*': case '+': case ',': case ';': case '=':
  case '%':
    return true;
  default:
    return false;
  }
}

std::string describe_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f)
    return std::string("'") + c + "'";
  static constexpr char digits[] = "0123456789abcdef";
  return std::string("byte 0x") + digits[u >> 4] + digits[u & 15];
}

// Checks the character set and that every '%' starts a %XX escape.
void check_syntax(std::string_view uri) {
  for (std::size_t i = 0; i < uri.size(); ++i) {
    char c = uri[i];
    if (!is_uri_char(c))
      invalid("invalid character " + describe_char(c) + " at offset " +
              std::to_string(i) + " (it must be percent-encoded)");
    if (c == '%' &&
        (i + 2 >= uri.size() || !is_hex(uri[i + 1]) || !is_hex(uri[i + 2])))
      invalid("bad percent-encoding at offset " + std::to_string(i) +
              " ('%' must be followed by two hex digits)");
  }
}

// Decodes %XX escapes (already validated by check_syntax). '+' stays '+':
// that is an HTML-form convention, not part of RFC 3986.
std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 +
                                      hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool contains_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

// Parses a decimal number in [min, max]; nullopt if it is not one.
std::optional<uint32_t> parse_decimal(std::string_view s, uint32_t min,
                                      uint32_t max) {
  if (s.empty())
    return std::nullopt;
  for (char c : s)
    if (!is_digit(c))
      return std::nullopt;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < min || v > max)
    return std::nullopt;
  return static_cast<uint32_t>(v);
}

struct Scheme {
  std::string_view name;
  Uri::Kind kind;
  bool tls;
};

constexpr Scheme schemes[] = {
    {"nbd", Uri::Kind::tcp, false},
    {"nbds", Uri::Kind::tcp, true},
    {"nbd+unix", Uri::Kind::unix_socket, false},
    {"nbds+unix", Uri::Kind::unix_socket, true},
    {"nbd+vsock", Uri::Kind::vsock, false},
    {"nbds+vsock", Uri::Kind::vsock, true},
};

// Authority split into its raw (still encoded) pieces.
struct Authority {
  std::optional<std::string_view> userinfo;
  std::string_view host; // without brackets
  bool bracketed = false;
  std::string_view port; // empty: not given (or "host:")
};

Authority split_authority(std::string_view a) {
  Authority out;
  // '@' cannot appear unencoded in userinfo or host, so the last one is
  // the delimiter.
  std::size_t at = a.rfind('@');
  if (at != std::string_view::npos) {
    out.userinfo = a.substr(0, at);
    a.remove_prefix(at + 1);
    if (out.userinfo->find_first_of("[]") != std::string_view::npos)
      invalid("'[' or ']' in the userinfo part");
  }
  if (!a.empty() && a[0] == '[') {
    std::size_t close = a.find(']');
    if (close == std::string_view::npos)
      invalid("unterminated '[' in IPv6 address");
    out.host = a.substr(1, close - 1);
    out.bracketed = true;
    std::string_view rest = a.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':')
        invalid("unexpected text after ']' (expected ':PORT')");
      out.port = rest.substr(1);
    }
  } else {
    std::size_t colon = a.find(':');
    out.host = a.substr(0, colon);
    if (colon != std::string_view::npos)
      out.port = a.substr(colon + 1);
    if (out.host.find_first_of("[]") != std::string_view::npos)
      invalid("'[' or ']' in host name");
    if (out.port.find(':') != std::string_view::npos)
      invalid("too many ':' in the authority (IPv6 addresses must be "
              "enclosed in brackets, e.g. nbd://[::1]:10809/)");
  }
  if (out.port.find_first_of("[]") != std::string_view::npos)
    invalid("'[' or ']' in port");
  return out;
}

// Checks an IPv6 literal (RFC 3986 IP-literal, plus RFC 6874 zone IDs
// written as "%25zone") and returns it decoded, e.g. "fe80::1%eth0", which
// is the form getaddrinfo() understands.
std::string ipv6_literal(std::string_view lit) {
  if (!lit.empty() && (lit[0] == 'v' || lit[0] == 'V'))
    invalid("IPvFuture addresses are not supported");
  std::string_view addr = lit;
  std::string zone;
  std::size_t pct = lit.find('%');
  if (pct != std::string_view::npos) {
    addr = lit.substr(0, pct);
    if (lit.substr(pct, 3) != "%25" || pct + 3 == lit.size())
      invalid("bad IPv6 zone ID (write it as %25ZONE, e.g. [fe80::1%25eth0])");
    zone = percent_decode(lit.substr(pct + 3));
    if (contains_nul(zone) || zone.find_first_of("%/") != std::string::npos)
      invalid("bad IPv6 zone ID");
  }
  in6_addr tmp;
  std::string a(addr);
  if (::inet_pton(AF_INET6, a.c_str(), &tmp) != 1)
    invalid("invalid IPv6 address [" + std::string(lit) + "]");
  return zone.empty() ? a : a + "%" + zone;
}

std::optional<bool> parse_bool(std::string_view v) {
  if (v == "1" || v == "true" || v == "yes" || v == "on")
    return true;
  if (v == "0" || v == "false" || v == "no" || v == "off")
    return false;
  return std::nullopt;
}

} // namespace

std::optional<std::string> Uri::query_value(std::string_view name) const {
  for (auto it = query.rbegin(); it != query.rend(); ++it)
    if (it->first == name)
      return it->second;
  return std::nullopt;
}

Uri parse_uri(std::string_view raw) {
  if (raw.empty())
    invalid("empty URI");
  check_syntax(raw);

  // Scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), compared
  // case-insensitively).
  std::size_t colon = raw.find(':');
  if (colon == std::string_view::npos || colon == 0)
    invalid("missing URI scheme (expected e.g. nbd://HOST/EXPORT)");
  std::string scheme;
  for (char c : raw.substr(0, colon)) {
    if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.')
      invalid("missing URI scheme (expected e.g. nbd://HOST/EXPORT)");
    scheme.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a')
                                          : c);
  }
  if (!is_alpha(scheme[0]))
    invalid("missing URI scheme (expected e.g. nbd://HOST/EXPORT)");

  const Scheme* sch = nullptr;
  for (const Scheme& s : schemes)
    if (s.name == scheme)
      sch = &s;
  if (sch == nullptr)
    invalid("unknown URI scheme '" + scheme +
            "' (expected nbd, nbds, nbd+unix, nbds+unix, nbd+vsock or "
            "nbds+vsock)");

  Uri uri;
  uri.kind = sch->kind;
  uri.tls = sch->tls;

  // Like libnbd, insist on scheme://[authority][/export][?query]: forms
  // such as "nbd:export" or "nbd:/export" are valid RFC 3986 but not NBD
  // URIs.
  std::string_view rest = raw.substr(colon + 1);
  if (rest.substr(0, 2) != "//")
    invalid("URI must begin with '" + scheme + "://'");
  rest.remove_prefix(2);

  // Split off the fragment (ignored: it has no meaning for NBD), the
  // query, the path and the authority.
  std::size_t hash = rest.find('#');
  std::string_view fragment;
  if (hash != std::string_view::npos) {
    fragment = rest.substr(hash + 1);
    rest = rest.substr(0, hash);
  }
  if (fragment.find_first_of("#[]") != std::string_view::npos)
    invalid("invalid character in fragment");

  std::string_view query_raw;
  std::size_t qmark = rest.find('?');
  if (qmark != std::string_view::npos) {
    query_raw = rest.substr(qmark + 1);
    rest = rest.substr(0, qmark);
  }
  if (query_raw.find_first_of("[]") != std::string_view::npos)
    invalid("'[' or ']' in the query string");

  std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path =
      slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (path.find_first_of("[]") != std::string_view::npos)
    invalid("'[' or ']' in the export name (they must be percent-encoded)");

  // Authority.
  Authority auth = split_authority(authority);
  if (auth.userinfo) {
    uri.tls_username = percent_decode(*auth.userinfo);
    if (contains_nul(uri.tls_username))
      invalid("NUL byte in the user name");
  }

  const std::string_view scheme_name = sch->name;
  switch (uri.kind) {
  case Uri::Kind::tcp: {
    if (auth.bracketed) {
      uri.host = ipv6_literal(auth.host);
    } else {
      uri.host = percent_decode(auth.host);
      if (contains_nul(uri.host))
        invalid("NUL byte in host name");
    }
    // An absent host means the local machine, as in libnbd.
    if (uri.host.empty())
      uri.host = "localhost";
    uint32_t port = default_port;
    if (!auth.port.empty()) {
      auto p = parse_decimal(auth.port, 1, 65535);
      if (!p)
        invalid("invalid TCP port '" + std::string(auth.port) +
                "' (expected a number from 1 to 65535)");
      port = *p;
    }
    uri.port = std::to_string(port);
    break;
  }
  case Uri::Kind::unix_socket:
    // doc/uri.md leaves this to the client; a host here is almost surely
    // a mistake (the socket comes from socket=), so say so rather than
    // silently ignoring it.
    if (!auth.host.empty() || auth.bracketed || !auth.port.empty())
      invalid(std::string(scheme_name) +
              " URIs must not contain a host or port (the socket comes from "
              "the socket= parameter)");
    break;
  case Uri::Kind::vsock: {
    if (auth.bracketed)
      invalid("the host part of an " + std::string(scheme_name) +
              " URI must be a numeric CID, not an IPv6 address");
    uri.vsock_cid = vmaddr_cid_host;
    if (!auth.host.empty()) {
      auto cid = parse_decimal(percent_decode(auth.host), 0,
                               std::numeric_limits<uint32_t>::max());
      if (!cid)
        invalid("invalid vsock CID '" + std::string(auth.host) +
                "' (expected a number, e.g. 2 for the host)");
      uri.vsock_cid = *cid;
    }
    uri.vsock_port = default_port;
    if (!auth.port.empty()) {
      auto p = parse_decimal(auth.port, 1, std::numeric_limits<uint32_t>::max());
      if (!p)
        invalid("invalid vsock port '" + std::string(auth.port) + "'");
      uri.vsock_port = *p;
    }
    break;
  }
  }

  // Export name: the path minus its leading '/' (so "//disk" -> "/disk").
  if (!path.empty()) {
    uri.export_name = percent_decode(path.substr(1));
    if (contains_nul(uri.export_name))
      invalid("NUL byte in the export name");
  }

  // Query: name[=value] pairs separated by '&'. Like libnbd (and CGI.pm),
  // "name" alone means an empty value, and empty segments and segments with
  // an empty name ("=value") are skipped.
  bool have_socket = false;
  while (!query_raw.empty()) {
    std::size_t amp = query_raw.find('&');
    std::string_view seg = query_raw.substr(0, amp);
    query_raw = amp == std::string_view::npos ? std::string_view()
                                              : query_raw.substr(amp + 1);
    if (seg.empty())
      continue;
    std::size_t eq = seg.find('=');
    if (eq == 0)
      continue;
    std::string name = percent_decode(seg.substr(0, eq));
    std::string value = eq == std::string_view::npos
                            ? std::string()
                            : percent_decode(seg.substr(eq + 1));
    if (contains_nul(name))
      invalid("NUL byte in a query parameter name");

    if (name == "socket") {
      if (uri.kind != Uri::Kind::unix_socket)
        invalid("socket= is only valid with nbd+unix:// or nbds+unix:// "
                "URIs, not " + std::string(scheme_name) + "://");
      if (have_socket)
        invalid("socket= given more than once");
      if (value.empty())
        invalid("socket= must not be empty");
      // A leading NUL selects the abstract namespace (doc/uri.md);
      // anywhere else it would silently truncate the path.
      if (value.find('\0', 1) != std::string::npos)
        invalid("NUL byte inside the socket= path");
      have_socket = true;
      uri.socket_path = value;
    } else {
      if (contains_nul(value))
        invalid("NUL byte in the value of query parameter '" + name + "'");
      if (name == "tls-verify-peer") {
        auto b = parse_bool(value);
        if (!b)
          invalid("tls-verify-peer must be 0 or 1, not '" + value + "'");
        uri.tls_verify_peer = b;
      }
    }
    uri.query.emplace_back(std::move(name), std::move(value));
  }

  if (uri.kind == Uri::Kind::unix_socket && !have_socket)
    invalid(std::string(scheme_name) +
            " URIs require a socket= query parameter, e.g. " +
            std::string(scheme_name) + ":///?socket=/path/to/sock");

  return uri;
}

} // namespace nbd::transport
