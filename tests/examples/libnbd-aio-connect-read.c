/* SPDX-License-Identifier: BSD-3-Clause
 *
 * The reference side of the aio-connect-read cross-check: the same
 * program written against libnbd, whose output the nbdcpp example must
 * match byte for byte. Built only when libnbd-dev is installed.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <libnbd.h>

enum { SECTORS = 32, SECTOR = 512 };

struct sector {
  uint64_t offset;
  char bytes[SECTOR];
};

static int
print_sector (void *opaque, int *error)
{
  struct sector *s = opaque;
  FILE *hd;

  (void) error;
  printf ("sector at offset 0x%" PRIx64 ":\n", s->offset);
  hd = popen ("hexdump -C", "w");
  if (!hd) {
    perror ("popen: hexdump");
    exit (EXIT_FAILURE);
  }
  fwrite (s->bytes, SECTOR, 1, hd);
  pclose (hd);
  printf ("\n");
  return 1;
}

static void
die (void)
{
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}

int
main (int argc, char *argv[])
{
  static struct sector sectors[SECTORS];
  struct nbd_handle *h;
  int i;

  if (argc != 2) {
    fprintf (stderr, "%s socket\n", argv[0]);
    exit (EXIT_FAILURE);
  }
  h = nbd_create ();
  if (!h || nbd_aio_connect_unix (h, argv[1]) == -1)
    die ();
  while (!nbd_aio_is_ready (h))
    if (nbd_poll (h, -1) == -1)
      die ();
  for (i = 0; i < SECTORS; ++i) {
    nbd_completion_callback cb = { .callback = print_sector, .user_data = &sectors[i] };
    sectors[i].offset = (uint64_t) i * SECTOR;
    if (nbd_aio_pread (h, sectors[i].bytes, SECTOR, sectors[i].offset, cb, 0) == -1)
      die ();
  }
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, -1) == -1)
      die ();
  nbd_close (h);
  exit (EXIT_SUCCESS);
}
