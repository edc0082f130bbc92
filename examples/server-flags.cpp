// SPDX-License-Identifier: BSD-3-Clause
//
// Connect to an NBD server and print what it said about the export: every
// can_* / is_* flag, then the export's canonical name and description. The
// nbdcpp port of libnbd's examples/server-flags.c, which prints the flags
// in this format (nbdcpp's names keep libnbd's nbd_ prefix here so the two
// outputs compare line for line); the name and description lines are
// additions.
//
// Try it with:
//
//   nbdkit -U - memory 1M --run './server-flags $unixsocket'

#include <nbdcpp/handle.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::fprintf(stderr, "%s socket\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  try {
    nbd::Handle nbd;

    // Ask the server for its name and description too (NBD_INFO_NAME and
    // NBD_INFO_DESCRIPTION); servers send them only when asked.
    nbd.set_full_info(true);
    nbd.connect_unix(argv[1]);

    auto print_flag = [](const char* name, bool value) {
      std::printf("%s = %s\n", name, value ? "true" : "false");
    };
#define PRINT_FLAG(fn) print_flag("nbd_" #fn, nbd.fn())
    PRINT_FLAG(can_cache);
    PRINT_FLAG(can_df);
    PRINT_FLAG(can_flush);
    PRINT_FLAG(can_fua);
    PRINT_FLAG(can_multi_conn);
    PRINT_FLAG(can_trim);
    PRINT_FLAG(can_zero);
    PRINT_FLAG(can_fast_zero);
    PRINT_FLAG(is_read_only);
    PRINT_FLAG(is_rotational);
#undef PRINT_FLAG

    // The server may not send these: ENOTSUP is an answer, not a failure.
    auto print_string = [](const char* name, auto get) {
      try {
        std::printf("%s = \"%s\"\n", name, get().c_str());
      } catch (const nbd::Error& e) {
        if (e.errnum() != ENOTSUP) throw;
        std::printf("%s = (not sent by the server)\n", name);
      }
    };
    print_string("nbd_get_canonical_export_name", [&] { return nbd.get_canonical_export_name(); });
    print_string("nbd_get_export_description", [&] { return nbd.get_export_description(); });
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  std::exit(EXIT_SUCCESS);
}
