/* A tiny learnable image-folder dataset for session-level tests: 8x8 gray
 * images, class 0 bright on top, class 1 bright at the bottom, noisy (rows,
 * so horizontal flips keep the class). */
#ifndef SSTC_TEST_TINY_DATASET_H
#define SSTC_TEST_TINY_DATASET_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "sstc/data.h"
#include "sstc/error.h"

static inline void tiny_dataset_make(char *dir, size_t n, int ntrain, int ntest) {
    snprintf(dir, n, "/tmp/sstc_tiny_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    sstc_rng r;
    sstc_rng_seed(&r, 5);
    const char *splits[] = {"train", "test"};
    int counts[] = {ntrain, ntest};
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < 2; c++) {
            char p[512];
            snprintf(p, sizeof p, "%s/%s", dir, splits[s]);
            mkdir(p, 0755);
            snprintf(p, sizeof p, "%s/%s/%d", dir, splits[s], c);
            mkdir(p, 0755);
            for (int i = 0; i < counts[s]; i++) {
                uint8_t px[64];
                for (int k = 0; k < 64; k++) {
                    int top = k < 32;
                    float v = (top == (c == 0) ? 150.0f : 60.0f) + 60.0f * sstc_rng_normal(&r);
                    px[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
                snprintf(p, sizeof p, "%s/%s/%d/%03d.png", dir, splits[s], c, i);
                cr_assert_eq(sstc_image_write_png(p, 8, 8, 1, px), 0, "%s", sstc_errmsg());
            }
        }
}

static inline void tiny_dataset_remove(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) {
    }
}

#endif
