// SPDX-License-Identifier: BSD-3-Clause
//
// Queue a large read immediately followed by a large write, before waiting
// for any reply, against a server that handles one command at a time. A
// client that stops reading replies while it still has a write to send
// deadlocks there: the server blocks sending the read's reply, the client
// blocks sending the write. nbdcpp's engine sends and receives
// independently, so it must finish. The nbdcpp port of libnbd's
// examples/batched-read-write.c: prints "finished OK", and after 10 s
// without finishing says a deadlock probably occurred.
//
// Try it with:
//
//   nbdkit -U - --filter=noparallel memory 2M --run './batched-read-write $unixsocket'
//
// or against a remote server: ./batched-read-write HOST PORT, or a URI.

#include <nbdcpp/handle.hpp>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

void alarm_handler(int) {
  const char msg[] = "alarm fired; deadlock probably occurred\n";
  // Only async-signal-safe calls here.
  (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
  ::_exit(EXIT_FAILURE);
}

// Issues both commands, then drives the handle from a plain poll() loop
// until they retire. Returns false on failure.
bool try_deadlock(nbd::Handle& nbd, std::vector<std::uint8_t>& in,
                  const std::vector<std::uint8_t>& out, std::uint64_t packetsize) {
  std::array<std::uint64_t, 2> cookies{};
  cookies[0] = nbd.aio_pread(in, 0);
  cookies[1] = nbd.aio_pwrite(out, packetsize);

  // Wait for the commands to retire, or for deadlock to occur.
  while (nbd.aio_in_flight() > 0) {
    if (nbd.aio_is_dead() || nbd.aio_is_closed()) {
      std::fprintf(stderr, "connection is dead or closed\n");
      return false;
    }

    // The fd and the events to wait for come from the handle every time:
    // with io_uring the fd is the ring's, and WRITE means "submit".
    const unsigned dir = nbd.aio_get_direction();
    pollfd fds[1] = {{nbd.aio_get_fd(), 0, 0}};
    if (dir & nbd::AIO_DIRECTION_READ) fds[0].events |= POLLIN;
    if (dir & nbd::AIO_DIRECTION_WRITE) fds[0].events |= POLLOUT;

    if (::poll(fds, 1, -1) == -1) {
      std::perror("poll");
      return false;
    }

    if ((dir & nbd::AIO_DIRECTION_READ) && (fds[0].revents & POLLIN))
      nbd.aio_notify_read();
    else if ((dir & nbd::AIO_DIRECTION_WRITE) && (fds[0].revents & POLLOUT))
      nbd.aio_notify_write();

    // Retire whatever completed (no completion callbacks were given, so
    // completed commands wait for aio_command_completed). Like libnbd's,
    // aio_peek_command_completed fails (EINVAL) once nothing is in flight
    // or waiting to retire: only ask while one of ours is outstanding.
    auto outstanding = [&] { return cookies[0] != 0 || cookies[1] != 0; };
    while (outstanding()) {
      const std::uint64_t done = nbd.aio_peek_command_completed();
      if (done == 0) break;
      for (auto& cookie : cookies) {
        if (cookie == done) {
          // Throws if the command failed.
          [[maybe_unused]] bool completed = nbd.aio_command_completed(cookie);
          assert(completed);
          cookie = 0;
        }
      }
    }
  }
  assert(nbd.aio_in_flight() == 0);

  std::printf("finished OK\n");
  return true;
}

} // namespace

int main(int argc, char* argv[]) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "%s uri | socket | hostname port\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  try {
    nbd::Handle nbd;

    // Connect synchronously, as this is simpler.
    if (argc == 2) {
      if (std::strstr(argv[1], "://"))
        nbd.connect_uri(argv[1]);
      else
        nbd.connect_unix(argv[1]);
    } else {
      nbd.connect_tcp(argv[1], argv[2]);
    }

    if (nbd.is_read_only()) {
      std::fprintf(stderr, "%s: error: this NBD export is read-only\n", argv[0]);
      std::exit(EXIT_FAILURE);
    }

    const std::uint64_t packetsize =
        std::min<std::uint64_t>(static_cast<std::uint64_t>(nbd.get_size()) / 2, 2 * 1024 * 1024);
    std::vector<std::uint8_t> in(packetsize), out(packetsize);

    // Be non-destructive: write back what the second half already holds.
    nbd.pread(out, packetsize);

    // Unless debugging, give up after 10 s: that is a deadlock.
    if (!nbd.get_debug()) {
      std::signal(SIGALRM, alarm_handler);
      ::alarm(10);
    }

    if (!try_deadlock(nbd, in, out, packetsize)) {
      std::fprintf(stderr, "failed\n");
      std::exit(EXIT_FAILURE);
    }

    nbd.shutdown();
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  std::exit(EXIT_SUCCESS);
}
