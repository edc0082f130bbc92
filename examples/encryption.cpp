// SPDX-License-Identifier: BSD-3-Clause
//
// Connect to a server that requires TLS, authenticating with a pre-shared
// key (TLS-PSK), read the first sector and shut the connection down
// cleanly. The nbdcpp port of libnbd's examples/encryption.c, which makes
// its own keys with psktool and runs nbdkit as its subprocess; here the
// server and the keys file come from the command line, and the program
// prints what it read (libnbd's prints nothing) so that a test can check
// it:
//
//   TLS negotiated, PSK identity alice
//   000000 eb 63 90 ...            (the sector, as `od -A x -t x1 -v`)
//
// Try it with (psktool is in Debian's gnutls-bin):
//
//   psktool -u alice -p keys.psk
//   cmd='./encryption $unixsocket keys.psk alice'
//   nbdkit -U - --tls=require --tls-psk=keys.psk pattern size=1M --run "$cmd"
//
// TLS-PSK needs no certificates, which makes it the easy way to a
// self-contained encrypted setup; certificates work the same way with
// set_tls_certificates (see docs/tls.md).

#include <nbdcpp/flags.hpp>
#include <nbdcpp/handle.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char* argv[]) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "%s socket keys.psk [username]\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }
  const char* socket = argv[1];
  const char* keys = argv[2];
  // libnbd's example uses the identity "alice"; so do we by default.
  const std::string username = argc == 4 ? argv[3] : "alice";

  if (!nbd::Handle::supports_tls()) {
    std::fprintf(stderr, "%s: this build of nbdcpp has no TLS support\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  std::array<std::uint8_t, 512> buf{};
  try {
    nbd::Handle nbd;

    // Enable TLS in the client. TLS_REQUIRE never falls back to
    // plaintext: a server that refuses TLS is an error.
    nbd.set_tls(nbd::TLS_REQUIRE);

    // Enable TLS-PSK and pass the keys file (psktool's "username:hexkey"
    // lines). With a PSK file set, certificates are not used.
    nbd.set_tls_psk_file(keys);

    // The identity to authenticate as (default: the login name).
    nbd.set_tls_username(username);

    // Connect: NBD_OPT_STARTTLS, the TLS handshake, then the rest of the
    // negotiation, encrypted.
    nbd.connect_unix(socket);

    if (!nbd.get_tls_negotiated()) {
      // Cannot happen under TLS_REQUIRE; shown for TLS_ALLOW users.
      std::fprintf(stderr, "%s: TLS was not negotiated\n", argv[0]);
      std::exit(EXIT_FAILURE);
    }
    std::printf("TLS negotiated, PSK identity %s\n", username.c_str());

    // Read the first sector.
    nbd.pread(buf, 0);

    // TLS connections must be shut down (NBD_CMD_DISC), so that the
    // server sees a clean end of the session rather than a dropped
    // connection.
    nbd.shutdown();

    // The destructor closes the handle (libnbd's nbd_close).
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }

  // The sector, in `od -A x -t x1 -v`'s format.
  for (std::size_t off = 0; off < buf.size(); off += 16) {
    std::printf("%06zx", off);
    for (std::size_t i = off; i < off + 16; ++i) std::printf(" %02x", buf[i]);
    std::printf("\n");
  }
  std::printf("%06zx\n", buf.size());
  std::exit(EXIT_SUCCESS);
}
