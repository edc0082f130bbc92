// SPDX-License-Identifier: BSD-3-Clause
#pragma once

/// @file
/// Constants with libnbd's values and names (LIBNBD_ dropped), so a ported
/// program changes LIBNBD_CMD_FLAG_FUA into nbd::CMD_FLAG_FUA and nothing else.

#include <cstdint>

namespace nbd {

/// Command flags (aio_pread, aio_pwrite, ... "flags" argument).
inline constexpr std::uint32_t CMD_FLAG_FUA = 0x01; ///< force unit access: the data is durable before the reply (pwrite, trim, zero)
inline constexpr std::uint32_t CMD_FLAG_NO_HOLE = 0x02; ///< zero: write zeroes, do not punch a hole
inline constexpr std::uint32_t CMD_FLAG_DF = 0x04; ///< pread_structured: don't fragment, one chunk for the whole read
inline constexpr std::uint32_t CMD_FLAG_REQ_ONE = 0x08; ///< block_status: one extent is enough
inline constexpr std::uint32_t CMD_FLAG_FAST_ZERO = 0x10; ///< zero: fail (ENOTSUP) rather than zero slowly
inline constexpr std::uint32_t CMD_FLAG_PAYLOAD_LEN = 0x20; ///< with extended headers: the request carries a payload length (set automatically under STRICT_AUTO_FLAG)
inline constexpr std::uint32_t CMD_FLAG_MASK = 0x3f; ///< every command flag

/// set_handshake_flags.
inline constexpr std::uint32_t HANDSHAKE_FLAG_FIXED_NEWSTYLE = 0x01; ///< fixed newstyle negotiation
inline constexpr std::uint32_t HANDSHAKE_FLAG_NO_ZEROES = 0x02; ///< skip the 124 zero bytes after NBD_OPT_EXPORT_NAME
inline constexpr std::uint32_t HANDSHAKE_FLAG_MASK = 0x03; ///< every handshake flag

/// set_strict_mode. The default is every flag (STRICT_MASK), as in libnbd.
inline constexpr std::uint32_t STRICT_COMMANDS = 0x01; ///< reject commands the server did not advertise
inline constexpr std::uint32_t STRICT_FLAGS = 0x02; ///< reject flags the command does not take or the server did not advertise
inline constexpr std::uint32_t STRICT_BOUNDS = 0x04; ///< reject requests past the end of the export
inline constexpr std::uint32_t STRICT_ZERO_SIZE = 0x08; ///< reject requests of 0 bytes
inline constexpr std::uint32_t STRICT_ALIGN = 0x10; ///< reject requests not aligned to the server's minimum block size
inline constexpr std::uint32_t STRICT_PAYLOAD = 0x20; ///< reject writes larger than get_block_size(SIZE_PAYLOAD)
inline constexpr std::uint32_t STRICT_AUTO_FLAG = 0x40; ///< set CMD_FLAG_PAYLOAD_LEN automatically
inline constexpr std::uint32_t STRICT_MASK = 0x7f; ///< every strict flag (the default)

/// shutdown / aio_disconnect.
inline constexpr std::uint32_t SHUTDOWN_ABANDON_PENDING = 0x10000; ///< fail the commands not yet sent instead of sending them first
inline constexpr std::uint32_t SHUTDOWN_MASK = 0x10000; ///< every shutdown flag

/// aio_get_direction.
inline constexpr unsigned AIO_DIRECTION_READ = 1; ///< wait for aio_get_fd to be readable, then call aio_notify_read
inline constexpr unsigned AIO_DIRECTION_WRITE = 2; ///< wait for aio_get_fd to be writable, then call aio_notify_write (io_uring: submit)
inline constexpr unsigned AIO_DIRECTION_BOTH = 3; ///< both of the above

/// Chunk callback status (pread_structured).
inline constexpr unsigned READ_DATA = 1; ///< the chunk carries data
inline constexpr unsigned READ_HOLE = 2; ///< the chunk is a hole: the buffer part reads as zeroes
inline constexpr unsigned READ_ERROR = 3; ///< the server reported an error for this part

/// get_block_size.
inline constexpr int SIZE_MINIMUM = 0; ///< minimum block size
inline constexpr int SIZE_PREFERRED = 1; ///< preferred block size
inline constexpr int SIZE_MAXIMUM = 2; ///< maximum block size (0: not advertised)
inline constexpr int SIZE_PAYLOAD = 3; ///< largest write payload allowed under STRICT_PAYLOAD

/// base:allocation extent flags.
inline constexpr const char* CONTEXT_BASE_ALLOCATION = "base:allocation"; ///< the meta context block_status reports allocation in
inline constexpr std::uint32_t STATE_HOLE = 1; ///< base:allocation: the extent is not allocated
inline constexpr std::uint32_t STATE_ZERO = 2; ///< base:allocation: the extent reads as zeroes

/// set_tls.
inline constexpr int TLS_DISABLE = 0; ///< no TLS
inline constexpr int TLS_ALLOW = 1;   ///< TLS if the server agrees, else plaintext
inline constexpr int TLS_REQUIRE = 2; ///< TLS or fail: never plaintext

} // namespace nbd
