/* sstc datasets: preparation, loaders and the mini-batch pipeline.
 *
 * A dataset is held in memory as raw 8-bit pixels (NCHW) plus integer labels;
 * the batcher turns them into normalized, optionally augmented float batches.
 *
 * Sources understood by sstc_dataset_load():
 *   - the known names "mnist", "cifar10" and "fashion-mnist", looked up under
 *     the data root (default "datasets/", the SSTC_DATA_DIR environment
 *     variable overrides it) once sstc_dataset_prepare() has put them there;
 *   - a folder with train/ and test/, each with one sub-folder per class of
 *     PNG or JPEG images (grayscale or RGB, all of one size); class names are
 *     the sub-folder names, in natural order ("2" before "10"), taken from
 *     train/ so that both splits agree; the first decode writes a cache file
 *     <folder>/<split>.sstcache that later loads read instead (rebuilt when a
 *     file is added, removed, resized or touched);
 *   - a folder with IDX files (train-images-idx3-ubyte[.gz] and
 *     train-labels-idx1-ubyte[.gz], t10k-* or test-* for the test split),
 *     gzip-compressed or not, or the path of one IDX images file (its labels
 *     file is found by replacing "images-idx3" with "labels-idx1");
 *   - a folder with CIFAR-10 binary batches (data_batch_1.bin ... and
 *     test_batch.bin, directly or in cifar-10-batches-bin/), or the path of one
 *     .bin batch file.
 * When name is a single file, split is ignored.
 *
 * Every function returns 0 (or a count) on success and a negative SSTC_E*
 * code on failure, with a message from sstc_errmsg() that names the file, the
 * record or byte offset, and what was expected. Nothing here exits. */
#ifndef SSTC_DATA_H
#define SSTC_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "sstc/rng.h"

typedef struct sstc_dataset {
    int n, c, h, w;          /* count and image shape */
    int num_classes;
    uint8_t *pixels;         /* n*c*h*w bytes, NCHW, 0..255 */
    int *labels;             /* n labels in [0, num_classes) */
    char **class_names;      /* num_classes names (may be "0".."9") */
    const char *format;      /* static text: "image folder", "IDX", "CIFAR-10 binary" */
    int from_cache;          /* 1 if an image folder was read from its .sstcache */
} sstc_dataset;

/* name: "mnist", "cifar10", "fashion-mnist" or a path (see above).
 * split: "train" or "test". On failure *out is left empty (safe to free). */
int sstc_dataset_load(const char *name, const char *split, sstc_dataset *out);
void sstc_dataset_free(sstc_dataset *ds);

/* Makes a known dataset ("mnist", "cifar10", "fashion-mnist") available under
 * the data root. Looks for a local mirror first: the folders listed in
 * SSTC_DATA_MIRROR (colon-separated), then ../shared/datasets, then
 * /usr/share/datasets (Debian's dataset-* packages); verifies the checksum
 * (the mirror's SHA256SUMS, the Debian package's md5sums, or the upstream
 * MD5); extracts or copies into <root>/<name>/. Without a mirror it downloads
 * the upstream files with curl or wget (SSTC_DATA_UPSTREAM replaces the
 * upstream URL prefix). Idempotent: returns 0 at once when already prepared.
 * verbose: print progress to stderr. */
int sstc_dataset_prepare(const char *name, int verbose);

/* The data root: $SSTC_DATA_DIR if set and non-empty, else "datasets". */
const char *sstc_data_root(void);

/* 1 if the dataset name (as for sstc_dataset_load) has files for split; a
 * single file counts as having every split. Does not decode anything. */
int sstc_dataset_has_split(const char *name, const char *split);

/* 1 if name is one of the known dataset names. */
int sstc_dataset_is_known(const char *name);

/* ---- pipeline ------------------------------------------------------------ */

typedef struct { int c; float mean[4], std[4]; } sstc_normalizer;  /* x = (p/255 - mean)/std */

/* Per-channel mean and standard deviation (of p/255) over the samples idx
 * (NULL = all of ds). Exact (integer sums), so independent of thread count. */
int sstc_dataset_channel_stats(const sstc_dataset *ds, const int *idx, int count, sstc_normalizer *out);

/* pad_crop=4 for CIFAR: random crop with zero padding of 4; hflip: random
 * horizontal flip; cutout: side of a square, centred at a uniformly random
 * pixel and clipped at the borders, set to 0 after normalization (the
 * normalizer's mean) in every channel; 0 turns it off. */
typedef struct { int pad_crop; int hflip; int cutout; } sstc_augment;

/* Split indices 0..n-1 with a seeded shuffle into train (n-val) and val (val)
 * index arrays (malloc'd; caller frees), each in ascending order. With
 * val_count 0, *val_idx is NULL. */
int sstc_dataset_split(int n, int val_count, sstc_rng *rng, int **train_idx, int **val_idx);

typedef struct sstc_batcher {
    const sstc_dataset *ds;
    int *base;               /* the indices given to init, in their order */
    int *order;              /* this epoch's order */
    int count, pos;
    int batch_size, shuffle, drop_last, started;
    sstc_augment aug;
    sstc_rng *rng;
    float lut[4][256];       /* byte -> normalized value, per channel */
} sstc_batcher;

/* Iterates over `indices` (NULL = all of ds) in mini-batches. If shuffle, the
 * order is reshuffled with rng at the start of every epoch
 * (sstc_batcher_start_epoch); augmentation also draws from rng. Thus the
 * whole pipeline state between epochs is the rng state. norm NULL means
 * scaling to [0,1] only; aug NULL means no augmentation. rng may be NULL when
 * neither shuffling nor augmenting. The batcher keeps pointers to ds and rng. */
int sstc_batcher_init(sstc_batcher *b, const sstc_dataset *ds, const int *indices, int count, int batch_size,
                      int shuffle, int drop_last, const sstc_normalizer *norm, const sstc_augment *aug,
                      sstc_rng *rng);
/* Starts an epoch: restores the initial order, then shuffles it if asked. The
 * first sstc_batcher_next() starts one itself if this was never called. */
void sstc_batcher_start_epoch(sstc_batcher *b);
/* Fills x (batch_size*c*h*w floats, NCHW, normalized, augmented) and y
 * (labels); returns number of samples (< batch_size for a short last batch
 * unless drop_last), 0 when the epoch is over. */
int sstc_batcher_next(sstc_batcher *b, float *x, int *y);
int sstc_batcher_num_batches(const sstc_batcher *b);
void sstc_batcher_free(sstc_batcher *b);

/* ---- lower-level readers and writers (also the fuzz targets' entry points) -- */

/* A decoded image, pixels interleaved (HWC), c = 1 (gray) or 3 (RGB); alpha
 * is dropped. */
typedef struct { int w, h, c; uint8_t *pixels; } sstc_image;

/* Decodes a PNG (libpng; stb_image as a fallback for PNGs libpng refuses) or
 * a JPEG (stb_image) held in memory. name is used in error messages. */
int sstc_image_decode(const void *buf, size_t len, const char *name, sstc_image *out);
int sstc_image_read(const char *path, sstc_image *out);
void sstc_image_free(sstc_image *img);
/* Writes an 8-bit PNG (c = 1 gray, 3 RGB, 4 RGBA) from HWC pixels. */
int sstc_image_write_png(const char *path, int w, int h, int c, const uint8_t *hwc);

/* A grid of sample images (interleaved h x w x c, for sstc_image_write_png):
 * one row per class (at most 20), up to per_class images each, drawn at
 * random (seed), each pixel scaled up `scale` times (0: to about 64 pixels). */
int sstc_dataset_sample_grid(const sstc_dataset *ds, int per_class, uint64_t seed, int scale, uint8_t **img, int *w,
                             int *h, int *rows);

/* An IDX images file (3 dims n,h,w, or 4 dims n,h,w,c with c <= 4) and its
 * labels file (1 dim n), both unsigned bytes, each gzip-compressed or not.
 * num_classes 0: max label + 1; otherwise labels must be below it. */
int sstc_dataset_from_idx_files(const char *images_path, const char *labels_path, int num_classes,
                                sstc_dataset *out);
int sstc_dataset_from_idx_buffers(const void *images, size_t images_len, const char *images_name,
                                  const void *labels, size_t labels_len, const char *labels_name,
                                  int num_classes, sstc_dataset *out);

/* CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes
 * (1024 red, 1024 green, 1024 blue, rows top to bottom), concatenated in
 * order. Labels must be below 10. */
int sstc_dataset_from_cifar_files(const char *const *paths, int npaths, sstc_dataset *out);
int sstc_dataset_from_cifar_buffer(const void *buf, size_t len, const char *name, sstc_dataset *out);

/* An image folder with one sub-folder per class. classes_dir: folder whose
 * sub-folders define the class list (NULL: dir itself). cache_path: cache file
 * to read when fresh and (re)write otherwise (NULL: no cache). */
int sstc_dataset_from_folder(const char *dir, const char *classes_dir, const char *cache_path, sstc_dataset *out);

#endif
