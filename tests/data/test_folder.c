/* Image-folder datasets: order, pixels, both image formats, the cache and
 * its invalidation, and the errors for bad folders and images. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data_helpers.h"
#include "sstc/data.h"
#include "sstc/error.h"

static char *dir;
static void setup(void) { dir = th_tmpdir(); }
static void teardown(void) {
    th_rmtree(dir);
    free(dir);
}

TestSuite(data_folder, .init = setup, .fini = teardown);

/* Writes split/<class>/<name>.png of w x h x c with the pattern of image id. */
static void put_png(const char *split, const char *cls, const char *name, int id, int w, int h, int c) {
    th_mkdirs(th_path("%s/%s/%s", dir, split, cls));
    uint8_t *px = malloc((size_t)w * h * c);
    th_pattern_hwc(px, id, w, h, c);
    th_write_png(th_path("%s/%s/%s/%s", dir, split, cls, name), w, h, c, px);
    free(px);
}

static void check_image(const sstc_dataset *ds, int i, int id) {
    for (int ch = 0; ch < ds->c; ch++)
        for (int y = 0; y < ds->h; y++)
            for (int x = 0; x < ds->w; x++)
                cr_assert_eq(ds->pixels[(((size_t)i * ds->c + ch) * ds->h + y) * ds->w + x], th_pixel(id, ch, y, x),
                             "image %d channel %d (%d,%d)", i, ch, y, x);
}

/* Classes "2" and "10" and files 1, 2, 10: natural order, not byte order. */
static void make_small_gray(void) {
    put_png("train", "10", "2.png", 3, 6, 5, 1);
    put_png("train", "10", "10.png", 4, 6, 5, 1);
    put_png("train", "2", "10.png", 2, 6, 5, 1);
    put_png("train", "2", "1.png", 0, 6, 5, 1);
    put_png("train", "2", "2.png", 1, 6, 5, 1);
    th_write(th_path("%s/train/2/notes.txt", dir), "x", 1); /* not an image: ignored */
}

Test(data_folder, classes_and_files_load_in_natural_order_with_every_pixel) {
    make_small_gray();
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), 0, "%s", sstc_errmsg());
    cr_assert_eq(ds.n, 5);
    cr_assert_eq(ds.c, 1);
    cr_assert_eq(ds.h, 5);
    cr_assert_eq(ds.w, 6);
    cr_assert_eq(ds.num_classes, 2);
    cr_assert_str_eq(ds.class_names[0], "2");
    cr_assert_str_eq(ds.class_names[1], "10");
    int labels[5] = {0, 0, 0, 1, 1};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(ds.labels[i], labels[i], "label %d", i);
        check_image(&ds, i, i); /* ids were chosen to match the natural order */
    }
    cr_assert_str_eq(ds.format, "image folder");
    sstc_dataset_free(&ds);
}

Test(data_folder, rgb_png_and_jpeg_mix_in_one_folder) {
    put_png("train", "a", "0.png", 0, 8, 8, 3);
    th_mkdirs(th_path("%s/train/b", dir));
    uint8_t px[8 * 8 * 3];
    for (int i = 0; i < 8 * 8 * 3; i++) px[i] = (uint8_t)(i % 3 == 0 ? 200 : i % 3 == 1 ? 100 : 30);
    th_write_jpeg_blocks(th_path("%s/train/b/0.JPG", dir), 8, 8, 3, px);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), 0, "%s", sstc_errmsg());
    cr_assert_eq(ds.n, 2);
    cr_assert_eq(ds.c, 3);
    check_image(&ds, 0, 0);
    const int want[3] = {200, 100, 30};
    for (int ch = 0; ch < 3; ch++)
        for (int p = 0; p < 64; p++) {
            int v = ds.pixels[192 + ch * 64 + p];
            cr_assert_eq(v, want[ch], "jpeg channel %d pixel %d: %d", ch, p, v);
        }
    cr_assert_eq(ds.labels[1], 1);
    sstc_dataset_free(&ds);
}

Test(data_folder, first_load_writes_a_cache_that_the_second_load_reads) {
    make_small_gray();
    sstc_dataset a, b;
    cr_assert_eq(sstc_dataset_load(dir, "train", &a), 0, "%s", sstc_errmsg());
    cr_assert_eq(a.from_cache, 0);
    struct stat st;
    cr_assert_eq(stat(th_path("%s/train.sstcache", dir), &st), 0, "cache file written");
    cr_assert_eq(sstc_dataset_load(dir, "train", &b), 0, "%s", sstc_errmsg());
    cr_assert_eq(b.from_cache, 1);
    cr_assert_eq(b.n, a.n);
    cr_assert_eq(b.num_classes, a.num_classes);
    cr_assert_str_eq(b.class_names[1], "10");
    cr_assert_arr_eq(b.pixels, a.pixels, (size_t)a.n * a.c * a.h * a.w);
    cr_assert_arr_eq(b.labels, a.labels, sizeof(int) * a.n);
    sstc_dataset_free(&a);
    sstc_dataset_free(&b);
}

static int load_from_cache(void) {
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), 0, "%s", sstc_errmsg());
    int c = ds.from_cache;
    sstc_dataset_free(&ds);
    return c;
}

Test(data_folder, cache_is_rebuilt_when_an_image_is_added_removed_or_touched) {
    make_small_gray();
    cr_assert_eq(load_from_cache(), 0);
    cr_assert_eq(load_from_cache(), 1);
    put_png("train", "2", "3.png", 9, 6, 5, 1);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), 0, "%s", sstc_errmsg());
    cr_assert_eq(ds.from_cache, 0, "a new image makes the cache stale");
    cr_assert_eq(ds.n, 6);
    check_image(&ds, 2, 9);
    sstc_dataset_free(&ds);
    cr_assert_eq(load_from_cache(), 1);
    /* Same size, new modification time. */
    struct timespec t[2] = {{1000000, 0}, {1000000, 0}};
    cr_assert_eq(utimensat(AT_FDCWD, th_path("%s/train/10/2.png", dir), t, 0), 0);
    cr_assert_eq(load_from_cache(), 0, "a touched image makes the cache stale");
    cr_assert_eq(load_from_cache(), 1);
    cr_assert_eq(remove(th_path("%s/train/10/2.png", dir)), 0);
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), 0, "%s", sstc_errmsg());
    cr_assert_eq(ds.from_cache, 0, "a removed image makes the cache stale");
    cr_assert_eq(ds.n, 5);
    sstc_dataset_free(&ds);
}

Test(data_folder, damaged_cache_is_rebuilt_not_trusted) {
    make_small_gray();
    cr_assert_eq(load_from_cache(), 0);
    const char *cache = th_path("%s/train.sstcache", dir);
    size_t n;
    uint8_t *buf = th_read(cache, &n);
    th_write(cache, buf, n - 7);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), 0, "%s", sstc_errmsg());
    cr_assert_eq(ds.from_cache, 0);
    for (int i = 0; i < 5; i++) check_image(&ds, i, i);
    sstc_dataset_free(&ds);
    cr_assert_eq(load_from_cache(), 1, "rewritten whole");
    free(buf);
}

Test(data_folder, changed_pixels_or_labels_in_a_cache_of_the_same_size_are_not_trusted) {
    make_small_gray();
    cr_assert_eq(load_from_cache(), 0);
    const char *cache = th_path("%s/train.sstcache", dir);
    size_t n;
    uint8_t *buf = th_read(cache, &n);
    struct stat st;
    cr_assert_eq(stat(cache, &st), 0);
    /* a pixel (the file ends with the pixels and a 4-byte checksum), then a label */
    size_t at[2] = {n - 4 - 3, n - 4 - 5 * 5 * 6 - 4};
    for (int k = 0; k < 2; k++) {
        buf[at[k]] ^= 1;
        th_write(cache, buf, n);
        struct timespec t[2] = {st.st_atim, st.st_mtim}; /* size and times kept */
        cr_assert_eq(utimensat(AT_FDCWD, cache, t, 0), 0);
        sstc_dataset ds;
        cr_assert_eq(sstc_dataset_load(dir, "train", &ds), 0, "%s", sstc_errmsg());
        cr_assert_eq(ds.from_cache, 0, "change %d: the damaged cache was used", k);
        for (int i = 0; i < 5; i++) check_image(&ds, i, i);
        sstc_dataset_free(&ds);
        buf[at[k]] ^= 1;
    }
    free(buf);
}

Test(data_folder, test_split_uses_the_training_class_list) {
    make_small_gray();
    put_png("test", "10", "5.png", 7, 6, 5, 1); /* no "2" folder in test/ */
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "test", &ds), 0, "%s", sstc_errmsg());
    cr_assert_eq(ds.n, 1);
    cr_assert_eq(ds.num_classes, 2);
    cr_assert_eq(ds.labels[0], 1, "class '10' is label 1 as in train/");
    check_image(&ds, 0, 7);
    sstc_dataset_free(&ds);
    put_png("test", "cat", "1.png", 8, 6, 5, 1);
    cr_assert_eq(sstc_dataset_load(dir, "test", &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "class 'cat' is not one of the 2 classes in"), "%s", sstc_errmsg());
}

Test(data_folder, image_of_the_wrong_size_names_the_file_and_the_expected_size) {
    make_small_gray();
    put_png("train", "2", "7.png", 5, 7, 5, 1);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), SSTC_EFORMAT);
    const char *m = sstc_errmsg();
    cr_assert(th_has(m, "train/2/7.png: image is 7x5 with 1 channel, expected 6x5 with 1 channel"), "%s", m);
    cr_assert_null(ds.pixels);
}

Test(data_folder, image_with_the_wrong_channel_count_names_the_file) {
    make_small_gray();
    put_png("train", "10", "11.png", 5, 6, 5, 3);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "train/10/11.png: image is 6x5 with 3 channels, expected 6x5 with 1 channel"), "%s",
              sstc_errmsg());
}

Test(data_folder, corrupt_image_names_the_file) {
    make_small_gray();
    th_write(th_path("%s/train/10/3.png", dir), "\x89PNG\r\n\x1a\n garbage", 17);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "train/10/3.png: corrupt or unreadable PNG"), "%s", sstc_errmsg());
}

Test(data_folder, missing_folder_and_empty_folder_are_reported) {
    sstc_dataset ds;
    const char *none = th_path("%s/nothing-here", dir);
    cr_assert_eq(sstc_dataset_load(none, "train", &ds), SSTC_EIO);
    cr_assert(th_has(sstc_errmsg(), none), "%s", sstc_errmsg());
    cr_assert(th_has(sstc_errmsg(), "expected a known dataset"), "%s", sstc_errmsg());
    th_mkdirs(th_path("%s/train/a", dir));
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "no images found"), "%s", sstc_errmsg());
    th_rmtree(th_path("%s/train", dir));
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "no train/ image folder, no IDX files"), "%s", sstc_errmsg());
    cr_assert_eq(sstc_dataset_load(dir, "validation", &ds), SSTC_EINVAL);
}

Test(data_folder, result_does_not_depend_on_the_thread_count) {
    for (int i = 0; i < 150; i++) put_png("train", i % 3 ? "x" : "y", th_path("%d.png", i), i, 4, 3, 1);
    sstc_dataset a, b;
    omp_set_num_threads(1);
    cr_assert_eq(sstc_dataset_from_folder(th_path("%s/train", dir), NULL, NULL, &a), 0, "%s", sstc_errmsg());
    omp_set_num_threads(3);
    cr_assert_eq(sstc_dataset_from_folder(th_path("%s/train", dir), NULL, NULL, &b), 0, "%s", sstc_errmsg());
    cr_assert_eq(a.n, 150);
    cr_assert_arr_eq(a.pixels, b.pixels, 150 * 12);
    cr_assert_arr_eq(a.labels, b.labels, 150 * sizeof(int));
    sstc_dataset_free(&a);
    /* The first bad file in order is the one reported, whatever the threads. */
    th_write(th_path("%s/train/x/20.png", dir), "junk", 4);
    th_write(th_path("%s/train/x/140.png", dir), "junk", 4);
    cr_assert_eq(sstc_dataset_from_folder(th_path("%s/train", dir), NULL, NULL, &a), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "x/20.png"), "%s", sstc_errmsg());
    sstc_dataset_free(&b);
}
