/* Files in and out, the one way the library does them.
 *
 * Reading: only a regular file is read (a FIFO would block, a device never
 * end), never more than a stated size, in full or not at all. Writing: a
 * temporary file in the same folder, fsync, rename, and only over a regular
 * file (renaming over a device node would replace it). */
#ifndef SSTC_IO_H
#define SSTC_IO_H

#include <stddef.h>
#include <stdint.h>

/* Reads the whole regular file at path (at most max_bytes) into a malloc'd
 * buffer with one extra 0 byte after the data. `what` names the file's kind
 * in messages ("config", "checkpoint", ...). SSTC_EIO with the reason. */
int sstc_read_file(const char *path, size_t max_bytes, const char *what, uint8_t **buf, size_t *len);

/* Writes a file atomically: data to a temporary file beside path, fsync,
 * rename over path (refused unless path is absent or a regular file). */
int sstc_write_atomic(const char *path, const void *data, size_t len);

#endif
