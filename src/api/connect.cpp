// SPDX-License-Identifier: BSD-3-Clause
// Connecting a handle: every connect form, blocking and aio_.

#include "api/handle_impl.hpp"
#include "transport/uri.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace nbd {

namespace {

std::optional<transport::Kind> transport_preference(TransportKind k) {
  switch (k) {
  case TransportKind::uring: return transport::Kind::uring;
  case TransportKind::socket: return transport::Kind::socket;
  case TransportKind::automatic: break;
  }
  return std::nullopt;
}

} // namespace

void Handle::Impl::connect_error(int err, std::string message) {
  connect_failed = true;
  error = err;
  error_message = std::move(message);
  debug_log("connect", error_message);
}

void Handle::Impl::start_connect(const char* fn, transport::Connector c) {
  debug_log(fn, "connecting");
  connector.emplace(std::move(c));
  try {
    if (connector->advance()) {
      auto fd = connector->release();
      connector.reset();
      start_engine(std::move(fd));
    }
  } catch (const Error& e) {
    connector.reset();
    connect_error(e.errnum(), e.what());
    throw;
  }
}

void Handle::Impl::start_engine(transport::UniqueFd fd) {
  try {
    transport = transport::make_transport(std::move(fd), engine, transport_preference(transport_kind));
    transport->set_reply_batching(reply_batching);
  } catch (const Error& e) {
    connect_error(e.errnum(), e.what());
    throw;
  }
  debug_log("connect", fmt::format("connected; transport {}",
                                    transport->kind() == transport::Kind::uring ? "io_uring" : "socket"));
  settings.tls = tls;
  // Also with TLS_DISABLE: option mode may still call opt_starttls.
  tls::TlsConfig c = tls_config;
  if (c.hostname.empty()) c.hostname = tcp_host;
  settings.make_tls = tls::make_factory(std::move(c));
  engine.start(settings);
  transport->flush();
}

void Handle::Impl::apply_uri_tls(const char* fn, const transport::Uri& u) {
  if (u.tls) {
    if (!tls::supported())
      fail(ENOTSUP, fn, "TLS URIs (nbds://) need nbdcpp built with GnuTLS");
    tls = TLS_REQUIRE;
  }
  // As libnbd: a URI may name local files only if the caller allowed it,
  // since URIs often come from elsewhere.
  for (const char* param : {"tls-certificates", "tls-psk-file"})
    if (u.query_value(param) && !uri_allow_local_file)
      fail(EPERM, fn, fmt::format("local file access ({}) is not allowed, call "
                                  "set_uri_allow_local_file to enable this", param));
  if (!u.tls_username.empty()) tls_config.username = u.tls_username;
  if (auto v = u.query_value("tls-username")) tls_config.username = *v;
  if (auto v = u.query_value("tls-certificates")) tls_config.certificates = *v;
  if (auto v = u.query_value("tls-psk-file")) tls_config.psk_file = *v;
  if (auto v = u.query_value("tls-hostname")) tls_config.hostname = *v;
  if (u.tls_verify_peer) tls_config.verify_peer = *u.tls_verify_peer;
}

void Handle::Impl::wait_connected(Lock& lock, const char* fn) {
  run_until(lock, fn, [&] { return !is_connecting(); });
  if (is_dead()) fail(error ? error : ENOTCONN, fn, error_message);
  if (is_closed()) fail(ENOTCONN, fn, "the server closed the connection");
}

#define NBD_LOCK Impl::Lock lock(impl_->mu)

// --- aio_connect_* ------------------------------------------------------------------

void Handle::aio_connect_unix(std::string_view path) {
  NBD_LOCK;
  impl_->require_created("aio_connect_unix");
  impl_->start_connect("aio_connect_unix", transport::Connector::unix_socket(std::string(path)));
}

void Handle::aio_connect_tcp(std::string_view host, std::string_view port) {
  NBD_LOCK;
  impl_->require_created("aio_connect_tcp");
  std::optional<transport::Connector> c;
  try {
    // getaddrinfo blocks here, as it does in libnbd's aio_connect_tcp.
    c.emplace(transport::Connector::tcp(std::string(host), std::string(port)));
  } catch (const Error& e) {
    impl_->connect_error(e.errnum(), e.what());
    throw;
  }
  impl_->tcp_host = host;
  impl_->start_connect("aio_connect_tcp", std::move(*c));
}

void Handle::aio_connect_socket(int fd) {
  NBD_LOCK;
  impl_->require_created("aio_connect_socket");
  int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (dup < 0) impl_->fail(errno, "aio_connect_socket", "cannot use the socket");
  impl_->start_connect("aio_connect_socket",
                       transport::Connector::existing(transport::UniqueFd(dup)));
}

void Handle::aio_connect_command(const std::vector<std::string>& argv) {
  NBD_LOCK;
  impl_->require_created("aio_connect_command");
  if (argv.empty()) impl_->fail(EINVAL, "aio_connect_command", "empty command");
  transport::Subprocess sp;
  try {
    sp = transport::spawn_command(argv);
  } catch (const Error& e) {
    impl_->connect_error(e.errnum(), e.what());
    throw;
  }
  impl_->pid = sp.pid;
  impl_->start_connect("aio_connect_command", transport::Connector::existing(std::move(sp.sock)));
}

void Handle::aio_connect_systemd_socket_activation(const std::vector<std::string>& argv) {
  NBD_LOCK;
  impl_->require_created("aio_connect_systemd_socket_activation");
  if (argv.empty()) impl_->fail(EINVAL, "aio_connect_systemd_socket_activation", "empty command");
  transport::Subprocess sp;
  try {
    sp = transport::spawn_socket_activation(argv);
  } catch (const Error& e) {
    impl_->connect_error(e.errnum(), e.what());
    throw;
  }
  impl_->pid = sp.pid;
  impl_->start_connect("aio_connect_systemd_socket_activation",
                       transport::Connector::existing(std::move(sp.sock)));
}

void Handle::aio_connect_uri(std::string_view uri) {
  NBD_LOCK;
  impl_->require_created("aio_connect_uri");
  transport::Uri u;
  try {
    u = transport::parse_uri(uri);
  } catch (const Error& e) {
    impl_->connect_error(e.errnum(), e.what());
    throw;
  }
  impl_->apply_uri_tls("aio_connect_uri", u);
  impl_->settings.export_name = u.export_name;
  switch (u.kind) {
  case transport::Uri::Kind::unix_socket:
    impl_->start_connect("aio_connect_uri", transport::Connector::unix_socket(u.socket_path));
    break;
  case transport::Uri::Kind::tcp: {
    std::optional<transport::Connector> c;
    try {
      c.emplace(transport::Connector::tcp(u.host, u.port));
    } catch (const Error& e) {
      impl_->connect_error(e.errnum(), e.what());
      throw;
    }
    impl_->tcp_host = u.host;
    impl_->start_connect("aio_connect_uri", std::move(*c));
    break;
  }
  case transport::Uri::Kind::vsock:
    impl_->start_connect("aio_connect_uri", transport::Connector::vsock(u.vsock_cid, u.vsock_port));
    break;
  }
}

// --- blocking forms -------------------------------------------------------------------

void Handle::connect_uri(std::string_view uri) {
  NBD_LOCK;
  aio_connect_uri(uri);
  impl_->wait_connected(lock, "connect_uri");
}

void Handle::connect_unix(std::string_view path) {
  NBD_LOCK;
  aio_connect_unix(path);
  impl_->wait_connected(lock, "connect_unix");
}

void Handle::connect_tcp(std::string_view host, std::string_view port) {
  NBD_LOCK;
  aio_connect_tcp(host, port);
  impl_->wait_connected(lock, "connect_tcp");
}

void Handle::connect_command(const std::vector<std::string>& argv) {
  NBD_LOCK;
  aio_connect_command(argv);
  impl_->wait_connected(lock, "connect_command");
}

void Handle::connect_systemd_socket_activation(const std::vector<std::string>& argv) {
  NBD_LOCK;
  aio_connect_systemd_socket_activation(argv);
  impl_->wait_connected(lock, "connect_systemd_socket_activation");
}

void Handle::connect_socket(int fd) {
  NBD_LOCK;
  aio_connect_socket(fd);
  impl_->wait_connected(lock, "connect_socket");
}

void Handle::kill_subprocess(int signum) {
  NBD_LOCK;
  if (impl_->pid <= 0) impl_->fail(ESRCH, "kill_subprocess", "no subprocess");
  if (signum == 0) signum = SIGTERM;
  if (::kill(impl_->pid, signum) < 0) impl_->fail(errno, "kill_subprocess", "kill failed");
}

int Handle::get_subprocess_pid() const {
  NBD_LOCK;
  if (impl_->pid <= 0) impl_->fail(ESRCH, "get_subprocess_pid", "no subprocess");
  return impl_->pid;
}

} // namespace nbd
