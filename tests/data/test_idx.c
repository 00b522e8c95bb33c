/* IDX loading (MNIST's format), plain and gzip, and its error messages. */
#include <criterion/criterion.h>
#include <zlib.h>
#include <stdlib.h>
#include <string.h>

#include "data_helpers.h"
#include "sstc/data.h"
#include "sstc/error.h"

static char *dir;
static void setup(void) { dir = th_tmpdir(); }
static void teardown(void) {
    th_rmtree(dir);
    free(dir);
}

TestSuite(data_idx, .init = setup, .fini = teardown);

/* n images of h x w (x c when c > 1, stored HWC as IDX does), labels i % 10. */
static void write_pair(const char *img, const char *lab, int gz, int n, int h, int w, int c) {
    size_t per = (size_t)h * w * c;
    uint8_t *px = malloc(per * n), *lb = malloc(n);
    for (int i = 0; i < n; i++) {
        th_pattern_hwc(px + i * per, i, w, h, c);
        lb[i] = (uint8_t)(i % 10);
    }
    uint32_t d[4] = {(uint32_t)n, (uint32_t)h, (uint32_t)w, (uint32_t)c};
    th_write_idx(img, gz, c > 1 ? 4 : 3, d, px);
    uint32_t dl[1] = {(uint32_t)n};
    th_write_idx(lab, gz, 1, dl, lb);
    free(px);
    free(lb);
}

static void check_pixels(const sstc_dataset *ds, int n, int h, int w, int c) {
    cr_assert_eq(ds->n, n);
    cr_assert_eq(ds->c, c);
    cr_assert_eq(ds->h, h);
    cr_assert_eq(ds->w, w);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ds->labels[i], i % 10, "label %d", i);
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    cr_assert_eq(ds->pixels[(((size_t)i * c + ch) * h + y) * w + x], th_pixel(i, ch, y, x),
                                 "image %d channel %d (%d,%d)", i, ch, y, x);
    }
}

Test(data_idx, plain_pair_loads_every_pixel_and_label) {
    const char *img = th_path("%s/train-images-idx3-ubyte", dir), *lab = th_path("%s/train-labels-idx1-ubyte", dir);
    write_pair(img, lab, 0, 12, 5, 4, 1);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_from_idx_files(img, lab, 10, &ds), 0, "%s", sstc_errmsg());
    check_pixels(&ds, 12, 5, 4, 1);
    cr_assert_eq(ds.num_classes, 10);
    cr_assert_str_eq(ds.class_names[7], "7");
    cr_assert_str_eq(ds.format, "IDX");
    sstc_dataset_free(&ds);
}

Test(data_idx, gzip_pair_loads_the_same_pixels) {
    const char *img = th_path("%s/a-images-idx3-ubyte.gz", dir), *lab = th_path("%s/a-labels-idx1-ubyte.gz", dir);
    write_pair(img, lab, 1, 23, 6, 7, 1);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_from_idx_files(img, lab, 0, &ds), 0, "%s", sstc_errmsg());
    check_pixels(&ds, 23, 6, 7, 1);
    cr_assert_eq(ds.num_classes, 10, "max label 9 + 1");
    sstc_dataset_free(&ds);
}

Test(data_idx, four_dimensional_rgb_images_become_nchw) {
    const char *img = th_path("%s/i", dir), *lab = th_path("%s/l", dir);
    write_pair(img, lab, 0, 3, 4, 5, 3);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_from_idx_files(img, lab, 0, &ds), 0, "%s", sstc_errmsg());
    check_pixels(&ds, 3, 4, 5, 3);
    sstc_dataset_free(&ds);
}

Test(data_idx, folder_with_train_and_t10k_files_loads_by_split) {
    write_pair(th_path("%s/train-images-idx3-ubyte.gz", dir), th_path("%s/train-labels-idx1-ubyte.gz", dir), 1, 20,
               4, 4, 1);
    write_pair(th_path("%s/t10k-images-idx3-ubyte", dir), th_path("%s/t10k-labels-idx1-ubyte", dir), 0, 5, 4, 4, 1);
    sstc_dataset tr, te;
    cr_assert_eq(sstc_dataset_load(dir, "train", &tr), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_dataset_load(dir, "test", &te), 0, "%s", sstc_errmsg());
    check_pixels(&tr, 20, 4, 4, 1);
    check_pixels(&te, 5, 4, 4, 1);
    /* The images file alone also works: its labels file is found by name. */
    sstc_dataset one;
    cr_assert_eq(sstc_dataset_load(th_path("%s/t10k-images-idx3-ubyte", dir), NULL, &one), 0, "%s", sstc_errmsg());
    check_pixels(&one, 5, 4, 4, 1);
    sstc_dataset_free(&tr);
    sstc_dataset_free(&te);
    sstc_dataset_free(&one);
}

/* Writes raw bytes as an images file next to a valid labels file for 2 images. */
static int load_raw_images(const uint8_t *bytes, size_t n, sstc_dataset *ds) {
    const char *img = th_path("%s/bad-images-idx3-ubyte", dir), *lab = th_path("%s/bad-labels-idx1-ubyte", dir);
    th_write(img, bytes, n);
    uint8_t lb[2] = {1, 2};
    uint32_t dl[1] = {2};
    th_write_idx(lab, 0, 1, dl, lb);
    return sstc_dataset_from_idx_files(img, lab, 10, ds);
}

Test(data_idx, truncated_images_file_names_the_file_the_image_and_its_offset) {
    /* 2 images of 3x3 promised, 1.5 delivered. */
    uint8_t f[16 + 13] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3};
    sstc_dataset ds;
    cr_assert_eq(load_raw_images(f, sizeof f, &ds), SSTC_EFORMAT);
    const char *m = sstc_errmsg();
    cr_assert(th_has(m, "bad-images-idx3-ubyte: truncated"), "%s", m);
    cr_assert(th_has(m, "2 images of 9 bytes"), "%s", m);
    cr_assert(th_has(m, "inside image 1 (which starts at byte offset 25)"), "%s", m);
    cr_assert_null(ds.pixels);
}

Test(data_idx, truncated_header_is_reported) {
    uint8_t f[10] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0};
    sstc_dataset ds;
    cr_assert_eq(load_raw_images(f, sizeof f, &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "file ends at byte 10 inside the IDX header, expected 16 header bytes"), "%s",
              sstc_errmsg());
}

Test(data_idx, wrong_magic_is_reported_at_offset_0) {
    uint8_t f[16 + 18] = {'P', 'K', 3, 4};
    sstc_dataset ds;
    cr_assert_eq(load_raw_images(f, sizeof f, &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "bad-images-idx3-ubyte: wrong magic 50 4b 03 04 at byte offset 0"), "%s",
              sstc_errmsg());
}

Test(data_idx, non_byte_data_type_is_reported_at_offset_2) {
    uint8_t f[16 + 18] = {0, 0, 0x0d, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3};
    sstc_dataset ds;
    cr_assert_eq(load_raw_images(f, sizeof f, &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "IDX data type 0x0d at byte offset 2, expected 0x08 (unsigned byte)"), "%s",
              sstc_errmsg());
}

Test(data_idx, extra_bytes_after_the_last_image_are_reported) {
    uint8_t f[16 + 18 + 5] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3};
    sstc_dataset ds;
    cr_assert_eq(load_raw_images(f, sizeof f, &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "5 unexpected bytes after the last of 2 images (data should end at byte offset 34"),
              "%s", sstc_errmsg());
}

Test(data_idx, label_out_of_range_names_the_record_and_offset) {
    const char *img = th_path("%s/x-images-idx3-ubyte", dir), *lab = th_path("%s/x-labels-idx1-ubyte", dir);
    write_pair(img, lab, 0, 4, 2, 2, 1);
    uint8_t lb[4] = {0, 1, 12, 3};
    uint32_t dl[1] = {4};
    th_write_idx(lab, 0, 1, dl, lb);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_from_idx_files(img, lab, 10, &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "x-labels-idx1-ubyte: label 12 of record 2 (byte offset 10) is out of range, "
                                    "expected 0..9"),
              "%s", sstc_errmsg());
}

Test(data_idx, label_count_must_match_image_count) {
    const char *img = th_path("%s/y-images-idx3-ubyte", dir), *lab = th_path("%s/y-labels-idx1-ubyte", dir);
    write_pair(img, lab, 0, 4, 2, 2, 1);
    uint8_t lb[3] = {0, 1, 2};
    uint32_t dl[1] = {3};
    th_write_idx(lab, 0, 1, dl, lb);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_from_idx_files(img, lab, 10, &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "3 labels, but"), "%s", sstc_errmsg());
    cr_assert(th_has(sstc_errmsg(), "has 4 images"), "%s", sstc_errmsg());
}

Test(data_idx, truncated_gzip_stream_is_reported) {
    const char *img = th_path("%s/z-images-idx3-ubyte.gz", dir), *lab = th_path("%s/z-labels-idx1-ubyte.gz", dir);
    write_pair(img, lab, 1, 50, 8, 8, 1);
    size_t n;
    uint8_t *buf = th_read(img, &n);
    th_write(img, buf, n - 30);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_from_idx_files(img, lab, 10, &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), img), "%s", sstc_errmsg());
    cr_assert(th_has(sstc_errmsg(), "gzip data is corrupt"), "%s", sstc_errmsg());
    free(buf);
}

Test(data_idx, offsets_in_gzip_files_say_they_are_after_decompression) {
    const char *img = th_path("%s/g-images-idx3-ubyte.gz", dir), *lab = th_path("%s/g-labels-idx1-ubyte.gz", dir);
    write_pair(img, lab, 1, 4, 2, 2, 1);
    uint8_t lb[4] = {0, 1, 2, 200};
    uint32_t dl[1] = {4};
    th_write_idx(lab, 1, 1, dl, lb);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_from_idx_files(img, lab, 10, &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "label 200 of record 3 (byte offset 11 after decompression)"), "%s", sstc_errmsg());
}

Test(data_idx, folder_with_labels_but_no_images_says_which_file_is_missing) {
    uint8_t lb[2] = {0, 1};
    uint32_t dl[1] = {2};
    th_write_idx(th_path("%s/train-labels-idx1-ubyte", dir), 0, 1, dl, lb);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), SSTC_EIO);
    cr_assert(th_has(sstc_errmsg(), "no train-images-idx3-ubyte[.gz]"), "%s", sstc_errmsg());
}

/* gzip (in memory) of n bytes of src */
static uint8_t *gzip_mem(const uint8_t *src, size_t n, size_t *out_len) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    cr_assert_eq(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&zs, (uLong)n) + 64;
    uint8_t *out = malloc(cap);
    zs.next_in = (Bytef *)src;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    cr_assert_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *out_len = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

Test(data_idx, a_gzip_bomb_stops_at_the_size_its_header_announces) {
    /* a header announcing 2 images of 4x4 (32 bytes of data), then 64 MB */
    size_t n = (size_t)64 << 20;
    uint8_t *raw = calloc(n, 1);
    const uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4};
    memcpy(raw, hdr, 16);
    size_t glen, llen;
    uint8_t *gz = gzip_mem(raw, n, &glen);
    free(raw);
    const uint8_t lab_raw[10] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 2};
    uint8_t *lgz = gzip_mem(lab_raw, sizeof lab_raw, &llen);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_from_idx_buffers(gz, glen, "bomb.gz", lgz, llen, "labels.gz", 0, &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "bomb.gz: inflates to more than the 48 bytes its header announces"), "%s",
              sstc_errmsg());
    free(gz);
    free(lgz);
}
