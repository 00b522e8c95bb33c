/* Helpers for the dataset tests: a private temporary folder per test and
 * writers for small PNG, JPEG, IDX and CIFAR-10 files. Every helper asserts
 * (Criterion) instead of returning errors. */
#ifndef SSTC_TEST_DATA_HELPERS_H
#define SSTC_TEST_DATA_HELPERS_H

#include <stddef.h>
#include <stdint.h>

/* mkdtemp under $TMPDIR (or /tmp); returns a malloc'd path. */
char *th_tmpdir(void);
/* Removes a folder and everything in it. */
void th_rmtree(const char *path);
/* printf into a static ring of buffers (valid for the next few calls). */
const char *th_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void th_mkdirs(const char *path);
void th_write(const char *path, const void *data, size_t n);
/* Reads a whole file (malloc'd). */
uint8_t *th_read(const char *path, size_t *n);

/* Deterministic test pattern: pixel value for image i, channel ch, at (y, x). */
uint8_t th_pixel(int i, int ch, int y, int x);
/* Fills an HWC buffer with th_pixel for image i. */
void th_pattern_hwc(uint8_t *hwc, int i, int w, int h, int c);

/* PNG through stb_image_write's encoder (independent of the loader's
 * libpng), from HWC pixels; c = 1..4. */
void th_write_png(const char *path, int w, int h, int c, const uint8_t *hwc);

/* A baseline JPEG (c = 1 gray, or 3 stored as RGB) of an image whose 8x8
 * blocks are each one colour: coded with DC coefficients only at
 * quantization 1, so a correct decoder returns the pixels exactly. w and h
 * are multiples of 8; each block takes the colour of its top-left pixel.
 * Returns the file size. */
size_t th_jpeg_blocks(uint8_t *out, size_t cap, int w, int h, int c, const uint8_t *hwc);
void th_write_jpeg_blocks(const char *path, int w, int h, int c, const uint8_t *hwc);

/* IDX: an unsigned-byte file with the given dims, gzip-compressed if gz. */
void th_write_idx(const char *path, int gz, int ndims, const uint32_t *dims, const uint8_t *data);
/* n CIFAR-10 records with labels[i] and th_pixel(first + i, ...) as pixels. */
void th_write_cifar(const char *path, int n, const uint8_t *labels, int first);

/* 1 if haystack contains needle (for error-message checks). */
int th_has(const char *haystack, const char *needle);
/* Runs a shell command, its output (stdout; add 2>&1 for stderr) into out
 * (NUL-terminated, at most cap - 1 bytes); returns its exit status (-1 when
 * it did not exit normally). */
int th_run(const char *cmd, char *out, size_t cap);

#endif
