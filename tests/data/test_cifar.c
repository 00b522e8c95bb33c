/* CIFAR-10 binary batches: records, file order, class names, bad sizes and
 * labels. */
#include <criterion/criterion.h>
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

TestSuite(data_cifar, .init = setup, .fini = teardown);

static void check_records(const sstc_dataset *ds, int n, const uint8_t *labels, int first) {
    cr_assert_eq(ds->n, n);
    cr_assert_eq(ds->c, 3);
    cr_assert_eq(ds->h, 32);
    cr_assert_eq(ds->w, 32);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ds->labels[i], labels[i], "record %d", i);
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    cr_assert_eq(ds->pixels[(size_t)i * 3072 + ch * 1024 + y * 32 + x], th_pixel(first + i, ch, y, x),
                                 "record %d channel %d (%d,%d)", i, ch, y, x);
    }
}

Test(data_cifar, batches_load_in_order_with_every_pixel_and_label) {
    uint8_t l1[3] = {6, 9, 0}, l2[2] = {3, 1}, lt[2] = {8, 2};
    th_write_cifar(th_path("%s/data_batch_1.bin", dir), 3, l1, 0);
    th_write_cifar(th_path("%s/data_batch_2.bin", dir), 2, l2, 3);
    th_write_cifar(th_path("%s/test_batch.bin", dir), 2, lt, 100);
    sstc_dataset tr, te;
    cr_assert_eq(sstc_dataset_load(dir, "train", &tr), 0, "%s", sstc_errmsg());
    uint8_t all[5] = {6, 9, 0, 3, 1};
    check_records(&tr, 5, all, 0);
    cr_assert_eq(tr.num_classes, 10);
    cr_assert_str_eq(tr.class_names[0], "airplane");
    cr_assert_str_eq(tr.class_names[9], "truck");
    cr_assert_str_eq(tr.format, "CIFAR-10 binary");
    cr_assert_eq(sstc_dataset_load(dir, "test", &te), 0, "%s", sstc_errmsg());
    check_records(&te, 2, lt, 100);
    sstc_dataset_free(&tr);
    sstc_dataset_free(&te);
}

Test(data_cifar, upstream_folder_layout_and_meta_names_are_used) {
    const char *sub = th_path("%s/cifar-10-batches-bin", dir);
    th_mkdirs(sub);
    uint8_t l[2] = {4, 5};
    th_write_cifar(th_path("%s/data_batch_1.bin", sub), 2, l, 7);
    const char meta[] = "a0\na1\na2\na3\na4\na5\na6\na7\na8\na9\n\n";
    th_write(th_path("%s/batches.meta.txt", sub), meta, strlen(meta));
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), 0, "%s", sstc_errmsg());
    check_records(&ds, 2, l, 7);
    cr_assert_str_eq(ds.class_names[4], "a4");
    sstc_dataset_free(&ds);
}

Test(data_cifar, single_batch_file_loads_directly) {
    uint8_t l[1] = {7};
    const char *p = th_path("%s/some.bin", dir);
    th_write_cifar(p, 1, l, 42);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(p, NULL, &ds), 0, "%s", sstc_errmsg());
    check_records(&ds, 1, l, 42);
    sstc_dataset_free(&ds);
}

Test(data_cifar, size_not_a_whole_number_of_records_names_the_partial_record) {
    uint8_t l[2] = {1, 2};
    const char *p = th_path("%s/data_batch_1.bin", dir);
    th_write_cifar(p, 2, l, 0);
    size_t n;
    uint8_t *buf = th_read(p, &n);
    th_write(p, buf, n - 100);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "train", &ds), SSTC_EFORMAT);
    const char *m = sstc_errmsg();
    cr_assert(th_has(m, p), "%s", m);
    cr_assert(th_has(m, "size 6046 is not a whole number of 3073-byte CIFAR-10 records"), "%s", m);
    cr_assert(th_has(m, "record 1 at byte offset 3073 has only 2973 bytes"), "%s", m);
    free(buf);
}

Test(data_cifar, label_out_of_range_names_the_record_and_offset) {
    uint8_t l[3] = {1, 2, 10};
    const char *p = th_path("%s/test_batch.bin", dir);
    th_write_cifar(p, 3, l, 0);
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load(dir, "test", &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "test_batch.bin: label 10 of record 2 (byte offset 6146) is out of range, "
                                    "expected 0..9"),
              "%s", sstc_errmsg());
    cr_assert_null(ds.pixels);
}

Test(data_cifar, empty_file_and_missing_split_are_reported) {
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_from_cifar_buffer("", 0, "e.bin", &ds), SSTC_EFORMAT);
    cr_assert(th_has(sstc_errmsg(), "e.bin: file is empty"), "%s", sstc_errmsg());
    uint8_t l[1] = {0};
    th_write_cifar(th_path("%s/data_batch_1.bin", dir), 1, l, 0);
    cr_assert_eq(sstc_dataset_load(dir, "test", &ds), SSTC_EIO);
    cr_assert(th_has(sstc_errmsg(), "has CIFAR-10 batches but no test_batch.bin"), "%s", sstc_errmsg());
}
