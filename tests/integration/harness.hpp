// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// What integration tests share: starting real servers. Every test starts
// its own nbdkit; the transport under test comes from NBDCPP_TRANSPORT,
// which meson sets to uring for one run of the suite and socket for the
// other.

#include <nbdcpp/handle.hpp>

#include <sys/types.h>

#include <string>
#include <vector>

namespace nbdtest {

/// True when prog is on PATH.
bool have_program(const std::string& prog);

/// nbdkit -s --exit-with-parent ARGS..., for Handle::connect_command.
std::vector<std::string> nbdkit(std::vector<std::string> args);

/// Path of a module built from tests/plugins (e.g. "nbdkit-test-plugin.so").
std::string plugin(const std::string& name = "nbdkit-test-plugin.so");

/// h.connect_command(nbdkit(args)).
void connect(nbd::Handle& h, std::vector<std::string> args);

/// A fresh private directory, removed with its contents at destruction.
class TempDir {
public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

/// A server listening on a unix socket (or TCP port) in the background,
/// for the connect forms that take an address: `nbdkit -f --exit-with-parent
/// -U SOCK -P PIDFILE ARGS...`. The constructor returns once the socket is
/// ready; the destructor stops the server.
class Server {
public:
  explicit Server(std::vector<std::string> args, bool tcp = false);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  const std::string& socket() const { return socket_; }
  const std::string& port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string uri(const std::string& export_name = "") const;

private:
  TempDir dir_;
  std::string socket_, port_;
  pid_t pid_ = -1;
};

/// A byte pattern nbdkit's pattern plugin serves: each 8-byte big-endian
/// word holds its own offset.
std::uint8_t pattern_byte(std::uint64_t offset);

} // namespace nbdtest
