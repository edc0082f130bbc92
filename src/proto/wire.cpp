// SPDX-License-Identifier: BSD-3-Clause
#include "proto/wire.hpp"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstddef>

namespace nbd::wire {

namespace {

// Writes into a buffer sized exactly beforehand: one allocation, and no
// inserts into a growing vector (which g++ 12 misreads as overflows).
class Filler {
public:
  explicit Filler(std::size_t size) : out_(size) {}
  void u32(std::uint32_t v) {
    store32(out_, at_, v);
    at_ += 4;
  }
  void u16(std::uint16_t v) {
    store16(out_, at_, v);
    at_ += 2;
  }
  void bytes(std::string_view s) {
    std::copy(s.begin(), s.end(), out_.begin() + static_cast<std::ptrdiff_t>(at_));
    at_ += s.size();
  }
  std::vector<std::uint8_t> done() {
    assert(at_ == out_.size());
    return std::move(out_);
  }

private:
  std::vector<std::uint8_t> out_;
  std::size_t at_ = 0;
};
std::string to_string(Bytes b) { return std::string(b.begin(), b.end()); }

bool power_of_two(std::uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

} // namespace

std::optional<Style> decode_greeting(Bytes b) {
  if (load64(b, 0) != nbd_magic) return std::nullopt;
  switch (load64(b, 8)) {
  case oldstyle_magic: return Style::oldstyle;
  case ihaveopt_magic: return Style::newstyle;
  default: return std::nullopt;
  }
}

ExportBasics decode_oldstyle_rest(Bytes b) {
  return {load64(b, 0), static_cast<std::uint16_t>(load32(b, 8) & 0xffff)};
}

ExportBasics decode_export_name_reply(Bytes b) { return {load64(b, 0), load16(b, 8)}; }

void encode_client_flags(MutBytes out, std::uint32_t flags) { store32(out, 0, flags); }

void append_option(std::vector<std::uint8_t>& out, std::uint32_t option, Bytes data) {
  std::uint8_t h[option_header_size];
  store64(h, 0, ihaveopt_magic);
  store32(h, 8, option);
  store32(h, 12, static_cast<std::uint32_t>(data.size()));
  out.insert(out.end(), h, h + sizeof h);
  out.insert(out.end(), data.begin(), data.end());
}

std::vector<std::uint8_t> export_name_data(std::string_view name) {
  return {name.begin(), name.end()};
}

std::vector<std::uint8_t> info_data(std::string_view name, std::span<const std::uint16_t> infos) {
  Filler f(4 + name.size() + 2 + 2 * infos.size());
  f.u32(static_cast<std::uint32_t>(name.size()));
  f.bytes(name);
  f.u16(static_cast<std::uint16_t>(infos.size()));
  for (auto i : infos) f.u16(i);
  return f.done();
}

std::vector<std::uint8_t> meta_context_data(std::string_view name,
                                            std::span<const std::string> queries) {
  std::size_t size = 4 + name.size() + 4;
  for (const auto& q : queries) size += 4 + q.size();
  Filler f(size);
  f.u32(static_cast<std::uint32_t>(name.size()));
  f.bytes(name);
  f.u32(static_cast<std::uint32_t>(queries.size()));
  for (const auto& q : queries) {
    f.u32(static_cast<std::uint32_t>(q.size()));
    f.bytes(q);
  }
  return f.done();
}

OptionReplyHeader decode_option_reply_header(Bytes b) {
  return {load64(b, 0), load32(b, 8), load32(b, 12), load32(b, 16)};
}

std::optional<ServerEntry> decode_rep_server(Bytes p) {
  if (p.size() < 4) return std::nullopt;
  std::uint32_t len = load32(p, 0);
  if (len > p.size() - 4 || len > max_string || p.size() - 4 - len > max_string)
    return std::nullopt;
  return ServerEntry{to_string(p.subspan(4, len)), to_string(p.subspan(4 + len))};
}

std::optional<MetaContextEntry> decode_rep_meta_context(Bytes p) {
  if (p.size() < 4 || p.size() - 4 > max_string) return std::nullopt;
  return MetaContextEntry{load32(p, 0), to_string(p.subspan(4))};
}

bool block_size_valid(const BlockSize& bs) {
  if (!power_of_two(bs.minimum) || bs.minimum > 64 * 1024) return false;
  if (!power_of_two(bs.preferred) || bs.preferred < bs.minimum || bs.preferred < 512)
    return false;
  if (bs.maximum == 0xffffffff) return true;
  return bs.maximum >= bs.preferred && bs.maximum % bs.minimum == 0;
}

std::optional<InfoReply> decode_rep_info(Bytes p) {
  if (p.size() < 2) return std::nullopt;
  InfoReply r{};
  r.type = load16(p, 0);
  Bytes rest = p.subspan(2);
  switch (r.type) {
  case info_export:
    if (rest.size() != 10) return std::nullopt;
    r.basics = {load64(rest, 0), load16(rest, 8)};
    break;
  case info_name:
  case info_description:
    if (rest.size() > max_string) return std::nullopt;
    r.text = to_string(rest);
    break;
  case info_block_size:
    if (rest.size() != 12) return std::nullopt;
    r.block_size = {load32(rest, 0), load32(rest, 4), load32(rest, 8)};
    break;
  default:
    break;
  }
  return r;
}

int errno_of_option_error(std::uint32_t type) {
  // libnbd's handle_reply_error sets no errno for POLICY, PLATFORM and
  // unknown errors, and its callers then fall back to ENOTSUP; TOO_BIG is
  // reported as EINVAL ("the operation is too large to process").
  switch (type) {
  case rep_err_unsup: return ENOTSUP;
  case rep_err_policy: return ENOTSUP;
  case rep_err_invalid: return EINVAL;
  case rep_err_platform: return ENOTSUP;
  case rep_err_tls_reqd: return ENOTSUP;
  case rep_err_unknown: return ENOENT;
  case rep_err_shutdown: return ESHUTDOWN;
  case rep_err_block_size_reqd: return EINVAL;
  case rep_err_too_big: return EINVAL;
  case rep_err_ext_header_reqd: return EINVAL;
  default: return ENOTSUP;
  }
}

const char* option_reply_name(std::uint32_t type) {
  switch (type) {
  case rep_ack: return "ACK";
  case rep_server: return "SERVER";
  case rep_info: return "INFO";
  case rep_meta_context: return "META_CONTEXT";
  case rep_err_unsup: return "ERR_UNSUP";
  case rep_err_policy: return "ERR_POLICY";
  case rep_err_invalid: return "ERR_INVALID";
  case rep_err_platform: return "ERR_PLATFORM";
  case rep_err_tls_reqd: return "ERR_TLS_REQD";
  case rep_err_unknown: return "ERR_UNKNOWN";
  case rep_err_shutdown: return "ERR_SHUTDOWN";
  case rep_err_block_size_reqd: return "ERR_BLOCK_SIZE_REQD";
  case rep_err_too_big: return "ERR_TOO_BIG";
  case rep_err_ext_header_reqd: return "ERR_EXT_HEADER_REQD";
  default: return (type & rep_err_bit) ? "ERR_(unknown)" : "(unknown)";
  }
}

const char* option_name(std::uint32_t option) {
  switch (option) {
  case opt_export_name: return "EXPORT_NAME";
  case opt_abort: return "ABORT";
  case opt_list: return "LIST";
  case opt_starttls: return "STARTTLS";
  case opt_info: return "INFO";
  case opt_go: return "GO";
  case opt_structured_reply: return "STRUCTURED_REPLY";
  case opt_list_meta_context: return "LIST_META_CONTEXT";
  case opt_set_meta_context: return "SET_META_CONTEXT";
  case opt_extended_headers: return "EXTENDED_HEADERS";
  default: return "(unknown)";
  }
}

const char* command_name(std::uint16_t type) {
  switch (type) {
  case cmd_read: return "NBD_CMD_READ";
  case cmd_write: return "NBD_CMD_WRITE";
  case cmd_disc: return "NBD_CMD_DISC";
  case cmd_flush: return "NBD_CMD_FLUSH";
  case cmd_trim: return "NBD_CMD_TRIM";
  case cmd_cache: return "NBD_CMD_CACHE";
  case cmd_write_zeroes: return "NBD_CMD_WRITE_ZEROES";
  case cmd_block_status: return "NBD_CMD_BLOCK_STATUS";
  default: return "(unknown)";
  }
}

const char* chunk_name(std::uint16_t type) {
  switch (type) {
  case chunk_none: return "NONE";
  case chunk_offset_data: return "OFFSET_DATA";
  case chunk_offset_hole: return "OFFSET_HOLE";
  case chunk_block_status: return "BLOCK_STATUS";
  case chunk_block_status_ext: return "BLOCK_STATUS_EXT";
  case chunk_error: return "ERROR";
  case chunk_error_offset: return "ERROR_OFFSET";
  default: return "(unknown)";
  }
}

std::size_t encode_request(MutBytes out, const Request& r, bool extended) {
  store32(out, 0, extended ? extended_request_magic : request_magic);
  store16(out, 4, r.flags);
  store16(out, 6, r.type);
  store64(out, 8, r.cookie);
  store64(out, 16, r.offset);
  if (extended) {
    store64(out, 24, r.length);
    return extended_request_size;
  }
  store32(out, 24, static_cast<std::uint32_t>(r.length));
  return request_size;
}

std::optional<Request> decode_request(Bytes b, bool extended) {
  if (load32(b, 0) != (extended ? extended_request_magic : request_magic)) return std::nullopt;
  return Request{load16(b, 4), load16(b, 6), load64(b, 8), load64(b, 16),
                 extended ? load64(b, 24) : load32(b, 24)};
}

ReplyHeader decode_simple_reply(Bytes b) {
  ReplyHeader h;
  h.magic = load32(b, 0);
  h.error = load32(b, 4);
  h.cookie = load64(b, 8);
  return h;
}

ReplyHeader decode_structured_reply(Bytes b) {
  ReplyHeader h;
  h.magic = load32(b, 0);
  h.flags = load16(b, 4);
  h.type = load16(b, 6);
  h.cookie = load64(b, 8);
  h.length = load32(b, 16);
  return h;
}

ReplyHeader decode_extended_reply(Bytes b) {
  ReplyHeader h;
  h.magic = load32(b, 0);
  h.flags = load16(b, 4);
  h.type = load16(b, 6);
  h.cookie = load64(b, 8);
  h.offset = load64(b, 16);
  h.length = load64(b, 24);
  return h;
}

std::size_t encode_simple_reply(MutBytes out, std::uint32_t error, std::uint64_t cookie) {
  store32(out, 0, simple_reply_magic);
  store32(out, 4, error);
  store64(out, 8, cookie);
  return simple_reply_size;
}

std::size_t encode_structured_reply(MutBytes out, std::uint16_t flags, std::uint16_t type,
                                    std::uint64_t cookie, std::uint32_t length) {
  store32(out, 0, structured_reply_magic);
  store16(out, 4, flags);
  store16(out, 6, type);
  store64(out, 8, cookie);
  store32(out, 16, length);
  return structured_reply_size;
}

std::size_t encode_extended_reply(MutBytes out, std::uint16_t flags, std::uint16_t type,
                                  std::uint64_t cookie, std::uint64_t offset,
                                  std::uint64_t length) {
  store32(out, 0, extended_reply_magic);
  store16(out, 4, flags);
  store16(out, 6, type);
  store64(out, 8, cookie);
  store64(out, 16, offset);
  store64(out, 24, length);
  return extended_reply_size;
}

void decode_extents(Bytes d, bool ext, std::vector<Extent>& out) {
  const std::size_t step = ext ? block_status_ext_descriptor : block_status_descriptor;
  for (std::size_t at = 0; at + step <= d.size(); at += step) {
    if (ext)
      out.push_back({load64(d, at), load64(d, at + 8)});
    else
      out.push_back({load32(d, at), load32(d, at + 4)});
  }
}

std::optional<ErrorChunk> decode_error_chunk(Bytes p, bool with_offset) {
  if (p.size() < error_prefix) return std::nullopt;
  std::size_t msglen = load16(p, 4);
  std::size_t need = error_prefix + msglen + (with_offset ? error_offset_suffix : 0);
  // ERROR_OFFSET must be exactly that long; for ERROR the spec allows no
  // trailing bytes either, but libnbd tolerates them, and so do we.
  if (with_offset ? p.size() != need : p.size() < need) return std::nullopt;
  ErrorChunk c{load32(p, 0),
               std::string_view(reinterpret_cast<const char*>(p.data()) + error_prefix, msglen),
               std::nullopt};
  if (with_offset) c.offset = load64(p, error_prefix + msglen);
  return c;
}

int errno_of_nbd_error(std::uint32_t e) {
  switch (e) {
  case nbd_eperm: return EPERM;
  case nbd_eio: return EIO;
  case nbd_enomem: return ENOMEM;
  case nbd_einval: return EINVAL;
  case nbd_enospc: return ENOSPC;
  case nbd_eoverflow: return EOVERFLOW;
  case nbd_enotsup: return ENOTSUP;
  case nbd_eshutdown: return ESHUTDOWN;
  default: return EINVAL;
  }
}

std::uint32_t nbd_error_of_errno(int e) {
  switch (e) {
  case 0: return 0;
  case EPERM: return nbd_eperm;
  case EIO: return nbd_eio;
  case ENOMEM: return nbd_enomem;
  case ENOSPC: return nbd_enospc;
  case EOVERFLOW: return nbd_eoverflow;
  case ENOTSUP: return nbd_enotsup;
  case ESHUTDOWN: return nbd_eshutdown;
  default: return nbd_einval;
  }
}

} // namespace nbd::wire
