// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// Constants with libnbd's values and names (LIBNBD_ dropped), so a ported
// program changes LIBNBD_CMD_FLAG_FUA into nbd::CMD_FLAG_FUA and nothing else.

#include <cstdint>

namespace nbd {

// Command flags (aio_pread, aio_pwrite, ... "flags" argument).
inline constexpr std::uint32_t CMD_FLAG_FUA = 0x01;
inline constexpr std::uint32_t CMD_FLAG_NO_HOLE = 0x02;
inline constexpr std::uint32_t CMD_FLAG_DF = 0x04;
inline constexpr std::uint32_t CMD_FLAG_REQ_ONE = 0x08;
inline constexpr std::uint32_t CMD_FLAG_FAST_ZERO = 0x10;
inline constexpr std::uint32_t CMD_FLAG_PAYLOAD_LEN = 0x20;
inline constexpr std::uint32_t CMD_FLAG_MASK = 0x3f;

// set_handshake_flags.
inline constexpr std::uint32_t HANDSHAKE_FLAG_FIXED_NEWSTYLE = 0x01;
inline constexpr std::uint32_t HANDSHAKE_FLAG_NO_ZEROES = 0x02;
inline constexpr std::uint32_t HANDSHAKE_FLAG_MASK = 0x03;

// set_strict_mode. The default is every flag except ALIGN and PAYLOAD
// checks that need the server's block size information... see docs.
inline constexpr std::uint32_t STRICT_COMMANDS = 0x01;
inline constexpr std::uint32_t STRICT_FLAGS = 0x02;
inline constexpr std::uint32_t STRICT_BOUNDS = 0x04;
inline constexpr std::uint32_t STRICT_ZERO_SIZE = 0x08;
inline constexpr std::uint32_t STRICT_ALIGN = 0x10;
inline constexpr std::uint32_t STRICT_PAYLOAD = 0x20;
inline constexpr std::uint32_t STRICT_AUTO_FLAG = 0x40;
inline constexpr std::uint32_t STRICT_MASK = 0x7f;

// shutdown / aio_disconnect.
inline constexpr std::uint32_t SHUTDOWN_ABANDON_PENDING = 0x10000;
inline constexpr std::uint32_t SHUTDOWN_MASK = 0x10000;

// aio_get_direction.
inline constexpr unsigned AIO_DIRECTION_READ = 1;
inline constexpr unsigned AIO_DIRECTION_WRITE = 2;
inline constexpr unsigned AIO_DIRECTION_BOTH = 3;

// Chunk callback status (pread_structured).
inline constexpr unsigned READ_DATA = 1;
inline constexpr unsigned READ_HOLE = 2;
inline constexpr unsigned READ_ERROR = 3;

// get_block_size.
inline constexpr int SIZE_MINIMUM = 0;
inline constexpr int SIZE_PREFERRED = 1;
inline constexpr int SIZE_MAXIMUM = 2;
inline constexpr int SIZE_PAYLOAD = 3;

// base:allocation extent flags.
inline constexpr const char* CONTEXT_BASE_ALLOCATION = "base:allocation";
inline constexpr std::uint32_t STATE_HOLE = 1;
inline constexpr std::uint32_t STATE_ZERO = 2;

// set_tls (TLS is not supported yet: only TLS_DISABLE is accepted).
inline constexpr int TLS_DISABLE = 0;
inline constexpr int TLS_ALLOW = 1;
inline constexpr int TLS_REQUIRE = 2;

} // namespace nbd
