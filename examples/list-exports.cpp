// SPDX-License-Identifier: BSD-3-Clause
//
// List a server's exports in option mode, ask which one to use, then
// connect to it on the same connection and print its size. The nbdcpp port
// of libnbd's examples/list-exports.c: same prompts and output.
//
// Try it with:
//
//   nbdkit -U - --filter=exportname memory 1M exportname=hello exportname=world
//     exportdesc=fixed:'a RAM disk' --run 'echo 1 | ./list-exports $unixsocket'
//
// (one command line).

#include <nbdcpp/handle.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::fprintf(stderr, "%s socket\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  try {
    nbd::Handle nbd;

    // Option mode: connecting stops after the handshake, with the handle
    // negotiating, so that we can send NBD_OPT_LIST before picking an export.
    nbd.set_opt_mode(true);
    nbd.connect_unix(argv[1]);

    // One callback per export the server lists.
    std::vector<std::string> names;
    nbd.opt_list([&](std::string_view name, std::string_view description) {
      std::printf("[%zu] %.*s\n", names.size(), static_cast<int>(name.size()), name.data());
      if (!description.empty())
        std::printf("  (%.*s)\n", static_cast<int>(description.size()), description.data());
      names.emplace_back(name);
      return 0;
    });
    if (names.empty()) {
      std::fprintf(stderr, "Server does not support listing exports.\n");
      std::exit(EXIT_FAILURE);
    }

    std::printf("Which export to connect to (-1 to quit)? ");
    std::fflush(stdout);
    int i = -1;
    if (std::scanf("%d", &i) != 1) std::exit(EXIT_FAILURE);
    if (i == -1) {
      // NBD_OPT_ABORT: leave politely without using an export.
      nbd.opt_abort();
      std::exit(EXIT_SUCCESS);
    }
    if (i < 0 || static_cast<std::size_t>(i) >= names.size()) {
      std::fprintf(stderr, "Invalid choice %d\n", i);
      std::exit(EXIT_FAILURE);
    }
    const std::string& name = names[static_cast<std::size_t>(i)];
    std::printf("Connecting to %s ...\n", name.c_str());

    // Finish negotiating with the chosen export: NBD_OPT_GO.
    nbd.set_export_name(name);
    nbd.opt_go();

    std::printf("%s: %s: size = %lld bytes\n", argv[1], name.c_str(),
                static_cast<long long>(nbd.get_size()));

    nbd.shutdown();
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  std::exit(EXIT_SUCCESS);
}
