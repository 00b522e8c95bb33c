/* sstc data: info and show on a small image-folder dataset, and the exit
 * statuses for usage and runtime errors. Runs the built program from the
 * repository root. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../data/data_helpers.h"
#include "sstc/data.h"
#include "sstc/error.h"

static char *dir;
static void setup(void) { dir = th_tmpdir(); }
static void teardown(void) {
    th_rmtree(dir);
    free(dir);
}

TestSuite(data_cli, .init = setup, .fini = teardown);

static int run(const char *cmd, char *out, size_t cap) { return th_run(cmd, out, cap); }

/* train: 3 "cat" + 2 "dog"; test: 1 "dog"; 5x4 RGB PNGs. */
static void make_dataset(void) {
    const char *where[6][2] = {{"train", "cat"}, {"train", "cat"}, {"train", "cat"},
                               {"train", "dog"}, {"train", "dog"}, {"test", "dog"}};
    for (int i = 0; i < 6; i++) {
        th_mkdirs(th_path("%s/%s/%s", dir, where[i][0], where[i][1]));
        uint8_t px[5 * 4 * 3];
        th_pattern_hwc(px, i, 5, 4, 3);
        th_write_png(th_path("%s/%s/%s/%d.png", dir, where[i][0], where[i][1], i), 5, 4, 3, px);
    }
}

Test(data_cli, info_prints_split_sizes_shape_and_class_counts) {
    make_dataset();
    static char out[8192];
    cr_assert_eq(run(th_path("./build/sstc data info '%s' 2>&1", dir), out, sizeof out), 0, "%s", out);
    cr_assert(th_has(out, "(image folder)"), "%s", out);
    cr_assert(th_has(out, "train    5       3x4x5"), "%s", out);
    cr_assert(th_has(out, "test     1       3x4x5"), "%s", out);
    cr_assert(th_has(out, "classes  2"), "%s", out);
    cr_assert(th_has(out, "cat          3        0"), "%s", out);
    cr_assert(th_has(out, "dog          2        1"), "%s", out);
    cr_assert(th_has(out, "total        5        1"), "%s", out);
    /* The first call wrote the caches, the second reads them. */
    cr_assert_eq(run(th_path("./build/sstc data info '%s' 2>&1", dir), out, sizeof out), 0, "%s", out);
    cr_assert(th_has(out, "read from cache"), "%s", out);
}

Test(data_cli, show_writes_a_png_grid_with_one_row_per_class) {
    make_dataset();
    static char out[4096];
    const char *png = th_path("%s/grid.png", dir);
    cr_assert_eq(run(th_path("./build/sstc data show '%s' -o '%s' --per-class 3 --scale 2 2>&1", dir, png), out,
                     sizeof out),
                 0, "%s", out);
    sstc_image img;
    cr_assert_eq(sstc_image_read(png, &img), 0, "%s", sstc_errmsg());
    cr_assert_eq(img.c, 3);
    cr_assert_eq(img.w, 2 + 3 * (5 * 2 + 2), "3 cells of 10 px with 2-px gaps");
    cr_assert_eq(img.h, 2 + 2 * (4 * 2 + 2), "2 rows of 8 px");
    /* Some cell of row 0 (cat) shows one of the cat images, pixel-doubled. */
    int found = 0;
    for (int col = 0; col < 3 && !found; col++)
        for (int id = 0; id < 3 && !found; id++) {
            int ok = 1;
            for (int y = 0; y < 8 && ok; y++)
                for (int x = 0; x < 10 && ok; x++)
                    for (int ch = 0; ch < 3 && ok; ch++)
                        ok = img.pixels[((2 + y) * img.w + 2 + col * 12 + x) * 3 + ch] == th_pixel(id, ch, y / 2, x / 2);
            found = ok;
        }
    cr_assert(found, "a cat image in the first row");
    sstc_image_free(&img);
}

Test(data_cli, usage_errors_exit_2_and_runtime_errors_exit_1_with_the_message) {
    static char out[4096];
    cr_assert_eq(run("./build/sstc data 2>&1", out, sizeof out), 2);
    cr_assert_eq(run("./build/sstc data frobnicate 2>&1", out, sizeof out), 2);
    cr_assert_eq(run("./build/sstc data info 2>&1", out, sizeof out), 2);
    cr_assert_eq(run("./build/sstc data prepare imagenet 2>&1", out, sizeof out), 2);
    cr_assert(th_has(out, "unknown dataset 'imagenet'"), "%s", out);
    cr_assert_eq(run("./build/sstc data show x --per-class 0 2>&1", out, sizeof out), 2);
    cr_assert_eq(run(th_path("./build/sstc data info '%s/missing' 2>&1", dir), out, sizeof out), 1);
    cr_assert(th_has(out, "sstc data info: "), "%s", out);
    cr_assert(th_has(out, "/missing: No such file or directory"), "%s", out);
    cr_assert_eq(run("./build/sstc data --help", out, sizeof out), 0);
    cr_assert(th_has(out, "usage: sstc data prepare NAME"), "%s", out);
    cr_assert_eq(run("./build/sstc data show --help", out, sizeof out), 0);
    cr_assert(th_has(out, "--per-class"), "%s", out);
}
