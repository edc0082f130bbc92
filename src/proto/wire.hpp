// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// The NBD wire format (NetworkBlockDevice/nbd doc/proto.md): constants,
// explicit big-endian loads and stores, and one encoder or decoder per
// message. This is the only code in nbdcpp that knows byte layouts. Decoders
// take spans of exactly the size the message needs (the engine only hands
// them complete messages) and never trust a length without checking it.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nbd::wire {

using Bytes = std::span<const std::uint8_t>;
using MutBytes = std::span<std::uint8_t>;

// --- big-endian primitives ----------------------------------------------

inline std::uint16_t load16(Bytes b, std::size_t at) {
  return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}
inline std::uint32_t load32(Bytes b, std::size_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) |
         (std::uint32_t{b[at + 2]} << 8) | std::uint32_t{b[at + 3]};
}
inline std::uint64_t load64(Bytes b, std::size_t at) {
  return (std::uint64_t{load32(b, at)} << 32) | load32(b, at + 4);
}
inline void store16(MutBytes b, std::size_t at, std::uint16_t v) {
  b[at] = static_cast<std::uint8_t>(v >> 8);
  b[at + 1] = static_cast<std::uint8_t>(v);
}
inline void store32(MutBytes b, std::size_t at, std::uint32_t v) {
  store16(b, at, static_cast<std::uint16_t>(v >> 16));
  store16(b, at + 2, static_cast<std::uint16_t>(v));
}
inline void store64(MutBytes b, std::size_t at, std::uint64_t v) {
  store32(b, at, static_cast<std::uint32_t>(v >> 32));
  store32(b, at + 4, static_cast<std::uint32_t>(v));
}

// --- magics --------------------------------------------------------------

inline constexpr std::uint64_t nbd_magic = 0x4e42444d41474943;      // "NBDMAGIC"
inline constexpr std::uint64_t ihaveopt_magic = 0x49484156454f5054; // "IHAVEOPT"
inline constexpr std::uint64_t oldstyle_magic = 0x00420281861253;
inline constexpr std::uint64_t option_reply_magic = 0x3e889045565a9;
inline constexpr std::uint32_t request_magic = 0x25609513;
inline constexpr std::uint32_t extended_request_magic = 0x21e41c71;
inline constexpr std::uint32_t simple_reply_magic = 0x67446698;
inline constexpr std::uint32_t structured_reply_magic = 0x668e33ef;
inline constexpr std::uint32_t extended_reply_magic = 0x6e8a278c;

// --- handshake -----------------------------------------------------------

// Server handshake flags (16 bits) and the client flags (32 bits) that
// answer them use the same bit positions.
inline constexpr std::uint16_t flag_fixed_newstyle = 1u << 0;
inline constexpr std::uint16_t flag_no_zeroes = 1u << 1;
inline constexpr std::uint16_t known_handshake_flags = flag_fixed_newstyle | flag_no_zeroes;

inline constexpr std::size_t greeting_size = 16;         // NBDMAGIC + second magic
inline constexpr std::size_t oldstyle_rest_size = 8 + 4 + 124;
inline constexpr std::size_t handshake_flags_size = 2;
inline constexpr std::size_t client_flags_size = 4;
inline constexpr std::size_t export_name_reply_size = 8 + 2; // + 124 zeroes unless NO_ZEROES
inline constexpr std::size_t export_name_zeroes = 124;

enum class Style { oldstyle, newstyle };

/// Decodes the first 16 bytes a server sends; nullopt for bad magics.
std::optional<Style> decode_greeting(Bytes b);

struct ExportBasics {
  std::uint64_t size = 0;
  std::uint16_t eflags = 0;
};
/// The oldstyle greeting after its first 16 bytes (size, 32-bit flags of
/// which the low 16 are the transmission flags, 124 zero bytes).
ExportBasics decode_oldstyle_rest(Bytes b);
/// The reply to NBD_OPT_EXPORT_NAME (size, transmission flags).
ExportBasics decode_export_name_reply(Bytes b);

void encode_client_flags(MutBytes out, std::uint32_t flags);

// --- options ---------------------------------------------------------------

enum Option : std::uint32_t {
  opt_export_name = 1,
  opt_abort = 2,
  opt_list = 3,
  opt_starttls = 5,
  opt_info = 6,
  opt_go = 7,
  opt_structured_reply = 8,
  opt_list_meta_context = 9,
  opt_set_meta_context = 10,
  opt_extended_headers = 11,
};

enum Info : std::uint16_t {
  info_export = 0,
  info_name = 1,
  info_description = 2,
  info_block_size = 3,
};

inline constexpr std::uint32_t rep_err_bit = 1u << 31;
enum Reply : std::uint32_t {
  rep_ack = 1,
  rep_server = 2,
  rep_info = 3,
  rep_meta_context = 4,
  rep_err_unsup = rep_err_bit + 1,
  rep_err_policy = rep_err_bit + 2,
  rep_err_invalid = rep_err_bit + 3,
  rep_err_platform = rep_err_bit + 4,
  rep_err_tls_reqd = rep_err_bit + 5,
  rep_err_unknown = rep_err_bit + 6,
  rep_err_shutdown = rep_err_bit + 7,
  rep_err_block_size_reqd = rep_err_bit + 8,
  rep_err_too_big = rep_err_bit + 9,
  rep_err_ext_header_reqd = rep_err_bit + 10,
};

inline constexpr std::size_t option_header_size = 16;
inline constexpr std::size_t option_reply_header_size = 20;
/// NBD strings (names, descriptions, messages) MUST NOT exceed this.
inline constexpr std::size_t max_string = 4096;

/// Appends an option request (header and data) to out.
void append_option(std::vector<std::uint8_t>& out, std::uint32_t option, Bytes data);
/// Data of NBD_OPT_EXPORT_NAME: the bare name.
std::vector<std::uint8_t> export_name_data(std::string_view name);
/// Data of NBD_OPT_INFO / NBD_OPT_GO: name and the info types requested.
std::vector<std::uint8_t> info_data(std::string_view name, std::span<const std::uint16_t> infos);
/// Data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT.
std::vector<std::uint8_t> meta_context_data(std::string_view name,
                                            std::span<const std::string> queries);

struct OptionReplyHeader {
  std::uint64_t magic;
  std::uint32_t option;
  std::uint32_t type;
  std::uint32_t length;
};
OptionReplyHeader decode_option_reply_header(Bytes b);

struct ServerEntry { // NBD_REP_SERVER
  std::string name;
  std::string description;
};
std::optional<ServerEntry> decode_rep_server(Bytes payload);

struct MetaContextEntry { // NBD_REP_META_CONTEXT
  std::uint32_t id;
  std::string name;
};
std::optional<MetaContextEntry> decode_rep_meta_context(Bytes payload);

struct BlockSize {
  std::uint32_t minimum = 0, preferred = 0, maximum = 0;
};
/// Validates the spec's rules: minimum a power of two in 1..64K, preferred
/// a power of two >= max(512, minimum), maximum a multiple of minimum and at
/// least preferred (or 0xffffffff).
bool block_size_valid(const BlockSize& bs);

struct InfoReply { // NBD_REP_INFO
  std::uint16_t type;
  ExportBasics basics;   // info_export
  std::string text;      // info_name, info_description
  BlockSize block_size;  // info_block_size
};
/// nullopt when the payload length does not fit its info type. Unknown info
/// types decode with only .type set (the spec says clients ignore them).
std::optional<InfoReply> decode_rep_info(Bytes payload);

/// An option error reply's errno, as libnbd reports it.
int errno_of_option_error(std::uint32_t reply_type);
/// "ERR_UNSUP" etc., for messages.
const char* option_reply_name(std::uint32_t reply_type);
const char* option_name(std::uint32_t option);

// --- transmission ---------------------------------------------------------

// Transmission flags (16 bits), per export.
enum TransmissionFlag : std::uint16_t {
  tflag_has_flags = 1u << 0,
  tflag_read_only = 1u << 1,
  tflag_send_flush = 1u << 2,
  tflag_send_fua = 1u << 3,
  tflag_rotational = 1u << 4,
  tflag_send_trim = 1u << 5,
  tflag_send_write_zeroes = 1u << 6,
  tflag_send_df = 1u << 7,
  tflag_can_multi_conn = 1u << 8,
  tflag_send_resize = 1u << 9,
  tflag_send_cache = 1u << 10,
  tflag_send_fast_zero = 1u << 11,
  tflag_block_stat_payload = 1u << 12,
};

enum Command : std::uint16_t {
  cmd_read = 0,
  cmd_write = 1,
  cmd_disc = 2,
  cmd_flush = 3,
  cmd_trim = 4,
  cmd_cache = 5,
  cmd_write_zeroes = 6,
  cmd_block_status = 7,
};
const char* command_name(std::uint16_t type);

enum CommandFlag : std::uint16_t {
  cmd_flag_fua = 1u << 0,
  cmd_flag_no_hole = 1u << 1,
  cmd_flag_df = 1u << 2,
  cmd_flag_req_one = 1u << 3,
  cmd_flag_fast_zero = 1u << 4,
  cmd_flag_payload_len = 1u << 5,
};

inline constexpr std::size_t request_size = 28;
inline constexpr std::size_t extended_request_size = 32;
inline constexpr std::size_t max_request_size = extended_request_size;

struct Request {
  std::uint16_t flags;
  std::uint16_t type;
  std::uint64_t cookie;
  std::uint64_t offset;
  std::uint64_t length;
};
/// Writes a compact (28 bytes, length must fit 32 bits) or extended
/// (32 bytes) request header; returns the bytes written.
std::size_t encode_request(MutBytes out, const Request& r, bool extended);
/// The server side of encode_request, for tests and the in-repo peer.
std::optional<Request> decode_request(Bytes b, bool extended);

inline constexpr std::size_t reply_magic_size = 4;
inline constexpr std::size_t simple_reply_size = 16;
inline constexpr std::size_t structured_reply_size = 20;
inline constexpr std::size_t extended_reply_size = 32;

inline constexpr std::uint16_t reply_flag_done = 1u << 0;

inline constexpr std::uint16_t chunk_error_bit = 1u << 15;
enum ChunkType : std::uint16_t {
  chunk_none = 0,
  chunk_offset_data = 1,
  chunk_offset_hole = 2,
  chunk_block_status = 5,
  chunk_block_status_ext = 6,
  chunk_error = chunk_error_bit + 1,
  chunk_error_offset = chunk_error_bit + 2,
};
const char* chunk_name(std::uint16_t type);

/// Any reply header, whichever of the three forms it came in. Simple
/// replies have no type/length; extended ones carry an offset.
struct ReplyHeader {
  std::uint32_t magic = 0;
  std::uint16_t flags = 0;
  std::uint16_t type = 0;
  std::uint32_t error = 0; // simple replies only
  std::uint64_t cookie = 0;
  std::uint64_t offset = 0; // extended replies only
  std::uint64_t length = 0; // structured and extended replies
};
/// Decode a complete header of the size its magic implies.
ReplyHeader decode_simple_reply(Bytes b);
ReplyHeader decode_structured_reply(Bytes b);
ReplyHeader decode_extended_reply(Bytes b);
/// Encoders, for tests and the in-repo peer.
std::size_t encode_simple_reply(MutBytes out, std::uint32_t error, std::uint64_t cookie);
std::size_t encode_structured_reply(MutBytes out, std::uint16_t flags, std::uint16_t type,
                                    std::uint64_t cookie, std::uint32_t length);
std::size_t encode_extended_reply(MutBytes out, std::uint16_t flags, std::uint16_t type,
                                  std::uint64_t cookie, std::uint64_t offset,
                                  std::uint64_t length);

/// Fixed parts of chunk payloads.
inline constexpr std::size_t offset_data_prefix = 8;      // offset, then data
inline constexpr std::size_t offset_hole_size = 12;       // offset, 32-bit size
inline constexpr std::size_t block_status_prefix = 4;     // context id
inline constexpr std::size_t block_status_descriptor = 8; // 32-bit length, flags
inline constexpr std::size_t block_status_ext_prefix = 8; // context id, count
inline constexpr std::size_t block_status_ext_descriptor = 16; // 64-bit length, status
inline constexpr std::size_t error_prefix = 6;            // error, message length
inline constexpr std::size_t error_offset_suffix = 8;     // offset after message

struct Extent {
  std::uint64_t length;
  std::uint64_t flags;
};
/// Decodes the descriptors of a BLOCK_STATUS (32-bit) or BLOCK_STATUS_EXT
/// (64-bit) payload after its prefix, appending to out.
void decode_extents(Bytes descriptors, bool ext, std::vector<Extent>& out);

struct ErrorChunk {
  std::uint32_t error;
  std::string_view message;
  std::optional<std::uint64_t> offset; // ERROR_OFFSET only
};
/// nullopt when the message length overruns the payload or, for
/// ERROR_OFFSET, leaves no room for exactly the offset.
std::optional<ErrorChunk> decode_error_chunk(Bytes payload, bool with_offset);

// --- errors ------------------------------------------------------------------

/// NBD error values (proto.md "Error values").
enum NbdError : std::uint32_t {
  nbd_eperm = 1,
  nbd_eio = 5,
  nbd_enomem = 12,
  nbd_einval = 22,
  nbd_enospc = 28,
  nbd_eoverflow = 75,
  nbd_enotsup = 95,
  nbd_eshutdown = 108,
};
/// libnbd's mapping: the eight defined values map to their errno, anything
/// else (which a server should not send) to EINVAL.
int errno_of_nbd_error(std::uint32_t e);
/// The reverse, for the in-repo peer: unknown errno values become EINVAL.
std::uint32_t nbd_error_of_errno(int e);

} // namespace nbd::wire
