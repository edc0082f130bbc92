// SPDX-License-Identifier: BSD-3-Clause
//
// Copy one NBD export to another asynchronously, driving both handles from
// a plain poll() loop. The source is mapped with block status
// (base:allocation): areas that read as zeroes become zero commands on the
// destination instead of reads and writes; data is read and written in
// 1 MiB requests, 16 in flight. Progress goes to stderr. The nbdcpp
// counterpart of libnbd's examples/copy-libev.c, which does the same copy
// (without the block status) on libev.
//
// Try it with:
//
//   nbdkit -r pattern size=1G -U /tmp/src.sock &
//   nbdkit memory size=1G -U /tmp/dst.sock &
//   ./copy 'nbd+unix:///?socket=/tmp/src.sock' 'nbd+unix:///?socket=/tmp/dst.sock'
//
// NBDCPP_DEBUG=1 shows what the handles do.

#include <nbdcpp/handle.hpp>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

namespace {

constexpr std::size_t max_requests = 16;
constexpr std::size_t request_size = 1024 * 1024;
// How much of the source one block status request maps (well under the
// 4 GiB a 32-bit extent can describe).
constexpr std::uint64_t map_size = 1024 * 1024 * 1024;

[[noreturn]] void fail(const char* what, int err) {
  std::fprintf(stderr, "copy: %s: %s\n", what, std::strerror(err));
  std::exit(EXIT_FAILURE);
}

// A piece of the source to copy: data (read then write) or zeroes.
struct Piece {
  std::uint64_t offset;
  std::uint64_t length;
  bool zero;
};

class Copier {
public:
  Copier(const char* src_uri, const char* dst_uri) {
    // Connecting is quick: use the blocking calls.
    src_.add_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
    src_.connect_uri(src_uri);
    dst_.connect_uri(dst_uri);

    size_ = static_cast<std::uint64_t>(src_.get_size());
    if (size_ > static_cast<std::uint64_t>(dst_.get_size())) {
      std::fprintf(stderr, "copy: the destination is smaller than the source\n");
      std::exit(EXIT_FAILURE);
    }
    if (dst_.is_read_only()) {
      std::fprintf(stderr, "copy: the destination is read-only\n");
      std::exit(EXIT_FAILURE);
    }
    have_extents_ = src_.can_meta_context(nbd::CONTEXT_BASE_ALLOCATION);
    dst_can_zero_ = dst_.can_zero();
    progress_tty_ = ::isatty(STDERR_FILENO) == 1;

    buffers_.resize(max_requests, std::vector<std::uint8_t>(request_size));
    for (std::size_t i = 0; i < max_requests; ++i) free_.push_back(i);
    if (!dst_can_zero_) zeroes_.resize(request_size);
  }

  void run() {
    pump();
    while (copied_ < size_) {
      std::array<nbd::Handle*, 2> handles{&src_, &dst_};
      std::array<pollfd, 2> fds{};
      std::array<unsigned, 2> dirs{};
      for (std::size_t i = 0; i < 2; ++i) {
        dirs[i] = handles[i]->aio_get_direction();
        fds[i].fd = handles[i]->aio_get_fd();
        if (dirs[i] & nbd::AIO_DIRECTION_READ) fds[i].events |= POLLIN;
        if (dirs[i] & nbd::AIO_DIRECTION_WRITE) fds[i].events |= POLLOUT;
      }
      if (::poll(fds.data(), fds.size(), -1) == -1) {
        if (errno == EINTR) continue;
        fail("poll", errno);
      }
      for (std::size_t i = 0; i < 2; ++i) {
        // A hang-up or error is news only a read can collect.
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
          handles[i]->aio_notify_read();
        else if ((dirs[i] & nbd::AIO_DIRECTION_WRITE) && (fds[i].revents & POLLOUT))
          handles[i]->aio_notify_write();
        if (handles[i]->aio_is_dead() || handles[i]->aio_is_closed()) {
          std::fprintf(stderr, "copy: %s connection lost: %s\n", i == 0 ? "source" : "destination",
                       handles[i]->get_error_message().c_str());
          std::exit(EXIT_FAILURE);
        }
      }
      pump();
    }

    // Make the copy durable, then leave both servers politely.
    if (dst_.can_flush()) dst_.flush();
    dst_.shutdown();
    src_.shutdown();
    std::fprintf(stderr, "copy: %llu bytes: %llu read and written, %llu zeroed in %llu requests\n",
                 ull(size_), ull(data_bytes_), ull(zero_bytes_), ull(zero_requests_));
  }

private:
  static unsigned long long ull(std::uint64_t v) { return v; }

  // Starts as many pieces as there are free request slots, mapping more of
  // the source when the pieces run out.
  void pump() {
    while (!free_.empty()) {
      if (pieces_.empty()) {
        if (mapped_ < size_ && !mapping_) map_next();
        if (pieces_.empty()) return; // wait for block status
      }
      const Piece p = pieces_.front();
      pieces_.pop_front();
      const std::size_t slot = free_.back();
      free_.pop_back();
      start(slot, p);
    }
  }

  void add_piece(std::uint64_t offset, std::uint64_t length, bool zero) {
    // A zero command may cover the whole extent; data moves in buffers.
    const std::uint64_t step = zero && dst_can_zero_ ? length : request_size;
    for (std::uint64_t at = offset; at < offset + length; at += step)
      pieces_.push_back(Piece{at, std::min(step, offset + length - at), zero});
  }

  void map_next() {
    const std::uint64_t length = std::min(map_size, size_ - mapped_);
    if (!have_extents_) {
      // No block status on the source: everything is data.
      add_piece(mapped_, length, false);
      mapped_ += length;
      return;
    }
    mapping_ = true;
    const std::uint64_t start = mapped_;
    src_.aio_block_status(
        length, start,
        [this, start, length](std::string_view context, std::uint64_t offset,
                              std::span<std::uint32_t> entries, int*) {
          if (context != nbd::CONTEXT_BASE_ALLOCATION) return 0;
          // Entries are (length, flags) pairs from offset; the server may
          // describe less than asked, and its last extent may run past the
          // end of the request.
          std::uint64_t pos = offset;
          for (std::size_t i = 0; i + 1 < entries.size(); i += 2) {
            const std::uint64_t end = std::min<std::uint64_t>(pos + entries[i], start + length);
            if (end <= pos) break;
            add_piece(pos, end - pos, (entries[i + 1] & nbd::STATE_ZERO) != 0);
            pos = end;
          }
          map_end_ = pos;
          return 0;
        },
        [this, start](int* error) {
          if (*error) fail("block status", *error);
          if (map_end_ <= start) {
            std::fprintf(stderr, "copy: block status made no progress\n");
            std::exit(EXIT_FAILURE);
          }
          mapped_ = map_end_;
          mapping_ = false;
          return 1;
        });
  }

  void start(std::size_t slot, const Piece& p) {
    auto done = [this, slot, p](int* error) {
      if (*error) fail(p.zero ? "zero" : "write", *error);
      finished(slot, p);
      return 1;
    };
    if (p.zero && dst_can_zero_) {
      dst_.aio_zero(p.length, p.offset, done);
    } else if (p.zero) {
      dst_.aio_pwrite(std::span(zeroes_).first(p.length), p.offset, done);
    } else {
      auto buf = std::span(buffers_[slot]).first(p.length);
      // When the read completes, its callback queues the write of the same
      // buffer on the other handle.
      src_.aio_pread(buf, p.offset, [this, buf, p, done = std::move(done)](int* error) mutable {
        if (*error) fail("read", *error);
        dst_.aio_pwrite(buf, p.offset, std::move(done));
        return 1;
      });
    }
  }

  void finished(std::size_t slot, const Piece& p) {
    free_.push_back(slot);
    copied_ += p.length;
    if (p.zero) {
      zero_bytes_ += p.length;
      ++zero_requests_;
    } else {
      data_bytes_ += p.length;
    }
    progress();
  }

  void progress() {
    const int percent = size_ ? static_cast<int>(copied_ * 100 / size_) : 100;
    // On a terminal, one line rewritten; elsewhere a line each 10%.
    if (percent == last_percent_) return;
    if (!progress_tty_ && percent / 10 == last_percent_ / 10 && percent < 100) return;
    last_percent_ = percent;
    std::fprintf(stderr, "%scopy: %3d%% (%llu/%llu bytes)%s", progress_tty_ ? "\r" : "", percent,
                 ull(copied_), ull(size_), progress_tty_ && percent < 100 ? "" : "\n");
  }

  nbd::Handle src_, dst_;
  std::uint64_t size_ = 0;
  bool have_extents_ = false;
  bool dst_can_zero_ = false;
  bool progress_tty_ = false;

  std::uint64_t mapped_ = 0;  // the source is mapped up to here
  std::uint64_t map_end_ = 0; // how far the block status in flight got
  bool mapping_ = false;      // a block status is in flight
  std::deque<Piece> pieces_;  // mapped, not started

  std::vector<std::vector<std::uint8_t>> buffers_; // one per request slot
  std::vector<std::size_t> free_;                  // free request slots
  std::vector<std::uint8_t> zeroes_;               // when dst cannot zero

  std::uint64_t copied_ = 0, data_bytes_ = 0, zero_bytes_ = 0, zero_requests_ = 0;
  int last_percent_ = -1;
};

} // namespace

int main(int argc, char* argv[]) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SRC_URI DST_URI\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }
  try {
    Copier copier(argv[1], argv[2]);
    copier.run();
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "copy: %s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  std::exit(EXIT_SUCCESS);
}
