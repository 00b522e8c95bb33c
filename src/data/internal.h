/* Helpers shared by the dataset code (not part of the public API). */
#ifndef SSTC_DATA_INTERNAL_H
#define SSTC_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sstc/data.h"

/* Largest image accepted (pixels per image), so a forged header cannot make
 * a decoder allocate gigabytes. */
#define SSTC_MAX_IMAGE_PIXELS (1 << 24)
#define SSTC_MAX_IMAGE_SIDE (1 << 15)

/* The limit the image decoders apply (SSTC_MAX_IMAGE_PIXELS unless changed;
 * the fuzz targets lower it to keep each run fast). */
extern long sstc_data_max_image_pixels;

/* ---- files and paths ---- */

/* Reads a whole file into a malloc'd buffer (plus one NUL byte). */
int sstc_data_read_file(const char *path, uint8_t **buf, size_t *len);
/* Reads a whole file into *buf, growing it (capacity *cap) as needed. */
int sstc_data_read_file_into(const char *path, uint8_t **buf, size_t *cap, size_t *len);
/* Inflates a gzip (or zlib) stream held in memory into a malloc'd buffer. */
int sstc_data_gunzip(const uint8_t *in, size_t in_len, const char *name, uint8_t **out, size_t *out_len);
/* With a limit (0: none): more output than limit bytes is SSTC_EFORMAT (a
 * gzip bomb stops there); with peek, only the first limit bytes are
 * inflated and returned (to read a header). */
int sstc_data_gunzip_limit(const uint8_t *in, size_t in_len, const char *name, size_t limit, int peek, uint8_t **out,
                           size_t *out_len);
int sstc_data_is_gzip(const uint8_t *buf, size_t len);
/* Reads a file, inflating it when it is gzip-compressed. */
int sstc_data_read_maybe_gz(const char *path, uint8_t **buf, size_t *len);

/* snprintf into a malloc'd string. */
char *sstc_data_strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *sstc_data_path_join(const char *a, const char *b);
int sstc_data_is_dir(const char *path);
int sstc_data_is_file(const char *path);
/* mkdir -p; 0 or SSTC_EIO. */
int sstc_data_mkdirs(const char *path);
/* Natural order ("2" < "10"), for qsort on char* arrays. */
int sstc_data_cmp_natural(const void *a, const void *b);

/* Frees partial state and zeroes *ds. */
void sstc_data_dataset_reset(sstc_dataset *ds);
/* Allocates pixels/labels for n images of c*h*w. */
int sstc_data_dataset_alloc(sstc_dataset *ds, int n, int c, int h, int w);
/* Sets class names "0".."k-1". */
int sstc_data_dataset_numeric_classes(sstc_dataset *ds, int k);
int sstc_data_dataset_set_classes(sstc_dataset *ds, const char *const *names, int k);

/* ---- checksums ---- */

/* Hex digest of a file: algo "sha256" or "md5". */
int sstc_data_file_digest(const char *path, const char *algo, char *hex, size_t hex_size);

/* ---- stb_image (compiled in stb_image_impl.c) ---- */

/* Decodes with stb_image; returns malloc'd HWC pixels (free with free()) or
 * NULL and a reason in *why. */
uint8_t *sstc_data_stb_decode(const uint8_t *buf, size_t len, int *w, int *h, int *c, const char **why);

#endif
