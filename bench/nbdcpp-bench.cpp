// SPDX-License-Identifier: BSD-3-Clause
// nbdcpp-bench: keeps QD requests of SIZE bytes in flight against an NBD
// server for SECONDS and reports throughput and client-side cost per
// command, for nbdcpp (either transport) or libnbd, with the same loop:
//
//   queue QD commands; loop { poll(-1); re-queue every command that
//   completed (the completion callback only records it) }
//
// which is each library's documented fast pattern (nbd_poll in libnbd,
// Handle::poll in nbdcpp; on io_uring one io_uring_enter submits the
// batch and waits). Callbacks do not queue the next command themselves
// because libnbd cannot (its callbacks run under the handle lock).
//
// What is measured, and how (see docs/performance.md):
// - The stream of commands never stops; phases are snapshots of it:
//   warm-up (0.2 s, not reported: vectors and slots reach their steady
//   size), the timed phase (SECONDS: ops, MiB/s, CPU, allocations), then a
//   short counted phase for system calls.
// - CPU: getrusage(RUSAGE_SELF) user + sys of this process (all its
//   threads, io_uring's io-wq workers included), per completed command.
// - System calls: the kernel's own count. A perf counter on the
//   raw_syscalls:sys_enter tracepoint, bound to this process, counts every
//   system call it enters, io_uring_enter made by liburing's raw syscall
//   included. It runs in its own phase after the timed one, because an
//   attached syscall tracepoint slows every system call a little, which
//   would tax the library that makes more of them. Without tracefs (or
//   permission) the count is -1 ("unknown").
// - Heap allocations: this binary interposes malloc, calloc, realloc,
//   aligned_alloc, posix_memalign and memalign (libnbd.so, libstdc++'s
//   operator new and nbdcpp all resolve to these), counting calls in the
//   timed phase.
//
// TLS: an nbds:// or nbds+unix:// URI with tls-psk-file= or
// tls-certificates= works for both engines (both allow local files in
// URIs here: the URI is the bench user's own).

#include <nbdcpp/handle.hpp>

#ifdef NBDCPP_BENCH_HAVE_LIBNBD
#include <libnbd.h>
#endif

#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

// --- allocation counting ------------------------------------------------------------

namespace {
std::atomic<std::uint64_t> g_allocs{0};
}

extern "C" {
// glibc's own entry points, so the interposers need no dlsym (which
// itself allocates).
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);

void* malloc(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t m) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(n, m);
}
void* realloc(void* p, std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, n);
}
void* memalign(std::size_t a, std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(a, n);
}
void* aligned_alloc(std::size_t a, std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(a, n);
}
int posix_memalign(void** out, std::size_t a, std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (a < sizeof(void*) || (a & (a - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
}

namespace {

using Clock = std::chrono::steady_clock;

// --- system call counting ------------------------------------------------------------

class SyscallCounter {
public:
  SyscallCounter() {
    long id = tracepoint_id();
    if (id < 0) return;
    perf_event_attr attr{};
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_TRACEPOINT;
    attr.config = static_cast<std::uint64_t>(id);
    attr.disabled = 1;
    attr.inherit = 1; // threads started later (io-wq workers make no syscalls, but be safe)
    fd_ = static_cast<int>(::syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC));
  }
  ~SyscallCounter() {
    if (fd_ >= 0) ::close(fd_);
  }
  SyscallCounter(const SyscallCounter&) = delete;
  SyscallCounter& operator=(const SyscallCounter&) = delete;

  bool ok() const { return fd_ >= 0; }
  void start() {
    if (fd_ < 0) return;
    ::ioctl(fd_, PERF_EVENT_IOC_RESET, 0);
    ::ioctl(fd_, PERF_EVENT_IOC_ENABLE, 0);
  }
  // The count since start(), without the ioctl that stops it.
  std::int64_t stop() {
    if (fd_ < 0) return -1;
    ::ioctl(fd_, PERF_EVENT_IOC_DISABLE, 0);
    std::uint64_t v = 0;
    if (::read(fd_, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) return -1;
    return v > 0 ? static_cast<std::int64_t>(v - 1) : 0;
  }

private:
  static long tracepoint_id() {
    for (const char* dir : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
      std::string path = std::string(dir) + "/events/raw_syscalls/sys_enter/id";
      if (FILE* f = std::fopen(path.c_str(), "re")) {
        long id = -1;
        if (std::fscanf(f, "%ld", &id) != 1) id = -1;
        std::fclose(f);
        if (id >= 0) return id;
      }
    }
    return -1;
  }

  int fd_ = -1;
};

double cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

// --- options -------------------------------------------------------------------------

struct Options {
  std::string engine = "nbdcpp";
  std::string transport = "uring";
  std::string uri;
  unsigned qd = 1;
  std::uint64_t size = 4096;
  double seconds = 1;
  bool random = true;
  bool write = false;
  bool reply_batching = true; // nbdcpp's default; --no-reply-batching turns it off
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "nbdcpp-bench: %s\n"
               "usage: nbdcpp-bench [--engine nbdcpp|libnbd] [--transport uring|socket]\n"
               "                    [--no-reply-batching] URI QD SIZE SECONDS rand|seq read|write\n",
               why);
  std::exit(2);
}

std::uint64_t parse_size(const char* s) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno || end == s) usage("bad SIZE");
  switch (*end) {
  case 'k': case 'K': v <<= 10; ++end; break;
  case 'm': case 'M': v <<= 20; ++end; break;
  default: break;
  }
  if (*end || v == 0) usage("bad SIZE");
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  std::vector<const char*> pos;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if ((a == "--engine" || a == "--transport") && i + 1 < argc) {
      (a == "--engine" ? o.engine : o.transport) = argv[++i];
    } else if (a.starts_with("--engine=")) {
      o.engine = a.substr(9);
    } else if (a.starts_with("--transport=")) {
      o.transport = a.substr(12);
    } else if (a == "--no-reply-batching") {
      o.reply_batching = false;
    } else if (a == "--help" || a == "-h") {
      usage("help");
    } else {
      pos.push_back(argv[i]);
    }
  }
  if (pos.size() != 6) usage("expected 6 arguments");
  if (o.engine != "nbdcpp" && o.engine != "libnbd") usage("--engine: nbdcpp or libnbd");
  if (o.transport != "uring" && o.transport != "socket") usage("--transport: uring or socket");
  o.uri = pos[0];
  o.qd = static_cast<unsigned>(std::strtoul(pos[1], nullptr, 10));
  if (o.qd == 0 || o.qd > 1024) usage("QD must be 1..1024");
  o.size = parse_size(pos[2]);
  o.seconds = std::strtod(pos[3], nullptr);
  if (!(o.seconds > 0)) usage("SECONDS must be positive");
  std::string_view pattern = pos[4], op = pos[5];
  if (pattern != "rand" && pattern != "seq") usage("pattern: rand or seq");
  if (op != "read" && op != "write") usage("operation: read or write");
  o.random = pattern == "rand";
  o.write = op == "write";
  return o;
}

// --- the workload, shared by both engines ------------------------------------------------------

class Workload {
public:
  Workload(const Options& o, std::uint64_t export_size) : o_(o) {
    blocks_ = export_size / o.size;
    if (blocks_ == 0) {
      std::fprintf(stderr, "nbdcpp-bench: the export (%" PRIu64 " bytes) is smaller than SIZE\n",
                   export_size);
      std::exit(1);
    }
    bufs_.resize(o.qd);
    for (auto& b : bufs_) {
      b.assign(o.size, 0);
      if (o.write)
        for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(i * 7 + 1);
    }
    done_.reserve(o.qd);
  }

  std::uint64_t next_offset() {
    if (o_.random) {
      // xorshift64*: cheap, and the same sequence for both engines.
      rng_ ^= rng_ >> 12;
      rng_ ^= rng_ << 25;
      rng_ ^= rng_ >> 27;
      return ((rng_ * 0x2545F4914F6CDD1Dull) % blocks_) * o_.size;
    }
    std::uint64_t off = seq_ * o_.size;
    seq_ = (seq_ + 1) % blocks_;
    return off;
  }

  std::uint8_t* buf(unsigned slot) { return bufs_[slot].data(); }
  // Called from completion callbacks: no allocation (reserved).
  void done(unsigned slot, int err) {
    if (err) ++errors_;
    done_.push_back(slot);
  }
  std::vector<unsigned>& completed() { return done_; }
  std::uint64_t errors() const { return errors_; }

private:
  const Options& o_;
  std::uint64_t blocks_ = 1;
  std::uint64_t rng_ = 0x9E3779B97F4A7C15ull;
  std::uint64_t seq_ = 0;
  std::vector<std::vector<std::uint8_t>> bufs_;
  std::vector<unsigned> done_;
  std::uint64_t errors_ = 0;
};

struct Result {
  std::uint64_t ops = 0;
  double secs = 0;
  double cpu = 0;
  std::uint64_t allocs = 0;
  std::uint64_t counted_ops = 0;
  std::int64_t syscalls = -1;
};

// Runs the phases around an engine. E provides: issue(slot, offset),
// poll(), in_flight().
template <typename E>
Result run(const Options& o, Workload& w, E& engine) {
  SyscallCounter counter;
  enum Phase { warmup, timed, counted, draining } phase = warmup;
  const double warmup_s = 0.2;
  const double counted_s = std::min(0.5, std::max(0.1, o.seconds / 4));

  Result r;
  std::uint64_t ops = 0, ops_mark = 0;
  double cpu_mark = 0;
  std::uint64_t alloc_mark = 0;
  auto t_mark = Clock::now();
  auto phase_end = t_mark + std::chrono::duration<double>(warmup_s);

  for (unsigned i = 0; i < o.qd; ++i) engine.issue(i, w.next_offset());
  while (phase != draining || engine.in_flight() > 0) {
    engine.poll();
    auto& done = w.completed();
    ops += done.size();
    if (phase != draining)
      for (unsigned slot : done) engine.issue(slot, w.next_offset());
    done.clear();
    if (phase == draining) continue;
    auto now = Clock::now();
    if (now < phase_end) continue;
    switch (phase) {
    case warmup:
      phase = timed;
      ops_mark = ops;
      cpu_mark = cpu_seconds();
      alloc_mark = g_allocs.load(std::memory_order_relaxed);
      t_mark = Clock::now();
      phase_end = t_mark + std::chrono::duration<double>(o.seconds);
      break;
    case timed:
      r.allocs = g_allocs.load(std::memory_order_relaxed) - alloc_mark;
      r.cpu = cpu_seconds() - cpu_mark;
      r.secs = std::chrono::duration<double>(now - t_mark).count();
      r.ops = ops - ops_mark;
      if (!counter.ok()) {
        phase = draining;
        break;
      }
      phase = counted;
      ops_mark = ops;
      counter.start();
      phase_end = now + std::chrono::duration<double>(counted_s);
      break;
    case counted:
      r.syscalls = counter.stop();
      r.counted_ops = ops - ops_mark;
      phase = draining;
      break;
    case draining: break;
    }
  }
  return r;
}

// --- nbdcpp ----------------------------------------------------------------------------------

struct NbdcppEngine {
  nbd::Handle h;
  Workload* w = nullptr;
  std::uint64_t size = 0;
  bool write = false;

  void issue(unsigned slot, std::uint64_t offset) {
    Workload* wl = w;
    nbd::CompletionCallback cb = [wl, slot](int* err) {
      wl->done(slot, *err);
      return 1; // retire at once
    };
    if (write)
      h.aio_pwrite({w->buf(slot), size}, offset, std::move(cb));
    else
      h.aio_pread({w->buf(slot), size}, offset, std::move(cb));
  }
  void poll() { h.poll(-1); }
  std::size_t in_flight() const { return h.aio_in_flight(); }
};

Result run_nbdcpp(const Options& o) {
  NbdcppEngine e;
  e.h.set_transport(o.transport == "socket" ? nbd::TransportKind::socket
                                            : nbd::TransportKind::uring);
  // The URI comes from whoever runs the bench, so it may name local files
  // (nbds+unix://...&tls-psk-file=KEYS or tls-certificates=DIR).
  e.h.set_uri_allow_local_file(true);
  e.h.set_reply_batching(o.reply_batching);
  e.h.connect_uri(o.uri);
  if (e.h.get_transport_name() != (o.transport == "socket" ? "socket" : "io_uring")) {
    std::fprintf(stderr, "nbdcpp-bench: got transport %s\n", e.h.get_transport_name().c_str());
    std::exit(1);
  }
  Workload w(o, static_cast<std::uint64_t>(e.h.get_size()));
  e.w = &w;
  e.size = o.size;
  e.write = o.write;
  Result r = run(o, w, e);
  if (w.errors()) {
    std::fprintf(stderr, "nbdcpp-bench: %" PRIu64 " commands failed\n", w.errors());
    std::exit(1);
  }
  e.h.shutdown();
  return r;
}

// --- libnbd ----------------------------------------------------------------------------------

#ifdef NBDCPP_BENCH_HAVE_LIBNBD
[[noreturn]] void libnbd_die(const char* what) {
  std::fprintf(stderr, "nbdcpp-bench: %s: %s\n", what, nbd_get_error());
  std::exit(1);
}

struct LibnbdEngine {
  nbd_handle* h = nullptr;
  Workload* w = nullptr;
  std::uint64_t size = 0;
  bool write = false;
  // One context per slot, so the callback needs no allocation of ours.
  struct Ctx {
    Workload* w;
    unsigned slot;
  };
  std::vector<Ctx> ctx;

  static int on_done(void* user_data, int* error) {
    auto* c = static_cast<Ctx*>(user_data);
    c->w->done(c->slot, *error);
    return 1; // auto-retire
  }

  void issue(unsigned slot, std::uint64_t offset) {
    nbd_completion_callback cb{on_done, &ctx[slot], nullptr};
    std::int64_t r = write ? nbd_aio_pwrite(h, w->buf(slot), size, offset, cb, 0)
                           : nbd_aio_pread(h, w->buf(slot), size, offset, cb, 0);
    if (r == -1) libnbd_die(write ? "nbd_aio_pwrite" : "nbd_aio_pread");
  }
  void poll() {
    if (nbd_poll(h, -1) == -1) libnbd_die("nbd_poll");
  }
  std::size_t in_flight() const { return static_cast<std::size_t>(nbd_aio_in_flight(h)); }
};

Result run_libnbd(const Options& o) {
  LibnbdEngine e;
  e.h = nbd_create();
  if (!e.h) libnbd_die("nbd_create");
  // As for nbdcpp: tls-psk-file= and tls-certificates= need this.
  if (nbd_set_uri_allow_local_file(e.h, true) == -1) libnbd_die("nbd_set_uri_allow_local_file");
  if (nbd_connect_uri(e.h, o.uri.c_str()) == -1) libnbd_die("nbd_connect_uri");
  std::int64_t sz = nbd_get_size(e.h);
  if (sz < 0) libnbd_die("nbd_get_size");
  Workload w(o, static_cast<std::uint64_t>(sz));
  e.w = &w;
  e.size = o.size;
  e.write = o.write;
  for (unsigned i = 0; i < o.qd; ++i) e.ctx.push_back({&w, i});
  Result r = run(o, w, e);
  if (w.errors()) {
    std::fprintf(stderr, "nbdcpp-bench: %" PRIu64 " commands failed\n", w.errors());
    std::exit(1);
  }
  nbd_shutdown(e.h, 0);
  nbd_close(e.h);
  return r;
}
#endif

} // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  Result r;
  try {
    if (o.engine == "nbdcpp") {
      r = run_nbdcpp(o);
    } else {
#ifdef NBDCPP_BENCH_HAVE_LIBNBD
      r = run_libnbd(o);
#else
      std::fprintf(stderr, "nbdcpp-bench: built without libnbd (libnbd-dev)\n");
      return 77;
#endif
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nbdcpp-bench: %s\n", e.what());
    return 1;
  }
  const double ops = static_cast<double>(r.ops);
  const double per = r.ops ? 1.0 / ops : 0.0;
  const double sys_per_op =
      r.syscalls < 0 || r.counted_ops == 0
          ? -1.0
          : static_cast<double>(r.syscalls) / static_cast<double>(r.counted_ops);
  std::printf("ops=%" PRIu64 " secs=%.3f ops_per_s=%.1f MiB_per_s=%.2f cpu_us_per_op=%.3f "
              "syscalls_per_op=%.3f allocs_per_op=%.4f\n",
              r.ops, r.secs, ops / r.secs, ops * static_cast<double>(o.size) / r.secs / 1048576.0,
              r.cpu * 1e6 * per, sys_per_op, static_cast<double>(r.allocs) * per);
  return 0;
}
