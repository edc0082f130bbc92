// SPDX-License-Identifier: BSD-3-Clause
#include "peer.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace hostile {

using Clock = std::chrono::steady_clock;

void put16(Bytes& b, std::uint16_t v) {
  std::uint8_t x[2];
  wire::store16(x, 0, v);
  b.insert(b.end(), x, x + 2);
}
void put32(Bytes& b, std::uint32_t v) {
  std::uint8_t x[4];
  wire::store32(x, 0, v);
  b.insert(b.end(), x, x + 4);
}
void put64(Bytes& b, std::uint64_t v) {
  std::uint8_t x[8];
  wire::store64(x, 0, v);
  b.insert(b.end(), x, x + 8);
}
void put(Bytes& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }

// --- Export ------------------------------------------------------------------------

void Export::write(std::uint64_t off, std::span<const std::uint8_t> data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const std::uint64_t pos = off + done;
    const std::uint64_t in = pos % block;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(block - in, data.size() - done));
    Bytes& b = blocks[pos / block];
    if (b.empty()) b.assign(block, 0);
    std::memcpy(b.data() + in, data.data() + done, n);
    done += n;
  }
}

void Export::read(std::uint64_t off, std::span<std::uint8_t> out) const {
  std::size_t done = 0;
  while (done < out.size()) {
    const std::uint64_t pos = off + done;
    const std::uint64_t in = pos % block;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(block - in, out.size() - done));
    auto it = blocks.find(pos / block);
    if (it == blocks.end())
      std::memset(out.data() + done, 0, n);
    else
      std::memcpy(out.data() + done, it->second.data() + in, n);
    done += n;
  }
}

void Export::zero(std::uint64_t off, std::uint64_t len) {
  std::uint64_t pos = off;
  const std::uint64_t end = off + len;
  while (pos < end) {
    const std::uint64_t in = pos % block;
    const std::uint64_t n = std::min(block - in, end - pos);
    auto it = blocks.find(pos / block);
    if (it != blocks.end()) {
      if (n == block)
        blocks.erase(it);
      else
        std::memset(it->second.data() + in, 0, static_cast<std::size_t>(n));
    }
    pos += n;
  }
}

std::vector<wire::Extent> Export::extents(std::uint64_t off, std::uint64_t len,
                                          std::size_t max_extents) const {
  std::vector<wire::Extent> out;
  const std::uint64_t end = std::min(size, off + len);
  std::uint64_t pos = off;
  while (pos < end && out.size() < max_extents) {
    std::uint64_t b = pos / block;
    const bool alloc = blocks.count(b) != 0;
    std::uint64_t run_end;
    if (alloc) {
      while (blocks.count(b + 1) && (b + 1) * block < end) ++b;
      run_end = (b + 1) * block;
    } else {
      auto it = blocks.upper_bound(b);
      run_end = it == blocks.end() ? end : it->first * block;
    }
    run_end = std::min(run_end, end);
    const std::uint64_t flags = alloc ? 0 : (nbd::STATE_HOLE | nbd::STATE_ZERO);
    if (!out.empty() && out.back().flags == flags)
      out.back().length += run_end - pos;
    else
      out.push_back({run_end - pos, flags});
    pos = run_end;
  }
  return out;
}

// --- Conn: raw bytes -------------------------------------------------------------------

Conn::Conn(int fd, std::chrono::milliseconds timeout) : fd_(fd), timeout_(timeout) {}

void Conn::wait_for(short events) {
  pollfd p{fd_, events, 0};
  for (;;) {
    int r = ::poll(&p, 1, static_cast<int>(timeout_.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw ScriptError(std::string("poll: ") + std::strerror(errno));
    if (r == 0)
      throw ScriptError(std::string("timed out waiting for the client to ") +
                        ((events & POLLIN) ? "send" : "read"));
    return;
  }
}

Conn& Conn::send(std::span<const std::uint8_t> b) {
  std::size_t done = 0;
  while (done < b.size()) {
    wait_for(POLLOUT);
    ssize_t r = ::send(fd_, b.data() + done, b.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == EPIPE || errno == ECONNRESET) throw ClientGone("client hung up while we sent");
      throw ScriptError(std::string("send: ") + std::strerror(errno));
    }
    done += static_cast<std::size_t>(r);
  }
  return *this;
}

Conn& Conn::send_u16(std::uint16_t v) {
  Bytes b;
  put16(b, v);
  return send(b);
}
Conn& Conn::send_u32(std::uint32_t v) {
  Bytes b;
  put32(b, v);
  return send(b);
}
Conn& Conn::send_u64(std::uint64_t v) {
  Bytes b;
  put64(b, v);
  return send(b);
}

Bytes Conn::recv(std::size_t n) {
  Bytes b(n);
  std::size_t done = 0;
  while (done < n) {
    wait_for(POLLIN);
    ssize_t r = ::recv(fd_, b.data() + done, n - done, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ECONNRESET) throw ClientGone("client reset the connection");
      throw ScriptError(std::string("recv: ") + std::strerror(errno));
    }
    if (r == 0)
      throw ClientGone("client closed the connection after " + std::to_string(done) + " of " +
                       std::to_string(n) + " bytes");
    done += static_cast<std::size_t>(r);
  }
  return b;
}

bool Conn::wait_eof(std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  std::uint8_t buf[65536];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EINTR && errno != EAGAIN) return true;
  }
}

void Conn::close() { ::shutdown(fd_, SHUT_RDWR); }

// --- Conn: handshake ---------------------------------------------------------------------

Conn& Conn::greet_newstyle(std::uint16_t flags) {
  Bytes b;
  put64(b, wire::nbd_magic);
  put64(b, wire::ihaveopt_magic);
  put16(b, flags);
  return send(b);
}

Conn& Conn::greet_oldstyle(std::uint64_t size, std::uint16_t eflags) {
  Bytes b;
  put64(b, wire::nbd_magic);
  put64(b, wire::oldstyle_magic);
  put64(b, size);
  put32(b, eflags);
  b.resize(b.size() + 124, 0);
  return send(b);
}

Conn& Conn::expect_client_flags() {
  client_flags_ = wire::load32(recv(4), 0);
  return *this;
}

OptionRequest Conn::read_option() {
  Bytes h = recv(wire::option_header_size);
  if (wire::load64(h, 0) != wire::ihaveopt_magic) throw ScriptError("client sent a bad option magic");
  const std::uint32_t len = wire::load32(h, 12);
  if (len > 1u << 20) throw ScriptError("client sent an option of length " + std::to_string(len));
  last_ = {wire::load32(h, 8), recv(len)};
  return last_;
}

Conn& Conn::expect_option(std::uint32_t option) {
  read_option();
  if (last_.option != option)
    throw ScriptError(std::string("expected NBD_OPT_") + wire::option_name(option) +
                      ", client sent NBD_OPT_" + wire::option_name(last_.option));
  return *this;
}

Conn& Conn::option_reply_raw(std::uint32_t option, std::uint32_t type, std::uint32_t length,
                             std::span<const std::uint8_t> data, std::uint64_t magic) {
  Bytes b;
  put64(b, magic);
  put32(b, option);
  put32(b, type);
  put32(b, length);
  b.insert(b.end(), data.begin(), data.end());
  return send(b);
}

Conn& Conn::reply(std::uint32_t type, const Bytes& data) {
  return option_reply_raw(last_.option, type, static_cast<std::uint32_t>(data.size()), data);
}

Conn& Conn::reply_info_export(std::uint64_t size, std::uint16_t eflags) {
  Bytes b;
  put16(b, wire::info_export);
  put64(b, size);
  put16(b, eflags);
  return reply(wire::rep_info, b);
}

Conn& Conn::reply_server(std::string_view name, std::string_view description) {
  Bytes b;
  put32(b, static_cast<std::uint32_t>(name.size()));
  put(b, name);
  put(b, description);
  return reply(wire::rep_server, b);
}

Conn& Conn::reply_meta_context(std::uint32_t id, std::string_view name) {
  Bytes b;
  put32(b, id);
  put(b, name);
  return reply(wire::rep_meta_context, b);
}

std::uint32_t Conn::context_id(std::string_view name) const {
  for (const auto& [id, n] : contexts_)
    if (n == name) return id;
  return 0;
}

namespace {

// A cursor over option data; ScriptError when the client's data is short.
struct Reader {
  const Bytes& b;
  std::size_t at = 0;
  void need(std::size_t n) const {
    if (b.size() - at < n) throw ScriptError("client sent truncated option data");
  }
  std::uint16_t u16() {
    need(2);
    auto v = wire::load16(b, at);
    at += 2;
    return v;
  }
  std::uint32_t u32() {
    need(4);
    auto v = wire::load32(b, at);
    at += 4;
    return v;
  }
  std::string str(std::size_t n) {
    need(n);
    std::string s(b.begin() + static_cast<std::ptrdiff_t>(at),
                  b.begin() + static_cast<std::ptrdiff_t>(at + n));
    at += n;
    return s;
  }
};

} // namespace

bool Conn::negotiate(Export& exp) {
  for (;;) {
    OptionRequest o = read_option();
    switch (o.option) {
    case wire::opt_export_name: {
      if (std::string(o.data.begin(), o.data.end()) != exp.name) {
        close(); // what old servers do for an unknown export
        return false;
      }
      Bytes b;
      put64(b, exp.size);
      put16(b, exp.eflags);
      if (!(client_flags_ & wire::flag_no_zeroes)) b.resize(b.size() + 124, 0);
      send(b);
      return true;
    }
    case wire::opt_abort: reply_ack(); return false;
    case wire::opt_list:
      if (exp.list.empty())
        reply_server(exp.name);
      else
        for (const auto& [n, d] : exp.list) reply_server(n, d);
      reply_ack();
      break;
    case wire::opt_info:
    case wire::opt_go: {
      Reader r{o.data};
      std::string name = r.str(r.u32());
      std::uint16_t n = r.u16();
      std::vector<std::uint16_t> infos;
      for (std::uint16_t i = 0; i < n; ++i) infos.push_back(r.u16());
      if (name != exp.name) {
        reply(wire::rep_err_unknown);
        break;
      }
      reply_info_export(exp.size, exp.eflags);
      if (exp.block_size) {
        Bytes b;
        put16(b, wire::info_block_size);
        put32(b, exp.block_size->minimum);
        put32(b, exp.block_size->preferred);
        put32(b, exp.block_size->maximum);
        reply(wire::rep_info, b);
      }
      if (std::find(infos.begin(), infos.end(), wire::info_name) != infos.end()) {
        Bytes b;
        put16(b, wire::info_name);
        put(b, exp.name);
        reply(wire::rep_info, b);
      }
      reply_ack();
      if (o.option == wire::opt_go) return true;
      break;
    }
    case wire::opt_structured_reply:
      if (exp.structured) {
        structured_ = true;
        reply_ack();
      } else {
        reply(wire::rep_err_unsup);
      }
      break;
    case wire::opt_extended_headers:
      if (exp.extended) {
        structured_ = extended_ = true;
        reply_ack();
      } else {
        reply(wire::rep_err_unsup);
      }
      break;
    case wire::opt_list_meta_context:
    case wire::opt_set_meta_context: {
      const bool set = o.option == wire::opt_set_meta_context;
      if (!structured_) {
        reply(wire::rep_err_invalid);
        break;
      }
      Reader r{o.data};
      r.str(r.u32()); // export name
      std::uint32_t n = r.u32();
      std::vector<std::string> queries;
      for (std::uint32_t i = 0; i < n; ++i) queries.push_back(r.str(r.u32()));
      if (set) contexts_.clear();
      for (std::size_t i = 0; i < exp.contexts.size(); ++i) {
        const std::string& c = exp.contexts[i];
        bool wanted = (!set && queries.empty()) ||
                      std::find(queries.begin(), queries.end(), c) != queries.end();
        if (!wanted) continue;
        const auto id = static_cast<std::uint32_t>(i + 1);
        reply_meta_context(set ? id : 0, c);
        if (set) contexts_.emplace_back(id, c);
      }
      reply_ack();
      break;
    }
    default: reply(wire::rep_err_unsup); break;
    }
  }
}

bool Conn::handshake(Export& exp) {
  greet_newstyle();
  expect_client_flags();
  return negotiate(exp);
}

// --- Conn: transmission ------------------------------------------------------------------

Request Conn::read_request() {
  const std::size_t size = extended_ ? wire::extended_request_size : wire::request_size;
  Bytes h = recv(size);
  auto r = wire::decode_request(h, extended_);
  if (!r) throw ScriptError("client sent a request with a bad magic");
  Request q{r->flags, r->type, r->cookie, r->offset, r->length, {}};
  const bool payload = q.type == wire::cmd_write ||
                       (extended_ && (q.flags & wire::cmd_flag_payload_len));
  if (payload) {
    if (q.length > 128u << 20) throw ScriptError("client sent a huge write");
    q.payload = recv(static_cast<std::size_t>(q.length));
  }
  return q;
}

Conn& Conn::simple_reply(std::uint64_t cookie, std::uint32_t error, const Bytes& payload) {
  Bytes b(wire::simple_reply_size);
  wire::encode_simple_reply(b, error, cookie);
  b.insert(b.end(), payload.begin(), payload.end());
  return send(b);
}

Conn& Conn::structured_header(std::uint64_t cookie, std::uint16_t flags, std::uint16_t type,
                              std::uint32_t length) {
  Bytes b(wire::structured_reply_size);
  wire::encode_structured_reply(b, flags, type, cookie, length);
  return send(b);
}

Conn& Conn::extended_header(std::uint64_t cookie, std::uint16_t flags, std::uint16_t type,
                            std::uint64_t offset, std::uint64_t length) {
  Bytes b(wire::extended_reply_size);
  wire::encode_extended_reply(b, flags, type, cookie, offset, length);
  return send(b);
}

Conn& Conn::chunk(std::uint64_t cookie, std::uint16_t flags, std::uint16_t type,
                  const Bytes& payload, std::uint64_t offset) {
  // One send per chunk, header and payload together, as servers do.
  Bytes b(extended_ ? wire::extended_reply_size : wire::structured_reply_size);
  if (extended_)
    wire::encode_extended_reply(b, flags, type, cookie, offset, payload.size());
  else
    wire::encode_structured_reply(b, flags, type, cookie, static_cast<std::uint32_t>(payload.size()));
  b.insert(b.end(), payload.begin(), payload.end());
  return send(b);
}

Conn& Conn::data_chunk(const Request& r, std::uint64_t offset, std::span<const std::uint8_t> data,
                       bool done) {
  Bytes p;
  put64(p, offset);
  p.insert(p.end(), data.begin(), data.end());
  return chunk(r.cookie, done ? wire::reply_flag_done : 0, wire::chunk_offset_data, p, r.offset);
}

Conn& Conn::hole_chunk(const Request& r, std::uint64_t offset, std::uint32_t length, bool done) {
  Bytes p;
  put64(p, offset);
  put32(p, length);
  return chunk(r.cookie, done ? wire::reply_flag_done : 0, wire::chunk_offset_hole, p, r.offset);
}

Conn& Conn::error_chunk(const Request& r, std::uint32_t nbd_error, std::string_view message,
                        bool done, std::optional<std::uint64_t> offset) {
  Bytes p;
  put32(p, nbd_error);
  put16(p, static_cast<std::uint16_t>(message.size()));
  put(p, message);
  if (offset) put64(p, *offset);
  return chunk(r.cookie, done ? wire::reply_flag_done : 0,
               offset ? wire::chunk_error_offset : wire::chunk_error, p, r.offset);
}

Conn& Conn::done_chunk(const Request& r) {
  return chunk(r.cookie, wire::reply_flag_done, wire::chunk_none, {}, r.offset);
}

Conn& Conn::block_status_chunk(const Request& r, std::uint32_t context_id,
                               const std::vector<wire::Extent>& extents, bool done) {
  Bytes p;
  put32(p, context_id);
  if (extended_) {
    put32(p, static_cast<std::uint32_t>(extents.size()));
    for (const auto& e : extents) {
      put64(p, e.length);
      put64(p, e.flags);
    }
  } else {
    for (const auto& e : extents) {
      put32(p, static_cast<std::uint32_t>(e.length));
      put32(p, static_cast<std::uint32_t>(e.flags));
    }
  }
  return chunk(r.cookie, done ? wire::reply_flag_done : 0,
               extended_ ? wire::chunk_block_status_ext : wire::chunk_block_status, p, r.offset);
}

void Conn::answer(Export& exp, const Request& r) {
  auto ok = [&] {
    if (extended_)
      done_chunk(r);
    else
      simple_reply(r.cookie);
  };
  auto fail = [&](std::uint32_t err) {
    if (structured_ && (extended_ || r.type == wire::cmd_read || r.type == wire::cmd_block_status))
      error_chunk(r, err, "refused by the test peer", true);
    else
      simple_reply(r.cookie, err);
  };
  const bool in_bounds = r.offset <= exp.size && r.length <= exp.size - r.offset;
  switch (r.type) {
  case wire::cmd_read: {
    if (!in_bounds) return fail(wire::nbd_einval);
    Bytes data(static_cast<std::size_t>(r.length));
    exp.read(r.offset, data);
    if (!structured_) return void(simple_reply(r.cookie, 0, data));
    if ((r.flags & wire::cmd_flag_df) || r.length == 0)
      return void(data_chunk(r, r.offset, data, true));
    auto runs = exp.extents(r.offset, r.length);
    std::uint64_t pos = r.offset;
    for (std::size_t i = 0; i < runs.size(); ++i) {
      const bool last = i + 1 == runs.size();
      const std::uint64_t len = runs[i].length;
      if (runs[i].flags & nbd::STATE_HOLE)
        hole_chunk(r, pos, static_cast<std::uint32_t>(len), last);
      else
        data_chunk(r, pos,
                   std::span<const std::uint8_t>(data).subspan(static_cast<std::size_t>(pos - r.offset),
                                                               static_cast<std::size_t>(len)),
                   last);
      pos += len;
    }
    return;
  }
  case wire::cmd_write:
    if (exp.eflags & wire::tflag_read_only) return fail(wire::nbd_eperm);
    if (!in_bounds) return fail(wire::nbd_enospc);
    exp.write(r.offset, r.payload);
    return ok();
  case wire::cmd_trim:
  case wire::cmd_write_zeroes:
    if (!in_bounds) return fail(wire::nbd_enospc);
    exp.zero(r.offset, r.length);
    return ok();
  case wire::cmd_flush:
  case wire::cmd_cache: return ok();
  case wire::cmd_block_status: {
    if (!in_bounds || contexts_.empty()) return fail(wire::nbd_einval);
    for (std::size_t i = 0; i < contexts_.size(); ++i) {
      const bool last = i + 1 == contexts_.size();
      std::vector<wire::Extent> ex;
      if (contexts_[i].second == "base:allocation")
        ex = exp.extents(r.offset, r.length, (r.flags & wire::cmd_flag_req_one) ? 1 : 1u << 20);
      else
        ex = {{r.length, 0}};
      if (!extended_)
        for (auto& e : ex) e.length = std::min<std::uint64_t>(e.length, 0xfffff000u);
      block_status_chunk(r, contexts_[i].first, ex, last);
    }
    return;
  }
  default: return fail(wire::nbd_einval);
  }
}

void Conn::serve(Export& exp, const std::function<bool(Conn&, const Request&)>& hook) {
  for (;;) {
    Request r;
    try {
      r = read_request();
    } catch (const ClientGone&) {
      return;
    }
    if (r.type == wire::cmd_disc) return;
    if (hook && hook(*this, r)) continue;
    answer(exp, r);
  }
}

// --- Peer ----------------------------------------------------------------------------------

Peer::Peer(Script script, std::chrono::milliseconds op_timeout, std::chrono::milliseconds deadline)
    : op_timeout_(op_timeout) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    throw std::runtime_error(std::string("socketpair: ") + std::strerror(errno));
  server_fd_ = sv[0];
  client_fd_ = sv[1];
  thread_ = std::thread([this, s = std::move(script)]() mutable { run(std::move(s)); });
  watchdog_ = std::thread([this, deadline] {
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, deadline, [&] { return finished_; })) return;
    error_ += "watchdog: the test ran past its deadline of " + std::to_string(deadline.count()) +
              " ms; hung up on the client. ";
    ::shutdown(server_fd_, SHUT_RDWR);
    if (cv_.wait_for(lock, 60s, [&] { return finished_; })) return;
    std::fprintf(stderr, "hostile: FATAL: the client still hangs 60 s after the server hung up\n");
    std::fflush(stderr);
    std::_Exit(1);
  });
}

void Peer::run(Script script) {
  Conn c(server_fd_, op_timeout_);
  std::string err;
  try {
    script(c);
    // Linger until the client hangs up, so that whatever it still sends
    // (NBD_CMD_DISC, NBD_OPT_ABORT) does not meet a closed socket.
    c.wait_eof(op_timeout_);
  } catch (const ClientGone&) {
    // A client hanging up on a hostile server is what the tests expect;
    // one that hangs up too early fails the test's own checks instead.
  } catch (const std::exception& e) {
    err = std::string("server script: ") + e.what();
  }
  ::shutdown(server_fd_, SHUT_RDWR);
  std::lock_guard lock(mu_);
  error_ += err;
}

Peer::~Peer() {
  finish();
  if (client_fd_ >= 0) ::close(client_fd_);
  ::close(server_fd_);
}

void Peer::connect(nbd::Handle& h) {
  int fd = std::exchange(client_fd_, -1);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  h.connect_socket(fd);
}

void Peer::aio_connect(nbd::Handle& h) {
  int fd = std::exchange(client_fd_, -1);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  h.aio_connect_socket(fd);
}

std::string Peer::finish() {
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lock(mu_);
    finished_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  std::lock_guard lock(mu_);
  return error_;
}

void Peer::hangup() { ::shutdown(server_fd_, SHUT_RDWR); }

// --- client-side helpers ----------------------------------------------------------------------

bool drive_until(nbd::Handle& h, const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    if (h.aio_is_dead() || h.aio_is_closed()) return done();
    std::error_code ec;
    h.poll(50, ec);
    if (ec && !h.aio_is_dead() && !h.aio_is_closed()) return done();
  }
  return true;
}

std::uint64_t peak_rss() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<std::uint64_t>(u.ru_maxrss) * 1024;
}

std::uint64_t current_rss() {
  std::ifstream f("/proc/self/statm");
  std::uint64_t total = 0, resident = 0;
  f >> total >> resident;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

} // namespace hostile
