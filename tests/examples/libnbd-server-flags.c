/* SPDX-License-Identifier: BSD-3-Clause
 *
 * The reference side of the server-flags cross-check: the same program
 * written against libnbd, whose output the nbdcpp example must match line
 * for line. Built only when libnbd-dev is installed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <libnbd.h>

static void
die (void)
{
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}

static void
print_flag (const char *name, int v)
{
  if (v == -1)
    die ();
  printf ("%s = %s\n", name, v ? "true" : "false");
}

static void
print_string (const char *name, char *s)
{
  if (s == NULL) {
    if (nbd_get_errno () != ENOTSUP)
      die ();
    printf ("%s = (not sent by the server)\n", name);
    return;
  }
  printf ("%s = \"%s\"\n", name, s);
  free (s);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;

  if (argc != 2) {
    fprintf (stderr, "%s socket\n", argv[0]);
    exit (EXIT_FAILURE);
  }
  h = nbd_create ();
  if (!h || nbd_set_full_info (h, true) == -1 || nbd_connect_unix (h, argv[1]) == -1)
    die ();
#define FLAG(fn) print_flag (#fn, fn (h))
  FLAG (nbd_can_cache);
  FLAG (nbd_can_df);
  FLAG (nbd_can_flush);
  FLAG (nbd_can_fua);
  FLAG (nbd_can_multi_conn);
  FLAG (nbd_can_trim);
  FLAG (nbd_can_zero);
  FLAG (nbd_can_fast_zero);
  FLAG (nbd_is_read_only);
  FLAG (nbd_is_rotational);
  print_string ("nbd_get_canonical_export_name", nbd_get_canonical_export_name (h));
  print_string ("nbd_get_export_description", nbd_get_export_description (h));
  nbd_close (h);
  exit (EXIT_SUCCESS);
}
