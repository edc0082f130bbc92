// SPDX-License-Identifier: BSD-3-Clause
//
// Drive nbdcpp handles from the glib main loop: a GSource per handle that
// polls aio_get_fd() for the events aio_get_direction() asks for and calls
// aio_notify_read() / aio_notify_write() when they happen. The rest of the
// file uses two such sources to copy one nbdkit instance to another, with
// reads and writes started from idle callbacks. The nbdcpp port of
// libnbd's examples/glib-main-loop.c.
//
// With no arguments it copies nbdkit's 64 MiB pattern plugin into a memory
// disk, as libnbd's does (with 1 GiB there). With two file names it
// copies SRC into DST (which must be at least as large) through
// `nbdkit file`, so the result can be checked:
//
//   ./glib-main-loop
//   ./glib-main-loop disk.img copy.img && cmp disk.img copy.img
//
// NBDCPP_DEBUG=1 also traces the GSource callbacks.

#include <nbdcpp/handle.hpp>

#include <glib.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

namespace {

struct NbdSource;
using ConnectedCallback = void (*)(NbdSource*);

// The GSource subclass: glib allocates it (zeroed) with g_source_new, so it
// holds only trivial members; the handle lives on the heap.
struct NbdSource {
  GSource source; // must come first
  nbd::Handle* nbd;
  bool debug;
  // The fd being polled, and glib's tag for it. The fd can change (the
  // connecting socket, then the ring or socket) and goes away when the
  // connection ends, so prepare() checks it every time.
  int fd;
  gpointer tag;
  // Called once, when the handle first becomes ready.
  ConnectedCallback connected_callback;
  bool called_connected_callback;
};

#define DEBUG(src, ...)                                                                            \
  do {                                                                                             \
    if ((src)->debug) {                                                                            \
      std::fprintf(stderr, "glib: debug: ");                                                       \
      std::fprintf(stderr, __VA_ARGS__);                                                           \
      std::fprintf(stderr, "\n");                                                                  \
    }                                                                                              \
  } while (0)

unsigned short events_from_nbd(const nbd::Handle& nbd) {
  const unsigned dir = nbd.aio_get_direction();
  unsigned short r = 0;
  // For io_uring, WRITE means "submit what was prepared": the ring fd
  // always polls writable, so glib dispatches at once and we submit.
  if (dir & nbd::AIO_DIRECTION_READ) r |= G_IO_IN;
  if (dir & nbd::AIO_DIRECTION_WRITE) r |= G_IO_OUT;
  return r;
}

gboolean prepare(GSource* sp, gint* timeout) {
  auto* source = reinterpret_cast<NbdSource*>(sp);

  int new_fd = -1;
  try {
    new_fd = source->nbd->aio_get_fd();
  } catch (const nbd::Error&) {
    // Not connected (yet, or any more): nothing to poll.
  }
  if (source->fd != new_fd) {
    if (source->tag) {
      g_source_remove_unix_fd(sp, source->tag);
      source->tag = nullptr;
    }
    source->fd = new_fd;
    if (new_fd >= 0) source->tag = g_source_add_unix_fd(sp, new_fd, GIOCondition(0));
  }
  if (!source->tag) return FALSE;

  const unsigned short events = events_from_nbd(*source->nbd);
  g_source_modify_unix_fd(sp, source->tag, GIOCondition(events));
  *timeout = -1;
  DEBUG(source, "prepare: events = 0x%x%s%s", events, events & G_IO_IN ? " G_IO_IN" : "",
        events & G_IO_OUT ? " G_IO_OUT" : "");

  if (source->connected_callback && !source->called_connected_callback &&
      source->nbd->aio_is_ready()) {
    DEBUG(source, "calling connected_callback");
    source->called_connected_callback = true;
    source->connected_callback(source);
  }
  return FALSE;
}

gboolean check(GSource* sp) {
  auto* source = reinterpret_cast<NbdSource*>(sp);
  if (!source->tag) return FALSE;
  const unsigned revents = g_source_query_unix_fd(sp, source->tag);
  const unsigned dir = source->nbd->aio_get_direction();
  DEBUG(source, "check: direction = 0x%x, revents = 0x%x", dir, revents);
  if ((revents & (G_IO_IN | G_IO_HUP | G_IO_ERR)) && (dir & nbd::AIO_DIRECTION_READ)) return TRUE;
  if ((revents & G_IO_OUT) && (dir & nbd::AIO_DIRECTION_WRITE)) return TRUE;
  return FALSE;
}

gboolean dispatch(GSource* sp, GSourceFunc, gpointer) {
  auto* source = reinterpret_cast<NbdSource*>(sp);
  const unsigned revents = g_source_query_unix_fd(sp, source->tag);
  DEBUG(source, "dispatch: revents = 0x%x", revents);
  std::error_code ec;
  if (revents & (G_IO_IN | G_IO_HUP | G_IO_ERR))
    source->nbd->aio_notify_read(ec);
  else if (revents & G_IO_OUT)
    source->nbd->aio_notify_write(ec);
  if (ec) {
    std::fprintf(stderr, "%s\n", source->nbd->get_error_message().c_str());
    return G_SOURCE_REMOVE;
  }
  return G_SOURCE_CONTINUE;
}

void finalize(GSource* sp) {
  auto* source = reinterpret_cast<NbdSource*>(sp);
  DEBUG(source, "finalize");
  delete source->nbd;
  source->nbd = nullptr;
}

GSourceFuncs nbd_source_funcs = {prepare, check, dispatch, finalize, nullptr, nullptr};

// Wraps a new handle in a GSource (the source owns the handle).
NbdSource* create_nbd_gsource() {
  auto* source = reinterpret_cast<NbdSource*>(g_source_new(&nbd_source_funcs, sizeof(NbdSource)));
  source->nbd = new nbd::Handle;
  source->debug = source->nbd->get_debug();
  source->fd = -1;
  return source;
}

//----------------------------------------------------------------------
// The example: copy the source nbdkit to the destination one, with up to
// 16 reads or writes of 64 KiB at a time.

NbdSource* gssrc;
NbdSource* gsdest;
GMainLoop* loop;
std::uint64_t size;

constexpr std::size_t max_buffers = 16;
constexpr std::size_t buffer_size = 65536;

enum class BufferState { unused, reading, read_completed, writing };

struct Buffer {
  std::uint64_t offset = 0;
  std::size_t length = 0;
  BufferState state = BufferState::unused;
  std::vector<std::uint8_t> data;
};

Buffer buffers[max_buffers];
std::size_t nr_buffers;
bool finished, reader_paused;

gboolean read_data(gpointer);
gboolean write_data(gpointer);

// Called when each handle becomes ready; the copy starts once both are.
void connected(NbdSource* source) {
  static int count = 0;
  if (++count == 2) {
    size = static_cast<std::uint64_t>(gssrc->nbd->get_size());
    if (size > static_cast<std::uint64_t>(gsdest->nbd->get_size())) {
      std::fprintf(stderr, "the destination is smaller than the source\n");
      std::exit(EXIT_FAILURE);
    }
    DEBUG(source, "both handles are connected");
    g_idle_add(read_data, nullptr);
  }
}

int finished_read(Buffer* buffer, int* error) {
  if (*error) {
    std::fprintf(stderr, "read failed: %s\n", g_strerror(*error));
    std::exit(EXIT_FAILURE);
  }
  DEBUG(gssrc, "finished_read: read completed");
  assert(buffer->state == BufferState::reading);
  buffer->state = BufferState::read_completed;
  // Writing is another idle callback's job.
  g_idle_add(write_data, buffer);
  return 1; // retire the command
}

int finished_write(Buffer* buffer, int* error) {
  if (*error) {
    std::fprintf(stderr, "write failed: %s\n", g_strerror(*error));
    std::exit(EXIT_FAILURE);
  }
  DEBUG(gsdest, "finished_write: write completed");
  assert(buffer->state == BufferState::writing);
  buffer->data.clear();
  buffer->data.shrink_to_fit();
  buffer->state = BufferState::unused;
  nr_buffers--;

  // A full ring paused the reader: start it again.
  if (nr_buffers == max_buffers - 1 && reader_paused) {
    DEBUG(gsdest, "finished_write: restarting reader");
    g_idle_add(read_data, nullptr);
    reader_paused = false;
  }

  // All read and written: stop the loop (main() cleans up).
  if (finished && nr_buffers == 0) {
    DEBUG(gsdest, "finished_write: all finished");
    g_main_loop_quit(loop);
  }
  return 1;
}

// Idle callback: start reads until every buffer is busy.
gboolean read_data(gpointer) {
  static std::uint64_t posn = 0;

  if (posn >= size) {
    DEBUG(gssrc, "read_data: finished reading from source");
    finished = true;
    if (nr_buffers == 0) g_main_loop_quit(loop); // an empty source
    return FALSE;
  }

  Buffer* buffer = nullptr;
  for (auto& b : buffers)
    if (b.state == BufferState::unused) {
      buffer = &b;
      break;
    }
  if (!buffer) {
    // All buffers busy: unregister; finished_write registers us again.
    assert(nr_buffers == max_buffers);
    DEBUG(gssrc, "read_data: buffer full, pausing reads from source");
    reader_paused = true;
    return FALSE;
  }

  buffer->data.resize(buffer_size);
  buffer->state = BufferState::reading;
  buffer->offset = posn;
  buffer->length = static_cast<std::size_t>(std::min<std::uint64_t>(buffer_size, size - posn));
  nr_buffers++;
  posn += buffer->length;

  try {
    gssrc->nbd->aio_pread(std::span(buffer->data).first(buffer->length), buffer->offset,
                          [buffer](int* error) { return finished_read(buffer, error); });
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  return TRUE;
}

// Idle callback: write one buffer that was read.
gboolean write_data(gpointer user_data) {
  auto* buffer = static_cast<Buffer*>(user_data);
  assert(buffer->state == BufferState::read_completed);
  buffer->state = BufferState::writing;
  try {
    gsdest->nbd->aio_pwrite(std::span(buffer->data).first(buffer->length), buffer->offset,
                            [buffer](int* error) { return finished_write(buffer, error); });
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }
  return FALSE; // one write per idle callback
}

} // namespace

int main(int argc, char* argv[]) {
  std::vector<std::string> src_args, dest_args;
  if (argc == 1) {
    src_args = {"nbdkit", "-s", "--exit-with-parent", "-r", "pattern", "size=64M"};
    dest_args = {"nbdkit", "-s", "--exit-with-parent", "memory", "size=64M"};
  } else if (argc == 3) {
    src_args = {"nbdkit", "-s", "--exit-with-parent", "-r", "file", argv[1]};
    dest_args = {"nbdkit", "-s", "--exit-with-parent", "file", argv[2]};
  } else {
    std::fprintf(stderr, "usage: %s [SRC_FILE DST_FILE]\n", argv[0]);
    std::exit(EXIT_FAILURE);
  }

  loop = g_main_loop_new(nullptr, FALSE);
  GMainContext* ctx = g_main_loop_get_context(loop);

  // A GSource for each handle, attached to the loop's context.
  gssrc = create_nbd_gsource();
  gsdest = create_nbd_gsource();
  gssrc->connected_callback = connected;
  gsdest->connected_callback = connected;
  g_source_attach(&gssrc->source, ctx);
  g_source_attach(&gsdest->source, ctx);

  try {
    // Only start connecting: the main loop does the rest.
    gssrc->nbd->aio_connect_command(src_args);
    gsdest->nbd->aio_connect_command(dest_args);

    g_main_loop_run(loop);

    // Copied: make it durable, then close both connections.
    if (gsdest->nbd->can_flush()) gsdest->nbd->flush();
    gsdest->nbd->shutdown();
    gssrc->nbd->shutdown();
  } catch (const nbd::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(EXIT_FAILURE);
  }

  g_source_destroy(&gssrc->source);
  g_source_unref(&gssrc->source);
  g_source_destroy(&gsdest->source);
  g_source_unref(&gsdest->source);
  g_main_loop_unref(loop);
  std::exit(EXIT_SUCCESS);
}
