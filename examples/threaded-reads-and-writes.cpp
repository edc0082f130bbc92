// SPDX-License-Identifier: BSD-3-Clause
//
// Random reads and writes from several threads at once, each thread with
// its own handle (multi-conn) and many commands in flight on it, driven
// from a plain poll() loop. The nbdcpp port of libnbd's
// examples/threaded-reads-and-writes.c: same output. This port issues
// 1000 commands of 64 KiB per thread (libnbd's: 10000 of 1 MiB), so that
// it finishes in seconds.
//
// Try it with:
//
//   nbdkit -U - memory 100M --run './threaded-reads-and-writes $unixsocket'
//
// or against a remote server: HOST PORT, or a URI.

#include <nbdcpp/handle.hpp>

#include <poll.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

namespace {

// Connections, and so threads. Servers limit how many connections they
// take at once; stay under that.
constexpr std::size_t nr_multi_conn = 8;
// Commands in flight at once on each connection.
constexpr std::size_t max_in_flight = 64;
// The size of each read and write.
constexpr std::size_t buffer_size = 64 * 1024;
// Commands each thread issues.
constexpr unsigned nr_cycles = 1000;

std::int64_t exportsize;
std::mutex print_lock;

struct ThreadStatus {
  std::size_t i = 0;             // thread index
  int status = 0;                // 0 = success
  unsigned requests = 0;         // commands completed
  std::size_t most_in_flight = 0; // most commands seen in flight
};

void connect(nbd::Handle& nbd, int argc, char** argv) {
  if (argc == 2) {
    if (std::strstr(argv[1], "://"))
      nbd.connect_uri(argv[1]);
    else
      nbd.connect_unix(argv[1]);
  } else {
    nbd.connect_tcp(argv[1], argv[2]);
  }
}

void run_thread(ThreadStatus& status, int argc, char** argv) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(std::time(nullptr)) + status.i);
  // Every command shares this buffer. That is fine for random data, and
  // very bad in a real program.
  std::vector<std::uint8_t> buf(buffer_size);
  for (auto& b : buf) b = static_cast<std::uint8_t>(rng());

  try {
    nbd::Handle nbd;
    connect(nbd, argc, argv);

    std::vector<std::uint64_t> cookies;
    unsigned left = nr_cycles;
    while (left > 0 || !cookies.empty()) {
      if (nbd.aio_is_dead() || nbd.aio_is_closed()) {
        std::lock_guard g(print_lock);
        std::fprintf(stderr, "thread %zu: connection is dead or closed\n", status.i);
        status.status = -1;
        return;
      }

      // Top up the commands in flight.
      while (left > 0 && cookies.size() < max_in_flight) {
        const std::uint64_t offset =
            rng() % static_cast<std::uint64_t>(exportsize - static_cast<std::int64_t>(buffer_size));
        if (rng() & 1)
          cookies.push_back(nbd.aio_pwrite(buf, offset));
        else
          cookies.push_back(nbd.aio_pread(buf, offset));
        --left;
        status.most_in_flight = std::max(status.most_in_flight, cookies.size());
      }

      // Wait on the handle's fd for what its direction asks.
      const unsigned dir = nbd.aio_get_direction();
      pollfd fds[1] = {{nbd.aio_get_fd(), 0, 0}};
      if (dir & nbd::AIO_DIRECTION_READ) fds[0].events |= POLLIN;
      if (dir & nbd::AIO_DIRECTION_WRITE) fds[0].events |= POLLOUT;
      if (::poll(fds, 1, -1) == -1) {
        std::perror("poll");
        status.status = -1;
        return;
      }
      if ((dir & nbd::AIO_DIRECTION_READ) && (fds[0].revents & POLLIN))
        nbd.aio_notify_read();
      else if ((dir & nbd::AIO_DIRECTION_WRITE) && (fds[0].revents & POLLOUT))
        nbd.aio_notify_write();

      // Retire what completed (throws if a command failed).
      auto done = std::remove_if(cookies.begin(), cookies.end(),
                                 [&](std::uint64_t c) { return nbd.aio_command_completed(c); });
      status.requests += static_cast<unsigned>(cookies.end() - done);
      cookies.erase(done, cookies.end());
    }

    nbd.shutdown();
  } catch (const nbd::Error& e) {
    std::lock_guard g(print_lock);
    std::fprintf(stderr, "%s\nthread %zu: failed\n", e.what(), status.i);
    status.status = -1;
    return;
  }

  std::lock_guard g(print_lock);
  std::printf("thread %zu: finished OK\n", status.i);
}

} // namespace

int main(int argc, char* argv[]) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "%s uri | socket | hostname port\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  try {
    // Connect once first, to check the server takes writes and multi-conn.
    nbd::Handle nbd;
    connect(nbd, argc, argv);
    exportsize = nbd.get_size();
    if (exportsize <= static_cast<std::int64_t>(buffer_size)) {
      std::fprintf(stderr, "export too small, must be larger than %zu\n", buffer_size);
      std::exit(EXIT_FAILURE);
    }
    if (nbd.is_read_only()) {
      std::fprintf(stderr, "%s: error: this NBD export is read-only\n", argv[0]);
      std::exit(EXIT_FAILURE);
    }
    if (nr_multi_conn > 1 && !nbd.can_multi_conn()) {
      std::fprintf(stderr, "%s: error: this NBD export does not support multi-conn\n", argv[0]);
      std::exit(EXIT_FAILURE);
    }
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }

  // One thread per connection.
  std::vector<ThreadStatus> status(nr_multi_conn);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < nr_multi_conn; ++i) {
    status[i].i = i;
    threads.emplace_back(run_thread, std::ref(status[i]), argc, argv);
  }

  unsigned errors = 0, requests = 0;
  std::size_t most_in_flight = 0;
  for (std::size_t i = 0; i < nr_multi_conn; ++i) {
    threads[i].join();
    if (status[i].status != 0) {
      std::fprintf(stderr, "thread %zu failed with status %d\n", i, status[i].status);
      errors++;
    }
    requests += status[i].requests;
    most_in_flight = std::max(most_in_flight, status[i].most_in_flight);
  }

  // Every command issued must have completed.
  if (errors == 0 && requests != nr_multi_conn * nr_cycles) {
    std::fprintf(stderr, "%u commands completed, expected %zu\n", requests,
                 nr_multi_conn * nr_cycles);
    errors++;
  }

  std::printf("most requests seen in flight = %zu (per thread) vs MAX_IN_FLIGHT = %zu\n",
              most_in_flight, max_in_flight);
  std::exit(errors == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
