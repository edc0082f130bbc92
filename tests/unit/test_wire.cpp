// SPDX-License-Identifier: BSD-3-Clause

// The wire codec against bytes written out by hand from proto.md
// (NetworkBlockDevice/nbd doc/proto.md), never against its own encoders.

#include "proto/wire.hpp"

#include "engine_harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

using namespace nbd::wire;
using nbd::test::Buf;
using nbd::test::from_hex;

namespace {

Buf bytes(std::string_view hex) { return from_hex(hex); }

Buf with_u32_len(std::uint32_t len, std::string_view rest) {
  Buf b(4 + rest.size());
  b[0] = static_cast<std::uint8_t>(len >> 24);
  b[1] = static_cast<std::uint8_t>(len >> 16);
  b[2] = static_cast<std::uint8_t>(len >> 8);
  b[3] = static_cast<std::uint8_t>(len);
  std::copy(rest.begin(), rest.end(), b.begin() + 4);
  return b;
}

} // namespace

TEST_SUITE("wire") {

// --- primitives ---------------------------------------------------------------------

TEST_CASE("wire: big-endian loads and stores") {
  Buf b(8);
  store16(b, 0, 0x1234);
  CHECK(b == bytes("12 34 00 00 00 00 00 00"));
  store32(b, 2, 0xdeadbeef);
  CHECK(b == bytes("12 34 de ad be ef 00 00"));
  store64(b, 0, 0x0102030405060708);
  CHECK(b == bytes("01 02 03 04 05 06 07 08"));
  CHECK(load16(b, 6) == 0x0708);
  CHECK(load32(b, 1) == 0x02030405);
  CHECK(load64(b, 0) == 0x0102030405060708);
  Buf hi = bytes("ff fe fd fc fb fa f9 f8");
  CHECK(load16(hi, 0) == 0xfffe);
  CHECK(load32(hi, 0) == 0xfffefdfc);
  CHECK(load64(hi, 0) == 0xfffefdfcfbfaf9f8);
}

// --- handshake ------------------------------------------------------------------------

TEST_CASE("wire: greeting, fixed newstyle (NBDMAGIC IHAVEOPT)") {
  // S: 64 bits 0x4e42444d41474943 ("NBDMAGIC"), 64 bits 0x49484156454F5054 ("IHAVEOPT")
  auto s = decode_greeting(bytes("4e42444d41474943 49484156454f5054"));
  REQUIRE(s);
  CHECK(*s == Style::newstyle);
  CHECK(greeting_size == 16);
}

TEST_CASE("wire: greeting, oldstyle (NBDMAGIC cliserv_magic)") {
  auto s = decode_greeting(bytes("4e42444d41474943 0000420281861253"));
  REQUIRE(s);
  CHECK(*s == Style::oldstyle);
}

TEST_CASE("wire: greeting with a bad first magic") {
  CHECK_FALSE(decode_greeting(bytes("4e42444d41474944 49484156454f5054")));
  CHECK_FALSE(decode_greeting(bytes("0000000000000000 0000420281861253")));
  // Byte-swapped NBDMAGIC.
  CHECK_FALSE(decode_greeting(bytes("434947414d44424e 49484156454f5054")));
}

TEST_CASE("wire: greeting with a bad second magic") {
  CHECK_FALSE(decode_greeting(bytes("4e42444d41474943 49484156454f5055")));
  CHECK_FALSE(decode_greeting(bytes("4e42444d41474943 0000000000000000")));
  // The historic reply magic is not a greeting magic.
  CHECK_FALSE(decode_greeting(bytes("4e42444d41474943 0003e889045565a9")));
}

TEST_CASE("wire: oldstyle rest: size, then 32-bit flags of which the low 16 are eflags") {
  // size 1M, flags 0x0001_0d6d (a handshake bit in the upper half), 124 zeroes.
  Buf b = bytes("0000000000100000 00010d6d");
  nbd::test::zeroes(b, 124);
  REQUIRE(b.size() == oldstyle_rest_size);
  auto r = decode_oldstyle_rest(b);
  CHECK(r.size == 1048576);
  CHECK(r.eflags == 0x0d6d);
}

TEST_CASE("wire: export name reply: 64-bit size, 16-bit eflags") {
  auto r = decode_export_name_reply(bytes("0123456789abcdef 8003"));
  CHECK(r.size == 0x0123456789abcdef);
  CHECK(r.eflags == 0x8003);
  CHECK(export_name_reply_size == 10);
  CHECK(export_name_zeroes == 124);
}

TEST_CASE("wire: client flags are 32 bits") {
  Buf b(4);
  encode_client_flags(b, flag_fixed_newstyle | flag_no_zeroes);
  CHECK(b == bytes("00000003"));
  encode_client_flags(b, 0);
  CHECK(b == bytes("00000000"));
  CHECK(known_handshake_flags == 3);
}

// --- options ---------------------------------------------------------------------------

TEST_CASE("wire: append_option without data (NBD_OPT_ABORT)") {
  std::vector<std::uint8_t> out;
  append_option(out, opt_abort, {});
  // C: IHAVEOPT, 32-bit option, 32-bit length, data
  CHECK(out == bytes("49484156454f5054 00000002 00000000"));
}

TEST_CASE("wire: append_option appends, with data") {
  std::vector<std::uint8_t> out = bytes("aa");
  Buf data = bytes("01 02 03");
  append_option(out, opt_go, data);
  CHECK(out == bytes("aa 49484156454f5054 00000007 00000003 010203"));
}

TEST_CASE("wire: NBD_OPT_EXPORT_NAME data is the bare name") {
  std::vector<std::uint8_t> out;
  append_option(out, opt_export_name, export_name_data("disk"));
  CHECK(out == bytes("49484156454f5054 00000001 00000004 6469736b"));
  CHECK(export_name_data("").empty());
}

TEST_CASE("wire: NBD_OPT_GO / INFO data: name length, name, info count, infos") {
  const std::uint16_t infos[] = {info_block_size, info_name, info_description};
  CHECK(info_data("foo", infos) == bytes("00000003 666f6f 0003 0003 0001 0002"));
  CHECK(info_data("", {}) == bytes("00000000 0000"));
  std::vector<std::uint8_t> out;
  append_option(out, opt_info, info_data("x", std::span<const std::uint16_t>(infos, 1)));
  CHECK(out == bytes("49484156454f5054 00000006 00000009 00000001 78 0001 0003"));
}

TEST_CASE("wire: meta context data: name, query count, queries") {
  const std::vector<std::string> q = {"base:allocation", "qemu:"};
  CHECK(meta_context_data("e", q) ==
        bytes("00000001 65 00000002 0000000f 626173653a616c6c6f636174696f6e 00000005 71656d753a"));
  CHECK(meta_context_data("", {}) == bytes("00000000 00000000"));
  std::vector<std::uint8_t> out;
  append_option(out, opt_set_meta_context, meta_context_data("", std::span(q).first(1)));
  CHECK(out == bytes("49484156454f5054 0000000a 0000001b 00000000 00000001 0000000f "
                     "626173653a616c6c6f636174696f6e"));
}

TEST_CASE("wire: option reply header") {
  // S: 0x3e889045565a9, option, reply type, length
  auto h = decode_option_reply_header(bytes("0003e889045565a9 00000007 80000006 00000010"));
  CHECK(h.magic == option_reply_magic);
  CHECK(h.option == opt_go);
  CHECK(h.type == rep_err_unknown);
  CHECK(h.length == 16);
  CHECK(option_reply_header_size == 20);
}

TEST_CASE("wire: NBD_REP_SERVER with name and description") {
  auto e = decode_rep_server(with_u32_len(4, "diskthe disk"));
  REQUIRE(e);
  CHECK(e->name == "disk");
  CHECK(e->description == "the disk");
}

TEST_CASE("wire: NBD_REP_SERVER with name only, and with an empty name") {
  auto e = decode_rep_server(with_u32_len(4, "disk"));
  REQUIRE(e);
  CHECK(e->name == "disk");
  CHECK(e->description.empty());
  auto d = decode_rep_server(with_u32_len(0, ""));
  REQUIRE(d);
  CHECK(d->name.empty());
  CHECK(d->description.empty());
}

TEST_CASE("wire: NBD_REP_SERVER truncated before the name length") {
  CHECK_FALSE(decode_rep_server(Buf{}));
  CHECK_FALSE(decode_rep_server(bytes("000000")));
}

TEST_CASE("wire: NBD_REP_SERVER name length overruns the reply") {
  CHECK_FALSE(decode_rep_server(with_u32_len(5, "disk")));
  CHECK_FALSE(decode_rep_server(with_u32_len(0xffffffff, "disk")));
  CHECK_FALSE(decode_rep_server(with_u32_len(0xfffffffc, "disk")));
}

TEST_CASE("wire: NBD_REP_SERVER strings longer than 4096") {
  std::string n4096(4096, 'n'), n4097(4097, 'n');
  CHECK(decode_rep_server(with_u32_len(4096, n4096)));
  CHECK_FALSE(decode_rep_server(with_u32_len(4097, n4097)));
  // A description of 4097 bytes after a short name.
  CHECK_FALSE(decode_rep_server(with_u32_len(1, "n" + n4097)));
  CHECK(decode_rep_server(with_u32_len(1, "n" + n4096)));
}

TEST_CASE("wire: NBD_REP_META_CONTEXT") {
  auto m = decode_rep_meta_context(with_u32_len(0x01020304, "base:allocation"));
  REQUIRE(m);
  CHECK(m->id == 0x01020304);
  CHECK(m->name == "base:allocation");
  auto empty = decode_rep_meta_context(bytes("00000007"));
  REQUIRE(empty);
  CHECK(empty->id == 7);
  CHECK(empty->name.empty());
  CHECK_FALSE(decode_rep_meta_context(bytes("000000")));
  CHECK(decode_rep_meta_context(with_u32_len(1, std::string(4096, 'x'))));
  CHECK_FALSE(decode_rep_meta_context(with_u32_len(1, std::string(4097, 'x'))));
}

TEST_CASE("wire: NBD_REP_INFO / NBD_INFO_EXPORT is exactly 12 bytes") {
  auto r = decode_rep_info(bytes("0000 0000000000100000 0d6d"));
  REQUIRE(r);
  CHECK(r->type == info_export);
  CHECK(r->basics.size == 1048576);
  CHECK(r->basics.eflags == 0x0d6d);
  CHECK_FALSE(decode_rep_info(bytes("0000 0000000000100000 0d")));
  CHECK_FALSE(decode_rep_info(bytes("0000 0000000000100000 0d6d 00")));
  CHECK_FALSE(decode_rep_info(bytes("0000")));
}

TEST_CASE("wire: NBD_REP_INFO / NBD_INFO_NAME and NBD_INFO_DESCRIPTION") {
  auto n = decode_rep_info(bytes("0001 6469736b"));
  REQUIRE(n);
  CHECK(n->type == info_name);
  CHECK(n->text == "disk");
  auto d = decode_rep_info(bytes("0002 61206469736b"));
  REQUIRE(d);
  CHECK(d->type == info_description);
  CHECK(d->text == "a disk");
  auto e = decode_rep_info(bytes("0001"));
  REQUIRE(e);
  CHECK(e->text.empty());
  Buf big = bytes("0002");
  big.resize(2 + 4096, 'x');
  CHECK(decode_rep_info(big));
  big.push_back('x');
  CHECK_FALSE(decode_rep_info(big));
  big[1] = 1;
  CHECK_FALSE(decode_rep_info(big));
}

TEST_CASE("wire: NBD_REP_INFO / NBD_INFO_BLOCK_SIZE is exactly 14 bytes") {
  auto r = decode_rep_info(bytes("0003 00000200 00001000 02000000"));
  REQUIRE(r);
  CHECK(r->type == info_block_size);
  CHECK(r->block_size.minimum == 512);
  CHECK(r->block_size.preferred == 4096);
  CHECK(r->block_size.maximum == 32 * 1024 * 1024);
  CHECK_FALSE(decode_rep_info(bytes("0003 00000200 00001000 020000")));
  CHECK_FALSE(decode_rep_info(bytes("0003 00000200 00001000 02000000 00")));
  CHECK_FALSE(decode_rep_info(bytes("0003")));
}

TEST_CASE("wire: NBD_REP_INFO of an unknown type decodes with only its type") {
  for (auto hex : {"0004", "0004 01", "ffff 0102030405060708090a0b0c0d0e0f", "0010 00000000"}) {
    CAPTURE(hex);
    auto r = decode_rep_info(bytes(hex));
    REQUIRE(r);
    CHECK(r->type == load16(bytes(hex), 0));
    CHECK(r->text.empty());
    CHECK(r->basics.size == 0);
  }
  CHECK_FALSE(decode_rep_info(bytes("00")));
  CHECK_FALSE(decode_rep_info(Buf{}));
}

// --- block size rules (proto.md "Block size constraints") ------------------------------

TEST_CASE("wire: block_size_valid accepts the usual constraints") {
  CHECK(block_size_valid({1, 4096, 0xffffffff}));
  CHECK(block_size_valid({512, 4096, 32 * 1024 * 1024}));
  CHECK(block_size_valid({512, 512, 512}));
  CHECK(block_size_valid({65536, 65536, 65536 * 3})); // maximum need not be a power of 2
  CHECK(block_size_valid({4096, 4096, 0xffffffff}));  // 0xffffffff: no limit, not a multiple
}

TEST_CASE("wire: block_size_valid: minimum must be a power of two, 1..64K") {
  CHECK_FALSE(block_size_valid({0, 4096, 0xffffffff}));
  CHECK_FALSE(block_size_valid({3, 4096, 0xffffffff}));
  CHECK_FALSE(block_size_valid({768, 4096, 0xffffffff}));
  CHECK_FALSE(block_size_valid({131072, 131072, 0xffffffff}));
  CHECK(block_size_valid({65536, 65536, 0xffffffff}));
}

TEST_CASE("wire: block_size_valid: preferred a power of two >= max(512, minimum)") {
  CHECK_FALSE(block_size_valid({1, 256, 0xffffffff}));
  CHECK_FALSE(block_size_valid({1, 0, 0xffffffff}));
  CHECK_FALSE(block_size_valid({1, 6144, 0xffffffff}));
  CHECK_FALSE(block_size_valid({8192, 4096, 0xffffffff}));
  CHECK(block_size_valid({1, 512, 0xffffffff}));
}

TEST_CASE("wire: block_size_valid: maximum a multiple of minimum and >= preferred") {
  CHECK_FALSE(block_size_valid({512, 4096, 4096 + 1}));
  CHECK_FALSE(block_size_valid({512, 4096, 2048}));
  CHECK_FALSE(block_size_valid({512, 4096, 0}));
  CHECK_FALSE(block_size_valid({512, 4096, 0xfffffffe}));
  CHECK(block_size_valid({512, 4096, 4096 + 512}));
}

// --- option errors ---------------------------------------------------------------------

TEST_CASE("wire: option error replies map to libnbd's errno") {
  CHECK(errno_of_option_error(rep_err_unsup) == ENOTSUP);
  CHECK(errno_of_option_error(rep_err_policy) == ENOTSUP);
  CHECK(errno_of_option_error(rep_err_invalid) == EINVAL);
  CHECK(errno_of_option_error(rep_err_platform) == ENOTSUP);
  CHECK(errno_of_option_error(rep_err_tls_reqd) == ENOTSUP);
  CHECK(errno_of_option_error(rep_err_unknown) == ENOENT);
  CHECK(errno_of_option_error(rep_err_shutdown) == ESHUTDOWN);
  CHECK(errno_of_option_error(rep_err_block_size_reqd) == EINVAL);
  CHECK(errno_of_option_error(rep_err_too_big) == EINVAL);
  CHECK(errno_of_option_error(rep_err_ext_header_reqd) == EINVAL);
  CHECK(errno_of_option_error(rep_err_bit + 99) == ENOTSUP);
  // The values proto.md gives them.
  CHECK(rep_err_unsup == 0x80000001u);
  CHECK(rep_err_too_big == 0x80000009u);
  CHECK(rep_err_ext_header_reqd == 0x8000000au);
}

TEST_CASE("wire: names for messages") {
  CHECK(std::string(option_reply_name(rep_ack)) == "ACK");
  CHECK(std::string(option_reply_name(rep_err_unknown)) == "ERR_UNKNOWN");
  CHECK(std::string(option_reply_name(rep_err_bit + 77)) == "ERR_(unknown)");
  CHECK(std::string(option_reply_name(77)) == "(unknown)");
  CHECK(std::string(option_name(opt_go)) == "GO");
  CHECK(std::string(option_name(opt_extended_headers)) == "EXTENDED_HEADERS");
  CHECK(std::string(option_name(99)) == "(unknown)");
  CHECK(std::string(command_name(cmd_block_status)) == "NBD_CMD_BLOCK_STATUS");
  CHECK(std::string(command_name(99)) == "(unknown)");
  CHECK(std::string(chunk_name(chunk_error_offset)) == "ERROR_OFFSET");
  CHECK(std::string(chunk_name(chunk_block_status_ext)) == "BLOCK_STATUS_EXT");
  CHECK(std::string(chunk_name(4)) == "(unknown)");
}

// --- transmission -------------------------------------------------------------------------

TEST_CASE("wire: compact request, byte-exact") {
  Buf out(max_request_size, 0xcc);
  // C: 0x25609513, 16 flags, 16 type, 64 cookie, 64 offset, 32 length
  CHECK(encode_request(out, {cmd_flag_fua, cmd_write, 1, 0x100000, 4096}, false) == 28);
  CHECK(Buf(out.begin(), out.begin() + 28) ==
        bytes("25609513 0001 0001 0000000000000001 0000000000100000 00001000"));
  CHECK(out[28] == 0xcc); // nothing beyond the header
}

TEST_CASE("wire: extended request, byte-exact") {
  Buf out(max_request_size, 0xcc);
  // C: 0x21e41c71, 16 flags, 16 type, 64 cookie, 64 offset, 64 length
  CHECK(encode_request(out, {cmd_flag_req_one, cmd_block_status, 0x0102030405060708,
                             0x1122334455667788, 0x100000000},
                       true) == 32);
  CHECK(out == bytes("21e41c71 0008 0007 0102030405060708 1122334455667788 0000000100000000"));
}

TEST_CASE("wire: requests round trip, compact and extended") {
  for (bool ext : {false, true}) {
    CAPTURE(ext);
    Request r{cmd_flag_fast_zero | cmd_flag_no_hole, cmd_write_zeroes, 42, 0xfffffffffffff000,
              ext ? 0x123456789ull : 0xfffffe00ull};
    Buf out(max_request_size);
    std::size_t n = encode_request(out, r, ext);
    auto d = decode_request(std::span(out).first(n), ext);
    REQUIRE(d);
    CHECK(d->flags == r.flags);
    CHECK(d->type == r.type);
    CHECK(d->cookie == r.cookie);
    CHECK(d->offset == r.offset);
    CHECK(d->length == r.length);
    // The other form's magic is refused.
    CHECK_FALSE(decode_request(std::span(out).first(n), !ext));
  }
}

TEST_CASE("wire: simple reply round trip, byte-exact") {
  Buf out(simple_reply_size);
  CHECK(encode_simple_reply(out, nbd_eio, 0x0102030405060708) == 16);
  // S: 0x67446698, 32 error, 64 cookie
  CHECK(out == bytes("67446698 00000005 0102030405060708"));
  auto h = decode_simple_reply(out);
  CHECK(h.magic == simple_reply_magic);
  CHECK(h.error == 5);
  CHECK(h.cookie == 0x0102030405060708);
  CHECK(h.length == 0);
}

TEST_CASE("wire: structured reply header round trip, byte-exact") {
  Buf out(structured_reply_size);
  CHECK(encode_structured_reply(out, reply_flag_done, chunk_offset_data, 7, 0x1008) == 20);
  // S: 0x668e33ef, 16 flags, 16 type, 64 cookie, 32 length
  CHECK(out == bytes("668e33ef 0001 0001 0000000000000007 00001008"));
  auto h = decode_structured_reply(out);
  CHECK(h.magic == structured_reply_magic);
  CHECK(h.flags == reply_flag_done);
  CHECK(h.type == chunk_offset_data);
  CHECK(h.cookie == 7);
  CHECK(h.length == 0x1008);
  CHECK(h.offset == 0);
}

TEST_CASE("wire: extended reply header round trip, byte-exact") {
  Buf out(extended_reply_size);
  CHECK(encode_extended_reply(out, 0, chunk_block_status_ext, 9, 0x200, 0x100000018) == 32);
  // S: 0x6e8a278c, 16 flags, 16 type, 64 cookie, 64 offset, 64 length
  CHECK(out == bytes("6e8a278c 0000 0006 0000000000000009 0000000000000200 0000000100000018"));
  auto h = decode_extended_reply(out);
  CHECK(h.magic == extended_reply_magic);
  CHECK(h.flags == 0);
  CHECK(h.type == chunk_block_status_ext);
  CHECK(h.cookie == 9);
  CHECK(h.offset == 0x200);
  CHECK(h.length == 0x100000018);
}

TEST_CASE("wire: decode_extents, 32-bit descriptors") {
  std::vector<Extent> out{{1, 1}};
  decode_extents(bytes("00001000 00000003 ffffffff 00000000"), false, out);
  REQUIRE(out.size() == 3);
  CHECK(out[0].length == 1); // appends
  CHECK(out[1].length == 4096);
  CHECK(out[1].flags == 3);
  CHECK(out[2].length == 0xffffffff);
  CHECK(out[2].flags == 0);
}

TEST_CASE("wire: decode_extents, 64-bit descriptors") {
  std::vector<Extent> out;
  decode_extents(bytes("0000000100000000 8000000000000001 0000000000000200 0000000000000002"),
                 true, out);
  REQUIRE(out.size() == 2);
  CHECK(out[0].length == 0x100000000);
  CHECK(out[0].flags == 0x8000000000000001);
  CHECK(out[1].length == 512);
  CHECK(out[1].flags == 2);
}

TEST_CASE("wire: decode_extents ignores a partial trailing descriptor") {
  std::vector<Extent> out;
  decode_extents(bytes("00001000 00000003 000010"), false, out);
  CHECK(out.size() == 1);
  out.clear();
  decode_extents(bytes("0000000000001000 0000000000000003 00"), true, out);
  CHECK(out.size() == 1);
  out.clear();
  decode_extents(Buf{}, true, out);
  CHECK(out.empty());
}

TEST_CASE("wire: decode_error_chunk, NBD_REPLY_TYPE_ERROR") {
  Buf p = bytes("00000005 0004 6f6f7073"); // EIO, "oops"
  auto e = decode_error_chunk(p, false);
  REQUIRE(e);
  CHECK(e->error == 5);
  CHECK(e->message == "oops");
  CHECK_FALSE(e->offset);
  // No message at all.
  auto bare = decode_error_chunk(bytes("00000016 0000"), false);
  REQUIRE(bare);
  CHECK(bare->error == 22);
  CHECK(bare->message.empty());
  // Trailing bytes after the message are tolerated (libnbd does too).
  Buf with_tail = bytes("00000005 0001 21 0000");
  auto tail = decode_error_chunk(with_tail, false);
  REQUIRE(tail);
  CHECK(tail->message == "!");
}

TEST_CASE("wire: decode_error_chunk, message length overruns") {
  CHECK_FALSE(decode_error_chunk(bytes("00000005 0005 6f6f7073"), false));
  CHECK_FALSE(decode_error_chunk(bytes("00000005 ffff"), false));
  CHECK_FALSE(decode_error_chunk(bytes("00000005 00"), false)); // shorter than 6
  CHECK_FALSE(decode_error_chunk(Buf{}, false));
}

TEST_CASE("wire: decode_error_chunk, NBD_REPLY_TYPE_ERROR_OFFSET is exact") {
  Buf p = bytes("0000001c 0002 6869 0000000000001000"); // ENOSPC, "hi", offset 4096
  auto e = decode_error_chunk(p, true);
  REQUIRE(e);
  CHECK(e->error == 28);
  CHECK(e->message == "hi");
  REQUIRE(e->offset);
  CHECK(*e->offset == 4096);
  // One byte short, one byte long.
  CHECK_FALSE(decode_error_chunk(std::span(p).first(p.size() - 1), true));
  Buf longer = p;
  longer.push_back(0);
  CHECK_FALSE(decode_error_chunk(longer, true));
  // The message swallowing the offset.
  CHECK_FALSE(decode_error_chunk(bytes("0000001c 000a 6869 0000000000001000"), true));
  // No message: 14 bytes.
  auto bare = decode_error_chunk(bytes("00000005 0000 0000000000000200"), true);
  REQUIRE(bare);
  CHECK(*bare->offset == 512);
}

TEST_CASE("wire: NBD errors to errno") {
  CHECK(errno_of_nbd_error(1) == EPERM);
  CHECK(errno_of_nbd_error(5) == EIO);
  CHECK(errno_of_nbd_error(12) == ENOMEM);
  CHECK(errno_of_nbd_error(22) == EINVAL);
  CHECK(errno_of_nbd_error(28) == ENOSPC);
  CHECK(errno_of_nbd_error(75) == EOVERFLOW);
  CHECK(errno_of_nbd_error(95) == ENOTSUP);
  CHECK(errno_of_nbd_error(108) == ESHUTDOWN);
  // Anything else, which a server should not send, is EINVAL.
  for (std::uint32_t e : {2u, 13u, 30u, 71u, 0xffffffffu}) {
    CAPTURE(e);
    CHECK(errno_of_nbd_error(e) == EINVAL);
  }
}

TEST_CASE("wire: errno to NBD errors, and back") {
  for (int e : {EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN}) {
    CAPTURE(e);
    CHECK(errno_of_nbd_error(nbd_error_of_errno(e)) == e);
  }
  CHECK(nbd_error_of_errno(EPERM) == 1);
  CHECK(nbd_error_of_errno(EIO) == 5);
  CHECK(nbd_error_of_errno(ENOMEM) == 12);
  CHECK(nbd_error_of_errno(EINVAL) == 22);
  CHECK(nbd_error_of_errno(ENOSPC) == 28);
  CHECK(nbd_error_of_errno(EOVERFLOW) == 75);
  CHECK(nbd_error_of_errno(ENOTSUP) == 95);
  CHECK(nbd_error_of_errno(ESHUTDOWN) == 108);
  CHECK(nbd_error_of_errno(0) == 0);
  for (int e : {EACCES, ENOENT, EROFS, EDQUOT, EFBIG, EPROTO}) {
    CAPTURE(e);
    CHECK(nbd_error_of_errno(e) == nbd_einval);
  }
}

} // TEST_SUITE
