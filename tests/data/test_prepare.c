/* Dataset preparation: mirror lookup, checksum verification, extraction,
 * idempotence, and the message when there is neither mirror nor network.
 * Each test works in its own folder (data root and mirror) and runs from
 * there, so the project's own mirror and datasets/ are never touched. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/internal.h"
#include "data_helpers.h"
#include "sstc/data.h"
#include "sstc/error.h"

static char *dir;
static char cwd[4096];

static void setup(void) {
    dir = th_tmpdir();
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(dir), 0);
    th_mkdirs(th_path("%s/mirror", dir));
    setenv("SSTC_DATA_DIR", th_path("%s/root", dir), 1);
    setenv("SSTC_DATA_MIRROR", th_path("%s/mirror", dir), 1);
    setenv("SSTC_DATA_UPSTREAM", "http://127.0.0.1:9/", 1); /* nothing listens there */
}

static void teardown(void) {
    if (chdir(cwd) != 0) cr_log_warn("cannot return to %s", cwd);
    th_rmtree(dir);
    free(dir);
}

TestSuite(data_prepare, .init = setup, .fini = teardown);

static void sh(const char *cmd) { cr_assert_eq(system(cmd), 0, "%s", cmd); }

static void write_sums(const char *folder_arg, const char *const *files, int n) {
    char folder[4096]; /* th_path's buffers are reused */
    snprintf(folder, sizeof folder, "%s", folder_arg);
    FILE *f = fopen(th_path("%s/SHA256SUMS", folder), "w");
    cr_assert_not_null(f);
    fprintf(f, "0000000000000000000000000000000000000000000000000000000000000000  unrelated.tar.gz\n");
    for (int i = 0; i < n; i++) {
        char hex[65];
        cr_assert_eq(sstc_data_file_digest(th_path("%s/%s", folder, files[i]), "sha256", hex, sizeof hex), 0);
        fprintf(f, "%s  %s\n", hex, files[i]);
    }
    fclose(f);
}

/* A mirror archive in this project's layout: mnist-png/{train,test}/<digit>/<n>.png. */
static void make_mnist_archive(void) {
    int id = 0;
    const char *splits[2] = {"train", "test"};
    for (int s = 0; s < 2; s++)
        for (int d = 0; d < 2; d++)
            for (int k = 0; k < 2 + s; k++) {
                const char *folder = th_path("%s/mirror/mnist-png/%s/%d", dir, splits[s], d);
                th_mkdirs(folder);
                uint8_t px[9];
                th_pattern_hwc(px, id, 3, 3, 1);
                th_write_png(th_path("%s/%d.png", folder, id), 3, 3, 1, px);
                id++;
            }
    sh(th_path("tar czf '%s/mirror/mnist-png.tar.gz' -C '%s/mirror' mnist-png", dir, dir));
    th_rmtree(th_path("%s/mirror/mnist-png", dir));
}

static int leftover_partials(const char *root) {
    DIR *d = opendir(root);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".partial-")) n++;
    closedir(d);
    return n;
}

Test(data_prepare, mirror_archive_is_verified_extracted_and_then_left_alone) {
    make_mnist_archive();
    const char *files[1] = {"mnist-png.tar.gz"};
    write_sums(th_path("%s/mirror", dir), files, 1);
    cr_assert_eq(sstc_dataset_prepare("mnist", 0), 0, "%s", sstc_errmsg());
    const char *marker = th_path("%s/root/mnist/.sstc-prepared", dir);
    struct stat st1, st2;
    cr_assert_eq(stat(marker, &st1), 0);
    sstc_dataset tr, te;
    cr_assert_eq(sstc_dataset_load("mnist", "train", &tr), 0, "%s", sstc_errmsg());
    cr_assert_eq(tr.n, 4);
    cr_assert_eq(tr.num_classes, 2);
    cr_assert_eq(tr.labels[3], 1);
    cr_assert_eq(tr.pixels[3 * 9 + 4], th_pixel(3, 0, 1, 1));
    cr_assert_eq(sstc_dataset_load("mnist", "test", &te), 0, "%s", sstc_errmsg());
    cr_assert_eq(te.n, 6);
    sstc_dataset_free(&tr);
    sstc_dataset_free(&te);
    /* Second call: nothing happens, even with the mirror gone. */
    remove(th_path("%s/mirror/mnist-png.tar.gz", dir));
    cr_assert_eq(sstc_dataset_prepare("mnist", 0), 0, "%s", sstc_errmsg());
    cr_assert_eq(stat(marker, &st2), 0);
    cr_assert_eq(st1.st_mtim.tv_sec, st2.st_mtim.tv_sec);
    cr_assert_eq(st1.st_mtim.tv_nsec, st2.st_mtim.tv_nsec);
    cr_assert_eq(leftover_partials(th_path("%s/root", dir)), 0);
}

Test(data_prepare, checksum_mismatch_is_reported_and_nothing_is_extracted) {
    make_mnist_archive();
    FILE *f = fopen(th_path("%s/mirror/SHA256SUMS", dir), "w");
    fprintf(f, "%064d  mnist-png.tar.gz\n", 7);
    fclose(f);
    cr_assert_eq(sstc_dataset_prepare("mnist", 0), SSTC_EFORMAT);
    const char *m = sstc_errmsg();
    cr_assert(th_has(m, "mnist-png.tar.gz: sha256 checksum mismatch: expected 0000"), "%s", m);
    cr_assert(th_has(m, "SHA256SUMS"), "%s", m);
    struct stat st;
    cr_assert_neq(stat(th_path("%s/root/mnist", dir), &st), 0, "no dataset folder");
    cr_assert_eq(leftover_partials(th_path("%s/root", dir)), 0);
}

Test(data_prepare, mirror_archive_without_a_checksum_is_refused) {
    make_mnist_archive();
    cr_assert_eq(sstc_dataset_prepare("mnist", 0), SSTC_EIO);
    cr_assert(th_has(sstc_errmsg(), "no checksum to verify it against"), "%s", sstc_errmsg());
}

static void write_fake_idx_set(const char *folder_arg, int n) {
    char folder[4096];
    snprintf(folder, sizeof folder, "%s", folder_arg);
    uint8_t px[16 * 4], lb[16];
    for (int i = 0; i < n * 4; i++) px[i] = (uint8_t)(i * 3);
    for (int i = 0; i < n; i++) lb[i] = (uint8_t)(i % 10);
    uint32_t d[3] = {(uint32_t)n, 2, 2}, dl[1] = {(uint32_t)n};
    th_write_idx(th_path("%s/train-images-idx3-ubyte.gz", folder), 1, 3, d, px);
    th_write_idx(th_path("%s/train-labels-idx1-ubyte.gz", folder), 1, 1, dl, lb);
    th_write_idx(th_path("%s/t10k-images-idx3-ubyte.gz", folder), 1, 3, d, px);
    th_write_idx(th_path("%s/t10k-labels-idx1-ubyte.gz", folder), 1, 1, dl, lb);
}

static const char *const idx_files[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

Test(data_prepare, upstream_files_in_a_mirror_subfolder_are_verified_and_copied) {
    char folder[4096];
    snprintf(folder, sizeof folder, "%s/mirror/fashion-mnist", dir);
    th_mkdirs(folder);
    write_fake_idx_set(folder, 12);
    write_sums(folder, idx_files, 4);
    cr_assert_eq(sstc_dataset_prepare("fashion-mnist", 0), 0, "%s", sstc_errmsg());
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load("fashion-mnist", "test", &ds), 0, "%s", sstc_errmsg());
    cr_assert_eq(ds.n, 12);
    cr_assert_str_eq(ds.class_names[0], "T-shirt/top");
    cr_assert_str_eq(ds.class_names[9], "Ankle boot");
    cr_assert_eq(ds.pixels[5], 15);
    sstc_dataset_free(&ds);
}

Test(data_prepare, upstream_files_not_matching_the_upstream_md5_are_refused) {
    write_fake_idx_set(th_path("%s/mirror", dir), 3);
    cr_assert_eq(sstc_dataset_prepare("mnist", 0), SSTC_EFORMAT);
    const char *m = sstc_errmsg();
    cr_assert(th_has(m, "train-images-idx3-ubyte.gz: md5 checksum mismatch: expected "
                        "f68b3c2dcbeaaa9fbdd348bbdeb94873 (from the upstream checksum)"),
              "%s", m);
}

Test(data_prepare, without_mirror_or_network_the_message_says_what_failed) {
    cr_assert_eq(sstc_dataset_prepare("mnist", 0), SSTC_EIO);
    const char *m = sstc_errmsg();
    cr_assert(th_has(m, "mnist: no local mirror found (looked for mnist-png.tar.gz or train-images-idx3-ubyte.gz in"),
              "%s", m);
    cr_assert(th_has(m, "/mirror"), "%s", m);
    cr_assert(th_has(m, "../shared/datasets (absent)"), "%s", m);
    cr_assert(th_has(m, "the download of http://127.0.0.1:9/train-images-idx3-ubyte.gz failed"), "%s", m);
    cr_assert(th_has(m, "set SSTC_DATA_MIRROR"), "%s", m);
    struct stat st;
    cr_assert_neq(stat(th_path("%s/root/mnist", dir), &st), 0);
    cr_assert_eq(leftover_partials(th_path("%s/root", dir)), 0);
}

Test(data_prepare, unknown_names_are_refused) {
    cr_assert_eq(sstc_dataset_prepare("imagenet", 0), SSTC_EINVAL);
    cr_assert(th_has(sstc_errmsg(), "unknown dataset 'imagenet'"), "%s", sstc_errmsg());
    sstc_dataset ds;
    cr_assert_eq(sstc_dataset_load("mnist", "train", &ds), SSTC_EIO, "not prepared here");
    cr_assert(th_has(sstc_errmsg(), "run 'sstc data prepare mnist'"), "%s", sstc_errmsg());
}

Test(data_prepare, debian_fashion_mnist_package_is_found_and_loads_fully) {
    const char *pkg = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
    struct stat st;
    if (stat(pkg, &st) != 0) cr_skip_test("package dataset-fashion-mnist is not installed");
    unsetenv("SSTC_DATA_MIRROR");
    cr_assert_eq(sstc_dataset_prepare("fashion-mnist", 0), 0, "%s", sstc_errmsg());
    sstc_dataset tr, te;
    cr_assert_eq(sstc_dataset_load("fashion-mnist", "train", &tr), 0, "%s", sstc_errmsg());
    cr_assert_eq(sstc_dataset_load("fashion-mnist", "test", &te), 0, "%s", sstc_errmsg());
    cr_assert_eq(tr.n, 60000);
    cr_assert_eq(te.n, 10000);
    cr_assert_eq(tr.h, 28);
    cr_assert_eq(tr.w, 28);
    int counts[2][10] = {{0}};
    for (int i = 0; i < tr.n; i++) counts[0][tr.labels[i]]++;
    for (int i = 0; i < te.n; i++) counts[1][te.labels[i]]++;
    for (int k = 0; k < 10; k++) {
        cr_assert_eq(counts[0][k], 6000, "train class %d", k);
        cr_assert_eq(counts[1][k], 1000, "test class %d", k);
    }
    sstc_dataset_free(&tr);
    sstc_dataset_free(&te);
}

static void check_digest(const char *algo, const void *data, size_t n, const char *want) {
    const char *p = th_path("%s/h.bin", dir);
    th_write(p, data, n);
    char hex[65];
    cr_assert_eq(sstc_data_file_digest(p, algo, hex, sizeof hex), 0);
    cr_assert_str_eq(hex, want, "%s of %zu bytes", algo, n);
}

Test(data_prepare, sha256_and_md5_match_the_standard_test_vectors) {
    check_digest("sha256", "", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_digest("sha256", "abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    check_digest("md5", "", 0, "d41d8cd98f00b204e9800998ecf8427e");
    check_digest("md5", "abc", 3, "900150983cd24fb0d6963f7d28e17f72");
    const char *fox = "The quick brown fox jumps over the lazy dog";
    check_digest("md5", fox, strlen(fox), "9e107d9d372bb6826bd81d3542a419d6");
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    check_digest("sha256", a, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    check_digest("md5", a, 1000000, "7707d6ae4e027c70eea2a935c2296f21");
    free(a);
}
