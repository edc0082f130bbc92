/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * nbdcpp test plugin for nbdkit (>= 1.32).
 *
 * A memory-backed nbdkit plugin whose every optional callback is steered by
 * a key=value parameter, so that nbdcpp's tests can make the server advertise
 * and do exactly what a test needs.  tests/plugins/README.md documents every
 * parameter; this comment is the short reference.
 *
 * Builds (one source, see meson.build):
 *   nbdkit-test-plugin.so           API version 2, errno_is_preserved = 1
 *   nbdkit-test-plugin-no-errno.so  API version 2, errno_is_preserved = 0
 *   nbdkit-test-plugin-v1.so        API version 1 (v1 pread/pwrite/flush/
 *                                   trim/zero signatures), errno_is_preserved=1
 * Compile-time macros: TEST_PLUGIN_API_VERSION (1|2, default 2),
 * TEST_PLUGIN_ERRNO_IS_PRESERVED (0|1, default 1).
 *
 * Storage: a sparse store of 64 KiB pages allocated on first write (hash
 * table keyed by page number), so size=4G or more costs only what is written.
 * Unwritten areas read as zeroes.  trim, and zero with may_trim, free whole
 * pages (they become holes) and zero partial ones.  One store is shared by
 * every connection and every export name.
 *
 * Absent callbacks: KEY=absent (for every optional callback KEY listed in
 * README.md, e.g. can_zero=absent, zero=absent, flush=absent) leaves that
 * callback NULL in the struct nbdkit_plugin handed to nbdkit, so nbdkit's
 * server/plugins.c applies its real defaults.  nbdkit copies the struct when
 * it loads the plugin, before any parameter is parsed, so plugin_init()
 * finds those arguments in /proc/self/cmdline (an argument equal to
 * "KEY=absent"); .config then checks the callback really was left out.
 *
 * Log format (log=PATH): one line per callback, appended with a single
 * write(2) to a file opened with O_APPEND, so a test may read it while the
 * server runs.  A line is the callback name then space-separated key=value
 * fields, always in this order (fields that do not apply are left out):
 *
 *   NAME [readonly=0|1] [is_tls=0|1] [export=STR] [offset=N] [count=N]
 *        [flags=F] [minimum=N preferred=N maximum=N] result=R [conn=N]
 *
 *   F      "none" or a comma-separated subset of fua,may_trim,fast_zero,
 *          req_one (in that order)
 *   R      data callbacks (pread pwrite flush trim zero extents cache):
 *          "ok" or the errno name of the failure (e.g. EIO, ENOTSUP; "0" when
 *          an injected error carries no errno);
 *          can_* / is_rotational: 0 or 1, or for can_fua none|emulate|native,
 *          for can_cache none|emulate|native; get_size: the size;
 *          export_description / default_export: the string, or "(null)";
 *          open / list_exports / block_size / preconnect: ok;
 *          any callback failing by injection: "error" (non-data callbacks)
 *   conn   1-based number of the connection (order of .open); absent for
 *          preconnect, list_exports and default_export, which have no handle
 *   STR    percent-encoded: bytes outside printable ASCII and ' ', '%', '='
 *          are written as %XX
 * Names are the v2 names in every build: a v1 build logs "pread", not
 * "_pread_v1", and its zero logs flags=may_trim when may_trim was passed.
 * Examples:
 *   open readonly=0 export=foo result=ok conn=1
 *   can_fua result=native conn=1
 *   pwrite offset=0 count=512 flags=fua result=ok conn=1
 *   zero offset=0 count=65536 flags=may_trim,fast_zero result=ENOTSUP conn=1
 *   flush flags=none result=ok conn=1
 */

#define _GNU_SOURCE 1

#ifndef TEST_PLUGIN_API_VERSION
#define TEST_PLUGIN_API_VERSION 2
#endif
#ifndef TEST_PLUGIN_ERRNO_IS_PRESERVED
#define TEST_PLUGIN_ERRNO_IS_PRESERVED 1
#endif

#define NBDKIT_API_VERSION TEST_PLUGIN_API_VERSION
#include <nbdkit-plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* ------------------------------------------------------------------ */
/* Callback identities                                                 */

enum cb {
  CB_PRECONNECT,
  CB_LIST_EXPORTS,
  CB_DEFAULT_EXPORT,
  CB_OPEN,
  CB_GET_SIZE,
  CB_EXPORT_DESCRIPTION,
  CB_BLOCK_SIZE,
  CB_CAN_WRITE,
  CB_CAN_FLUSH,
  CB_IS_ROTATIONAL,
  CB_CAN_TRIM,
  CB_CAN_ZERO,
  CB_CAN_FAST_ZERO,
  CB_CAN_EXTENTS,
  CB_CAN_FUA,
  CB_CAN_MULTI_CONN,
  CB_CAN_CACHE,
  CB_PREAD,
  CB_PWRITE,
  CB_FLUSH,
  CB_TRIM,
  CB_ZERO,
  CB_EXTENTS,
  CB_CACHE,
  CB_COUNT
};

static const char *const cb_names[CB_COUNT] = {
  [CB_PRECONNECT] = "preconnect",
  [CB_LIST_EXPORTS] = "list_exports",
  [CB_DEFAULT_EXPORT] = "default_export",
  [CB_OPEN] = "open",
  [CB_GET_SIZE] = "get_size",
  [CB_EXPORT_DESCRIPTION] = "export_description",
  [CB_BLOCK_SIZE] = "block_size",
  [CB_CAN_WRITE] = "can_write",
  [CB_CAN_FLUSH] = "can_flush",
  [CB_IS_ROTATIONAL] = "is_rotational",
  [CB_CAN_TRIM] = "can_trim",
  [CB_CAN_ZERO] = "can_zero",
  [CB_CAN_FAST_ZERO] = "can_fast_zero",
  [CB_CAN_EXTENTS] = "can_extents",
  [CB_CAN_FUA] = "can_fua",
  [CB_CAN_MULTI_CONN] = "can_multi_conn",
  [CB_CAN_CACHE] = "can_cache",
  [CB_PREAD] = "pread",
  [CB_PWRITE] = "pwrite",
  [CB_FLUSH] = "flush",
  [CB_TRIM] = "trim",
  [CB_ZERO] = "zero",
  [CB_EXTENTS] = "extents",
  [CB_CACHE] = "cache",
};

/* Callbacks that KEY=absent can leave out (all but open, get_size, pread). */
static bool
cb_omittable (enum cb cb)
{
  return cb != CB_OPEN && cb != CB_GET_SIZE && cb != CB_PREAD;
}

/* Callbacks taking an offset and count, to which an error range applies. */
static bool
cb_ranged (enum cb cb)
{
  switch (cb) {
  case CB_PREAD: case CB_PWRITE: case CB_TRIM: case CB_ZERO:
  case CB_EXTENTS: case CB_CACHE:
    return true;
  default:
    return false;
  }
}

static int
cb_lookup (const char *name, size_t len)
{
  for (int i = 0; i < CB_COUNT; i++)
    if (strlen (cb_names[i]) == len && strncmp (cb_names[i], name, len) == 0)
      return i;
  return -1;
}

/* ------------------------------------------------------------------ */
/* errno names                                                         */

static const struct { const char *name; int value; } errno_table[] = {
  { "EPERM", EPERM }, { "ENOENT", ENOENT }, { "EINTR", EINTR },
  { "EIO", EIO }, { "E2BIG", E2BIG }, { "EAGAIN", EAGAIN },
  { "ENOMEM", ENOMEM }, { "EACCES", EACCES }, { "EBUSY", EBUSY },
  { "EEXIST", EEXIST }, { "EINVAL", EINVAL }, { "EFBIG", EFBIG },
  { "ENOSPC", ENOSPC }, { "EROFS", EROFS }, { "EPIPE", EPIPE },
  { "ERANGE", ERANGE }, { "ENOSYS", ENOSYS }, { "EBADMSG", EBADMSG },
  { "EOVERFLOW", EOVERFLOW }, { "ENOTSUP", ENOTSUP },
  { "EOPNOTSUPP", EOPNOTSUPP }, { "ECONNRESET", ECONNRESET },
  { "ENOTCONN", ENOTCONN }, { "ESHUTDOWN", ESHUTDOWN },
  { "ETIMEDOUT", ETIMEDOUT }, { "EDQUOT", EDQUOT },
};

static int
parse_errno (const char *s, size_t len, int *err)
{
  for (size_t i = 0; i < sizeof errno_table / sizeof errno_table[0]; i++)
    if (strlen (errno_table[i].name) == len &&
        strncmp (errno_table[i].name, s, len) == 0) {
      *err = errno_table[i].value;
      return 0;
    }
  /* A plain decimal number (0 = fail without reporting any errno). */
  if (len == 0 || len > 5)
    return -1;
  int v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *err = v;
  return 0;
}

/* Writes the errno name (or number) into buf. */
static void
errno_name (int err, char *buf, size_t len)
{
  for (size_t i = 0; i < sizeof errno_table / sizeof errno_table[0]; i++)
    if (errno_table[i].value == err) {
      snprintf (buf, len, "%s", errno_table[i].name);
      return;
    }
  snprintf (buf, len, "%d", err);
}

/* ------------------------------------------------------------------ */
/* Configuration                                                       */

enum error_mode { MODE_SET_ERROR, MODE_ERRNO };
enum extents_mode { EXTENTS_STORE, EXTENTS_MAP, EXTENTS_EMPTY };

struct error_rule {
  enum cb cb;
  int err;
  uint64_t start, end;          /* [start, end) */
  int64_t remaining;            /* -1 = unlimited */
};

struct extent_run {
  uint64_t length;
  uint32_t type;
};

struct export_entry {
  char *name;
  char *description;            /* may be NULL */
};

static int64_t size = 1024 * 1024;
static int can_write_v = 1, can_flush_v = 1, is_rotational_v = 0;
static int can_trim_v = 1, can_zero_v = 1, can_fast_zero_v = 1;
static int can_extents_v = 1, can_multi_conn_v = 1;
static int can_fua_v = NBDKIT_FUA_NATIVE, can_cache_v = NBDKIT_CACHE_NATIVE;
static bool fast_zero_fails = false;
static int thread_model_v = NBDKIT_THREAD_MODEL_PARALLEL;
static uint32_t bs_min, bs_pref, bs_max;        /* 0:0:0 = no information */
static char *export_description_v;              /* NULL = from export list */
static char *default_export_v;                  /* NULL = "" */
static struct export_entry *exports;
static size_t nr_exports;
static bool exports_configured;                 /* export= or exports= given */
static bool exports_strict;
static enum error_mode error_mode = MODE_SET_ERROR;
static struct error_rule *rules;
static size_t nr_rules;
static unsigned delay_ms[CB_COUNT];
static enum extents_mode extents_mode = EXTENTS_STORE;
static struct extent_run *extent_runs;
static size_t nr_extent_runs;
static int log_fd = -1;

static bool omitted[CB_COUNT];                  /* set by plugin_init */

/* Protects the store, the error rules' counters and the connection counter. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t connections;

/* ------------------------------------------------------------------ */
/* Sparse store: 64 KiB pages in an open-addressing hash table.  Slots are
 * never removed; a freed page keeps its slot with data == NULL.           */

#define PAGE_SHIFT 16
#define PAGE_BYTES ((uint64_t) 1 << PAGE_SHIFT)

struct slot {
  uint64_t page;
  unsigned char *data;
  bool used;
};

static struct slot *slots;
static size_t nr_slots;          /* 0 or a power of 2 */
static size_t used_slots;

static size_t
slot_hash (uint64_t page)
{
  page *= UINT64_C (0x9E3779B97F4A7C15);
  return (size_t) (page ^ (page >> 29));
}

static struct slot *
slot_find (uint64_t page)
{
  if (nr_slots == 0)
    return NULL;
  for (size_t i = slot_hash (page) & (nr_slots - 1);;
       i = (i + 1) & (nr_slots - 1)) {
    if (!slots[i].used)
      return NULL;
    if (slots[i].page == page)
      return &slots[i];
  }
}

static int
slot_grow (void)
{
  size_t n = nr_slots ? nr_slots * 2 : 1024;
  struct slot *s = calloc (n, sizeof *s);
  if (s == NULL)
    return -1;
  for (size_t i = 0; i < nr_slots; i++) {
    if (!slots[i].used)
      continue;
    size_t j = slot_hash (slots[i].page) & (n - 1);
    while (s[j].used)
      j = (j + 1) & (n - 1);
    s[j] = slots[i];
  }
  free (slots);
  slots = s;
  nr_slots = n;
  return 0;
}

/* Returns the page's data, allocating it (zeroed) if needed; NULL = ENOMEM. */
static unsigned char *
page_get_alloc (uint64_t page)
{
  struct slot *s = slot_find (page);
  if (s == NULL) {
    if ((used_slots + 1) * 4 > nr_slots * 3 && slot_grow () == -1)
      return NULL;
    size_t i = slot_hash (page) & (nr_slots - 1);
    while (slots[i].used)
      i = (i + 1) & (nr_slots - 1);
    s = &slots[i];
    s->used = true;
    s->page = page;
    s->data = NULL;
    used_slots++;
  }
  if (s->data == NULL)
    s->data = calloc (1, PAGE_BYTES);
  return s->data;
}

static unsigned char *
page_get (uint64_t page)
{
  struct slot *s = slot_find (page);
  return s ? s->data : NULL;
}

/* Iterates [offset, offset+count) page by page. */
#define FOR_EACH_CHUNK(offset, count, page, poff, n)                     \
  for (uint64_t _o = (offset), _end = (offset) + (count), page, poff, n; \
       _o < _end &&                                                    \
         (page = _o >> PAGE_SHIFT, poff = _o & (PAGE_BYTES - 1),         \
          n = PAGE_BYTES - poff, n = n > _end - _o ? _end - _o : n, 1);  \
       _o += n)

static void
store_read (void *buf, uint32_t count, uint64_t offset)
{
  unsigned char *b = buf;
  pthread_mutex_lock (&lock);
  FOR_EACH_CHUNK (offset, count, page, poff, n) {
    const unsigned char *d = page_get (page);
    if (d)
      memcpy (b, d + poff, n);
    else
      memset (b, 0, n);
    b += n;
  }
  pthread_mutex_unlock (&lock);
}

static int
store_write (const void *buf, uint32_t count, uint64_t offset)
{
  const unsigned char *b = buf;
  int r = 0;
  pthread_mutex_lock (&lock);
  FOR_EACH_CHUNK (offset, count, page, poff, n) {
    unsigned char *d = page_get_alloc (page);
    if (d == NULL) {
      r = -1;
      break;
    }
    memcpy (d + poff, b, n);
    b += n;
  }
  pthread_mutex_unlock (&lock);
  return r;
}

/* Zeroes a range; whole pages are freed when may_free. */
static void
store_zero (uint32_t count, uint64_t offset, bool may_free)
{
  pthread_mutex_lock (&lock);
  FOR_EACH_CHUNK (offset, count, page, poff, n) {
    struct slot *s = slot_find (page);
    if (s == NULL || s->data == NULL)
      continue;
    if (may_free && n == PAGE_BYTES) {
      free (s->data);
      s->data = NULL;
    }
    else
      memset (s->data + poff, 0, n);
  }
  pthread_mutex_unlock (&lock);
}

static void
store_free (void)
{
  for (size_t i = 0; i < nr_slots; i++)
    free (slots[i].data);
  free (slots);
  slots = NULL;
  nr_slots = used_slots = 0;
}

/* ------------------------------------------------------------------ */
/* Log                                                                 */

struct handle {
  uint64_t conn;
  int readonly;
  char *exportname;
};

struct line {
  char buf[8192];
  size_t len;
};

static void line_add (struct line *l, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

static void
line_add (struct line *l, const char *fmt, ...)
{
  va_list ap;
  /* Keeps one byte for the final newline (and one for vsnprintf's NUL). */
  if (l->len >= sizeof l->buf - 2)
    return;
  va_start (ap, fmt);
  int r = vsnprintf (l->buf + l->len, sizeof l->buf - 1 - l->len, fmt, ap);
  va_end (ap);
  if (r > 0)
    l->len += (size_t) r;
  if (l->len > sizeof l->buf - 2)
    l->len = sizeof l->buf - 2;
}

static void
line_add_str (struct line *l, const char *key, const char *s)
{
  line_add (l, " %s=", key);
  if (s == NULL) {
    line_add (l, "(null)");
    return;
  }
  for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
    if (*p <= ' ' || *p >= 0x7f || *p == '%' || *p == '=')
      line_add (l, "%%%02X", *p);
    else
      line_add (l, "%c", *p);
  }
}

static void
line_add_flags (struct line *l, uint32_t flags)
{
  static const struct { uint32_t bit; const char *name; } names[] = {
    { NBDKIT_FLAG_FUA, "fua" },
    { NBDKIT_FLAG_MAY_TRIM, "may_trim" },
    { NBDKIT_FLAG_FAST_ZERO, "fast_zero" },
    { NBDKIT_FLAG_REQ_ONE, "req_one" },
  };
  const char *sep = "";
  line_add (l, " flags=");
  if (flags == 0) {
    line_add (l, "none");
    return;
  }
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (flags & names[i].bit) {
      line_add (l, "%s%s", sep, names[i].name);
      sep = ",";
      flags &= ~names[i].bit;
    }
  if (flags)
    line_add (l, "%s0x%" PRIx32, sep, flags);
}

static void
line_emit (struct line *l, const struct handle *h)
{
  int saved_errno = errno;
  if (log_fd >= 0) {
    if (h)
      line_add (l, " conn=%" PRIu64, h->conn);
    l->buf[l->len++] = '\n';
    ssize_t r = write (log_fd, l->buf, l->len);
    (void) r;
  }
  errno = saved_errno;
}

static void
log_result_int (enum cb cb, const struct handle *h, int r)
{
  struct line l = { .len = 0 };
  if (log_fd < 0)
    return;
  line_add (&l, "%s", cb_names[cb]);
  if (r == -1)
    line_add (&l, " result=error");
  else if (cb == CB_CAN_FUA || cb == CB_CAN_CACHE)
    line_add (&l, " result=%s",
              r == 0 ? "none" : r == 1 ? "emulate" : r == 2 ? "native" : "?");
  else
    line_add (&l, " result=%d", r);
  line_emit (&l, h);
}

static void
log_data (enum cb cb, const struct handle *h, bool ranged,
          uint64_t offset, uint32_t count, uint32_t flags, int r, int err)
{
  struct line l = { .len = 0 };
  char e[32];
  if (log_fd < 0)
    return;
  line_add (&l, "%s", cb_names[cb]);
  if (ranged)
    line_add (&l, " offset=%" PRIu64 " count=%" PRIu32, offset, count);
  line_add_flags (&l, flags);
  if (r == -1)
    errno_name (err, e, sizeof e);
  line_add (&l, " result=%s", r == -1 ? e : "ok");
  line_emit (&l, h);
}

/* ------------------------------------------------------------------ */
/* Failure injection and delays                                        */

/* Returns true (and the errno in *err) if an error= rule fires. */
static bool
injected (enum cb cb, uint64_t offset, uint32_t count, int *err)
{
  bool fire = false;
  if (nr_rules == 0)
    return false;
  pthread_mutex_lock (&lock);
  for (size_t i = 0; i < nr_rules; i++) {
    struct error_rule *r = &rules[i];
    if (r->cb != cb || r->remaining == 0)
      continue;
    if (cb_ranged (cb) &&
        !(offset < r->end && offset + (count ? count : 1) > r->start))
      continue;
    if (r->remaining > 0)
      r->remaining--;
    *err = r->err;
    fire = true;
    break;
  }
  pthread_mutex_unlock (&lock);
  if (fire) {
    char e[32];
    errno_name (*err, e, sizeof e);
    nbdkit_error ("%s: injected error %s", cb_names[cb], e);
  }
  return fire;
}

static void
delay (enum cb cb)
{
  if (delay_ms[cb])
    nbdkit_nanosleep (delay_ms[cb] / 1000, (delay_ms[cb] % 1000) * 1000000);
}

/* Reports err for a failing data callback, the way error_mode says, and
 * returns r.  Must be the last thing before returning (errno mode).
 */
static int
finish (int r, int err)
{
  if (r == -1) {
    if (error_mode == MODE_SET_ERROR && err)
      nbdkit_set_error (err);
    /* errno mode; and for err == 0 in either mode, errno = 0 so that nbdkit
     * falls back to its default (EIO) even when errno_is_preserved.
     */
    errno = error_mode == MODE_ERRNO ? err : (err ? errno : 0);
  }
  return r;
}

/* ------------------------------------------------------------------ */
/* Parameter parsing                                                   */

static int
parse_tristate_fua (const char *key, const char *value, int *out)
{
  if (strcmp (value, "none") == 0) *out = NBDKIT_FUA_NONE;
  else if (strcmp (value, "emulate") == 0) *out = NBDKIT_FUA_EMULATE;
  else if (strcmp (value, "native") == 0) *out = NBDKIT_FUA_NATIVE;
  else {
    nbdkit_error ("%s: expected none|emulate|native|absent, got '%s'",
                  key, value);
    return -1;
  }
  return 0;
}

static int
parse_bool_into (const char *key, const char *value, int *out)
{
  int r = nbdkit_parse_bool (value);
  if (r == -1) {
    nbdkit_error ("%s: expected true|false|absent", key);
    return -1;
  }
  *out = r;
  return 0;
}

/* size parsing: accepts nbdkit sizes (512, 4K, 1M, ...). */
static int
parse_size_u64 (const char *what, const char *s, uint64_t *out)
{
  int64_t v = nbdkit_parse_size (s);
  if (v == -1) {
    nbdkit_error ("%s: could not parse '%s'", what, s);
    return -1;
  }
  *out = (uint64_t) v;
  return 0;
}

static char *
xstrndup (const char *s, size_t n)
{
  char *r = strndup (s, n);
  if (r == NULL)
    nbdkit_error ("strndup: %m");
  return r;
}

/* error=CALLBACK:ERRNO[:RANGE[:COUNT]], RANGE = '*' | START-END */
static int
parse_error_rule (const char *value)
{
  struct error_rule rule = { .start = 0, .end = UINT64_MAX, .remaining = -1 };
  const char *p = value, *c;
  char *tmp = NULL;
  int r = -1;

  c = strchr (p, ':');
  if (c == NULL) {
    nbdkit_error ("error=%s: expected CALLBACK:ERRNO[:RANGE[:COUNT]]", value);
    return -1;
  }
  int cb = cb_lookup (p, (size_t) (c - p));
  if (cb == -1) {
    nbdkit_error ("error=%s: unknown callback '%.*s'", value,
                  (int) (c - p), p);
    return -1;
  }
  rule.cb = (enum cb) cb;
  p = c + 1;
  c = strchr (p, ':');
  if (parse_errno (p, c ? (size_t) (c - p) : strlen (p), &rule.err) == -1) {
    nbdkit_error ("error=%s: unknown errno '%.*s'", value,
                  (int) (c ? (size_t) (c - p) : strlen (p)), p);
    return -1;
  }
  if (c) {
    p = c + 1;
    c = strchr (p, ':');
    tmp = xstrndup (p, c ? (size_t) (c - p) : strlen (p));
    if (tmp == NULL)
      return -1;
    if (strcmp (tmp, "*") != 0) {
      char *dash = strchr (tmp, '-');
      if (!cb_ranged (rule.cb)) {
        nbdkit_error ("error=%s: %s takes no offset range", value,
                      cb_names[rule.cb]);
        goto out;
      }
      if (dash == NULL) {
        nbdkit_error ("error=%s: range must be '*' or START-END", value);
        goto out;
      }
      *dash = '\0';
      if (parse_size_u64 ("error range start", tmp, &rule.start) == -1 ||
          parse_size_u64 ("error range end", dash + 1, &rule.end) == -1)
        goto out;
      if (rule.end <= rule.start) {
        nbdkit_error ("error=%s: empty range", value);
        goto out;
      }
    }
    if (c) {
      int64_t n;
      if (nbdkit_parse_int64_t ("error count", c + 1, &n) == -1)
        goto out;
      if (n < 1) {
        nbdkit_error ("error=%s: COUNT must be >= 1", value);
        goto out;
      }
      rule.remaining = n;
    }
  }

  struct error_rule *nr = realloc (rules, (nr_rules + 1) * sizeof *rules);
  if (nr == NULL) {
    nbdkit_error ("realloc: %m");
    goto out;
  }
  rules = nr;
  rules[nr_rules++] = rule;
  r = 0;
 out:
  free (tmp);
  return r;
}

/* extents_map=TYPE:LENGTH[,TYPE:LENGTH...] */
static int
parse_extents_map (const char *value)
{
  char *copy = strdup (value), *save = NULL;
  int r = -1;
  if (copy == NULL) {
    nbdkit_error ("strdup: %m");
    return -1;
  }
  free (extent_runs);
  extent_runs = NULL;
  nr_extent_runs = 0;
  for (char *tok = strtok_r (copy, ",", &save); tok;
       tok = strtok_r (NULL, ",", &save)) {
    struct extent_run run;
    char *colon = strchr (tok, ':');
    if (colon == NULL) {
      nbdkit_error ("extents_map: '%s' is not TYPE:LENGTH", tok);
      goto out;
    }
    *colon = '\0';
    if (strcmp (tok, "data") == 0) run.type = 0;
    else if (strcmp (tok, "zero") == 0) run.type = NBDKIT_EXTENT_ZERO;
    else if (strcmp (tok, "hole") == 0)
      run.type = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    else if (strcmp (tok, "hole-nonzero") == 0)
      run.type = NBDKIT_EXTENT_HOLE;
    else {
      nbdkit_error ("extents_map: unknown type '%s' "
                    "(data|zero|hole|hole-nonzero)", tok);
      goto out;
    }
    if (parse_size_u64 ("extents_map length", colon + 1, &run.length) == -1)
      goto out;
    if (run.length == 0) {
      nbdkit_error ("extents_map: zero length run");
      goto out;
    }
    struct extent_run *n = realloc (extent_runs,
                                    (nr_extent_runs + 1) * sizeof *n);
    if (n == NULL) {
      nbdkit_error ("realloc: %m");
      goto out;
    }
    extent_runs = n;
    extent_runs[nr_extent_runs++] = run;
  }
  if (nr_extent_runs == 0) {
    nbdkit_error ("extents_map: empty");
    goto out;
  }
  r = 0;
 out:
  free (copy);
  return r;
}

static int
add_export (const char *name, size_t name_len, const char *desc)
{
  struct export_entry *n = realloc (exports, (nr_exports + 1) * sizeof *n);
  if (n == NULL) {
    nbdkit_error ("realloc: %m");
    return -1;
  }
  exports = n;
  exports[nr_exports].name = xstrndup (name, name_len);
  exports[nr_exports].description = desc ? strdup (desc) : NULL;
  if (exports[nr_exports].name == NULL || (desc && !exports[nr_exports].description))
    return -1;
  nr_exports++;
  exports_configured = true;
  return 0;
}

static int
tp_config (const char *key, const char *value)
{
  int cb = cb_lookup (key, strlen (key));

  /* KEY=absent: the callback must have been left out by plugin_init. */
  if (cb >= 0 && strcmp (value, "absent") == 0) {
    if (!cb_omittable ((enum cb) cb)) {
      nbdkit_error ("%s cannot be absent", key);
      return -1;
    }
    if (!omitted[cb]) {
      nbdkit_error ("%s=absent: the callback could not be left out "
                    "(is /proc/self/cmdline readable?)", key);
      return -1;
    }
    return 0;
  }

  if (strcmp (key, "size") == 0) {
    size = nbdkit_parse_size (value);
    return size == -1 ? -1 : 0;
  }
  else if (strcmp (key, "can_write") == 0)
    return parse_bool_into (key, value, &can_write_v);
  else if (strcmp (key, "can_flush") == 0)
    return parse_bool_into (key, value, &can_flush_v);
  else if (strcmp (key, "is_rotational") == 0)
    return parse_bool_into (key, value, &is_rotational_v);
  else if (strcmp (key, "can_trim") == 0)
    return parse_bool_into (key, value, &can_trim_v);
  else if (strcmp (key, "can_zero") == 0)
    return parse_bool_into (key, value, &can_zero_v);
  else if (strcmp (key, "can_fast_zero") == 0)
    return parse_bool_into (key, value, &can_fast_zero_v);
  else if (strcmp (key, "can_extents") == 0)
    return parse_bool_into (key, value, &can_extents_v);
  else if (strcmp (key, "can_multi_conn") == 0)
    return parse_bool_into (key, value, &can_multi_conn_v);
  else if (strcmp (key, "can_fua") == 0)
    return parse_tristate_fua (key, value, &can_fua_v);
  else if (strcmp (key, "can_cache") == 0)
    return parse_tristate_fua (key, value, &can_cache_v);
  else if (strcmp (key, "fast_zero_fails") == 0) {
    int b;
    if (parse_bool_into (key, value, &b) == -1)
      return -1;
    fast_zero_fails = b;
    return 0;
  }
  else if (strcmp (key, "pwrite") == 0 || strcmp (key, "flush") == 0 ||
           strcmp (key, "trim") == 0 || strcmp (key, "zero") == 0 ||
           strcmp (key, "cache") == 0 || strcmp (key, "preconnect") == 0 ||
           strcmp (key, "list_exports") == 0) {
    if (strcmp (value, "present") != 0) {
      nbdkit_error ("%s: expected present|absent", key);
      return -1;
    }
    return 0;
  }
  else if (strcmp (key, "extents") == 0) {
    if (strcmp (value, "store") == 0 || strcmp (value, "present") == 0)
      extents_mode = EXTENTS_STORE;
    else if (strcmp (value, "map") == 0)
      extents_mode = EXTENTS_MAP;
    else if (strcmp (value, "empty") == 0)
      extents_mode = EXTENTS_EMPTY;
    else {
      nbdkit_error ("extents: expected store|map|empty|absent");
      return -1;
    }
    return 0;
  }
  else if (strcmp (key, "extents_map") == 0) {
    if (parse_extents_map (value) == -1)
      return -1;
    extents_mode = EXTENTS_MAP;
    return 0;
  }
  else if (strcmp (key, "block_size") == 0) {
    uint32_t v[3];
    const char *p = value;
    for (int i = 0; i < 3; i++) {
      const char *c = strchr (p, ':');
      if ((i < 2) != (c != NULL)) {
        nbdkit_error ("block_size: expected MIN:PREFERRED:MAX or absent");
        return -1;
      }
      char *t = xstrndup (p, c ? (size_t) (c - p) : strlen (p));
      if (t == NULL)
        return -1;
      int64_t s = nbdkit_parse_size (t);
      free (t);
      if (s == -1)
        return -1;
      if (s > UINT32_MAX) {
        nbdkit_error ("block_size: value too large");
        return -1;
      }
      v[i] = (uint32_t) s;
      p = c ? c + 1 : p;
    }
    bs_min = v[0]; bs_pref = v[1]; bs_max = v[2];
    return 0;
  }
  else if (strcmp (key, "export_description") == 0) {
    free (export_description_v);
    export_description_v = strdup (value);
    return export_description_v ? 0 : -1;
  }
  else if (strcmp (key, "default_export") == 0) {
    free (default_export_v);
    default_export_v = strdup (value);
    return default_export_v ? 0 : -1;
  }
  else if (strcmp (key, "export") == 0) {
    const char *colon = strchr (value, ':');
    return add_export (value, colon ? (size_t) (colon - value) : strlen (value),
                       colon ? colon + 1 : NULL);
  }
  else if (strcmp (key, "exports") == 0) {
    unsigned n;
    char name[64], desc[96];
    if (nbdkit_parse_unsigned ("exports", value, &n) == -1)
      return -1;
    exports_configured = true;
    for (unsigned i = 0; i < n; i++) {
      snprintf (name, sizeof name, "export%u", i);
      snprintf (desc, sizeof desc, "test export %u", i);
      if (add_export (name, strlen (name), desc) == -1)
        return -1;
    }
    return 0;
  }
  else if (strcmp (key, "exports_strict") == 0) {
    int b;
    if (parse_bool_into (key, value, &b) == -1)
      return -1;
    exports_strict = b;
    return 0;
  }
  else if (strcmp (key, "error") == 0)
    return parse_error_rule (value);
  else if (strcmp (key, "error_mode") == 0) {
    if (strcmp (value, "set_error") == 0) error_mode = MODE_SET_ERROR;
    else if (strcmp (value, "errno") == 0) error_mode = MODE_ERRNO;
    else {
      nbdkit_error ("error_mode: expected set_error|errno");
      return -1;
    }
    return 0;
  }
  else if (strcmp (key, "delay") == 0) {
    const char *colon = strchr (value, ':');
    unsigned ms;
    int d;
    if (colon == NULL ||
        (d = cb_lookup (value, (size_t) (colon - value))) == -1) {
      nbdkit_error ("delay: expected CALLBACK:MILLISECONDS");
      return -1;
    }
    if (nbdkit_parse_unsigned ("delay", colon + 1, &ms) == -1)
      return -1;
    delay_ms[d] = ms;
    return 0;
  }
  else if (strcmp (key, "thread_model") == 0) {
    if (strcmp (value, "serialize_connections") == 0)
      thread_model_v = NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS;
    else if (strcmp (value, "serialize_all_requests") == 0)
      thread_model_v = NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS;
    else if (strcmp (value, "serialize_requests") == 0)
      thread_model_v = NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS;
    else if (strcmp (value, "parallel") == 0)
      thread_model_v = NBDKIT_THREAD_MODEL_PARALLEL;
    else {
      nbdkit_error ("thread_model: unknown model '%s'", value);
      return -1;
    }
    return 0;
  }
  else if (strcmp (key, "log") == 0) {
    if (log_fd >= 0)
      close (log_fd);
    log_fd = open (value, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd == -1) {
      nbdkit_error ("log: %s: %m", value);
      return -1;
    }
    return 0;
  }

  nbdkit_error ("unknown parameter '%s' (see --help)", key);
  return -1;
}

static int
tp_config_complete (void)
{
  if (size < 0) {
    nbdkit_error ("size must be >= 0");
    return -1;
  }
  if (extents_mode == EXTENTS_MAP && nr_extent_runs == 0) {
    nbdkit_error ("extents=map needs extents_map=...");
    return -1;
  }
  return 0;
}

#define TP_CONFIG_HELP \
  "size=SIZE                 Export size (default 1M); the magic key.\n" \
  "can_write|can_flush|can_trim|can_zero|can_fast_zero|can_extents|\n" \
  "can_multi_conn|is_rotational=true|false|absent\n" \
  "can_fua|can_cache=none|emulate|native|absent\n" \
  "pwrite|flush|trim|zero|cache|preconnect|list_exports=present|absent\n" \
  "extents=store|map|empty|absent  extents_map=TYPE:LEN[,TYPE:LEN...]\n" \
  "fast_zero_fails=true|false  .zero fails fast-zero requests with ENOTSUP\n" \
  "block_size=MIN:PREF:MAX|absent  (0:0:0 = no information)\n" \
  "export_description=TEXT|absent  default_export=NAME|absent\n" \
  "export=NAME[:DESCRIPTION] (repeatable)  exports=N  exports_strict=BOOL\n" \
  "error=CALLBACK:ERRNO[:START-END|*[:COUNT]] (repeatable)\n" \
  "error_mode=set_error|errno  delay=CALLBACK:MS  thread_model=MODEL\n" \
  "log=PATH                  Append one line per callback to PATH.\n" \
  "See tests/plugins/README.md in nbdcpp."

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

static void
tp_load (void)
{
}

static void
tp_unload (void)
{
  if (log_fd >= 0)
    close (log_fd);
  log_fd = -1;
}

static void
tp_dump_plugin (void)
{
  printf ("nbdcpp_test_plugin_api_version=%d\n", NBDKIT_API_VERSION);
  printf ("nbdcpp_test_plugin_errno_is_preserved=%d\n",
          TEST_PLUGIN_ERRNO_IS_PRESERVED);
}

static int
tp_get_ready (void)
{
  return 0;
}

static int
tp_after_fork (void)
{
  return 0;
}

static void
tp_cleanup (void)
{
  store_free ();
  for (size_t i = 0; i < nr_exports; i++) {
    free (exports[i].name);
    free (exports[i].description);
  }
  free (exports);
  exports = NULL;
  nr_exports = 0;
  free (rules);
  rules = NULL;
  free (extent_runs);
  extent_runs = NULL;
  free (export_description_v);
  free (default_export_v);
  export_description_v = default_export_v = NULL;
}

static int
tp_thread_model (void)
{
  return thread_model_v;
}

static int
tp_preconnect (int readonly)
{
  int err = 0, r = 0;
  struct line l = { .len = 0 };
  delay (CB_PRECONNECT);
  if (injected (CB_PRECONNECT, 0, 0, &err))
    r = -1;
  if (log_fd >= 0) {
    line_add (&l, "preconnect readonly=%d result=%s", readonly,
              r == -1 ? "error" : "ok");
    line_emit (&l, NULL);
  }
  return r;
}

static int
tp_list_exports (int readonly, int is_tls, struct nbdkit_exports *ex)
{
  int err = 0, r = 0;
  struct line l = { .len = 0 };
  delay (CB_LIST_EXPORTS);
  if (injected (CB_LIST_EXPORTS, 0, 0, &err))
    r = -1;
  else if (!exports_configured)
    r = nbdkit_use_default_export (ex);
  else
    for (size_t i = 0; i < nr_exports && r == 0; i++)
      r = nbdkit_add_export (ex, exports[i].name, exports[i].description);
  if (log_fd >= 0) {
    line_add (&l, "list_exports readonly=%d is_tls=%d result=%s",
              readonly, is_tls, r == -1 ? "error" : "ok");
    line_emit (&l, NULL);
  }
  return r;
}

static const char *
tp_default_export (int readonly, int is_tls)
{
  int err = 0;
  const char *r = default_export_v ? default_export_v : "";
  struct line l = { .len = 0 };
  delay (CB_DEFAULT_EXPORT);
  if (injected (CB_DEFAULT_EXPORT, 0, 0, &err))
    r = NULL;
  if (log_fd >= 0) {
    line_add (&l, "default_export readonly=%d is_tls=%d", readonly, is_tls);
    line_add_str (&l, "result", r);
    line_emit (&l, NULL);
  }
  return r;
}

static const struct export_entry *
find_export (const char *name)
{
  for (size_t i = 0; i < nr_exports; i++)
    if (strcmp (exports[i].name, name) == 0)
      return &exports[i];
  return NULL;
}

static void *
tp_open (int readonly)
{
  int err = 0;
  struct handle *h = NULL;
  const char *name = nbdkit_export_name ();
  struct line l = { .len = 0 };

  delay (CB_OPEN);
  if (name == NULL)
    name = "";
  if (injected (CB_OPEN, 0, 0, &err))
    ;
  else if (exports_strict && find_export (name) == NULL)
    nbdkit_error ("open: export '%s' does not exist", name);
  else if ((h = calloc (1, sizeof *h)) == NULL ||
           (h->exportname = strdup (name)) == NULL) {
    nbdkit_error ("open: %m");
    free (h);
    h = NULL;
  }
  else {
    h->readonly = readonly;
    pthread_mutex_lock (&lock);
    h->conn = ++connections;
    pthread_mutex_unlock (&lock);
  }
  if (log_fd >= 0) {
    line_add (&l, "open readonly=%d", readonly);
    line_add_str (&l, "export", name);
    line_add (&l, " result=%s", h ? "ok" : "error");
    line_emit (&l, h);
  }
  return h;
}

static void
tp_close (void *handle)
{
  struct handle *h = handle;
  struct line l = { .len = 0 };
  if (log_fd >= 0) {
    line_add (&l, "close result=ok");
    line_emit (&l, h);
  }
  free (h->exportname);
  free (h);
}

static int64_t
tp_get_size (void *handle)
{
  int err = 0;
  int64_t r = size;
  struct line l = { .len = 0 };
  delay (CB_GET_SIZE);
  if (injected (CB_GET_SIZE, 0, 0, &err))
    r = -1;
  if (log_fd >= 0) {
    if (r == -1)
      line_add (&l, "get_size result=error");
    else
      line_add (&l, "get_size result=%" PRId64, r);
    line_emit (&l, handle);
  }
  return r;
}

static const char *
tp_export_description (void *handle)
{
  struct handle *h = handle;
  int err = 0;
  const char *r = export_description_v;
  struct line l = { .len = 0 };
  delay (CB_EXPORT_DESCRIPTION);
  if (r == NULL) {
    const struct export_entry *e = find_export (h->exportname);
    r = e ? e->description : NULL;
  }
  if (injected (CB_EXPORT_DESCRIPTION, 0, 0, &err))
    r = NULL;
  if (log_fd >= 0) {
    line_add (&l, "export_description");
    line_add_str (&l, "result", r);
    line_emit (&l, h);
  }
  return r;
}

static int
tp_block_size (void *handle, uint32_t *minimum, uint32_t *preferred,
               uint32_t *maximum)
{
  int err = 0, r = 0;
  struct line l = { .len = 0 };
  delay (CB_BLOCK_SIZE);
  if (injected (CB_BLOCK_SIZE, 0, 0, &err))
    r = -1;
  else {
    *minimum = bs_min;
    *preferred = bs_pref;
    *maximum = bs_max;
  }
  if (log_fd >= 0) {
    line_add (&l, "block_size minimum=%" PRIu32 " preferred=%" PRIu32
              " maximum=%" PRIu32 " result=%s", bs_min, bs_pref, bs_max,
              r == -1 ? "error" : "ok");
    line_emit (&l, handle);
  }
  return r;
}

/* The can_* callbacks and is_rotational. */
static int
can_common (enum cb cb, void *handle, int value)
{
  int err = 0;
  delay (cb);
  if (injected (cb, 0, 0, &err))
    value = -1;
  log_result_int (cb, handle, value);
  return value;
}

#define CAN_CB(fn, cb, var) \
  static int fn (void *h) { return can_common (cb, h, var); }
CAN_CB (tp_can_write, CB_CAN_WRITE, can_write_v)
CAN_CB (tp_can_flush, CB_CAN_FLUSH, can_flush_v)
CAN_CB (tp_is_rotational, CB_IS_ROTATIONAL, is_rotational_v)
CAN_CB (tp_can_trim, CB_CAN_TRIM, can_trim_v)
CAN_CB (tp_can_zero, CB_CAN_ZERO, can_zero_v)
CAN_CB (tp_can_fast_zero, CB_CAN_FAST_ZERO, can_fast_zero_v)
CAN_CB (tp_can_extents, CB_CAN_EXTENTS, can_extents_v)
CAN_CB (tp_can_fua, CB_CAN_FUA, can_fua_v)
CAN_CB (tp_can_multi_conn, CB_CAN_MULTI_CONN, can_multi_conn_v)
CAN_CB (tp_can_cache, CB_CAN_CACHE, can_cache_v)

/* ------------------------------------------------------------------ */
/* Data callbacks (API version independent cores)                      */

static int
do_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
          uint32_t flags)
{
  int err = 0, r = 0;
  delay (CB_PREAD);
  if (injected (CB_PREAD, offset, count, &err))
    r = -1;
  else
    store_read (buf, count, offset);
  log_data (CB_PREAD, handle, true, offset, count, flags, r, err);
  return finish (r, err);
}

static int
do_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
           uint32_t flags)
{
  int err = 0, r = 0;
  delay (CB_PWRITE);
  if (injected (CB_PWRITE, offset, count, &err))
    r = -1;
  else if (store_write (buf, count, offset) == -1) {
    nbdkit_error ("pwrite: out of memory");
    err = ENOMEM;
    r = -1;
  }
  log_data (CB_PWRITE, handle, true, offset, count, flags, r, err);
  return finish (r, err);
}

static int
do_flush (void *handle, uint32_t flags)
{
  int err = 0, r = 0;
  delay (CB_FLUSH);
  if (injected (CB_FLUSH, 0, 0, &err))
    r = -1;
  log_data (CB_FLUSH, handle, false, 0, 0, flags, r, err);
  return finish (r, err);
}

static int
do_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int err = 0, r = 0;
  delay (CB_TRIM);
  if (injected (CB_TRIM, offset, count, &err))
    r = -1;
  else
    store_zero (count, offset, true);
  log_data (CB_TRIM, handle, true, offset, count, flags, r, err);
  return finish (r, err);
}

static int
do_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int err = 0, r = 0;
  delay (CB_ZERO);
  if (injected (CB_ZERO, offset, count, &err))
    r = -1;
  else if (fast_zero_fails && (flags & NBDKIT_FLAG_FAST_ZERO)) {
    err = ENOTSUP;
    r = -1;
  }
  else
    store_zero (count, offset, flags & NBDKIT_FLAG_MAY_TRIM);
  log_data (CB_ZERO, handle, true, offset, count, flags, r, err);
  return finish (r, err);
}

static int
add_extent (struct nbdkit_extents *ex, uint64_t off, uint64_t len,
            uint32_t type, int *err)
{
  if (nbdkit_add_extent (ex, off, len, type) == -1) {
    *err = errno ? errno : EIO;
    return -1;
  }
  return 0;
}

static int
extents_store (uint32_t count, uint64_t offset, struct nbdkit_extents *ex,
               int *err)
{
  uint64_t run_start = offset, run_len = 0;
  bool run_alloc = false;
  int r = 0;

  pthread_mutex_lock (&lock);
  FOR_EACH_CHUNK (offset, count, page, poff, n) {
    bool alloc = page_get (page) != NULL;
    (void) poff;
    if (run_len > 0 && alloc != run_alloc) {
      if ((r = add_extent (ex, run_start, run_len,
                           run_alloc ? 0 : NBDKIT_EXTENT_HOLE |
                           NBDKIT_EXTENT_ZERO, err)) == -1)
        break;
      run_start += run_len;
      run_len = 0;
    }
    run_alloc = alloc;
    run_len += n;
  }
  pthread_mutex_unlock (&lock);
  if (r == 0 && run_len > 0)
    r = add_extent (ex, run_start, run_len,
                    run_alloc ? 0 : NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO,
                    err);
  return r;
}

static int
extents_map (uint32_t count, uint64_t offset, struct nbdkit_extents *ex,
             int *err)
{
  uint64_t pos = 0, end = offset + count;
  for (size_t i = 0; i < nr_extent_runs && pos < end; i++) {
    uint64_t len = extent_runs[i].length;
    if (len > (uint64_t) size - pos)
      len = (uint64_t) size - pos;
    if (len == 0)
      return 0;
    if (pos + len > offset &&
        add_extent (ex, pos, len, extent_runs[i].type, err) == -1)
      return -1;
    pos += len;
  }
  if (pos < end && pos < (uint64_t) size)
    return add_extent (ex, pos > offset ? pos : offset,
                       (uint64_t) size - (pos > offset ? pos : offset), 0, err);
  return 0;
}

static int
tp_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
            struct nbdkit_extents *ex)
{
  int err = 0, r = 0;
  delay (CB_EXTENTS);
  if (injected (CB_EXTENTS, offset, count, &err))
    r = -1;
  else if (extents_mode == EXTENTS_STORE)
    r = extents_store (count, offset, ex, &err);
  else if (extents_mode == EXTENTS_MAP)
    r = extents_map (count, offset, ex, &err);
  /* EXTENTS_EMPTY: add nothing; nbdkit must refuse that. */
  log_data (CB_EXTENTS, handle, true, offset, count, flags, r, err);
  return finish (r, err);
}

static int
tp_cache (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int err = 0, r = 0;
  delay (CB_CACHE);
  if (injected (CB_CACHE, offset, count, &err))
    r = -1;
  log_data (CB_CACHE, handle, true, offset, count, flags, r, err);
  return finish (r, err);
}

/* ------------------------------------------------------------------ */
/* API-version specific entry points                                   */

#if NBDKIT_API_VERSION == 1
static int
tp_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  return do_pread (h, buf, count, offset, 0);
}

static int
tp_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset)
{
  return do_pwrite (h, buf, count, offset, 0);
}

static int
tp_flush (void *h)
{
  return do_flush (h, 0);
}

static int
tp_trim (void *h, uint32_t count, uint64_t offset)
{
  return do_trim (h, count, offset, 0);
}

static int
tp_zero (void *h, uint32_t count, uint64_t offset, int may_trim)
{
  return do_zero (h, count, offset, may_trim ? NBDKIT_FLAG_MAY_TRIM : 0);
}
#else
#define tp_pread do_pread
#define tp_pwrite do_pwrite
#define tp_flush do_flush
#define tp_trim do_trim
#define tp_zero do_zero
#endif

#if NBDKIT_API_VERSION == 1
#define TP_NAME "nbdcpp-test-v1"
#elif TEST_PLUGIN_ERRNO_IS_PRESERVED
#define TP_NAME "nbdcpp-test"
#else
#define TP_NAME "nbdcpp-test-no-errno"
#endif

static struct nbdkit_plugin plugin = {
  .name               = TP_NAME,
  .longname           = "nbdcpp test plugin",
  .version            = "1.0",
  .description        = "Memory-backed plugin whose every callback is "
                        "steered by parameters, for nbdcpp's tests.",
  .load               = tp_load,
  .unload             = tp_unload,
  .config             = tp_config,
  .config_complete    = tp_config_complete,
  .config_help        = TP_CONFIG_HELP,
  .magic_config_key   = "size",
  .dump_plugin        = tp_dump_plugin,
  .thread_model       = tp_thread_model,
  .get_ready          = tp_get_ready,
  .after_fork         = tp_after_fork,
  .cleanup            = tp_cleanup,
  .preconnect         = tp_preconnect,
  .list_exports       = tp_list_exports,
  .default_export     = tp_default_export,
  .open               = tp_open,
  .close              = tp_close,
  .get_size           = tp_get_size,
  .export_description = tp_export_description,
  .block_size         = tp_block_size,
  .can_write          = tp_can_write,
  .can_flush          = tp_can_flush,
  .is_rotational      = tp_is_rotational,
  .can_trim           = tp_can_trim,
  .can_zero           = tp_can_zero,
  .can_fast_zero      = tp_can_fast_zero,
  .can_extents        = tp_can_extents,
  .can_fua            = tp_can_fua,
  .can_multi_conn     = tp_can_multi_conn,
  .can_cache          = tp_can_cache,
  .pread              = tp_pread,
  .pwrite             = tp_pwrite,
  .flush              = tp_flush,
  .trim               = tp_trim,
  .zero               = tp_zero,
  .extents            = tp_extents,
  .cache              = tp_cache,
  .errno_is_preserved = TEST_PLUGIN_ERRNO_IS_PRESERVED,
};

/* ------------------------------------------------------------------ */
/* Registration: like NBDKIT_REGISTER_PLUGIN, plus leaving out the callbacks
 * named by KEY=absent arguments on nbdkit's command line.                */

static void
omit (enum cb cb)
{
  switch (cb) {
  case CB_PRECONNECT: plugin.preconnect = NULL; break;
  case CB_LIST_EXPORTS: plugin.list_exports = NULL; break;
  case CB_DEFAULT_EXPORT: plugin.default_export = NULL; break;
  case CB_EXPORT_DESCRIPTION: plugin.export_description = NULL; break;
  case CB_BLOCK_SIZE: plugin.block_size = NULL; break;
  case CB_CAN_WRITE: plugin.can_write = NULL; break;
  case CB_CAN_FLUSH: plugin.can_flush = NULL; break;
  case CB_IS_ROTATIONAL: plugin.is_rotational = NULL; break;
  case CB_CAN_TRIM: plugin.can_trim = NULL; break;
  case CB_CAN_ZERO: plugin.can_zero = NULL; break;
  case CB_CAN_FAST_ZERO: plugin.can_fast_zero = NULL; break;
  case CB_CAN_EXTENTS: plugin.can_extents = NULL; break;
  case CB_CAN_FUA: plugin.can_fua = NULL; break;
  case CB_CAN_MULTI_CONN: plugin.can_multi_conn = NULL; break;
  case CB_CAN_CACHE: plugin.can_cache = NULL; break;
  case CB_PWRITE: plugin.pwrite = NULL; break;
  case CB_FLUSH: plugin.flush = NULL; break;
  case CB_TRIM: plugin.trim = NULL; break;
  case CB_ZERO: plugin.zero = NULL; break;
  case CB_EXTENTS: plugin.extents = NULL; break;
  case CB_CACHE: plugin.cache = NULL; break;
  case CB_OPEN: case CB_GET_SIZE: case CB_PREAD: case CB_COUNT:
    return;
  }
  omitted[cb] = true;
}

static void
omit_from_cmdline (void)
{
  int fd = open ("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  char *buf = NULL;
  size_t len = 0, cap = 0;
  if (fd == -1)
    return;
  for (;;) {
    if (len == cap) {
      char *n = realloc (buf, cap ? cap * 2 : 4096);
      if (n == NULL)
        goto out;
      buf = n;
      cap = cap ? cap * 2 : 4096;
    }
    ssize_t r = read (fd, buf + len, cap - len);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    len += (size_t) r;
  }
  for (size_t i = 0; i < len;) {
    const char *arg = buf + i;
    size_t alen = strnlen (arg, len - i);
    const char *eq = memchr (arg, '=', alen);
    if (eq && strncmp (eq, "=absent", alen - (size_t) (eq - arg)) == 0 &&
        alen - (size_t) (eq - arg) == strlen ("=absent")) {
      int cb = cb_lookup (arg, (size_t) (eq - arg));
      if (cb >= 0 && cb_omittable ((enum cb) cb))
        omit ((enum cb) cb);
    }
    i += alen + 1;
  }
 out:
  free (buf);
  close (fd);
}

NBDKIT_DLL_PUBLIC struct nbdkit_plugin *plugin_init (void);

NBDKIT_DLL_PUBLIC struct nbdkit_plugin *
plugin_init (void)
{
  plugin._struct_size = sizeof plugin;
  plugin._api_version = NBDKIT_API_VERSION;
  plugin._thread_model = THREAD_MODEL;
  omit_from_cmdline ();
  return &plugin;
}
