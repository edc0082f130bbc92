// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// NBD URIs (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/uri.md)
// as accepted by libnbd's nbd_connect_uri:
//
//   nbd[s]://[user@][host][:port][/export][?query]
//   nbd[s]+unix://[user@]/[export]?socket=PATH[&...]
//   nbd[s]+vsock://[user@][cid][:port][/export][?query]

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nbd::transport {

struct Uri {
  enum class Kind { tcp, unix_socket, vsock };

  bool tls = false; // nbds*: TLS is required, not merely allowed
  Kind kind = Kind::tcp;

  // Kind::tcp. host has no IPv6 brackets ("::1", "fe80::1%eth0");
  // "localhost" when the URI names none. port is decimal, default "10809".
  std::string host;
  std::string port;

  // Kind::unix_socket: the decoded socket= value; a leading '\0' means
  // Linux's abstract namespace.
  std::string socket_path;

  // Kind::vsock: cid defaults to 2 (the host), port to 10809.
  uint32_t vsock_cid = 0;
  uint32_t vsock_port = 0;

  // The path without its leading '/', percent-decoded ("" if none).
  std::string export_name;

  // Decoded userinfo, used as the TLS username ("" if absent).
  std::string tls_username;

  // tls-verify-peer=0|1|false|true, if present.
  std::optional<bool> tls_verify_peer;

  // Every decoded query parameter in order (socket=, tls-certificates=,
  // tls-psk-file=, tls-hostname=, tls-type=, unknown ones, ...). The URI
  // layer ignores parameters it does not know; callers pick what they use.
  std::vector<std::pair<std::string, std::string>> query;

  /// The value of the last query parameter called `name`, if any.
  std::optional<std::string> query_value(std::string_view name) const;
};

/// Parses an NBD URI. Throws nbd::Error(EINVAL, "connect_uri: <reason>")
/// for anything that is not a valid NBD URI.
Uri parse_uri(std::string_view uri);

} // namespace nbd::transport
