// SPDX-License-Identifier: BSD-3-Clause
// Threads: one handle used from several threads at once (aio_ commands,
// blocking calls, polling, callbacks that queue more commands, a shutdown
// racing new commands), and several handles on several threads.
//
// Every test case here is named "threads: ...", so a ThreadSanitizer build
// runs just these: integration-tests -tc='threads:*' (tools/test.sh does,
// on both transports). Worker threads never use doctest's assertions; they
// count into atomics the test thread checks after join().

#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::uint64_t kib = 1024;
constexpr std::uint64_t mib = 1024 * 1024;

std::vector<std::uint8_t> filled(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng());
  return v;
}

/// Counts what worker threads saw; checked on the test thread.
struct Tally {
  std::atomic<int> failed{0};  // calls that threw or commands that failed
  std::atomic<int> bad{0};     // wrong data
  std::atomic<int> calls{0};   // completion callbacks run
  std::atomic<int> issued{0};  // commands queued with a callback
  std::mutex mu;
  std::string first; // what went wrong first, for the report

  void fail(const std::string& what) {
    ++failed;
    std::lock_guard g(mu);
    if (first.empty()) first = what;
  }
  void wrong(const std::string& what) {
    ++bad;
    std::lock_guard g(mu);
    if (first.empty()) first = what;
  }
};

} // namespace

TEST_CASE("threads: one handle, 4 threads issuing aio_ and blocking commands and polling") {
  nbd::Handle h;
  h.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
  nbdtest::connect(h, {"memory", "16M"});
  REQUIRE(h.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION));
  Tally t;
  std::vector<std::thread> threads;
  for (int id = 0; id < 4; ++id) {
    threads.emplace_back([&, id] {
      // Each thread owns a 4 MiB region, so its reads have one right answer.
      const std::uint64_t base = static_cast<std::uint64_t>(id) * 4 * mib;
      std::mt19937 rng(static_cast<std::uint32_t>(id) + 100);
      for (int round = 0; round < 25; ++round) {
        try {
          const std::uint64_t off = base + (rng() % 60) * 64 * kib;
          auto w = filled(64 * kib, rng());
          std::vector<std::uint8_t> r1(64 * kib), r2(64 * kib);
          switch (round % 3) {
          case 0: { // aio_ with completion callbacks (run on whichever thread drives)
            std::atomic<int> done{0};
            auto cb = [&](int* err) {
              if (*err) ++t.failed;
              ++t.calls;
              ++done;
              return 1;
            };
            t.issued += 1;
            h.aio_pwrite(w, off, cb);
            while (done.load() < 1) h.poll(100);
            t.issued += 2;
            h.aio_pread(r1, off, cb);
            h.aio_pread_structured(
                r2, off, [](std::span<const std::uint8_t>, std::uint64_t, unsigned, int*) { return 0; },
                cb);
            while (done.load() < 3) h.poll(100);
            break;
          }
          case 1: { // aio_ without callbacks, reaped with aio_command_completed
            auto ck = h.aio_pwrite(w, off);
            while (!h.aio_command_completed(ck)) h.poll(100);
            auto c1 = h.aio_pread(r1, off);
            auto c2 = h.aio_pread(r2, off);
            while (!h.aio_command_completed(c1)) h.poll(100);
            while (!h.aio_command_completed(c2)) h.poll(100);
            break;
          }
          default: { // blocking calls
            h.pwrite(w, off);
            h.pread(r1, off);
            h.flush();
            h.zero(64 * kib, base + 62 * 64 * kib);
            h.trim(64 * kib, base + 63 * 64 * kib);
            std::uint64_t seen = 0;
            h.block_status(128 * kib, base + 62 * 64 * kib,
                           [&](std::string_view, std::uint64_t, std::span<std::uint32_t> e, int*) {
                             for (std::size_t i = 0; i < e.size(); i += 2) seen += e[i];
                             return 0;
                           });
            if (seen == 0) ++t.bad;
            h.pread(r2, off);
            break;
          }
          }
          if (r1 != w || r2 != w) ++t.bad;
        } catch (const nbd::Error&) {
          ++t.failed;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(t.failed == 0);
  CHECK(t.bad == 0);
  CHECK(t.calls == t.issued);
  CHECK(h.aio_in_flight() == 0);
  h.shutdown();
  CHECK(h.aio_is_closed());
}

TEST_CASE("threads: one poller thread, three threads queueing with callbacks") {
  // The event-loop shape: one thread drives the handle, others only queue
  // commands and wait for their callbacks (which run on the poller).
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "8M"});
  Tally t;
  std::atomic<bool> stop{false};
  std::thread poller([&] {
    try {
      while (!stop.load()) h.poll(20);
    } catch (const nbd::Error&) {
      ++t.failed;
    }
  });
  const std::thread::id poller_id = poller.get_id();
  std::atomic<int> wrong_thread{0};
  std::vector<std::thread> threads;
  for (int id = 0; id < 3; ++id) {
    threads.emplace_back([&, id] {
      std::mutex m;
      std::condition_variable cv;
      int done = 0;
      auto cb = [&](int* err) {
        if (*err) ++t.failed;
        if (std::this_thread::get_id() != poller_id) ++wrong_thread;
        ++t.calls;
        std::lock_guard g(m);
        ++done;
        cv.notify_one();
        return 1;
      };
      for (int round = 0; round < 30; ++round) {
        const std::uint64_t off = (static_cast<std::uint64_t>(id) * 64 + round % 64) * 32 * kib;
        auto w = filled(32 * kib, static_cast<std::uint32_t>(id * 1000 + round));
        std::vector<std::uint8_t> r(32 * kib);
        try {
          t.issued += 1;
          h.aio_pwrite(w, off, cb);
          {
            std::unique_lock g(m);
            if (!cv.wait_for(g, std::chrono::seconds(30), [&] { return done == 1; })) ++t.failed;
          }
          t.issued += 1;
          h.aio_pread(r, off, cb);
          {
            std::unique_lock g(m);
            if (!cv.wait_for(g, std::chrono::seconds(30), [&] { return done == 2; })) ++t.failed;
            done = 0;
          }
        } catch (const nbd::Error&) {
          ++t.failed;
          return;
        }
        if (r != w) ++t.bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  stop = true;
  poller.join();
  CHECK(t.failed == 0);
  CHECK(t.bad == 0);
  CHECK(wrong_thread == 0);
  CHECK(t.calls == t.issued);
}

TEST_CASE("threads: callbacks chaining commands while other threads queue and poll") {
  nbd::Handle h;
  nbdtest::connect(h, {"pattern", "16M"});
  Tally t;
  constexpr int chains = 4, links = 40;
  std::atomic<int> chained{0};
  std::vector<std::thread> threads;
  for (int id = 0; id < chains; ++id) {
    threads.emplace_back([&, id] {
      // Each completion queues the next read of the chain from inside the
      // callback (libnbd deadlocks there; nbdcpp allows it).
      auto buf = std::make_shared<std::vector<std::uint8_t>>(16 * kib);
      auto left = std::make_shared<std::atomic<int>>(links);
      auto next = std::make_shared<std::function<void(std::uint64_t)>>();
      std::weak_ptr<std::function<void(std::uint64_t)>> weak = next;
      *next = [&, buf, left, weak](std::uint64_t off) {
        h.aio_pread(*buf, off, [&, buf, left, weak, off](int* err) {
          if (*err) t.fail("chained read at " + std::to_string(off) + ": errno " + std::to_string(*err));
          for (std::size_t j = 0; j < buf->size(); ++j)
            if ((*buf)[j] != nbdtest::pattern_byte(off + j)) {
              t.wrong("chained read at " + std::to_string(off) + ": wrong byte at " + std::to_string(j));
              break;
            }
          ++chained;
          if (--*left > 0)
            if (auto f = weak.lock()) (*f)(off + 16 * kib);
          return 1;
        });
      };
      try {
        (*next)(static_cast<std::uint64_t>(id) * 4 * mib + 8);
        while (left->load() > 0) h.poll(100);
      } catch (const nbd::Error& e) {
        t.fail(std::string("chain thread: ") + e.what());
      }
      // Let in-flight work drain before the chain's closure goes away.
      while (h.aio_in_flight() > 0) h.poll(100);
    });
  }
  for (auto& th : threads) th.join();
  INFO(t.first);
  INFO("handle: " << h.get_error_message() << " (" << h.get_error().message() << ")");
  CHECK(t.failed == 0);
  CHECK(t.bad == 0);
  CHECK(chained == chains * links);
}

TEST_CASE("threads: shutdown racing commands queued from other threads") {
  // Whatever the interleaving, every command that was accepted completes
  // exactly once, and those refused are refused with EINVAL (shutting
  // down) or ENOTCONN.
  nbd::Handle h;
  nbdtest::connect(h, {"memory", "4M"});
  Tally t;
  std::atomic<int> refused{0}, wrong_errno{0};
  std::atomic<bool> go{false};
  // Read buffers outlive the threads: reads a thread queued may still be
  // in flight when it gives up.
  std::vector<std::vector<std::uint8_t>> bufs(3, std::vector<std::uint8_t>(4 * kib));
  std::vector<std::thread> threads;
  for (int id = 0; id < 3; ++id) {
    threads.emplace_back([&, id] {
      std::vector<std::uint8_t>& buf = bufs[id];
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < 2000; ++i) {
        std::error_code ec;
        std::uint64_t ck = h.aio_pread(buf, static_cast<std::uint64_t>(id) * 64 * kib, [&](int*) {
          ++t.calls;
          return 1;
        }, 0, ec);
        if (ec) {
          ++refused;
          if (ec.value() != EINVAL && ec.value() != ENOTCONN) ++wrong_errno;
          break;
        }
        if (ck == 0) ++wrong_errno;
        ++t.issued;
        try {
          h.poll(0);
        } catch (const nbd::Error&) {
        }
      }
    });
  }
  go = true;
  // Shut down while the threads are busy queueing (not before they start).
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (t.issued < 50 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  try {
    h.shutdown();
  } catch (const nbd::Error&) {
    ++t.failed;
  }
  for (auto& th : threads) th.join();
  CHECK(t.failed == 0);
  CHECK(wrong_errno == 0);
  CHECK(t.calls == t.issued);
  CHECK(h.aio_in_flight() == 0);
  CHECK((h.aio_is_closed() || h.aio_is_dead()));
}

TEST_CASE("threads: several handles on several threads") {
  constexpr int nthreads = 4;
  Tally t;
  std::vector<std::thread> threads;
  for (int id = 0; id < nthreads; ++id) {
    threads.emplace_back([&, id] {
      try {
        nbd::Handle h;
        nbdtest::connect(h, {"memory", "4M"});
        std::mt19937 rng(static_cast<std::uint32_t>(id));
        std::vector<std::vector<std::uint8_t>> w, r;
        for (int i = 0; i < 16; ++i) {
          w.push_back(filled(64 * kib, rng()));
          r.emplace_back(64 * kib);
        }
        for (int round = 0; round < 10; ++round) {
          std::vector<std::uint64_t> cks;
          for (int i = 0; i < 16; ++i) cks.push_back(h.aio_pwrite(w[i], i * 128 * kib));
          for (auto ck : cks)
            while (!h.aio_command_completed(ck)) h.poll(-1);
          cks.clear();
          for (int i = 0; i < 16; ++i) cks.push_back(h.aio_pread(r[i], i * 128 * kib));
          for (auto ck : cks)
            while (!h.aio_command_completed(ck)) h.poll(-1);
          for (int i = 0; i < 16; ++i)
            if (r[i] != w[i]) ++t.bad;
          std::rotate(w.begin(), w.begin() + 1, w.end());
        }
        h.shutdown();
      } catch (const nbd::Error&) {
        ++t.failed;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(t.failed == 0);
  CHECK(t.bad == 0);
}
