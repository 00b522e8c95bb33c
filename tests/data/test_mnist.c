/* The real MNIST, when this checkout can have it: prepared under datasets/
 * from the local mirror (../shared/datasets) if not there yet. Skipped when
 * neither the prepared folder nor the mirror exists. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "sstc/data.h"
#include "sstc/error.h"

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

Test(data_mnist, mirror_mnist_has_60000_train_and_10000_test_images_with_the_documented_class_counts,
     .timeout = 300) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/mnist", sstc_data_root());
    if (!exists(dir)) {
        if (!exists("../shared/datasets/mnist-png.tar.gz") && !getenv("SSTC_DATA_MIRROR"))
            cr_skip_test("MNIST is neither prepared (%s) nor in a local mirror", dir);
        cr_assert_eq(sstc_dataset_prepare("mnist", 0), 0, "%s", sstc_errmsg());
    }
    /* The counts given in the mirror's README, and the standard test split. */
    static const int train_counts[10] = {5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949};
    static const int test_counts[10] = {980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
    sstc_dataset tr, te;
    cr_assert_eq(sstc_dataset_load("mnist", "train", &tr), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_dataset_load("mnist", "test", &te), 0, "%s", sstc_errmsg());
    cr_assert_eq(tr.n, 60000);
    cr_assert_eq(te.n, 10000);
    cr_assert_eq(tr.c, 1);
    cr_assert_eq(tr.h, 28);
    cr_assert_eq(tr.w, 28);
    cr_assert_eq(tr.num_classes, 10);
    int ct[10] = {0}, ce[10] = {0};
    for (int i = 0; i < tr.n; i++) ct[tr.labels[i]]++;
    for (int i = 0; i < te.n; i++) ce[te.labels[i]]++;
    for (int k = 0; k < 10; k++) {
        cr_assert_eq(ct[k], train_counts[k], "train digit %d", k);
        cr_assert_eq(ce[k], test_counts[k], "test digit %d", k);
    }
    /* The well-known MNIST training statistics. */
    sstc_normalizer nz;
    cr_assert_eq(sstc_dataset_channel_stats(&tr, NULL, 0, &nz), 0);
    cr_assert_float_eq(nz.mean[0], 0.1307f, 1e-4);
    cr_assert_float_eq(nz.std[0], 0.3081f, 1e-4);
    sstc_dataset_free(&tr);
    sstc_dataset_free(&te);
}
